//! The on-disk tree store: every node (file or folder) of the emulated datasource, its index
//! and its content, under `config.data_dir`.
//!
//! Layout: `index.sqlite` (WAL) holds one row per node (uuid, internal path, parent, name,
//! type, size, mtime, etag, mime, x-cells-hash, metadata JSON, content id); `blobs/` holds
//! the content of files, one immutable file per content id; `tmp/` holds uploads in flight.
//!
//! Invariants:
//! - A blob is written to `tmp/`, fsynced, then renamed into `blobs/` and only then indexed,
//!   so a crash never exposes a torn file and a restart keeps everything that was committed.
//!   A committed blob is never modified: an overwrite indexes a new blob and unlinks the old.
//! - A node's Uuid survives renames and moves; an overwrite keeps the Uuid.
//! - Names are NFC-normalised; paths never have leading/trailing slashes.
//! - Callers speak in **user-space paths** (`<workspace-slug>/<path>`) with a login; the
//!   store resolves the slug among the workspaces that login can see (see [`crate::idm`]),
//!   so a user can never address what is not theirs (404), and writes to a workspace the user
//!   may only read are refused (403).
//! - Every mutation is announced on the [`TreeChange`] broadcast channel, with nodes located
//!   by their *internal* path; [`Store::visible_paths`] maps such a node to the user paths a
//!   given user sees it under.
//!
//! All methods are synchronous and short, except those that touch content
//! ([`Store::commit_file`] when the hashes were not computed while streaming,
//! [`Store::copy_node`] of big trees): call those from `tokio::task::spawn_blocking` when in
//! doubt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::EmuConfig;
use crate::idm::{Idm, Permission, WorkspaceDef};

mod listing;
pub use listing::{ListOrder, PageQuery};

/// Size of the blocks over which `x-cells-hash` is computed (cells-api.md §6.8).
pub const CELLS_HASH_BLOCK: u64 = 10 * 1024 * 1024;

/// The Etag of a node whose upload is still in flight.
pub const TEMPORARY_ETAG: &str = "temporary";

/// Name of the per-workspace recycle bin folder.
pub const RECYCLE_BIN: &str = "recycle_bin";

/// Reserved metadata key holding the original path of a node in the recycle bin (internal
/// path). Keys starting with `pydio:` are never shown to clients.
pub const RECYCLE_RESTORE_META: &str = "pydio:recycle_restore";

/// File or folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A file (`LEAF` on the wire).
    Leaf,
    /// A folder (`COLLECTION` on the wire).
    Collection,
}

impl NodeKind {
    /// The `treeNodeType` enum name.
    pub fn wire_name(self) -> &'static str {
        match self {
            NodeKind::Leaf => "LEAF",
            NodeKind::Collection => "COLLECTION",
        }
    }
}

/// One node as the index knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// Stable node id (a UUID string).
    pub uuid: String,
    /// The user-space path (`<slug>/<path>`, the slug alone for a workspace root, `""` for the
    /// virtual root) when returned by a method that took a login; empty in [`TreeChange`]s
    /// (use [`Store::visible_paths`]).
    pub path: String,
    /// The datasource-absolute path (`personal/alice/docs/a.txt`, `common/x`), unique.
    pub internal_path: String,
    pub kind: NodeKind,
    /// Bytes (files); for folders the cumulated size of their files.
    pub size: u64,
    /// Unix seconds, server-assigned on every content write and on folder creation.
    pub mtime: i64,
    /// MD5 hex of the content for single uploads, `"temporary"` while an upload is in flight,
    /// empty for folders.
    pub etag: String,
    /// MIME type of files.
    pub mime: Option<String>,
    /// Cells internal hash (hex), files only.
    pub cells_hash: Option<String>,
    /// Extra metadata, values as JSON values (REST encodes each as a JSON string). Includes
    /// reserved `pydio:` keys; [`NodeRecord::public_meta`] drops them.
    pub meta: BTreeMap<String, Value>,
    /// Content id of the blob (files with committed content only).
    pub content_id: Option<String>,
}

impl NodeRecord {
    /// The node's base name (last segment of its internal path).
    pub fn name(&self) -> &str {
        self.internal_path.rsplit('/').next().unwrap_or("")
    }

    /// True for files.
    pub fn is_leaf(&self) -> bool {
        self.kind == NodeKind::Leaf
    }

    /// Metadata without the reserved `pydio:` keys.
    pub fn public_meta(&self) -> BTreeMap<String, Value> {
        self.meta
            .iter()
            .filter(|(k, _)| !k.starts_with("pydio:"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// This node as a swagger `treeNode` in protobuf JSON (PascalCase, int64 as strings, zero
    /// values omitted, MetaStore values JSON-encoded, reserved metadata stripped), located at
    /// `path` (a user-space path). `extra_meta` entries are added to the MetaStore (e.g.
    /// `ws_*` keys of workspace roots, `EventWorkspaceId` for events).
    pub fn to_tree_node(&self, path: &str, extra_meta: &BTreeMap<String, Value>) -> Value {
        let mut obj = serde_json::Map::new();
        if !self.uuid.is_empty() {
            obj.insert("Uuid".into(), Value::String(self.uuid.clone()));
        }
        if !path.is_empty() {
            obj.insert("Path".into(), Value::String(path.to_string()));
        }
        obj.insert("Type".into(), Value::String(self.kind.wire_name().into()));
        if self.size != 0 {
            obj.insert("Size".into(), Value::String(self.size.to_string()));
        }
        if self.mtime != 0 {
            obj.insert("MTime".into(), Value::String(self.mtime.to_string()));
        }
        if !self.etag.is_empty() {
            obj.insert("Etag".into(), Value::String(self.etag.clone()));
        }
        let mut store = serde_json::Map::new();
        let name = path.rsplit('/').next().unwrap_or("");
        if !name.is_empty() {
            store.insert(
                "name".into(),
                Value::String(Value::String(name.into()).to_string()),
            );
        }
        if let Some(mime) = &self.mime {
            store.insert(
                "mime".into(),
                Value::String(Value::String(mime.clone()).to_string()),
            );
        }
        if let Some(hash) = &self.cells_hash {
            store.insert(
                "x-cells-hash".into(),
                Value::String(Value::String(hash.clone()).to_string()),
            );
        }
        for (k, v) in self.public_meta().iter().chain(extra_meta.iter()) {
            store.insert(k.clone(), Value::String(v.to_string()));
        }
        if !store.is_empty() {
            obj.insert("MetaStore".into(), Value::Object(store));
        }
        Value::Object(obj)
    }
}

/// One workspace as a given user sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceView {
    pub slug: String,
    /// Stable workspace id (derived from the slug).
    pub uuid: String,
    pub label: String,
    pub description: String,
    /// `"ADMIN"` for admin-defined workspaces, `"ROOM"` for Cells.
    pub scope: String,
    /// What this user may do in it.
    pub permission: Permission,
    /// Deletes are permanent in this workspace (`ws_skip_recycle`).
    pub skip_recycle: bool,
    /// The root folder node; its `path` is the slug.
    pub root: NodeRecord,
}

impl WorkspaceView {
    /// The `ws_*` MetaStore keys of this workspace's root node (cells-api.md §4), as JSON
    /// values (REST JSON-encodes each again).
    pub fn root_meta(&self) -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        m.insert("ws_scope".into(), Value::String(self.scope.clone()));
        m.insert("ws_label".into(), Value::String(self.label.clone()));
        m.insert(
            "ws_description".into(),
            Value::String(self.description.clone()),
        );
        m.insert("ws_slug".into(), Value::String(self.slug.clone()));
        m.insert("ws_uuid".into(), Value::String(self.uuid.clone()));
        m.insert(
            "ws_permissions".into(),
            Value::String(self.permission.as_str().into()),
        );
        m.insert("ws_syncable".into(), Value::Bool(true));
        if self.skip_recycle {
            m.insert("ws_skip_recycle".into(), Value::Bool(true));
        }
        m.insert("ws_root".into(), Value::String(self.root.uuid.clone()));
        m
    }
}

/// A user path a changed node is visible under, for one workspace of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisiblePath {
    pub ws_slug: String,
    pub ws_uuid: String,
    /// `<slug>/<path>` (the slug alone for the workspace root).
    pub path: String,
}

