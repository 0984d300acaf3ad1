//! What a `cec mount --daemon` parent hands to the daemon it starts, besides its command
//! line: the readiness pipe (the daemon writes `READY` or `ERROR ...` into it) and the
//! secrets pipe (the `--token`/`--password` given to the parent, which never reach the
//! daemon's command line nor its environment, both readable in `/proc/PID/`).
//!
//! Invariants:
//! - Each pipe is named in the daemon's environment as `FD:INODE`, and the daemon uses the
//!   descriptor only if it is open, a FIFO, and of that inode: a variable naming another
//!   descriptor (a socket of fusermount's, a file) is ignored, never written to nor closed.
//! - The variables are removed from the environment once read, so the daemon's own children
//!   (fusermount, the readiness probe) do not inherit them.
//! - The secrets are read from the pipe to its end, at most [`SECRETS_MAX`] bytes, and only
//!   by the daemon; the command line handed over is checked to hold none of them.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Names the readiness pipe (`FD:INODE`).
pub const READY_FD_ENV: &str = "CEC_MOUNT_READY_FD";
/// Names the secrets pipe (`FD:INODE`).
pub const SECRETS_FD_ENV: &str = "CEC_MOUNT_SECRETS_FD";
/// The environment variables that may hold a secret; never passed to the daemon.
pub const SECRET_ENV: [&str; 2] = ["CEC_TOKEN", "CEC_PASSWORD"];
/// The most bytes of secrets accepted (a pipe holds 64 KiB before a writer would block).
pub const SECRETS_MAX: usize = 32 * 1024;

/// The secrets of the command line, handed over through the secrets pipe.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct Secrets {
    pub token: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Secrets {
    fn values(&self) -> impl Iterator<Item = &str> {
        self.token
            .iter()
            .chain(self.password.iter())
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.values().next().is_none()
    }
}

/// The inode of an open descriptor, if it is a FIFO.
fn fifo_inode(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat only writes into the buffer given; an unknown descriptor is EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    ((st.st_mode & libc::S_IFMT) == libc::S_IFIFO).then_some(st.st_ino as u64)
}

/// `FD:INODE` naming `pipe` for the daemon's environment.
pub fn describe(pipe: &impl AsRawFd) -> anyhow::Result<String> {
    let fd = pipe.as_raw_fd();
    let ino = fifo_inode(fd).ok_or_else(|| anyhow::anyhow!("descriptor {fd} is not a pipe"))?;
    Ok(format!("{fd}:{ino}"))
}

/// Take the pipe named by the variable `name` (and remove the variable). `Ok(None)` when the
/// variable is not set; an error (the descriptor left alone) when it does not name the pipe.
pub fn take(name: &str) -> Result<Option<File>, String> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    // SAFETY: called at the start of `cec mount`, before the runtime or any other thread
    // that could read the environment exists.
    unsafe { std::env::remove_var(name) };
    let value = value.to_string_lossy();
    let parsed = value.split_once(':').and_then(|(fd, ino)| {
        Some((
            fd.trim().parse::<RawFd>().ok()?,
            ino.trim().parse::<u64>().ok()?,
        ))
    });
    let Some((fd, ino)) = parsed else {
        return Err(format!(
            "{name}={value:?} is not FD:INODE (it is set only by `cec mount --daemon`); ignored"
        ));
    };
    if fd <= 2 || fifo_inode(fd) != Some(ino) {
        return Err(format!(
            "{name}={value:?} does not name the pipe `cec mount --daemon` made (descriptor {fd} is not that FIFO); ignored"
        ));
    }
    // SAFETY: checked above to be an open FIFO of the inode the parent named, which it
    // created for this process alone; nothing else here owns it.
    Ok(Some(unsafe { File::from_raw_fd(fd) }))
}

/// In the daemon: the secrets its parent handed over, if any (an error when the variable is
/// set but the pipe is not the one expected or does not hold secrets).
pub fn receive_secrets() -> Result<Option<Secrets>, String> {
    let Some(pipe) = take(SECRETS_FD_ENV)? else {
        return Ok(None);
    };
    let mut text = Vec::new();
    pipe.take(SECRETS_MAX as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read the secrets handed over by `cec mount --daemon`: {e}"))?;
    if text.len() > SECRETS_MAX {
        return Err("the secrets handed over by `cec mount --daemon` are too large".into());
    }
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|_| "the secrets handed over by `cec mount --daemon` are not readable".into())
}

