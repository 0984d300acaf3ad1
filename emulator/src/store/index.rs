//! The node table of the index (`index.sqlite`): rows to records and back, a node by path,
//! a folder's children and descendants, a folder's size, and the creation of missing
//! folders. Every function runs under the index lock its caller holds.
//!
//! Invariants:
//! - A node's descendants are the rows whose internal path lies in the key range of
//!   `path + "/"`: one index range scan, no LIKE.
//! - A folder's size is the sum of the files it holds, computed when asked (never stored).

use std::collections::BTreeMap;

use super::{NodeKind, NodeRecord, StoreError, internal_err, now_secs, parent_of};

pub(super) const NODE_COLS: &str =
    "uuid, ipath, kind, size, mtime, etag, mime, cells_hash, meta, content_id";

pub(super) fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
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
pub(super) fn desc_bounds(ipath: &str) -> (String, String) {
    (format!("{ipath}/"), format!("{ipath}0"))
}

pub(super) fn get_node(
    db: &rusqlite::Connection,
    ipath: &str,
) -> Result<Option<NodeRecord>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(db
        .query_row(
            &format!("SELECT {NODE_COLS} FROM nodes WHERE ipath = ?1"),
            [ipath],
            row_to_record,
        )
        .optional()?)
}

pub(super) fn children(
    db: &rusqlite::Connection,
    ipath: &str,
) -> Result<Vec<NodeRecord>, StoreError> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {NODE_COLS} FROM nodes WHERE parent = ?1 ORDER BY ipath"
    ))?;
    let rows = stmt.query_map([ipath], row_to_record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn descendants(
    db: &rusqlite::Connection,
    ipath: &str,
) -> Result<Vec<NodeRecord>, StoreError> {
    let (lo, hi) = desc_bounds(ipath);
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {NODE_COLS} FROM nodes WHERE ipath >= ?1 AND ipath < ?2 ORDER BY ipath"
    ))?;
    let rows = stmt.query_map([lo, hi], row_to_record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn folder_size(db: &rusqlite::Connection, ipath: &str) -> Result<u64, StoreError> {
    let (lo, hi) = desc_bounds(ipath);
    let n: i64 = db.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM nodes WHERE kind = 0 AND ipath >= ?1 AND ipath < ?2",
        [lo, hi],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

pub(super) fn insert_node(db: &rusqlite::Connection, n: &NodeRecord) -> Result<(), StoreError> {
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

pub(super) fn update_node(db: &rusqlite::Connection, n: &NodeRecord) -> Result<(), StoreError> {
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

pub(super) fn new_folder(ipath: &str) -> NodeRecord {
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

/// Create the folder at `ipath` and its missing ancestors (internal paths, no rights check).
/// Pushes created folders to `created`. NotAFolder when a file is in the way.
pub(super) fn ensure_folders_internal(
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
