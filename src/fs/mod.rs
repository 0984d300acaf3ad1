//! The filesystem core: everything the mount does, without any fuser type.
//!
//! [`CellsFs`] owns the inode table, the metadata cache, file handles, read-ahead, write
//! staging and uploads, the on-disk data cache and the mtime overlay. The FUSE adapter
//! (`src/fuse.rs`) translates each kernel request into one call here and maps failures with
//! [`FsError::errno`]; the events client calls [`CellsFs::invalidate`],
//! [`CellsFs::set_events_live`] and [`CellsFs::workspaces_changed`].
//!
//! Invariants (see also the essays atop each sub-module):
//! - Inode numbers are never reused while the kernel may hold them: an inode leaves the table
//!   only when its lookup count reaches zero and no handle is open on it. The root is
//!   [`ROOT_INO`]; its children are workspaces (by slug).
//! - Every method takes `&self` and may run concurrently with any other. Table locks are plain
//!   mutexes never held across an `.await`; the only locks held across server calls are
//!   per-file (one upload at a time per file), so a slow upload or listing never blocks
//!   unrelated operations.
//! - The mount's own changes update the cache at once; remote changes arrive through
//!   `invalidate` and TTLs are the safety net. A cache entry is valid only while its TTL runs
//!   and its generation equals the current one.
//! - Data accepted by `write` is staged (in memory or in a staging file) until uploaded. Once
//!   `close` has returned it is on the server, in the write-back journal (a record carrying
//!   the bytes or naming a synced staging file), or in the recovery folder; it is never
//!   silently dropped.
//! - A new name (`create`, `mknod`, `mkdir`, `rename`) goes through [`checked_path`]: the
//!   server cannot store a path over [`MAX_KEY_BYTES`], so such a name is refused at once
//!   (`ENAMETOOLONG`) rather than accepted and lost at upload; a folder move that would push
//!   a path below the folder past it is refused too (`key_limit`).
//! - What the core writes in the cache directory is 0700 / 0600 (`private`), and the
//!   write-back journal is validated before it is replayed (`journal`).
//!
//! # The rooms
//!
//! `impl CellsFs` is split by concern, one file each; every room opens with its own essay.
//! All rooms see [`CellsFs`]'s shared state (`Inner`, here); the list below says which of
//! its fields each room keeps: the room that fills them and decides how far they are
//! trusted. Other rooms read them and make the updates their own operation implies (a
//! `create` forgets the name's negative entry, say). A room calls another's methods only
//! where they are `pub(super)`.
//!
//! - `table`: the inode table (`Meta`, `InodeData`, `Listing`, `Table`) and inode numbering;
//!   plain data, no I/O. Every room reads and changes it under `Inner::table`.
//! - `attr`: `lookup`, `forget`, `getattr`, `setattr`; the attributes an inode shows.
//! - `folders`: the listing cache and one path's metadata (`negative`, `lookups`,
//!   `dir_handles`), `opendir`/`readdir`/`releasedir`.
//! - `handles`: file handles (`handles`, `next_fh`): `open`, `flush`, `fsync`, `fsyncdir`,
//!   `release`.
//! - `read`: reading (`read_budget`, the data cache's reads, the handles' read-ahead).
//! - `write`: the staged content of files open for writing (`Staging`, `FileState`,
//!   `memory_budget`, the staging pool), `write` and truncation.
//! - `upload`: storing staged content (`upload_slots`, `progress`, the journal's upload
//!   records, the recovery folder), its replay at start, `sync_all`.
//! - `namespace`: `create`, `mknod`, `mkdir`, `link`, `unlink`, `rmdir`.
//! - `rename`: renames, and the background copy and delete of fresh files
//!   (`pending_copies`, `pending_deletes`, `move_slots`, the journal's move records).
//! - `remote`: cache trust (`generation`, `events_live`, the TTLs), remote changes, and the
//!   kernel invalidation thread (`notifier`).
//! - `workspaces`: the workspace list (`workspaces`, `workspace_refresh`) and the
//!   permission check every change passes.
//! - `status`: `status`, `statfs`, recent errors (`errors`) and the retry policy.
//!
//! Helpers each room uses, which keep their own state:
//! `cache` (on-disk data cache), `content` (staged bytes in memory or in a file),
//! `staging_pool`, `prefetch` (sequential read-ahead), `stream` (parts sent while a file is
//! written), `journal` (write-back journal and recovery folder), `overlay` (times Cells does
//! not keep), `conflict` (uploads based on an old version), `order` (the order of changes of
//! one name), `outage` (serving the cache while the server is away), `lookups` and
//! `dotfolders` (when to list instead of stat), `key_limit`, `links` (`--links`), `versions`
//! (the `.versions` view), `xattrs`, `progress`, `private` (0700/0600 files) and `error`
//! (the one errno mapping).

