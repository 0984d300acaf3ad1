//! The mountpoint before and after mounting: what is there ([`MountpointState`]: free, an
//! automount trigger, a dead FUSE mount, a live mount, missing, not a folder), making it
//! usable ([`prepare_mountpoint`]: clear a dead mount, refuse a live one, and one that holds
//! files), and knowing that the mount answers ([`wait_until_answers`]). Also what the mount
//! may ask of the kernel: a larger read-ahead, and whether `auto_unmount` is possible.
//!
//! Invariants:
//! - Looking never hangs on a dead FUSE mount and never triggers an automount: `statfs` only
//!   on a FUSE mount, `fstatat(AT_NO_AUTOMOUNT)` otherwise, and the mount table for the rest.
//! - "The mount answers" is a `statfs` that sees the FUSE magic, made in a forked child that
//!   holds none of the daemon's files: the daemon's own threads never wait on its mount, and
//!   a killed daemon's mount is never kept alive by the probe.
//! - A free mountpoint that holds files is refused unless `allow_non_empty` (its files would
//!   hide until the unmount).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::detach::{find_fusermount, force_unmount};
#[cfg(target_os = "linux")]
use super::mounts::mountinfo_entries_at;
use super::mounts::{absolute, is_fuse_mount_point, mount_types_at};

/// `f_type` of a FUSE filesystem in `statfs(2)` (Linux; macOS names the type instead, see
/// [`super::is_macfuse_type`]).
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Whether an errno from `stat`/`statfs` on a FUSE mount means its daemon is gone: ENOTCONN
/// on Linux; macFUSE answers ENXIO ("Device not configured") as well.
fn is_dead_mount_errno(code: i32) -> bool {
    code == libc::ENOTCONN || (cfg!(target_os = "macos") && code == libc::ENXIO)
}

/// Whether `statfs(path)` answers with a FUSE filesystem (the FUSE magic on Linux, a macFUSE
/// type name on macOS), asked in a child process. The daemon probes its own mount: a thread of its
/// own waiting in a request to that mount cannot be interrupted, and a process killed then
/// could never exit (its last thread waits for a mount only the dying process serves). A
/// child's wait ends when the daemon dies: the kernel aborts the mount's requests.
fn statfs_is_fuse_apart(path: &Path) -> nix::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    // Everything the child needs is made before the fork: it only calls statfs and _exit.
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    // SAFETY: the child calls only async-signal-safe functions (statfs, _exit) and touches
    // no lock or allocation of the parent's threads.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            // The child must hold none of the daemon's files: with its copy of the FUSE
            // device open, the mount would outlive a killed daemon and this statfs wait for
            // it forever (and it would hold the cache directory's lock).
            #[cfg(target_os = "linux")]
            unsafe {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
            #[cfg(not(target_os = "linux"))]
            for fd in 3..unsafe { libc::getdtablesize() } {
                unsafe { libc::close(fd) };
            }
            let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
            let code = if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
                2
            } else if statfs_buf_is_fuse(&stat) {
                0
            } else {
                1
            };
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)? {
            nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(true),
            nix::sys::wait::WaitStatus::Exited(_, 1) => Ok(false),
            _ => Err(nix::errno::Errno::EIO),
        },
    }
}

/// The FUSE magic (Linux) or a macFUSE type name (macOS) in a `statfs` result.
fn statfs_buf_is_fuse(stat: &libc::statfs) -> bool {
    #[cfg(target_os = "macos")]
    {
        // No allocation: this runs in a forked child (see `statfs_is_fuse_apart`).
        // SAFETY: `c_char` and `u8` have the same size; the slice is the array itself.
        let name: &[u8] = unsafe {
            std::slice::from_raw_parts(stat.f_fstypename.as_ptr().cast(), stat.f_fstypename.len())
        };
        name.starts_with(b"macfuse") || name.starts_with(b"osxfuse")
    }
    #[cfg(not(target_os = "macos"))]
    {
        #[allow(clippy::unnecessary_cast)] // `f_type` is not i64 on every libc target.
        let kind = stat.f_type as i64;
        kind == FUSE_SUPER_MAGIC
    }
}

/// What a mountpoint looks like before we mount on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountpointState {
    /// An existing directory with nothing mounted on it.
    Free,
    /// A directory with only an automount trigger (`autofs`: what systemd's `.automount`
    /// units and the autofs daemon put there first) mounted on it: the mount goes on top.
    /// It is not looked into: outside the automounter's process group, opening it asks the
    /// automounter to mount it (or waits for the mount it is doing), which may be this one.
    Automount,
    /// A FUSE mount whose daemon is gone ("Transport endpoint is not connected").
    Dead,
    /// A live mount (FUSE or not): refuse to stack on it.
    Mounted,
    Missing,
    NotADirectory,
}

