//! What the filesystem core creates in the cache directory is private to the mounting user.
//!
//! Staging files, cached blocks, the write-back journal (which carries small files' bytes),
//! the recovery folder and `times.json` hold the user's data and names: another local user
//! must not read them. Every folder the core makes there is created 0700 and every file 0600,
//! whatever the process umask (the mode is given to `mkdir`/`open` themselves; a umask can only
//! take bits away, never add any).
//!
//! Invariants:
//! - Files are created through [`options`] (or [`create`] / [`write`], built on it) and
//!   folders through [`create_dir`]: no creation site relies on the umask.
//! - A file created under a temporary name and renamed keeps the mode it was created with,
//!   so temporary files are created here too.
//! - What an earlier version left wider (0755 folders, 0644 files) is tightened when the core
//!   opens the cache ([`tighten_tree`], then [`create_dir`] on each folder it uses). Symbolic
//!   links are neither followed nor changed.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every folder the core creates in the cache directory.
pub(crate) const DIR_MODE: u32 = 0o700;
/// The mode of every file the core creates in the cache directory.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Create `dir` (and its missing parents) 0700; an existing `dir` with other permission bits
/// gets 0700.
pub(crate) fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o7777 != DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Open options that create a file 0600 (an existing file keeps its mode: see [`create`]).
pub(crate) fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Create or truncate `path` for writing, 0600 even if it existed with a wider mode.
pub(crate) fn create(path: &Path) -> std::io::Result<File> {
    let file = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    tighten_file(&file)?;
    Ok(file)
}

/// `std::fs::write`, with the file 0600.
pub(crate) fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    create(path)?.write_all(data)
}

/// Give an open file 0600 if it has other permission bits.
pub(crate) fn tighten_file(file: &File) -> std::io::Result<()> {
    if file.metadata()?.permissions().mode() & 0o7777 != FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// Tighten everything below `dir` (not `dir` itself) to 0700 folders and 0600 files: what an
/// earlier version created wider. Failures are logged and skipped (a file this user does not
/// own cannot be changed, and is no reason to refuse the mount).
pub(crate) fn tighten_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let want = if meta.is_dir() {
            DIR_MODE
        } else if meta.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        if meta.permissions().mode() & 0o7777 != want
            && let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want))
        {
            tracing::warn!(path = %path.display(), "could not make it private to this user: {e}");
        }
        if meta.is_dir() {
            tighten_tree(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn modes_are_private_and_wider_ones_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&file, b"y").unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let old = dir.join("old");
        std::fs::write(&old, b"x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o664)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::write(&elsewhere, b"x").unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("link")).unwrap();
        tighten_tree(&root.path().join("a"));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&old), 0o600);
        assert_eq!(mode(&elsewhere), 0o644, "a link is not followed");
    }
}
