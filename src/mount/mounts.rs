//! The system's table of mounts, read without asking any mount: which filesystems are
//! mounted at a path (`/proc/self/mountinfo` on Linux, `getfsstat(MNT_NOWAIT)` on macOS),
//! whether one of them is FUSE, and a path made absolute without touching its last component.
//!
//! Invariants:
//! - Nothing here stats the mountpoint itself: a dead FUSE mount would answer ENOTCONN and a
//!   hung one never; the kernel's list of mounts answers instead.
//! - Mountinfo's octal escapes (`\040` for a space...) are undone before any comparison, so a
//!   mountpoint with a space in its name is found.

use std::path::{Path, PathBuf};

/// Whether an `f_fstypename` (macOS) names a macFUSE filesystem ("macfuse", older
/// "osxfuse"); the name may carry a suffix.
pub fn is_macfuse_type(name: &str) -> bool {
    name.starts_with("macfuse") || name.starts_with("osxfuse")
}

/// The filesystem types mounted at `path` (absolute, resolved), oldest first (per mountinfo;
/// macOS: `getfsstat`).
pub(super) fn mount_types_at(path: &Path) -> Vec<String> {
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
pub(super) fn mountinfo_entries_at(path: &Path) -> Vec<Vec<String>> {
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
pub(super) fn absolute(path: &Path) -> std::io::Result<PathBuf> {
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

/// The macOS (macFUSE) side of mount detection. Never compiled or run on macOS by the
/// project's tests (no macOS target is available there; `scripts/check-macos` type-checks it).
#[cfg(target_os = "macos")]
mod macos {
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
}
