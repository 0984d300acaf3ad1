//! The admin REST endpoints of the official swagger that `cec idm` and `cec storage` call,
//! relative to `/a`: `POST /user` (SearchUsers), `POST /role` (SearchRoles),
//! `POST /workspace` (SearchWorkspaces), `POST /acl` (SearchAcls), `GET /config/datasource`
//! (ListDataSources) and `PUT /jobs/user/datasource-resync` (UserCreateJob for a resync).
//!
//! Invariants:
//! - Every call needs a valid bearer token (401). ACLs, datasources and resyncs need the
//!   admin profile (403 otherwise). Users, roles and workspaces searches are open to standard
//!   users with results filtered by each resource's READ policies, as in Cells v4 (the
//!   default user policy allows `rest:/user`, `rest:/role`, `rest:/workspace`): users carry
//!   READ for `profile:standard` (WRITE for `profile:admin` and the user), admin workspaces
//!   READ for `profile:standard`, built-in roles READ for `*`; a user's own role is shown
//!   only to that user and to admins. `PoliciesContextEditable` says whether the caller may
//!   edit the resource. A `ResourcePolicyQuery` of type ANY or NONE from a standard user is a
//!   403 ("only admin profiles ...").
//! - Bodies are checked against the swagger's fields: an unknown field gives HTTP 500
//!   `unknown field "X" in rest.Y`, like the rest of the emulated REST API.
//! - Answers are protobuf-JSON shaped (PascalCase, zero values omitted) and never contain a
//!   password hash or a datasource secret.
//! - What is listed derives from the emulator's own model: its users, the fixed workspace
//!   list, one datasource per workspace storage root, the built-in roles of a Cells install
//!   plus one role per user, and read/write ACLs of the root group on each workspace root.
//!   The emulator models no user groups, so the `Groups` of a user search are empty.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::SharedState;
use crate::auth::Principal;
use crate::idm::{WorkspaceRoot, derived_uuid};
use crate::rest::wire::RestError;

/// Routes, relative to `/a`.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/user", post(search_users))
        .route("/role", post(search_roles))
        .route("/workspace", post(search_workspaces))
        .route("/acl", post(search_acls))
        .route("/config/datasource", get(list_datasources))
        .route("/jobs/user/datasource-resync", put(resync_datasource))
}

type AdminResult = Result<Response, RestError>;

fn json_ok(v: Value) -> AdminResult {
    Ok((
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response())
}

/// The authenticated caller, any profile.
fn caller(state: &SharedState, headers: &HeaderMap) -> Result<Principal, RestError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state
        .auth
        .verify_header(h)
        .map_err(|e| RestError::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// The caller, who must be an admin.
fn admin(state: &SharedState, headers: &HeaderMap) -> Result<Principal, RestError> {
    let p = caller(state, headers)?;
    if !p.admin {
        return Err(RestError::new(
            StatusCode::FORBIDDEN,
            "You are not allowed to access this resource",
        ));
    }
    Ok(p)
}

const SEARCH_FIELDS: &[&str] = &[
    "CountOnly",
    "GroupBy",
    "Limit",
    "Offset",
    "Operation",
    "Queries",
    "ResourcePolicyQuery",
];

/// Parse a JSON object body, refusing fields outside `allowed` (and in each query, outside
/// `query_fields`).
fn parse_search(
    body: &Bytes,
    type_name: &str,
    allowed: &[&str],
    query_type: &str,
    query_fields: &[&str],
) -> Result<Value, RestError> {
    let text: &[u8] = if body.is_empty() { b"{}" } else { body };
    let v: Value = serde_json::from_slice(text).map_err(|e| {
        RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot decode {type_name}: {e}"),
        )
    })?;
    let unknown = |obj: &Value, fields: &[&str], tn: &str| -> Result<(), RestError> {
        if let Some(map) = obj.as_object() {
            for k in map.keys() {
                if !fields.contains(&k.as_str()) {
                    return Err(RestError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("unknown field \"{k}\" in {tn}"),
                    ));
                }
            }
            Ok(())
        } else {
            Err(RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot decode {tn}: not an object"),
            ))
        }
    };
    unknown(&v, allowed, type_name)?;
    if let Some(queries) = v.get("Queries").and_then(Value::as_array) {
        for q in queries {
            unknown(q, query_fields, query_type)?;
        }
    }
    Ok(v)
}

/// A standard user may only search with the default (CONTEXT) resource policy query.
fn check_policy_query(p: &Principal, req: &Value) -> Result<(), RestError> {
    let ty = req
        .get("ResourcePolicyQuery")
        .and_then(|q| q.get("Type"))
        .and_then(Value::as_str)
        .unwrap_or("CONTEXT");
    if !p.admin && matches!(ty, "ANY" | "NONE") {
        return Err(RestError::new(
            StatusCode::FORBIDDEN,
            "only admin profiles can list resources with ANY or NONE filter",
        ));
    }
    Ok(())
}