mod attr;
mod cache;
mod conflict;
mod content;
mod dotfolders;
pub mod error;
mod folders;
mod handles;
mod journal;
mod key_limit;
mod links;
mod lookups;
mod namespace;
mod negatives;
mod order;
mod outage;
mod overlay;
mod prefetch;
mod private;
mod progress;
mod read;
mod remote;
mod rename;
mod staging_pool;
mod status;
mod stream;
mod table;
mod upload;
mod versions;
mod workspaces;
mod write;
mod xattrs;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lru::LruCache;
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use crate::api::{ApiError, ApiResult, CellsApi, UploadOptions, Workspace};
pub use conflict::{ConflictCopy, ConflictMode};
pub use error::{FsError, FsResult};
use folders::DirHandle;
use handles::Handle;
use read::{BUDGET_UNIT, ReadState, STREAK_TO_PREFETCH};
use remote::KernelInvalidation;
use rename::{BACKGROUND_MOVES, RenameStart};
use table::{InodeData, Listing, Meta, Table};
use upload::{UploadMode, UploadSource, WRITE_BACK_UPLOADS};
use workspaces::CachedWorkspaces;
use write::{FileState, Staging};
pub use xattrs::{XATTR_BOOKMARK, XATTR_ETAG, XATTR_SHARE, XATTR_TAGS, XATTR_UUID};

/// The inode number of the mount's root (the list of workspaces).
pub const ROOT_INO: u64 = 1;

/// Mount options the core needs. Build with [`FsOptions::new`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Owner reported for every node.
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of files (`0o644` by default); write bits are removed where the
    /// server refuses writes.
    pub file_mode: u16,
    /// Permission bits of folders (`0o755` by default).
    pub dir_mode: u16,
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// Delete permanently instead of moving to the workspace's recycle bin.
    pub permanent_delete: bool,
    /// How long attributes (and the kernel's entry/attr caches) are trusted.
    pub attr_timeout: Duration,
    /// How long a folder listing is trusted.
    pub dir_cache_time: Duration,
    /// While the server's change events arrive, how long metadata and listings are trusted
    /// (events invalidate them precisely; this bounds what a lost event can leave stale).
    /// Paths Cells never announces (any component starting with `.`) keep the TTLs above.
    pub events_cache_time: Duration,
    /// Where staging files, the data cache, the journal, the overlay and the recovery folder
    /// live. Kept across mounts.
    pub cache_dir: PathBuf,
    /// Hard cap, in bytes, of the on-disk data cache (0 disables it).
    pub cache_size: u64,
    /// `Some(delay)`: `close` returns at once and uploads happen after `delay`, recorded in a
    /// journal replayed by the next mount. `None`: `close` returns once the data is uploaded.
    pub write_back: Option<Duration>,
    /// First read-ahead window of a handle, in bytes.
    pub read_ahead_initial: u64,
    /// Largest read-ahead window of a handle, in bytes.
    pub read_ahead_max: u64,
    /// Memory all read-ahead buffers may use together, in bytes.
    pub read_ahead_budget: u64,
    /// Upload attempts before the data goes to the recovery folder.
    pub upload_attempts: u32,
    /// Delay before the first upload retry; doubles after each failure.
    pub upload_retry_delay: Duration,
    /// How uploads are split (single PUT or multipart).
    pub upload_options: UploadOptions,
    /// Entries of the negative (does-not-exist) cache.
    pub negative_cache_entries: usize,
    /// What an upload does when the server's version moved on since the content was based
    /// on it (see `conflict`).
    pub conflicts: ConflictMode,
    /// Store symbolic links as `NAME.rclonelink` files, as rclone does (see `links`).
    pub links: bool,
}

