//! Nodes over REST: the JSON of a node as a user sees it ([`node_json`]), bulk metadata
//! listing and stat (`/meta/bulk/get`, `/tree/stats`, paginated), HeadNode
//! (`/tree/stat/...`) and node creation (`/tree/create`).
//!
//! Invariants:
//! - A node's JSON is protobuf-JSON shaped (int64 as strings, zero values omitted,
//!   MetaStore values JSON-encoded) and never carries reserved `pydio:` metadata.
//! - Dotfiles are hidden from listings, as the real server hides them.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;
use crate::store::{ListOrder, NodeKind, NodeRecord, PageQuery};

use super::wire::{RestError, RestResult, TreeNodeIn, authenticate, int32_of, ok, parse_body};

/// The JSON of a node as REST shows it to `login`: `ws_*` keys on workspace roots, folder
/// counts when `counts`.
pub(crate) fn node_json(state: &SharedState, login: &str, n: &NodeRecord, counts: bool) -> Value {
    let mut extra = BTreeMap::new();
    if !n.path.is_empty()
        && !n.path.contains('/')
        && let Some(ws) = state
            .store
            .workspaces(login)
            .into_iter()
            .find(|w| w.slug == n.path)
    {
        extra = ws.root_meta();
    }
    for (namespace, value) in crate::node_meta::node_meta(&state.store, login, &n.uuid) {
        extra.insert(namespace, value);
    }
    if let Some(shares) = crate::node_meta::shares_meta(&state.store, login, &n.uuid) {
        extra.insert("workspaces_shares".into(), shares);
    }
    if counts
        && n.kind == NodeKind::Collection
        && let Ok(children) = state.store.list(login, &n.path)
    {
        let files = children.iter().filter(|c| c.is_leaf()).count();
        extra.insert("ChildrenCount".into(), json!(children.len()));
        extra.insert("ChildrenFiles".into(), json!(files));
        extra.insert("ChildrenFolders".into(), json!(children.len() - files));
    }
    n.to_tree_node(&n.path, &extra)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct GetBulkMetaRequest {
    #[serde(default)]
    node_paths: Vec<String>,
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    offset: Option<Value>,
    #[serde(default)]
    sort_field: Option<String>,
    #[serde(default)]
    sort_dir_desc: Option<bool>,
    #[serde(default)]
    filters: Option<HashMap<String, String>>,
    #[serde(default)]
    all_meta_providers: Option<bool>,
    #[serde(default)]
    versions: Option<bool>,
}

fn is_dotfile(n: &NodeRecord) -> bool {
    n.name().starts_with('.')
}

pub(super) async fn bulk_meta(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: GetBulkMetaRequest = parse_body(&body, "rest.GetBulkMetaRequest")?;
    let limit = int32_of(&req.limit)?.max(0);
    let offset = int32_of(&req.offset)?.max(0);
    let _ = req.all_meta_providers;
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || bulk_meta_blocking(&state2, &p.login, &req, limit, offset))
        .await
        .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn bulk_meta_blocking(
    state: &SharedState,
    login: &str,
    req: &GetBulkMetaRequest,
    limit: i32,
    offset: i32,
) -> RestResult {
    let trim = |s: &str| s.trim_matches('/').to_string();
    let mut nodes: Vec<Value> = Vec::new();
    let mut folders: Vec<NodeRecord> = Vec::new();
    if req.versions == Some(true) {
        // Each path is listed "as a folder" with versions: the file itself is not in the
        // output, only its version nodes; no pagination.
        for raw in &req.node_paths {
            let path = trim(raw);
            let node = state
                .store
                .stat(login, &path)
                .map_err(|_| RestError::new(StatusCode::NOT_FOUND, format!("{path} not found")))?;
            nodes.extend(crate::versions::version_nodes(&state.store, &node)?);
        }
        let mut out = serde_json::Map::new();
        if !nodes.is_empty() {
            out.insert("Nodes".into(), Value::Array(nodes));
        }
        return ok(Value::Object(out));
    }
    for raw in &req.node_paths {
        if let Some(folder) = raw
            .strip_suffix("/*")
            .or(if raw == "*" { Some("") } else { None })
        {
            let folder = trim(folder);
            let node = state.store.stat(login, &folder).map_err(|_| {
                RestError::new(StatusCode::NOT_FOUND, format!("{folder} not found"))
            })?;
            let in_request = req
                .node_paths
                .iter()
                .any(|p2| trim(p2) == folder && !p2.ends_with('*'));
            if in_request {
                nodes.push(node_json(state, login, &node, true));
            }
            folders.push(node);
        } else {
            let as_folder = req.node_paths.iter().any(|p2| *p2 == format!("{raw}/*"));
            if as_folder {
                continue;
            }
            if let Ok(node) = state.store.stat(login, &trim(raw)) {
                nodes.push(node_json(state, login, &node, true));
            }
        }
    }
    let mut pagination = None;
    for folder in folders {
        if folder.is_leaf() {
            continue;
        }
        let kind = req
            .filters
            .as_ref()
            .and_then(|f| f.get("type"))
            .and_then(|t| match t.as_str() {
                "LEAF" => Some(NodeKind::Leaf),
                "COLLECTION" => Some(NodeKind::Collection),
                _ => None,
            });
        let has_filter = kind.is_some();
        // Counted, then read a page at a time from the index: a page costs its entries.
        let total = state.store.count_children(login, &folder.path, kind)? as i32;
        let order = ListOrder::from_sort_field(req.sort_field.as_deref());
        let descending = req.sort_dir_desc == Some(true);
        // Page over the raw listing (dotfiles included), skipping dotfiles, and keep reading
        // pages while a page came back short, as the real handler does.
        let mut loaded: Vec<NodeRecord> = Vec::new();
        let mut count_differs = false;
        let mut off = offset as usize;
        loop {
            let query = PageQuery {
                order,
                descending,
                kind,
                offset: off,
                limit: (limit != 0).then_some(limit as usize),
            };
            let page = state.store.list_page(login, &folder.path, &query)?;
            loaded.extend(page.into_iter().filter(|c| !is_dotfile(c)));
            if loaded.len() >= limit as usize {
                break;
            }
            if off + limit as usize >= total.max(0) as usize {
                break;
            }
            off += limit as usize;
            count_differs = true;
        }
        let children_loaded = loaded.len() as i32;
        for c in &loaded {
            nodes.push(node_json(state, login, c, false));
        }
        if total > 0 && limit > 0 && children_loaded < total {
            let page_size = limit;
            let mut total_pages = (total + page_size - 1) / page_size;
            let current_page = offset / page_size + 1;
            let prev_offset = if current_page > 1 {
                offset - page_size
            } else {
                0
            };
            let next_offset = if current_page < total_pages {
                offset + page_size
            } else {
                0
            };
            if count_differs && !has_filter {
                total_pages = if children_loaded < page_size - 1 {
                    current_page
                } else {
                    -1
                };
            }
            let mut pg = serde_json::Map::new();
            for (k, v) in [
                ("Limit", page_size),
                ("CurrentOffset", offset),
                ("Total", total),
                ("CurrentPage", current_page),
                ("TotalPages", total_pages),
                ("NextOffset", next_offset),
                ("PrevOffset", prev_offset),
            ] {
                if v != 0 {
                    pg.insert(k.into(), json!(v));
                }
            }
            pagination = Some(Value::Object(pg));
        }
    }
    let mut out = serde_json::Map::new();
    if !nodes.is_empty() {
        out.insert("Nodes".into(), Value::Array(nodes));
    }
    if let Some(pg) = pagination {
        out.insert("Pagination".into(), pg);
    }
    ok(Value::Object(out))
}

pub(super) async fn head_node(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(node): Path<String>,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let path = node.trim_matches('/').to_string();
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let n = state2
            .store
            .stat(&p.login, &path)
            .map_err(|e| RestError::new(StatusCode::NOT_FOUND, e.to_string()))?;
        ok(json!({"Node": node_json(&state2, &p.login, &n, false)}))
    })
    .await
    .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct CreateNodesRequest {
    #[serde(default)]
    nodes: Vec<TreeNodeIn>,
    #[serde(default)]
    recursive: Option<bool>,
    #[serde(default, rename = "TemplateUUID")]
    template_uuid: Option<String>,
}

