//! File versions (cells-share-versions.md §2): the default versioning policy of the personal
//! and common datasources, the asynchronous recording of a version after each content
//! change, their listing (`POST /a/meta/bulk/get` with `"Versions": true`) and the reading of
//! one version's content (S3 GET/HEAD with `?versionId=`, and the restore by CopyObject).
//!
//! Model: a version is a row of the index table `versions` (version uuid, node uuid, Etag,
//! size, time, owner, description) plus a copy of the content at
//! `<data_dir>/versions/<nodeUuid>__<versionUuid>` (a hard link to the immutable blob when the
//! filesystem allows, else a copy).
//!
//! Invariants:
//! - As the server's versioning job: only files (never folders, `.pydio` files or uploads
//!   still `temporary`) of a versioned datasource get versions, on CREATE and UPDATE_CONTENT,
//!   and a version is recorded only when there is none yet or the newest one's Etag differs
//!   from the file's: the first upload is a version, an identical re-upload is not.
//! - Recording is asynchronous: a worker listens to the store's change channel, so a version
//!   appears shortly after the upload is answered, never within it.
//! - A version's content never changes once recorded; versions outlive the file's later
//!   overwrites (the blob they link to is only unlinked from `blobs/`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::store::{ChangeKind, NodeRecord, Store, StoreError, TEMPORARY_ETAG};

/// First segments of the internal paths whose datasource has `VersioningPolicyName:
/// "default-policy"` (the `personal` and `common` datasources; `team-docs` and `scratch`
/// are not versioned).
pub const VERSIONED_ROOTS: &[&str] = &["personal", "common"];

/// Description of a version when the trigger event cannot be rendered.
const NO_DESCRIPTION: &str = "N/A";

/// One recorded version.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// The version id (`versionId`).
    pub uuid: String,
    pub node_uuid: String,
    /// The content's Etag when recorded.
    pub etag: String,
    pub size: u64,
    /// Unix seconds: the content's modification time.
    pub mtime: i64,
    pub description: String,
}

/// Create the index table (idempotent).
pub fn init(store: &Store) -> Result<(), StoreError> {
    let db = store.lock();
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS versions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid TEXT NOT NULL UNIQUE,
            node_uuid TEXT NOT NULL,
            etag TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime INTEGER NOT NULL,
            description TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS versions_node ON versions(node_uuid);",
    )?;
    drop(db);
    std::fs::create_dir_all(versions_dir(store))?;
    Ok(())
}

fn versions_dir(store: &Store) -> PathBuf {
    store.data_dir().join("versions")
}

fn content_path(store: &Store, node_uuid: &str, version: &str) -> PathBuf {
    versions_dir(store).join(format!("{node_uuid}__{version}"))
}

/// True if a node at this internal path gets versions.
pub fn is_versioned(internal_path: &str) -> bool {
    let first = internal_path.split('/').next().unwrap_or("");
    let name = internal_path.rsplit('/').next().unwrap_or("");
    VERSIONED_ROOTS.contains(&first) && !name.starts_with(".pydio")
}

fn row_to_version(row: &rusqlite::Row<'_>) -> rusqlite::Result<Version> {
    Ok(Version {
        uuid: row.get(0)?,
        node_uuid: row.get(1)?,
        etag: row.get(2)?,
        size: row.get::<_, i64>(3)? as u64,
        mtime: row.get(4)?,
        description: row.get(5)?,
    })
}

const VERSION_COLS: &str = "uuid, node_uuid, etag, size, mtime, description";

/// The versions of a node, newest first.
pub fn list(store: &Store, node_uuid: &str) -> Result<Vec<Version>, StoreError> {
    let db = store.lock();
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {VERSION_COLS} FROM versions WHERE node_uuid = ?1 ORDER BY seq DESC"
    ))?;
    let rows = stmt.query_map([node_uuid], row_to_version)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// One version of a node and its content, opened. NotFound if the node has no such version.
pub fn open(
    store: &Store,
    node_uuid: &str,
    version_id: &str,
) -> Result<(Version, std::fs::File), StoreError> {
    use rusqlite::OptionalExtension;
    let db = store.lock();
    let v = db
        .query_row(
            &format!("SELECT {VERSION_COLS} FROM versions WHERE uuid = ?1 AND node_uuid = ?2"),
            [version_id, node_uuid],
            row_to_version,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("version {version_id}")))?;
    let f = std::fs::File::open(content_path(store, node_uuid, &v.uuid))?;
    Ok((v, f))
}