impl FsOptions {
    /// Defaults for a mount whose cache lives in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> FsOptions {
        FsOptions {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
            read_only: false,
            permanent_delete: false,
            attr_timeout: Duration::from_secs(1),
            dir_cache_time: Duration::from_secs(5),
            events_cache_time: Duration::from_secs(60),
            cache_dir: cache_dir.into(),
            cache_size: 1 << 30,
            write_back: None,
            read_ahead_initial: 128 * 1024,
            read_ahead_max: 16 * 1024 * 1024,
            read_ahead_budget: 256 * 1024 * 1024,
            upload_attempts: 4,
            upload_retry_delay: Duration::from_millis(500),
            upload_options: UploadOptions::default(),
            negative_cache_entries: 4096,
            conflicts: ConflictMode::Copy,
            links: false,
        }
    }
}

/// What an inode is. Cells stores only files and folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum FileKind {
    File,
    Directory,
    /// A symbolic link, stored as a `.rclonelink` file (`--links`, see `links`).
    Symlink,
}

/// Attributes of one inode, as `getattr` reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Permission bits only (no file-type bits).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub blksize: u32,
}

/// Attributes and how long the kernel may keep them.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrReply {
    pub attr: Attr,
    pub ttl: Duration,
}

/// The answer to `lookup`, `create`, `mkdir`: the entry, its TTL (entry and attributes) and
/// the inode generation. Each one counts as one kernel lookup (see [`CellsFs::forget`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
    pub generation: u64,
}

/// One directory entry for `readdir`/`readdirplus`.
#[derive(Debug, Clone, PartialEq)]
pub struct DirEntry {
    pub ino: u64,
    /// The offset of the NEXT entry (what the kernel passes back to continue).
    pub offset: u64,
    pub kind: FileKind,
    pub name: OsString,
    /// Full attributes, for readdirplus.
    pub entry: Entry,
}

/// The answer to `open`/`create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReply {
    pub fh: u64,
    /// The kernel may keep its page cache for this file (the content did not change since
    /// the kernel last saw it).
    pub keep_cache: bool,
    /// Bypass the page cache (never set today; reserved).
    pub direct_io: bool,
}

/// A time given to `setattr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOrNow {
    Now,
    At(SystemTime),
}

/// The fields `setattr` may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetAttr {
    /// Truncate or extend.
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    /// Accepted without effect (fixed modes), see docs/SEMANTICS.md.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The handle of an `ftruncate`/`futimens`, when the kernel gives it.
    pub fh: Option<u64>,
}

/// `statfs` numbers (Cells reports no quota through this API: large constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// A change made on the server by someone else (or an echo of ours), as the events client
/// decodes it. Paths are user-space paths `<ws-slug>/<path>` (the event's `Path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteChange {
    Created {
        path: String,
    },
    /// Content changed; `etag` is the new one when the event carries it (an echo of our own
    /// upload with the same Etag is then ignored).
    ContentChanged {
        path: String,
        etag: Option<String>,
    },
    /// Metadata only.
    MetaChanged {
        path: String,
    },
    Moved {
        from: String,
        to: String,
    },
    Deleted {
        path: String,
    },
}

/// What the core asks of the kernel when remote changes arrive. Implemented by the adapter
/// (fuser's `Notifier`). Called from one dedicated thread of the core, without any core lock
/// held, never from inside a request or a tokio task (a kernel notification may block until a
/// pending request in the same directory is answered).
pub trait KernelNotifier: Send + Sync + 'static {
    /// Forget the name `name` in directory `parent` (the next access looks it up again).
    fn invalidate_entry(&self, parent: u64, name: &OsStr);
    /// Drop the cached attributes and pages of `ino`.
    fn invalidate_inode(&self, ino: u64);
}

/// What the kernel may do with the entries it reads from a folder handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirCaching {
    /// Ask the mount every time.
    None,
    /// Keep them (from this handle on): its earlier copy, if any, is stale.
    Fill,
    /// Reuse its copy: the listing it came from is still the trusted one.
    Keep,
}

