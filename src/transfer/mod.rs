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

pub mod base;
pub mod links;
pub mod multipart;
pub mod progress;

use std::collections::HashSet;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::api::http::HttpCellsApi;
use crate::api::names::{check_name, shown};
use crate::api::{ApiError, ByteRange, CellsApi, MIB, Node, UploadOptions};
use progress::Progress;

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

/// Download the remote `source` (file or folder) to the local `target`, named as scp(1) and
/// cp do: into `target` when it is an existing folder or ends with `/` (`into`; created when
/// missing while its parent exists), else as `target` (its parent must exist).
pub async fn download(
    api: Arc<dyn CellsApi>,
    source: &str,
    target: &Path,
    into: bool,
    options: &TransferOptions,
    progress: &Progress,
) -> Result<Summary, TransferError> {
    let started = Instant::now();
    let source = source.trim_matches('/').to_string();
    if source.is_empty() {
        return Err(TransferError::NotFound(
            "nothing to download at the root".into(),
        ));
    }
    let node = api
        .stat(&source)
        .await?
        .ok_or_else(|| TransferError::NotFound(format!("cannot find {source} on the server")))?;
    let mut summary = Summary::default();
    let parent_of = |p: &Path| -> PathBuf {
        p.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    // Without its trailing `/` (which `into` keeps), so that a file there is seen as one.
    let target_buf: PathBuf = target.components().collect();
    let target = target_buf.as_path();
    let into_folder = match std::fs::metadata(target) {
        Ok(m) if m.is_dir() => true,
        Ok(_) if into => {
            return Err(TransferError::Conflict(format!(
                "{} is not a folder, we cannot proceed",
                target.display()
            )));
        }
        Ok(_) => false,
        Err(_) => {
            let parent = parent_of(target);
            if !parent.is_dir() {
                return Err(TransferError::NotFound(format!(
                    "target parent folder {} does not exist on this machine",
                    parent.display()
                )));
            }
            if into {
                std::fs::create_dir(target).map_err(|e| {
                    TransferError::Local(format!("cannot create {}: {e}", target.display()))
                })?;
                summary.folders += 1;
            }
            into
        }
    };
    // `root`: the folder the copy lands in; nothing is ever removed outside it.
    let (root, dest) = if into_folder {
        // The local name comes from the server's answer: checked before it names anything.
        let name = node.name().to_string();
        check_name(&name).map_err(|why| {
            TransferError::Local(format!("refusing to download cells://{source}: {why}"))
        })?;
        (target.to_path_buf(), target.join(&name))
    } else {
        let name = target.file_name().ok_or_else(|| {
            TransferError::Local(format!("{} cannot name a file", target.display()))
        })?;
        let root = parent_of(target);
        let dest = root.join(name);
        (root, dest)
    };
    let target = root.as_path();
    let merge = options.force || options.update;
    if let Ok(m) = std::fs::symlink_metadata(&dest) {
        if !merge {
            return Err(TransferError::Conflict(format!(
                "{} already exists on this machine, we cannot proceed (--force replaces it, --update fetches only what differs)",
                dest.display()
            )));
        }
        if m.is_dir() != node.is_folder() {
            remove_inside(target, &dest, m.is_dir())?;
        }
    }
    let mut files = Vec::new();
    let mut link_downs = Vec::new();
    if node.is_folder() {
        let mut folders = vec![dest.clone()];
        walk_remote(
            api.as_ref(),
            &source,
            &dest,
            &mut folders,
            &mut files,
            options.links.then_some(&mut link_downs),
            &mut summary.failures,
        )
        .await?;
        for f in folders {
            // Never made inside a link (one the server sent earlier, or there before).
            if let Err(e) = links::no_link_below(target, &f, false) {
                summary.failures.push(e.to_string());
                continue;
            }
            if !f.is_dir() {
                if f.exists() {
                    if !merge {
                        return Err(TransferError::Conflict(format!(
                            "{} exists and is not a folder",
                            f.display()
                        )));
                    }
                    remove_inside(target, &f, false)?;
                }
                std::fs::create_dir_all(&f).map_err(|e| {
                    TransferError::Local(format!("cannot create {}: {e}", f.display()))
                })?;
                summary.folders += 1;
            }
        }
    } else if let Some(visible) = options
        .links
        .then(|| links::link_name(node.name(), node.size, &[]))
        .flatten()
    {
        // A stored link: recreated as the link it stands for.
        let local = if into_folder {
            target.join(visible)
        } else {
            dest.clone()
        };
        link_downs.push(links::LinkDown {
            local,
            remote: source.clone(),
            size: node.size,
        });
    } else {
        files.push(FileJob {
            local: dest.clone(),
            remote: source.clone(),
            size: node.size,
            node: Some(node.clone()),
        });
    }
    // Never written through a link (one there before: links of this transfer come last).
    files.retain(|f| match links::no_link_below(target, &f.local, true) {
        Ok(()) => true,
        Err(e) => {
            summary.failures.push(e.to_string());
            false
        }
    });
    if options.update {
        let mut kept = Vec::new();
        for f in files {
            let identical = match (&f.node, std::fs::metadata(&f.local)) {
                (Some(n), Ok(m)) if m.is_file() && m.len() == n.size => match n.cells_hash() {
                    Some(h) => {
                        let local = f.local.clone();
                        let lh = tokio::task::spawn_blocking(move || {
                            crate::hash::block_hash_file(&local)
                        })
                        .await
                        .map_err(|e| TransferError::Local(e.to_string()))?
                        .ok();
                        lh.as_deref() == Some(h)
                    }
                    None => false,
                },
                _ => false,
            };
            if identical {
                summary.skipped += 1;
            } else {
                kept.push(f);
            }
        }
        files = kept;
    }
    run_files(
        api.clone(),
        None,
        files,
        options,
        progress,
        false,
        &mut summary,
    )
    .await;
    if !link_downs.is_empty() {
        let merge = options.force || options.update;
        let as_files =
            links::download_links(api.as_ref(), target, link_downs, merge, &mut summary).await;
        // What cannot be a link is the file it is, under its stored name.
        let mut files = Vec::new();
        for link in as_files {
            let Some(name) = link.remote.rsplit('/').next() else {
                continue;
            };
            let local = link.local.with_file_name(name);
            match links::no_link_below(target, &local, true) {
                Ok(()) => files.push(FileJob {
                    local,
                    remote: link.remote,
                    size: link.size,
                    node: None,
                }),
                Err(e) => summary.failures.push(e.to_string()),
            }
        }
        if !files.is_empty() {
            run_files(api, None, files, options, progress, false, &mut summary).await;
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// List the remote tree under `folder` into the folders and files to make under `local`.
/// A child whose name is not a valid local name ([`check_name`]: its path relative to the
/// folder listed, so `a/b` is refused too), a second child of the same name, and a folder
/// listed twice are left out, each with a line in `refused` (the transfer then fails).
async fn walk_remote(
    api: &dyn CellsApi,
    folder: &str,
    local: &Path,
    folders: &mut Vec<PathBuf>,
    files: &mut Vec<FileJob>,
    mut links: Option<&mut Vec<links::LinkDown>>,
    refused: &mut Vec<String>,
) -> Result<(), TransferError> {
    let mut stack = vec![(folder.to_string(), local.to_path_buf())];
    let mut visited: HashSet<String> = HashSet::new();
    while let Some((remote, local)) = stack.pop() {
        if !visited.insert(remote.clone()) {
            refused.push(format!(
                "{}: the server lists this folder more than once (a loop): not downloaded again",
                shown(&remote)
            ));
            continue;
        }
        let mut names: HashSet<String> = HashSet::new();
        let children = api.list_folder(&remote).await?;
        let name_of = |child: &Node| {
            child
                .path
                .strip_prefix(remote.as_str())
                .and_then(|rel| rel.strip_prefix('/'))
                .unwrap_or_else(|| child.name())
                .to_string()
        };
        let all_names: Vec<String> = children.iter().map(name_of).collect();
        let siblings: Vec<&str> = all_names.iter().map(String::as_str).collect();
        for child in children.iter().cloned() {
            let name = name_of(&child);
            if let Err(why) = check_name(&name) {
                refused.push(format!("{}: {why}: not downloaded", shown(&remote)));
                continue;
            }
            if !names.insert(name.clone()) {
                refused.push(format!(
                    "{}: the server lists the name {} twice: only the first is downloaded",
                    shown(&remote),
                    shown(&name)
                ));
                continue;
            }
            let lpath = local.join(&name);
            if child.is_folder() {
                folders.push(lpath.clone());
                stack.push((child.path.clone(), lpath));
            } else if let Some(visible) = links
                .as_ref()
                .and_then(|_| links::link_name(&name, child.size, &siblings))
            {
                if let Some(found) = links.as_mut() {
                    found.push(links::LinkDown {
                        local: local.join(visible),
                        remote: child.path.clone(),
                        size: child.size,
                    });
                }
            } else {
                files.push(FileJob {
                    local: lpath,
                    remote: child.path.clone(),
                    size: child.size,
                    node: Some(child),
                });
            }
        }
    }
    Ok(())
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
                    upload_file(api.as_ref(), http.as_deref(), &job, options, &bar)
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    download_file(api.as_ref(), &job, options, &bar)
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

async fn upload_file(
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

/// Removes the temporary file unless disarmed (covers errors and cancellation).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloaded bytes are written in blocks of this size.
const WRITE_BLOCK: usize = 1024 * 1024;

fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The temporary name stays within NAME_MAX whatever the length of the final name.
    let mut keep = name.len().min(200);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let tag: u32 = rand::random();
    dest.with_file_name(format!(".{}.cec-part-{tag:08x}", &name[..keep]))
}

async fn download_file(
    api: &dyn CellsApi,
    job: &FileJob,
    options: &TransferOptions,
    bar: &progress::FileBar,
) -> Result<u64, ApiError> {
    let local_err = |e: std::io::Error| ApiError::Local(format!("{}: {e}", job.local.display()));
    let temp = temp_path_for(&job.local);
    let mut guard = TempGuard {
        path: temp.clone(),
        armed: true,
    };
    let file = Arc::new(std::fs::File::create(&temp).map_err(local_err)?);
    let size = job.size;
    if size > options.ranged_threshold && options.range_concurrency > 1 {
        file.set_len(size).map_err(local_err)?;
        let chunk = options.range_chunk.max(MIB);
        let ranges: Vec<(u64, u64)> = (0..size.div_ceil(chunk))
            .map(|i| (i * chunk, chunk.min(size - i * chunk)))
            .collect();
        let results: Vec<Result<(), ApiError>> = futures::stream::iter(ranges)
            .map(|(offset, len)| {
                let file = file.clone();
                async move { fetch_range(api, job, &file, offset, len, options, bar).await }
            })
            .buffer_unordered(options.range_concurrency)
            .collect()
            .await;
        for r in results {
            r?;
        }
    } else {
        fetch_range(api, job, &file, 0, size, options, bar).await?;
    }
    let written = file.metadata().map_err(local_err)?.len();
    if written != size {
        return Err(ApiError::Network(format!(
            "{}: got {written} bytes, expected {size}",
            job.remote
        )));
    }
    if options.preserve_mtime
        && let Some(n) = &job.node
        && n.mtime > 0
    {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(n.mtime as u64);
        file.set_modified(t).map_err(local_err)?;
    }
    drop(file);
    std::fs::rename(&temp, &job.local).map_err(local_err)?;
    guard.armed = false;
    Ok(size)
}

/// Fetch `len` bytes at `offset` into `file`, resuming after a broken stream.
async fn fetch_range(
    api: &dyn CellsApi,
    job: &FileJob,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    options: &TransferOptions,
    bar: &progress::FileBar,
) -> Result<(), ApiError> {
    let done = AtomicU64::new(0);
    let mut attempt = 0u32;
    loop {
        let have = done.load(Ordering::Relaxed);
        if have >= len && len > 0 {
            return Ok(());
        }
        attempt += 1;
        let result: Result<(), ApiError> = async {
            let range = if offset == 0 && have == 0 && len == job.size {
                None
            } else {
                Some(ByteRange {
                    offset: offset + have,
                    len: Some(len - have),
                })
            };
            let mut stream = api.get_object(&job.remote, range).await?;
            // Received bytes are written in blocks of up to 1 MiB (fewer syscalls); `done`
            // counts only what is on disk, so a resume never skips unwritten bytes.
            let mut buffer: Vec<u8> = Vec::with_capacity(WRITE_BLOCK);
            let flush = |buffer: &mut Vec<u8>| -> Result<(), ApiError> {
                if buffer.is_empty() {
                    return Ok(());
                }
                let at = done.load(Ordering::Relaxed);
                file.write_all_at(buffer, offset + at)
                    .map_err(|e| ApiError::Local(format!("{}: {e}", job.local.display())))?;
                done.fetch_add(buffer.len() as u64, Ordering::Relaxed);
                bar.inc(buffer.len() as u64);
                buffer.clear();
                Ok(())
            };
            let mut received = done.load(Ordering::Relaxed);
            let outcome: Result<(), ApiError> = async {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    let take = chunk.len().min((len - received) as usize);
                    buffer.extend_from_slice(&chunk[..take]);
                    received += take as u64;
                    if buffer.len() >= WRITE_BLOCK {
                        flush(&mut buffer)?;
                    }
                    if received >= len {
                        break;
                    }
                }
                Ok(())
            }
            .await;
            // Keep what arrived before a cut: the resume starts after it.
            flush(&mut buffer)?;
            outcome
        }
        .await;
        let have = done.load(Ordering::Relaxed);
        match result {
            Ok(()) if have >= len => return Ok(()),
            Ok(()) => {
                if attempt >= options.retry_max_attempts.max(1) {
                    return Err(ApiError::Network(format!(
                        "{}: the download ended early ({have} of {len} bytes)",
                        job.remote
                    )));
                }
            }
            Err(e) if (e.is_transient()) && attempt < options.retry_max_attempts.max(1) => {
                tracing::info!(
                    "download of {} interrupted at {} ({e}); resuming",
                    job.remote,
                    offset + have
                );
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(options.retry_delay * attempt).await;
    }
}
