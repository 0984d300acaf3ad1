//! File versions on the command line: `cec versions PATH` (the versions of a file, newest
//! first; `--json`), `cec scp --version ID cells://PATH LOCAL` (one version downloaded) and
//! `cec restore --version ID PATH` (a version made the current content, as the web UI does:
//! a server-side copy of the version onto the file; the content it replaces remains a
//! version). Without `--version`, `restore` keeps its meaning: the recycle bin.
//!
//! Invariants: a version download is written to a hidden temporary file next to its
//! destination and renamed only once complete and of the announced size (a failure or
//! Ctrl-C leaves no partial file under the final name); an existing destination is replaced
//! only with `--force`; text from the server (descriptions, authors) reaches the terminal
//! only through [`shown_name`] (no control characters).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use futures::StreamExt;
use serde_json::json;

use super::files::{remote_path, shown_name};
use super::{CliError, GlobalArgs, connect};
use crate::api::versions::{FileVersion, valid_version_id};
use crate::api::{ApiError, ByteRange, CellsApi, NodeKind};
use crate::sizes::human_size;

/// `versions`: list the versions of a file.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// The file (`<workspace>/<path>`, `cells://` accepted)
    pub path: String,
    /// Print the versions as JSON (one array of objects, newest first)
    #[arg(long)]
    pub json: bool,
}

/// A time as `2026-12-07T19:50:12Z`.
pub fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The file at `path`, which must exist and be a file.
async fn existing_file(api: &dyn CellsApi, path: &str) -> Result<(), CliError> {
    match api.stat(path).await? {
        None => Err(CliError::not_found(format!("{path}: no such file"))),
        Some(n) if n.kind == NodeKind::Folder => Err(CliError::usage(format!(
            "{path} is a folder: only files have versions"
        ))),
        Some(_) => Ok(()),
    }
}

/// The version `id` of `path`, or a clear error saying how to list them.
async fn find_version(api: &dyn CellsApi, path: &str, id: &str) -> Result<FileVersion, CliError> {
    if !valid_version_id(id) {
        return Err(CliError::usage(format!(
            "{id:?} is not a version id (see `cec versions {path}`)"
        )));
    }
    existing_file(api, path).await?;
    api.list_versions(path)
        .await?
        .into_iter()
        .find(|v| v.id == id)
        .ok_or_else(|| {
            CliError::not_found(format!(
                "{path} has no version {id} (see `cec versions {path}`)"
            ))
        })
}

