//! User jobs: the scheduler that runs move, copy, delete and restore in the background, as the
//! Cells scheduler does for `PUT /a/jobs/user/{move,copy}`, `POST /a/tree/delete` and
//! `POST /a/tree/restore` (cells-api.md §5.6-§5.9).
//!
//! Lifecycle: a job is `Queued` when submitted, `Running` after half the configured delay, and
//! acts after the other half; then it is removed at once if it succeeded (all user jobs are
//! `AutoClean`), or kept with status `Error` (message in `StatusMessage`) or `Interrupted`
//! (stopped before it acted). Clients must therefore poll and treat a vanished job as done.
//!
//! Invariants: a job only ever acts through the [`Store`] with its owner's login (so rights
//! are enforced exactly as for a direct call); a job's owner is the only one who lists or
//! stops it (admins may list everybody's with owner `*`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::EmuConfig;
use crate::store::{Store, StoreError};

/// `jobsTaskStatus` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Queued,
    Running,
    Finished,
    Interrupted,
    Error,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "Queued",
            TaskStatus::Running => "Running",
            TaskStatus::Finished => "Finished",
            TaskStatus::Interrupted => "Interrupted",
            TaskStatus::Error => "Error",
        }
    }
}

/// What a job does (user paths, acting as the owner).
#[derive(Debug, Clone, PartialEq)]
pub enum JobAction {
    /// Move each node; `target_parent`: into folder `target` keeping names, else rename to
    /// `target` (single node).
    Move {
        nodes: Vec<String>,
        target: String,
        target_parent: bool,
    },
    /// Copy, same addressing as Move.
    Copy {
        nodes: Vec<String>,
        target: String,
        target_parent: bool,
    },
    /// Delete each node (to the recycle bin unless permanent; see [`Store::delete_node`]).
    Delete {
        nodes: Vec<String>,
        permanently: bool,
    },
    /// Restore each node from its recycle bin.
    Restore { nodes: Vec<String> },
}

/// A job as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub id: String,
    pub label: String,
    pub owner: String,
    pub task_id: String,
    pub status: TaskStatus,
    pub status_message: String,
    /// Unix seconds (0 = not yet).
    pub start_time: i64,
    pub end_time: i64,
    pub progress: f32,
}

impl JobView {
    /// The swagger `jobsTask` of this job in protobuf JSON.
    pub fn task_json(&self) -> Value {
        let mut task = self.to_json()["Tasks"][0].clone();
        task["TriggerOwner"] = json!(self.owner);
        task
    }

    /// The swagger `jobsJob` without its tasks (as in task events).
    pub fn job_json(&self) -> Value {
        let mut job = self.to_json();
        if let Some(obj) = job.as_object_mut() {
            obj.remove("Tasks");
        }
        job
    }

    /// The swagger `jobsJob` (with one `jobsTask`) in protobuf JSON.
    pub fn to_json(&self) -> Value {
        let mut task = serde_json::Map::new();
        task.insert("ID".into(), json!(self.task_id));
        task.insert("JobID".into(), json!(self.id));
        task.insert("Status".into(), json!(self.status.as_str()));
        if !self.status_message.is_empty() {
            task.insert("StatusMessage".into(), json!(self.status_message));
        }
        if self.start_time != 0 {
            task.insert("StartTime".into(), json!(self.start_time));
        }
        if self.end_time != 0 {
            task.insert("EndTime".into(), json!(self.end_time));
        }
        task.insert("CanStop".into(), json!(true));
        task.insert("HasProgress".into(), json!(true));
        if self.progress != 0.0 {
            task.insert("Progress".into(), json!(self.progress));
        }
        json!({
            "ID": self.id,
            "Label": self.label,
            "Owner": self.owner,
            "AutoClean": true,
            "AutoStart": true,
            "Tasks": [Value::Object(task)],
        })
    }
}

struct JobEntry {
    view: JobView,
    stop_requested: bool,
}

