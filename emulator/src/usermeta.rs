//! User metadata (cells-share-versions.md §3): bookmarks and tags. `PUT /a/user-meta/update`,
//! `POST /a/user-meta/search`, `POST /a/user-meta/bookmarks`, `GET /a/user-meta/namespace`,
//! and the tag vocabulary `GET|POST /a/user-meta/tags/{Namespace}`,
//! `DELETE /a/user-meta/tags/{Namespace}/*`; values surface in the nodes' `MetaStore`.
//!
//! Model: the index table `user_meta` (meta uuid, owner login, node uuid, namespace, JSON
//! value, policies) and `user_meta_tags` (namespace, tag). The namespaces are those of a
//! default install: `bookmark` (hidden from the namespace list) and `usermeta-tags`.
//!
//! Invariants:
//! - A bookmark belongs to its owner: one per (owner, node), seen only by them. Other
//!   namespaces hold one value per node, read by whoever can read the node.
//! - Every `NodeUuid` must be readable by the caller (404 otherwise); setting or deleting a
//!   value outside `bookmark` needs write access to the node (403).
//! - `JsonValue` is a JSON-encoded string and is stored and returned as sent; the node's
//!   `MetaStore[namespace]` is that same string.
//! - Every stored or deleted value is announced at once as an UPDATE_USER_META event
//!   (cells-events.md §3.3) to those its policies let read it: a bookmark to its owner, other
//!   namespaces to whoever sees the node.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;
use crate::node_meta::{COLS, Meta, metas_of_node, row};
use crate::rest::node_json;
use crate::rest::wire::{RestError, RestResult, authenticate, ok, parse_body};
use crate::store::{Store, StoreError};

pub use crate::node_meta::BOOKMARK;
pub const TAGS: &str = "usermeta-tags";

/// Routes, relative to `/a`.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/user-meta/update", put(update))
        .route("/user-meta/search", post(search))
        .route("/user-meta/bookmarks", post(bookmarks))
        .route("/user-meta/namespace", get(namespaces))
        .route("/user-meta/tags/{ns}", get(list_tags).post(add_tag))
        .route("/user-meta/tags/{ns}/{tags}", delete(delete_tags))
}

/// Create the index tables (idempotent).
pub fn init(store: &Store) -> Result<(), StoreError> {
    store.lock().execute_batch(
        "CREATE TABLE IF NOT EXISTS user_meta (
            uuid TEXT PRIMARY KEY, owner TEXT NOT NULL, node_uuid TEXT NOT NULL,
            namespace TEXT NOT NULL, json_value TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS user_meta_node ON user_meta(node_uuid);
        CREATE TABLE IF NOT EXISTS user_meta_tags (
            namespace TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (namespace, tag)
        );",
    )?;
    Ok(())
}

fn policies(m: &Meta) -> Value {
    let p = |subject: String, action: &str| json!({"Resource": m.node_uuid, "Subject": subject, "Action": action, "Effect": "allow"});
    if m.namespace == BOOKMARK {
        json!([
            p(format!("user:{}", m.owner), "OWNER"),
            p(format!("user:{}", m.owner), "READ"),
            p(format!("user:{}", m.owner), "WRITE"),
        ])
    } else {
        json!([
            p(format!("user:{}", m.owner), "OWNER"),
            p("*".into(), "READ"),
            p("*".into(), "WRITE")
        ])
    }
}

fn to_json(m: &Meta) -> Value {
    json!({
        "Uuid": m.uuid,
        "NodeUuid": m.node_uuid,
        "Namespace": m.namespace,
        "JsonValue": m.json_value,
        "Policies": policies(m),
        "PoliciesContextEditable": true,
    })
}

fn save(store: &Store, meta: &Meta) -> rusqlite::Result<()> {
    store.lock().execute(
        "INSERT OR REPLACE INTO user_meta (uuid, owner, node_uuid, namespace, json_value)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![
            meta.uuid,
            meta.owner,
            meta.node_uuid,
            meta.namespace,
            meta.json_value
        ],
    )?;
    Ok(())
}

/// The UPDATE_USER_META event of a stored or deleted value, to those who may read it.
fn announce(store: &Store, meta: &Meta) {
    let only_for = (meta.namespace == BOOKMARK).then_some(meta.owner.as_str());
    store.user_meta_changed(&meta.node_uuid, only_for);
}

