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
//! The rooms: this file holds the store itself (path resolution, rights, stat and listing,
//! the change channel); `model` what it hands out (records, views, changes, errors); `open`
//! the schema and the opening; `index` the node table's rows; `blob` uploads in flight and
//! the Cells hash; `content` committing and reading content; `tree` moves, copies, deletes,
//! restores and metadata edits; `listing` one page of a folder.
//!
//! All methods are synchronous and short, except those that touch content
//! ([`Store::commit_file`] when the hashes were not computed while streaming,
//! [`Store::copy_node`] of big trees): call those from `tokio::task::spawn_blocking` when in
//! doubt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::idm::{Idm, Permission, WorkspaceDef};

mod blob;
mod content;
mod index;
mod listing;
mod model;
mod open;
#[cfg(test)]
mod tests;
mod tree;

use blob::hash_file;
pub use blob::{CellsHasher, TempBlob};
pub use listing::{ListOrder, PageQuery};
pub use model::{
    ChangeKind, NodeKind, NodeRecord, StoreError, TreeChange, VisiblePath, WorkspaceView,
};
pub use open::load_idm;

use index::{
    NODE_COLS, children, desc_bounds, descendants, ensure_folders_internal, folder_size, get_node,
    insert_node, new_folder, row_to_record, update_node,
};

/// Size of the blocks over which `x-cells-hash` is computed (cells-api.md §6.8).
pub const CELLS_HASH_BLOCK: u64 = 10 * 1024 * 1024;

/// The Etag of a node whose upload is still in flight.
pub const TEMPORARY_ETAG: &str = "temporary";

/// Name of the per-workspace recycle bin folder.
pub const RECYCLE_BIN: &str = "recycle_bin";

/// Reserved metadata key holding the original path of a node in the recycle bin (internal
/// path). Keys starting with `pydio:` are never shown to clients.
pub const RECYCLE_RESTORE_META: &str = "pydio:recycle_restore";

/// The store. Shared as `Arc<Store>`.
pub struct Store {
    data_dir: PathBuf,
    idm: Idm,
    db: Mutex<rusqlite::Connection>,
    changes: tokio::sync::broadcast::Sender<TreeChange>,
    /// This open found a data directory never opened before.
    fresh: bool,
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

impl Store {
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

    /// Whether this open found a data directory never opened before (where the sample
    /// content, when asked for, is seeded).
    pub fn is_fresh(&self) -> bool {
        self.fresh
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
