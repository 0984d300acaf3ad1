//! An upload of a local file or tree to the server (`cec scp` towards the server): where it
//! lands, named as scp(1) and cp do ([`Landing`]); the walk of the local tree; the folders
//! created first (empty ones included); with `--update`, the files already identical left
//! out; then each file sent, through the resumable multipart uploads of [`super::multipart`]
//! when an [`HttpCellsApi`] is given, else through [`CellsApi::put_object_from_file`], and
//! retried while the failure is transient.
//!
//! Invariants:
//! - Nothing that exists on the server is replaced without `--force` or `--update`; a file
//!   replaces only the version seen when the transfer was planned, unless `--force` (see
//!   [`super::base`]). A placeholder left by an interrupted upload is not a conflict: the
//!   upload resumes it.
//! - A file is only visible under its final name once the server has the whole content.
//! - Symbolic links inside the tree are skipped with a notice unless `follow_links`, stored as
//!   `NAME.rclonelink` files with `links`; a source named on the command line is followed. A
//!   followed link that leads back to a folder being walked is skipped (no endless walk).
//! - Local names are NFC-normalised before they become remote names.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::progress::{self, Progress};
use super::{
    FileJob, Summary, TransferError, TransferOptions, base, join_remote, links, local_name,
    multipart, run_files,
};
use crate::api::CellsApi;
use crate::api::http::HttpCellsApi;

/// Where a transfer lands, as scp(1) and cp name it: `target` is a folder to copy into when
/// it ends with `/` (`into`, created when missing while its parent exists) or is an existing
/// folder; otherwise it is the new name of the copy (its parent must exist).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Landing {
    /// Into the folder (which exists, or is created first when `create`).
    Into { folder: String, create: bool },
    /// Under the name `target` itself.
    As,
}

/// Upload `source` (a local file or folder) to `target` on the server, named as scp(1) and
/// cp do (see [`Landing`]): into `target` when it is a folder or ends with `/` (`into`),
/// else as `target`. With `http`, files go through the resumable, progress-reporting
/// uploads of [`multipart`]; otherwise through [`CellsApi::put_object_from_file`].
pub async fn upload(
    api: Arc<dyn CellsApi>,
    http: Option<Arc<HttpCellsApi>>,
    source: &Path,
    target: &str,
    into: bool,
    options: &TransferOptions,
    progress: &Progress,
) -> Result<Summary, TransferError> {
    let started = Instant::now();
    let meta = std::fs::metadata(source)
        .map_err(|e| TransferError::NotFound(format!("cannot read {}: {e}", source.display())))?;
    let name = local_name(source)?;
    let name: String = unicode_normalization::UnicodeNormalization::nfc(name.as_str()).collect();
    let target = target.trim_matches('/').to_string();
    let into = into || target.is_empty() || !target.contains('/');
    let landing = match api.stat(&target).await? {
        Some(n) if n.is_folder() => Landing::Into {
            folder: target.clone(),
            create: false,
        },
        Some(_) if into => {
            return Err(TransferError::Conflict(format!(
                "cells://{target}/ is not a folder on the server, we cannot proceed"
            )));
        }
        Some(_) => Landing::As,
        None => {
            let parent = crate::paths::parent_of(&target);
            if parent.is_empty() {
                return Err(TransferError::NotFound(format!(
                    "workspace {target} does not exist on the server"
                )));
            }
            match api.stat(parent).await? {
                Some(p) if p.is_folder() => {}
                Some(_) => {
                    return Err(TransferError::Conflict(format!(
                        "target parent {parent} is not a folder on the server"
                    )));
                }
                None => {
                    return Err(TransferError::NotFound(format!(
                        "target parent folder {parent} does not exist on the server"
                    )));
                }
            }
            if into {
                Landing::Into {
                    folder: target.clone(),
                    create: true,
                }
            } else {
                Landing::As
            }
        }
    };
    let mut folders_to_create: Vec<String> = Vec::new();
    let dest = match &landing {
        Landing::Into { folder, create } => {
            if *create {
                folders_to_create.push(folder.clone());
            }
            join_remote(folder, &name)
        }
        Landing::As => target.clone(),
    };
    let merge = options.force || options.update;
    // A file whose upload is still in flight (placeholder, Etag "temporary") is what an
    // interrupted multipart upload leaves: not a conflict, the upload resumes it.
    let existing = if folders_to_create.is_empty() {
        api.stat(&dest)
            .await?
            .filter(|n| n.is_folder() || !n.is_temporary())
    } else {
        None
    };
    if let Some(e) = &existing {
        if !merge {
            return Err(TransferError::Conflict(format!(
                "cells://{dest} already exists on the server, we cannot proceed (--force replaces it, --update sends only what differs)"
            )));
        }
        if e.is_folder() != meta.is_dir() {
            api.delete_nodes(std::slice::from_ref(&dest), false).await?;
        }
    }
    // Walk the local tree.
    let mut files: Vec<FileJob> = Vec::new();
    let mut notices = Vec::new();
    let mut link_ups = Vec::new();
    if meta.is_dir() {
        folders_to_create.push(dest.clone());
        let mut walk = LocalWalk {
            follow_links: options.follow_links,
            links: options.links.then_some(&mut link_ups),
            ancestors: vec![(meta.dev(), meta.ino())],
            folders: &mut folders_to_create,
            files: &mut files,
            notices: &mut notices,
        };
        walk.walk(source, &dest)?;
    } else {
        files.push(FileJob {
            local: source.to_path_buf(),
            remote: dest.clone(),
            size: meta.len(),
            node: None,
        });
    }
    // Create folders that do not exist yet (empty ones included).
    let mut summary = Summary {
        notices,
        ..Summary::default()
    };
    if merge && existing.is_some() {
        let mut missing = Vec::new();
        for f in &folders_to_create {
            if api.stat(f).await?.is_none() {
                missing.push(f.clone());
            }
        }
        folders_to_create = missing;
    }
    if !folders_to_create.is_empty() {
        api.create_folders(&folders_to_create).await?;
        summary.folders = folders_to_create.len() as u64;
    }
    // With --update, drop identical files.
    if options.update && existing.is_some() {
        let mut kept = Vec::new();
        for mut f in files {
            let remote = api.stat(&f.remote).await?;
            if let Some(remote) = &remote
                && !remote.is_folder()
                && remote.size == f.size
                && let Some(h) = remote.cells_hash()
            {
                let local = f.local.clone();
                let local_hash =
                    tokio::task::spawn_blocking(move || crate::hash::block_hash_file(&local))
                        .await
                        .map_err(|e| TransferError::Local(e.to_string()))?
                        .map_err(|e| TransferError::Local(e.to_string()))?;
                if local_hash == h {
                    summary.skipped += 1;
                    continue;
                }
            }
            // The version this upload may replace (see `base`).
            f.node = remote;
            kept.push(f);
        }
        files = kept;
    }
    run_files(
        api.clone(),
        http,
        files,
        options,
        progress,
        true,
        &mut summary,
    )
    .await;
    links::upload_links(api.as_ref(), link_ups, &mut summary).await;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The walk of a local tree to upload.
struct LocalWalk<'a> {
    follow_links: bool,
    /// With `--links`: where the links found go (stored, not followed).
    links: Option<&'a mut Vec<links::LinkUp>>,
    /// (device, inode) of the folders from the source down to the one being walked.
    ancestors: Vec<(u64, u64)>,
    folders: &'a mut Vec<String>,
    files: &'a mut Vec<FileJob>,
    notices: &'a mut Vec<String>,
}

