//! REST v1 under `/a` (cells-api.md §1-§5, §10): discovery (bootconf, config/discovery, the
//! XML frontend/state), legacy session login, bulk metadata listing/stat, HeadNode, node
//! creation, and the job-based move/copy/delete/restore with the user job list.
//!
//! Invariants:
//! - Every JSON body is protobuf-JSON shaped: PascalCase names as in the swagger, int64 as
//!   strings, zero values omitted, MetaStore values JSON-encoded, enums as names; reserved
//!   `pydio:` metadata never leaves the server.
//! - Every error is a `restError` body with the status codes of §1.5; request bodies with a
//!   field the swagger does not define are refused with HTTP 500
//!   `unknown field "X" in rest.Y` (as older servers did), so client bugs show up here.
//! - Every call except bootconf and discovery needs a valid bearer token (401 otherwise).

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::SharedState;
use crate::auth::{AuthError, Principal};
use crate::jobs::JobAction;
use crate::store::{ListOrder, NodeKind, NodeRecord, PageQuery, StoreError};

/// The Cells version the emulator claims to be.
pub const EMULATED_VERSION: &str = "4.4.15";
/// Build stamp reported to authenticated callers (`2006-01-02T15:04:05` layout).
pub const EMULATED_BUILD_STAMP: &str = "2025-06-05T09:30:00";
const BUILD_REVISION: &str = "cells-emu";

/// Routes, relative to `/a`.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/frontend/bootconf", get(bootconf))
        .route("/config/discovery", get(discovery))
        .route("/frontend/state", get(frontend_state))
        .route("/frontend/session", post(frontend_session))
        .route("/meta/bulk/get", post(bulk_meta))
        .route("/tree/stats", post(bulk_meta))
        .route("/tree/stat/{*node}", get(head_node))
        .route("/tree/create", post(create_nodes))
        .route("/tree/delete", post(delete_nodes))
        .route("/tree/restore", post(restore_nodes))
        .route("/jobs/user", post(list_jobs).put(control_job))
        .route("/jobs/user/{job_name}", put(create_user_job))
        .merge(crate::admin::router())
        .merge(crate::shares::router())
        .merge(crate::usermeta::router())
        .fallback(not_found)
}

/// A `restError` response.
#[derive(Debug)]
pub struct RestError {
    pub status: StatusCode,
    pub title: String,
    pub detail: Option<String>,
}

impl RestError {
    pub fn new(status: StatusCode, title: impl Into<String>) -> RestError {
        RestError {
            status,
            title: title.into(),
            detail: None,
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("Code".into(), json!(self.status.as_u16().to_string()));
        body.insert("Title".into(), json!(self.title));
        if let Some(d) = self.detail {
            body.insert("Detail".into(), json!(d));
        }
        (self.status, json_response(&Value::Object(body))).into_response()
    }
}

impl From<StoreError> for RestError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Forbidden(_) => StatusCode::FORBIDDEN,
            StoreError::Locked(_) => StatusCode::LOCKED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        RestError::new(status, e.to_string())
    }
}

impl From<AuthError> for RestError {
    fn from(e: AuthError) -> Self {
        RestError::new(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

pub(crate) type RestResult = Result<Response, RestError>;

pub(crate) fn json_response(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

pub(crate) fn ok(v: Value) -> RestResult {
    Ok(json_response(&v))
}

async fn not_found() -> RestError {
    RestError::new(StatusCode::NOT_FOUND, "no such API endpoint")
}

pub(crate) fn authenticate(
    state: &SharedState,
    headers: &HeaderMap,
) -> Result<Principal, RestError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(state.auth.verify_header(h)?)
}

/// Decode a request body strictly (unknown fields → 500 `unknown field "X" in rest.Y`).
pub(crate) fn parse_body<T: DeserializeOwned>(
    body: &Bytes,
    type_name: &str,
) -> Result<T, RestError> {
    let text = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(text).map_err(|e| {
        let msg = e.to_string();
        let title = match msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
        {
            Some((field, _)) => format!("unknown field \"{field}\" in {type_name}"),
            None => format!("cannot decode {type_name}: {msg}"),
        };
        RestError::new(StatusCode::INTERNAL_SERVER_ERROR, title)
    })
}

/// An int32 sent as a JSON number or a string (protojson accepts both).
pub(crate) fn int32_of(v: &Option<Value>) -> Result<i32, RestError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "bad int32 value")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "bad int32 value")),
        Some(_) => Err(RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad int32 value",
        )),
    }
}

