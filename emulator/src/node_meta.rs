//! What other features attach to a node, as REST answers and change events carry it in the
//! node's `MetaStore`: the user metadata on it (tags, bookmarks: the `user_meta` table of
//! `usermeta`) and the public links on it (`workspaces_shares`, from the tables of `shares`).
//! Read-only queries, below `rest`, `usermeta`, `shares` and `events`, so that each may use
//! them without importing the others.
//!
//! Invariants:
//! - A bookmark is seen only by its owner; other namespaces by whoever sees the node.
//! - A node's links are listed only to the user who owns them.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::Store;

/// The namespace of bookmarks (one per owner and node, seen only by the owner).
pub const BOOKMARK: &str = "bookmark";

/// One stored value of user metadata (a row of `user_meta`).
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub uuid: String,
    pub owner: String,
    pub node_uuid: String,
    pub namespace: String,
    pub json_value: String,
}

/// A `user_meta` row, its columns in [`COLS`] order.
pub(crate) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Meta> {
    Ok(Meta {
        uuid: r.get(0)?,
        owner: r.get(1)?,
        node_uuid: r.get(2)?,
        namespace: r.get(3)?,
        json_value: r.get(4)?,
    })
}

/// The columns [`row`] reads.
pub(crate) const COLS: &str = "uuid, owner, node_uuid, namespace, json_value";

/// The metas on a node visible to `login` (their bookmarks, everybody's other values).
pub(crate) fn metas_of_node(store: &Store, login: &str, node_uuid: &str) -> Vec<Meta> {
    let db = store.lock();
    let Ok(mut stmt) = db.prepare_cached(&format!(
        "SELECT {COLS} FROM user_meta WHERE node_uuid = ?1 AND (namespace != ?2 OR owner = ?3)"
    )) else {
        return Vec::new();
    };
    stmt.query_map([node_uuid, BOOKMARK, login], row)
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// The `MetaStore` entries user metadata adds to a node seen by `login` (`namespace` →
/// the JSON value, as a JSON value that the REST layer encodes back to the same string).
pub fn node_meta(store: &Store, login: &str, node_uuid: &str) -> Vec<(String, Value)> {
    metas_of_node(store, login, node_uuid)
        .into_iter()
        .filter_map(|m| {
            serde_json::from_str(&m.json_value)
                .ok()
                .map(|v| (m.namespace, v))
        })
        .collect()
}

/// The fields of a stored link (`shares::Link`, JSON in `share_links.doc`) that a node shows.
#[derive(Deserialize)]
struct LinkLabel {
    uuid: String,
    label: String,
    description: String,
}

/// The `workspaces_shares` metadata of a node shared by `login`: the share workspaces on it
/// owned by the caller (`[{"UUID","Label","Description","Scope":3}]`, Scope 3 = LINK).
pub fn shares_meta(store: &Store, login: &str, node_uuid: &str) -> Option<Value> {
    let db = store.lock();
    let mut stmt = db
        .prepare_cached(
            "SELECT l.doc FROM share_roots r JOIN share_links l ON l.uuid = r.link_uuid
             WHERE r.node_uuid = ?1 AND l.owner = ?2 ORDER BY l.rowid",
        )
        .ok()?;
    let rows = stmt
        .query_map([node_uuid, login], |r| r.get::<_, String>(0))
        .ok()?;
    let shares: Vec<Value> = rows
        .flatten()
        .filter_map(|doc| serde_json::from_str::<LinkLabel>(&doc).ok())
        .map(|l| {
            let mut o = json!({"UUID": l.uuid, "Label": l.label, "Scope": 3});
            if !l.description.is_empty() {
                o["Description"] = json!(l.description);
            }
            o
        })
        .collect();
    (!shares.is_empty()).then_some(Value::Array(shares))
}