/// The scheduler. Shared as `Arc<Jobs>`.
pub struct Jobs {
    delay: Duration,
    jobs: Mutex<BTreeMap<String, JobEntry>>,
    updates: tokio::sync::broadcast::Sender<JobView>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Jobs {
    pub fn new(config: &EmuConfig) -> Jobs {
        let (updates, _) = tokio::sync::broadcast::channel(1024);
        Jobs {
            delay: config.job_delay,
            jobs: Mutex::new(BTreeMap::new()),
            updates,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, JobEntry>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every status change of every job (for task events).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<JobView> {
        self.updates.subscribe()
    }

    fn set_status(&self, id: &str, status: TaskStatus, message: &str) -> Option<JobView> {
        let mut jobs = self.lock();
        let e = jobs.get_mut(id)?;
        e.view.status = status;
        e.view.status_message = message.to_string();
        match status {
            TaskStatus::Running => e.view.start_time = now_secs(),
            TaskStatus::Finished | TaskStatus::Error | TaskStatus::Interrupted => {
                e.view.end_time = now_secs();
                e.view.progress = 1.0;
            }
            TaskStatus::Queued => {}
        }
        let v = e.view.clone();
        if status == TaskStatus::Finished {
            jobs.remove(id);
        }
        drop(jobs);
        let _ = self.updates.send(v.clone());
        Some(v)
    }

    /// Queue a job under `id` (e.g. `copy-move-<uuid>`) and run it in the background (must be
    /// called within a tokio runtime). Returns the id.
    pub fn submit(
        self: &Arc<Self>,
        store: Arc<Store>,
        owner: &str,
        id: String,
        label: String,
        action: JobAction,
    ) -> String {
        let view = JobView {
            id: id.clone(),
            label,
            owner: owner.to_string(),
            task_id: uuid::Uuid::new_v4().to_string(),
            status: TaskStatus::Queued,
            status_message: String::new(),
            start_time: 0,
            end_time: 0,
            progress: 0.0,
        };
        self.lock().insert(
            id.clone(),
            JobEntry {
                view: view.clone(),
                stop_requested: false,
            },
        );
        let _ = self.updates.send(view);
        let jobs = self.clone();
        let owner = owner.to_string();
        let job_id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(jobs.delay / 2).await;
            if jobs.stopped(&job_id) {
                jobs.set_status(&job_id, TaskStatus::Interrupted, "Stopped by user");
                return;
            }
            jobs.set_status(&job_id, TaskStatus::Running, "Running");
            tokio::time::sleep(jobs.delay - jobs.delay / 2).await;
            if jobs.stopped(&job_id) {
                jobs.set_status(&job_id, TaskStatus::Interrupted, "Stopped by user");
                return;
            }
            let result = tokio::task::spawn_blocking(move || run(&store, &owner, &action)).await;
            match result {
                Ok(Ok(())) => {
                    jobs.set_status(&job_id, TaskStatus::Finished, "Done");
                }
                Ok(Err(e)) => {
                    jobs.set_status(&job_id, TaskStatus::Error, &e.to_string());
                }
                Err(e) => {
                    jobs.set_status(&job_id, TaskStatus::Error, &format!("job panicked: {e}"));
                }
            }
        });
        id
    }

    fn stopped(&self, id: &str) -> bool {
        self.lock().get(id).is_none_or(|e| e.stop_requested)
    }

    /// Jobs of `owner` (`None`: everybody's), restricted to `ids` when not empty.
    pub fn list(&self, owner: Option<&str>, ids: &[String]) -> Vec<JobView> {
        self.lock()
            .values()
            .filter(|e| owner.is_none_or(|o| e.view.owner == o))
            .filter(|e| ids.is_empty() || ids.contains(&e.view.id))
            .map(|e| e.view.clone())
            .collect()
    }

    /// Ask a queued/running job of `owner` to stop (it stops if it has not acted yet).
    /// Returns false if there is no such job.
    pub fn stop(&self, owner: &str, id: &str) -> bool {
        let mut jobs = self.lock();
        match jobs.get_mut(id) {
            Some(e) if e.view.owner == owner => {
                e.stop_requested = true;
                true
            }
            _ => false,
        }
    }
}

fn base_name(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

fn destination(node: &str, target: &str, target_parent: bool) -> String {
    let target = target.trim_matches('/');
    if target_parent {
        format!("{target}/{}", base_name(node))
    } else {
        target.to_string()
    }
}

/// Perform a job's action (blocking).
pub fn run(store: &Store, owner: &str, action: &JobAction) -> Result<(), StoreError> {
    match action {
        JobAction::Move {
            nodes,
            target,
            target_parent,
        } => {
            for n in nodes {
                store.move_node(owner, n, &destination(n, target, *target_parent))?;
            }
        }
        JobAction::Copy {
            nodes,
            target,
            target_parent,
        } => {
            for n in nodes {
                store.copy_node(owner, n, &destination(n, target, *target_parent))?;
            }
        }
        JobAction::Delete { nodes, permanently } => {
            for n in nodes {
                store.delete_node(owner, n, *permanently)?;
            }
        }
        JobAction::Restore { nodes } => {
            for n in nodes {
                store.restore_node(owner, n)?;
            }
        }
    }
    Ok(())
}
