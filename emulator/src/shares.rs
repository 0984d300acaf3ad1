//! Public share links (cells-share-versions.md §1): `PUT /a/share/link` (create and update),
//! `GET` and `DELETE /a/share/link/{Uuid}`, `POST /a/share/resources`, the
//! `workspaces_shares` metadata of shared nodes, and the link records the public page and
//! the public WebDAV view ([`crate::public`]) read.
//!
//! Model: one row per link in the index table `share_links` (the LINK workspace, its hidden
//! user and its hash document folded into one JSON record) and one row per root node in
//! `share_roots`. What the server keeps apart and the client can observe is kept: the link
//! `Uuid` (workspace), the `LinkHash` (hash document id), the hidden user's login and uuid,
//! the download counter of the hash document.
//!
//! Invariants (the traps of the reference, emulated):
//! - An update rewrites the hash document from the request: the caller must send the whole
//!   object back; the download counter restarts at 0; an empty `UserLogin` makes a new hidden
//!   user; any password transition (enable, disable, change) makes a new hidden user too.
//! - `Permissions` are recomputed from the hidden user's rights on every read: read ⇒
//!   `Preview` (not for `pydio_unique_dl`) then `Download` (unless disabled); write ⇒ `Upload`.
//! - Repeated and object fields accept JSON `null` (the official Go client sends them).
//! - Only the owner (the creator) may read, edit or delete a link; the password is kept as a
//!   salted hash, never returned.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::SharedState;
use crate::rest::node_json;
use crate::rest::wire::{RestError, RestResult, authenticate, int32_of, ok, parse_body};
use crate::store::{NodeRecord, Store, StoreError};

/// Length of generated link hashes (`HASH_MIN_LENGTH`).
pub const HASH_LENGTH: usize = 12;

/// Routes, relative to `/a`.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/share/link", put(put_link))
        .route(
            "/share/link/{uuid}",
            axum::routing::get(get_link).delete(delete_link),
        )
        .route("/share/resources", post(list_resources))
}

/// One public link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Link {
    pub uuid: String,
    pub hash: String,
    /// Login of the creator.
    pub owner: String,
    pub label: String,
    pub description: String,
    /// Uuids of the shared nodes.
    pub roots: Vec<String>,
    pub template: String,
    /// Unix seconds after which the link is dead; 0 = never.
    pub access_end: i64,
    /// 0 = unlimited.
    pub max_downloads: i64,
    pub downloads: i64,
    /// `(salt, sha256(salt:password))` when the link has a password.
    pub password: Option<(String, String)>,
    pub read: bool,
    pub write: bool,
    pub download_disabled: bool,
    pub hidden_login: String,
    pub hidden_uuid: String,
    pub restrict_to_target_users: bool,
    pub target_users: Option<Value>,
    pub policies: Vec<Value>,
}

impl Link {
    /// `LinkUrl`: relative, as the server answers without a configured share URL.
    pub fn url(&self) -> String {
        format!("/public/{}", self.hash)
    }

    /// The permissions as the server recomputes them from the hidden user's rights.
    pub fn permissions(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.read {
            if self.template != "pydio_unique_dl" {
                p.push("Preview");
            }
            if !self.download_disabled {
                p.push("Download");
            }
        }
        if self.write {
            p.push("Upload");
        }
        p
    }

