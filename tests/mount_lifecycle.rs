//! The mount's lifecycle for real (FUSE, root): foreground mount and SIGTERM, `--daemon`
//! readiness and failure, `cec unmount`, `cec mount --status`, a dead mount cleared at the
//! next mount, `auto_unmount` after kill -9, an external `umount`, the kernel read-ahead the
//! mount sets for itself.

mod mount_common;

use std::time::Duration;

use mount_common::*;

#[test]
fn foreground_mount_lists_workspaces_and_sigterm_unmounts_cleanly() {
    let h = Harness::start();
    let mut m = h.mount("mnt", &[]);
    let names: Vec<String> = std::fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"personal-files".to_string()), "{names:?}");
    assert!(names.contains(&"common-files".to_string()), "{names:?}");
    assert!(in_mountinfo(&m.path));
    m.unmount();
    assert!(!in_mountinfo(&m.path), "mountinfo still lists the mount");
    assert!(m.log_text().contains("unmounted"), "{}", m.log_text());
}

#[test]
fn status_shows_pending_uploads_cache_and_errors_then_cec_unmount_stops_the_mount() {
    let h = Harness::start();
    let mut m = h.mount("mnt", &["--write-back", "30"]);
    // A write-back upload stays pending for 30 s: the status must show it.
    std::fs::write(h.personal(&m).join("pending.txt"), b"not yet uploaded").unwrap();
    let out = h
        .cec()
        .args(["mount", "--status"])
        .arg(&m.path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("pending uploads: 1"), "{text}");
    assert!(text.contains("personal-files/pending.txt"), "{text}");
    assert!(text.contains("cache:"), "{text}");
    assert!(text.contains("recent errors:"), "{text}");
    assert!(text.contains("write-back 30s"), "{text}");

    // `cec unmount` asks the mount to finish its uploads and exit.
    let out = h.cec().arg("unmount").arg(&m.path).output().unwrap();
    assert!(
        out.status.success(),
        "cec unmount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = m.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}: {}", m.log_text());
    assert!(!in_mountinfo(&m.path));
    // The pending upload was finished before unmounting.
    let node = h
        .block_on(h.api.stat("personal-files/pending.txt"))
        .unwrap()
        .expect("the pending upload reached the server at unmount");
    assert_eq!(node.size, 16);
}