/// One upload not yet on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingUpload {
    pub path: String,
    pub size: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Bytes sent by the running upload.
    pub sent: u64,
    /// Bytes a second since the upload began; `None` before.
    pub rate: Option<u64>,
    /// Write-back: seconds left until the upload starts.
    pub starts_in_secs: Option<u64>,
}

/// A recent failure worth showing to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentError {
    /// Unix seconds.
    pub at: u64,
    pub message: String,
}

/// What `cec mount --status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsStatus {
    pub pending_uploads: Vec<PendingUpload>,
    pub cache_bytes: u64,
    pub cache_capacity: u64,
    pub read_ahead_bytes: u64,
    pub recent_errors: Vec<RecentError>,
    /// Files kept in the recovery folder after uploads that failed for good.
    pub recovered_files: Vec<PathBuf>,
    /// Conflict copies stored lately (see `conflict`), oldest first.
    pub conflict_copies: Vec<ConflictCopy>,
    pub inodes: usize,
    pub open_handles: usize,
    pub generation: u64,
}

/// The filesystem. Cheap to clone (shared state); every method takes `&self`.
#[derive(Clone)]
pub struct CellsFs {
    inner: Arc<Inner>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn to_system_time(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos as u64)
    }
}

fn to_stamp(time: SystemTime) -> overlay::Stamp {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    }
}

fn parent_path(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The entries of a path-keyed map that are `folder` or below it: `folder` itself, then one
/// range of the ordered keys (`folder/` up to `folder0`, `'0'` being the character after
/// `'/'`), so the cost grows with the subtree, never with the whole map. The root (`""`)
/// stands for itself only.
fn subtree_of<'a, V>(
    map: &'a BTreeMap<String, V>,
    folder: &str,
) -> impl Iterator<Item = (&'a String, &'a V)> {
    let below = (!folder.is_empty()).then(|| {
        let from = format!("{folder}/");
        let to = format!("{folder}0");
        map.range::<str, _>((
            std::ops::Bound::Included(from.as_str()),
            std::ops::Bound::Excluded(to.as_str()),
        ))
    });
    map.get_key_value(folder)
        .into_iter()
        .chain(below.into_iter().flatten())
}

fn is_under_or_eq(path: &str, folder: &str) -> bool {
    path == folder
        || (path.len() > folder.len()
            && path.starts_with(folder)
            && path.as_bytes()[folder.len()] == b'/')
}

/// The recycle bin folder at a workspace root.
const RECYCLE_BIN: &str = "recycle_bin";

fn in_recycle_bin(path: &str) -> bool {
    let mut parts = path.splitn(3, '/');
    parts.next();
    parts.next() == Some(RECYCLE_BIN)
}

/// Check and normalise (NFC) a name given by the kernel.
fn valid_name(name: &OsStr) -> FsResult<String> {
    let Some(name) = name.to_str() else {
        return Err(FsError::InvalidArgument(format!(
            "{} is not UTF-8",
            name.to_string_lossy()
        )));
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(FsError::InvalidArgument(name.to_string()));
    }
    let name: String = name.nfc().collect();
    if name.len() > 255 {
        return Err(FsError::NameTooLong(name));
    }
    Ok(name)
}

/// The longest mount path the server can store, in bytes: the S3 gateway's key is the mount
/// path (workspace slug, then the path in it) and S3 keys are at most 1,024 bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// The mount path of a new node `name` in the folder `parent` (a mount path), refused when
/// the name is invalid ([`valid_name`]) or the server could not store the path
/// ([`MAX_KEY_BYTES`], ENAMETOOLONG). Every operation that makes a new name goes through here.
fn checked_path(parent: &str, name: &OsStr) -> FsResult<String> {
    let path = join_path(parent, &valid_name(name)?);
    if path.len() > MAX_KEY_BYTES {
        return Err(FsError::NameTooLong(format!(
            "{path}: {} bytes, more than the {MAX_KEY_BYTES} the server stores",
            path.len()
        )));
    }
    Ok(path)
}