/// Store `namespace` = `json_value` on a node for `owner` without a request (sample data),
/// replacing the value they already see there.
pub fn put_value(
    store: &Store,
    owner: &str,
    node_uuid: &str,
    namespace: &str,
    json_value: &str,
) -> Result<(), StoreError> {
    let existing = metas_of_node(store, owner, node_uuid)
        .into_iter()
        .find(|x| x.namespace == namespace);
    let meta = Meta {
        uuid: existing
            .map(|x| x.uuid)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        owner: owner.to_string(),
        node_uuid: node_uuid.to_string(),
        namespace: namespace.to_string(),
        json_value: json_value.to_string(),
    };
    save(store, &meta)?;
    announce(store, &meta);
    Ok(())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct UserMetaIn {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    node_uuid: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    json_value: Option<String>,
    #[serde(default)]
    policies: Option<Vec<Value>>,
    #[serde(default)]
    policies_context_editable: Option<bool>,
    #[serde(default)]
    resolved_node: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct UpdateRequest {
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    meta_datas: Option<Vec<UserMetaIn>>,
}

fn internal(msg: impl std::fmt::Display) -> RestError {
    RestError::new(StatusCode::INTERNAL_SERVER_ERROR, msg.to_string())
}

/// Check the caller may read the node (404) and, if `write`, write it (403).
fn check_node(store: &Store, login: &str, node_uuid: &str, write: bool) -> Result<(), RestError> {
    let vp = store
        .user_paths_of_uuid(login, node_uuid)
        .into_iter()
        .next()
        .ok_or_else(|| {
            RestError::new(
                StatusCode::NOT_FOUND,
                format!("cannot find node {node_uuid}"),
            )
        })?;
    if write
        && !store
            .workspace_defs(login)
            .iter()
            .any(|(w, p)| w.slug == vp.ws_slug && p.can_write())
    {
        return Err(RestError::new(
            StatusCode::FORBIDDEN,
            format!("you are not allowed to edit metadata of node {node_uuid}"),
        ));
    }
    Ok(())
}

async fn update(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: UpdateRequest = parse_body(&body, "idm.UpdateUserMetaRequest")?;
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let store = &state2.store;
        let op = req.operation.unwrap_or_else(|| "PUT".into());
        if !matches!(op.as_str(), "PUT" | "DELETE") {
            return Err(internal(format!(
                "unknown value \"{op}\" for enum idm.UpdateUserMetaRequest_UserMetaOp"
            )));
        }
        let mut out = Vec::new();
        for m in req.meta_datas.unwrap_or_default() {
            let _ = (&m.policies, &m.policies_context_editable, &m.resolved_node);
            let namespace = m.namespace.clone().unwrap_or_default();
            if namespace != BOOKMARK && namespace != TAGS {
                return Err(RestError::new(
                    StatusCode::NOT_FOUND,
                    format!("unknown namespace {namespace}"),
                ));
            }
            let node_uuid = m.node_uuid.clone().unwrap_or_default();
            check_node(store, &p.login, &node_uuid, namespace != BOOKMARK)?;
            let existing = metas_of_node(store, &p.login, &node_uuid)
                .into_iter()
                .find(|x| {
                    x.namespace == namespace
                        && m.uuid
                            .as_deref()
                            .is_none_or(|u| u.is_empty() || u == x.uuid)
                });
            if op == "DELETE" {
                if let Some(x) = existing {
                    store
                        .lock()
                        .execute("DELETE FROM user_meta WHERE uuid = ?1", [&x.uuid])?;
                    announce(store, &x);
                    out.push(to_json(&x));
                }
                continue;
            }
            let value = m.json_value.clone().unwrap_or_default();
            if serde_json::from_str::<Value>(&value).is_err() {
                return Err(internal(format!("JsonValue is not valid JSON: {value}")));
            }
            let meta = Meta {
                uuid: existing
                    .as_ref()
                    .map(|x| x.uuid.clone())
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                owner: existing
                    .as_ref()
                    .map(|x| x.owner.clone())
                    .unwrap_or_else(|| p.login.clone()),
                node_uuid,
                namespace,
                json_value: value,
            };
            save(store, &meta)?;
            announce(store, &meta);
            out.push(to_json(&meta));
        }
        let mut o = serde_json::Map::new();
        if !out.is_empty() {
            o.insert("MetaDatas".into(), Value::Array(out));
        }
        ok(Value::Object(o))
    })
    .await
    .map_err(internal)?
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct SearchRequest {
    #[serde(default)]
    meta_uuids: Option<Vec<String>>,
    #[serde(default)]
    node_uuids: Option<Vec<String>>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_subject_owner: Option<String>,
    #[serde(default)]
    resource_query: Option<Value>,
}

async fn search(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: SearchRequest = parse_body(&body, "idm.SearchUserMetaRequest")?;
    // The server overrides ResourceQuery with the caller's subjects.
    let _ = &req.resource_query;
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let store = &state2.store;
        let all: Vec<Meta> = {
            let db = store.lock();
            let mut stmt = db.prepare_cached(&format!(
                "SELECT {COLS} FROM user_meta WHERE namespace != ?1 OR owner = ?2 ORDER BY rowid"
            ))?;
            let rows = stmt.query_map([BOOKMARK, p.login.as_str()], row)?;
            rows.flatten().collect()
        };
        let found: Vec<Value> = all
            .iter()
            .filter(|m| {
                req.node_uuids
                    .as_ref()
                    .is_none_or(|n| n.is_empty() || n.contains(&m.node_uuid))
                    && req
                        .meta_uuids
                        .as_ref()
                        .is_none_or(|u| u.is_empty() || u.contains(&m.uuid))
                    && req
                        .namespace
                        .as_deref()
                        .is_none_or(|ns| ns.is_empty() || ns == m.namespace)
                    && req
                        .resource_subject_owner
                        .as_deref()
                        .is_none_or(|o| o.is_empty() || o == m.owner)
                    && !store.user_paths_of_uuid(&p.login, &m.node_uuid).is_empty()
            })
            .map(to_json)
            .collect();
        let mut o = serde_json::Map::new();
        if !found.is_empty() {
            o.insert("Metadatas".into(), Value::Array(found));
        }
        ok(Value::Object(o))
    })
    .await
    .map_err(internal)?
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct BookmarksRequest {
    #[serde(default)]
    all: Option<bool>,
}

