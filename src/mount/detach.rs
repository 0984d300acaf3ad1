//! Detaching a mount the platform's way, for the daemon on its way out and for clearing a
//! dead mount before mounting: `umount2` (root), else `fusermount3 -u` on Linux; `unmount(2)`,
//! else `diskutil unmount force` on macOS. (`cec unmount` is stricter: see [`super::unmount()`].)
//!
//! Invariants:
//! - Nothing mounted at the path is not an error (the unmount answers EINVAL and the mount
//!   table no longer lists the path).
//! - A busy mount is detached lazily (Linux) or forced (macOS): used where the daemon itself
//!   leaves, or the mount is dead; a tool's failure comes back with its own words (stderr).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[cfg(not(target_os = "macos"))]
use super::mounts::{absolute, is_mount_point};

/// Detach whatever is mounted at `path` (lazy unmount), as root directly, otherwise through
/// `fusermount3 -u -z`. (macOS: [`macos::force_unmount`].)
#[cfg(not(target_os = "macos"))]
pub fn force_unmount(path: &Path) -> anyhow::Result<()> {
    let target = absolute(path)?;
    match nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EINVAL) if !is_mount_point(&target) => return Ok(()),
        Err(err) => tracing::debug!(error = %err, "umount2 failed; trying fusermount3"),
    }
    let Some(fusermount) = find_fusermount() else {
        bail!(
            "cannot unmount {}: not permitted, and fusermount3 is not installed (Debian: apt install fuse3)",
            target.display()
        );
    };
    let mut command = std::process::Command::new(fusermount);
    command.arg("-u").arg("-z").arg("--").arg(&target);
    run_unmount_command(command, &target, "fusermount3")
}

/// Run a platform's unmount tool (`fusermount3`, `diskutil`) on `target`; its stderr becomes
/// the error.
fn run_unmount_command(
    mut command: std::process::Command,
    target: &Path,
    tool: &str,
) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !output.status.success() {
        bail!(
            "cannot unmount {}: {}",
            target.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Unmount the mount at `path` now: a plain unmount, lazily when busy; through
/// `fusermount3 -u` when not root. Nothing mounted there is not an error. (macOS:
/// [`macos::unmount_now`].)
#[cfg(not(target_os = "macos"))]
pub fn unmount_now(path: &Path) -> anyhow::Result<()> {
    let target = absolute(path)?;
    match nix::mount::umount2(&target, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) if !is_mount_point(&target) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            tracing::warn!(mountpoint = %target.display(), "mount busy (open files or a shell inside?): detaching lazily");
            force_unmount(&target)
        }
        Err(nix::errno::Errno::EPERM) => {
            let Some(fusermount) = find_fusermount() else {
                bail!(
                    "cannot unmount {}: not permitted and fusermount3 is missing",
                    target.display()
                );
            };
            let status = std::process::Command::new(fusermount)
                .arg("-u")
                .arg("--")
                .arg(&target)
                .status()
                .context("running fusermount3 -u")?;
            if status.success() {
                Ok(())
            } else {
                force_unmount(&target)
            }
        }
        Err(err) => bail!("cannot unmount {}: {err}", target.display()),
    }
}

#[cfg(target_os = "macos")]
pub use macos::{force_unmount, unmount_now};

/// `fusermount3` (or `fusermount`) on `PATH`, honouring `FUSERMOUNT_PATH` like fuser does.
pub fn find_fusermount() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("FUSERMOUNT_PATH") {
        let p = PathBuf::from(explicit);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for name in ["fusermount3", "fusermount"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The macOS (macFUSE) side of unmounting. Never compiled or run on macOS by the project's
/// tests (no macOS target is available there; `scripts/check-macos` type-checks it).
#[cfg(target_os = "macos")]
mod macos {
    use super::super::mounts::{absolute, is_mount_point};
    use anyhow::bail;
    use std::path::Path;

    /// Force the unmount (`unmount(2)` with `MNT_FORCE`, allowed to the user who mounted),
    /// else `diskutil unmount force`.
    pub fn force_unmount(path: &Path) -> anyhow::Result<()> {
        let target = absolute(path)?;
        match nix::mount::unmount(&target, nix::mount::MntFlags::MNT_FORCE) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINVAL) if !is_mount_point(&target) => return Ok(()),
            Err(err) => tracing::debug!(error = %err, "unmount failed; trying diskutil"),
        }
        let mut command = std::process::Command::new("/usr/sbin/diskutil");
        command.arg("unmount").arg("force").arg(&target);
        super::run_unmount_command(command, &target, "diskutil unmount force")
    }

    /// A plain `unmount(2)`; forced when busy or refused. Nothing mounted there is not an
    /// error.
    pub fn unmount_now(path: &Path) -> anyhow::Result<()> {
        let target = absolute(path)?;
        match nix::mount::unmount(&target, nix::mount::MntFlags::empty()) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EINVAL) if !is_mount_point(&target) => Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                tracing::warn!(mountpoint = %target.display(), "mount busy (open files or a shell inside?): forcing the unmount");
                force_unmount(&target)
            }
            Err(nix::errno::Errno::EPERM) => force_unmount(&target),
            Err(err) => bail!("cannot unmount {}: {err}", target.display()),
        }
    }
}