impl LocalWalk<'_> {
    fn walk(&mut self, dir: &Path, remote: &str) -> Result<(), TransferError> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| TransferError::Local(format!("cannot list {}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = local_name(&path)?;
            let name: String =
                unicode_normalization::UnicodeNormalization::nfc(name.as_str()).collect();
            let child = join_remote(remote, &name);
            let read_err = |e: std::io::Error| {
                TransferError::Local(format!("cannot read {}: {e}", path.display()))
            };
            let mut meta = std::fs::symlink_metadata(&path).map_err(read_err)?;
            if meta.file_type().is_symlink() {
                if let Some(found) = self.links.as_mut() {
                    match links::link_up(&path, remote, &name) {
                        Ok(link) => found.push(link),
                        Err(e) => self.notices.push(e),
                    }
                    continue;
                }
                if !self.follow_links {
                    self.notices.push(format!(
                        "{}: symbolic link not followed (-L follows links)",
                        path.display()
                    ));
                    continue;
                }
                meta = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) => {
                        self.notices.push(format!(
                            "{}: symbolic link not followed: {e}",
                            path.display()
                        ));
                        continue;
                    }
                };
            }
            if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                if self.ancestors.contains(&id) {
                    self.notices.push(format!(
                        "{}: leads back to a folder it is inside (a loop): not followed",
                        path.display()
                    ));
                    continue;
                }
                self.folders.push(child.clone());
                self.ancestors.push(id);
                let r = self.walk(&path, &child);
                self.ancestors.pop();
                r?;
            } else if meta.is_file() {
                self.files.push(FileJob {
                    local: path,
                    remote: child,
                    size: meta.len(),
                    node: None,
                });
            }
        }
        Ok(())
    }
}

pub(super) async fn upload_file(
    api: &dyn CellsApi,
    http: Option<&HttpCellsApi>,
    job: &FileJob,
    options: &TransferOptions,
    bar: &progress::FileBar,
) -> Result<u64, base::UploadFailure> {
    let replace = if options.force {
        base::Replace::Any
    } else {
        base::Replace::Only(job.node.as_ref())
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match http {
            Some(h) => {
                let b = bar.clone();
                let r = bar.clone();
                multipart::upload(
                    h,
                    &job.remote,
                    &job.local,
                    job.size,
                    &options.upload,
                    Arc::new(move |n| b.inc(n)),
                    Arc::new(move |n| r.resumed(n)),
                    replace,
                )
                .await
            }
            None => match replace.check(api, &job.remote).await {
                Ok(()) => api
                    .put_object_from_file(&job.remote, &job.local, job.size, &options.upload)
                    .await
                    .map(|_| bar.inc(job.size))
                    .map_err(base::UploadFailure::Api),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => {
                return Ok(job.size);
            }
            Err(base::UploadFailure::Api(e))
                if e.is_transient() && attempt < options.retry_max_attempts.max(1) =>
            {
                tracing::info!("upload of {} failed ({e}); retrying", job.remote);
                tokio::time::sleep(options.retry_delay * attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
}