pub(super) async fn create_nodes(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: CreateNodesRequest = parse_body(&body, "rest.CreateNodesRequest")?;
    if req.nodes.is_empty() {
        return Err(RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "please provide at least one node to create",
        ));
    }
    if req.template_uuid.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err(RestError::new(StatusCode::NOT_FOUND, "template not found"));
    }
    let _ = req.recursive;
    for n in &req.nodes {
        n.check_type()?;
    }
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut seen = std::collections::HashSet::new();
        let mut children = Vec::new();
        for n in &req.nodes {
            let path = n.path();
            if !seen.insert(path.clone()) {
                continue;
            }
            let _ = (
                &n.uuid,
                &n.size,
                &n.mtime,
                &n.etag,
                &n.mode,
                &n.commits,
                &n.appears_in,
            );
            if n.is_leaf() {
                let contents = n
                    .meta_store
                    .as_ref()
                    .and_then(|m| m.get("Contents"))
                    .and_then(|v| serde_json::from_str::<String>(v).ok())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| " ".to_string());
                state2.store.put_bytes(
                    &p.login,
                    &path,
                    contents.as_bytes(),
                    Some("text/plain".into()),
                )?;
                // The real server echoes the input node, without a server Uuid.
                let mut echo = serde_json::Map::new();
                echo.insert("Path".into(), json!(path));
                echo.insert("Type".into(), json!("LEAF"));
                children.push(Value::Object(echo));
            } else {
                let node = state2.store.create_folders(&p.login, &path)?;
                children.push(node_json(&state2, &p.login, &node, false));
            }
        }
        ok(json!({"Children": children}))
    })
    .await
    .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}
