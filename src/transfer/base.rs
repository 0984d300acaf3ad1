//! The check that keeps `cec scp` from overwriting someone else's change: an upload only
//! replaces what the server held when the transfer was planned (nothing, or the version
//! listed then). Right before the content is sent — and, for a multipart upload, again
//! right before CompleteMultipartUpload makes it visible — the destination is stat'ed; when
//! it moved on, the file is not uploaded and the failure names `--force`, which skips the
//! check (overwrite, the official client's behaviour).
//!
//! The gateway gives no conditional PUT the client may rely on, so a window remains: for a
//! single PUT, the time between the stat and the end of the PUT; for a multipart upload, the
//! time between the last stat and the completion (one request).
//!
//! Invariants: an upload in flight (Etag `"temporary"`, ours or a resumed one) is no version:
//! it counts as "nothing there"; so does a file removed since. Without `--force`, a
//! destination that did not exist at planning time and exists now is never replaced.

use crate::api::{ApiError, CellsApi, Node};

/// Why a file was not uploaded.
#[derive(Debug)]
pub enum UploadFailure {
    /// The server's file changed (or appeared) since the transfer was planned.
    Changed(String),
    Api(ApiError),
}

impl std::fmt::Display for UploadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadFailure::Changed(m) => f.write_str(m),
            UploadFailure::Api(e) => write!(f, "{e}"),
        }
    }
}

impl From<ApiError> for UploadFailure {
    fn from(e: ApiError) -> Self {
        UploadFailure::Api(e)
    }
}

/// What identifies one version of a file: content tag, size and modification time.
fn version(n: &Node) -> Option<(&str, u64, i64)> {
    (!n.is_folder() && !n.is_temporary()).then_some((n.etag.as_str(), n.size, n.mtime))
}

/// Check that `key` still holds what `planned` says (`None`: nothing, or an upload in
/// flight). Errors other than a change are the stat's own.
pub async fn still_as_planned(
    api: &dyn CellsApi,
    key: &str,
    planned: Option<&Node>,
) -> Result<(), UploadFailure> {
    let now = api.stat(key).await?;
    let was = planned.and_then(version);
    let is = now.as_ref().and_then(version);
    let folder_now = now.as_ref().is_some_and(Node::is_folder);
    // Gone since (removed by someone): nothing of theirs is overwritten.
    if !folder_now && (is.is_none() || was == is) {
        return Ok(());
    }
    let what = if folder_now {
        "a folder was created there"
    } else if was.is_none() {
        "a file was created there"
    } else {
        "it was changed"
    };
    Err(UploadFailure::Changed(format!(
        "cells://{key}: {what} on the server since this transfer started: not overwritten \
         (check it, then run again with --force to replace it)"
    )))
}

/// What an upload may replace.
#[derive(Debug, Clone, Copy)]
pub enum Replace<'a> {
    /// Anything (`--force`): no check.
    Any,
    /// Only what was there when the transfer was planned (`None`: nothing).
    Only(Option<&'a Node>),
}

impl Replace<'_> {
    /// Check before sending or completing an upload to `key`.
    pub async fn check(self, api: &dyn CellsApi, key: &str) -> Result<(), UploadFailure> {
        match self {
            Replace::Any => Ok(()),
            Replace::Only(planned) => still_as_planned(api, key, planned).await,
        }
    }
}