/// `DEFAULT_RIGHTS` of a workspace, as its ACLs give it to the root group.
fn default_rights(w: &crate::idm::WorkspaceDef) -> &'static str {
    match w.access {
        crate::idm::Access::Everybody => "rw",
        crate::idm::Access::ReadOnlyForUsers => "r",
    }
}

fn user_uuid(login: &str) -> String {
    derived_uuid(&format!("user:{login}"))
}

async fn search_users(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult {
    let p = caller(&state, &headers)?;
    let req = parse_search(
        &body,
        "rest.SearchUserRequest",
        SEARCH_FIELDS,
        "idm.UserSingleQuery",
        &[
            "AttributeAnyValue",
            "AttributeName",
            "AttributeValue",
            "ConnectedSince",
            "FullPath",
            "GroupPath",
            "HasProfile",
            "HasRole",
            "Login",
            "NodeType",
            "Password",
            "Recursive",
            "Uuid",
            "not",
        ],
    )?;
    check_policy_query(&p, &req)?;
    // Login filter: "*" or absent matches all; a trailing "*" is a prefix match.
    let patterns: Vec<String> = req
        .get("Queries")
        .and_then(Value::as_array)
        .map(|qs| {
            qs.iter()
                .filter_map(|q| q.get("Login").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let matches = |login: &str| {
        patterns.is_empty()
            || patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => login.starts_with(prefix),
                None => p == login,
            })
    };
    let users: Vec<Value> = state
        .store
        .idm()
        .users()
        .filter(|u| matches(&u.login))
        .map(|u| {
            let mut roles = vec![json!({"Uuid": "ROOT_GROUP", "Label": "Root Group", "GroupRole": true})];
            if u.admin {
                roles.push(json!({"Uuid": "ADMINS", "Label": "Admins"}));
            }
            roles.push(json!({"Uuid": user_uuid(&u.login), "Label": format!("User {} role", u.login), "UserRole": true}));
            let mut v = json!({
                "Uuid": user_uuid(&u.login),
                "Login": u.login,
                "GroupPath": "/",
                "Attributes": {
                    "profile": if u.admin { "admin" } else { "standard" },
                    "displayName": u.login,
                },
                "Roles": roles,
            });
            if p.admin || p.login == u.login {
                v["PoliciesContextEditable"] = json!(true);
            }
            v
        })
        .collect();
    let mut out = serde_json::Map::new();
    if !users.is_empty() {
        out.insert("Total".into(), json!(users.len()));
        out.insert("Users".into(), Value::Array(users));
    }
    json_ok(Value::Object(out))
}

/// The roles `p` may read: the built-in ones, and the users' own roles (all of them for an
/// admin, the caller's for a standard user).
fn builtin_roles(state: &SharedState, p: &Principal) -> Vec<Value> {
    let mut roles = vec![
        json!({"Uuid": "ROOT_GROUP", "Label": "Root Group", "GroupRole": true}),
        json!({"Uuid": "ADMINS", "Label": "Administrators", "AutoApplies": ["admin"]}),
        json!({"Uuid": "EXTERNAL_USERS", "Label": "External Users", "AutoApplies": ["shared"]}),
        json!({"Uuid": "MINISITE", "Label": "Minisite Permissions"}),
        json!({"Uuid": "MINISITE_NODOWNLOAD", "Label": "Minisite (Download Disabled)"}),
    ];
    if p.admin {
        for r in &mut roles {
            r["PoliciesContextEditable"] = json!(true);
        }
    }
    for u in state
        .store
        .idm()
        .users()
        .filter(|u| p.admin || u.login == p.login)
    {
        roles.push(json!({
            "Uuid": user_uuid(&u.login),
            "Label": format!("User {} role", u.login),
            "UserRole": true,
        }));
        if p.admin {
            roles.last_mut().expect("just pushed")["PoliciesContextEditable"] = json!(true);
        }
    }
    roles
}

async fn search_roles(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult {
    let p = caller(&state, &headers)?;
    let req = parse_search(
        &body,
        "rest.SearchRoleRequest",
        SEARCH_FIELDS,
        "idm.RoleSingleQuery",
        &[
            "HasAutoApply",
            "IsGroupRole",
            "IsTeam",
            "IsUserRole",
            "Label",
            "Uuid",
            "not",
        ],
    )?;
    check_policy_query(&p, &req)?;
    let roles = builtin_roles(&state, &p);
    json_ok(json!({"Roles": roles, "Total": roles.len()}))
}

async fn search_workspaces(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult {
    let p = caller(&state, &headers)?;
    let req = parse_search(
        &body,
        "rest.SearchWorkspaceRequest",
        SEARCH_FIELDS,
        "idm.WorkspaceSingleQuery",
        &[
            "AttributeName",
            "AttributeValue",
            "Description",
            "HasAttribute",
            "Label",
            "LastUpdated",
            "Scope",
            "Slug",
            "Uuid",
            "not",
        ],
    )?;
    check_policy_query(&p, &req)?;
    let views = state.store.workspaces(&p.login);
    let workspaces: Vec<Value> = state
        .store
        .idm()
        .all_workspaces()
        .iter()
        .map(|w| {
            let mut v = json!({
                "UUID": w.uuid(),
                "Slug": w.slug,
                "Label": w.label,
                "Description": w.description,
                "Scope": w.scope,
                "Attributes": json!({"DEFAULT_RIGHTS": default_rights(w), "META_LAYOUT": "meta.layout_default"}).to_string(),
            });
            if let Some(view) = views.iter().find(|x| x.slug == w.slug) {
                v["RootUUIDs"] = json!([view.root.uuid]);
            }
            if p.admin {
                v["PoliciesContextEditable"] = json!(true);
            }
            v
        })
        .collect();
    json_ok(json!({"Workspaces": workspaces, "Total": workspaces.len()}))
}

async fn search_acls(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult {
    let p = admin(&state, &headers)?;
    let req = parse_search(
        &body,
        "rest.SearchACLRequest",
        &[
            "CountOnly",
            "GroupBy",
            "Limit",
            "Offset",
            "Operation",
            "Queries",
        ],
        "idm.ACLSingleQuery",
        &["Actions", "NodeIDs", "RoleIDs", "WorkspaceIDs", "not"],
    )?;
    let wanted_nodes: Vec<String> = req
        .get("Queries")
        .and_then(Value::as_array)
        .map(|qs| {
            qs.iter()
                .flat_map(|q| {
                    q.get("NodeIDs")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut acls = Vec::new();
    for view in state.store.workspaces(&p.login) {
        let def = state
            .store
            .idm()
            .all_workspaces()
            .iter()
            .find(|w| w.slug == view.slug)
            .cloned();
        let writable_by_all = def
            .as_ref()
            .is_some_and(|d| matches!(d.access, crate::idm::Access::Everybody));
        let mut actions = vec!["read"];
        if writable_by_all {
            actions.push("write");
        }
        for action in actions {
            let id = derived_uuid(&format!("acl:{}:{action}", view.slug));
            acls.push(json!({
                "ID": id,
                "Action": {"Name": action, "Value": "1"},
                "RoleID": "ROOT_GROUP",
                "WorkspaceID": view.uuid,
                "NodeID": view.root.uuid,
            }));
        }
    }
    let acls: Vec<Value> = acls
        .into_iter()
        .filter(|a| {
            wanted_nodes.is_empty()
                || wanted_nodes
                    .iter()
                    .any(|n| a.get("NodeID").and_then(Value::as_str) == Some(n))
        })
        .collect();
    let mut out = serde_json::Map::new();
    if !acls.is_empty() {
        out.insert("Total".into(), json!(acls.len()));
        out.insert("ACLs".into(), Value::Array(acls));
    }
    json_ok(Value::Object(out))
}

/// One datasource per storage root of the workspace list.
fn datasources(state: &SharedState) -> Vec<Value> {
    let mut names: Vec<String> = Vec::new();
    for w in state.store.idm().all_workspaces() {
        let root = match &w.root {
            WorkspaceRoot::PerUser(p) | WorkspaceRoot::Shared(p) => p.clone(),
        };
        let name = root.split('/').next().unwrap_or(&root).to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let mut v = json!({
                "Name": name,
                "StorageType": "LOCAL",
                "ObjectsServiceName": format!("gateway-{name}"),
                "ObjectsBucket": name,
                "FlatStorage": true,
            });
            if crate::versions::VERSIONED_ROOTS.contains(&name.as_str()) {
                v["VersioningPolicyName"] = json!("default-policy");
            }
            v
        })
        .collect()
}

async fn list_datasources(State(state): State<SharedState>, headers: HeaderMap) -> AdminResult {
    admin(&state, &headers)?;
    let ds = datasources(&state);
    json_ok(json!({"DataSources": ds, "Total": ds.len()}))
}

async fn resync_datasource(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult {
    admin(&state, &headers)?;
    let req = parse_search(
        &body,
        "rest.UserJobRequest",
        &["JobName", "JsonParameters"],
        "",
        &[],
    )?;
    let params: Value = serde_json::from_str(
        req.get("JsonParameters")
            .and_then(Value::as_str)
            .unwrap_or("{}"),
    )
    .map_err(|e| {
        RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot decode JsonParameters: {e}"),
        )
    })?;
    let name = params.get("dsName").and_then(Value::as_str).unwrap_or("");
    if !datasources(&state)
        .iter()
        .any(|d| d.get("Name").and_then(Value::as_str) == Some(name))
    {
        return Err(RestError::new(
            StatusCode::NOT_FOUND,
            format!("cannot find datasource {name}"),
        ));
    }
    let job = format!("resync-ds-{name}-{}", uuid::Uuid::new_v4());
    json_ok(json!({"JobUuid": job}))
}