/// Look at a mountpoint without hanging on a dead FUSE mount.
pub fn mountpoint_state(path: &Path) -> MountpointState {
    // `stat` may be answered from the kernel's attribute cache for a moment after the daemon
    // died; `statfs` always asks the daemon, so it tells a dead FUSE mount reliably.
    if is_fuse_mount_point(path) {
        return match nix::sys::statfs::statfs(path) {
            Err(errno) if is_dead_mount_errno(errno as i32) => MountpointState::Dead,
            _ => MountpointState::Mounted,
        };
    }
    match is_directory(path) {
        Err(err) if err.raw_os_error().is_some_and(is_dead_mount_errno) => MountpointState::Dead,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => MountpointState::Missing,
        Err(_) => MountpointState::Dead,
        Ok(false) => MountpointState::NotADirectory,
        Ok(true) => {
            let types = path
                .canonicalize()
                .or_else(|_| absolute(path))
                .map(|canonical| mount_types_at(&canonical))
                .unwrap_or_default();
            if types.is_empty() {
                MountpointState::Free
            } else if types.iter().all(|t| t == "autofs") {
                MountpointState::Automount
            } else {
                MountpointState::Mounted
            }
        }
    }
}

/// Whether `path` (followed if a symlink) is a directory, without asking an automounter to
/// mount it: std's `metadata` is a `statx` without `AT_NO_AUTOMOUNT`, which would.
fn is_directory(path: &Path) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{AT_FDCWD, AtFlags};
        let stat = nix::sys::stat::fstatat(AT_FDCWD, path, AtFlags::AT_NO_AUTOMOUNT)
            .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
        Ok(stat.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::fs::metadata(path).map(|meta| meta.is_dir())
    }
}

/// Refuse a free mountpoint that holds files, unless `allow_non_empty`: the mount would hide
/// them until the unmount (and what was written there while nothing was mounted would seem
/// lost).
fn refuse_files_in(path: &Path, allow_non_empty: bool) -> anyhow::Result<()> {
    if allow_non_empty {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(path)
        .with_context(|| format!("cannot list the mountpoint {}", path.display()))?;
    if let Some(entry) = entries.next() {
        let first = entry.map(|e| e.file_name().to_string_lossy().into_owned());
        bail!(
            "mountpoint {} is not empty (it holds {}): mounting would hide its files until the \
             unmount; empty it, choose an empty folder, or pass --allow-non-empty",
            path.display(),
            first.map_or_else(|_| "entries".to_string(), |name| format!("`{name}`"))
        );
    }
    Ok(())
}

/// Make `path` usable as a mountpoint: clear a dead FUSE mount, refuse a live one, and a free
/// one that holds files unless `allow_non_empty` (see [`refuse_files_in`]).
pub fn prepare_mountpoint(path: &Path, allow_non_empty: bool) -> anyhow::Result<()> {
    match mountpoint_state(path) {
        MountpointState::Free => refuse_files_in(path, allow_non_empty),
        MountpointState::Automount => Ok(()),
        MountpointState::Dead => {
            tracing::warn!(
                mountpoint = %path.display(),
                "a dead mount (Transport endpoint is not connected) was left here; clearing it"
            );
            force_unmount(path)?;
            match mountpoint_state(path) {
                MountpointState::Free => refuse_files_in(path, allow_non_empty),
                MountpointState::Automount => Ok(()),
                other => bail!(
                    "{} still unusable after clearing a dead mount ({other:?})",
                    path.display()
                ),
            }
        }
        MountpointState::Mounted => bail!(
            "{} is already a mount point (another `cec mount`?); unmount it first with `cec unmount {}`",
            path.display(),
            path.display()
        ),
        MountpointState::Missing => bail!(
            "mountpoint {} does not exist (create the directory first)",
            path.display()
        ),
        MountpointState::NotADirectory => bail!("mountpoint {} is not a directory", path.display()),
    }
}

/// What `cec mount --daemon` checks before it forks, so that these errors show at once: a
/// missing folder, not a folder, files in a free one (and a dead mount is cleared). A live
/// mount is left for the daemon to refuse, an automount trigger for it to mount over.
pub fn check_before_daemon(path: &Path, allow_non_empty: bool) -> anyhow::Result<()> {
    match mountpoint_state(path) {
        MountpointState::Free => refuse_files_in(path, allow_non_empty),
        MountpointState::Automount | MountpointState::Mounted => Ok(()),
        MountpointState::Dead | MountpointState::Missing | MountpointState::NotADirectory => {
            prepare_mountpoint(path, allow_non_empty)
        }
    }
}

/// Whether `auto_unmount` can be used: fusermount3 is installed, and we are root or
/// `/etc/fuse.conf` has `user_allow_other` (fuser needs `allow_other`/`allow_root` with it).
pub fn auto_unmount_possible() -> bool {
    // macFUSE has no fusermount3 helper; fuser mounts through its libfuse there.
    if cfg!(target_os = "macos") {
        return false;
    }
    if find_fusermount().is_none() {
        return false;
    }
    nix::unistd::geteuid().is_root()
        || std::fs::read_to_string("/etc/fuse.conf")
            .map(|c| {
                c.lines()
                    .any(|l| l.trim_start().starts_with("user_allow_other"))
            })
            .unwrap_or(false)
}

/// Raise the kernel's read-ahead for the FUSE mount at `path` to `kib` KiB (Linux; needs
/// root: `/sys/class/bdi/<device>/read_ahead_kb`). The kernel offers FUSE its default
/// read-ahead (128 KiB) and caps the mount's at what the filesystem answers, so a read of
/// 256 KiB reached the mount as two requests, each waiting for its own GET. Raised once the
/// mount answers (the kernel applies that cap when it gets the `init` reply). Returns the
/// read-ahead now in force, or why it could not be changed.
pub fn raise_kernel_read_ahead(path: &Path, kib: u32) -> anyhow::Result<u32> {
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (path, kib);
        anyhow::bail!("no per-mount read-ahead setting on this system")
    }
    #[cfg(target_os = "linux")]
    {
        let canonical = absolute(path)?;
        // The last line for the path: the mount on top.
        let device = mountinfo_entries_at(&canonical)
            .pop()
            .and_then(|fields| fields.get(2).cloned())
            .ok_or_else(|| {
                anyhow::anyhow!("{} is not in /proc/self/mountinfo", canonical.display())
            })?;
        let setting = Path::new("/sys/class/bdi")
            .join(&device)
            .join("read_ahead_kb");
        let current: u32 = std::fs::read_to_string(&setting)?.trim().parse()?;
        if current >= kib {
            return Ok(current);
        }
        std::fs::write(&setting, kib.to_string())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", setting.display()))?;
        Ok(kib)
    }
}

