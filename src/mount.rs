//! The mount's lifecycle, around the filesystem core and the kernel adapter: prepare the
//! mountpoint (clear a dead mount left by a crash), mount, wait until the mount answers,
//! report readiness (to systemd, and to the parent process of `--daemon`), serve the control
//! socket of `cec mount --status`, and on SIGINT/SIGTERM, `cec unmount` or an external
//! `umount`, finish or journal pending uploads and unmount cleanly.
//!
//! Invariants:
//! - "Ready" is announced only after a `statfs` through the mountpoint answered with the FUSE
//!   magic: a `--daemon` parent never reports success for a mount that does not work.
//! - A mount that this process made is unmounted by this process on every exit path it
//!   controls (signals, control socket, errors after mounting); `auto_unmount` (fusermount3)
//!   covers the paths it does not (SIGKILL, panics).
//! - The control socket lives in a 0700 directory owned by the user and answers only status
//!   and unmount requests; it never carries a secret. The mount now at a mountpoint owns its
//!   socket path: it takes the path over from a detached mount, and a daemon removes the
//!   socket at exit only if the path is still its own socket (same device and inode).
//! - One daemon per cache directory ([`cache_dir::CacheLock`], held from before the journal
//!   is replayed until the process exits); the cache directory is the user's, 0700.
//! - `cec unmount` acts only on a cec mount, and never pretends: on a busy mount it fails
//!   as umount(8) does and names the processes that hold it ([`holders`]); `--lazy`
//!   detaches and says that the daemon lives on until the last user leaves.

pub mod cache_dir;
pub mod handoff;
pub mod holders;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// `f_type` of a FUSE filesystem in `statfs(2)` (Linux; macOS names the type instead, see
/// [`is_macfuse_type`]).
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Whether an `f_fstypename` (macOS) names a macFUSE filesystem ("macfuse", older
/// "osxfuse"); the name may carry a suffix.
pub fn is_macfuse_type(name: &str) -> bool {
    name.starts_with("macfuse") || name.starts_with("osxfuse")
}

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

/// Environment variable naming the pipe (`FD:INODE`, see [`handoff`]) on which a `--daemon`
/// child reports readiness (`READY\n`) or failure (`ERROR <message>\n`) to its parent.
pub use handoff::READY_FD_ENV;

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

/// The filesystem types mounted at `path` (absolute, resolved), oldest first (per mountinfo;
/// macOS: `getfsstat`).
fn mount_types_at(path: &Path) -> Vec<String> {
    #[cfg(target_os = "macos")]
    {
        macos::mounts()
            .into_iter()
            .filter(|(mp, _)| Path::new(mp) == path)
            .map(|(_, fstype)| fstype)
            .collect()
    }
    #[cfg(not(target_os = "macos"))]
    {
        mountinfo_entries_at(path)
            .into_iter()
            .filter_map(|fields| {
                let sep = fields.iter().position(|f| f == "-")?;
                fields.get(sep + 1).cloned()
            })
            .collect()
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

/// Whether `path` is listed as a mount point in `/proc/self/mountinfo` (macOS:
/// `getfsstat`).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canonical) = path.canonicalize().or_else(|_| absolute(path)) else {
        return false;
    };
    #[cfg(target_os = "macos")]
    {
        macos::mounts()
            .iter()
            .any(|(mp, _)| Path::new(mp) == canonical)
    }
    #[cfg(not(target_os = "macos"))]
    {
        !mountinfo_entries_at(&canonical).is_empty()
    }
}

/// Whether a FUSE filesystem is mounted at `path` (per mountinfo; macOS: `getfsstat`), alive
/// or dead.
pub fn is_fuse_mount_point(path: &Path) -> bool {
    let Ok(canonical) = absolute(path) else {
        return false;
    };
    mount_types_at(&canonical).iter().any(|fstype| {
        if cfg!(target_os = "macos") {
            is_macfuse_type(fstype)
        } else {
            fstype.starts_with("fuse")
        }
    })
}

/// The lines of `/proc/self/mountinfo` for mounts at `path` (absolute), oldest first, split
/// into their fields: field 3 is the device (`major:minor`), field 5 the mount point, and the
/// filesystem type follows the `-` separator. Empty when mountinfo cannot be read.
#[cfg(not(target_os = "macos"))]
fn mountinfo_entries_at(path: &Path) -> Vec<Vec<String>> {
    let wanted = path.to_string_lossy();
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .map(|line| line.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|fields| {
            fields
                .get(4)
                .is_some_and(|mp| unescape_mountinfo(mp) == wanted)
        })
        .collect()
}

/// Undo `/proc/self/mountinfo`'s octal escapes (`\040` for a space, `\134` for a
/// backslash, ...) in one pass.
pub(crate) fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(v) = bytes
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An absolute path without touching the filesystem beyond the current directory (a dead
/// mount cannot be canonicalised).
fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    // Resolve the parent (alive) and keep the last component as is.
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf())
            .join(name)),
        _ => Ok(abs),
    }
}

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

