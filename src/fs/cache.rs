//! The on-disk data cache: runs of fixed-size blocks of file content ("extents", one file
//! each, at most [`EXTENT_BLOCKS`] blocks), keyed by the node's Uuid and Etag (so a changed
//! file never serves old bytes), kept across mounts.
//!
//! Invariants:
//! - The bytes on disk never exceed the capacity: room is made (least recently used extents
//!   first) before an extent is written, under the index lock, so concurrent inserts cannot
//!   overshoot. An extent larger than the whole capacity is not cached.
//! - An extent file is written under a temporary name and renamed, so a crash leaves either a
//!   whole extent or none. Its name says which content and which blocks it holds, so startup
//!   rebuilds the index from the directory (oldest first) and evicts down to the capacity,
//!   which may have shrunk since the last mount.
//! - The folder is 0700 and extent files 0600, whatever the umask (see `private`).
//! - Extents start on block boundaries; only the last block of a content may be short.
//!   Extents may overlap; one that covers others makes them redundant and they are dropped.
//! - Failures of the cache are never failures of a read: an extent that cannot be written or
//!   read is simply not cached.
//!
//! Why extents: one file per 128 KiB block meant 8,192 files created (and later deleted) per
//! GiB streamed; on this kind of disk that cost the daemon more CPU than the download itself,
//! and at one file per MiB the creation of the files still took more than half of it. The
//! writer thread now joins consecutive blocks of one content handed over within
//! [`WRITER_LINGER`] of each other, so a stream stores one file per 8 MiB, while a random read
//! still stores only the blocks it fetched.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use lru::LruCache;
use sha2::{Digest, Sha256};

/// Size of one cached block (the last block of a file may be shorter).
pub const BLOCK_SIZE: u64 = 128 * 1024;

/// Blocks stored in one extent file at most (8 MiB).
pub const EXTENT_BLOCKS: u64 = 64;

/// Ranges waiting for the writer thread at most (the read-ahead hands over 1 MiB at a time).
const WRITE_QUEUE: usize = 16;

/// How long the writer thread waits for the blocks that would continue the extent it is
/// gathering before it stores what it has.
const WRITER_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Hands extents to the cache's writer thread. An extent that does not fit in the queue is
/// not cached (the cache is an optimisation; a read never waits for it).
#[derive(Clone)]
pub struct CacheWriter {
    sender: Option<std::sync::mpsc::SyncSender<WriterJob>>,
}

