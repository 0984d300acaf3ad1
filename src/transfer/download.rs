//! A download of a remote file or tree to this machine (`cec scp` from the server): where it
//! lands, named as scp(1) and cp do; the walk of the remote tree; with `--update`, the files
//! already identical left out; then each file fetched into a temporary file, with parallel
//! ranged GETs for large ones, and renamed into place.
//!
//! Invariants:
//! - A file is written to a hidden temporary file next to its destination ([`temp_path_for`],
//!   within `NAME_MAX`) and renamed into place only once complete and of the announced size:
//!   an interrupted or failed download never leaves a partial file under the final name. The
//!   temporary file is removed on failure and on cancellation ([`TempGuard`]).
//! - A broken stream is resumed from the bytes already on disk (ranged GET), up to
//!   `retry_max_attempts` attempts per file or per chunk; only written bytes count as done.
//! - Names from the server are untrusted: each one that becomes a local name passes
//!   [`check_name`]; a name listed twice or a folder listed twice (a loop) is refused with a
//!   line in the failures; nothing is removed unless it lies strictly inside the target
//!   folder ([`super::remove_inside`]), and nothing is written through a symbolic link
//!   ([`links::no_link_below`]).

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::progress::{self, Progress};
use super::{FileJob, Summary, TransferError, TransferOptions, links, remove_inside, run_files};
use crate::api::names::{check_name, shown};
use crate::api::{ApiError, ByteRange, CellsApi, MIB, Node};

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

pub(super) fn temp_path_for(dest: &Path) -> PathBuf {
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

pub(super) async fn download_file(
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
