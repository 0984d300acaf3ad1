//! The job-based tree changes and the user job list: `PUT /jobs/user/{name}` (copy/move),
//! `/tree/delete` (to the recycle bin, or for good), `/tree/restore`, and `/jobs/user`
//! (list, and pause/resume/stop commands).
//!
//! Invariants:
//! - A change is refused before any job starts when the user may not write a path (403).
//! - Jobs run in the background and report their progress on the job list and the events
//!   websocket, as the real server's do; the request answers as soon as the job exists.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;
use crate::jobs::JobAction;

use super::wire::{RestError, RestResult, TreeNodeIn, authenticate, int32_of, ok, parse_body};

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

pub(super) async fn create_user_job(
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

pub(super) async fn delete_nodes(
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

pub(super) async fn restore_nodes(
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

pub(super) async fn list_jobs(
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

pub(super) async fn control_job(
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
