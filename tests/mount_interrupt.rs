//! Ctrl-C reaches a process waiting on the mount (docs/SEMANTICS.md, "Interrupting"): with the
//! server paused (cells-emu's stall fault) and deadlines far away (120 s), a `stat`, a `cat`
//! and an `ls` that wait on the server end at once on SIGINT, as on a local filesystem,
//! instead of waiting for the deadline; the mount works as before once the server is back.
//!
//! Each process is bounded far below the deadlines: past the bound the mount's FUSE connection
//! is aborted so the test fails instead of hanging (a process in a FUSE request cannot be
//! killed while the mount ignores interrupts).

mod mount_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cec::api::UploadOptions;
use mount_common::*;

/// Deadlines far beyond the bound below: only the interrupt can end the wait in time.
const LONG_DEADLINES: [&str; 4] = ["--request-timeout", "120s", "--transfer-timeout", "120s"];
/// How long an interrupted process may take to end before the test calls it a hang.
const BOUND: Duration = Duration::from_secs(30);

/// Start `program args` on the mount, let it reach the server (it waits there), send SIGINT,
/// and return how it ended. Fails the test (aborting the connection) if it does not end
/// within [`BOUND`] of the signal, or if it ended before the signal (it did not wait).
fn interrupted(m: &Mounted, program: &str, args: &[&Path]) -> std::process::ExitStatus {
    let mut child: Child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "{program} ended before the signal: it never waited on the paused server"
    );
    let signalled = Instant::now();
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if signalled.elapsed() > BOUND {
            m.abort_connection();
            let _ = child.wait();
            panic!(
                "{program} still waits {BOUND:?} after Ctrl-C (the interrupt was not answered)\n{}",
                m.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ended_by_sigint(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGINT)
}

#[test]
fn ctrl_c_ends_a_stat_a_cat_and_an_ls_that_wait_on_a_paused_server() {
    let h = Harness::start();
    h.block_on(h.api.put_object(
        "personal-files/big.bin",
        bytes::Bytes::from(vec![7u8; 4 << 20]),
        &UploadOptions::default(),
    ))
    .unwrap();
    let mut args = LONG_DEADLINES.to_vec();
    args.extend(["--no-events", "--attr-timeout", "600s"]);
    let m = h.mount("mnt", &args);
    let dir = h.personal(&m);
    let file = dir.join("big.bin");
    let common = m.path.join("common-files");
    // Known to the mount (so that only the read and the listing wait), never read or listed.
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 4 << 20);
    assert!(std::fs::metadata(&common).unwrap().is_dir());

    h.pause_server();
    let status = interrupted(&m, "stat", &[&dir.join("never-seen.txt")]);
    assert!(ended_by_sigint(status), "stat: {status:?}");
    let status = interrupted(&m, "cat", &[&file]);
    assert!(ended_by_sigint(status), "cat: {status:?}");
    let status = interrupted(&m, "ls", &[&common]);
    assert!(ended_by_sigint(status), "ls: {status:?}");

    // The interrupted work finishes on its own; the mount answers as before once the server
    // is back, and the interrupted lookup left no entry the kernel does not know of.
    h.state().faults.clear();
    eventually(Duration::from_secs(60), "the mount answers again", || {
        std::fs::read(&file).is_ok_and(|c| c.len() == 4 << 20)
    });
    assert!(
        std::fs::read_dir(&common).is_ok(),
        "listing after the outage"
    );
    assert_eq!(
        std::fs::metadata(dir.join("never-seen.txt"))
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::NotFound
    );
}
