//! The bytes of a file open for writing: in memory while it is small, in a staging file
//! otherwise.
//!
//! A file written from empty (new, or truncated by its opening) starts in memory: writing a
//! small file then costs no staging file, so no inode is allocated and none freed. On ext4
//! without a journal (the machines this project is measured on) every inode allocation
//! steps over the inodes freed in the last minutes, and write-back keeps one staging file
//! per pending upload, which the staging pool cannot recycle before the upload is done.
//! The content moves to a staging file (from the pool) once it grows past [`MEMORY_MAX`], or
//! when the mount's [`MemoryBudget`] for such files is spent.
//!
//! Invariants:
//! - In memory, the vector's length is the file's size; a staging file's length may exceed
//!   the size the caller tracks only between a failed write and the next `set_len`.
//! - [`MEMORY_MAX`] is the journal's [`INLINE_MAX`]: content in memory always fits in a
//!   write-back record, so it never needs a staging file to be durable.
//! - Bytes in memory count against the budget exactly as long as they are held (released on
//!   drop and when they move to a staging file).
//! - A move to a staging file that fails (a full disk) leaves the content in memory, whole,
//!   and no staging file behind.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::journal::INLINE_MAX;

/// The largest content kept in memory.
pub(crate) const MEMORY_MAX: u64 = INLINE_MAX;

/// How many bytes the contents in memory may hold together, for one mount.
pub(crate) struct MemoryBudget {
    used: AtomicU64,
    limit: u64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            used: AtomicU64::new(0),
            limit,
        })
    }

    /// Take `bytes` from the budget; false (and nothing taken) when it would run over.
    fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held in memory now.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Bytes held in memory, counted in their budget.
pub(crate) struct MemoryBytes {
    bytes: Vec<u8>,
    budget: Arc<MemoryBudget>,
}

impl Drop for MemoryBytes {
    fn drop(&mut self) {
        self.budget.release(self.bytes.len() as u64);
    }
}

impl MemoryBytes {
    /// Resize to `len` (zero-filled), within [`MEMORY_MAX`] and the budget; false when it
    /// cannot (nothing changed then).
    fn resize(&mut self, len: u64) -> bool {
        let old = self.bytes.len() as u64;
        if len > MEMORY_MAX || (len > old && !self.budget.reserve(len - old)) {
            return false;
        }
        if len < old {
            self.budget.release(old - len);
        }
        self.bytes.resize(len as usize, 0);
        true
    }
}

/// Where the content lives.
pub(crate) enum Content {
    Memory(MemoryBytes),
    /// A staging file in `<cache>/staging`, and its path.
    File {
        file: File,
        path: PathBuf,
    },
}

/// Hands out a staging file when content must move out of memory.
pub(crate) type TakeFile<'a> = &'a dyn Fn() -> std::io::Result<(File, PathBuf)>;

impl Content {
    /// Empty content in memory.
    pub fn in_memory(budget: &Arc<MemoryBudget>) -> Content {
        Content::Memory(MemoryBytes {
            bytes: Vec::new(),
            budget: budget.clone(),
        })
    }

    pub fn in_file(file: File, path: PathBuf) -> Content {
        Content::File { file, path }
    }

    /// The staging file's path, if the content is in one.
    pub fn staging_path(&self) -> Option<&Path> {
        match self {
            Content::Memory(_) => None,
            Content::File { path, .. } => Some(path),
        }
    }

    pub fn is_memory(&self) -> bool {
        matches!(self, Content::Memory(_))
    }

