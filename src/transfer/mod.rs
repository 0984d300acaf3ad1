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

pub mod multipart;
pub mod progress;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::api::http::HttpCellsApi;
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
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl Summary {
    /// One line: files, bytes, rate, skipped, failures.
    pub fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let rate = self.bytes as f64 / secs;
        format!(
            "{} file{} transferred ({}) in {:.2}s, {}/s; {} skipped; {} folder{} created; {} failed",
            self.files,
            if self.files == 1 { "" } else { "s" },
            crate::cli::files::human_size(self.bytes),
            secs,
            crate::cli::files::human_size(rate as u64),
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
    /// Remote node (download side), for its hash and mtime.
    node: Option<Node>,
}

fn join_remote(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

fn local_name(path: &Path) -> Result<String, TransferError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| TransferError::Local(format!("{} has no usable name", path.display())))
}

/// Upload `source` (a local file or folder) into the remote folder `target` (created if
/// missing while its parent exists): it lands at `target/<name of source>`. With `http`,
/// files go through the resumable, progress-reporting uploads of [`multipart`]; otherwise
/// through [`CellsApi::put_object_from_file`].
pub async fn upload(
    api: Arc<dyn CellsApi>,
    http: Option<Arc<HttpCellsApi>>,
    source: &Path,
    target: &str,
    options: &TransferOptions,
    progress: &Progress,
) -> Result<Summary, TransferError> {
    let started = Instant::now();
    let meta = std::fs::metadata(source)
        .map_err(|e| TransferError::NotFound(format!("cannot read {}: {e}", source.display())))?;
    let name = local_name(source)?;
    let target = target.trim_matches('/').to_string();
    let mut folders_to_create: Vec<String> = Vec::new();
    match api.stat(&target).await? {
        Some(n) if n.is_folder() => {}
        Some(_) => {
            return Err(TransferError::Conflict(format!(
                "target path {target} is not a folder, we cannot proceed"
            )));
        }
        None => {
            let parent = crate::cli::files::parent_of(&target);
            if parent.is_empty() {
                return Err(TransferError::NotFound(format!(
                    "workspace {target} does not exist on the server"
                )));
            }
            match api.stat(parent).await? {
                Some(p) if p.is_folder() => folders_to_create.push(target.clone()),
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
        }
    }
    let dest = join_remote(&target, &name);
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
                "a file or folder named '{name}' already exists on the server at '{target}', we cannot proceed (use --force or --update)"
            )));
        }
        if e.is_folder() != meta.is_dir() {
            api.delete_nodes(std::slice::from_ref(&dest), false).await?;
        }
    }
    // Walk the local tree.
    let mut files: Vec<FileJob> = Vec::new();
    if meta.is_dir() {
        folders_to_create.push(dest.clone());
        walk_local(source, &dest, &mut folders_to_create, &mut files)?;
    } else {
        files.push(FileJob {
            local: source.to_path_buf(),
            remote: dest.clone(),
            size: meta.len(),
            node: None,
        });
    }
    // Create folders that do not exist yet (empty ones included).
    let mut summary = Summary::default();
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
        for f in files {
            if let Some(remote) = api.stat(&f.remote).await?
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
            kept.push(f);
        }
        files = kept;
    }
    run_files(api, http, files, options, progress, true, &mut summary).await;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn walk_local(
    dir: &Path,
    remote: &str,
    folders: &mut Vec<String>,
    files: &mut Vec<FileJob>,
) -> Result<(), TransferError> {
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
        let meta = std::fs::metadata(&path)
            .map_err(|e| TransferError::Local(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            folders.push(child.clone());
            walk_local(&path, &child, folders, files)?;
        } else if meta.is_file() {
            files.push(FileJob {
                local: path,
                remote: child,
                size: meta.len(),
                node: None,
            });
        }
    }
    Ok(())
}

