//! Staging files kept for the next file instead of unlinked.
//!
//! Every file written goes through a staging file in `<cache>/staging`, named after its
//! `FileState` id. Creating one per small file and unlinking it once uploaded costs an inode
//! allocation each time, and on ext4 without a journal (the machines this project is tested
//! and measured on) the allocator steps over every inode freed in the last minutes, so that
//! cost grows with the number of files written: the daemon's CPU for the same `rsync` rose by
//! half over six runs in one mount. A staging file no longer needed is kept here instead (its
//! name, not its descriptor), and the next file renames it to its own id (no inode allocated)
//! and opens it emptied.
//!
//! Invariants:
//! - At most [`KEPT_FILES`] files, each of at most [`KEPT_SIZE`] bytes, are kept; any other is
//!   unlinked at once, as before. A kept file is emptied when kept if it may already be
//!   reused, so the pool holds bytes only for files whose `done` line is not durable yet.
//! - A kept file may still be named by a write-back journal record whose `done` line is not
//!   durable yet (`done` lines are not synced). It is handed out only once the journal has
//!   synced past that line, so a replay after a crash never reads another file's bytes (or an
//!   emptied file) in place of an upload that already succeeded.
//! - A file handed out bears its new owner's name, is empty and is positioned at its start.
//!   It is created 0600 whatever the umask (see `private`); a kept file keeps that mode.
//! - Dropping the pool unlinks what it keeps; after a crash, the next mount's sweep of staging
//!   files no record names does.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many released staging files are kept at most: enough for the files a burst (an
/// `rsync`, an untar) released to serve the next one.
pub(crate) const KEPT_FILES: usize = 4096;
/// Larger staging files are unlinked: until it is emptied, a kept file holds its disk space.
pub(crate) const KEPT_SIZE: u64 = 128 * 1024;

struct Kept {
    path: PathBuf,
    /// The journal mark of the line that ended the last record naming this file (0: none).
    done_mark: u64,
}

pub(crate) struct StagingPool {
    dir: PathBuf,
    kept: Mutex<Vec<Kept>>,
}

impl StagingPool {
    pub fn new(dir: &Path) -> StagingPool {
        StagingPool {
            dir: dir.to_path_buf(),
            kept: Mutex::new(Vec::new()),
        }
    }

    /// An empty staging file named `id`, opened for reading and writing: a kept one when one
    /// may be reused (its `done` line is within `durable`, the journal's durable mark), a new
    /// one otherwise.
    pub fn take(&self, id: &str, durable: u64) -> std::io::Result<(File, PathBuf)> {
        let path = self.dir.join(id);
        let reusable = {
            let mut kept = self.kept.lock().unwrap();
            kept.iter()
                .rposition(|k| k.done_mark <= durable)
                .map(|i| kept.swap_remove(i))
        };
        if let Some(kept) = reusable
            && let Err(e) = std::fs::rename(&kept.path, &path)
        {
            tracing::debug!(path = %kept.path.display(), "staging file not reused: {e}");
            let _ = std::fs::remove_file(&kept.path);
        }
        // Truncating: a kept file is emptied here if it was not when kept.
        let file = super::private::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok((file, path))
    }

    /// A staging file whose content is no longer needed: keep it for a later [`take`], or
    /// unlink it. `done_mark` is the journal mark returned when its last record was removed
    /// (0 if it never had one); `durable` is the journal's durable mark now.
    ///
    /// [`take`]: StagingPool::take
    pub fn give_back(&self, file: File, path: PathBuf, size: u64, done_mark: u64, durable: u64) {
        if size <= KEPT_SIZE {
            let mut kept = self.kept.lock().unwrap();
            if kept.len() < KEPT_FILES {
                if size > 0 && done_mark <= durable {
                    let _ = file.set_len(0);
                }
                kept.push(Kept { path, done_mark });
                return;
            }
        }
        drop(file);
        let _ = std::fs::remove_file(&path);
    }
}

impl Drop for StagingPool {
    fn drop(&mut self) {
        for kept in self.kept.get_mut().unwrap().drain(..) {
            let _ = std::fs::remove_file(&kept.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_released_file_is_renamed_emptied_and_rewound_for_the_next_owner() {
        let dir = tempfile::tempdir().unwrap();
        let pool = StagingPool::new(dir.path());
        let (mut file, path) = pool.take("a", 0).unwrap();
        file.write_all(b"first content").unwrap();
        let inode = file.metadata().unwrap().ino();
        pool.give_back(file, path, 13, 0, 0);
        let kept = std::fs::metadata(dir.path().join("a")).unwrap();
        assert_eq!(
            kept.len(),
            0,
            "emptied when kept: nothing can name it any more"
        );
        let (mut file, path) = pool.take("b", 0).unwrap();
        assert_eq!(path, dir.path().join("b"));
        assert_eq!(
            file.metadata().unwrap().ino(),
            inode,
            "the same file, reused"
        );
        assert_eq!(names(dir.path()), vec!["b"]);
        file.write_all(b"two").unwrap();
        let mut text = String::new();
        File::open(&path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "two", "empty and written from its start");
    }

    #[test]
    fn a_file_whose_done_line_is_not_durable_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let pool = StagingPool::new(dir.path());
        let (mut file, path) = pool.take("a", 0).unwrap();
        file.write_all(b"uploaded, done line appended as line 7")
            .unwrap();
        let inode = file.metadata().unwrap().ino();
        pool.give_back(file, path, 40, 7, 6);
        // The journal is durable up to line 6: "a" keeps its bytes, "b" gets a new file.
        let (file, _) = pool.take("b", 6).unwrap();
        assert_ne!(file.metadata().unwrap().ino(), inode);
        assert_eq!(names(dir.path()), vec!["a", "b"]);
        assert_eq!(
            std::fs::read(dir.path().join("a")).unwrap(),
            b"uploaded, done line appended as line 7"
        );
        // Once line 7 is durable, it may be reused.
        let (file, _) = pool.take("c", 7).unwrap();
        assert_eq!(file.metadata().unwrap().ino(), inode);
        assert_eq!(names(dir.path()), vec!["b", "c"]);
    }

    #[test]
    fn large_files_and_files_beyond_the_limit_are_unlinked_and_drop_clears_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let pool = StagingPool::new(dir.path());
        let (file, path) = pool.take("big", 0).unwrap();
        pool.give_back(file, path, KEPT_SIZE + 1, 0, 0);
        assert!(names(dir.path()).is_empty());
        // Kept with a `done` line never durable: each take below needs a new file.
        for i in 0..KEPT_FILES + 3 {
            let (file, path) = pool.take(&format!("f{i}"), 0).unwrap();
            pool.give_back(file, path, 1, 1, 0);
        }
        assert_eq!(names(dir.path()).len(), KEPT_FILES);
        drop(pool);
        assert!(names(dir.path()).is_empty());
    }
}