    /// Fill `buf` from `offset`; the range must lie within the content.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            Content::Memory(memory) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let source = start
                    .checked_add(buf.len())
                    .and_then(|end| memory.bytes.get(start..end))
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "read past the end of the content",
                        )
                    })?;
                buf.copy_from_slice(source);
                Ok(())
            }
            Content::File { file, .. } => file.read_exact_at(buf, offset),
        }
    }

    /// The first `size` bytes, as one buffer.
    pub fn to_bytes(&self, size: u64) -> std::io::Result<Bytes> {
        if let Content::Memory(memory) = self
            && memory.bytes.len() as u64 == size
        {
            return Ok(Bytes::copy_from_slice(&memory.bytes));
        }
        let mut bytes = vec![0; size as usize];
        self.read_exact_at(&mut bytes, 0)?;
        Ok(Bytes::from(bytes))
    }

    /// Write `data` at `at` (a hole before it reads as zeros); content outgrowing memory
    /// moves to a file from `take_file` first.
    pub fn write_at(&mut self, data: &[u8], at: u64, take_file: TakeFile) -> std::io::Result<()> {
        let end = at + data.len() as u64;
        if let Content::Memory(memory) = self {
            let len = memory.bytes.len() as u64;
            if end <= len || memory.resize(end) {
                memory.bytes[at as usize..end as usize].copy_from_slice(data);
                return Ok(());
            }
        }
        self.staging_file(take_file)?.write_all_at(data, at)
    }

    /// Truncate or extend (with zeros) to `len`.
    pub fn set_len(&mut self, len: u64, take_file: TakeFile) -> std::io::Result<()> {
        if let Content::Memory(memory) = self
            && memory.resize(len)
        {
            return Ok(());
        }
        self.staging_file(take_file)?.set_len(len)
    }

    /// Make the content durable on the local disk (nothing to do for memory, which only a
    /// journal record carrying its bytes makes durable).
    pub fn sync_data(&self) -> std::io::Result<()> {
        match self {
            Content::Memory(_) => Ok(()),
            Content::File { file, .. } => file.sync_data(),
        }
    }

    /// The staging file, the content moved into one from `take_file` first if in memory.
    fn staging_file(&mut self, take_file: TakeFile) -> std::io::Result<&File> {
        if let Content::Memory(memory) = self {
            let (file, path) = take_file()?;
            if let Err(e) = file.write_all_at(&memory.bytes, 0) {
                // The content stays in memory; a partial copy would only hold disk space.
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            *self = Content::File { file, path };
        }
        match self {
            Content::File { file, .. } => Ok(file),
            Content::Memory(_) => unreachable!("moved to a file above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::staging_pool::StagingPool;
    use super::*;

    /// Hands out the staging file `staged` from a pool in `dir`, as the mount does.
    fn file_taker(dir: &Path) -> impl Fn() -> std::io::Result<(File, PathBuf)> + '_ {
        let pool = StagingPool::new(dir);
        move || pool.take("staged", 0)
    }

    fn read_all(content: &Content, size: u64) -> Vec<u8> {
        content.to_bytes(size).unwrap().to_vec()
    }

    #[test]
    fn small_content_stays_in_memory_and_counts_in_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let take = file_taker(dir.path());
        let budget = MemoryBudget::new(1 << 20);
        let mut content = Content::in_memory(&budget);
        content.write_at(b"hello", 0, &take).unwrap();
        // A hole reads as zeros.
        content.write_at(b"!", 7, &take).unwrap();
        assert!(content.is_memory());
        assert_eq!(read_all(&content, 8), b"hello\0\0!");
        assert_eq!(budget.used(), 8);
        content.set_len(2, &take).unwrap();
        assert_eq!(read_all(&content, 2), b"he");
        assert_eq!(budget.used(), 2);
        let mut buf = [0; 4];
        assert!(content.read_exact_at(&mut buf, 0).is_err(), "past the end");
        drop(content);
        assert_eq!(budget.used(), 0, "released on drop");
        assert!(!dir.path().join("staged").exists(), "no staging file");
    }

    #[test]
    fn content_outgrowing_memory_moves_to_a_staging_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let take = file_taker(dir.path());
        let budget = MemoryBudget::new(1 << 20);
        let mut content = Content::in_memory(&budget);
        let first = vec![b'a'; MEMORY_MAX as usize];
        content.write_at(&first, 0, &take).unwrap();
        assert!(content.is_memory(), "exactly MEMORY_MAX still fits");
        content.write_at(b"b", MEMORY_MAX, &take).unwrap();
        assert_eq!(
            content.staging_path(),
            Some(dir.path().join("staged").as_path())
        );
        assert_eq!(budget.used(), 0, "the memory was given back");
        let mut expected = first;
        expected.push(b'b');
        assert_eq!(read_all(&content, MEMORY_MAX + 1), expected);
        assert_eq!(std::fs::read(dir.path().join("staged")).unwrap(), expected);
        // Extending by set_len past the limit moves too.
        let mut other = Content::in_memory(&budget);
        other.write_at(b"x", 0, &take).unwrap();
        other.set_len(MEMORY_MAX + 10, &take).unwrap();
        assert!(!other.is_memory());
        assert_eq!(
            std::fs::metadata(dir.path().join("staged")).unwrap().len(),
            MEMORY_MAX + 10
        );
    }

    #[test]
    fn a_failed_move_to_a_staging_file_keeps_the_content_in_memory_and_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        // A file that cannot be written stands for a full disk.
        let take = || {
            std::fs::write(&path, b"")?;
            Ok((File::open(&path)?, path.clone()))
        };
        let budget = MemoryBudget::new(1 << 20);
        let mut content = Content::in_memory(&budget);
        content.write_at(b"kept", 0, &take).unwrap();
        assert!(content.write_at(b"x", MEMORY_MAX, &take).is_err());
        assert!(content.is_memory());
        assert_eq!(read_all(&content, 4), b"kept");
        assert!(!path.exists(), "the partial staging file was left behind");
    }

    #[test]
    fn a_spent_budget_sends_new_bytes_to_a_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let take = file_taker(dir.path());
        let budget = MemoryBudget::new(10);
        let mut first = Content::in_memory(&budget);
        first.write_at(b"0123456789", 0, &take).unwrap();
        assert!(first.is_memory());
        let mut second = Content::in_memory(&budget);
        second.write_at(b"z", 0, &take).unwrap();
        assert!(!second.is_memory(), "no budget left");
        assert_eq!(read_all(&second, 1), b"z");
        // Overwriting within what is held needs no more budget.
        first.write_at(b"AB", 3, &take).unwrap();
        assert!(first.is_memory());
        assert_eq!(read_all(&first, 10), b"012AB56789");
        assert_eq!(budget.used(), 10);
    }
}
