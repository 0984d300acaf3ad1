//! What the store hands out: node records ([`NodeRecord`], and their REST tree-node JSON),
//! the workspaces a user sees ([`WorkspaceView`]), where a node shows for a user
//! ([`VisiblePath`]), the change announcements ([`TreeChange`]) and [`StoreError`].
//!
//! Invariants:
//! - Reserved `pydio:` metadata stays inside: [`NodeRecord::public_meta`] and the JSON built
//!   from a record never carry it.
//! - A change names its nodes by their internal paths; mapping them to a user's paths is
//!   [`super::Store::visible_paths`]'s work.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::idm::Permission;

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