/// Download the remote `source` (file or folder) into the local folder `target` (created if
/// missing while its parent exists): it lands at `target/<name of source>`.
pub async fn download(
    api: Arc<dyn CellsApi>,
    source: &str,
    target: &Path,
    options: &TransferOptions,
    progress: &Progress,
) -> Result<Summary, TransferError> {
    let started = Instant::now();
    let source = source.trim_matches('/').to_string();
    let node = api
        .stat(&source)
        .await?
        .ok_or_else(|| TransferError::NotFound(format!("cannot find {source} on the server")))?;
    let name = node.name().to_string();
    if name.is_empty() {
        return Err(TransferError::NotFound(
            "nothing to download at the root".into(),
        ));
    }
    let mut summary = Summary::default();
    match std::fs::metadata(target) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(TransferError::Conflict(format!(
                "target path {} is not a folder, we cannot proceed",
                target.display()
            )));
        }
        Err(_) => {
            let parent = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(TransferError::NotFound(format!(
                    "target parent folder {} does not exist on this machine",
                    parent.display()
                )));
            }
            std::fs::create_dir(target).map_err(|e| {
                TransferError::Local(format!("cannot create {}: {e}", target.display()))
            })?;
            summary.folders += 1;
        }
    }
    let dest = target.join(&name);
    let merge = options.force || options.update;
    if let Ok(m) = std::fs::symlink_metadata(&dest) {
        if !merge {
            return Err(TransferError::Conflict(format!(
                "a file or folder named '{name}' already exists on your machine at '{}', we cannot proceed (use --force or --update)",
                target.display()
            )));
        }
        if m.is_dir() != node.is_folder() {
            let r = if m.is_dir() {
                std::fs::remove_dir_all(&dest)
            } else {
                std::fs::remove_file(&dest)
            };
            r.map_err(|e| TransferError::Local(format!("cannot replace {}: {e}", dest.display())))?;
        }
    }
    let mut files = Vec::new();
    if node.is_folder() {
        let mut folders = vec![dest.clone()];
        walk_remote(api.as_ref(), &source, &dest, &mut folders, &mut files).await?;
        for f in folders {
            if !f.is_dir() {
                if f.exists() {
                    if !merge {
                        return Err(TransferError::Conflict(format!(
                            "{} exists and is not a folder",
                            f.display()
                        )));
                    }
                    let _ = std::fs::remove_file(&f);
                }
                std::fs::create_dir_all(&f).map_err(|e| {
                    TransferError::Local(format!("cannot create {}: {e}", f.display()))
                })?;
                summary.folders += 1;
            }
        }
    } else {
        files.push(FileJob {
            local: dest.clone(),
            remote: source.clone(),
            size: node.size,
            node: Some(node.clone()),
        });
    }
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
    run_files(api, None, files, options, progress, false, &mut summary).await;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

async fn walk_remote(
    api: &dyn CellsApi,
    folder: &str,
    local: &Path,
    folders: &mut Vec<PathBuf>,
    files: &mut Vec<FileJob>,
) -> Result<(), TransferError> {
    let mut stack = vec![(folder.to_string(), local.to_path_buf())];
    while let Some((remote, local)) = stack.pop() {
        for child in api.list_folder(&remote).await? {
            let name = child.name().to_string();
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                continue;
            }
            let lpath = local.join(&name);
            if child.is_folder() {
                folders.push(lpath.clone());
                stack.push((child.path.clone(), lpath));
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
    let results: Vec<(FileJob, Result<u64, ApiError>)> = futures::stream::iter(files)
        .map(|job| {
            let api = api.clone();
            let http = http.clone();
            async move {
                let bar = progress.file(&job.remote, job.size);
                let r = if upload {
                    upload_file(api.as_ref(), http.as_deref(), &job, options, &bar).await
                } else {
                    download_file(api.as_ref(), &job, options, &bar).await
                };
                progress.file_done(&bar, &job.remote, job.size, r.is_ok());
                (job, r)
            }
        })
        .buffer_unordered(options.files_concurrency.max(1))
        .collect()
        .await;
    progress.finish();
    for (job, r) in results {
        match r {
            Ok(bytes) => {
                summary.files += 1;
                summary.bytes += bytes;
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
) -> Result<u64, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match http {
            Some(h) => {
                let b = bar.clone();
                multipart::upload(
                    h,
                    &job.remote,
                    &job.local,
                    job.size,
                    &options.upload,
                    Arc::new(move |n| b.inc(n)),
                )
                .await
            }
            None => api
                .put_object_from_file(&job.remote, &job.local, job.size, &options.upload)
                .await
                .map(|_| bar.inc(job.size)),
        };
        match result {
            Ok(()) => {
                return Ok(job.size);
            }
            Err(e) if e.is_transient() && attempt < options.retry_max_attempts.max(1) => {
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
    let tag: u32 = rand::random();
    dest.with_file_name(format!(".{name}.cec-part-{tag:08x}"))
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
