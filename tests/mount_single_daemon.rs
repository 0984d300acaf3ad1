//! One daemon per cache directory, and an unmount that tells the truth (issue 22), for real
//! (FUSE, root): a second mount on a cache directory in use is refused naming the holder;
//! `cec unmount` of a busy mount fails and names who holds it; `--lazy` detaches and the
//! daemon exits when the last user leaves, without deleting the control socket of the mount
//! made there since; `cec unmount` leaves a mount that is not cec's alone; the cache
//! directory is created 0700 whatever the umask, and one that is not private is refused;
//! two `--demo` mounts have their own data and cache.

mod mount_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use mount_common::*;

/// A helper process, killed when the test ends (even when it panics).
struct Holder(Child);

impl Holder {
    /// `sleep` with its current directory in `dir`.
    fn cwd_in(dir: &Path) -> Holder {
        Holder(
            Command::new("sleep")
                .arg("600")
                .current_dir(dir)
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `cec mount --daemon` started by a test: stopped and its mount detached at the end.
struct Daemon {
    pid: i32,
    mountpoint: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = kill(pid, Signal::SIGTERM);
        for _ in 0..200 {
            if kill(pid, None).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(pid, Signal::SIGKILL);
        force_detach(&self.mountpoint);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `cec mount MOUNTPOINT --daemon ARGS`; on success the daemon is stopped at the end of the
/// test.
fn mount_daemon(cmd: &mut Command, mountpoint: &Path, args: &[&str]) -> (Output, Option<Daemon>) {
    let out = cmd
        .arg("mount")
        .arg(mountpoint)
        .arg("--daemon")
        .args(args)
        .output()
        .unwrap();
    let daemon = out.status.success().then(|| {
        let err = stderr(&out);
        let pid = err
            .split("daemon pid ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {err:?}"));
        Daemon {
            pid,
            mountpoint: mountpoint.to_path_buf(),
        }
    });
    (out, daemon)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn status_text(h: &Harness, mountpoint: &Path) -> String {
    let out = h.mount_status(mountpoint);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_second_mount_on_a_cache_dir_in_use_is_refused_naming_the_holder() {
    let h = Harness::start();
    let first = h.mount("first", &[]);
    let second = h.new_dir("second");
    let cache = h.dir.path().join("cache");
    let (out, daemon) = mount_daemon(
        &mut h.cec(),
        &second,
        &["--cache-dir", cache.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert!(
        daemon.is_none(),
        "a second daemon was started on the cache directory in use: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.pid()))
            && err.contains(&first.path.display().to_string())
            && err.contains("in use by another cec mount"),
        "the refusal should name the holder (pid, mountpoint): {err}"
    );
    assert!(!in_mountinfo(&second));
    // The first mount is untouched.
    assert!(first.path.join("personal-files").is_dir());
}

#[test]
fn unmount_of_a_busy_mount_fails_naming_the_holders_and_keeps_the_mount() {
    let h = Harness::start();
    let mut m = h.mount("mnt", &[]);
    let dir = h.personal(&m);
    std::fs::write(dir.join("kept.txt"), b"still here").unwrap();
    let holder = Holder::cwd_in(&dir);
    let out = h.cec().arg("unmount").arg(&m.path).output().unwrap();
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "`cec unmount` of a busy mount reported success: {err}"
    );
    assert!(err.contains("target is busy"), "{err}");
    assert!(
        err.contains(&format!("pid {} (sleep): current directory", holder.pid())),
        "the holder should be named: {err}"
    );
    assert!(err.contains("--lazy"), "{err}");
    // Nothing was detached: the mount still serves, at its place.
    assert!(in_mountinfo(&m.path) && m.is_running());
    assert_eq!(std::fs::read(dir.join("kept.txt")).unwrap(), b"still here");

    drop(holder);
    let out = h.cec().arg("unmount").arg(&m.path).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("unmounted"), "{}", stderr(&out));
    // `cec unmount` returned once the daemon had finished: it is gone already.
    let status = m.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}: {}", m.log_text());
    assert!(!in_mountinfo(&m.path));
}

#[test]
fn lazy_unmount_detaches_and_the_daemon_finishes_when_the_last_user_leaves() {
    let h = Harness::start();
    let mut m = h.mount("mnt", &["--write-back", "30"]);
    let old_pid = m.pid();
    let dir = h.personal(&m);
    // Pending for 30 s: the detached daemon must still upload it before it exits.
    std::fs::write(dir.join("late.txt"), b"written before the detach").unwrap();
    let holder = Holder::cwd_in(&dir);

    let out = h
        .cec()
        .args(["unmount", "--lazy"])
        .arg(&m.path)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "cec unmount --lazy: {err}");
    assert!(
        err.contains("detached") && err.contains(&format!("daemon (pid {old_pid})")),
        "--lazy should say it detached, and which daemon lives on: {err}"
    );
    assert!(
        err.contains("finishes pending uploads and exits when the last of them leaves"),
        "--lazy should say when the daemon exits: {err}"
    );
    assert!(
        err.contains(&format!("pid {} (sleep)", holder.pid())),
        "--lazy should name who still uses the mount: {err}"
    );
    assert!(!in_mountinfo(&m.path), "still in the tree after --lazy");
    assert!(m.is_running(), "the daemon serves its last user");

    // While it lives, its cache directory is its own.
    let other = h.new_dir("other");
    let cache = h.dir.path().join("cache");
    let (out, _daemon) = mount_daemon(
        &mut h.cec(),
        &other,
        &["--cache-dir", cache.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("pid {old_pid}")),
        "{}",
        stderr(&out)
    );

    // A new mount at the same place, with its own cache, owns the control socket there...
    let mut m2 = h.mount_with_cache_dir(&m.path.clone(), &h.dir.path().join("cache2"), &[]);
    let new_pid = m2.pid();
    let text = status_text(&h, &m2.path);
    assert!(
        text.contains(&format!("pid:             {new_pid}")),
        "{text}"
    );

    // ... and keeps it when the detached daemon exits, once its last user left.
    drop(holder);
    let status = m.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}: {}", m.log_text());
    let text = status_text(&h, &m2.path);
    assert!(
        text.contains(&format!("pid:             {new_pid}")),
        "the old daemon's exit took the new mount's control socket away: {text}"
    );
    let node = h
        .block_on(h.api.stat("personal-files/late.txt"))
        .unwrap()
        .expect("the detached daemon uploaded what was pending before exiting");
    assert_eq!(node.size, 25);
    m2.unmount();
}

#[test]
fn unmount_refuses_a_mount_that_is_not_cec() {
    let h = Harness::start();
    let dir = h.new_dir("tmpfs");
    nix::mount::mount(
        Some("cec-test-tmpfs"),
        &dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            force_detach(&self.0);
        }
    }
    let _guard = Unmount(dir.clone());
    std::fs::write(dir.join("data.txt"), b"not cec's").unwrap();
    let out = h.cec().arg("unmount").arg(&dir).output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "cec unmount detached a tmpfs: {err}");
    assert!(
        err.contains("not a cec mount") && err.contains("tmpfs"),
        "{err}"
    );
    assert!(in_mountinfo(&dir));
    assert_eq!(std::fs::read(dir.join("data.txt")).unwrap(), b"not cec's");
}

#[test]
fn the_cache_dir_is_created_0700_whatever_the_umask_and_must_be_private() {
    let h = Harness::start();
    let mountpoint = h.new_dir("mnt");
    let base = h.dir.path().join("deep");
    let cache = base.join("a/cache");
    let mut cmd = h.cec();
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let (out, daemon) = mount_daemon(
        &mut cmd,
        &mountpoint,
        &["--cache-dir", cache.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for dir in [&base, &base.join("a"), &cache] {
        assert_eq!(mode(dir), 0o700, "{} (umask 0)", dir.display());
    }
    assert_eq!(mode(&cache.join("mount.lock")), 0o600);
    let out = h.cec().arg("unmount").arg(&mountpoint).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    drop(daemon);

    // One that others may write to is refused, with what to do; it is left as it was.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (out, _daemon) = mount_daemon(
        &mut h.cec(),
        &mountpoint,
        &["--cache-dir", cache.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("chmod 700"), "{err}");
    assert_eq!(mode(&cache), 0o777);
    assert!(!in_mountinfo(&mountpoint));

    // One that another user owns too.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&cache, Some(nix::unistd::Uid::from_raw(4321)), None).unwrap();
    let (out, _daemon) = mount_daemon(
        &mut h.cec(),
        &mountpoint,
        &["--cache-dir", cache.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("uid 4321"), "{err}");
    assert!(!in_mountinfo(&mountpoint));

    // Ours and only readable by others (what older versions made): tightened, and used.
    nix::unistd::chown(&cache, Some(nix::unistd::geteuid()), None).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (out, daemon) = mount_daemon(
        &mut h.cec(),
        &mountpoint,
        &["--cache-dir", cache.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&cache), 0o700);
    let out = h.cec().arg("unmount").arg(&mountpoint).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    drop(daemon);
}

#[test]
fn two_demo_mounts_have_their_own_private_data_and_cache() {
    let h = Harness::start();
    let xdg = h.dir.path().join("xdg-cache");
    let demo = |name: &str| {
        let mountpoint = h.new_dir(name);
        let mut cmd = h.cec();
        cmd.env("XDG_CACHE_HOME", &xdg).env("HOME", h.dir.path());
        cmd.env_remove("CEC_LOG");
        let (out, daemon) = mount_daemon(&mut cmd, &mountpoint, &["--demo"]);
        assert!(out.status.success(), "cec mount --demo: {}", stderr(&out));
        let err = stderr(&out);
        let log = err
            .split(", log ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no log path in {err:?}"));
        (mountpoint, daemon, log)
    };
    let (a, _da, log_a) = demo("demo-a");
    let (b, _db, _) = demo("demo-b");
    std::fs::write(a.join("personal-files/only-in-a.txt"), b"a").unwrap();
    assert!(a.join("personal-files/only-in-a.txt").exists());
    // The embedded emulator's one line per request is for its own server's log, not for a
    // demo's terminal (shown from CEC_LOG=debug on).
    let log = std::fs::read_to_string(&log_a).unwrap();
    assert!(log.contains("mounted"), "{log}");
    assert!(
        !log.contains("REST request"),
        "request lines in the demo's log:\n{log}"
    );
    assert!(
        !b.join("personal-files/only-in-a.txt").exists(),
        "the second demo sees the first one's data"
    );
    let root = xdg.join("cec/demo");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        dirs.len(),
        2,
        "one folder per demo in {}: {dirs:?}",
        root.display()
    );
    for dir in &dirs {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        for sub in ["server", "cache"] {
            assert_eq!(mode(&dir.join(sub)), 0o700, "{}/{sub}", dir.display());
        }
    }
    for mp in [&a, &b] {
        let out = h.cec().arg("unmount").arg(mp).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}
