//! Secrets and the `--daemon` handoff (issue 23): `cec mount --daemon` keeps the token and
//! the password off the daemon's command line and out of its environment (both readable in
//! `/proc/PID/`), and the daemon still gets them; `CEC_MOUNT_READY_FD` is used only when it
//! names the pipe `--daemon` made (its removal from the environment once read is a unit test
//! of `mount::handoff`: `/proc/PID/environ` keeps a process's initial environment).

mod mount_common;

use std::time::Duration;

use mount_common::*;

fn daemon_pid(stderr: &str) -> i32 {
    stderr
        .split("daemon pid ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stderr:?}"))
}

fn proc_text(pid: i32, what: &str) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
    String::from_utf8_lossy(&bytes).replace('\0', " ")
}

/// Stop a mount (SIGTERM: it unmounts and exits) and wait for its process to end.
fn stop_mount(mountpoint: &std::path::Path, pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let started = std::time::Instant::now();
    while nix::sys::signal::kill(pid, None).is_ok() && started.elapsed() < Duration::from_secs(60) {
        // A foreground child of ours stays a zombie until waited for: reap it if so.
        let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        std::thread::sleep(Duration::from_millis(50));
    }
    if is_fuse(mountpoint) {
        force_detach(mountpoint);
    }
}

#[test]
fn a_daemon_keeps_no_secret_in_its_command_line_or_environment() {
    // Issue 23: "Hand secrets to the daemon through a pipe or an inherited file descriptor,
    // never argv or the environment."
    let h = Harness::start();
    for (case, on_command_line) in [("argv", true), ("env", false)] {
        let mountpoint = h.new_dir(&format!("daemon-{case}"));
        let mut cmd = h.cec();
        cmd.env_remove("CEC_TOKEN")
            .arg("mount")
            .arg(&mountpoint)
            .arg("--daemon")
            .arg("--cache-dir")
            .arg(h.dir.path().join(format!("cache-{case}")));
        if on_command_line {
            cmd.arg("--token").arg(&h.token);
        } else {
            cmd.env("CEC_TOKEN", &h.token);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "{case}: cec mount --daemon failed: {err}"
        );
        let pid = daemon_pid(&err);
        let cmdline = proc_text(pid, "cmdline");
        let environ = proc_text(pid, "environ");
        // The daemon got the token: it lists the server's workspaces.
        let listed = mountpoint.join("personal-files").is_dir();
        stop_mount(&mountpoint, pid);
        assert!(listed, "{case}: the daemon could not use the token");
        assert!(
            !cmdline.contains(&h.token),
            "{case}: the token is on the daemon's command line: {cmdline}"
        );
        assert!(
            !environ.contains(&h.token),
            "{case}: the token is in the daemon's environment"
        );
    }
}

#[test]
fn a_ready_fd_that_is_not_the_daemon_pipe_is_ignored() {
    // Issue 23: "CEC_MOUNT_READY_FD is trusted as it comes: with another number it wrote
    // into fuser's fusermount3 socket and closed it". Here it names a file opened on fd 3:
    // a foreground mount must neither write into it nor take it for the parent's pipe.
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let h = Harness::start();
    let mountpoint = h.new_dir("readyfd");
    let witness = h.dir.path().join("witness");
    let file = std::fs::File::create(&witness).unwrap();
    let raw = file.as_raw_fd();
    let mut cmd = h.cec();
    cmd.arg("mount")
        .arg(&mountpoint)
        .arg("--cache-dir")
        .arg(h.dir.path().join("cache"))
        .env("CEC_MOUNT_READY_FD", "3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: dup2 only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mounted = {
        let started = std::time::Instant::now();
        loop {
            if is_fuse(&mountpoint) {
                break true;
            }
            if started.elapsed() > Duration::from_secs(30) || child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let written = std::fs::read(&witness).unwrap();
    stop_mount(&mountpoint, child.id() as i32);
    let _ = child.kill();
    // Already reaped by `stop_mount` when it ended there.
    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(mounted, "the mount did not start ({status}): {err}");
    assert!(
        written.is_empty(),
        "the mount wrote {:?} into a descriptor that is not its pipe",
        String::from_utf8_lossy(&written)
    );
    assert!(
        err.contains("CEC_MOUNT_READY_FD"),
        "says it ignored it: {err}"
    );
}

#[test]
fn a_demo_server_accepts_no_fixed_password() {
    // Issue 23: "--demo uses fixed passwords on 127.0.0.1 (another local user listed root's
    // demo files): random credentials per demo".
    let h = Harness::start();
    let mut m = h.mount("demo", &["--demo"]);
    let log = m.log_text();
    let url = log
        .split("demo server at ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no demo URL in {log}"))
        .to_string();
    let http = cec::api::http::build_http_client(false).unwrap();
    let mut accepted = Vec::new();
    for login in ["alice", "bob", "admin"] {
        let password = format!("secret-{login}");
        if h.block_on(cec::auth::oauth::session_login(
            &http, &url, login, &password,
        ))
        .is_ok()
        {
            accepted.push(login);
        }
    }
    m.unmount();
    assert!(
        accepted.is_empty(),
        "fixed passwords accepted for {accepted:?}"
    );
}
