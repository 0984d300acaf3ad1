//! A server that stops answering under a mount (cells-emu's "stall" fault: a paused server
//! that accepts connections and answers nothing), as docs/SEMANTICS.md says in "When the
//! server stops answering": "an error in bounded time, never a hang"; lookups, `stat` and
//! listings whose cache expired are "answered from what the mount last knew"; "Content in
//! the data cache reads as usual; other content fails with `EIO` after `--transfer-timeout`";
//! "in the default mode `close` fails with `EIO` once the upload times out, and the data is
//! kept in `<cache-dir>/recovery/`".
//!
//! Each wait on the mount runs in its own thread, bounded far above the deadlines the mount is
//! given (3 s): past the bound the mount's FUSE connection is aborted so the test fails
//! instead of hanging (a process in a FUSE request cannot be killed).

mod mount_common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cec::api::UploadOptions;
use cells_emu::faults::RequestMatch;
use mount_common::*;

/// Deadlines short enough for a test: 3 s per request, 3 s of waiting per transfer.
const SHORT_DEADLINES: [&str; 4] = ["--request-timeout", "3s", "--transfer-timeout", "3s"];
/// How long a wait may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(60);

/// Run `op` in a thread; if it has not returned within `limit`, abort the mount's FUSE
/// connection (which unblocks it) and fail. Returns the result and how long it took.
fn bounded<T: Send + 'static>(
    m: &Mounted,
    limit: Duration,
    what: &str,
    op: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(op());
    });
    match rx.recv_timeout(limit) {
        Ok(result) => (result, started.elapsed()),
        Err(_) => {
            m.abort_connection();
            panic!(
                "{what}: still waiting after {limit:?} (a hang)\n{}",
                m.log_text()
            );
        }
    }
}

fn put(h: &Harness, path: &str, content: &'static [u8]) {
    h.block_on(h.api.put_object(
        path,
        bytes::Bytes::from_static(content),
        &UploadOptions::default(),
    ))
    .unwrap();
}

/// Drop the kernel's cached pages of `path`, so that a read reaches the mount.
fn drop_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

fn errno_of<T: std::fmt::Debug>(result: std::io::Result<T>) -> i32 {
    result
        .expect_err("must fail while the server is paused")
        .raw_os_error()
        .unwrap_or_default()
}

#[test]
fn while_the_server_is_paused_expired_entries_answer_from_the_cache_and_unknown_ones_fail_in_time()
{
    let h = Harness::start();
    put(&h, "personal-files/known.txt", b"known content");
    let mut args = SHORT_DEADLINES.to_vec();
    args.extend([
        "--no-events",
        "--attr-timeout",
        "1s",
        "--dir-cache-time",
        "1s",
    ]);
    let m = h.mount("mnt", &args);
    let dir = h.personal(&m);
    let known = dir.join("known.txt");
    // Listed, stat'ed and read once: the metadata and the data cache know it.
    assert!(
        std::fs::read_dir(&dir)
            .unwrap()
            .any(|e| e.unwrap().file_name() == "known.txt")
    );
    assert_eq!(std::fs::read(&known).unwrap(), b"known content");
    // Every TTL expires (1 s), then the server stops answering.
    std::thread::sleep(Duration::from_millis(1500));
    h.pause_server();

    let p = known.clone();
    let (meta, took) = bounded(&m, HANG, "stat of a known file", move || {
        std::fs::metadata(&p)
    });
    let meta = meta.unwrap_or_else(|e| panic!("stat of a cached file failed: {e}"));
    assert_eq!(meta.len(), 13);
    assert!(took < Duration::from_secs(30), "{took:?}");

    // Answered from the cache now, without waiting for a deadline each time.
    let d = dir.clone();
    let (names, _) = bounded(&m, HANG, "listing", move || {
        std::fs::read_dir(&d).map(|r| {
            r.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(names.unwrap(), vec!["known.txt".to_string()]);
    drop_page_cache(&known);
    let p = known.clone();
    let (content, _) = bounded(&m, HANG, "read of cached content", move || {
        std::fs::read(&p)
    });
    assert_eq!(content.unwrap(), b"known content");

    // A name the mount never saw (in a folder never listed): an error, in bounded time.
    let unknown = m.path.join("common-files").join("never-seen.txt");
    let (result, took) = bounded(&m, HANG, "stat of an unknown name", move || {
        std::fs::metadata(&unknown)
    });
    assert_eq!(errno_of(result), libc::EIO);
    assert!(took < Duration::from_secs(30), "{took:?}");

    // Said once in the log, and once that it is over when the server answers again.
    h.state().faults.clear();
    put(&h, "personal-files/later.txt", b"after the pause");
    let later = dir.join("later.txt");
    eventually(
        Duration::from_secs(30),
        "the server's answers are used again",
        || std::fs::read(&later).is_ok_and(|c| c == b"after the pause"),
    );
    let log = m.log_text();
    assert_eq!(
        log.matches("the server does not answer").count(),
        1,
        "one warning per outage:\n{log}"
    );
    assert!(log.contains("the server answers again"), "{log}");
}

#[test]
fn a_read_whose_server_stalls_mid_transfer_fails_instead_of_hanging() {
    let h = Harness::start();
    let source = h.dir.path().join("big.src");
    write_pattern(&source, 32 << 20, 11);
    h.block_on(h.api.put_object_from_file(
        "personal-files/big.bin",
        &source,
        32 << 20,
        &UploadOptions::default(),
    ))
    .unwrap();
    let mut args = SHORT_DEADLINES.to_vec();
    args.extend(["--cache-size", "0"]);
    let m = h.mount("mnt", &args);
    let big = h.personal(&m).join("big.bin");
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 32 << 20);
    // The server sends 3 MiB more of the file (in the read-ahead's first GETs), then pauses:
    // the GET under way stops mid-body and the next ones get no answer.
    h.state()
        .faults
        .stall(RequestMatch::new(Some("GET"), "/io/"), Some(3 << 20), None);
    let (result, took) = bounded(&m, HANG, "cat of a stalling file", move || {
        let mut f = std::fs::File::open(&big)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match f.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    assert_eq!(errno_of(result), libc::EIO);
    assert!(took < Duration::from_secs(45), "{took:?}");
    h.state().faults.clear();
}

#[test]
fn a_file_closed_while_the_server_is_paused_fails_in_time_and_is_kept() {
    let h = Harness::start();
    let m = h.mount("mnt", &SHORT_DEADLINES);
    let dir = h.personal(&m);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    h.pause_server();
    let p = dir.join("written-while-paused.txt");
    let (result, took) = bounded(&m, HANG, "write and close", move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&p)?;
        f.write_all(b"kept locally")?;
        // Close explicitly: dropping a File ignores what close says.
        let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
        match unsafe { libc::close(fd) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    });
    assert_eq!(errno_of(result), libc::EIO);
    assert!(took < Duration::from_secs(45), "{took:?}");
    let recovered: Vec<PathBuf> = walk(&h.dir.path().join("cache").join("recovery"));
    assert!(
        recovered
            .iter()
            .any(|f| std::fs::read(f).is_ok_and(|c| c == b"kept locally")),
        "the data is not in the recovery folder: {recovered:?}\n{}",
        m.log_text()
    );
    h.state().faults.clear();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