/// The macOS (macFUSE) side of mount detection and unmounting. Never compiled or run on
/// macOS by the project's tests (no macOS target is available there).
#[cfg(target_os = "macos")]
mod macos {
    use super::{absolute, is_mount_point};
    use anyhow::bail;
    use std::path::Path;

    /// Every mount (mount point, file system type name), from `getfsstat(MNT_NOWAIT)` so
    /// that a dead mount is not asked.
    pub fn mounts() -> Vec<(String, String)> {
        // SAFETY: a null buffer asks only for the count.
        let count = unsafe { libc::getfsstat(std::ptr::null_mut(), 0, libc::MNT_NOWAIT) };
        if count <= 0 {
            return Vec::new();
        }
        // Room for mounts appearing between the two calls.
        let mut buf: Vec<libc::statfs> = Vec::with_capacity(count as usize + 16);
        let bytes = buf.capacity() * std::mem::size_of::<libc::statfs>();
        // SAFETY: `buf` has room for `bytes` bytes; getfsstat fills at most that many and
        // returns how many entries it wrote.
        let got = unsafe {
            libc::getfsstat(
                buf.as_mut_ptr(),
                libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX),
                libc::MNT_NOWAIT,
            )
        };
        if got <= 0 {
            return Vec::new();
        }
        // SAFETY: the first `got` entries were written by getfsstat.
        unsafe { buf.set_len((got as usize).min(buf.capacity())) };
        buf.iter()
            .map(|s| (c_string(&s.f_mntonname), c_string(&s.f_fstypename)))
            .collect()
    }

    fn c_string(chars: &[libc::c_char]) -> String {
        let bytes: Vec<u8> = chars
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

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

// ---------------------------------------------------------------------------------------
// Control socket
// ---------------------------------------------------------------------------------------

/// What `cec mount --status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MountStatus {
    pub mountpoint: String,
    pub server: String,
    /// The stored profile the mount uses (`None`: `--url`/`--token`, or an older daemon).
    #[serde(default)]
    pub profile: Option<String>,
    pub pid: u32,
    pub uptime_secs: u64,
    pub read_only: bool,
    pub write_back_secs: Option<u64>,
    /// Uploads not yet on the server (path and bytes).
    pub pending_uploads: Vec<PendingUploadStatus>,
    pub cache_dir: String,
    pub cache_used_bytes: u64,
    pub cache_limit_bytes: u64,
    /// Most recent errors, newest last, each with its path (never a token).
    pub recent_errors: Vec<String>,
    /// `None` with `--no-events`.
    pub events_connected: Option<bool>,
    pub events_received: u64,
    /// Conflict copies stored lately (a file changed on the server and here), oldest first.
    #[serde(default)]
    pub conflict_copies: Vec<ConflictCopyStatus>,
}

/// One conflict copy: the file whose server version was kept, and where ours went.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConflictCopyStatus {
    pub path: String,
    pub copy: String,
    /// Unix seconds.
    pub at: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PendingUploadStatus {
    pub path: String,
    /// The file's size.
    pub bytes: u64,
    /// Bytes of it the running upload has sent.
    #[serde(default)]
    pub sent_bytes: u64,
    /// Bytes a second since the upload began; `None` before it began.
    #[serde(default)]
    pub rate_bytes_per_sec: Option<u64>,
    /// Write-back: seconds until the upload starts; `None` once it runs.
    #[serde(default)]
    pub starts_in_secs: Option<u64>,
}

