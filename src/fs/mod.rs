//! The filesystem core: everything the mount does, without any fuser type.
//!
//! [`CellsFs`] owns the inode table, the metadata cache, file handles, read-ahead, write
//! staging and uploads, the on-disk data cache and the mtime overlay. The FUSE adapter
//! (`src/fuse.rs`) translates each kernel request into one call here and maps failures with
//! [`FsError::errno`]; the events client calls [`CellsFs::invalidate`] and
//! [`CellsFs::bump_generation`].
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
//! - Data accepted by `write` is either on the server, in a staging file recorded in the
//!   write-back journal, or in the recovery folder; it is never silently dropped.

pub mod error;

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::api::{CellsApi, UploadOptions};
pub use error::{FsError, FsResult};

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
        }
    }
}

/// What an inode is. Cells stores only files and folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum FileKind {
    File,
    Directory,
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
    Created { path: String },
    /// Content changed; `etag` is the new one when the event carries it (an echo of our own
    /// upload with the same Etag is then ignored).
    ContentChanged { path: String, etag: Option<String> },
    /// Metadata only.
    MetaChanged { path: String },
    Moved { from: String, to: String },
    Deleted { path: String },
}

/// What the core asks of the kernel when remote changes arrive. Implemented by the adapter
/// (fuser's `Notifier`). Called without any core lock held, never from inside a request.
pub trait KernelNotifier: Send + Sync + 'static {
    /// Forget the name `name` in directory `parent` (the next access looks it up again).
    fn invalidate_entry(&self, parent: u64, name: &OsStr);
    /// Drop the cached attributes and pages of `ino`.
    fn invalidate_inode(&self, ino: u64);
}

/// One upload not yet on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingUpload {
    pub path: String,
    pub size: u64,
    /// Failed attempts so far.
    pub attempts: u32,
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
    pub inodes: usize,
    pub open_handles: usize,
    pub generation: u64,
}

/// The filesystem. Cheap to clone (shared state); every method takes `&self`.
#[derive(Clone)]
pub struct CellsFs {
    inner: Arc<Inner>,
}

struct Inner {
    _api: Arc<dyn CellsApi>,
    _options: FsOptions,
}

#[allow(unused_variables)]
impl CellsFs {
    /// Build the filesystem: open (or create) the cache directory, load the data-cache index
    /// and the mtime overlay, and replay the write-back journal left by a previous mount
    /// (those uploads restart in the background; see [`CellsFs::status`]).
    pub async fn new(api: Arc<dyn CellsApi>, options: FsOptions) -> FsResult<CellsFs> {
        Ok(CellsFs {
            inner: Arc::new(Inner {
                _api: api,
                _options: options,
            }),
        })
    }

    /// Give the core a way to invalidate kernel caches (once, after mounting).
    pub fn set_notifier(&self, notifier: Arc<dyn KernelNotifier>) {
        todo!()
    }

    /// Find `name` in `parent`. Counts one kernel lookup on success.
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        todo!()
    }

    /// The kernel dropped `nlookup` references to `ino`.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        todo!()
    }

    pub async fn getattr(&self, ino: u64, fh: Option<u64>) -> FsResult<AttrReply> {
        todo!()
    }

    /// Truncate/extend, set times (kept in the local overlay); mode/uid/gid accepted without
    /// effect.
    pub async fn setattr(&self, ino: u64, changes: SetAttr) -> FsResult<AttrReply> {
        todo!()
    }

    /// Open a folder; the listing is taken once per handle (consistent offsets).
    pub async fn opendir(&self, ino: u64, flags: i32) -> FsResult<u64> {
        todo!()
    }

    /// Emit entries from `offset` (0 = start; `.` and `..` included) by calling `add` for each
    /// until it returns `true` (reply buffer full). With `plus`, each entry `add` accepted
    /// (except `.` and `..`) counts one kernel lookup, as readdirplus requires.
    pub async fn readdir<F>(&self, ino: u64, fh: u64, offset: u64, plus: bool, add: F) -> FsResult<()>
    where
        F: FnMut(&DirEntry) -> bool + Send,
    {
        todo!()
    }

    pub async fn releasedir(&self, ino: u64, fh: u64) -> FsResult<()> {
        todo!()
    }

    /// Open a file with the kernel's `flags` (`O_ACCMODE`, `O_TRUNC`, `O_APPEND` are honoured).
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<OpenReply> {
        todo!()
    }

    /// Read up to `size` bytes at `offset` (fewer only at end of file).
    pub async fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        todo!()
    }

    /// Write `data` at `offset` into the file's staging file; returns the bytes written.
    pub async fn write(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        todo!()
    }

    /// `close` of one descriptor: uploads pending changes (or journals them in write-back).
    pub async fn flush(&self, ino: u64, fh: u64) -> FsResult<()> {
        todo!()
    }

    /// Upload now, even in write-back mode; returns once the data is on the server.
    pub async fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> FsResult<()> {
        todo!()
    }

    /// Last close of a handle: uploads what is still pending, frees the handle.
    pub async fn release(&self, ino: u64, fh: u64) -> FsResult<()> {
        todo!()
    }

    /// Create and open a new file (created on the server at the first flush).
    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Entry, OpenReply)> {
        todo!()
    }

    /// `mknod`: regular files are created (empty); devices, fifos and sockets are refused.
    pub async fn mknod(&self, parent: u64, name: &OsStr, mode: u32) -> FsResult<Entry> {
        todo!()
    }

    pub async fn mkdir(&self, parent: u64, name: &OsStr, mode: u32) -> FsResult<Entry> {
        todo!()
    }

    /// Remove a file (to the recycle bin unless `permanent_delete`). An open file stays
    /// readable through its handles.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        todo!()
    }

    /// Remove an empty folder (ENOTEMPTY otherwise).
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        todo!()
    }

    /// Rename through the server's move. `flags`: `libc::RENAME_NOREPLACE` is honoured,
    /// `libc::RENAME_EXCHANGE` is refused with EINVAL.
    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        todo!()
    }

    /// Symlinks cannot be stored by Cells: always refused.
    pub async fn symlink(&self, parent: u64, name: &OsStr, target: &OsStr) -> FsResult<Entry> {
        todo!()
    }

    /// Hard links cannot be stored by Cells: always refused.
    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> FsResult<Entry> {
        todo!()
    }

    pub async fn statfs(&self, ino: u64) -> FsResult<StatFs> {
        todo!()
    }

    /// The value of `user.cells.uuid` or `user.cells.etag`; ENODATA for anything else.
    pub async fn getxattr(&self, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        todo!()
    }

    /// The attribute names, NUL-terminated and concatenated (the kernel's format).
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        todo!()
    }

    /// `setxattr`/`removexattr`: refused (the attributes are read-only).
    pub fn setxattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        todo!()
    }

    /// A remote change: drop what it makes stale and tell the kernel.
    pub fn invalidate(&self, change: RemoteChange) {
        todo!()
    }

    /// Consider every cached entry stale (after an events reconnect: events may be lost).
    pub fn bump_generation(&self) {
        todo!()
    }

    /// Upload every pending change now (write-back included). Used at unmount; failures are
    /// kept in the journal (write-back) or the recovery folder, and returned.
    pub async fn sync_all(&self) -> FsResult<()> {
        todo!()
    }

    /// Pending uploads, cache use, recent errors.
    pub fn status(&self) -> FsStatus {
        todo!()
    }
}
