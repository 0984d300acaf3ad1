//! A full cache disk never turns into a truncated file on the server (issue 22), tested on
//! the filesystem core with its cache directory on a small tmpfs. docs/SEMANTICS.md: "a file
//! whose staged content is incomplete (a write to the cache directory failed, for a full disk
//! say) is never stored: that write fails with `ENOSPC`, so does every later write and
//! `close` of it (with `--write-back` too, where nothing is journaled), the server keeps its
//! version (a new file is gone once closed), and `cec mount --status` lists the file with the
//! error."
//!
//! These tests mount a tmpfs: they need root, and FAIL (never skip) without it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cec::api::memory::MemoryCellsApi;
use cec::fs::{CellsFs, FsOptions, ROOT_INO};

const WS: &str = "personal-files";
const MIB: usize = 1024 * 1024;

/// A tmpfs of `size` on a temporary directory, unmounted when dropped (even on a panic).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests mount a small tmpfs as the cache directory: they run as root"
        );
        let dir = tempfile::Builder::new()
            .prefix("cec-full-disk")
            .tempdir()
            .unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes held by the files under `dir` (relative to the disk).
    fn bytes_in(&self, dir: &str) -> u64 {
        std::fs::read_dir(self.path().join(dir))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    fn files_in(&self, dir: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.path().join(dir))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn options(cache: &Path, write_back: bool) -> FsOptions {
    let mut options = FsOptions::new(cache);
    options.upload_retry_delay = Duration::from_millis(1);
    // The read cache is not what these tests are about: keep the disk for staging.
    options.cache_size = 0;
    if write_back {
        options.write_back = Some(Duration::from_secs(3600));
    }
    options
}

async fn resolve(fs: &CellsFs, path: &str) -> u64 {
    let mut ino = ROOT_INO;
    for part in path.split('/') {
        ino = fs.lookup(ino, OsStr::new(part)).await.unwrap().attr.ino;
    }
    ino
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

/// Write `data` sequentially in 128 KiB requests, as `cp` does; the errno of the first
/// failure, with how many bytes were written before it.
async fn write_all(fs: &CellsFs, ino: u64, fh: u64, data: &[u8]) -> Result<(), (i32, u64)> {
    let mut at = 0;
    for chunk in data.chunks(128 * 1024) {
        match fs.write(ino, fh, at, chunk).await {
            Ok(n) => at += n as u64,
            Err(e) => return Err((e.errno(), at)),
        }
    }
    Ok(())
}

/// Copy `data` over (or into, when new) `WS/name` as `cp` does: open truncating, write,
/// close. The errno of each step that failed: (write, close).
async fn cp(fs: &CellsFs, name: &str, data: &[u8]) -> (Option<i32>, Option<i32>) {
    let parent = resolve(fs, WS).await;
    let (ino, fh) = match fs.lookup(parent, OsStr::new(name)).await {
        Ok(entry) => {
            let open = fs
                .open(entry.attr.ino, libc::O_WRONLY | libc::O_TRUNC)
                .await
                .unwrap();
            (entry.attr.ino, open.fh)
        }
        Err(_) => {
            let (entry, open) = fs
                .create(parent, OsStr::new(name), 0o644, libc::O_WRONLY)
                .await
                .unwrap();
            (entry.attr.ino, open.fh)
        }
    };
    let wrote = write_all(fs, ino, fh, data)
        .await
        .err()
        .map(|(errno, _)| errno);
    let flushed = fs.flush(ino, fh).await.err().map(|e| e.errno());
    let _ = fs.release(ino, fh).await;
    (wrote, flushed)
}

fn status_mentions(fs: &CellsFs, name: &str) -> bool {
    fs.status()
        .recent_errors
        .iter()
        .any(|e| e.message.contains(name) && e.message.contains("not stored"))
}

/// The first `cp` fails as the issue says; afterwards the server has `expected` (`None`: no
/// file), now, after the unmount's `sync_all`, and after a remount on the same cache.
async fn full_disk_copy_keeps_the_server_version(write_back: bool, existing: bool) {
    let disk = SmallDisk::new("4m");
    let api = Arc::new(MemoryCellsApi::default());
    let path = format!("{WS}/big.bin");
    let original = pattern(8 * MIB, 0);
    if existing {
        api.put_file(&path, &original);
    }
    let expected = existing.then_some(original.clone());
    let fs = CellsFs::new(api.clone(), options(disk.path(), write_back))
        .await
        .unwrap();
    let (wrote, closed) = cp(&fs, "big.bin", &pattern(8 * MIB, 0x5a)).await;
    assert_eq!(
        wrote,
        Some(libc::ENOSPC),
        "the write that found the disk full"
    );
    assert!(
        matches!(closed, Some(libc::ENOSPC | libc::EIO)),
        "close of content that was not staged whole: {closed:?}"
    );
    assert_eq!(
        api.read_file(&path),
        expected,
        "the server's version changed"
    );
    assert!(
        status_mentions(&fs, "big.bin"),
        "the status does not say big.bin was not stored: {:?}",
        fs.status().recent_errors
    );
    assert!(
        fs.status().pending_uploads.is_empty(),
        "nothing is pending: {:?}",
        fs.status().pending_uploads
    );
    // A new file that was not stored is not shown either (the server's view).
    if !existing {
        let parent = resolve(&fs, WS).await;
        let looked_up = fs.lookup(parent, OsStr::new("big.bin")).await;
        assert_eq!(looked_up.err().map(|e| e.errno()), Some(libc::ENOENT));
    }
    // The staged bytes were let go: the disk is not left full.
    assert_eq!(
        disk.bytes_in("staging"),
        0,
        "{:?}",
        disk.files_in("staging")
    );
    // The unmount stores nothing truncated.
    let synced = fs.sync_all().await;
    assert!(synced.is_ok(), "{synced:?}");
    assert_eq!(api.read_file(&path), expected, "sync_all uploaded it");
    drop(fs);
    // Nor does the next mount (no journal record was left for it).
    let fs = CellsFs::new(api.clone(), options(disk.path(), write_back))
        .await
        .unwrap();
    fs.sync_all().await.unwrap();
    assert_eq!(api.read_file(&path), expected, "the next mount uploaded it");
    assert_eq!(
        api.calls("put_object") + api.calls("put_object_from_file"),
        0,
        "an upload was sent"
    );
    assert_eq!(api.calls("complete_multipart"), 0);
}

/// Reproduction of issue 22: overwriting an 8 MiB server file with the cache on a 4 MiB
/// disk left the server with the first 4 MiB.
#[tokio::test]
async fn overwriting_a_server_file_on_a_full_cache_disk_keeps_the_servers_version() {
    full_disk_copy_keeps_the_server_version(false, true).await;
}

#[tokio::test]
async fn a_new_file_that_did_not_fit_on_the_cache_disk_is_not_created() {
    full_disk_copy_keeps_the_server_version(false, false).await;
}

/// With write-back the file stayed pending without a journal record, and the unmount
/// uploaded it truncated.
#[tokio::test]
async fn write_back_journals_and_uploads_nothing_of_content_that_did_not_fit() {
    full_disk_copy_keeps_the_server_version(true, true).await;
}

#[tokio::test]
async fn write_back_of_a_new_file_that_did_not_fit_stores_nothing() {
    full_disk_copy_keeps_the_server_version(true, false).await;
}

/// Every write, `close` and `fsync` of the content fails once a write failed; an open with
/// `O_TRUNC` starts afresh, and what is written then is stored (the failed bytes were freed).
#[tokio::test]
async fn content_that_failed_stays_refused_until_rewritten_from_empty() {
    let disk = SmallDisk::new("4m");
    let api = Arc::new(MemoryCellsApi::default());
    let path = format!("{WS}/doc.bin");
    api.put_file(&path, b"server version");
    let fs = CellsFs::new(api.clone(), options(disk.path(), false))
        .await
        .unwrap();
    let ino = resolve(&fs, &path).await;
    let open = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    let (errno, written) = write_all(&fs, ino, open.fh, &pattern(8 * MIB, 1))
        .await
        .unwrap_err();
    assert_eq!(errno, libc::ENOSPC);
    assert!(written > 0);
    // A later small write, which would fit, is refused: the content has a hole.
    let later = fs
        .write(ino, open.fh, written + 10, b"x")
        .await
        .unwrap_err();
    assert_eq!(later.errno(), libc::ENOSPC);
    assert_eq!(
        fs.fsync(ino, open.fh, false).await.unwrap_err().errno(),
        libc::ENOSPC
    );
    assert_eq!(
        fs.flush(ino, open.fh).await.unwrap_err().errno(),
        libc::ENOSPC
    );
    // A second descriptor opened meanwhile (without O_TRUNC) cannot store it either.
    let other = fs.open(ino, libc::O_RDWR).await.unwrap();
    assert!(fs.flush(ino, other.fh).await.is_err());
    let _ = fs.release(ino, other.fh).await;
    let _ = fs.release(ino, open.fh).await;
    assert_eq!(api.read_file(&path), Some(b"server version".to_vec()));
    // Once closed, the file reads as the server has it.
    let reader = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let read = fs.read(ino, reader.fh, 0, 4096).await.unwrap();
    assert_eq!(&read[..], b"server version");
    fs.release(ino, reader.fh).await.unwrap();
    // Rewritten from empty, with 3 MiB (which fits only if the failed bytes were freed).
    let rewrite = pattern(3 * MIB, 2);
    let (wrote, closed) = cp(&fs, "doc.bin", &rewrite).await;
    assert_eq!((wrote, closed), (None, None));
    assert_eq!(api.read_file(&path), Some(rewrite));
}

/// Opening an existing file for writing copies it into a staging file first: when that copy
/// does not fit, `open` fails with ENOSPC and leaves no partial copy holding the disk.
#[tokio::test]
async fn a_server_file_too_big_to_stage_fails_to_open_and_leaves_no_partial_copy() {
    let disk = SmallDisk::new("4m");
    let api = Arc::new(MemoryCellsApi::default());
    let path = format!("{WS}/big.bin");
    let original = pattern(8 * MIB, 3);
    api.put_file(&path, &original);
    let fs = CellsFs::new(api.clone(), options(disk.path(), false))
        .await
        .unwrap();
    let ino = resolve(&fs, &path).await;
    let opened = fs.open(ino, libc::O_WRONLY | libc::O_APPEND).await;
    assert_eq!(opened.err().map(|e| e.errno()), Some(libc::ENOSPC));
    assert!(
        disk.files_in("staging").is_empty(),
        "a partial copy is left: {:?}",
        disk.files_in("staging")
    );
    fs.sync_all().await.unwrap();
    assert_eq!(api.read_file(&path), Some(original));
}

/// With write-back, content an earlier `close` acknowledged (journaled by its staging file) is
/// uploaded before the file is changed again (see `keep_acknowledged`): a later write that
/// fails for a full disk then loses nothing and leaves nothing half-changed to upload.
#[tokio::test]
async fn write_back_stores_acknowledged_content_before_a_later_write_fails() {
    let disk = SmallDisk::new("4m");
    let api = Arc::new(MemoryCellsApi::default());
    let fs = CellsFs::new(api.clone(), options(disk.path(), true))
        .await
        .unwrap();
    let first = pattern(512 * 1024, 4);
    assert_eq!(cp(&fs, "log.bin", &first).await, (None, None));
    let path = format!("{WS}/log.bin");
    assert_eq!(api.read_file(&path), None, "write-back: not uploaded yet");
    let ino = resolve(&fs, &path).await;
    let open = fs.open(ino, libc::O_WRONLY | libc::O_APPEND).await.unwrap();
    let (errno, _) = write_all(&fs, ino, open.fh, &pattern(8 * MIB, 5))
        .await
        .unwrap_err();
    assert_eq!(errno, libc::ENOSPC);
    assert_eq!(
        api.read_file(&path).as_deref(),
        Some(&first[..]),
        "the acknowledged bytes"
    );
    assert!(fs.flush(ino, open.fh).await.is_err());
    let _ = fs.release(ino, open.fh).await;
    assert!(status_mentions(&fs, "log.bin"));
    fs.sync_all().await.unwrap();
    drop(fs);
    let fs = CellsFs::new(api.clone(), options(disk.path(), true))
        .await
        .unwrap();
    fs.sync_all().await.unwrap();
    assert_eq!(api.read_file(&path).as_deref(), Some(&first[..]));
    assert!(fs.status().recovered_files.is_empty());
}

/// A big new file streams its parts while it is written: when a later write fails, the
/// multipart upload is aborted, never completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_streamed_before_the_disk_filled_are_aborted_not_completed() {
    let disk = SmallDisk::new("14m");
    let api = Arc::new(MemoryCellsApi::default());
    let mut opts = options(disk.path(), false);
    opts.upload_options.multipart_threshold = MIB as u64;
    opts.upload_options.part_size = 10 * MIB as u64;
    let fs = CellsFs::new(api.clone(), opts).await.unwrap();
    let (wrote, closed) = cp(&fs, "stream.bin", &pattern(24 * MIB, 6)).await;
    assert_eq!(wrote, Some(libc::ENOSPC));
    assert!(closed.is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while (api.calls("create_multipart") == 0 || api.unfinished_multipart_uploads() > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(api.calls("create_multipart") >= 1, "no part was streamed");
    assert_eq!(
        api.unfinished_multipart_uploads(),
        0,
        "the upload is left open"
    );
    fs.sync_all().await.unwrap();
    assert_eq!(api.calls("complete_multipart"), 0);
    assert_eq!(api.read_file(&format!("{WS}/stream.bin")), None);
}
