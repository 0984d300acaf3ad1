//! The recovery folder, `<cache>/recovery/`: when an upload fails for good (or a journal
//! record is set aside), the data is copied there and the failure is reported; data is never
//! dropped.
//!
//! Invariants:
//! - A copy has its own flat name, `<unix time>-<hash of the path>_<file name, shortened>`
//!   (always under 255 bytes, whatever the path's length; a number tells apart copies of one
//!   path made within the same second), and the server path it was meant for is written
//!   beside it, in the same name plus [`PATH_SUFFIX`].
//! - A copy and its label are synced (and the folder) before the copy is reported kept; a
//!   copy that could not be made whole is removed. Both are 0600 (see `private`).
//! - A staging file named by a record is opened only by its plain name, never through a
//!   symbolic link.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Journal, open_staging, private, sync_dir};

/// Where the bytes to keep in the recovery folder are.
pub(super) enum Source<'a> {
    File(&'a Path),
    /// A staging file named in a record: `(staging folder, name)`.
    Staging(&'a Path, &'a str),
    Bytes(&'a [u8]),
}

/// The suffix of the file beside a recovery copy that holds its server path.
const PATH_SUFFIX: &str = ".path";

/// The flat name of a recovery copy of `path` (see the module documentation); `n` tells
/// apart copies of one path kept within the same second.
fn recovery_name(path: &str, stamp: u64, n: u32) -> String {
    /// Bytes of the file name kept: the whole name stays far below 255 bytes.
    const BASE_MAX: usize = 160;
    let digest = Sha256::digest(path.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let base = path.rsplit('/').next().unwrap_or(path);
    let mut end = base.len().min(BASE_MAX);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    let base: String = base[..end]
        .chars()
        .map(|c| if c == '\0' || c == '/' { '_' } else { c })
        .collect();
    if n == 0 {
        format!("{stamp}-{hash}_{base}")
    } else {
        format!("{stamp}-{hash}-{n}_{base}")
    }
}

/// A new, empty file of `recovery` with its own flat name for `path` (0600).
fn reserve_recovery_name(recovery: &Path, path: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut n = 0;
    loop {
        let target = recovery.join(recovery_name(path, stamp, n));
        match private::options()
            .write(true)
            .create_new(true)
            .open(&target)
        {
            Ok(file) => return Ok((target, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The file beside a recovery copy that names its server path.
fn label_of(copy: &Path) -> PathBuf {
    let mut beside = copy.to_path_buf().into_os_string();
    beside.push(PATH_SUFFIX);
    PathBuf::from(beside)
}

/// Write `path` (and a newline) into the label beside `copy`, synced.
fn write_recovery_label(copy: &Path, path: &str) -> std::io::Result<()> {
    let mut label = private::create(&label_of(copy))?;
    label.write_all(path.as_bytes())?;
    label.write_all(b"\n")?;
    label.sync_all()
}

/// Copy `source` into a new file of `recovery` with its own flat name, the server path `path`
/// written beside it; both synced and 0600. Returns the copy's path.
pub(super) fn keep_in_recovery(
    recovery: &Path,
    path: &str,
    source: Source,
) -> std::io::Result<PathBuf> {
    let (target, mut file) = reserve_recovery_name(recovery, path)?;
    let beside = label_of(&target);
    let stored = (|| -> std::io::Result<()> {
        match source {
            Source::File(from) => {
                std::io::copy(&mut std::fs::File::open(from)?, &mut file)?;
            }
            Source::Staging(dir, name) => {
                std::io::copy(&mut open_staging(dir, name, false)?, &mut file)?;
            }
            Source::Bytes(bytes) => file.write_all(bytes)?,
        }
        file.sync_all()?;
        write_recovery_label(&target, path)?;
        sync_dir(recovery)
    })();
    match stored {
        Ok(()) => Ok(target),
        Err(e) => {
            let _ = std::fs::remove_file(&target);
            let _ = std::fs::remove_file(&beside);
            Err(e)
        }
    }
}

impl Journal {
    /// Keep a copy of `staging` for `path` in the recovery folder; returns where.
    pub fn keep_for_recovery(&self, path: &str, staging: &Path) -> std::io::Result<PathBuf> {
        keep_in_recovery(&self.recovery, path, Source::File(staging))
    }

    /// Move `staging` itself to the recovery folder for `path` (a rename: it needs no disk
    /// space, for when the disk is full); returns where.
    pub fn move_to_recovery(&self, path: &str, staging: &Path) -> std::io::Result<PathBuf> {
        let (target, _reserved) = reserve_recovery_name(&self.recovery, path)?;
        if let Err(e) = std::fs::rename(staging, &target) {
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
        // The label takes a few bytes: on a disk still full the copy stays without it (the
        // error reported for the file names its path).
        if let Err(e) = write_recovery_label(&target, path) {
            tracing::warn!(
                "{}: could not write {PATH_SUFFIX} beside it: {e}",
                target.display()
            );
        }
        let _ = sync_dir(&self.recovery);
        Ok(target)
    }

    /// Keep `bytes` (content that had no staging file) for `path` in the recovery folder.
    pub fn keep_bytes_for_recovery(&self, path: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        keep_in_recovery(&self.recovery, path, Source::Bytes(bytes))
    }

    /// Files in the recovery folder (not the `.path` files beside them).
    pub fn recovered(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.recovery)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let names: HashSet<PathBuf> = out.iter().cloned().collect();
        out.retain(|file| {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            !name
                .strip_suffix(PATH_SUFFIX)
                .is_some_and(|data| names.contains(&file.with_file_name(data)))
        });
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_copies_have_short_flat_names_and_their_path_beside() {
        let cache = tempfile::tempdir().unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        let long = format!("ws/{}/{}", "d".repeat(700), "é".repeat(150));
        let paths = [long.clone(), long, "ws/a.path".to_string()];
        for path in &paths {
            journal
                .keep_bytes_for_recovery(path, path.as_bytes())
                .unwrap();
        }
        let kept = journal.recovered();
        assert_eq!(kept.len(), 3, "{kept:?}");
        for file in &kept {
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(name.len() + PATH_SUFFIX.len() < 255, "{}", name.len());
            let path = std::fs::read_to_string(file).unwrap();
            let mut beside = file.clone().into_os_string();
            beside.push(PATH_SUFFIX);
            assert_eq!(
                std::fs::read_to_string(beside).unwrap(),
                format!("{path}\n")
            );
        }
    }
}
