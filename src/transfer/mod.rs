//! The transfer engine behind `cec scp`: plans a tree transfer (folders to create, files to
//! send, files to skip), runs several files at once, uploads through the gateway (single PUT
//! or parallel multipart, done by the API client), downloads with parallel ranged GETs for
//! large files, and reports progress and a final summary.
//!
//! Invariants:
//! - A download is written to a hidden temporary file next to its destination and renamed
//!   into place only once complete and of the announced size: an interrupted or failed
//!   transfer (network fault, Ctrl-C) never leaves a partial file under the final name. The
//!   temporary file is removed on failure and on cancellation (drop guard).
//! - A broken download stream is resumed from the bytes already written (ranged GET), up to
//!   `retry_max_attempts` attempts per file or per chunk.
//! - An upload is only visible under its final name once the server has the whole content
//!   (single PUT body or completed multipart upload).
//! - `--update` skips a file only when size and Cells block hash both match.
//! - Names from the server are untrusted: every one that becomes a local name (the top-level
//!   node's and each child's) passes [`check_name`] first, and nothing is ever removed unless
//!   its path lies strictly inside the target folder ([`remove_inside`]). A download therefore
//!   never writes or removes anything outside its target.
//! - An upload does not follow symbolic links inside the tree (each one is skipped with a
//!   notice) unless `follow_links`; a source named on the command line is followed, as `cp`
//!   and `scp` do. Followed links that lead back to a folder being walked are skipped.
//!   With `links`, they are stored as `NAME.rclonelink` files instead, and a download turns
//!   those back into links; a download never writes through a link (see [`links`]).
//!
//! Files: this one holds the options, the summary, the errors and what both directions share
//! (the file jobs and [`run_files`], which runs them a few at a time); `upload.rs` and
//! `download.rs` hold each direction ([`upload()`], [`download()`]); [`multipart`] the resumable uploads of large files,
//! [`base`] what an upload may replace, [`links`] symbolic links stored as files,
//! [`progress`] the bars and lines.
//!
//! [`check_name`]: crate::api::names::check_name

pub mod base;
mod download;
pub mod links;
pub mod multipart;
pub mod progress;
mod upload;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::api::http::HttpCellsApi;
use crate::api::{ApiError, CellsApi, MIB, Node, UploadOptions};
pub use download::download;
use progress::Progress;
pub use upload::upload;

/// How a transfer runs.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    pub upload: UploadOptions,
    /// Replace or merge into what exists at the destination.
    pub force: bool,
    /// Merge, and skip files already identical (size + Cells hash).
    pub update: bool,
    /// Set local mtimes to the server's on download.
    pub preserve_mtime: bool,
    /// Files transferred at once.
    pub files_concurrency: usize,
    /// Downloads larger than this use parallel ranged GETs.
    pub ranged_threshold: u64,
    /// Size of one ranged GET.
    pub range_chunk: u64,
    /// Ranged GETs at once for one file.
    pub range_concurrency: usize,
    /// Attempts per file (upload) or per chunk (download) for transient failures.
    pub retry_max_attempts: u32,
    /// First delay between attempts (doubles).
    pub retry_delay: Duration,
    /// Upload what symbolic links inside the tree point to (otherwise they are skipped).
    pub follow_links: bool,
    /// Store symbolic links as `NAME.rclonelink` files and recreate them on download.
    pub links: bool,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            upload: UploadOptions::default(),
            force: false,
            update: false,
            preserve_mtime: false,
            files_concurrency: 4,
            ranged_threshold: 64 * MIB,
            range_chunk: 16 * MIB,
            range_concurrency: 4,
            retry_max_attempts: 5,
            retry_delay: Duration::from_millis(300),
            follow_links: false,
            links: false,
        }
    }
}

/// What happened, for the final summary.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub folders: u64,
    /// Bytes of resumed uploads that were already on the server (not in `bytes`).
    pub resumed: u64,
    pub failures: Vec<String>,
    /// What was left out on purpose, one line each (symbolic links not followed, ...).
    pub notices: Vec<String>,
    pub elapsed: Duration,
}

