//! The calls of [`HttpCellsApi`] that start a server job and wait for it (cells-api.md §5.9):
//! move and copy (`PUT /a/jobs/user/{move,copy}`), delete (recycle bin or permanent) and
//! restore (`/a/tree/delete`, `/a/tree/restore`, which answer with the jobs they started).
//!
//! Invariants:
//! - Each call returns only once every job it started has finished, so callers treat them as
//!   synchronous; a task in `Error` or `Interrupted` is an [`ApiError::JobFailed`] with the
//!   server's message.
//! - Waiting is bounded: the poll delay grows from `job_poll_initial` to `job_poll_max`, and a
//!   job still running after `job_timeout` is reported as failed.
//! - A job that no longer appears in the list has finished (the server's AutoClean).

use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};

use super::{HttpCellsApi, clean_path};
use crate::api::{ApiError, ApiResult};

impl HttpCellsApi {
    /// Poll `POST /a/jobs/user` until the job is finished (§5.9).
    pub async fn wait_for_job(&self, job_id: &str) -> ApiResult<()> {
        let started = Instant::now();
        let mut delay = self.options.job_poll_initial;
        loop {
            let v = self
                .rest_json(
                    Method::POST,
                    "/jobs/user",
                    Some(json!({"JobIDs": [job_id], "LoadTasks": "Any"})),
                    job_id,
                )
                .await?;
            let job = v.get("Jobs").and_then(|j| j.as_array()).and_then(|jobs| {
                jobs.iter()
                    .find(|j| j.get("ID").and_then(|i| i.as_str()) == Some(job_id))
                    .or_else(|| jobs.first())
            });
            let Some(job) = job else {
                // AutoClean: a finished job disappears from the list.
                return Ok(());
            };
            let tasks: Vec<&Value> = job
                .get("Tasks")
                .and_then(|t| t.as_array())
                .map(|t| t.iter().collect())
                .unwrap_or_default();
            let mut all_finished = !tasks.is_empty();
            for task in &tasks {
                let status = task.get("Status").and_then(|s| s.as_str()).unwrap_or("");
                let message = task
                    .get("StatusMessage")
                    .and_then(|s| s.as_str())
                    .unwrap_or("")
                    .to_string();
                match status {
                    "Error" => {
                        return Err(ApiError::JobFailed(if message.is_empty() {
                            format!("job {job_id} ended in error")
                        } else {
                            message
                        }));
                    }
                    "Interrupted" => {
                        return Err(ApiError::JobFailed(format!("job {job_id} was interrupted")));
                    }
                    "Finished" => {}
                    _ => all_finished = false,
                }
            }
            if all_finished {
                return Ok(());
            }
            if started.elapsed() > self.options.job_timeout {
                return Err(ApiError::JobFailed(format!(
                    "job {job_id} still running after {:?}",
                    self.options.job_timeout
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.options.job_poll_max);
        }
    }

    pub(super) async fn job_request(
        &self,
        name: &str,
        sources: &[String],
        target: &str,
        target_is_parent: bool,
    ) -> ApiResult<()> {
        let params = json!({
            "nodes": sources.iter().map(|s| clean_path(s)).collect::<Vec<_>>(),
            "target": clean_path(target),
            "targetParent": target_is_parent,
        });
        let body = json!({"JsonParameters": params.to_string()});
        let subject = sources.first().cloned().unwrap_or_default();
        let v = self
            .rest_json(
                Method::PUT,
                &format!("/jobs/user/{name}"),
                Some(body),
                &subject,
            )
            .await?;
        let job = v
            .get("JobUuid")
            .and_then(|j| j.as_str())
            .filter(|j| !j.is_empty())
            .ok_or_else(|| {
                ApiError::InvalidResponse(format!("the {name} request returned no job id"))
            })?
            .to_string();
        self.wait_for_job(&job).await
    }

    async fn wait_for_jobs(&self, v: &Value, key: &str) -> ApiResult<()> {
        let ids: Vec<String> = v
            .get(key)
            .and_then(|j| j.as_array())
            .map(|jobs| {
                jobs.iter()
                    .filter_map(|j| j.get("Uuid").and_then(|u| u.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            self.wait_for_job(&id).await?;
        }
        Ok(())
    }

    pub(super) async fn rest_delete_nodes(
        &self,
        paths: &[String],
        permanently: bool,
    ) -> ApiResult<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let nodes: Vec<Value> = paths
            .iter()
            .map(|p| json!({"Path": clean_path(p)}))
            .collect();
        let v = self
            .rest_json(
                Method::POST,
                "/tree/delete",
                Some(json!({"Nodes": nodes, "RemovePermanently": permanently})),
                &paths[0],
            )
            .await?;
        self.wait_for_jobs(&v, "DeleteJobs").await
    }

    pub(super) async fn rest_restore_nodes(&self, paths: &[String]) -> ApiResult<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let nodes: Vec<Value> = paths
            .iter()
            .map(|p| json!({"Path": clean_path(p)}))
            .collect();
        let v = self
            .rest_json(
                Method::POST,
                "/tree/restore",
                Some(json!({"Nodes": nodes})),
                &paths[0],
            )
            .await?;
        self.wait_for_jobs(&v, "RestoreJobs").await
    }
}