/// What a mutation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    UpdatePath,
    UpdateContent,
    UpdateMeta,
    /// User metadata (tags, bookmarks) of the target changed: sent at once, never merged.
    UpdateUserMeta,
    Delete,
}

/// One mutation of the tree. `source`/`target` follow cells-events.md §3.2: CREATE has a
/// target, DELETE a source, UPDATE_PATH both (old and new location), UPDATE_CONTENT and
/// UPDATE_META the current node as target. Nodes carry their `internal_path`; their `path` is
/// empty.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeChange {
    pub kind: ChangeKind,
    pub source: Option<NodeRecord>,
    pub target: Option<NodeRecord>,
    /// Delivered only to this user's sessions (an UPDATE_USER_META whose metadata policies
    /// grant READ to its owner alone, as a bookmark's); `None`: to whoever sees the node.
    pub only_for: Option<String>,
}

/// Why a store operation failed. REST maps NotFound→404, Forbidden→403, Locked→423, the rest
/// to 500 (with the message); S3 maps to its own codes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("node not found: {0}")]
    NotFound(String),
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A folder stands where a file is wanted ("A folder already exists with the same name").
    #[error("a folder already exists with the same name: {0}")]
    IsAFolder(String),
    /// A file stands where a folder is needed (as a parent, or as a listing target).
    #[error("not a folder: {0}")]
    NotAFolder(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("locked: {0}")]
    Locked(String),
    #[error("internal store error: {0}")]
    Internal(#[from] anyhow::Error),
}

/// An upload in flight: a file in the store's `tmp/` directory. Write the content with
/// [`std::io::Write`] (MD5 and `x-cells-hash` are computed as the bytes go through), or append
/// whole files whose 10 MiB block digests are already known with
/// [`TempBlob::append_file_with_blocks`], then hand it to [`Store::commit_file`]. Whatever the
/// hashes kept here cannot vouch for is re-hashed from disk when the blob is sealed. Dropped
/// without commit, the temp file is removed.
pub struct TempBlob {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// MD5 of everything written; `None` once content was appended without it (the Etag must
    /// then be set with [`TempBlob::set_etag`], or the content is re-hashed at seal).
    md5: Option<md5::Md5>,
    block: CellsHasher,
    written: u64,
    etag_override: Option<String>,
    /// Renamed into `blobs/` by [`Store::seal`]: nothing is left at `path` to remove.
    sealed: bool,
}

/// Incremental `x-cells-hash`: MD5 over the raw MD5 digests of consecutive 10 MiB blocks.
/// Digests of whole blocks hashed elsewhere can be pushed with
/// [`CellsHasher::push_block_digests`] at a block boundary.
#[derive(Clone, Default)]
pub struct CellsHasher {
    current: md5::Md5,
    in_block: u64,
    digests: Vec<u8>,
    /// The last pushed digest was of a partial block: the content must end there.
    ended_by_partial_block: bool,
    /// The digests no longer describe the content (bytes came after a partial block).
    invalid: bool,
}

use md5::Digest as _;

impl CellsHasher {
    pub fn new() -> CellsHasher {
        CellsHasher::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if self.ended_by_partial_block && !data.is_empty() {
            self.invalid = true;
        }
        while !data.is_empty() {
            let room = (CELLS_HASH_BLOCK - self.in_block) as usize;
            let take = room.min(data.len());
            self.current.update(&data[..take]);
            self.in_block += take as u64;
            data = &data[take..];
            if self.in_block == CELLS_HASH_BLOCK {
                let d = std::mem::take(&mut self.current).finalize();
                self.digests.extend_from_slice(&d);
                self.in_block = 0;
            }
        }
    }

    /// Append the raw MD5 digests of consecutive blocks hashed elsewhere: every block
    /// [`CELLS_HASH_BLOCK`] bytes long except possibly the last (`last_is_partial`), which
    /// then ends the content. Returns false (and changes nothing) unless the hasher stands at
    /// a block boundary, after whole blocks only.
    pub fn push_block_digests(&mut self, digests: &[[u8; 16]], last_is_partial: bool) -> bool {
        if self.in_block != 0 || self.ended_by_partial_block || self.invalid {
            return false;
        }
        for d in digests {
            self.digests.extend_from_slice(d);
        }
        self.ended_by_partial_block = last_is_partial && !digests.is_empty();
        true
    }

    /// Whether the digests still describe every byte given to this hasher.
    pub fn is_valid(&self) -> bool {
        !self.invalid
    }

    /// The raw MD5 digest of each block so far, the last (partial) block included; no digest
    /// at all for an empty input.
    pub fn finish_blocks(mut self) -> Vec<[u8; 16]> {
        if self.in_block > 0 {
            let d = std::mem::take(&mut self.current).finalize();
            self.digests.extend_from_slice(&d);
        }
        self.digests
            .chunks_exact(16)
            .map(|c| {
                let mut d = [0u8; 16];
                d.copy_from_slice(c);
                d
            })
            .collect()
    }

    /// The hex hash. An empty input hashes as `md5(md5(""))`.
    pub fn finish(mut self) -> String {
        if self.in_block > 0 || self.digests.is_empty() {
            let d = std::mem::take(&mut self.current).finalize();
            self.digests.extend_from_slice(&d);
        }
        hex::encode(md5::Md5::digest(&self.digests))
    }
}

impl TempBlob {
    /// Where the temp file lives (e.g. to reopen it for reading).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far through [`std::io::Write`].
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Use this Etag instead of the MD5 of the content (e.g. `<md5-of-md5s>-<n>` for a
    /// multipart upload).
    pub fn set_etag(&mut self, etag: impl Into<String>) {
        self.etag_override = Some(etag.into());
    }

    /// MD5 hex of what was written so far (`None` once a file was appended without it).
    pub fn md5_hex(&self) -> Option<String> {
        self.md5.as_ref().map(|m| hex::encode(m.clone().finalize()))
    }

    /// Append the whole of `from` (`expected_len` bytes) by a file-to-file copy (kernel-side
    /// on Linux: `copy_file_range`), without reading it through user space. `block_digests`
    /// are the raw MD5 digests of its consecutive 10 MiB blocks (the last may be partial);
    /// they extend the `x-cells-hash` when the blob so far ends on a block boundary,
    /// otherwise (or when the copied length differs) the content is re-hashed at seal. The
    /// whole-content MD5 is not kept afterwards: set the Etag with [`TempBlob::set_etag`].
    pub fn append_file_with_blocks(
        &mut self,
        from: &mut std::fs::File,
        expected_len: u64,
        block_digests: &[[u8; 16]],
    ) -> std::io::Result<u64> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("temp blob already closed"))?;
        let copied = std::io::copy(from, file)?;
        self.md5 = None;
        self.written += copied;
        let expected_blocks = expected_len.div_ceil(CELLS_HASH_BLOCK);
        let consistent = copied == expected_len && block_digests.len() as u64 == expected_blocks;
        let last_is_partial = !expected_len.is_multiple_of(CELLS_HASH_BLOCK);
        if !(consistent
            && self
                .block
                .push_block_digests(block_digests, last_is_partial))
        {
            self.block.invalid = true;
        }
        Ok(copied)
    }
}