enum WriterJob {
    /// Content key, first block, and the extent's bytes in parts.
    Store(String, u64, Vec<Bytes>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

impl CacheWriter {
    /// Queue `bytes`, which start at `offset` (a block boundary); see
    /// [`CacheWriter::submit_parts`].
    pub fn submit_range(&self, key: &str, offset: u64, bytes: &Bytes) {
        self.submit_parts(key, offset, std::slice::from_ref(bytes));
    }

    /// Queue the concatenation of `parts`, which starts at `offset` (a block boundary), as
    /// extents of at most [`EXTENT_BLOCKS`] blocks (slices of the parts: nothing is copied
    /// here). Dropped when the queue is full.
    pub fn submit_parts(&self, key: &str, offset: u64, parts: &[Bytes]) {
        debug_assert_eq!(offset % BLOCK_SIZE, 0);
        let Some(sender) = &self.sender else {
            return;
        };
        let most = EXTENT_BLOCKS * BLOCK_SIZE;
        let mut first = offset / BLOCK_SIZE;
        let mut extent: Vec<Bytes> = Vec::new();
        let mut extent_len = 0u64;
        let send = |first: u64, extent: Vec<Bytes>| {
            sender
                .try_send(WriterJob::Store(key.to_string(), first, extent))
                .is_ok()
        };
        for part in parts {
            let mut part = part.clone();
            while !part.is_empty() {
                let take = ((most - extent_len) as usize).min(part.len());
                extent.push(part.split_to(take));
                extent_len += take as u64;
                if extent_len == most {
                    if !send(first, std::mem::take(&mut extent)) {
                        return;
                    }
                    first += EXTENT_BLOCKS;
                    extent_len = 0;
                }
            }
        }
        if extent_len > 0 {
            send(first, extent);
        }
    }

    /// Block until every extent queued before this call is stored (or dropped).
    pub fn flush(&self) {
        if let Some(sender) = &self.sender {
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            if sender.send(WriterJob::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

/// The extent the writer thread is gathering: blocks of `key` from block `first` on.
struct Gathering {
    key: String,
    first: u64,
    parts: Vec<Bytes>,
}

impl Gathering {
    fn len(&self) -> u64 {
        self.parts.iter().map(|part| part.len() as u64).sum()
    }

    /// Whether `len` bytes from block `first` of `key` extend this extent, within its limit.
    fn continues(&self, key: &str, first: u64, len: u64) -> bool {
        let have = self.len();
        key == self.key
            && have.is_multiple_of(BLOCK_SIZE)
            && first == self.first + have / BLOCK_SIZE
            && have + len <= EXTENT_BLOCKS * BLOCK_SIZE
    }

    /// Full, or ended by the content's short last block.
    fn complete(&self) -> bool {
        let have = self.len();
        have >= EXTENT_BLOCKS * BLOCK_SIZE || !have.is_multiple_of(BLOCK_SIZE)
    }
}

pub struct DataCache {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
}

/// Where one extent lies: its content's digest and its first block and block count (the
/// file name is `<digest>-<first>-<count>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ExtentId {
    digest: String,
    first: u64,
    count: u64,
}

impl ExtentId {
    fn file_name(&self) -> String {
        format!("{}-{}-{}", self.digest, self.first, self.count)
    }

    /// Parse a file name; the single-block names of earlier versions (`<digest>-<block>`)
    /// are extents of one block.
    fn parse(name: &str) -> Option<ExtentId> {
        let mut parts = name.split('-');
        let digest = parts.next()?;
        let first = parts.next()?.parse().ok()?;
        let count = match parts.next() {
            Some(count) => count.parse().ok()?,
            None => 1,
        };
        if parts.next().is_some() || digest.len() != 32 || count == 0 {
            return None;
        }
        Some(ExtentId {
            digest: digest.to_string(),
            first,
            count,
        })
    }
}

struct Index {
    /// Extent -> size in bytes, least recently used first.
    extents: LruCache<ExtentId, u64>,
    /// Per content digest: first block -> block count of each extent.
    by_content: HashMap<String, BTreeMap<u64, u64>>,
    total: u64,
}

impl Index {
    fn add(&mut self, id: ExtentId, size: u64) {
        self.by_content
            .entry(id.digest.clone())
            .or_default()
            .insert(id.first, id.count);
        self.total += size;
        self.extents.put(id, size);
    }

    fn forget(&mut self, id: &ExtentId) -> Option<u64> {
        let size = self.extents.pop(id)?;
        self.total -= size;
        self.unmap(id);
        Some(size)
    }

    fn unmap(&mut self, id: &ExtentId) {
        if let Some(map) = self.by_content.get_mut(&id.digest) {
            if map.get(&id.first) == Some(&id.count) {
                map.remove(&id.first);
            }
            if map.is_empty() {
                self.by_content.remove(&id.digest);
            }
        }
    }

    /// The extent holding `block` of content `digest`, if any.
    fn holding(&self, digest: &str, block: u64) -> Option<ExtentId> {
        let map = self.by_content.get(digest)?;
        // Overlapping extents: any one that reaches `block` will do; look at a few.
        map.range(..=block)
            .rev()
            .take(EXTENT_BLOCKS as usize + 1)
            .find(|(first, count)| *first + *count > block)
            .map(|(first, count)| ExtentId {
                digest: digest.to_string(),
                first: *first,
                count: *count,
            })
    }
}

impl DataCache {
    /// Open (or create) the cache in `dir` with a hard cap of `capacity` bytes.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<DataCache> {
        super::private::create_dir(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            let id = ExtentId::parse(&name);
            if name.ends_with(".tmp") || !meta.is_file() || id.is_none() {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let id = id.expect("checked above");
            if id.file_name() != name
                && std::fs::rename(entry.path(), dir.join(id.file_name())).is_err()
            {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((modified, id, meta.len()));
        }
        found.sort();
        let cache = DataCache {
            dir: dir.to_path_buf(),
            capacity,
            index: Mutex::new(Index {
                extents: LruCache::unbounded(),
                by_content: HashMap::new(),
                total: 0,
            }),
        };
        {
            let mut index = cache.index.lock().unwrap();
            for (_, id, size) in found {
                index.add(id, size);
            }
            cache.evict_until(&mut index, 0);
        }
        Ok(cache)
    }

    fn digest(key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        hex::encode(&digest[..16])
    }

    /// Evict least recently used extents until `extra` more bytes fit under the capacity.
    fn evict_until(&self, index: &mut Index, extra: u64) {
        while index.total + extra > self.capacity {
            let Some((id, size)) = index.extents.pop_lru() else {
                break;
            };
            index.total -= size;
            index.unmap(&id);
            let _ = std::fs::remove_file(self.dir.join(id.file_name()));
        }
    }

    /// The bytes `[offset, end)` of the content identified by `key` (of `size` bytes), when
    /// the cache holds every block of that range.
    pub fn read(&self, key: &str, size: u64, offset: u64, end: u64) -> Option<Bytes> {
        let end = end.min(size);
        if offset >= end {
            return None;
        }
        let digest = Self::digest(key);
        // The extents to read from, in order: (extent, from, to) in content offsets.
        let mut pieces = Vec::new();
        {
            let mut index = self.index.lock().unwrap();
            let mut at = offset;
            while at < end {
                let id = index.holding(&digest, at / BLOCK_SIZE)?;
                let stop = ((id.first + id.count) * BLOCK_SIZE).min(end);
                index.extents.promote(&id);
                pieces.push((id, at, stop));
                at = stop;
            }
        }
        let mut out = BytesMut::zeroed((end - offset) as usize);
        for (id, from, to) in pieces {
            let start = id.first * BLOCK_SIZE;
            let into = &mut out[(from - offset) as usize..(to - offset) as usize];
            let read = std::fs::File::open(self.dir.join(id.file_name()))
                .and_then(|file| file.read_exact_at(into, from - start));
            if read.is_err() {
                self.index.lock().unwrap().forget(&id);
                return None;
            }
        }
        Some(out.freeze())
    }

    /// Store `data`, the blocks of content `key` from block `first` on (whole blocks but at
    /// the end of the content), as one extent; makes room first so the cap always holds.
    pub fn insert(&self, key: &str, first: u64, data: &[u8]) {
        self.insert_parts(key, first, &[data]);
    }

    /// [`DataCache::insert`] of the concatenation of `parts`.
    fn insert_parts(&self, key: &str, first: u64, parts: &[&[u8]]) {
        let size: u64 = parts.iter().map(|part| part.len() as u64).sum();
        if size == 0 || size > self.capacity {
            return;
        }
        let id = ExtentId {
            digest: Self::digest(key),
            first,
            count: size.div_ceil(BLOCK_SIZE),
        };
        let mut index = self.index.lock().unwrap();
        // Already held (by this extent or a wider one)?
        if let Some(held) = index.holding(&id.digest, first)
            && held.first + held.count >= id.first + id.count
        {
            index.extents.promote(&held);
            return;
        }
        // Extents this one covers become redundant.
        let covered: Vec<ExtentId> = index
            .by_content
            .get(&id.digest)
            .map(|map| {
                map.range(id.first..id.first + id.count)
                    .filter(|(first, count)| *first + *count <= id.first + id.count)
                    .map(|(first, count)| ExtentId {
                        digest: id.digest.clone(),
                        first: *first,
                        count: *count,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for old in covered {
            index.forget(&old);
            let _ = std::fs::remove_file(self.dir.join(old.file_name()));
        }
        self.evict_until(&mut index, size);
        let name = id.file_name();
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let written = super::private::create(&tmp)
            .and_then(|mut f| parts.iter().try_for_each(|part| f.write_all(part)))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if written.is_ok() {
            index.add(id, size);
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// A writer that stores extents on its own thread, so readers never wait for the disk.
    pub fn writer(self: &Arc<Self>) -> CacheWriter {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<WriterJob>(WRITE_QUEUE);
        let cache = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cec-cache-writer".into())
            .spawn(move || cache.write_extents(receiver));
        CacheWriter {
            sender: spawned.ok().map(|_| sender),
        }
    }

    /// The writer thread: gathers consecutive blocks of one content into an extent of up to
    /// [`EXTENT_BLOCKS`] blocks and stores it when it is full, ends the content, is not
    /// continued by the next range (or not within [`WRITER_LINGER`]), or a flush asks.
    fn write_extents(&self, receiver: std::sync::mpsc::Receiver<WriterJob>) {
        use std::sync::mpsc::RecvTimeoutError;
        let mut gathering: Option<Gathering> = None;
        loop {
            let job = match &gathering {
                None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(_) => receiver.recv_timeout(WRITER_LINGER),
            };
            match job {
                Ok(WriterJob::Store(key, first, parts)) => {
                    let len = parts.iter().map(|part| part.len() as u64).sum();
                    if let Some(extent) = gathering.as_mut()
                        && extent.continues(&key, first, len)
                    {
                        extent.parts.extend(parts);
                    } else {
                        self.store(&mut gathering);
                        gathering = Some(Gathering { key, first, parts });
                    }
                    if gathering.as_ref().is_some_and(Gathering::complete) {
                        self.store(&mut gathering);
                    }
                }
                Ok(WriterJob::Flush(done)) => {
                    self.store(&mut gathering);
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => self.store(&mut gathering),
                Err(RecvTimeoutError::Disconnected) => {
                    self.store(&mut gathering);
                    return;
                }
            }
        }
    }

    /// Store the extent being gathered, if any.
    fn store(&self, gathering: &mut Option<Gathering>) {
        if let Some(extent) = gathering.take() {
            let parts: Vec<&[u8]> = extent.parts.iter().map(|part| &part[..]).collect();
            self.insert_parts(&extent.key, extent.first, &parts);
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

    const B: usize = BLOCK_SIZE as usize;

    /// `blocks` whole blocks of content whose byte `i` is `i % 251`, from block `first`.
    fn content(first: usize, blocks: usize) -> Vec<u8> {
        (first * B..(first + blocks) * B)
            .map(|i| (i % 251) as u8)
            .collect()
    }

    fn files_in(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn the_cap_holds_on_every_insert_and_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DataCache::open(dir.path(), 3 * 1000).unwrap();
        for block in 0..10 {
            cache.insert("k", block, &[block as u8; 1000]);
            assert!(cache.used() <= 3000);
        }
        assert!(
            cache.read("k", 100_000 * B as u64, 0, 10).is_none(),
            "oldest evicted"
        );
        let nine = 9 * BLOCK_SIZE;
        assert_eq!(
            cache.read("k", u64::MAX, nine, nine + 1000).unwrap(),
            Bytes::from(vec![9u8; 1000])
        );
        drop(cache);
        let smaller = DataCache::open(dir.path(), 2000).unwrap();
        assert!(smaller.used() <= 2000);
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 2000, "{on_disk}");
    }

    #[test]
    fn a_stream_is_gathered_into_extents_and_read_back_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(DataCache::open(dir.path(), 256 * BLOCK_SIZE).unwrap());
        let writer = cache.writer();
        // 70 blocks and a short tail from block 2 on, handed over at once in pieces that do
        // not follow block boundaries (as an HTTP body arrives): the split between the two
        // extents (after 64 blocks) falls inside a piece.
        let mut data = content(2, 70);
        data.extend_from_slice(&content(72, 1)[..1000]);
        let size = (72 * B + 1000) as u64;
        let data = Bytes::from(data);
        let pieces: Vec<Bytes> = (0..data.len())
            .step_by(100_000)
            .map(|at| data.slice(at..(at + 100_000).min(data.len())))
            .collect();
        assert_ne!(64 * B % 100_000, 0);
        writer.submit_parts("k", 2 * BLOCK_SIZE, &pieces);
        writer.flush();
        assert_eq!(files_in(dir.path()), 2, "64 blocks, then 6 and the tail");
        let whole = cache.read("k", size, 2 * BLOCK_SIZE, size).unwrap();
        assert_eq!(&whole[..], &data[..]);
        // A range across the two extents, off block boundaries.
        let (from, to) = (65 * BLOCK_SIZE + 7, 67 * BLOCK_SIZE + 11);
        let part = cache.read("k", size, from, to).unwrap();
        let at = (from - 2 * BLOCK_SIZE) as usize;
        assert_eq!(&part[..], &data[at..at + (to - from) as usize]);
        // Block 1 was never stored: a range that needs it is a miss, not a partial answer.
        assert!(cache.read("k", size, BLOCK_SIZE, 3 * BLOCK_SIZE).is_none());
        // Another content with the same blocks is not served.
        assert!(cache.read("other", size, 2 * BLOCK_SIZE, size).is_none());

        // Ranges that do not continue each other (a gap, another content) are not joined,
        // and one left alone is stored once no continuation comes.
        writer.submit_range("j", 0, &Bytes::from(content(0, 2)));
        writer.submit_range("j", 3 * BLOCK_SIZE, &Bytes::from(content(3, 1)));
        writer.submit_range("i", 4 * BLOCK_SIZE, &Bytes::from(content(4, 1)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while files_in(dir.path()) < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            files_in(dir.path()),
            5,
            "three more extents, without a flush"
        );
        assert!(cache.read("j", u64::MAX, 0, 4 * BLOCK_SIZE).is_none());
        assert!(
            cache
                .read("j", u64::MAX, 3 * BLOCK_SIZE, 4 * BLOCK_SIZE)
                .is_some()
        );

        // The index is rebuilt from the names after a restart.
        drop(writer);
        drop(cache);
        let reopened = DataCache::open(dir.path(), 256 * BLOCK_SIZE).unwrap();
        assert_eq!(reopened.used(), data.len() as u64 + 4 * BLOCK_SIZE);
        assert_eq!(reopened.read("k", size, from, to).unwrap(), part);
    }

    #[test]
    fn a_wider_extent_replaces_the_ones_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DataCache::open(dir.path(), 64 * BLOCK_SIZE).unwrap();
        cache.insert("k", 3, &content(3, 2));
        cache.insert("k", 4, &content(4, 1));
        assert_eq!(files_in(dir.path()), 1, "block 4 was held already");
        cache.insert("k", 0, &content(0, 8));
        assert_eq!(files_in(dir.path()), 1, "blocks 3-4 are inside 0-7");
        assert_eq!(cache.used(), 8 * BLOCK_SIZE);
        let got = cache.read("k", u64::MAX, 0, 8 * BLOCK_SIZE).unwrap();
        assert_eq!(&got[..], &content(0, 8)[..]);
    }

    #[test]
    fn a_damaged_extent_is_a_miss_and_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DataCache::open(dir.path(), 64 * BLOCK_SIZE).unwrap();
        cache.insert("k", 0, &content(0, 4));
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        std::fs::write(file.path(), b"short").unwrap();
        assert!(
            cache
                .read("k", u64::MAX, BLOCK_SIZE, 2 * BLOCK_SIZE)
                .is_none()
        );
        assert_eq!(cache.used(), 0);
    }

    #[test]
    fn names_of_earlier_versions_are_single_blocks_and_strangers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let digest = DataCache::digest("k");
        std::fs::write(dir.path().join(format!("{digest}-5")), content(5, 1)).unwrap();
        std::fs::write(dir.path().join("junk"), b"x").unwrap();
        let cache = DataCache::open(dir.path(), 64 * BLOCK_SIZE).unwrap();
        assert_eq!(files_in(dir.path()), 1);
        let got = cache
            .read("k", u64::MAX, 5 * BLOCK_SIZE, 6 * BLOCK_SIZE)
            .unwrap();
        assert_eq!(&got[..], &content(5, 1)[..]);
    }
}