    /// Check a password typed for this link (a link without password accepts anything).
    pub fn check_password(&self, password: &str) -> bool {
        match &self.password {
            None => true,
            Some((salt, hash)) => {
                let h = hash_password(salt, password);
                h.len() == hash.len()
                    && h.bytes()
                        .zip(hash.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
        }
    }

    /// The `restShareLink` JSON. `full`: with the hash document's fields (GET/PUT answers);
    /// otherwise only what `/share/resources` gives (`Uuid, Label, Description, Policies,
    /// PoliciesContextEditable`).
    pub fn to_json(&self, full: bool) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("Uuid".into(), json!(self.uuid));
        o.insert("Label".into(), json!(self.label));
        if !self.description.is_empty() {
            o.insert("Description".into(), json!(self.description));
        }
        o.insert("Policies".into(), json!(self.policies));
        o.insert("PoliciesContextEditable".into(), json!(true));
        if !full {
            return Value::Object(o);
        }
        o.insert("LinkHash".into(), json!(self.hash));
        o.insert("LinkUrl".into(), json!(self.url()));
        let roots: Vec<Value> = self.roots.iter().map(|u| json!({"Uuid": u})).collect();
        o.insert("RootNodes".into(), Value::Array(roots));
        let perms = self.permissions();
        if !perms.is_empty() {
            o.insert("Permissions".into(), json!(perms));
        }
        o.insert("ViewTemplateName".into(), json!(self.template));
        if self.access_end != 0 {
            o.insert("AccessEnd".into(), json!(self.access_end.to_string()));
        }
        if self.max_downloads != 0 {
            o.insert("MaxDownloads".into(), json!(self.max_downloads.to_string()));
        }
        if self.downloads != 0 {
            o.insert("CurrentDownloads".into(), json!(self.downloads.to_string()));
        }
        if self.password.is_some() {
            o.insert("PasswordRequired".into(), json!(true));
        }
        o.insert("UserLogin".into(), json!(self.hidden_login));
        o.insert("UserUuid".into(), json!(self.hidden_uuid));
        if self.restrict_to_target_users {
            o.insert("RestrictToTargetUsers".into(), json!(true));
        }
        if let Some(t) = &self.target_users {
            o.insert("TargetUsers".into(), t.clone());
        }
        Value::Object(o)
    }
}

fn hash_password(salt: &str, password: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

fn new_password(password: &str) -> (String, String) {
    let salt = hex::encode(rand::random::<[u8; 16]>());
    let hash = hash_password(&salt, password);
    (salt, hash)
}

pub(crate) fn new_hidden_user() -> (String, String) {
    (
        hex::encode(rand::random::<[u8; 8]>()),
        uuid::Uuid::new_v4().to_string(),
    )
}

/// Create the index tables (idempotent).
pub fn init(store: &Store) -> Result<(), StoreError> {
    store.lock().execute_batch(
        "CREATE TABLE IF NOT EXISTS share_links (
            uuid TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, doc TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS share_roots (link_uuid TEXT NOT NULL, node_uuid TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS share_roots_node ON share_roots(node_uuid);",
    )?;
    Ok(())
}

fn decode(doc: String) -> Option<Link> {
    serde_json::from_str(&doc).ok()
}

/// The link with this Uuid.
pub fn by_uuid(store: &Store, uuid: &str) -> Result<Option<Link>, StoreError> {
    use rusqlite::OptionalExtension;
    let doc: Option<String> = store
        .lock()
        .query_row("SELECT doc FROM share_links WHERE uuid = ?1", [uuid], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(doc.and_then(decode))
}

/// The link with this public hash.
pub fn by_hash(store: &Store, hash: &str) -> Result<Option<Link>, StoreError> {
    use rusqlite::OptionalExtension;
    let doc: Option<String> = store
        .lock()
        .query_row("SELECT doc FROM share_links WHERE hash = ?1", [hash], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(doc.and_then(decode))
}

fn links_of(store: &Store, owner: &str) -> Result<Vec<Link>, StoreError> {
    let db = store.lock();
    let mut stmt =
        db.prepare_cached("SELECT doc FROM share_links WHERE owner = ?1 ORDER BY rowid")?;
    let rows = stmt.query_map([owner], |r| r.get::<_, String>(0))?;
    Ok(rows.flatten().filter_map(decode).collect())
}

/// Insert or replace a link (and its roots). `old_uuid`'s row is replaced.
pub(crate) fn save(store: &Store, link: &Link) -> Result<(), StoreError> {
    let doc = serde_json::to_string(link).map_err(|e| StoreError::Internal(e.into()))?;
    let mut db = store.lock();
    let tx = db.transaction()?;
    tx.execute("DELETE FROM share_links WHERE uuid = ?1", [&link.uuid])?;
    tx.execute("DELETE FROM share_roots WHERE link_uuid = ?1", [&link.uuid])?;
    tx.execute(
        "INSERT INTO share_links (uuid, hash, owner, doc) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![link.uuid, link.hash, link.owner, doc],
    )?;
    for r in &link.roots {
        tx.execute(
            "INSERT INTO share_roots (link_uuid, node_uuid) VALUES (?1, ?2)",
            [&link.uuid, r],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn remove(store: &Store, uuid: &str) -> Result<(), StoreError> {
    let db = store.lock();
    db.execute("DELETE FROM share_links WHERE uuid = ?1", [uuid])?;
    db.execute("DELETE FROM share_roots WHERE link_uuid = ?1", [uuid])?;
    Ok(())
}

/// Count one download of the link (a GET of content from offset 0 through the link).
pub fn count_download(store: &Store, uuid: &str) -> Result<(), StoreError> {
    if let Some(mut link) = by_uuid(store, uuid)? {
        link.downloads += 1;
        save(store, &link)?;
    }
    Ok(())
}

/// The root nodes of a link as its owner sees them now (`None` for a root that is gone).
pub fn root_nodes(store: &Store, link: &Link) -> Vec<Option<NodeRecord>> {
    link.roots
        .iter()
        .map(|u| {
            store
                .user_paths_of_uuid(&link.owner, u)
                .first()
                .and_then(|vp| store.stat(&link.owner, &vp.path).ok())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Requests

/// `restShareLink` as a request input: every field may be `null`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ShareLinkIn {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    link_hash: Option<String>,
    #[serde(default)]
    link_url: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    root_nodes: Option<Vec<Value>>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
    #[serde(default)]
    view_template_name: Option<String>,
    #[serde(default)]
    access_start: Option<Value>,
    #[serde(default)]
    access_end: Option<Value>,
    #[serde(default)]
    max_downloads: Option<Value>,
    #[serde(default)]
    current_downloads: Option<Value>,
    #[serde(default)]
    password_required: Option<bool>,
    #[serde(default)]
    user_login: Option<String>,
    #[serde(default)]
    user_uuid: Option<String>,
    #[serde(default)]
    restrict_to_target_users: Option<bool>,
    #[serde(default)]
    target_users: Option<Value>,
    #[serde(default)]
    policies: Option<Vec<Value>>,
    #[serde(default)]
    policies_context_editable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct PutShareLinkRequest {
    #[serde(default)]
    share_link: Option<ShareLinkIn>,
    #[serde(default)]
    password_enabled: Option<bool>,
    #[serde(default)]
    create_password: Option<String>,
    #[serde(default)]
    update_password: Option<String>,
    #[serde(default)]
    update_custom_hash: Option<String>,
}

fn bad_request(msg: impl Into<String>) -> RestError {
    RestError::new(StatusCode::BAD_REQUEST, msg)
}

fn internal(msg: impl std::fmt::Display) -> RestError {
    RestError::new(StatusCode::INTERNAL_SERVER_ERROR, msg.to_string())
}

/// An int64 sent as a JSON string or number (protojson accepts both).
fn int64_of(v: &Option<Value>) -> Result<i64, RestError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| internal("bad int64 value")),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => s.parse().map_err(|_| internal("bad int64 value")),
        Some(_) => Err(internal("bad int64 value")),
    }
}

/// Validate a root node input (`treeNode` with at least a `Uuid`) and return its Uuid.
fn root_uuid(v: &Value) -> Result<String, RestError> {
    let obj = v
        .as_object()
        .ok_or_else(|| internal("cannot decode tree.Node: not an object"))?;
    const FIELDS: &[&str] = &[
        "Uuid",
        "Path",
        "Type",
        "Size",
        "MTime",
        "Mode",
        "Etag",
        "Commits",
        "MetaStore",
        "AppearsIn",
    ];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(internal(format!("unknown field \"{k}\" in tree.Node")));
    }
    match obj.get("Uuid").and_then(Value::as_str) {
        Some(u) if !u.is_empty() => Ok(u.to_string()),
        _ => Err(RestError::new(
            StatusCode::NOT_FOUND,
            "cannot find root node: a root node needs its Uuid",
        )),
    }
}

pub(crate) fn default_policies(uuid: &str, owner: &str, hidden: &str) -> Vec<Value> {
    let p = |subject: String, action: &str| {
        json!({
            "id": (rand::random::<u32>() as u64 + 1).to_string(),
            "Resource": uuid,
            "Subject": subject,
            "Action": action,
            "Effect": "allow",
        })
    };
    vec![
        p(format!("user:{owner}"), "OWNER"),
        p(format!("user:{owner}"), "READ"),
        p(format!("user:{owner}"), "WRITE"),
        p(format!("user:{hidden}"), "READ"),
    ]
}

/// Policies given by the caller, normalised (`Resource` = the link, ids assigned).
fn given_policies(uuid: &str, given: &[Value]) -> Result<Vec<Value>, RestError> {
    const FIELDS: &[&str] = &[
        "id",
        "Resource",
        "Subject",
        "Action",
        "Effect",
        "JsonConditions",
    ];
    given
        .iter()
        .map(|p| {
            let obj = p
                .as_object()
                .ok_or_else(|| internal("cannot decode service.ResourcePolicy"))?;
            if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                return Err(internal(format!(
                    "unknown field \"{k}\" in service.ResourcePolicy"
                )));
            }
            let mut o = obj.clone();
            o.insert("Resource".into(), json!(uuid));
            o.insert(
                "id".into(),
                json!((rand::random::<u32>() as u64 + 1).to_string()),
            );
            Ok(Value::Object(o))
        })
        .collect()
}

async fn put_link(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: PutShareLinkRequest = parse_body(&body, "rest.PutShareLinkRequest")?;
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || put_link_blocking(&state2, &p.login, req))
        .await
        .map_err(internal)?
}

fn put_link_blocking(state: &SharedState, login: &str, req: PutShareLinkRequest) -> RestResult {
    let store = &state.store;
    let input = req.share_link.unwrap_or_default();
    let _ = (
        &input.link_url,
        &input.access_start,
        &input.current_downloads,
        &input.user_uuid,
        &input.policies_context_editable,
        // Only checked against the force-password option, which is off.
        &input.password_required,
    );
    let label = input.label.clone().unwrap_or_default();
    if label.trim().is_empty() {
        return Err(bad_request(
            "please provide a non-empty label for this workspace",
        ));
    }
    // Root nodes: each re-read by Uuid, as the caller sees it.
    let roots: Vec<String> = input
        .root_nodes
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(root_uuid)
        .collect::<Result<_, _>>()?;
    if roots.is_empty() {
        return Err(bad_request("please provide at least one root node"));
    }
    let perms: Vec<String> = input.permissions.clone().unwrap_or_default();
    for p in &perms {
        if !matches!(p.as_str(), "NoAccess" | "Preview" | "Download" | "Upload") {
            return Err(internal(format!(
                "unknown value \"{p}\" for enum rest.ShareLinkAccessType"
            )));
        }
    }
    let wants_upload = perms.iter().any(|p| p == "Upload");
    for r in &roots {
        let vp = store
            .user_paths_of_uuid(login, r)
            .into_iter()
            .next()
            .ok_or_else(|| RestError::new(StatusCode::NOT_FOUND, "cannot find root node"))?;
        let writable = store
            .workspace_defs(login)
            .iter()
            .any(|(w, perm)| w.slug == vp.ws_slug && perm.can_write());
        if wants_upload && !writable {
            return Err(RestError::new(
                StatusCode::FORBIDDEN,
                "This resource is not writeable, you are not allowed to set this permission.",
            ));
        }
    }
    let access_end = int64_of(&input.access_end)?;
    let max_downloads = int64_of(&input.max_downloads)?;
    let password_enabled = req.password_enabled == Some(true);
    let create_password = req.create_password.clone().unwrap_or_default();
    let update_password = req.update_password.clone().unwrap_or_default();
    let read = perms.iter().any(|p| p == "Preview" || p == "Download");
    let download_disabled = !perms.iter().any(|p| p == "Download");
    let template = input
        .view_template_name
        .clone()
        .filter(|t| !t.is_empty())
        .map(|t| {
            if t == "pydio_embed_template" {
                "pydio_shared_folder".to_string()
            } else {
                t
            }
        })
        .unwrap_or_else(|| "pydio_shared_folder".to_string());
    let existing_uuid = input.uuid.clone().filter(|u| !u.is_empty());

    let mut link = match existing_uuid {
        None => {
            // Create.
            let uuid = uuid::Uuid::new_v4().to_string();
            let hash = uuid::Uuid::new_v4().simple().to_string()[..HASH_LENGTH].to_string();
            let (hidden_login, hidden_uuid) = new_hidden_user();
            let password = if password_enabled {
                if create_password.is_empty() {
                    return Err(bad_request("Please provide a non empty password!"));
                }
                Some(new_password(&create_password))
            } else {
                None
            };
            let policies = match input.policies.as_deref() {
                Some(given) if !given.is_empty() => given_policies(&uuid, given)?,
                _ => default_policies(&uuid, login, &hidden_login),
            };
            Link {
                uuid,
                hash,
                owner: login.to_string(),
                label,
                description: input.description.clone().unwrap_or_default(),
                roots,
                template,
                access_end,
                max_downloads,
                downloads: 0,
                password,
                read,
                write: wants_upload,
                download_disabled,
                hidden_login,
                hidden_uuid,
                restrict_to_target_users: input.restrict_to_target_users == Some(true),
                target_users: input.target_users.clone().filter(|t| !t.is_null()),
                policies,
            }
        }
        Some(uuid) => {
            // Update: the hash document is rewritten from the request.
            let old = by_uuid(store, &uuid)?.ok_or_else(|| {
                RestError::new(StatusCode::NOT_FOUND, format!("cannot find link {uuid}"))
            })?;
            if old.owner != login {
                return Err(RestError::new(
                    StatusCode::FORBIDDEN,
                    "you are not allowed to edit this link",
                ));
            }
            let hash = input.link_hash.clone().unwrap_or_default();
            if hash != old.hash {
                // The server would rewrite the hash document under the id sent: a link
                // updated without its LinkHash loses its public address. Refused here so
                // the client's bug shows (see the README's differences).
                return Err(bad_request(
                    "LinkHash must be sent back unchanged on update (send the whole link)",
                ));
            }
            let (mut hidden_login, mut hidden_uuid) = match input.user_login.as_deref() {
                Some(l) if !l.is_empty() && l == old.hidden_login => {
                    (old.hidden_login.clone(), old.hidden_uuid.clone())
                }
                _ => new_hidden_user(),
            };
            let protected = old.password.is_some();
            let password = if password_enabled && !protected {
                if create_password.is_empty() {
                    return Err(bad_request("Please provide a non empty password!"));
                }
                Some(new_password(&create_password))
            } else if !password_enabled && protected {
                None
            } else if password_enabled && protected && !update_password.is_empty() {
                Some(new_password(&update_password))
            } else {
                old.password.clone()
            };
            if password != old.password {
                (hidden_login, hidden_uuid) = new_hidden_user();
            }
            let policies = match input.policies.as_deref() {
                Some(given) if !given.is_empty() => given_policies(&uuid, given)?,
                _ => default_policies(&uuid, login, &hidden_login),
            };
            Link {
                uuid,
                hash: old.hash.clone(),
                owner: old.owner.clone(),
                label,
                description: input.description.clone().unwrap_or_default(),
                roots,
                template,
                access_end,
                max_downloads,
                downloads: 0,
                password,
                read,
                write: wants_upload,
                download_disabled,
                hidden_login,
                hidden_uuid,
                restrict_to_target_users: input.restrict_to_target_users == Some(true),
                target_users: input.target_users.clone().filter(|t| !t.is_null()),
                policies,
            }
        }
    };
    if let Some(custom) = req.update_custom_hash.filter(|h| !h.is_empty()) {
        if custom.chars().count() < HASH_LENGTH {
            return Err(RestError::new(
                StatusCode::FORBIDDEN,
                format!("Please use a link hash with at least {HASH_LENGTH} characters"),
            ));
        }
        if !custom
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad_request(
                "a link hash may only hold letters, digits, '-' and '_'",
            ));
        }
        if custom != link.hash && by_hash(store, &custom)?.is_some() {
            return Err(internal("hash is already in use, please use another one"));
        }
        link.hash = custom;
    }
    save(store, &link)?;
    ok(link.to_json(true))
}

async fn get_link(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let link = by_uuid(&state.store, &uuid)?
        .filter(|l| l.owner == p.login)
        .ok_or_else(|| RestError::new(StatusCode::NOT_FOUND, format!("cannot find link {uuid}")))?;
    ok(link.to_json(true))
}

async fn delete_link(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let link = by_uuid(&state.store, &uuid)?
        .ok_or_else(|| RestError::new(StatusCode::NOT_FOUND, format!("cannot find link {uuid}")))?;
    if link.owner != p.login {
        return Err(RestError::new(
            StatusCode::FORBIDDEN,
            "you are not allowed to edit this link",
        ));
    }
    remove(&state.store, &uuid)?;
    ok(json!({"Success": true}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ListSharedResourcesRequest {
    #[serde(default)]
    share_type: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    owned_by_subject: Option<bool>,
    #[serde(default)]
    offset: Option<Value>,
    #[serde(default)]
    limit: Option<Value>,
}

async fn list_resources(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let req: ListSharedResourcesRequest = parse_body(&body, "rest.ListSharedResourcesRequest")?;
    let _ = (
        int32_of(&req.offset)?,
        int32_of(&req.limit)?,
        req.owned_by_subject,
    );
    let share_type = req.share_type.clone().unwrap_or_else(|| "ANY".to_string());
    if !matches!(share_type.as_str(), "ANY" | "LINKS" | "CELLS") {
        return Err(internal(format!(
            "unknown value \"{share_type}\" for enum rest.ListSharedResourcesRequest_ListShareType"
        )));
    }
    if req.subject.as_deref().is_some_and(|s| !s.is_empty()) && !p.admin {
        return Err(RestError::new(
            StatusCode::FORBIDDEN,
            "only admins can specify a subject",
        ));
    }
    let subject = req
        .subject
        .clone()
        .filter(|s| !s.is_empty())
        .map(|s| s.strip_prefix("user:").unwrap_or(&s).to_string())
        .unwrap_or_else(|| p.login.clone());
    let state2 = state.clone();
    let login = p.login.clone();
    tokio::task::spawn_blocking(move || {
        let mut resources = Vec::new();
        if share_type != "CELLS" {
            for link in links_of(&state2.store, &subject)? {
                for root in &link.roots {
                    // One resource per shared root still readable by the caller.
                    let Some(vp) = state2
                        .store
                        .user_paths_of_uuid(&login, root)
                        .into_iter()
                        .next()
                    else {
                        continue;
                    };
                    let Ok(node) = state2.store.stat(&login, &vp.path) else {
                        continue;
                    };
                    let mut n = node_json(&state2, &login, &node, false);
                    let ws = state2
                        .store
                        .workspaces(&login)
                        .into_iter()
                        .find(|w| w.slug == vp.ws_slug);
                    let rel = vp
                        .path
                        .strip_prefix(&format!("{}/", vp.ws_slug))
                        .unwrap_or("")
                        .to_string();
                    if let Some(ws) = ws {
                        n["AppearsIn"] = json!([{
                            "WsUuid": ws.uuid,
                            "WsLabel": ws.label,
                            "WsSlug": ws.slug,
                            "WsScope": ws.scope,
                            "Path": rel,
                        }]);
                    }
                    n["Path"] = json!(rel);
                    resources.push(json!({"Node": n, "Link": link.to_json(false)}));
                }
            }
        }
        let mut out = serde_json::Map::new();
        if !resources.is_empty() {
            out.insert("Resources".into(), Value::Array(resources));
        }
        ok(Value::Object(out))
    })
    .await
    .map_err(internal)?
}