/// Forget the absences known at `path` and below it (a folder moved or appeared there:
/// names under it may exist now).
fn forget_absences_under(negative: &mut LruCache<String, (Instant, u64)>, path: &str) {
    negative.pop(path);
    let prefix = format!("{path}/");
    let below: Vec<String> = negative
        .iter()
        .filter(|(p, _)| p.starts_with(&prefix))
        .map(|(p, _)| p.clone())
        .collect();
    for p in below {
        negative.pop(&p);
    }
}

/// A directory handle's listing: entries with their mount paths (empty for `.`/`..`).
pub type DirSnapshot = Arc<Vec<(DirEntry, String)>>;

struct Inner {
    api: Arc<dyn CellsApi>,
    options: FsOptions,
    table: Mutex<Table>,
    generation: AtomicU64,
    /// The event stream is subscribed: see [`FsOptions::events_cache_time`].
    events_live: AtomicBool,
    next_fh: AtomicU64,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    dir_handles: Mutex<HashMap<u64, Arc<DirHandle>>>,
    negative: Mutex<LruCache<String, (Instant, u64)>>,
    /// Negative entries the kernel was given for longer than `--attr-timeout`.
    kernel_negatives: negatives::KernelNegatives,
    /// Lookups asked of the server per folder not listed yet (see `lookups`).
    lookups: lookups::LookupTally,
    /// Recent recursive listings of dot-folders (see `dotfolders`).
    dot_trees: dotfolders::DotTrees,
    workspaces: Mutex<CachedWorkspaces>,
    /// A refresh of `workspaces` running in the background (see `workspaces`).
    workspace_refresh: workspaces::Refresh,
    data_cache: Option<Arc<cache::DataCache>>,
    /// Stores blocks into `data_cache` on its own thread.
    cache_writer: Option<cache::CacheWriter>,
    overlay: overlay::Overlay,
    journal: Arc<journal::Journal>,
    staging_dir: PathBuf,
    staging_pool: staging_pool::StagingPool,
    /// Shared by the contents held in memory (see `content`).
    memory_budget: Arc<content::MemoryBudget>,
    read_budget: Arc<tokio::sync::Semaphore>,
    /// Write-back uploads running at once.
    upload_slots: Arc<tokio::sync::Semaphore>,
    /// Bytes sent and start times of the uploads, for the status.
    progress: Arc<progress::Board>,
    /// Kernel invalidations go to a dedicated thread: the kernel may block a notification
    /// until a request it is processing in the same directory (a rename, say) is answered, so
    /// calling it from a task could stall the very runtime that must answer.
    notifier: OnceLock<std::sync::mpsc::Sender<KernelInvalidation>>,
    errors: Mutex<VecDeque<RecentError>>,
    /// Server paths being deleted in the background (the temporary name of a fresh file's
    /// rename), each with a receiver that turns `true` once done. Nothing touches such a path
    /// on the server before its delete ends, and listings and stats do not show it.
    pending_deletes: Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    /// Server paths a background rename is copying a fresh file to, each with a receiver that
    /// turns `true` once the copy is done. Nothing reads or changes such a path on the server
    /// before then (see [`CellsFs::settle_copies`]).
    pending_copies: Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    /// Background renames running at once: a rename waits for a slot.
    move_slots: Arc<tokio::sync::Semaphore>,
    /// The order in which changes of one name reach the server (see [`order`]).
    order: Arc<order::PathOrder>,
    /// Whether the server answers: while it does not, metadata comes from the cache.
    outage: outage::Outage,
    /// Conflict copies stored lately, for the status.
    conflicts: conflict::ConflictList,
    /// The `.versions` view (see `versions`).
    versions: versions::Versions,
    /// Which stored files are shown as symbolic links (see [`links`]).
    links: links::Links,
    /// Public link URLs asked lately (see `xattrs`).
    link_urls: xattrs::LinkUrls,
}

/// How many bytes small files being written may hold in memory together, instead of in
/// staging files (see `content`); the journal keeps a copy of a pending one's bytes, so
/// write-back holds at most twice this.
const MEMORY_CONTENT_BUDGET: u64 = 16 * 1024 * 1024;

