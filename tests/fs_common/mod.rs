//! Shared helpers of the kernel-free tests of the filesystem core (`fs_*.rs`): a `CellsFs` over
//! the in-memory server, path resolution by lookups, whole-file writes as `cp` makes them.
//!
//! Use from a test file with `mod fs_common;`. Not every test file uses every helper.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::sync::Arc;

use cec::api::memory::MemoryCellsApi;
use cec::fs::{CellsFs, FsOptions, ROOT_INO};

pub async fn mount(api: &Arc<MemoryCellsApi>, options: FsOptions) -> CellsFs {
    CellsFs::new(api.clone(), options).await.unwrap()
}

/// The inode of `path` below inode `from` (lookups, one component at a time).
pub async fn resolve_from(fs: &CellsFs, from: u64, path: &str) -> Result<u64, i32> {
    let mut ino = from;
    for part in path.split('/') {
        ino = fs
            .lookup(ino, OsStr::new(part))
            .await
            .map_err(|e| e.errno())?
            .attr
            .ino;
    }
    Ok(ino)
}

/// The inode of `path` (from the root), or the errno of the lookup that failed.
pub async fn resolve(fs: &CellsFs, path: &str) -> Result<u64, i32> {
    resolve_from(fs, ROOT_INO, path).await
}

/// create + write + flush + release of a new file `dir/name`, as `cp` does: the handle is
/// released even when the flush fails, whose error is returned then.
pub async fn write_new(fs: &CellsFs, dir: &str, name: &str, data: &[u8]) -> Result<u64, i32> {
    let parent = resolve(fs, dir).await?;
    let (entry, open) = fs
        .create(parent, OsStr::new(name), 0o644, libc::O_WRONLY)
        .await
        .map_err(|e| e.errno())?;
    let ino = entry.attr.ino;
    fs.write(ino, open.fh, 0, data)
        .await
        .map_err(|e| e.errno())?;
    let flushed = fs.flush(ino, open.fh).await.map_err(|e| e.errno());
    fs.release(ino, open.fh).await.map_err(|e| e.errno())?;
    flushed.map(|()| ino)
}

/// The names `readdir` gives for the folder `dir` ("." and ".." included).
pub async fn list_names(fs: &CellsFs, dir: u64) -> Vec<String> {
    let fh = fs.opendir(dir, 0).await.unwrap();
    let mut names = Vec::new();
    fs.readdir(dir, fh, 0, false, |e| {
        names.push(e.name.to_string_lossy().into_owned());
        false
    })
    .await
    .unwrap();
    fs.releasedir(dir, fh).await.unwrap();
    names
}

/// Uploads of whole files, from memory or from a staging file.
pub fn uploads(api: &MemoryCellsApi) -> u64 {
    api.calls("put_object") + api.calls("put_object_from_file")
}
