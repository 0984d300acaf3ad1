//! The on-disk data cache: fixed-size blocks of file content, keyed by the node's Uuid and
//! Etag (so a changed file never serves old bytes), kept across mounts.
//!
//! Invariants:
//! - The bytes on disk never exceed the capacity: room is made (least recently used blocks
//!   first) before a block is written, under the index lock, so concurrent inserts cannot
//!   overshoot. A block larger than the whole capacity is not cached.
//! - A block file is written under a temporary name and renamed, so a crash leaves either a
//!   whole block or none. Startup rebuilds the index from the directory (oldest first) and
//!   evicts down to the capacity, which may have shrunk since the last mount.
//! - Failures of the cache are never failures of a read: a block that cannot be written or
//!   read is simply not cached.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use sha2::{Digest, Sha256};

/// Size of one cached block (the last block of a file may be shorter).
pub const BLOCK_SIZE: u64 = 128 * 1024;

/// Blocks waiting for the writer thread at most (128 KiB each: 16 MiB).
const WRITE_QUEUE: usize = 128;

/// Hands blocks to the cache's writer thread. A block that does not fit in the queue is not
/// cached (the cache is an optimisation; a read never waits for it).
#[derive(Clone)]
pub struct CacheWriter {
    sender: Option<std::sync::mpsc::SyncSender<WriterJob>>,
}

enum WriterJob {
    Store(String, u64, Bytes),
    Flush(std::sync::mpsc::SyncSender<()>),
}

impl CacheWriter {
    /// Queue a block for the cache; dropped when the queue is full.
    pub fn submit(&self, key: &str, block: u64, data: Bytes) {
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(WriterJob::Store(key.to_string(), block, data));
        }
    }

    /// Queue `bytes`, which start at `offset` (a block boundary), cut into cache blocks
    /// (slices of `bytes`: nothing is copied here).
    pub fn submit_range(&self, key: &str, offset: u64, bytes: &Bytes) {
        debug_assert_eq!(offset % BLOCK_SIZE, 0);
        let mut at = 0usize;
        while at < bytes.len() {
            let stop = (at + BLOCK_SIZE as usize).min(bytes.len());
            self.submit(
                key,
                (offset + at as u64) / BLOCK_SIZE,
                bytes.slice(at..stop),
            );
            at = stop;
        }
    }

    /// Block until every block queued before this call is stored (or dropped).
    pub fn flush(&self) {
        if let Some(sender) = &self.sender {
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            if sender.send(WriterJob::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

pub struct DataCache {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
}

struct Index {
    /// File name -> size, least recently used first.
    blocks: LruCache<String, u64>,
    total: u64,
}

impl DataCache {
    /// Open (or create) the cache in `dir` with a hard cap of `capacity` bytes.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<DataCache> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if name.ends_with(".tmp") || !meta.is_file() {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((modified, name, meta.len()));
        }
        found.sort();
        let cache = DataCache {
            dir: dir.to_path_buf(),
            capacity,
            index: Mutex::new(Index {
                blocks: LruCache::unbounded(),
                total: 0,
            }),
        };
        {
            let mut index = cache.index.lock().unwrap();
            for (_, name, size) in found {
                index.blocks.put(name, size);
                index.total += size;
            }
            cache.evict_until(&mut index, 0);
        }
        Ok(cache)
    }

    fn file_name(key: &str, block: u64) -> String {
        let digest = Sha256::digest(key.as_bytes());
        format!("{}-{block}", hex::encode(&digest[..16]))
    }

    /// Evict least recently used blocks until `extra` more bytes fit under the capacity.
    fn evict_until(&self, index: &mut Index, extra: u64) {
        while index.total + extra > self.capacity {
            let Some((name, size)) = index.blocks.pop_lru() else {
                break;
            };
            let _ = std::fs::remove_file(self.dir.join(&name));
            index.total -= size;
        }
    }

    /// The cached block `block` of the content identified by `key`, if present.
    pub fn get(&self, key: &str, block: u64) -> Option<Bytes> {
        let name = Self::file_name(key, block);
        {
            let mut index = self.index.lock().unwrap();
            index.blocks.get(&name)?;
        }
        match std::fs::read(self.dir.join(&name)) {
            Ok(data) => Some(Bytes::from(data)),
            Err(_) => {
                let mut index = self.index.lock().unwrap();
                if let Some(size) = index.blocks.pop(&name) {
                    index.total -= size;
                }
                None
            }
        }
    }

    /// Store a block; makes room first so the cap always holds.
    pub fn insert(&self, key: &str, block: u64, data: &[u8]) {
        let size = data.len() as u64;
        if size > self.capacity || self.capacity == 0 {
            return;
        }
        let name = Self::file_name(key, block);
        let mut index = self.index.lock().unwrap();
        if index.blocks.contains(&name) {
            index.blocks.promote(&name);
            return;
        }
        self.evict_until(&mut index, size);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(data))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if written.is_ok() {
            index.blocks.put(name, size);
            index.total += size;
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// A writer that stores blocks on its own thread, so readers never wait for the disk.
    pub fn writer(self: &Arc<Self>) -> CacheWriter {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<WriterJob>(WRITE_QUEUE);
        let cache = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cec-cache-writer".into())
            .spawn(move || {
                for job in receiver {
                    match job {
                        WriterJob::Store(key, block, data) => cache.insert(&key, block, &data),
                        WriterJob::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        CacheWriter {
            sender: spawned.ok().map(|_| sender),
        }
    }

    /// Bytes currently cached.
    pub fn used(&self) -> u64 {
        self.index.lock().unwrap().total
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_on_every_insert_and_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DataCache::open(dir.path(), 3 * 1000).unwrap();
        for block in 0..10 {
            cache.insert("k", block, &[block as u8; 1000]);
            assert!(cache.used() <= 3000);
        }
        assert!(cache.get("k", 0).is_none(), "oldest evicted");
        assert_eq!(cache.get("k", 9).unwrap(), Bytes::from(vec![9u8; 1000]));
        drop(cache);
        let smaller = DataCache::open(dir.path(), 2000).unwrap();
        assert!(smaller.used() <= 2000);
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 2000, "{on_disk}");
    }
}