/// In the parent: a pipe whose read end holds `secrets` (written whole, the write end
/// closed), for the daemon to inherit.
pub fn secrets_pipe(secrets: &Secrets) -> anyhow::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    let json = serde_json::to_vec(secrets)?;
    anyhow::ensure!(
        json.len() <= SECRETS_MAX,
        "the token or password is too large ({} bytes)",
        json.len()
    );
    let (read_end, write_end) = cloexec_pipe()?;
    // Fits in the pipe's buffer (64 KiB on Linux, 16 KiB at least elsewhere... checked).
    let mut writer = File::from(write_end);
    writer.write_all(&json)?;
    drop(writer);
    Ok(read_end)
}

/// The daemon's command line: the parent's without `--daemon`/`-d` and without any
/// `--token`/`-t`/`--password` (and their values). Refused when a secret would still be on
/// it (a spelling not recognised here).
pub fn daemon_args(
    args: impl IntoIterator<Item = OsString>,
    secrets: &Secrets,
) -> anyhow::Result<Vec<OsString>> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--daemon" || text == "-d" {
            continue;
        }
        if text == "--token" || text == "-t" || text == "--password" {
            args.next();
            continue;
        }
        if text.starts_with("--token=")
            || text.starts_with("--password=")
            || (text.starts_with("-t") && !text.starts_with("--"))
        {
            continue;
        }
        out.push(arg);
    }
    for arg in &out {
        let text = arg.to_string_lossy();
        if secrets.values().any(|s| text.contains(s)) {
            anyhow::bail!(
                "cannot keep the token or password off the mount daemon's command line (an argument holds it): pass it as CEC_TOKEN/CEC_PASSWORD, --token-file or a stored profile"
            );
        }
    }
    Ok(out)
}

/// A pipe whose both ends are closed on exec: `(read end, write end)`.
pub(crate) fn cloexec_pipe() -> anyhow::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    #[cfg(not(target_os = "macos"))]
    let pair = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
    // macOS has no pipe2: set close-on-exec right after creating the pipe.
    #[cfg(target_os = "macos")]
    let pair = {
        let (read_end, write_end) = nix::unistd::pipe().context("creating a pipe")?;
        for fd in [read_end.as_raw_fd(), write_end.as_raw_fd()] {
            // SAFETY: fcntl on a descriptor we own.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
                return Err(std::io::Error::last_os_error()).context("creating a pipe");
            }
        }
        (read_end, write_end)
    };
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn secrets_and_daemon_flags_leave_the_command_line() {
        let secrets = Secrets {
            token: Some("s3cret".into()),
            password: Some("pw".into()),
        };
        let args = os(&[
            "mount",
            "--daemon",
            "-t",
            "s3cret",
            "/m",
            "--password",
            "pw",
            "--url",
            "http://x",
        ]);
        assert_eq!(
            daemon_args(args, &secrets).unwrap(),
            os(&["mount", "/m", "--url", "http://x"])
        );
        let args = os(&["mount", "-d", "--token=s3cret", "-ts3cret", "/m"]);
        assert_eq!(daemon_args(args, &secrets).unwrap(), os(&["mount", "/m"]));
        // A spelling not recognised: refused rather than leaked.
        let args = os(&["mount", "-dts3cret", "/m"]);
        assert!(daemon_args(args, &secrets).is_err());
    }

    #[test]
    fn a_variable_naming_something_else_than_the_pipe_is_ignored() {
        let file = tempfile::tempfile().unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: tests of this module run in one thread each and use their own names.
        unsafe { std::env::set_var("CEC_TEST_HANDOFF_A", format!("{fd}:1")) };
        assert!(take("CEC_TEST_HANDOFF_A").is_err());
        assert!(
            std::env::var_os("CEC_TEST_HANDOFF_A").is_none(),
            "removed once read"
        );
        // The file is still open: it was not taken.
        assert!(fifo_inode(fd).is_none() && file.metadata().is_ok());

        let (read_end, _write_end) = super::cloexec_pipe().unwrap();
        let good = describe(&read_end).unwrap();
        let (fd, ino) = good.split_once(':').unwrap();
        unsafe {
            std::env::set_var(
                "CEC_TEST_HANDOFF_B",
                format!("{fd}:{}", ino.parse::<u64>().unwrap() + 1),
            )
        };
        assert!(take("CEC_TEST_HANDOFF_B").is_err(), "another inode");
        unsafe { std::env::set_var("CEC_TEST_HANDOFF_C", &good) };
        let taken = take("CEC_TEST_HANDOFF_C").unwrap().expect("the pipe");
        std::mem::forget(read_end); // now owned by `taken`
        drop(taken);
    }
}