impl std::io::Write for TempBlob {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("temp blob already closed"))?;
        let n = file.write(buf)?;
        if let Some(md5) = self.md5.as_mut() {
            md5.update(&buf[..n]);
        }
        self.block.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        self.file.take();
        if !self.sealed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The store. Shared as `Arc<Store>`.
pub struct Store {
    data_dir: PathBuf,
    idm: Idm,
    db: Mutex<rusqlite::Connection>,
    changes: tokio::sync::broadcast::Sender<TreeChange>,
}

/// An edit applied to a node's metadata as part of a move.
type MetaEdit = dyn Fn(&mut BTreeMap<String, Value>);

/// A user path resolved to the datasource.
struct Resolved {
    /// None for the virtual root `""`.
    ws: Option<(WorkspaceDef, Permission)>,
    /// Internal path of the workspace root for this user.
    root: String,
    /// Internal path of the target (`root` itself for the workspace root).
    internal: String,
}

impl Resolved {
    fn user_path(&self, internal: &str) -> String {
        match &self.ws {
            None => String::new(),
            Some((ws, _)) => user_path_in(&ws.slug, &self.root, internal),
        }
    }

    fn require_write(&self, path: &str) -> Result<(), StoreError> {
        match &self.ws {
            Some((_, perm)) if perm.can_write() => Ok(()),
            _ => Err(StoreError::Forbidden(format!("{path} is not writable"))),
        }
    }

    fn is_ws_root(&self) -> bool {
        self.ws.is_some() && self.internal == self.root
    }
}

fn user_path_in(slug: &str, root: &str, internal: &str) -> String {
    if internal == root {
        slug.to_string()
    } else {
        format!("{slug}{}", &internal[root.len()..])
    }
}

/// True if `path` is `ancestor` or lies under it.
fn is_within(path: &str, ancestor: &str) -> bool {
    path == ancestor
        || (path.len() > ancestor.len()
            && path.starts_with(ancestor)
            && path.as_bytes()[ancestor.len()] == b'/')
}

fn parent_of(internal: &str) -> &str {
    internal.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// Trim slashes, NFC-normalise, drop empty segments; refuse `.` and `..` segments.
pub fn normalize_path(path: &str) -> Result<String, StoreError> {
    use unicode_normalization::UnicodeNormalization;
    let nfc: String = path.nfc().collect();
    let mut segs = Vec::new();
    for seg in nfc.split('/') {
        match seg {
            "" => {}
            "." | ".." => return Err(StoreError::Invalid(format!("bad path segment in {path}"))),
            s => segs.push(s),
        }
    }
    Ok(segs.join("/"))
}

/// A MIME type from a file name's extension.
pub fn guess_mime(name: &str) -> String {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "json" => "application/json",
        "xml" => "application/xml",
        "js" => "application/javascript",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
    .to_string()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn internal_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(anyhow::anyhow!("{e}"))
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        internal_err(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        internal_err(e)
    }
}

const NODE_COLS: &str = "uuid, ipath, kind, size, mtime, etag, mime, cells_hash, meta, content_id";

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
    let kind: i64 = row.get(2)?;
    let meta: String = row.get(8)?;
    Ok(NodeRecord {
        uuid: row.get(0)?,
        path: String::new(),
        internal_path: row.get(1)?,
        kind: if kind == 0 {
            NodeKind::Leaf
        } else {
            NodeKind::Collection
        },
        size: row.get::<_, i64>(3)? as u64,
        mtime: row.get(4)?,
        etag: row.get(5)?,
        mime: row.get(6)?,
        cells_hash: row.get(7)?,
        meta: serde_json::from_str(&meta).unwrap_or_default(),
        content_id: row.get(9)?,
    })
}

/// Descendants range: every `P/...` path is in [`P/`, `P0`) since '0' follows '/'.
fn desc_bounds(ipath: &str) -> (String, String) {
    (format!("{ipath}/"), format!("{ipath}0"))
}

fn get_node(db: &rusqlite::Connection, ipath: &str) -> Result<Option<NodeRecord>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(db
        .query_row(
            &format!("SELECT {NODE_COLS} FROM nodes WHERE ipath = ?1"),
            [ipath],
            row_to_record,
        )
        .optional()?)
}

