//! The cache directory as a place only its mount uses: who may own it, what mode it has, and
//! the lock that makes one daemon its only user.
//!
//! The cache directory holds files being written, the write-back journal (which the next
//! mount replays: it decides what is uploaded where) and blocks of the user's files. So, as
//! ssh does for its keys, the mount refuses a cache directory that another user owns or that
//! group or others may write to: whoever can write there can plant journal records or swap
//! staging files. One that is merely readable by others (0755, what older versions created)
//! is ours: it is tightened to 0700. Directories the mount creates (the cache directory and
//! any missing parent) are created 0700, whatever the umask.
//!
//! Invariants:
//! - At most one live process holds [`CacheLock`] on a cache directory: an exclusive
//!   `flock` on `<cache-dir>/mount.lock`, taken before the journal is replayed and kept until
//!   the process exits (the kernel drops it even after `kill -9`, so it is never stale). Two
//!   daemons never share a journal, staging files or a data cache.
//! - The lock file names its holder (pid, mountpoint), so that a refused mount says who
//!   holds the directory; it is read only when the lock is held by someone else, never
//!   trusted for anything but that message.
//! - Nothing here follows a symlink planted in the cache directory: the lock file is opened
//!   with `O_NOFOLLOW`.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Name of the lock file inside the cache directory.
pub const LOCK_FILE: &str = "mount.lock";

/// Make `dir` a cache directory only the current user can use: create it (and its missing
/// parents) 0700, refuse it when another user owns it or group/others may write to it, and
/// tighten it to 0700 when it is only readable by others.
pub fn prepare_cache_dir(dir: &Path) -> anyhow::Result<()> {
    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot resolve the cache directory {}", dir.display()))?;
    create_private_dirs(&dir)?;
    check_private_dir(&dir)
}

/// Create `dir` and each missing parent with mode 0700 (set explicitly: the umask does not
/// matter). Existing parents are left as they are.
fn create_private_dirs(dir: &Path) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current {
        match std::fs::symlink_metadata(path) {
            Ok(_) => break,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                missing.push(path.to_path_buf());
                current = path.parent();
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot look at {}", path.display()));
            }
        }
    }
    for path in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot set the mode of {}", path.display()))?,
            // Created meanwhile by someone else: checked below like any existing directory.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("cannot create the cache directory {}", path.display())
                });
            }
        }
    }
    Ok(())
}

/// Refuse a directory that is not the current user's or that group/others may write to;
/// tighten one that is only readable by others to 0700.
fn check_private_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot look at the cache directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "the cache directory {} is not a directory; pass --cache-dir with a directory of \
             your own",
            dir.display()
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "refusing the cache directory {}: it belongs to uid {}, not to you (uid {me}). The \
             cache holds the files you write and the journal of pending uploads, so only you \
             may own it: `chown {me} {}` if it is yours, or pass --cache-dir with a directory \
             of your own",
            dir.display(),
            meta.uid(),
            dir.display()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "refusing the cache directory {}: its mode {mode:04o} lets {} write in it, and \
             whoever can write there can plant pending uploads or read what you write. Run \
             `chmod 700 {}` (or pass --cache-dir with a private directory)",
            dir.display(),
            match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (true, true) => "group and others",
                (true, false) => "the group",
                _ => "others",
            },
            dir.display()
        );
    }
    if mode & 0o077 != 0 {
        tracing::info!(
            cache_dir = %dir.display(),
            "tightening the cache directory from {mode:04o} to 0700"
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set the mode of {} to 0700", dir.display()))?;
    }
    Ok(())
}

/// The exclusive lock of a cache directory, held for as long as this value lives (in
/// practice: the daemon's whole life).
#[derive(Debug)]
pub struct CacheLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl CacheLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Take the cache directory's lock for a mount at `mountpoint`, or say who holds it.
pub fn lock_cache_dir(dir: &Path, mountpoint: &Path) -> anyhow::Result<CacheLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = Holder::parse(&holder);
            bail!(
                "the cache directory {} is in use by another cec mount ({}): two mounts must \
                 not share a cache (journal, files being written). Stop that one first \
                 (`cec unmount {}`; after `cec unmount --lazy` it exits once the last process \
                 using it leaves), or pass another --cache-dir",
                dir.display(),
                holder.describe(),
                holder.mountpoint.as_deref().unwrap_or("MOUNTPOINT"),
            );
        }
        Err(std::fs::TryLockError::Error(err)) => {
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    let mountpoint = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.into());
    file.set_len(0)?;
    file.rewind()?;
    write!(
        file,
        "pid {}\nmountpoint {}\n",
        std::process::id(),
        mountpoint.display()
    )
    .and_then(|()| file.flush())
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(CacheLock { _file: file, path })
}

/// What a lock file says about its holder.
#[derive(Debug, Default, PartialEq)]
struct Holder {
    pid: Option<u32>,
    mountpoint: Option<String>,
}

impl Holder {
    fn parse(text: &str) -> Holder {
        let mut holder = Holder::default();
        for line in text.lines() {
            if let Some(pid) = line.strip_prefix("pid ") {
                holder.pid = pid.trim().parse().ok();
            } else if let Some(mp) = line.strip_prefix("mountpoint ") {
                holder.mountpoint = Some(mp.to_string());
            }
        }
        holder
    }

    fn describe(&self) -> String {
        match (self.pid, &self.mountpoint) {
            (Some(pid), Some(mp)) => format!("pid {pid}, mounted at {mp}"),
            (Some(pid), None) => format!("pid {pid}"),
            (None, Some(mp)) => format!("mounted at {mp}"),
            (None, None) => "a process that is still starting".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn missing_dirs_are_created_0700_with_their_missing_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/cache");
        prepare_cache_dir(&dir).unwrap();
        for p in ["a", "a/b", "a/b/cache"] {
            assert_eq!(mode(&tmp.path().join(p)), 0o700, "{p}");
        }
    }

    #[test]
    fn a_readable_dir_of_ours_is_tightened_and_a_writable_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_cache_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for (bits, who) in [
            (0o770, "the group"),
            (0o757, "others"),
            (0o777, "group and"),
        ] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bits)).unwrap();
            let err = format!("{:#}", prepare_cache_dir(&dir).unwrap_err());
            assert!(err.contains(who) && err.contains("chmod 700"), "{err}");
            assert_eq!(mode(&dir), bits, "a refused directory is left alone");
        }
    }

    #[test]
    fn a_dir_of_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test runs as root (it chowns a directory to another uid)");
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(4321)), None).unwrap();
        let err = format!("{:#}", prepare_cache_dir(&dir).unwrap_err());
        assert!(err.contains("uid 4321") && err.contains("chown"), "{err}");
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let first = lock_cache_dir(tmp.path(), Path::new("/mnt/first")).unwrap();
        assert_eq!(mode(first.path()), 0o600);
        let err = format!(
            "{:#}",
            lock_cache_dir(tmp.path(), Path::new("/mnt/second")).unwrap_err()
        );
        assert!(
            err.contains(&format!("pid {}", std::process::id()))
                && err.contains("mounted at /mnt/first")
                && err.contains("cec unmount /mnt/first"),
            "{err}"
        );
        drop(first);
        let second = lock_cache_dir(tmp.path(), Path::new("/mnt/second")).unwrap();
        let text = std::fs::read_to_string(second.path()).unwrap();
        assert_eq!(
            Holder::parse(&text),
            Holder {
                pid: Some(std::process::id()),
                mountpoint: Some("/mnt/second".into())
            }
        );
    }
}
