//! `cec unmount`: unmount a cec mount as umount(8) would, or detach it lazily with `--lazy`,
//! then wait for its daemon to finish (or journal) pending uploads and exit.
//!
//! Invariants:
//! - Acts only on a cec mount (`fuse.cec` in the mount table; any macFUSE mount on macOS)
//!   and never on an automount trigger: `cec unmount` is no general umount.
//! - Never pretends: a busy mount is refused as umount(8) refuses it, naming the processes
//!   that hold it ([`super::holders`]); `--lazy` detaches and says that the daemon lives on
//!   until the last user leaves; a daemon still busy after the timeout is reported, not killed.

use std::path::Path;
use std::time::{Duration, Instant};

#[cfg(not(target_os = "macos"))]
use anyhow::Context;
use anyhow::{anyhow, bail};

use super::control::{daemon_log_path, query_status};
#[cfg(not(target_os = "macos"))]
use super::detach::find_fusermount;
use super::detach::force_unmount;
use super::holders;
use super::mountpoint::{MountpointState, mountpoint_state};
use super::mounts::{absolute, is_mount_point};
#[cfg(target_os = "macos")]
use super::mounts::{is_macfuse_type, mount_types_at};
#[cfg(not(target_os = "macos"))]
use super::mounts::{mountinfo_entries_at, unescape_mountinfo};

/// What `cec unmount` did.
#[derive(Debug)]
pub enum Unmounted {
    /// Unmounted; the daemon (when one answered) finished its uploads and exited.
    Done { daemon_pid: Option<u32> },
    /// A dead mount (its daemon gone) was cleared.
    DeadCleared,
    /// Detached lazily (`--lazy`): gone from the tree, while the daemon serves the processes
    /// still using it and exits once the last one leaves.
    Detached {
        daemon_pid: Option<u32>,
        holders: Vec<holders::Holder>,
    },
}

impl Unmounted {
    /// What to tell the user (one or more lines).
    pub fn describe(&self, mountpoint: &Path) -> String {
        let mp = mountpoint.display();
        match self {
            Unmounted::Done { .. } => format!("unmounted {mp}"),
            Unmounted::DeadCleared => {
                format!("cleared the dead mount at {mp} (its daemon was gone)")
            }
            Unmounted::Detached {
                daemon_pid,
                holders,
            } => {
                let daemon = daemon_pid.map_or_else(
                    || "the mount's daemon".to_string(),
                    |pid| format!("the daemon (pid {pid})"),
                );
                let mut text = format!(
                    "detached {mp} lazily: it is gone from the tree, but {daemon} keeps serving \
                     the processes still using it, finishes pending uploads and exits when the \
                     last of them leaves"
                );
                if holders.is_empty() {
                    text.push_str(" (none found: it should exit at once)");
                } else {
                    text.push_str("; still using it:");
                    for holder in holders {
                        text.push_str(&format!("\n  {holder}"));
                    }
                }
                text
            }
        }
    }
}