fn children(db: &rusqlite::Connection, ipath: &str) -> Result<Vec<NodeRecord>, StoreError> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {NODE_COLS} FROM nodes WHERE parent = ?1 ORDER BY ipath"
    ))?;
    let rows = stmt.query_map([ipath], row_to_record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn descendants(db: &rusqlite::Connection, ipath: &str) -> Result<Vec<NodeRecord>, StoreError> {
    let (lo, hi) = desc_bounds(ipath);
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {NODE_COLS} FROM nodes WHERE ipath >= ?1 AND ipath < ?2 ORDER BY ipath"
    ))?;
    let rows = stmt.query_map([lo, hi], row_to_record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn folder_size(db: &rusqlite::Connection, ipath: &str) -> Result<u64, StoreError> {
    let (lo, hi) = desc_bounds(ipath);
    let n: i64 = db.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM nodes WHERE kind = 0 AND ipath >= ?1 AND ipath < ?2",
        [lo, hi],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

fn insert_node(db: &rusqlite::Connection, n: &NodeRecord) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO nodes (uuid, ipath, parent, kind, size, mtime, etag, mime, cells_hash, meta, content_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        rusqlite::params![
            n.uuid,
            n.internal_path,
            parent_of(&n.internal_path),
            if n.is_leaf() { 0 } else { 1 },
            n.size as i64,
            n.mtime,
            n.etag,
            n.mime,
            n.cells_hash,
            serde_json::to_string(&n.meta).map_err(internal_err)?,
            n.content_id,
        ],
    )?;
    Ok(())
}

fn update_node(db: &rusqlite::Connection, n: &NodeRecord) -> Result<(), StoreError> {
    db.execute(
        "UPDATE nodes SET kind = ?2, size = ?3, mtime = ?4, etag = ?5, mime = ?6, cells_hash = ?7,
         meta = ?8, content_id = ?9 WHERE uuid = ?1",
        rusqlite::params![
            n.uuid,
            if n.is_leaf() { 0 } else { 1 },
            n.size as i64,
            n.mtime,
            n.etag,
            n.mime,
            n.cells_hash,
            serde_json::to_string(&n.meta).map_err(internal_err)?,
            n.content_id,
        ],
    )?;
    Ok(())
}

fn new_folder(ipath: &str) -> NodeRecord {
    NodeRecord {
        uuid: uuid::Uuid::new_v4().to_string(),
        path: String::new(),
        internal_path: ipath.to_string(),
        kind: NodeKind::Collection,
        size: 0,
        mtime: now_secs(),
        etag: String::new(),
        mime: None,
        cells_hash: None,
        meta: BTreeMap::new(),
        content_id: None,
    }
}

impl Store {
    /// Open (or create) the store under `config.data_dir`, create the users of the config and
    /// their workspace roots, and seed sample content if `config.sample` and the store is new.
    pub fn open(config: &EmuConfig) -> anyhow::Result<Store> {
        use anyhow::Context;
        let data_dir = config.data_dir.clone();
        for sub in ["", "blobs", "tmp"] {
            std::fs::create_dir_all(data_dir.join(sub))
                .with_context(|| format!("creating {}", data_dir.join(sub).display()))?;
        }
        // The index holds password hashes and the token database lives here too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", data_dir.display()))?;
        }
        // Uploads interrupted by a crash are garbage.
        if let Ok(rd) = std::fs::read_dir(data_dir.join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let db = rusqlite::Connection::open(data_dir.join("index.sqlite"))
            .context("opening the index")?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS nodes (
                uuid TEXT PRIMARY KEY,
                ipath TEXT NOT NULL UNIQUE,
                parent TEXT NOT NULL,
                kind INTEGER NOT NULL,
                size INTEGER NOT NULL,
                mtime INTEGER NOT NULL,
                etag TEXT NOT NULL,
                mime TEXT,
                cells_hash TEXT,
                meta TEXT NOT NULL,
                content_id TEXT
            );
            DROP INDEX IF EXISTS nodes_parent;
            CREATE INDEX IF NOT EXISTS nodes_parent_name ON nodes(parent, ipath);
            CREATE INDEX IF NOT EXISTS nodes_parent_mtime ON nodes(parent, mtime, ipath);
            CREATE TABLE IF NOT EXISTS users (
                login TEXT PRIMARY KEY, admin INTEGER NOT NULL, salt TEXT NOT NULL, hash TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL);",
        )?;
        // Users: the config's users are (re)created with the config's passwords.
        for (login, password) in &config.users {
            let login = normalize_path(login).map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(
                !login.is_empty() && !login.contains('/'),
                "invalid login {login:?}"
            );
            let user = crate::idm::User::new(&login, password, config.admins.contains(&login));
            let (salt, hash) = user.secret_parts();
            db.execute(
                "INSERT INTO users (login, admin, salt, hash) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(login) DO UPDATE SET admin = ?2, salt = ?3, hash = ?4",
                rusqlite::params![login, user.admin as i64, salt, hash],
            )?;
        }
        let idm = Idm::new(read_users(&db)?);
        let fresh = {
            use rusqlite::OptionalExtension;
            db.query_row("SELECT v FROM kv WHERE k = 'initialized'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .is_none()
        };
        let (changes, _) = tokio::sync::broadcast::channel(4096);
        let store = Store {
            data_dir,
            idm,
            db: Mutex::new(db),
            changes,
        };
        // Workspace roots.
        {
            let db = store.lock();
            for ws in store.idm.all_workspaces() {
                let roots: Vec<String> = match &ws.root {
                    crate::idm::WorkspaceRoot::Shared(p) => vec![p.clone()],
                    crate::idm::WorkspaceRoot::PerUser(_) => store
                        .idm
                        .users()
                        .map(|u| ws.root_internal(&u.login))
                        .collect(),
                };
                for root in roots {
                    ensure_folders_internal(&db, &root, &mut Vec::new())
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
            db.execute(
                "INSERT OR REPLACE INTO kv (k, v) VALUES ('initialized', ?1)",
                [now_secs().to_string()],
            )?;
        }
        store.collect_orphan_blobs();
        if fresh && config.sample {
            crate::sample::seed(&store)?;
        }
        Ok(store)
    }

    /// Remove blobs no node references (left by a crash between writing a blob and
    /// indexing it, or between re-indexing and unlinking the old one).
    fn collect_orphan_blobs(&self) {
        let referenced: std::collections::HashSet<String> = {
            let db = self.lock();
            let Ok(mut stmt) =
                db.prepare("SELECT content_id FROM nodes WHERE content_id IS NOT NULL")
            else {
                return;
            };
            let Ok(rows) = stmt.query_map([], |r| r.get::<_, String>(0)) else {
                return;
            };
            rows.flatten().collect()
        };
        let Ok(shards) = std::fs::read_dir(self.data_dir.join("blobs")) else {
            return;
        };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) {
                    tracing::info!(blob = %name, "removing unreferenced blob");
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }

    /// The index connection, locked. Other modules keep their own tables in the index
    /// (versions, shares, user metadata) and take this lock for as short as they can.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node with this Uuid, by its internal path (no user path), under the index lock.
    pub(crate) fn node_by_uuid(
        db: &rusqlite::Connection,
        uuid: &str,
    ) -> Result<Option<NodeRecord>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(db
            .query_row(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE uuid = ?1"),
                [uuid],
                row_to_record,
            )
            .optional()?)
    }

    /// Where the immutable blob of a content id lives.
    pub(crate) fn blob_file(&self, content_id: &str) -> PathBuf {
        self.blob_path(content_id)
    }

    /// The user paths under which `login` sees the node with this Uuid (empty if none).
    pub fn user_paths_of_uuid(&self, login: &str, uuid: &str) -> Vec<VisiblePath> {
        let node = {
            let db = self.lock();
            Store::node_by_uuid(&db, uuid).ok().flatten()
        };
        match node {
            Some(n) => self.visible_paths(login, &n),
            None => Vec::new(),
        }
    }

    fn emit(&self, kind: ChangeKind, source: Option<NodeRecord>, target: Option<NodeRecord>) {
        let _ = self.changes.send(TreeChange {
            kind,
            source,
            target,
            only_for: None,
        });
    }

    /// Announce that the user metadata of the node `uuid` changed (UPDATE_USER_META, the
    /// node re-read as target), to `only_for`'s sessions or, when `None`, to all who see it.
    pub fn user_meta_changed(&self, uuid: &str, only_for: Option<&str>) {
        let node = {
            let db = self.lock();
            Store::node_by_uuid(&db, uuid).ok().flatten()
        };
        if let Some(mut node) = node {
            node.path.clear();
            let _ = self.changes.send(TreeChange {
                kind: ChangeKind::UpdateUserMeta,
                source: None,
                target: Some(node),
                only_for: only_for.map(str::to_string),
            });
        }
    }

    fn blob_path(&self, content_id: &str) -> PathBuf {
        self.data_dir
            .join("blobs")
            .join(&content_id[..2.min(content_id.len())])
            .join(content_id)
    }

    fn resolve(&self, login: &str, path: &str) -> Result<Resolved, StoreError> {
        let path = normalize_path(path)?;
        if path.is_empty() {
            if self.idm.user(login).is_none() {
                return Err(StoreError::Forbidden(format!("unknown user {login}")));
            }
            return Ok(Resolved {
                ws: None,
                root: String::new(),
                internal: String::new(),
            });
        }
        let (slug, rest) = path.split_once('/').unwrap_or((&path, ""));
        let (ws, perm) = self
            .idm
            .workspaces_of(login)
            .into_iter()
            .find(|(w, _)| w.slug == slug)
            .ok_or_else(|| StoreError::NotFound(path.clone()))?;
        let root = ws.root_internal(login);
        let internal = if rest.is_empty() {
            root.clone()
        } else {
            format!("{root}/{rest}")
        };
        Ok(Resolved {
            ws: Some((ws, perm)),
            root,
            internal,
        })
    }

    fn virtual_root(&self) -> NodeRecord {
        NodeRecord {
            uuid: crate::idm::derived_uuid("virtual-root"),
            path: String::new(),
            internal_path: String::new(),
            kind: NodeKind::Collection,
            size: 0,
            mtime: 0,
            etag: String::new(),
            mime: None,
            cells_hash: None,
            meta: BTreeMap::new(),
            content_id: None,
        }
    }

    /// A record for output: user path and folder size filled in.
    fn present(
        &self,
        db: &rusqlite::Connection,
        r: &Resolved,
        mut n: NodeRecord,
    ) -> Result<NodeRecord, StoreError> {
        n.path = r.user_path(&n.internal_path);
        if n.kind == NodeKind::Collection {
            n.size = folder_size(db, &n.internal_path)?;
        }
        Ok(n)
    }

    /// The identity and workspace definitions.
    pub fn idm(&self) -> &Idm {
        &self.idm
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The workspaces `login` can see, in a stable order.
    pub fn workspaces(&self, login: &str) -> Vec<WorkspaceView> {
        let db = self.lock();
        let mut out = Vec::new();
        for (ws, perm) in self.idm.workspaces_of(login) {
            let root = ws.root_internal(login);
            let Ok(Some(mut node)) = get_node(&db, &root) else {
                continue;
            };
            node.path = ws.slug.clone();
            node.size = folder_size(&db, &root).unwrap_or(0);
            out.push(WorkspaceView {
                uuid: ws.uuid(),
                slug: ws.slug.clone(),
                label: ws.label.clone(),
                description: ws.description.clone(),
                scope: ws.scope.clone(),
                permission: perm,
                skip_recycle: ws.skip_recycle,
                root: node,
            });
        }
        out
    }

    /// The node at a user path. `""` is the virtual root (a synthetic COLLECTION).
    pub fn stat(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Ok(self.virtual_root());
        }
        let db = self.lock();
        let n = get_node(&db, &r.internal)?.ok_or_else(|| StoreError::NotFound(path.into()))?;
        self.present(&db, &r, n)
    }

    /// All children of a folder (dotfiles and the recycle bin included), sorted by name.
    /// `""` lists the workspace roots. NotFound if missing, NotAFolder on a file.
    pub fn list(&self, login: &str, folder_path: &str) -> Result<Vec<NodeRecord>, StoreError> {
        let r = self.resolve(login, folder_path)?;
        if r.ws.is_none() {
            return Ok(self.workspaces(login).into_iter().map(|w| w.root).collect());
        }
        let db = self.lock();
        let n =
            get_node(&db, &r.internal)?.ok_or_else(|| StoreError::NotFound(folder_path.into()))?;
        if n.is_leaf() {
            return Err(StoreError::NotAFolder(folder_path.into()));
        }
        children(&db, &r.internal)?
            .into_iter()
            .map(|c| self.present(&db, &r, c))
            .collect()
    }

    /// All descendants of a folder (not the folder itself), sorted by path.
    pub fn list_recursive(
        &self,
        login: &str,
        folder_path: &str,
    ) -> Result<Vec<NodeRecord>, StoreError> {
        let r = self.resolve(login, folder_path)?;
        if r.ws.is_none() {
            let mut out = Vec::new();
            for ws in self.workspaces(login) {
                let slug = ws.slug.clone();
                out.push(ws.root);
                out.extend(self.list_recursive(login, &slug)?);
            }
            return Ok(out);
        }
        let db = self.lock();
        let n =
            get_node(&db, &r.internal)?.ok_or_else(|| StoreError::NotFound(folder_path.into()))?;
        if n.is_leaf() {
            return Err(StoreError::NotAFolder(folder_path.into()));
        }
        descendants(&db, &r.internal)?
            .into_iter()
            .map(|c| self.present(&db, &r, c))
            .collect()
    }

    /// Create a folder and its missing parents. Returns the folder. A folder already there
    /// is returned as it is (Cells v4 indexes a folder creation as update-if-exists), so is
    /// a workspace root; NotAFolder when a file stands in the way; AlreadyExists only for
    /// the virtual root.
    pub fn create_folders(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Err(StoreError::AlreadyExists(path.into()));
        }
        r.require_write(path)?;
        let mut created = Vec::new();
        let node = {
            let db = self.lock();
            if let Some(existing) = get_node(&db, &r.internal)? {
                if existing.is_leaf() {
                    return Err(StoreError::NotAFolder(path.into()));
                }
                return self.present(&db, &r, existing);
            }
            let n = ensure_folders_internal(&db, &r.internal, &mut created)?;
            self.present(&db, &r, n)?
        };
        for c in created {
            self.emit(ChangeKind::Create, None, Some(c));
        }
        Ok(node)
    }

    /// A new temp file for an upload.
    pub fn tmp_file(&self) -> Result<TempBlob, StoreError> {
        let path = self
            .data_dir
            .join("tmp")
            .join(uuid::Uuid::new_v4().to_string());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempBlob {
            path,
            file: Some(file),
            md5: Some(md5::Md5::default()),
            block: CellsHasher::new(),
            written: 0,
            etag_override: None,
            sealed: false,
        })
    }

    /// Seal a temp blob into `blobs/`: returns (content id, size, md5 hex, cells hash, etag).
    fn seal(&self, mut blob: TempBlob) -> Result<(String, u64, String, String), StoreError> {
        use std::io::Write;
        let file = blob
            .file
            .take()
            .ok_or_else(|| internal_err("temp blob already sealed"))?;
        let mut file = file;
        file.flush()?;
        file.sync_all()?;
        let len = file.metadata()?.len();
        drop(file);
        let hashes_hold = len == blob.written && blob.block.is_valid();
        let (etag, cells) = match (hashes_hold, blob.md5.take(), blob.etag_override.take()) {
            (true, Some(md5), etag) => (
                etag.unwrap_or_else(|| hex::encode(md5.finalize())),
                std::mem::take(&mut blob.block).finish(),
            ),
            (true, None, Some(etag)) => (etag, std::mem::take(&mut blob.block).finish()),
            (_, _, etag) => {
                let (md5hex, cells) = hash_file(&blob.path)?;
                (etag.unwrap_or(md5hex), cells)
            }
        };
        let content_id = uuid::Uuid::new_v4().simple().to_string();
        let dest = self.blob_path(&content_id);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::rename(&blob.path, &dest)?;
        blob.sealed = true;
        if let Some(dir) = dest.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok((content_id, len, etag, cells))
    }

    /// Make `blob` the content of the file at `path`: parents are created, a folder at `path`
    /// (IsAFolder) or a file where a parent must be (NotAFolder) is refused; an existing file
    /// (or placeholder) keeps its Uuid. `meta` entries are merged into the node's metadata.
    /// Emits CREATE (new node) or UPDATE_CONTENT.
    pub fn commit_file(
        &self,
        login: &str,
        path: &str,
        blob: TempBlob,
        mime: Option<String>,
        meta: BTreeMap<String, Value>,
    ) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() || r.is_ws_root() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        r.require_write(path)?;
        let (content_id, size, etag, cells_hash) = self.seal(blob)?;
        let result = self.index_content(&r, path, &content_id, size, etag, cells_hash, mime, meta);
        if result.is_err() {
            let _ = std::fs::remove_file(self.blob_path(&content_id));
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn index_content(
        &self,
        r: &Resolved,
        path: &str,
        content_id: &str,
        size: u64,
        etag: String,
        cells_hash: String,
        mime: Option<String>,
        meta: BTreeMap<String, Value>,
    ) -> Result<NodeRecord, StoreError> {
        let mut created = Vec::new();
        let (node, old_blob, is_new) = {
            let db = self.lock();
            let existing = get_node(&db, &r.internal)?;
            if existing.as_ref().is_some_and(|e| !e.is_leaf()) {
                return Err(StoreError::IsAFolder(path.into()));
            }
            ensure_folders_internal(&db, parent_of(&r.internal), &mut created)?;
            let name = r.internal.rsplit('/').next().unwrap_or("");
            let mime = mime
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| guess_mime(name));
            let (node, old_blob, is_new) = match existing {
                Some(mut n) => {
                    let is_placeholder = n.content_id.is_none();
                    let old = n.content_id.take();
                    n.size = size;
                    n.mtime = now_secs();
                    n.etag = etag;
                    n.mime = Some(mime);
                    n.cells_hash = Some(cells_hash);
                    n.content_id = Some(content_id.to_string());
                    merge_meta(&mut n.meta, meta);
                    update_node(&db, &n)?;
                    let _ = is_placeholder;
                    (n, old, false)
                }
                None => {
                    let mut n = new_folder(&r.internal);
                    n.kind = NodeKind::Leaf;
                    n.size = size;
                    n.etag = etag;
                    n.mime = Some(mime);
                    n.cells_hash = Some(cells_hash);
                    n.content_id = Some(content_id.to_string());
                    merge_meta(&mut n.meta, meta);
                    insert_node(&db, &n)?;
                    (n, None, true)
                }
            };
            (self.present(&db, r, node)?, old_blob, is_new)
        };
        if let Some(old) = old_blob {
            let _ = std::fs::remove_file(self.blob_path(&old));
        }
        for c in created {
            self.emit(ChangeKind::Create, None, Some(c));
        }
        let mut ev = node.clone();
        ev.path.clear();
        self.emit(
            if is_new {
                ChangeKind::Create
            } else {
                ChangeKind::UpdateContent
            },
            None,
            Some(ev),
        );
        Ok(node)
    }

    /// Write a whole small content (helper for REST LEAF creation, samples and tests).
    pub fn put_bytes(
        &self,
        login: &str,
        path: &str,
        bytes: &[u8],
        mime: Option<String>,
    ) -> Result<NodeRecord, StoreError> {
        use std::io::Write;
        let mut blob = self.tmp_file()?;
        blob.write_all(bytes)?;
        self.commit_file(login, path, blob, mime, BTreeMap::new())
    }

    /// Index an upload in flight at `path` (Etag `"temporary"`, size `clear_size`) unless a
    /// file already exists there (then it is returned unchanged). Emits CREATE when created.
    pub fn create_placeholder(
        &self,
        login: &str,
        path: &str,
        clear_size: u64,
    ) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() || r.is_ws_root() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        r.require_write(path)?;
        let mut created = Vec::new();
        let (node, is_new) = {
            let db = self.lock();
            match get_node(&db, &r.internal)? {
                Some(n) if !n.is_leaf() => return Err(StoreError::IsAFolder(path.into())),
                Some(n) => (self.present(&db, &r, n)?, false),
                None => {
                    ensure_folders_internal(&db, parent_of(&r.internal), &mut created)?;
                    let mut n = new_folder(&r.internal);
                    n.kind = NodeKind::Leaf;
                    n.size = clear_size;
                    n.etag = TEMPORARY_ETAG.into();
                    n.mime = Some(guess_mime(n.name()));
                    insert_node(&db, &n)?;
                    (self.present(&db, &r, n)?, true)
                }
            }
        };
        for c in created {
            self.emit(ChangeKind::Create, None, Some(c));
        }
        if is_new {
            let mut ev = node.clone();
            ev.path.clear();
            self.emit(ChangeKind::Create, None, Some(ev));
        }
        Ok(node)
    }

    /// Remove the placeholder at `path` if it is still one (aborted upload). Emits DELETE.
    pub fn drop_placeholder(&self, login: &str, path: &str) -> Result<(), StoreError> {
        let r = self.resolve(login, path)?;
        let removed = {
            let db = self.lock();
            match get_node(&db, &r.internal)? {
                Some(n) if n.is_leaf() && n.content_id.is_none() => {
                    db.execute("DELETE FROM nodes WHERE uuid = ?1", [&n.uuid])?;
                    Some(n)
                }
                _ => None,
            }
        };
        if let Some(n) = removed {
            self.emit(ChangeKind::Delete, Some(n), None);
        }
        Ok(())
    }

    fn content_record(
        &self,
        db: &rusqlite::Connection,
        r: &Resolved,
        path: &str,
    ) -> Result<(NodeRecord, PathBuf), StoreError> {
        let n = get_node(db, &r.internal)?.ok_or_else(|| StoreError::NotFound(path.into()))?;
        if !n.is_leaf() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        let cid = n
            .content_id
            .clone()
            .ok_or_else(|| StoreError::NotFound(format!("{path} (upload in progress)")))?;
        let n = self.present(db, r, n)?;
        Ok((n, self.blob_path(&cid)))
    }

    /// The file at `path` and the path of its immutable blob. Open it promptly: an overwrite
    /// unlinks the old blob (prefer [`Store::open_content_file`], race-free). NotFound for a
    /// placeholder without content; IsAFolder for a folder.
    pub fn open_content(
        &self,
        login: &str,
        path: &str,
    ) -> Result<(NodeRecord, PathBuf), StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        let db = self.lock();
        self.content_record(&db, &r, path)
    }

    /// Like [`Store::open_content`], with the blob already opened (under the index lock, so
    /// the file matches the record even if the node is overwritten right after).
    pub fn open_content_file(
        &self,
        login: &str,
        path: &str,
    ) -> Result<(NodeRecord, std::fs::File), StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        let db = self.lock();
        let (n, p) = self.content_record(&db, &r, path)?;
        let f = std::fs::File::open(p)?;
        Ok((n, f))
    }

    /// Rewrite the internal path of a node and its subtree (under the lock).
    fn relocate(&self, db: &rusqlite::Connection, from: &str, to: &str) -> Result<(), StoreError> {
        let (lo, hi) = desc_bounds(from);
        let from_len = from.chars().count() as i64;
        db.execute(
            "UPDATE nodes SET ipath = ?1 || substr(ipath, ?2 + 1),
                              parent = ?1 || substr(parent, ?2 + 1)
             WHERE ipath >= ?3 AND ipath < ?4",
            rusqlite::params![to, from_len, lo, hi],
        )?;
        db.execute(
            "UPDATE nodes SET ipath = ?1, parent = ?2 WHERE ipath = ?3",
            rusqlite::params![to, parent_of(to), from],
        )?;
        Ok(())
    }

    /// Move/rename `src` to `dst` (the full new path; its parent is created if missing).
    /// Uuids are kept. Refuses workspace roots, moving a folder into itself, and an existing
    /// `dst` (AlreadyExists). Needs write permission on both sides. Emits UPDATE_PATH.
    pub fn move_node(&self, login: &str, src: &str, dst: &str) -> Result<NodeRecord, StoreError> {
        let rs = self.resolve(login, src)?;
        let rd = self.resolve(login, dst)?;
        self.move_resolved(&rs, src, &rd, dst, None)
    }

    fn move_resolved(
        &self,
        rs: &Resolved,
        src: &str,
        rd: &Resolved,
        dst: &str,
        meta_edit: Option<&MetaEdit>,
    ) -> Result<NodeRecord, StoreError> {
        if rs.ws.is_none() || rs.is_ws_root() {
            return Err(StoreError::Forbidden(format!("cannot move {src}")));
        }
        if rd.ws.is_none() || rd.is_ws_root() {
            return Err(StoreError::AlreadyExists(dst.into()));
        }
        rs.require_write(src)?;
        rd.require_write(dst)?;
        let mut created = Vec::new();
        let (before, after) = {
            let mut db = self.lock();
            let n = get_node(&db, &rs.internal)?.ok_or_else(|| StoreError::NotFound(src.into()))?;
            if rs.internal == rd.internal {
                return Err(StoreError::AlreadyExists(dst.into()));
            }
            if is_within(&rd.internal, &rs.internal) {
                return Err(StoreError::Invalid(format!(
                    "cannot move {src} into itself"
                )));
            }
            if get_node(&db, &rd.internal)?.is_some() {
                return Err(StoreError::AlreadyExists(dst.into()));
            }
            let tx = db.transaction()?;
            ensure_folders_internal(&tx, parent_of(&rd.internal), &mut created)?;
            self.relocate(&tx, &rs.internal, &rd.internal)?;
            let mut moved =
                get_node(&tx, &rd.internal)?.ok_or_else(|| internal_err("moved node vanished"))?;
            if let Some(edit) = meta_edit {
                edit(&mut moved.meta);
                update_node(&tx, &moved)?;
            }
            tx.commit()?;
            let after = self.present(&db, rd, moved)?;
            let mut before = n;
            before.path = rs.user_path(&before.internal_path);
            (before, after)
        };
        for c in created {
            self.emit(ChangeKind::Create, None, Some(c));
        }
        let (mut s, mut t) = (before, after.clone());
        s.path.clear();
        t.path.clear();
        self.emit(ChangeKind::UpdatePath, Some(s), Some(t));
        Ok(after)
    }

    /// Copy `src` (file or whole folder) to `dst` (full new path). New Uuids. Emits CREATE for
    /// each created node.
    pub fn copy_node(&self, login: &str, src: &str, dst: &str) -> Result<NodeRecord, StoreError> {
        let rs = self.resolve(login, src)?;
        let rd = self.resolve(login, dst)?;
        if rs.ws.is_none() {
            return Err(StoreError::Forbidden(format!("cannot copy {src}")));
        }
        if rd.ws.is_none() || rd.is_ws_root() {
            return Err(StoreError::AlreadyExists(dst.into()));
        }
        rd.require_write(dst)?;
        let mut created = Vec::new();
        let top = {
            let mut db = self.lock();
            let n = get_node(&db, &rs.internal)?.ok_or_else(|| StoreError::NotFound(src.into()))?;
            if is_within(&rd.internal, &rs.internal) {
                return Err(StoreError::Invalid(format!(
                    "cannot copy {src} into itself"
                )));
            }
            if get_node(&db, &rd.internal)?.is_some() {
                return Err(StoreError::AlreadyExists(dst.into()));
            }
            let mut nodes = vec![n];
            if nodes[0].kind == NodeKind::Collection {
                nodes.extend(descendants(&db, &rs.internal)?);
            }
            let tx = db.transaction()?;
            ensure_folders_internal(&tx, parent_of(&rd.internal), &mut created)?;
            let now = now_secs();
            let mut new_blobs = Vec::new();
            let mut result = Ok(());
            for mut c in nodes {
                let rel = &c.internal_path[rs.internal.len()..];
                c.internal_path = format!("{}{rel}", rd.internal);
                c.uuid = uuid::Uuid::new_v4().to_string();
                c.mtime = now;
                c.meta.remove(RECYCLE_RESTORE_META);
                if let Some(cid) = c.content_id.take() {
                    let new_cid = uuid::Uuid::new_v4().simple().to_string();
                    let (from, to) = (self.blob_path(&cid), self.blob_path(&new_cid));
                    if let Some(dir) = to.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    if std::fs::hard_link(&from, &to).is_err()
                        && let Err(e) = std::fs::copy(&from, &to)
                    {
                        result = Err(StoreError::from(e));
                        break;
                    }
                    new_blobs.push(to);
                    c.content_id = Some(new_cid);
                }
                if let Err(e) = insert_node(&tx, &c) {
                    result = Err(e);
                    break;
                }
                created.push(c);
            }
            if let Err(e) = result {
                drop(tx);
                for b in new_blobs {
                    let _ = std::fs::remove_file(b);
                }
                return Err(e);
            }
            tx.commit()?;
            let top = get_node(&db, &rd.internal)?.ok_or_else(|| internal_err("copy vanished"))?;
            self.present(&db, &rd, top)?
        };
        for c in created {
            self.emit(ChangeKind::Create, None, Some(c));
        }
        Ok(top)
    }

    /// Delete a node (and its subtree). `permanently = false` moves it into its workspace's
    /// recycle bin (created on the fly, name made unique) and records its original location
    /// in `pydio:recycle_restore`; it is permanent anyway when the workspace skips the recycle
    /// bin or the node already is in a recycle bin. Workspace roots and the recycle bin folder
    /// itself are refused. Returns the node where it now is (its former location if deleted
    /// permanently). Emits UPDATE_PATH or DELETE.
    pub fn delete_node(
        &self,
        login: &str,
        path: &str,
        permanently: bool,
    ) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        let Some((ws, _)) = &r.ws else {
            return Err(StoreError::Forbidden("cannot delete the root".into()));
        };
        if r.is_ws_root() {
            return Err(StoreError::Forbidden(format!(
                "cannot delete workspace root {path}"
            )));
        }
        r.require_write(path)?;
        let bin = format!("{}/{RECYCLE_BIN}", r.root);
        if r.internal == bin {
            return Err(StoreError::Forbidden(
                "cannot delete the recycle bin".into(),
            ));
        }
        let permanent = permanently || ws.skip_recycle || is_within(&r.internal, &bin);
        if !permanent {
            let n = self.stat(login, path)?;
            let bin_path = r.user_path(&bin);
            {
                let db = self.lock();
                if get_node(&db, &bin)?.is_none() {
                    let mut created = Vec::new();
                    ensure_folders_internal(&db, &bin, &mut created)?;
                    let mut b = get_node(&db, &bin)?.ok_or_else(|| internal_err("no bin"))?;
                    b.meta.insert("recycle_bin".into(), Value::Bool(true));
                    update_node(&db, &b)?;
                }
            }
            // A free name in the bin.
            let name = n.name().to_string();
            let (stem, ext) = match name.rsplit_once('.') {
                Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
                _ => (name.clone(), String::new()),
            };
            let mut candidate = format!("{bin_path}/{name}");
            let mut i = 1;
            while self.stat(login, &candidate).is_ok() {
                candidate = format!("{bin_path}/{stem}-{i}{ext}");
                i += 1;
            }
            let rd = self.resolve(login, &candidate)?;
            let original = r.internal.clone();
            return self.move_resolved(
                &r,
                path,
                &rd,
                &candidate,
                Some(&move |m: &mut BTreeMap<String, Value>| {
                    m.insert(RECYCLE_RESTORE_META.into(), Value::String(original.clone()));
                }),
            );
        }
        let (node, blobs) = {
            let mut db = self.lock();
            let n = get_node(&db, &r.internal)?.ok_or_else(|| StoreError::NotFound(path.into()))?;
            let mut blobs: Vec<String> = n.content_id.iter().cloned().collect();
            let tx = db.transaction()?;
            if !n.is_leaf() {
                for d in descendants(&tx, &r.internal)? {
                    blobs.extend(d.content_id);
                }
                let (lo, hi) = desc_bounds(&r.internal);
                tx.execute(
                    "DELETE FROM nodes WHERE ipath >= ?1 AND ipath < ?2",
                    [lo, hi],
                )?;
            }
            tx.execute("DELETE FROM nodes WHERE uuid = ?1", [&n.uuid])?;
            tx.commit()?;
            let mut n = n;
            n.path = r.user_path(&n.internal_path);
            (n, blobs)
        };
        for b in blobs {
            let _ = std::fs::remove_file(self.blob_path(&b));
        }
        let mut ev = node.clone();
        ev.path.clear();
        self.emit(ChangeKind::Delete, Some(ev), None);
        Ok(node)
    }

    /// Move a node out of the recycle bin to its recorded original path (parents recreated).
    /// Invalid when the node has no restore record. Emits UPDATE_PATH.
    pub fn restore_node(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Err(StoreError::Invalid("cannot restore the root".into()));
        }
        let n = self.stat(login, path)?;
        let Some(Value::String(original)) = n.meta.get(RECYCLE_RESTORE_META).cloned() else {
            return Err(StoreError::Invalid(format!(
                "{path} is not in a recycle bin"
            )));
        };
        if !is_within(&original, &r.root) {
            return Err(StoreError::Invalid(format!(
                "{path} cannot be restored here"
            )));
        }
        let dst = r.user_path(&original);
        let rd = self.resolve(login, &dst)?;
        self.move_resolved(
            &r,
            path,
            &rd,
            &dst,
            Some(&|m: &mut BTreeMap<String, Value>| {
                m.remove(RECYCLE_RESTORE_META);
            }),
        )
    }

    /// Permanently delete a file (S3 DELETE). IsAFolder on a folder. Emits DELETE.
    pub fn delete_file(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let n = self.stat(login, path)?;
        if !n.is_leaf() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        self.delete_node(login, path, true)
    }

    /// Merge metadata into a node (`Value::Null` removes a key). Emits UPDATE_META.
    pub fn set_meta(
        &self,
        login: &str,
        path: &str,
        meta: BTreeMap<String, Value>,
    ) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Err(StoreError::Forbidden("cannot edit the root".into()));
        }
        r.require_write(path)?;
        let node = {
            let db = self.lock();
            let mut n =
                get_node(&db, &r.internal)?.ok_or_else(|| StoreError::NotFound(path.into()))?;
            merge_meta(&mut n.meta, meta);
            update_node(&db, &n)?;
            self.present(&db, &r, n)?
        };
        let mut ev = node.clone();
        ev.path.clear();
        self.emit(ChangeKind::UpdateMeta, None, Some(ev));
        Ok(node)
    }

    /// Every mutation from now on.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<TreeChange> {
        self.changes.subscribe()
    }

    /// Where `login` sees `node` (located by its internal path): one entry per workspace of
    /// theirs whose root contains it (empty if none).
    pub fn visible_paths(&self, login: &str, node: &NodeRecord) -> Vec<VisiblePath> {
        self.idm
            .workspaces_of(login)
            .into_iter()
            .filter_map(|(ws, _)| {
                let root = ws.root_internal(login);
                is_within(&node.internal_path, &root).then(|| VisiblePath {
                    ws_uuid: ws.uuid(),
                    path: user_path_in(&ws.slug, &root, &node.internal_path),
                    ws_slug: ws.slug,
                })
            })
            .collect()
    }

    /// The workspaces `login` can see together with whether they can write there; same as
    /// [`Store::workspaces`] without the root records (cheap).
    pub fn workspace_defs(&self, login: &str) -> Vec<(WorkspaceDef, Permission)> {
        self.idm.workspaces_of(login)
    }
}