async fn bookmarks(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: BookmarksRequest = parse_body(&body, "rest.UserBookmarksRequest")?;
    let _ = req.all;
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let store = &state2.store;
        let marks: Vec<Meta> = {
            let db = store.lock();
            let mut stmt = db.prepare_cached(&format!(
                "SELECT {COLS} FROM user_meta WHERE namespace = ?1 AND owner = ?2 ORDER BY rowid"
            ))?;
            let rows = stmt.query_map([BOOKMARK, p.login.as_str()], row)?;
            rows.flatten().collect()
        };
        let mut nodes = Vec::new();
        for m in marks {
            // Bookmarks on nodes gone or no longer readable are skipped.
            let Some(vp) = store
                .user_paths_of_uuid(&p.login, &m.node_uuid)
                .into_iter()
                .next()
            else {
                continue;
            };
            let Ok(node) = store.stat(&p.login, &vp.path) else {
                continue;
            };
            let mut n = node_json(&state2, &p.login, &node, false);
            if let Some(ws) = store
                .workspaces(&p.login)
                .into_iter()
                .find(|w| w.slug == vp.ws_slug)
            {
                let rel = vp
                    .path
                    .strip_prefix(&format!("{}/", ws.slug))
                    .unwrap_or("")
                    .to_string();
                n["AppearsIn"] = json!([{
                    "WsUuid": ws.uuid, "WsLabel": ws.label, "WsSlug": ws.slug,
                    "WsScope": ws.scope, "Path": rel,
                }]);
            }
            nodes.push(n);
        }
        let mut o = serde_json::Map::new();
        if !nodes.is_empty() {
            o.insert("Nodes".into(), Value::Array(nodes));
        }
        ok(Value::Object(o))
    })
    .await
    .map_err(internal)?
}

async fn namespaces(State(state): State<SharedState>, headers: HeaderMap) -> RestResult {
    authenticate(&state, &headers)?;
    ok(json!({"Namespaces": [{
        "Namespace": TAGS,
        "Label": "Tags",
        "Order": 1,
        "Indexable": true,
        "JsonDefinition": "{\"type\":\"tags\"}",
        "Policies": [
            {"Resource": TAGS, "Subject": "*", "Action": "READ", "Effect": "allow"},
            {"Resource": TAGS, "Subject": "*", "Action": "WRITE", "Effect": "allow"},
        ],
    }]}))
}

fn known_tags_namespace(ns: &str) -> Result<(), RestError> {
    if ns == TAGS {
        Ok(())
    } else {
        Err(RestError::new(
            StatusCode::NOT_FOUND,
            format!("namespace {ns} not found"),
        ))
    }
}

async fn list_tags(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> RestResult {
    authenticate(&state, &headers)?;
    known_tags_namespace(&ns)?;
    let tags: Vec<String> = {
        let db = state.store.lock();
        let mut stmt =
            db.prepare_cached("SELECT tag FROM user_meta_tags WHERE namespace = ?1 ORDER BY tag")?;
        let rows = stmt.query_map([&ns], |r| r.get::<_, String>(0))?;
        rows.flatten().collect()
    };
    if tags.is_empty() {
        ok(json!({}))
    } else {
        ok(json!({"Tags": tags}))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct PutTagRequest {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

async fn add_tag(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    body: Bytes,
) -> RestResult {
    authenticate(&state, &headers)?;
    let req: PutTagRequest = parse_body(&body, "rest.PutUserMetaTagRequest")?;
    let _ = req.namespace;
    known_tags_namespace(&ns)?;
    let tag = req.tag.unwrap_or_default();
    if !tag.is_empty() {
        state.store.lock().execute(
            "INSERT OR IGNORE INTO user_meta_tags (namespace, tag) VALUES (?1, ?2)",
            [&ns, &tag],
        )?;
    }
    ok(json!({"Success": true}))
}

async fn delete_tags(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((ns, tags)): Path<(String, String)>,
) -> RestResult {
    authenticate(&state, &headers)?;
    known_tags_namespace(&ns)?;
    if tags != "*" {
        return Err(internal("only * is supported for deleting tags"));
    }
    state
        .store
        .lock()
        .execute("DELETE FROM user_meta_tags WHERE namespace = ?1", [&ns])?;
    ok(json!({"Success": true}))
}

impl From<rusqlite::Error> for RestError {
    fn from(e: rusqlite::Error) -> Self {
        internal(e)
    }
}