#[test]
fn status_of_a_path_nobody_mounts_fails_clearly() {
    let h = Harness::start();
    let dir = h.new_dir("nothing");
    let out = h
        .cec()
        .args(["mount", "--status"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cec mount answers"), "{err}");
}

#[test]
fn daemon_returns_once_mounted_and_unmount_ends_it() {
    let h = Harness::start();
    let mountpoint = h.new_dir("daemon-mnt");
    let cache = h.dir.path().join("cache");
    let out = h
        .cec()
        .arg("mount")
        .arg(&mountpoint)
        .arg("--daemon")
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "cec mount --daemon failed: {err}");
    // Readiness was reported only once the mount answers: no polling needed here.
    assert!(
        is_fuse(&mountpoint),
        "not mounted when --daemon returned: {err}"
    );
    assert!(mountpoint.join("personal-files").is_dir());
    let pid: i32 = err
        .split("daemon pid ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {err:?}"));
    let out = h.cec().arg("unmount").arg(&mountpoint).output().unwrap();
    if !out.status.success() {
        force_detach(&mountpoint);
        panic!("cec unmount: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!in_mountinfo(&mountpoint));
    eventually(Duration::from_secs(30), "daemon exits", || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
    });
}

#[test]
fn daemon_reports_the_failure_when_the_mount_cannot_start() {
    let h = Harness::start();
    // A server that does not answer: the daemon fails before mounting, and says why.
    let mountpoint = h.new_dir("daemon-bad");
    let out = h
        .cec()
        .env("CEC_URL", "http://127.0.0.1:9")
        .arg("mount")
        .arg(&mountpoint)
        .arg("--daemon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("reach"), "unclear error: {err}");
    assert!(!in_mountinfo(&mountpoint));
    // A missing mountpoint is refused before detaching.
    let out = h
        .cec()
        .arg("mount")
        .arg(h.dir.path().join("missing"))
        .arg("--daemon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn a_dead_mount_is_detected_and_cleared_at_the_next_mount() {
    let h = Harness::start();
    // Without fusermount3 there is no auto_unmount: kill -9 leaves a dead mount.
    let mountpoint = h.new_dir("dead");
    // FUSERMOUNT_PATH pointing nowhere disables auto_unmount for this mount only.
    let mut first = h.mount_with_env(
        &mountpoint,
        &[],
        &[("FUSERMOUNT_PATH", "/nonexistent/fusermount3")],
    );
    first.kill9();
    // The kernel may answer from its attribute cache for a moment (attr TTL): poll.
    eventually(
        Duration::from_secs(5),
        "the mountpoint reports ENOTCONN",
        || matches!(std::fs::read_dir(&mountpoint), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN)),
    );
    let mut m = h.mount_at(&mountpoint, &[]);
    assert!(mountpoint.join("personal-files").is_dir());
    assert!(
        m.log_text().contains("dead mount"),
        "the log should say a dead mount was cleared:\n{}",
        m.log_text()
    );
    m.unmount();
}

#[test]
fn kill_9_with_auto_unmount_leaves_no_dead_mount() {
    let h = Harness::start();
    let mut m = h.mount("auto", &[]);
    assert!(m.path.join("personal-files").is_dir());
    m.kill9();
    eventually(
        Duration::from_secs(10),
        "auto_unmount releases the mountpoint",
        || !in_mountinfo(&m.path),
    );
    assert!(std::fs::metadata(&m.path).is_ok());
}

#[test]
fn an_external_umount_ends_the_mount_process() {
    let h = Harness::start();
    let mut m = h.mount("ext", &[]);
    let out = std::process::Command::new("umount")
        .arg(&m.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = m.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", m.log_text());
}

/// The kernel's read-ahead for the mount is raised to 1 MiB, so a 256 KiB read at a random
/// offset reaches the mount as one request and costs one GET (at the kernel's default of
/// 128 KiB it came in pieces, one after the other, each with its own GET).
#[test]
fn a_large_random_read_costs_one_get() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let h = Harness::start();
    let src = h.dir.path().join("four-mib.src");
    write_pattern(&src, 4 << 20, 3);
    h.block_on(h.api.put_object_from_file(
        "personal-files/four-mib.bin",
        &src,
        4 << 20,
        &cec::api::UploadOptions::default(),
    ))
    .unwrap();
    let mut m = h.mount("mnt", &[]);
    let dev = std::fs::metadata(&m.path).unwrap().dev();
    let setting = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    eventually(Duration::from_secs(5), "read-ahead raised", || {
        std::fs::read_to_string(&setting).is_ok_and(|kb| kb.trim() == "1024")
    });
    let file = std::fs::File::open(h.personal(&m).join("four-mib.bin")).unwrap();
    // A rule adding no latency to every GET of the file counts them.
    let counter = h.state().faults.add_latency(
        cells_emu::faults::RequestMatch::new(Some("GET"), "/io/personal-files/four-mib.bin"),
        Duration::ZERO,
        Some(1000),
    );
    let mut buf = vec![0u8; 256 * 1024];
    file.read_exact_at(&mut buf, 2 << 20).unwrap();
    let expected = std::fs::read(&src).unwrap();
    assert!(
        buf == expected[2 << 20..(2 << 20) + 256 * 1024],
        "bytes read"
    );
    let left = h
        .state()
        .faults
        .rules()
        .into_iter()
        .find(|r| r.id == counter)
        .and_then(|r| r.remaining)
        .unwrap_or(0);
    assert_eq!(1000 - left, 1, "GETs for one 256 KiB read");
    m.unmount();
}
