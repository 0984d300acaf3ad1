//! `cec mount --daemon` and readiness. The parent starts this same command again, detached,
//! hands it its secrets through a pipe ([`super::handoff`]) and waits until the child reports
//! that its mount answers, or why it failed ([`spawn_daemon`]); the child reports readiness to
//! that parent and to systemd ([`Readiness`]).
//!
//! Invariants:
//! - The parent reports success only after the child wrote `READY`, which the lifecycle does
//!   only once the mount answers; on a timeout the child is killed and the log's path given.
//! - Secrets never reach the child's environment or argv (`/proc/PID/environ`, `ps`): they go
//!   through the secrets pipe. The daemon's log is 0600.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::control::daemon_log_path;
use super::handoff::{self, READY_FD_ENV, cloexec_pipe};

/// Where readiness goes: systemd's notify socket (if any; Linux only) and the `--daemon`
/// parent's pipe.
pub struct Readiness {
    pipe: Option<std::fs::File>,
}

impl Readiness {
    /// Pick up the parent's pipe from [`READY_FD_ENV`] if it is the pipe it should be (and
    /// forget the variable so children of ours do not inherit it).
    pub fn from_env() -> Readiness {
        let pipe = handoff::take(READY_FD_ENV).unwrap_or_else(|e| {
            eprintln!("cec: {e}");
            None
        });
        Readiness { pipe }
    }

    pub fn is_daemon_child(&self) -> bool {
        self.pipe.is_some()
    }

    /// The mount answers: tell systemd and the parent. A `--daemon` child leaves the parent's
    /// session now, not before: until its mount is in place it stays in the parent's process
    /// group, which is the automounter's when systemd's automount runs `mount.cec` (mount
    /// units share systemd's process group). Outside that group, any look at the folder
    /// while the automount is pending waits for it, and it waits for this very mount.
    pub fn ready(&mut self, mountpoint: &Path) {
        if self.pipe.is_some() {
            let _ = nix::unistd::setsid();
        }
        // Only systemd's status line names the mountpoint (launchd has no readiness protocol).
        #[cfg(not(target_os = "linux"))]
        let _ = mountpoint;
        #[cfg(target_os = "linux")]
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!("mounted at {}", mountpoint.display())),
        ]);
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"READY\n");
        }
    }

    /// Mounting failed: tell the parent why (one line).
    pub fn failed(&mut self, error: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            let line = error.replace('\n', " ");
            let _ = pipe.write_all(format!("ERROR {line}\n").as_bytes());
        }
    }

    pub fn stopping() {
        // No systemd elsewhere (launchd has no readiness protocol).
        #[cfg(target_os = "linux")]
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

/// `--daemon`: start this same command again without `--daemon`, detached (stdin from
/// /dev/null, output to the daemon log, a new session once mounted: see
/// [`Readiness::ready`]), and wait until it reports that the mount answers. Returns the
/// child's pid, or the child's own error message.
pub fn spawn_daemon(
    mountpoint: &Path,
    timeout: Duration,
    secrets: &handoff::Secrets,
) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("locating the cec executable")?;
    let args = handoff::daemon_args(std::env::args_os().skip(1), secrets)?;
    let (read_end, write_end) = cloexec_pipe()?;
    let secrets_pipe = if secrets.is_empty() {
        None
    } else {
        Some(handoff::secrets_pipe(secrets)?)
    };
    let log_path = daemon_log_path(mountpoint)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode_0600()
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let write_raw = write_end.as_raw_fd();
    let secrets_raw = secrets_pipe.as_ref().map(|p| p.as_raw_fd());
    let mut command = std::process::Command::new(exe);
    command
        .args(&args)
        .env(READY_FD_ENV, handoff::describe(&write_end)?)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Secrets never travel in the environment (readable in /proc/PID/environ for the
    // daemon's whole life): the daemon reads them from the secrets pipe.
    for name in handoff::SECRET_ENV {
        command.env_remove(name);
    }
    match &secrets_pipe {
        Some(pipe) => command.env(handoff::SECRETS_FD_ENV, handoff::describe(pipe)?),
        None => command.env_remove(handoff::SECRETS_FD_ENV),
    };
    // SAFETY: only async-signal-safe calls between fork and exec: fcntl.
    unsafe {
        command.pre_exec(move || {
            // Keep the readiness and secrets pipes across exec.
            for fd in std::iter::once(write_raw).chain(secrets_raw) {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().context("starting the mount daemon")?;
    drop(write_end);
    drop(secrets_pipe);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let read_file = std::fs::File::from(read_end);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(read_file).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(timeout) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the mount did not become ready within {timeout:?}; see {}",
                log_path.display()
            );
        }
    };
    if line.trim() == "READY" {
        return Ok(pid);
    }
    let status = child.wait().ok();
    if let Some(message) = line.trim().strip_prefix("ERROR ") {
        bail!("{message}");
    }
    let mut tail = String::new();
    if let Ok(mut f) = std::fs::File::open(&log_path) {
        let _ = f.read_to_string(&mut tail);
    }
    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
    bail!(
        "the mount daemon exited ({}) before the mount was ready; last log lines ({}):\n{}",
        status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into()),
        log_path.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

trait OpenOptionsExt0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl OpenOptionsExt0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}