/// `cec unmount`: unmount the cec mount at `mountpoint` as umount(8) does (refused while
/// busy, naming the processes that hold it), or detach it lazily with `lazy`; then wait (at
/// most `timeout`) for its daemon to finish pending uploads and exit. Refuses a mountpoint
/// where something other than cec is mounted.
pub fn unmount(mountpoint: &Path, timeout: Duration, lazy: bool) -> anyhow::Result<Unmounted> {
    let target = absolute(mountpoint)?;
    let state = mountpoint_state(&target);
    if state == MountpointState::Automount {
        // Detaching the trigger would end the automount until systemd sets it up again.
        bail!(
            "{} is not mounted (only its automount trigger is there)",
            mountpoint.display()
        );
    }
    if !is_mount_point(&target) && state != MountpointState::Dead {
        bail!("{} is not mounted", mountpoint.display());
    }
    refuse_foreign_mount(&target)?;
    if state == MountpointState::Dead {
        force_unmount(&target)?;
        return Ok(Unmounted::DeadCleared);
    }
    let daemon_pid = query_status(&target).ok().map(|status| status.pid);
    if lazy {
        let holders = holders::holders(&target);
        force_unmount(&target)?;
        return Ok(Unmounted::Detached {
            daemon_pid,
            holders,
        });
    }
    unmount_strict(&target)?;
    // Unmounted: the daemon now finishes (or journals) pending uploads, then exits.
    if let Some(pid) = daemon_pid {
        let deadline = Instant::now() + timeout;
        while process_alive(pid) {
            if Instant::now() >= deadline {
                bail!(
                    "{} is unmounted, but its daemon (pid {pid}) is still finishing pending \
                     uploads after {timeout:?}; it goes on (its log: {})",
                    mountpoint.display(),
                    daemon_log_path(mountpoint)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "its standard error".into())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(Unmounted::Done { daemon_pid })
}

/// Refuse to act on a mount that is not cec's (a tmpfs, a disk, another FUSE filesystem):
/// `cec unmount` is no general umount. cec mounts with `subtype=cec`, so the kernel lists
/// them as `fuse.cec` (macFUSE has no subtype: any macFUSE mount is accepted there).
fn refuse_foreign_mount(target: &Path) -> anyhow::Result<()> {
    #[cfg(target_os = "macos")]
    {
        let types = mount_types_at(target);
        match types.last() {
            Some(fstype) if !is_macfuse_type(fstype) => bail!(
                "{} is not a cec mount (a {fstype} filesystem is mounted there): `cec unmount` \
                 unmounts only cec mounts; use umount(8) for others",
                target.display()
            ),
            _ => Ok(()),
        }
    }
    #[cfg(not(target_os = "macos"))]
    {
        // The last line for the path is the mount on top, the one an unmount would remove.
        let Some(fields) = mountinfo_entries_at(target).pop() else {
            return Ok(());
        };
        let sep = fields.iter().position(|f| f == "-");
        let fstype = sep
            .and_then(|i| fields.get(i + 1))
            .map_or("?", String::as_str);
        let source = sep
            .and_then(|i| fields.get(i + 2))
            .map_or("?", String::as_str);
        if fstype != "fuse.cec" {
            bail!(
                "{} is not a cec mount ({fstype} filesystem from {}): `cec unmount` unmounts \
                 only cec mounts; use umount(8) for others",
                target.display(),
                unescape_mountinfo(source)
            );
        }
        Ok(())
    }
}

/// Unmount `target` now, or fail as umount(8) does when it is busy, naming who holds it.
fn unmount_strict(target: &Path) -> anyhow::Result<()> {
    #[cfg(target_os = "macos")]
    let result = nix::mount::unmount(target, nix::mount::MntFlags::empty());
    #[cfg(not(target_os = "macos"))]
    let result = nix::mount::umount2(target, nix::mount::MntFlags::empty());
    match result {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(busy_error(target)),
        #[cfg(not(target_os = "macos"))]
        Err(nix::errno::Errno::EPERM) => {
            let Some(fusermount) = find_fusermount() else {
                bail!(
                    "cannot unmount {}: not permitted, and fusermount3 is not installed \
                     (Debian: apt install fuse3)",
                    target.display()
                );
            };
            let output = std::process::Command::new(fusermount)
                .arg("-u")
                .arg("--")
                .arg(target)
                .output()
                .context("running fusermount3 -u")?;
            if output.status.success() {
                return Ok(());
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.to_lowercase().contains("busy") {
                return Err(busy_error(target));
            }
            bail!("cannot unmount {}: {}", target.display(), stderr.trim())
        }
        Err(err) => bail!("cannot unmount {}: {err}", target.display()),
    }
}

/// "target is busy", with the processes that hold the mount and what to do.
fn busy_error(target: &Path) -> anyhow::Error {
    let mp = target.display();
    let holders = holders::holders(target);
    let mut text = format!("cannot unmount {mp}: target is busy");
    if holders.is_empty() {
        text.push_str(if nix::unistd::geteuid().is_root() {
            " (no process found using it: a mount inside it?)"
        } else {
            " (none of your processes uses it: another user's may)"
        });
    } else {
        text.push_str("; in use by:");
        for holder in &holders {
            text.push_str(&format!("\n  {holder}"));
        }
    }
    text.push_str(&format!(
        "\nClose those files or leave the folder, then try again; or `cec unmount --lazy {mp}` \
         detaches it now and lets the mount finish when they are done"
    ));
    anyhow!(text)
}

/// Whether process `pid` still runs (a zombie does not: its files are closed, its locks
/// released).
fn process_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name, which is in parentheses.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let raw = i32::try_from(pid).unwrap_or(i32::MAX);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_ok()
    }
}