/// Record a version of the node with this Uuid if its content changed since the newest
/// version (the versioning job's `CreateVersion`). Returns the new version, if any.
pub fn record(store: &Store, node_uuid: &str) -> Result<Option<Version>, StoreError> {
    let db = store.lock();
    let Some(node) = Store::node_by_uuid(&db, node_uuid)? else {
        return Ok(None);
    };
    let Some(content_id) = node.content_id.clone() else {
        return Ok(None);
    };
    if !node.is_leaf() || node.etag == TEMPORARY_ETAG || !is_versioned(&node.internal_path) {
        return Ok(None);
    }
    let last: Option<String> = {
        use rusqlite::OptionalExtension;
        db.query_row(
            "SELECT etag FROM versions WHERE node_uuid = ?1 ORDER BY seq DESC LIMIT 1",
            [node_uuid],
            |r| r.get(0),
        )
        .optional()?
    };
    if last.as_deref() == Some(node.etag.as_str()) {
        return Ok(None);
    }
    let v = Version {
        uuid: uuid::Uuid::new_v4().to_string(),
        node_uuid: node_uuid.to_string(),
        etag: node.etag.clone(),
        size: node.size,
        mtime: node.mtime,
        description: NO_DESCRIPTION.to_string(),
    };
    // Under the index lock the node still points at this blob, so it exists.
    let dest = content_path(store, node_uuid, &v.uuid);
    let blob = store.blob_file(&content_id);
    if std::fs::hard_link(&blob, &dest).is_err() {
        let tmp = dest.with_extension("tmp");
        std::fs::copy(&blob, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &dest)?;
    }
    db.execute(
        "INSERT INTO versions (uuid, node_uuid, etag, size, mtime, description)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![
            v.uuid,
            v.node_uuid,
            v.etag,
            v.size as i64,
            v.mtime,
            v.description
        ],
    )?;
    Ok(Some(v))
}

/// The versioning job: records versions after content changes, off the request path.
/// Subscribes before returning, so no change made after this call is missed.
pub fn spawn_worker(store: Arc<Store>) -> tokio::task::JoinHandle<()> {
    let mut changes = store.subscribe_changes();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let change = match changes.recv().await {
                Ok(c) => c,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "versioning job lagged behind tree changes");
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            if !matches!(change.kind, ChangeKind::Create | ChangeKind::UpdateContent) {
                continue;
            }
            let Some(target) = change.target else {
                continue;
            };
            if !target.is_leaf() || !is_versioned(&target.internal_path) {
                continue;
            }
            let store = store.clone();
            let uuid = target.uuid.clone();
            let done = tokio::task::spawn_blocking(move || record(&store, &uuid)).await;
            match done {
                Ok(Ok(Some(v))) => {
                    tracing::debug!(node = %target.uuid, version = %v.uuid, "version recorded")
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(node = %target.uuid, "recording a version: {e}"),
                Err(e) => tracing::warn!("versioning job: {e}"),
            }
        }
    })
}

/// The version nodes of the file `node` (a presented record: user path filled in), newest
/// first, as `treeNode`s: the current node with the version's Etag, size and time, and the
/// `versionId` / `versionDescription` metadata.
pub fn version_nodes(store: &Store, node: &NodeRecord) -> Result<Vec<Value>, StoreError> {
    if !node.is_leaf() {
        return Ok(Vec::new());
    }
    Ok(list(store, &node.uuid)?
        .into_iter()
        .map(|v| {
            let mut n = node.clone();
            n.etag = v.etag;
            n.size = v.size;
            n.mtime = v.mtime;
            let mut extra = BTreeMap::new();
            extra.insert("versionId".to_string(), json!(v.uuid));
            extra.insert("versionDescription".to_string(), json!(v.description));
            n.to_tree_node(&node.path, &extra)
        })
        .collect())
}

/// A version of the file at a user path, as the S3 gateway serves it: the current record
/// with the version's Etag, size and time, and the version's content opened. NotFound when
/// the path or the version is unknown (the gateway's `HeadVersion` failing).
pub fn open_at_path(
    store: &Store,
    login: &str,
    path: &str,
    version_id: &str,
) -> Result<(NodeRecord, std::fs::File), StoreError> {
    let mut node = store.stat(login, path)?;
    if !node.is_leaf() {
        return Err(StoreError::IsAFolder(path.into()));
    }
    let (v, file) = open(store, &node.uuid, version_id)?;
    node.etag = v.etag;
    node.size = v.size;
    node.mtime = v.mtime;
    Ok((node, file))
}