impl Summary {
    /// One line: files, bytes, rate, skipped, failures.
    pub fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let rate = self.bytes as f64 / secs;
        let resumed = if self.resumed > 0 {
            format!(
                " sent, {} resumed from an earlier run",
                crate::sizes::human_size(self.resumed)
            )
        } else {
            String::new()
        };
        format!(
            "{} file{} transferred ({}{resumed}) in {:.2}s, {}/s; {} skipped; {} folder{} created; {} failed",
            self.files,
            if self.files == 1 { "" } else { "s" },
            crate::sizes::human_size(self.bytes),
            secs,
            crate::sizes::human_size(rate as u64),
            self.skipped,
            self.folders,
            if self.folders == 1 { "" } else { "s" },
            self.failures.len()
        )
    }
}

/// A failure of the transfer as a whole (before any file moved).
#[derive(Debug)]
pub enum TransferError {
    NotFound(String),
    Conflict(String),
    Api(ApiError),
    Local(String),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::NotFound(m) | TransferError::Conflict(m) | TransferError::Local(m) => {
                f.write_str(m)
            }
            TransferError::Api(e) => write!(f, "{e}"),
        }
    }
}

impl From<ApiError> for TransferError {
    fn from(e: ApiError) -> Self {
        TransferError::Api(e)
    }
}

/// One file to move.
#[derive(Debug, Clone)]
struct FileJob {
    local: PathBuf,
    remote: String,
    size: u64,
    /// Download: the remote node, for its hash and mtime. Upload: what the destination held
    /// when the transfer was planned, the only thing the upload may replace without --force.
    node: Option<Node>,
}

fn join_remote(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// Whether `path` lies strictly inside `root` (lexically: below it, no `..` on the way).
fn strictly_inside(root: &Path, path: &Path) -> bool {
    match path.strip_prefix(root) {
        Ok(rel) => {
            rel.components().next().is_some()
                && rel.components().all(|c| matches!(c, Component::Normal(_)))
        }
        Err(_) => false,
    }
}

/// Remove `path` (a folder with its content when `dir`), only if it lies strictly inside the
/// target folder `root`: a removal never reaches above the target, whatever a name was.
fn remove_inside(root: &Path, path: &Path, dir: bool) -> Result<(), TransferError> {
    if !strictly_inside(root, path) {
        return Err(TransferError::Local(format!(
            "refusing to remove {}: it is not inside the target folder {}",
            path.display(),
            root.display()
        )));
    }
    let r = if dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    r.map_err(|e| TransferError::Local(format!("cannot replace {}: {e}", path.display())))
}

fn local_name(path: &Path) -> Result<String, TransferError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| TransferError::Local(format!("{} has no usable name", path.display())))
}

/// Run the file jobs, `options.files_concurrency` at a time; failures are collected.
async fn run_files(
    api: Arc<dyn CellsApi>,
    http: Option<Arc<HttpCellsApi>>,
    files: Vec<FileJob>,
    options: &TransferOptions,
    progress: &Progress,
    upload: bool,
    summary: &mut Summary,
) {
    let total: u64 = files.iter().map(|f| f.size).sum();
    progress.start(files.len() as u64, total);
    // Per file: (bytes moved, bytes resumed), or why it failed.
    type Outcome = Result<(u64, u64), String>;
    let results: Vec<(FileJob, Outcome)> = futures::stream::iter(files)
        .map(|job| {
            let api = api.clone();
            let http = http.clone();
            async move {
                let leg = if !upload {
                    progress::Leg::Download
                } else if http.is_some() && job.size > options.upload.multipart_threshold {
                    progress::Leg::Multipart
                } else {
                    progress::Leg::Put
                };
                let bar = progress.file(&job.remote, job.size, leg);
                let r = if upload {
                    upload::upload_file(api.as_ref(), http.as_deref(), &job, options, &bar)
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    download::download_file(api.as_ref(), &job, options, &bar)
                        .await
                        .map_err(|e| e.to_string())
                };
                progress.file_done(&bar, &job.remote, job.size, r.is_ok());
                let resumed = bar.resumed_bytes();
                (job, r.map(|size| (size.saturating_sub(resumed), resumed)))
            }
        })
        .buffer_unordered(options.files_concurrency.max(1))
        .collect()
        .await;
    progress.finish();
    for (job, r) in results {
        match r {
            Ok((bytes, resumed)) => {
                summary.files += 1;
                summary.bytes += bytes;
                summary.resumed += resumed;
            }
            Err(e) => summary.failures.push(format!(
                "{}: {e}",
                if upload {
                    job.local.display().to_string()
                } else {
                    job.remote.clone()
                }
            )),
        }
    }
}