fn merge_meta(into: &mut BTreeMap<String, Value>, from: BTreeMap<String, Value>) {
    for (k, v) in from {
        if v.is_null() {
            into.remove(&k);
        } else {
            into.insert(k, v);
        }
    }
}

/// Create the folder at `ipath` and its missing ancestors (internal paths, no rights check).
/// Pushes created folders to `created`. NotAFolder when a file is in the way.
fn ensure_folders_internal(
    db: &rusqlite::Connection,
    ipath: &str,
    created: &mut Vec<NodeRecord>,
) -> Result<NodeRecord, StoreError> {
    if ipath.is_empty() {
        return Err(StoreError::Invalid("empty path".into()));
    }
    if let Some(n) = get_node(db, ipath)? {
        if n.is_leaf() {
            return Err(StoreError::NotAFolder(ipath.into()));
        }
        return Ok(n);
    }
    let parent = parent_of(ipath);
    if !parent.is_empty() {
        ensure_folders_internal(db, parent, created)?;
    }
    let n = new_folder(ipath);
    insert_node(db, &n)?;
    created.push(n.clone());
    Ok(n)
}

fn read_users(db: &rusqlite::Connection) -> anyhow::Result<Vec<crate::idm::User>> {
    let mut stmt = db.prepare("SELECT login, admin, salt, hash FROM users")?;
    let users = stmt
        .query_map([], |r| {
            Ok(crate::idm::User::from_parts(
                r.get(0)?,
                r.get::<_, i64>(1)? != 0,
                r.get(2)?,
                r.get(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(users)
}

/// The users of an existing data directory, read without opening the store (no side
/// effects: safe while a server runs on it). Used by the admin CLI.
pub fn load_idm(data_dir: &Path) -> anyhow::Result<Idm> {
    use anyhow::Context;
    let path = data_dir.join("index.sqlite");
    anyhow::ensure!(
        path.exists(),
        "{} is not a cells-emu data directory (no index.sqlite)",
        data_dir.display()
    );
    let db =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context("opening the index")?;
    db.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(Idm::new(read_users(&db)?))
}

/// MD5 hex and `x-cells-hash` of a file, read from disk.
fn hash_file(path: &Path) -> Result<(String, String), StoreError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut md5 = md5::Md5::default();
    let mut cells = CellsHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        cells.update(&buf[..n]);
    }
    Ok((hex::encode(md5.finalize()), cells.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn md5_raw(b: &[u8]) -> Vec<u8> {
        md5::Md5::digest(b).to_vec()
    }

    #[test]
    fn cells_hash_is_md5_of_block_md5s() {
        let block = CELLS_HASH_BLOCK as usize;
        let data: Vec<u8> = (0..(2 * block + 12345)).map(|i| (i % 251) as u8).collect();
        let mut expected = Vec::new();
        for chunk in data.chunks(block) {
            expected.extend(md5_raw(chunk));
        }
        let expected = hex::encode(md5_raw(&expected));
        let mut h = CellsHasher::new();
        for piece in data.chunks(777_777) {
            h.update(piece);
        }
        assert_eq!(h.finish(), expected);
        // Small and empty inputs: md5(md5(content)).
        let mut h = CellsHasher::new();
        h.update(b"abc");
        assert_eq!(h.finish(), hex::encode(md5_raw(&md5_raw(b"abc"))));
        assert_eq!(
            CellsHasher::new().finish(),
            hex::encode(md5_raw(&md5_raw(b"")))
        );
        // Exactly one block: one digest, no trailing empty block.
        let one: Vec<u8> = vec![7u8; block];
        let mut h = CellsHasher::new();
        h.update(&one);
        assert_eq!(h.finish(), hex::encode(md5_raw(&md5_raw(&one))));
    }

    #[test]
    fn content_written_behind_the_blob_is_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&EmuConfig::for_tests(dir.path())).unwrap();
        let blob = store.tmp_file().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(blob.path())
            .unwrap()
            .write_all(b"direct")
            .unwrap();
        let n = store
            .commit_file("alice", "personal-files/d.bin", blob, None, BTreeMap::new())
            .unwrap();
        assert_eq!(n.size, 6);
        assert_eq!(n.etag, hex::encode(md5_raw(b"direct")));
        assert_eq!(
            n.cells_hash.as_deref(),
            Some(hex::encode(md5_raw(&md5_raw(b"direct"))).as_str())
        );
    }

    #[test]
    fn overwrite_keeps_uuid_and_unlinks_old_blob_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&EmuConfig::for_tests(dir.path())).unwrap();
        let mut changes = store.subscribe_changes();
        let a = store
            .put_bytes("alice", "personal-files/x/f.txt", b"one", None)
            .unwrap();
        let (_, old_blob) = store
            .open_content("alice", "personal-files/x/f.txt")
            .unwrap();
        let b = store
            .put_bytes("alice", "personal-files/x/f.txt", b"two!", None)
            .unwrap();
        assert_eq!(a.uuid, b.uuid);
        assert!(!old_blob.exists());
        assert!(matches!(
            store.put_bytes("alice", "personal-files/x", b"no", None),
            Err(StoreError::IsAFolder(_))
        ));
        assert!(matches!(
            store.put_bytes("alice", "personal-files/x/f.txt/y", b"no", None),
            Err(StoreError::NotAFolder(_))
        ));
        assert!(matches!(
            store.put_bytes("alice", "team-docs/y", b"no", None),
            Err(StoreError::Forbidden(_))
        ));
        // Events: folder x CREATE, f.txt CREATE, f.txt UPDATE_CONTENT.
        let kinds: Vec<ChangeKind> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                ChangeKind::Create,
                ChangeKind::Create,
                ChangeKind::UpdateContent
            ]
        );
        // Visible paths: alice sees her file; bob does not; common files are seen by both.
        let vp = store.visible_paths("alice", &b);
        assert_eq!(vp.len(), 1);
        assert_eq!(vp[0].path, "personal-files/x/f.txt");
        assert!(store.visible_paths("bob", &b).is_empty());
        let c = store
            .put_bytes("bob", "common-files/c.txt", b"c", None)
            .unwrap();
        assert_eq!(
            store.visible_paths("alice", &c)[0].path,
            "common-files/c.txt"
        );
    }
}