impl CellsFs {
    /// Build the filesystem: open (or create) the cache directory, load the data-cache index
    /// and the mtime overlay, and replay the write-back journal left by a previous mount
    /// (those uploads restart in the background; see [`CellsFs::status`] and
    /// [`CellsFs::sync_all`]).
    pub async fn new(api: Arc<dyn CellsApi>, options: FsOptions) -> FsResult<CellsFs> {
        let cache_dir = options.cache_dir.clone();
        private::create_dir(&cache_dir)?;
        private::tighten_tree(&cache_dir);
        let staging_dir = cache_dir.join("staging");
        private::create_dir(&staging_dir)?;
        let data_cache = if options.cache_size > 0 {
            Some(Arc::new(cache::DataCache::open(
                &cache_dir.join("data"),
                options.cache_size,
            )?))
        } else {
            None
        };
        let cache_writer = data_cache.as_ref().map(|cache| cache.writer());
        let journal = Arc::new(journal::Journal::open(&cache_dir)?);
        let overlay = overlay::Overlay::open(cache_dir.join("times.json"));
        let mut table = Table {
            next_ino: ROOT_INO,
            ..Table::default()
        };
        table.inodes.insert(
            ROOT_INO,
            Box::new(InodeData::new(String::new(), Meta::folder(), 1)),
        );
        table.by_path.insert(String::new(), ROOT_INO);
        let permits = (options.read_ahead_budget / BUDGET_UNIT).clamp(1, u32::MAX as u64 >> 3);
        let negative_size =
            NonZeroUsize::new(options.negative_cache_entries.max(1)).expect("non-zero");
        let fs = CellsFs {
            inner: Arc::new(Inner {
                api,
                table: Mutex::new(table),
                generation: AtomicU64::new(1),
                events_live: AtomicBool::new(false),
                next_fh: AtomicU64::new(1),
                handles: Mutex::new(HashMap::new()),
                dir_handles: Mutex::new(HashMap::new()),
                negative: Mutex::new(LruCache::new(negative_size)),
                kernel_negatives: negatives::KernelNegatives::default(),
                lookups: lookups::LookupTally::default(),
                dot_trees: dotfolders::DotTrees::default(),
                workspaces: Mutex::new(None),
                workspace_refresh: workspaces::Refresh::default(),
                data_cache,
                cache_writer,
                overlay,
                journal,
                staging_pool: staging_pool::StagingPool::new(&staging_dir),
                memory_budget: content::MemoryBudget::new(MEMORY_CONTENT_BUDGET),
                staging_dir,
                read_budget: Arc::new(tokio::sync::Semaphore::new(permits as usize)),
                upload_slots: Arc::new(tokio::sync::Semaphore::new(WRITE_BACK_UPLOADS)),
                progress: Arc::default(),
                notifier: OnceLock::new(),
                errors: Mutex::new(VecDeque::new()),
                pending_deletes: Mutex::new(HashMap::new()),
                pending_copies: Mutex::new(HashMap::new()),
                move_slots: Arc::new(tokio::sync::Semaphore::new(BACKGROUND_MOVES)),
                order: Arc::new(order::PathOrder::default()),
                outage: outage::Outage::default(),
                conflicts: Default::default(),
                versions: Default::default(),
                links: Default::default(),
                link_urls: Default::default(),
                options,
            }),
        };
        for message in fs.inner.journal.rejected() {
            fs.record_error(message.clone());
        }
        fs.replay_journal()?;
        for (id, record) in fs.inner.journal.open_moves() {
            tracing::info!(
                "finishing the rename of {} to {} left undone by a previous mount",
                record.from,
                record.to
            );
            fs.rename_in_background(Some(id), record, None, RenameStart::Replay);
        }
        if !fs.inner.journal.open_streams().is_empty() {
            tokio::spawn(stream::abort_left_open(
                fs.inner.api.clone(),
                fs.inner.journal.clone(),
            ));
        }
        fs.clean_orphan_staging();
        Ok(fs)
    }
}

/// `rename` flag: fail with EEXIST when the target exists (Linux's `RENAME_NOREPLACE` value,
/// which the adapter translates to on other platforms).
pub const RENAME_NOREPLACE: u32 = 1;
/// `rename` flag: swap source and target atomically (Linux's `RENAME_EXCHANGE` value).
pub const RENAME_EXCHANGE: u32 = 2;