/// Wait until a `statfs` through `path` reports a FUSE filesystem (the mount answers).
/// The probe runs on its own thread so a hung mount cannot block the caller past `timeout`.
pub fn wait_until_answers(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let path = path.to_path_buf();
    loop {
        let (tx, rx) = std::sync::mpsc::channel();
        let probe_path = path.clone();
        std::thread::spawn(move || {
            let result = statfs_is_fuse_apart(&probe_path);
            let _ = tx.send(result);
        });
        let remaining = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(remaining) {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) | Ok(Err(_)) => {}
            Err(_) => bail!(
                "the mount at {} did not answer within {:?}",
                path.display(),
                timeout
            ),
        }
        if Instant::now() >= deadline {
            bail!(
                "the mount at {} did not answer within {:?}",
                path.display(),
                timeout
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::mounts::is_mount_point;
    use std::path::PathBuf;

    #[test]
    fn the_readiness_probe_runs_in_a_child_and_tells_fuse_from_other_filesystems() {
        assert_eq!(statfs_is_fuse_apart(Path::new("/")), Ok(false));
        assert_eq!(
            statfs_is_fuse_apart(Path::new("/no/such/folder/here")),
            Err(nix::errno::Errno::EIO)
        );
        // The probe is a child process: this one's threads never wait on the mount.
        let before = std::fs::read_dir("/proc/self/task").unwrap().count();
        statfs_is_fuse_apart(Path::new("/")).unwrap();
        assert_eq!(
            std::fs::read_dir("/proc/self/task").unwrap().count(),
            before
        );
        // And it holds none of this process's files (a FUSE device among them would keep a
        // killed daemon's mount alive): a file open here is closed in the child, whose
        // statfs of its own descriptor's path then fails.
        let file = tempfile::NamedTempFile::new().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(file.as_file());
        let own_fd = PathBuf::from(format!("/proc/self/fd/{fd}"));
        assert_eq!(statfs_is_fuse_apart(&own_fd), Err(nix::errno::Errno::EIO));
        assert!(nix::sys::statfs::statfs(&own_fd).is_ok(), "open here");
    }

    #[test]
    fn a_plain_directory_is_free_and_a_file_is_not_a_mountpoint() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(mountpoint_state(dir.path()), MountpointState::Free);
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(mountpoint_state(&file), MountpointState::NotADirectory);
        assert_eq!(
            mountpoint_state(&dir.path().join("missing")),
            MountpointState::Missing
        );
        #[cfg(target_os = "linux")]
        assert!(is_mount_point(Path::new("/proc")));
        #[cfg(target_os = "macos")]
        assert!(is_mount_point(Path::new("/")));
        assert!(!is_mount_point(dir.path()));
    }
}