pub async fn run_versions(args: VersionsArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let path = remote_path(&args.path);
    if !path.contains('/') {
        return Err(CliError::usage(format!(
            "{path:?} is not a file: give <workspace>/<path>"
        )));
    }
    let session = connect(global).await?;
    let api = session.api.clone();
    existing_file(api.as_ref(), &path).await?;
    let versions = api.list_versions(&path).await?;
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| CliError::failure(format!("cannot write the output: {e}"));
    if args.json {
        let list: Vec<_> = versions
            .iter()
            .map(|v| {
                json!({
                    "id": v.id,
                    "date": rfc3339(v.mtime),
                    "mtime": v.mtime,
                    "size": v.size,
                    "etag": v.etag,
                    "author": v.author,
                    "description": v.description,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(list)).map_err(io)?;
        return Ok(());
    }
    if versions.is_empty() {
        eprintln!("{path} has no versions (its workspace may not keep any)");
        return Ok(());
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    writeln!(
        out,
        "{:<36}  {:<20}  {:>10}  {:<12}  DESCRIPTION",
        "ID", "DATE", "SIZE", "AUTHOR"
    )
    .map_err(io)?;
    for v in &versions {
        let author = v.author.as_deref().unwrap_or("-");
        writeln!(
            out,
            "{:<36}  {:<20}  {:>10}  {:<12}  {}",
            v.id,
            rfc3339(v.mtime),
            human_size(v.size),
            shown_name(author, terminal),
            shown_name(&v.description, terminal)
        )
        .map_err(io)?;
    }
    Ok(())
}

/// `cec restore --version ID PATH`.
pub async fn run_restore_version(
    paths: &[String],
    id: &str,
    global: &GlobalArgs,
) -> Result<(), CliError> {
    let [path] = paths else {
        return Err(CliError::usage(
            "restore --version takes exactly one file: cec restore --version ID <workspace>/<path>",
        ));
    };
    let path = remote_path(path);
    let session = connect(global).await?;
    let api = session.api.clone();
    let version = find_version(api.as_ref(), &path, id).await?;
    api.restore_version(&path, id).await?;
    eprintln!(
        "Restored version {id} of {path} (from {}); the content it replaced remains a version",
        rfc3339(version.mtime)
    );
    Ok(())
}

/// `cec scp --version ID cells://PATH LOCAL`: one version downloaded. LOCAL is an existing
/// folder (or ends with `/`) to download into under the file's name, or the copy's name.
pub async fn run_scp_version(
    remote: &str,
    local: &Path,
    into: bool,
    id: &str,
    force: bool,
    global: &GlobalArgs,
) -> Result<(), CliError> {
    let session = connect(global).await?;
    let api = session.api.clone();
    let version = find_version(api.as_ref(), remote, id).await?;
    let name = remote.rsplit('/').next().unwrap_or(remote);
    let dest = if into || local.is_dir() {
        local.join(name)
    } else {
        local.to_path_buf()
    };
    if dest.is_dir() {
        return Err(CliError::failure(format!(
            "{} is a folder: not replaced by a file",
            dest.display()
        )));
    }
    if dest.exists() && !force {
        return Err(CliError::failure(format!(
            "{} exists: use --force to replace it",
            dest.display()
        )));
    }
    let temp = Temp(temp_path(&dest));
    download(api.as_ref(), remote, &version, &temp.0).await?;
    std::fs::rename(&temp.0, &dest)
        .map_err(|e| CliError::failure(format!("cannot write {}: {e}", dest.display())))?;
    std::mem::forget(temp);
    eprintln!(
        "Downloaded version {id} of cells://{remote} ({}, {}) to {}",
        rfc3339(version.mtime),
        human_size(version.size),
        dest.display()
    );
    Ok(())
}

/// A temporary file removed when dropped (unless forgotten once renamed).
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.cec-version-{}", std::process::id()))
}

/// Stream the version into `temp`; a cut stream resumes where it stopped (a few times).
async fn download(
    api: &dyn CellsApi,
    remote: &str,
    version: &FileVersion,
    temp: &Path,
) -> Result<(), CliError> {
    let local =
        |e: std::io::Error| CliError::failure(format!("cannot write {}: {e}", temp.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(temp)
        .map_err(local)?;
    let mut have = 0u64;
    let mut attempts = 0;
    while have < version.size || (have == 0 && attempts == 0) {
        attempts += 1;
        let range = (have > 0).then_some(ByteRange {
            offset: have,
            len: None,
        });
        let result: Result<(), ApiError> = async {
            let mut stream = api.get_object_version(remote, &version.id, range).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                have += chunk.len() as u64;
                if have > version.size {
                    return Err(ApiError::InvalidResponse(format!(
                        "version {} of {remote} is longer than its {} bytes",
                        version.id, version.size
                    )));
                }
                file.write_all(&chunk)
                    .map_err(|e| ApiError::Local(e.to_string()))?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) if have == version.size => break,
            Ok(()) if attempts < 5 => continue,
            Ok(()) => {
                return Err(CliError::failure(format!(
                    "version {} of {remote}: the download ended at {have} of {} bytes",
                    version.id, version.size
                )));
            }
            Err(e) if e.retry_now() && attempts < 5 => {
                tokio::time::sleep(Duration::from_millis(200 << attempts)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    file.sync_all().map_err(local)?;
    Ok(())
}