/// `treeNode` as a request input.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct TreeNodeIn {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default, rename = "Type")]
    kind: Option<Value>,
    #[serde(default)]
    size: Option<Value>,
    #[serde(default, rename = "MTime")]
    mtime: Option<Value>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    mode: Option<Value>,
    #[serde(default)]
    meta_store: Option<HashMap<String, String>>,
    #[serde(default)]
    commits: Option<Value>,
    #[serde(default)]
    appears_in: Option<Value>,
}

impl TreeNodeIn {
    /// The `treeNodeType` must be a known enum name or number (jsonpb refuses others).
    fn check_type(&self) -> Result<(), RestError> {
        let ok = match &self.kind {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => matches!(s.as_str(), "UNKNOWN" | "LEAF" | "COLLECTION"),
            Some(Value::Number(n)) => matches!(n.as_i64(), Some(0..=2)),
            Some(_) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "unknown value {} for enum tree.NodeType",
                    self.kind.as_ref().unwrap_or(&Value::Null)
                ),
            ))
        }
    }

    fn is_leaf(&self) -> bool {
        matches!(&self.kind, Some(Value::String(s)) if s == "LEAF")
            || matches!(&self.kind, Some(Value::Number(n)) if n.as_i64() == Some(1))
    }

    fn path(&self) -> String {
        self.path
            .as_deref()
            .unwrap_or("")
            .trim_matches('/')
            .to_string()
    }
}

// ---------------------------------------------------------------------------------------
// Discovery

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn bootconf(State(state): State<SharedState>, headers: HeaderMap) -> RestResult {
    let authed = authenticate(&state, &headers).is_ok();
    let (version, stamp, revision) = if authed {
        (
            EMULATED_VERSION.to_string(),
            EMULATED_BUILD_STAMP.to_string(),
            BUILD_REVISION.to_string(),
        )
    } else {
        use md5::Digest;
        (
            hex::encode(md5::Md5::digest(EMULATED_VERSION.as_bytes())),
            String::new(),
            String::new(),
        )
    };
    ok(json!({
        "ajxpResourcesFolder": "plug/gui.ajax/res",
        "ENDPOINT_REST_API": "/a",
        "ENDPOINT_S3_GATEWAY": "/io",
        "ENDPOINT_WEBSOCKET": "/ws/event",
        "FRONTEND_URL": base_url(&headers),
        "PUBLIC_BASEURI": "/",
        "zipEnabled": true,
        "multipleFilesDownloadEnabled": true,
        "customWording": {"title": "Pydio Cells (emulator)", "icon": ""},
        "usersEnabled": true,
        "loggedUser": authed,
        "currentLanguage": "en-us",
        "session_timeout": 1440,
        "client_timeout": 1440,
        "client_timeout_warning": 5,
        "availableLanguages": {"en-us": "English"},
        "usersEditable": true,
        "ajxpVersion": version,
        "ajxpVersionDate": stamp,
        "i18nMessages": {},
        "theme": "material",
        "defaultLanguage": "en-us",
        "backend": {
            "PackageType": "PydioHome",
            "PackageLabel": "Pydio Cells Home Edition",
            "Version": version,
            "BuildRevision": revision,
            "BuildStamp": stamp,
            "License": "agplv3",
            "ServerOffset": 0,
            "PackagingInfo": ["cells-emu: an emulator for tests and demos"],
        },
    }))
}

async fn discovery(State(state): State<SharedState>, headers: HeaderMap) -> RestResult {
    let authed = authenticate(&state, &headers).is_ok();
    let base = base_url(&headers);
    let mut out = serde_json::Map::new();
    if authed {
        out.insert("BuildRevision".into(), json!(BUILD_REVISION));
        out.insert("BuildStamp".into(), json!(1_749_115_800i64));
        out.insert("PackageLabel".into(), json!("Pydio Cells Home Edition"));
        out.insert("PackageType".into(), json!("PydioHome"));
        out.insert("Version".into(), json!(EMULATED_VERSION));
    }
    out.insert(
        "Endpoints".into(),
        json!({
            "rest": format!("{base}/a"),
            "openapi": format!("{base}/a/config/discovery/openapi"),
            "s3": format!("{base}/io"),
            "websocket": format!("{base}/ws/event"),
            "oidc": format!("{base}/oidc"),
        }),
    );
    ok(Value::Object(out))
}

