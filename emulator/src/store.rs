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
        m.insert("ws_description".into(), Value::String(self.description.clone()));
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
/// [`std::io::Write`] (MD5 and `x-cells-hash` are computed as the bytes go through), then hand
/// it to [`Store::commit_file`]. Dropped without commit, the temp file is removed.
pub struct TempBlob {
    path: PathBuf,
    file: Option<std::fs::File>,
    md5: md5::Md5,
    block: CellsHasher,
    written: u64,
    etag_override: Option<String>,
}

/// Incremental `x-cells-hash`: MD5 over the raw MD5 digests of consecutive 10 MiB blocks.
#[derive(Clone, Default)]
pub struct CellsHasher {
    current: md5::Md5,
    in_block: u64,
    digests: Vec<u8>,
}

use md5::Digest as _;

impl CellsHasher {
    pub fn new() -> CellsHasher {
        CellsHasher::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
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

    /// MD5 hex of what was written so far.
    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5.clone().finalize())
    }
}

impl std::io::Write for TempBlob {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("temp blob already closed"))?;
        let n = file.write(buf)?;
        self.md5.update(&buf[..n]);
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
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The store. Shared as `Arc<Store>`.
pub struct Store {
    data_dir: PathBuf,
    idm: Idm,
    db: Mutex<rusqlite::Connection>,
    changes: tokio::sync::broadcast::Sender<TreeChange>,
}

impl Store {
    /// Open (or create) the store under `config.data_dir`, create the users of the config and
    /// their workspace roots, and seed sample content if `config.sample` and the store is new.
    pub fn open(config: &EmuConfig) -> anyhow::Result<Store> {
        let _ = config;
        todo!()
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
        let _ = login;
        todo!()
    }

    /// The node at a user path. `""` is the virtual root (a synthetic COLLECTION).
    pub fn stat(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let _ = (login, path);
        todo!()
    }

    /// All children of a folder (dotfiles and the recycle bin included), sorted by name.
    /// `""` lists the workspace roots. NotFound if missing, NotAFolder on a file.
    pub fn list(&self, login: &str, folder_path: &str) -> Result<Vec<NodeRecord>, StoreError> {
        let _ = (login, folder_path);
        todo!()
    }

    /// All descendants of a folder (not the folder itself), sorted by path.
    pub fn list_recursive(
        &self,
        login: &str,
        folder_path: &str,
    ) -> Result<Vec<NodeRecord>, StoreError> {
        let _ = (login, folder_path);
        todo!()
    }

    /// Create a folder and its missing parents. Returns the folder. AlreadyExists when a
    /// folder is there already; NotAFolder when a file stands in the way.
    pub fn create_folders(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let _ = (login, path);
        todo!()
    }

    /// A new temp file for an upload.
    pub fn tmp_file(&self) -> Result<TempBlob, StoreError> {
        todo!()
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
        let _ = (login, path, blob, mime, meta);
        todo!()
    }

    /// Index an upload in flight at `path` (Etag `"temporary"`, size `clear_size`) unless a
    /// file already exists there (then it is returned unchanged). Emits CREATE when created.
    pub fn create_placeholder(
        &self,
        login: &str,
        path: &str,
        clear_size: u64,
    ) -> Result<NodeRecord, StoreError> {
        let _ = (login, path, clear_size);
        todo!()
    }

    /// Remove the placeholder at `path` if it is still one (aborted upload). Emits DELETE.
    pub fn drop_placeholder(&self, login: &str, path: &str) -> Result<(), StoreError> {
        let _ = (login, path);
        todo!()
    }

    /// The file at `path` and the path of its immutable blob. Open it promptly: an overwrite
    /// unlinks the old blob (prefer [`Store::open_content_file`], race-free). NotFound for a
    /// placeholder without content; IsAFolder for a folder.
    pub fn open_content(
        &self,
        login: &str,
        path: &str,
    ) -> Result<(NodeRecord, PathBuf), StoreError> {
        let _ = (login, path);
        todo!()
    }

    /// Like [`Store::open_content`], with the blob already opened (under the index lock, so
    /// the file matches the record even if the node is overwritten right after).
    pub fn open_content_file(
        &self,
        login: &str,
        path: &str,
    ) -> Result<(NodeRecord, std::fs::File), StoreError> {
        let _ = (login, path);
        todo!()
    }

    /// Move/rename `src` to `dst` (the full new path; its parent is created if missing).
    /// Uuids are kept. Refuses workspace roots, moving a folder into itself, and an existing
    /// `dst` (AlreadyExists). Needs write permission on both sides. Emits UPDATE_PATH.
    pub fn move_node(&self, login: &str, src: &str, dst: &str) -> Result<NodeRecord, StoreError> {
        let _ = (login, src, dst);
        todo!()
    }

    /// Copy `src` (file or whole folder) to `dst` (full new path). New Uuids. Emits CREATE for
    /// each created node.
    pub fn copy_node(&self, login: &str, src: &str, dst: &str) -> Result<NodeRecord, StoreError> {
        let _ = (login, src, dst);
        todo!()
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
        let _ = (login, path, permanently);
        todo!()
    }

    /// Move a node out of the recycle bin to its recorded original path (parents recreated).
    /// Invalid when the node has no restore record. Emits UPDATE_PATH.
    pub fn restore_node(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let _ = (login, path);
        todo!()
    }

    /// Permanently delete a file (S3 DELETE). IsAFolder on a folder. Emits DELETE.
    pub fn delete_file(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let _ = (login, path);
        todo!()
    }

    /// Merge metadata into a node (`Value::Null` removes a key). Emits UPDATE_META.
    pub fn set_meta(
        &self,
        login: &str,
        path: &str,
        meta: BTreeMap<String, Value>,
    ) -> Result<NodeRecord, StoreError> {
        let _ = (login, path, meta);
        todo!()
    }

    /// Every mutation from now on.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<TreeChange> {
        self.changes.subscribe()
    }

    /// Where `login` sees `node` (located by its internal path): one entry per workspace of
    /// theirs whose root contains it (empty if none).
    pub fn visible_paths(&self, login: &str, node: &NodeRecord) -> Vec<VisiblePath> {
        let _ = (login, node);
        todo!()
    }

    /// The workspaces `login` can see together with whether they can write there; same as
    /// [`Store::workspaces`] without the root records (cheap).
    pub fn workspace_defs(&self, login: &str) -> Vec<(WorkspaceDef, Permission)> {
        let _ = login;
        todo!()
    }
}