impl PendingUploadStatus {
    /// `3.0 MiB of 10.0 MiB sent, 1.2 MiB/s`, `starts in 12s`, or `waiting`.
    pub fn progress(&self) -> String {
        let mut parts = Vec::new();
        if let Some(secs) = self.starts_in_secs {
            parts.push(format!("starts in {secs}s"));
        }
        if let Some(rate) = self.rate_bytes_per_sec {
            parts.push(format!(
                "{} of {} sent, {}/s",
                human_bytes(self.sent_bytes),
                human_bytes(self.bytes),
                human_bytes(rate)
            ));
        }
        if parts.is_empty() {
            parts.push("waiting".into());
        }
        parts.join(", ")
    }
}

impl std::fmt::Display for MountStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "mountpoint:      {}", self.mountpoint)?;
        writeln!(f, "server:          {}", self.server)?;
        writeln!(
            f,
            "profile:         {}",
            self.profile.as_deref().unwrap_or("(none)")
        )?;
        writeln!(f, "pid:             {}", self.pid)?;
        writeln!(f, "uptime:          {}s", self.uptime_secs)?;
        writeln!(
            f,
            "mode:            {}{}",
            if self.read_only {
                "read-only"
            } else {
                "read-write"
            },
            match self.write_back_secs {
                Some(s) => format!(", write-back {s}s"),
                None => String::new(),
            }
        )?;
        match self.events_connected {
            None => writeln!(f, "events:          off (TTLs only)")?,
            Some(c) => writeln!(
                f,
                "events:          {} ({} received)",
                if c { "connected" } else { "disconnected" },
                self.events_received
            )?,
        }
        writeln!(
            f,
            "cache:           {} used of {} in {}",
            human_bytes(self.cache_used_bytes),
            human_bytes(self.cache_limit_bytes),
            self.cache_dir
        )?;
        writeln!(f, "pending uploads: {}", self.pending_uploads.len())?;
        for p in &self.pending_uploads {
            writeln!(
                f,
                "  {} ({}): {}",
                p.path,
                human_bytes(p.bytes),
                p.progress()
            )?;
        }
        if !self.conflict_copies.is_empty() {
            writeln!(f, "conflict copies: {}", self.conflict_copies.len())?;
            for c in &self.conflict_copies {
                writeln!(f, "  {} -> {}", c.path, c.copy)?;
            }
        }
        writeln!(f, "recent errors:   {}", self.recent_errors.len())?;
        for e in &self.recent_errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The directory holding control sockets and daemon logs: `$XDG_RUNTIME_DIR/cec`, else
/// `/run/cec` for root, else `$TMPDIR/cec-<uid>` (macOS: no `/run`, so `$TMPDIR/cec-<uid>`,
/// a per-user directory under `/var/folders`). Created 0700.
pub fn runtime_dir() -> anyhow::Result<PathBuf> {
    let uid = nix::unistd::getuid();
    let dir = if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        PathBuf::from(xdg).join("cec")
    } else if uid.is_root() && Path::new("/run").is_dir() {
        PathBuf::from("/run/cec")
    } else {
        std::env::temp_dir().join(format!("cec-{uid}"))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(&dir)?;
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != uid.as_raw() || !meta.is_dir() {
        bail!("{} is not a directory owned by you", dir.display());
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// A stable key for a mountpoint (its absolute path, hashed).
fn mountpoint_key(mountpoint: &Path) -> anyhow::Result<String> {
    let abs = absolute(mountpoint)?;
    let digest = sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes());
    Ok(hex::encode(&digest[..8]))
}

/// The control socket of the mount at `mountpoint`.
pub fn control_socket_path(mountpoint: &Path) -> anyhow::Result<PathBuf> {
    Ok(runtime_dir()?.join(format!("mount-{}.sock", mountpoint_key(mountpoint)?)))
}

/// The log file of a `--daemon` mount at `mountpoint`.
pub fn daemon_log_path(mountpoint: &Path) -> anyhow::Result<PathBuf> {
    Ok(runtime_dir()?.join(format!("mount-{}.log", mountpoint_key(mountpoint)?)))
}

/// A request on the control socket (one line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    Status,
    Unmount,
}