fn xml_escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

async fn frontend_state(State(state): State<SharedState>, headers: HeaderMap) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tree>");
    xml.push_str(&format!(
        "<user id=\"{}\"><personal/><repositories>",
        xml_escape(&p.login)
    ));
    for ws in state.store.workspaces(&p.login) {
        xml.push_str(&format!(
            "<repo id=\"{}\" repositorySlug=\"{}\" access_type=\"gateway\" acl=\"{}\" repository_type=\"{}\"><label>{}</label><description>{}</description></repo>",
            xml_escape(&ws.uuid),
            xml_escape(&ws.slug),
            ws.permission.as_str(),
            if ws.scope == "ROOM" { "cell" } else { "workspace" },
            xml_escape(&ws.label),
            xml_escape(&ws.description),
        ));
    }
    xml.push_str("</repositories><preferences/><special_rights is_admin=\"");
    xml.push_str(if p.admin { "1" } else { "0" });
    xml.push_str("\"/></user></tree>\n");
    Ok(([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct FrontSessionRequest {
    #[serde(default)]
    auth_info: Option<HashMap<String, String>>,
    #[serde(default)]
    client_time: Option<Value>,
    #[serde(default)]
    logout: Option<bool>,
}

async fn frontend_session(State(state): State<SharedState>, body: Bytes) -> RestResult {
    let req: FrontSessionRequest = parse_body(&body, "rest.FrontSessionRequest")?;
    let _ = int32_of(&req.client_time)?;
    if req.logout == Some(true) {
        return ok(json!({}));
    }
    let info = req.auth_info.unwrap_or_default();
    let login = info.get("login").map(String::as_str).unwrap_or("");
    let password = info.get("password").map(String::as_str).unwrap_or("");
    let session = tokio::task::spawn_blocking({
        let state = state.clone();
        let (login, password) = (login.to_string(), password.to_string());
        move || state.auth.login_session(&login, &password)
    })
    .await
    .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match session {
        Some(s) => ok(json!({"JWT": s.jwt, "ExpireTime": s.expire_time})),
        None => Err(RestError::new(
            StatusCode::UNAUTHORIZED,
            "Login failed: invalid login or password",
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Nodes

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
    for (namespace, value) in crate::usermeta::node_meta(&state.store, login, &n.uuid) {
        extra.insert(namespace, value);
    }
    if let Some(shares) = crate::shares::shares_meta(&state.store, login, &n.uuid) {
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

async fn bulk_meta(
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

async fn head_node(
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

async fn create_nodes(
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

// ---------------------------------------------------------------------------------------
// Jobs

fn new_job_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// Workspace rights check for a user path: NotFound if the workspace is not theirs,
/// Forbidden if they cannot write.
fn require_write(state: &SharedState, login: &str, path: &str) -> Result<(), RestError> {
    let slug = path.split('/').next().unwrap_or("");
    let defs = state.store.workspace_defs(login);
    let (_, perm) = defs
        .iter()
        .find(|(w, _)| w.slug == slug)
        .ok_or_else(|| RestError::new(StatusCode::NOT_FOUND, format!("{path} not found")))?;
    if !perm.can_write() {
        return Err(RestError::new(
            StatusCode::FORBIDDEN,
            format!("{path} is in a read-only workspace"),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserJobRequest {
    #[serde(default, rename = "JsonParameters")]
    json_parameters: Option<String>,
}

async fn create_user_job(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(job_name): Path<String>,
    body: Bytes,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: UserJobRequest = parse_body(&body, "rest.UserJobRequest")?;
    let params: Value = serde_json::from_str(req.json_parameters.as_deref().unwrap_or("{}"))
        .map_err(|e| {
            RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot decode JsonParameters: {e}"),
            )
        })?;
    let is_move = match job_name.as_str() {
        "move" => true,
        "copy" => false,
        other => {
            return Err(RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unknown user job {other}"),
            ));
        }
    };
    let nodes: Vec<String> = params
        .get("nodes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim_matches('/').to_string())
                .collect()
        })
        .unwrap_or_default();
    if nodes.is_empty() {
        return Err(RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "missing parameter nodes",
        ));
    }
    let target = params
        .get("target")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim_matches('/')
        .to_string();
    if target.is_empty() {
        return Err(RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "missing parameter target",
        ));
    }
    let target_parent = params
        .get("targetParent")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // Synchronous pre-checks, as the real server does before queueing.
    let checks = {
        let state = state.clone();
        let login = p.login.clone();
        let nodes = nodes.clone();
        let target = target.clone();
        move || -> Result<(), RestError> {
            for n in &nodes {
                let node = state
                    .store
                    .stat(&login, n)
                    .map_err(|_| RestError::new(StatusCode::NOT_FOUND, format!("{n} not found")))?;
                if is_move {
                    require_write(&state, &login, n)?;
                    if !node.path.contains('/') {
                        return Err(RestError::new(
                            StatusCode::FORBIDDEN,
                            "cannot move a workspace root",
                        ));
                    }
                }
            }
            require_write(&state, &login, &target)?;
            if target_parent {
                match state.store.stat(&login, &target) {
                    Ok(t) if !t.is_leaf() => {}
                    Ok(_) => {
                        return Err(RestError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("{target} is not a folder"),
                        ));
                    }
                    Err(_) => {
                        return Err(RestError::new(
                            StatusCode::NOT_FOUND,
                            format!("{target} not found"),
                        ));
                    }
                }
            } else if nodes.len() > 1 {
                return Err(RestError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "several nodes need targetParent",
                ));
            }
            Ok(())
        }
    };
    tokio::task::spawn_blocking(checks)
        .await
        .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let (label, action) = if is_move {
        (
            "Moving files",
            JobAction::Move {
                nodes,
                target,
                target_parent,
            },
        )
    } else {
        (
            "Copying files",
            JobAction::Copy {
                nodes,
                target,
                target_parent,
            },
        )
    };
    let id = state.jobs.submit(
        state.store.clone(),
        &p.login,
        new_job_id("copy-move"),
        label.to_string(),
        action,
    );
    ok(json!({"JobUuid": id}))
}

/// Nodes going to each workspace's recycle bin, and nodes deleted permanently.
type DeleteGroups = (BTreeMap<String, Vec<String>>, Vec<String>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct DeleteNodesRequest {
    #[serde(default)]
    nodes: Vec<TreeNodeIn>,
    #[serde(default)]
    recursive: Option<bool>,
    #[serde(default)]
    remove_permanently: Option<bool>,
}

async fn delete_nodes(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: DeleteNodesRequest = parse_body(&body, "rest.DeleteNodesRequest")?;
    if req.nodes.is_empty() {
        return Err(RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "please provide at least one node",
        ));
    }
    let _ = req.recursive;
    let permanently = req.remove_permanently == Some(true);
    let paths: Vec<String> = req.nodes.iter().map(TreeNodeIn::path).collect();
    // Pre-checks: every node exists and may be deleted; group by destination.
    let groups = {
        let state = state.clone();
        let login = p.login.clone();
        move || -> Result<DeleteGroups, RestError> {
            let mut to_bin: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut permanent = Vec::new();
            for path in paths {
                let node = state.store.stat(&login, &path).map_err(|_| {
                    RestError::new(StatusCode::NOT_FOUND, format!("{path} not found"))
                })?;
                require_write(&state, &login, &path)?;
                let slug = path.split('/').next().unwrap_or("").to_string();
                if !node.path.contains('/') {
                    return Err(RestError::new(
                        StatusCode::FORBIDDEN,
                        "cannot delete a workspace root",
                    ));
                }
                if node.path == format!("{slug}/{}", crate::store::RECYCLE_BIN) {
                    return Err(RestError::new(
                        StatusCode::FORBIDDEN,
                        "cannot delete the recycle bin",
                    ));
                }
                let skip = state
                    .store
                    .workspace_defs(&login)
                    .iter()
                    .any(|(w, _)| w.slug == slug && w.skip_recycle);
                let in_bin = node
                    .path
                    .starts_with(&format!("{slug}/{}/", crate::store::RECYCLE_BIN));
                if permanently || skip || in_bin {
                    permanent.push(path);
                } else {
                    to_bin.entry(slug).or_default().push(path);
                }
            }
            Ok((to_bin, permanent))
        }
    };
    let (to_bin, permanent) = tokio::task::spawn_blocking(groups)
        .await
        .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let mut jobs = Vec::new();
    for (slug, nodes) in to_bin {
        let label = format!("Moving to recycle bin of {slug}");
        let id = state.jobs.submit(
            state.store.clone(),
            &p.login,
            new_job_id("copy-move"),
            label.clone(),
            JobAction::Delete {
                nodes,
                permanently: false,
            },
        );
        jobs.push(json!({"Uuid": id, "Label": label}));
    }
    if !permanent.is_empty() {
        let label = "Deleting files permanently".to_string();
        let id = state.jobs.submit(
            state.store.clone(),
            &p.login,
            new_job_id("delete"),
            label.clone(),
            JobAction::Delete {
                nodes: permanent,
                permanently: true,
            },
        );
        jobs.push(json!({"Uuid": id, "Label": label}));
    }
    ok(json!({"DeleteJobs": jobs}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RestoreNodesRequest {
    #[serde(default)]
    nodes: Vec<TreeNodeIn>,
}

async fn restore_nodes(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: RestoreNodesRequest = parse_body(&body, "rest.RestoreNodesRequest")?;
    if req.nodes.is_empty() {
        return Err(RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "please provide at least one node",
        ));
    }
    let paths: Vec<String> = req.nodes.iter().map(TreeNodeIn::path).collect();
    let checked = {
        let state = state.clone();
        let login = p.login.clone();
        move || -> Result<Vec<(String, String)>, RestError> {
            let mut out = Vec::new();
            for path in paths {
                let node = state.store.stat(&login, &path).map_err(|_| {
                    RestError::new(StatusCode::NOT_FOUND, format!("{path} not found"))
                })?;
                require_write(&state, &login, &path)?;
                if !node.meta.contains_key(crate::store::RECYCLE_RESTORE_META) {
                    return Err(RestError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("{path} is not in a recycle bin"),
                    ));
                }
                out.push((path, node.uuid));
            }
            Ok(out)
        }
    };
    let nodes = tokio::task::spawn_blocking(checked)
        .await
        .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let mut jobs = Vec::new();
    for (path, uuid) in nodes {
        let label = format!("Restoring {path}");
        let id = state.jobs.submit(
            state.store.clone(),
            &p.login,
            new_job_id("copy-move"),
            label.clone(),
            JobAction::Restore { nodes: vec![path] },
        );
        jobs.push(json!({"Uuid": id, "Label": label, "NodeUuid": uuid}));
    }
    ok(json!({"RestoreJobs": jobs}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ListJobsRequest {
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    events_only: Option<bool>,
    #[serde(default)]
    timers_only: Option<bool>,
    #[serde(default)]
    load_tasks: Option<String>,
    #[serde(default, rename = "JobIDs")]
    job_ids: Vec<String>,
    #[serde(default)]
    tasks_offset: Option<Value>,
    #[serde(default)]
    tasks_limit: Option<Value>,
}

async fn list_jobs(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: ListJobsRequest = parse_body(&body, "jobs.ListJobsRequest")?;
    let _ = (
        req.events_only,
        req.timers_only,
        &req.load_tasks,
        int32_of(&req.tasks_offset)?,
        int32_of(&req.tasks_limit)?,
    );
    let owner = if p.admin && req.owner.as_deref() == Some("*") {
        None
    } else {
        Some(p.login.as_str())
    };
    let jobs: Vec<Value> = state
        .jobs
        .list(owner, &req.job_ids)
        .iter()
        .map(|j| j.to_json())
        .collect();
    if jobs.is_empty() {
        ok(json!({}))
    } else {
        ok(json!({"Jobs": jobs}))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct CtrlCommand {
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    owner_id: Option<String>,
    #[serde(default)]
    run_parameters: Option<Value>,
}

async fn control_job(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: CtrlCommand = parse_body(&body, "jobs.CtrlCommand")?;
    let _ = (&req.task_id, &req.owner_id, &req.run_parameters);
    let job_id = req.job_id.unwrap_or_default();
    match req.cmd.as_deref().unwrap_or("None") {
        "Stop" | "Delete" => {
            if state.jobs.stop(&p.login, &job_id) {
                ok(json!({"Msg": format!("Stop signal sent to {job_id}")}))
            } else {
                Err(RestError::new(
                    StatusCode::NOT_FOUND,
                    format!("job {job_id} not found"),
                ))
            }
        }
        other => Err(RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("command {other} is not supported for user jobs"),
        )),
    }
}