/// Ask the mount at `mountpoint` for its status.
pub fn query_status(mountpoint: &Path) -> anyhow::Result<MountStatus> {
    let reply = control_request(mountpoint, "status")?;
    serde_json::from_str(&reply).context("unreadable status from the mount")
}

/// Ask the mount at `mountpoint` to finish its uploads and unmount. Returns once the
/// request was accepted (the mount then exits on its own).
pub fn request_unmount(mountpoint: &Path) -> anyhow::Result<()> {
    let reply = control_request(mountpoint, "unmount")?;
    if reply.trim() == "ok" {
        Ok(())
    } else {
        bail!("the mount refused to unmount: {}", reply.trim())
    }
}

fn control_request(mountpoint: &Path, command: &str) -> anyhow::Result<String> {
    let path = control_socket_path(mountpoint)?;
    let mut stream = UnixStream::connect(&path).map_err(|err| {
        anyhow!(
            "no cec mount answers for {} ({}: {err})",
            mountpoint.display(),
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    if reply.is_empty() {
        bail!(
            "the mount at {} closed the control socket",
            mountpoint.display()
        );
    }
    Ok(reply)
}

/// Serve the control socket until `cancel` fires. `status` builds the status on demand;
/// an `unmount` request is forwarded on `unmount_tx`.
pub async fn serve_control_socket(
    path: PathBuf,
    status: std::sync::Arc<dyn Fn() -> MountStatus + Send + Sync>,
    unmount_tx: tokio::sync::mpsc::Sender<()>,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    // Whatever is at the path belongs to a crashed mount or to one detached from this
    // mountpoint (`cec unmount --lazy`, which lives on until its last user leaves): this
    // mount is the one at the mountpoint now (it is mounted before this runs), so the path is
    // ours. The detached one keeps serving its own requests on its listening socket, and
    // will not remove ours when it exits (see below).
    if std::fs::symlink_metadata(&path).is_ok() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            tracing::info!(
                socket = %path.display(),
                "another process (a mount detached from here?) served this control socket; \
                 taking it over"
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let identity = std::fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()))?;
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(error = %err, "control socket accept failed");
                    continue;
                }
            },
        };
        let status = status.clone();
        let unmount_tx = unmount_tx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match line.trim() {
                "status" => {
                    let status = tokio::task::spawn_blocking(move || status()).await;
                    match status {
                        Ok(s) => serde_json::to_string(&s).unwrap_or_default(),
                        Err(_) => "error status unavailable".into(),
                    }
                }
                "unmount" => {
                    let _ = unmount_tx.send(()).await;
                    "ok".into()
                }
                other => format!("error unknown request {other:?}"),
            };
            let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
        });
    }
    // Only our own socket: a mount made here since may have taken the path over.
    if std::fs::symlink_metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == identity) {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Readiness: systemd and the --daemon parent
// ---------------------------------------------------------------------------------------

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

trait OpenOptionsExt0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl OpenOptionsExt0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Ask the control socket at `path` for a status, from a blocking thread.
    async fn status_pid_at(path: &Path) -> Option<u32> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut stream = UnixStream::connect(&path).ok()?;
            stream.write_all(b"status\n").ok()?;
            let mut reply = String::new();
            BufReader::new(stream).read_line(&mut reply).ok()?;
            serde_json::from_str::<MountStatus>(&reply)
                .ok()
                .map(|s| s.pid)
        })
        .await
        .unwrap()
    }

    /// A daemon detached from its mountpoint (`cec unmount --lazy`) still answers on the
    /// control socket: the next mount at that place takes the path over at once, and the
    /// detached daemon, when it exits, leaves the new socket alone (it used to delete it, and
    /// `cec mount --status` and `cec unmount` could no longer reach the new mount).
    #[tokio::test]
    async fn a_new_mount_takes_the_control_socket_over_and_the_old_one_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mount.sock");
        let serve = |pid: u32| {
            let status: std::sync::Arc<dyn Fn() -> MountStatus + Send + Sync> =
                std::sync::Arc::new(move || MountStatus {
                    pid,
                    ..Default::default()
                });
            let (unmount_tx, unmount_rx) = tokio::sync::mpsc::channel(1);
            let cancel = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn(serve_control_socket(
                path.clone(),
                status,
                unmount_tx,
                cancel.clone(),
            ));
            (task, cancel, unmount_rx)
        };
        let (old, old_cancel, _old_rx) = serve(1);
        let mut waited = 0;
        while status_pid_at(&path).await != Some(1) {
            waited += 1;
            assert!(waited < 100, "the first server never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (new, new_cancel, _new_rx) = serve(2);
        let mut waited = 0;
        while status_pid_at(&path).await != Some(2) {
            waited += 1;
            assert!(waited < 100, "the new mount did not take the socket over");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The detached daemon exits: the path still reaches the new mount.
        old_cancel.cancel();
        old.await.unwrap().unwrap();
        assert_eq!(status_pid_at(&path).await, Some(2));
        new_cancel.cancel();
        new.await.unwrap().unwrap();
        assert!(!path.exists(), "a daemon removes its own socket");
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

    #[test]
    fn status_renders_every_section() {
        let status = MountStatus {
            mountpoint: "/mnt/cells".into(),
            pending_uploads: vec![PendingUploadStatus {
                path: "personal-files/a.bin".into(),
                bytes: 3 * 1024 * 1024,
                sent_bytes: 1024 * 1024,
                rate_bytes_per_sec: Some(512 * 1024),
                starts_in_secs: None,
            }],
            recent_errors: vec!["upload failed: personal-files/b".into()],
            events_connected: Some(true),
            ..Default::default()
        };
        let text = status.to_string();
        assert!(
            text.contains("personal-files/a.bin (3.0 MiB): 1.0 MiB of 3.0 MiB sent, 512.0 KiB/s"),
            "{text}"
        );
        assert!(text.contains("upload failed: personal-files/b"), "{text}");
        assert!(text.contains("events:          connected"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------
// The lifecycle
// ---------------------------------------------------------------------------------------

/// Everything a mount needs, assembled by `cec mount` (or a test).
pub struct MountPlan {
    pub mountpoint: PathBuf,
    /// Server base URL (display, and the events URL).
    pub server: String,
    /// The stored profile used (shown by `cec mount --status`).
    pub profile: Option<String>,
    pub api: std::sync::Arc<dyn crate::api::CellsApi>,
    pub tokens: std::sync::Arc<dyn crate::auth::TokenSource>,
    pub fs_options: crate::fs::FsOptions,
    pub allow_other: bool,
    /// Mount even over a folder that holds files (see [`refuse_files_in`]).
    pub allow_non_empty: bool,
    /// Listen to `/ws/event` (otherwise TTLs only).
    pub events: bool,
    /// `ENDPOINT_WEBSOCKET` from bootconf, when known.
    pub websocket_endpoint: Option<String>,
    /// Accept any TLS certificate on the events websocket too (`--skip-verify`).
    pub skip_verify: bool,
    /// Source name shown by `mount` and `df`.
    pub fs_name: String,
    /// How long to wait for the mount to answer.
    pub ready_timeout: Duration,
}

/// Turns event frames into the core's invalidations.
struct CoreEventSink {
    fs: crate::fs::CellsFs,
}

impl crate::api::events::EventSink for CoreEventSink {
    fn tree_event(&self, event: &crate::api::events::TreeEvent) {
        for change in remote_changes(event) {
            self.fs.invalidate(change);
        }
    }

    fn connection_changed(&self, connected: bool) {
        // Events may have been missed while the socket was down (or before it came up);
        // while it is up, they invalidate precisely and the cache may be trusted longer.
        self.fs.set_events_live(connected);
    }

    fn workspaces_changed(&self) {
        self.fs.workspaces_changed();
    }
}

/// The core's view of one tree event (cells-events.md §7.5).
pub fn remote_changes(event: &crate::api::events::TreeEvent) -> Vec<crate::fs::RemoteChange> {
    use crate::api::events::ChangeKind;
    use crate::fs::RemoteChange;
    let source = event
        .source
        .as_ref()
        .map(|n| n.path.clone())
        .filter(|p| !p.is_empty());
    let target = event
        .target
        .as_ref()
        .map(|n| n.path.clone())
        .filter(|p| !p.is_empty());
    match (event.kind, source, target) {
        (ChangeKind::UpdatePath, Some(from), Some(to)) => vec![RemoteChange::Moved { from, to }],
        (ChangeKind::UpdatePath, None, Some(path)) => vec![RemoteChange::Created { path }],
        (ChangeKind::Create, _, Some(path)) => {
            // The server merges a node's events until it has been quiet for a second: a
            // CREATE may carry a later save of the file (someone else's, seconds after this
            // mount saw the first one), so its Etag counts as a content change too.
            let etag = event
                .target
                .as_ref()
                .filter(|n| n.kind == Some(crate::api::NodeKind::File))
                .map(|n| n.etag.clone())
                .filter(|e| !e.is_empty() && e != "temporary");
            let mut changes = vec![RemoteChange::Created { path: path.clone() }];
            if etag.is_some() {
                changes.push(RemoteChange::ContentChanged { path, etag });
            }
            changes
        }
        (ChangeKind::UpdatePath, Some(path), None) | (ChangeKind::Delete, Some(path), _) => {
            vec![RemoteChange::Deleted { path }]
        }
        (ChangeKind::UpdateContent, _, Some(path)) => {
            let etag = event
                .target
                .as_ref()
                .map(|n| n.etag.clone())
                .filter(|e| !e.is_empty() && e != "temporary");
            vec![RemoteChange::ContentChanged { path, etag }]
        }
        (ChangeKind::UpdateMeta | ChangeKind::UpdateUserMeta, _, Some(path)) => {
            vec![RemoteChange::MetaChanged { path }]
        }
        (_, Some(path), None) => vec![RemoteChange::Deleted { path }],
        _ => Vec::new(),
    }
}

/// Build the status the control socket serves.
fn build_status(
    plan_view: &StatusContext,
    fs: &crate::fs::CellsFs,
    events: Option<&std::sync::Arc<crate::api::events::EventsStats>>,
) -> MountStatus {
    use std::sync::atomic::Ordering;
    let core = fs.status();
    MountStatus {
        mountpoint: plan_view.mountpoint.clone(),
        server: plan_view.server.clone(),
        profile: plan_view.profile.clone(),
        pid: std::process::id(),
        uptime_secs: plan_view.started.elapsed().as_secs(),
        read_only: plan_view.read_only,
        write_back_secs: plan_view.write_back_secs,
        pending_uploads: core
            .pending_uploads
            .iter()
            .map(|p| PendingUploadStatus {
                path: p.path.clone(),
                bytes: p.size,
                sent_bytes: p.sent,
                rate_bytes_per_sec: p.rate,
                starts_in_secs: p.starts_in_secs,
            })
            .collect(),
        cache_dir: plan_view.cache_dir.clone(),
        cache_used_bytes: core.cache_bytes,
        cache_limit_bytes: core.cache_capacity,
        recent_errors: core
            .recent_errors
            .iter()
            .map(|e| e.message.clone())
            .chain(
                core.recovered_files
                    .iter()
                    .map(|p| format!("kept after a failed upload: {}", p.display())),
            )
            .collect(),
        events_connected: events.map(|s| s.connected.load(Ordering::Relaxed)),
        events_received: events
            .map(|s| s.tree_events.load(Ordering::Relaxed))
            .unwrap_or(0),
        conflict_copies: core
            .conflict_copies
            .iter()
            .map(|c| ConflictCopyStatus {
                path: c.path.clone(),
                copy: c.copy.clone(),
                at: c.at,
            })
            .collect(),
    }
}

struct StatusContext {
    mountpoint: String,
    server: String,
    profile: Option<String>,
    started: Instant,
    read_only: bool,
    write_back_secs: Option<u64>,
    cache_dir: String,
}

/// Why the mount is stopping.
#[derive(Debug)]
enum StopReason {
    Signal(&'static str),
    ControlSocket,
    UnmountedFromOutside,
}

/// Mount, serve until asked to stop, then finish uploads and unmount. Reports readiness
/// (or the failure) through `readiness`. Runs on a multi-threaded tokio runtime.
pub async fn run(plan: MountPlan, readiness: &mut Readiness) -> anyhow::Result<()> {
    match mount_and_serve(plan, readiness).await {
        Ok(()) => Ok(()),
        Err(err) => {
            readiness.failed(&format!("{err:#}"));
            Err(err)
        }
    }
}

async fn mount_and_serve(plan: MountPlan, readiness: &mut Readiness) -> anyhow::Result<()> {
    use std::sync::Arc;
    use tokio::signal::unix::{SignalKind, signal};

    let mountpoint = plan.mountpoint.clone();
    {
        let mp = mountpoint.clone();
        let allow_non_empty = plan.allow_non_empty;
        tokio::task::spawn_blocking(move || prepare_mountpoint(&mp, allow_non_empty)).await??;
    }
    // The cache directory is this daemon's alone, from before the journal is replayed until
    // the process exits (the lock lives as long as this function runs).
    let _cache_lock = {
        let dir = plan.fs_options.cache_dir.clone();
        cache_dir::prepare_cache_dir(&dir)?;
        cache_dir::lock_cache_dir(&dir, &mountpoint)?
    };
    // Signals are caught from here on, so a SIGTERM during start-up still ends cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let status_context = StatusContext {
        mountpoint: absolute(&mountpoint)?.display().to_string(),
        server: plan.server.clone(),
        profile: plan.profile.clone(),
        started: Instant::now(),
        read_only: plan.fs_options.read_only,
        write_back_secs: plan.fs_options.write_back.map(|d| d.as_secs()),
        cache_dir: plan.fs_options.cache_dir.display().to_string(),
    };
    let read_only = plan.fs_options.read_only;
    let write_back = plan.fs_options.write_back.is_some();
    let fs = crate::fs::CellsFs::new(plan.api.clone(), plan.fs_options)
        .await
        .map_err(|e| anyhow!("cannot prepare the filesystem: {e}"))?;

    let auto_unmount = auto_unmount_possible();
    let mut fuse_options = crate::fuse::FuseMountOptions {
        read_only,
        allow_other: plan.allow_other,
        auto_unmount,
        fs_name: plan.fs_name.clone(),
        threads: 2,
    };
    let runtime = tokio::runtime::Handle::current();
    let mounted = {
        let (fs, mp, opts, rt) = (
            fs.clone(),
            mountpoint.clone(),
            fuse_options.clone(),
            runtime.clone(),
        );
        tokio::task::spawn_blocking(move || crate::fuse::mount(fs, rt, &mp, &opts)).await?
    };
    let mut mounted = match mounted {
        Ok(m) => m,
        Err(err) if fuse_options.auto_unmount => {
            tracing::warn!(error = %err, "mounting with auto_unmount failed; retrying without");
            fuse_options.auto_unmount = false;
            let (fs, mp, opts, rt) = (
                fs.clone(),
                mountpoint.clone(),
                fuse_options.clone(),
                runtime,
            );
            tokio::task::spawn_blocking(move || crate::fuse::mount(fs, rt, &mp, &opts))
                .await?
                .map_err(|e| mount_error(&mountpoint, e))?
        }
        Err(err) => return Err(mount_error(&mountpoint, err)),
    };
    if !fuse_options.auto_unmount {
        tracing::info!(
            "auto_unmount unavailable (needs fusermount3): a killed mount leaves a dead mountpoint, cleared at the next mount"
        );
    }

    // From here on, every exit path unmounts.
    let answered = {
        let mp = mountpoint.clone();
        let timeout = plan.ready_timeout;
        tokio::task::spawn_blocking(move || wait_until_answers(&mp, timeout)).await?
    };
    if let Err(err) = answered {
        let mp = mountpoint.clone();
        let _ = tokio::task::spawn_blocking(move || unmount_now(&mp)).await;
        drop(mounted);
        return Err(err);
    }
    match raise_kernel_read_ahead(&mountpoint, crate::fuse::MAX_REQUEST / 1024) {
        Ok(kib) => tracing::debug!(kib, "kernel read-ahead"),
        Err(err) => tracing::debug!("kernel read-ahead left as it is: {err:#}"),
    }

    let events = if plan.events {
        let url =
            crate::api::events::websocket_url(&plan.server, plan.websocket_endpoint.as_deref());
        let sink = Arc::new(CoreEventSink { fs: fs.clone() });
        Some(crate::api::events::EventsClient::spawn(
            crate::api::events::EventsConfig {
                skip_verify: plan.skip_verify,
                ..crate::api::events::EventsConfig::new(url)
            },
            plan.tokens.clone(),
            sink,
        ))
    } else {
        None
    };

    let cancel = tokio_util::sync::CancellationToken::new();
    let (unmount_tx, mut unmount_rx) = tokio::sync::mpsc::channel::<()>(1);
    let control_path = control_socket_path(&mountpoint)?;
    let status_fn: Arc<dyn Fn() -> MountStatus + Send + Sync> = {
        let fs = fs.clone();
        let events_stats = events.as_ref().map(|e| e.stats.clone());
        Arc::new(move || build_status(&status_context, &fs, events_stats.as_ref()))
    };
    let control = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if let Err(err) =
                serve_control_socket(control_path, status_fn, unmount_tx, cancel).await
            {
                tracing::warn!(
                    "no control socket ({err:#}): `cec unmount` and `cec mount --status` cannot \
                     reach this mount; stop it with SIGTERM"
                );
            }
        }
    });

    readiness.ready(&mountpoint);
    tracing::info!(mountpoint = %mountpoint.display(), server = %plan.server, "mounted");
    eprintln!(
        "cec: {} mounted at {} (stop with Ctrl-C or `cec unmount {}`)",
        plan.server,
        mountpoint.display(),
        mountpoint.display()
    );

    let reason = tokio::select! {
        _ = sigint.recv() => StopReason::Signal("SIGINT"),
        _ = sigterm.recv() => StopReason::Signal("SIGTERM"),
        // (`None` disables the branch: the control socket is not served; the mount goes on.)
        Some(()) = unmount_rx.recv() => StopReason::ControlSocket,
        () = mounted.ended() => StopReason::UnmountedFromOutside,
    };
    let why = match &reason {
        StopReason::Signal(name) => *name,
        StopReason::ControlSocket => "cec unmount",
        StopReason::UnmountedFromOutside => "unmounted from outside",
    };
    tracing::info!(reason = why, "stopping");
    Readiness::stopping();
    if let Some(events) = events {
        events.stop().await;
    }

    // Finish (or journal, with write-back) what is pending; a second signal skips the wait.
    let synced = tokio::select! {
        r = fs.sync_all() => r.map_err(|e| e.to_string()),
        _ = sigint.recv() => Err("interrupted by a second SIGINT".to_string()),
        _ = sigterm.recv() => Err("interrupted by a second SIGTERM".to_string()),
    };
    if let Err(err) = &synced {
        eprintln!(
            "cec: not every pending upload finished ({err}); {}",
            if write_back {
                "they stay in the write-back journal and resume at the next mount"
            } else {
                "see `cec mount --status` of the next mount and the recovery folder"
            }
        );
    }

    // Unmount ourselves: fuser's own unmount leaves an `auto_unmount` mount in place
    // (fusermount3 only unmounts a filesystem whose daemon died), so it cannot be trusted.
    if !matches!(reason, StopReason::UnmountedFromOutside) {
        let mp = mountpoint.clone();
        tokio::task::spawn_blocking(move || unmount_now(&mp)).await??;
    }
    // The session threads end once the kernel connection is gone.
    let joined = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || mounted.join()),
    )
    .await;
    match joined {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "the FUSE session ended with an error"),
        Ok(Err(err)) => tracing::warn!(error = %err, "the FUSE session thread panicked"),
        Err(_) => tracing::warn!(
            "files are still open on the detached mount; exiting anyway (their users get errors)"
        ),
    }
    cancel.cancel();
    let _ = control.await;
    eprintln!("cec: unmounted {}", mountpoint.display());
    Ok(())
}

fn mount_error(mountpoint: &Path, err: std::io::Error) -> anyhow::Error {
    #[cfg(target_os = "macos")]
    let hint = " (is macFUSE installed, and its system extension allowed in System Settings?)";
    #[cfg(not(target_os = "macos"))]
    let hint = match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (mounting needs root, or fusermount3 and access to /dev/fuse)"
        }
        Some(libc::ENOENT) if !Path::new("/dev/fuse").exists() => {
            " (/dev/fuse is missing: load the fuse module or run with --device /dev/fuse)"
        }
        Some(libc::ENOENT) => " (is fusermount3 installed? Debian: apt install fuse3)",
        _ => "",
    };
    anyhow!("cannot mount at {}: {err}{hint}", mountpoint.display())
}
