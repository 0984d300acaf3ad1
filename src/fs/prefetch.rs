//! Sequential read-ahead of one open file: a background task streams ranged GETs ahead of the
//! reader into a bounded in-memory queue, so the network, the kernel and the reader work at
//! the same time instead of taking turns.
//!
//! Invariants:
//! - The queue is contiguous: `pieces` hold the bytes `[start, end)` of one content (one Uuid
//!   and Etag), in order, with no gap. The producer only appends at `end`; the reader only
//!   drops pieces from the front once they lie more than `keep_behind` bytes behind the
//!   furthest byte it has read (so slightly reordered kernel reads are still served).
//! - Memory is bounded: the producer waits while it is more than `max_ahead` bytes ahead of
//!   the reader, so one prefetcher holds at most `max_ahead + keep_behind + chunk` bytes (give
//!   or take the HTTP client's read buffer that the pieces at each end share). The
//!   caller sizes `max_ahead` from the mount's global read-ahead budget and the permit lives
//!   as long as the prefetcher.
//! - A transient failure (also a connection cut mid-body, but not a timeout) resumes the GET
//!   at the first byte not yet received, with backoff; after the last attempt, or on another
//!   error, the error is kept and every later read that needs missing bytes gets it. A body shorter than
//!   announced means the file changed on the server: that is an error too, never a short read.
//! - Dropping the prefetcher stops its task (and its HTTP stream) at once.
//! - The producer appends a chunk at a time: the pieces of the HTTP body (slices of the
//!   client's buffers, not copied) that make up `[chunk start, chunk end)`. Chunks start on
//!   data-cache block boundaries and are multiples of the block size (but the last), so every
//!   chunk can be handed to the data cache as whole blocks. A read within one piece is a slice
//!   of it; a read across pieces is copied once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::api::{ApiError, ByteRange, CellsApi};

use super::cache::{self, CacheWriter};

/// Why the prefetcher could not deliver bytes.
#[derive(Debug, Clone)]
pub(crate) enum PrefetchError {
    /// The server failed for good (after the retries for transient errors).
    Api(ApiError),
    /// The body ended early: the content changed on the server since it was listed.
    Short { expected: u64, got: u64 },
}

/// How a prefetcher fetches and how far it runs ahead.
#[derive(Clone)]
pub(crate) struct PrefetchConfig {
    /// Bytes the producer may buffer beyond the furthest byte read.
    pub max_ahead: u64,
    /// Bytes kept behind the furthest byte read, for reordered reads.
    pub keep_behind: u64,
    /// Size of the GET that opens the stream: small, so that its first bytes come back as
    /// soon as the server answers (a server may read a large range's first buffer, 1 MiB
    /// for the emulator, from its storage before any byte goes out).
    pub opening_request: u64,
    /// Size of the GET after the opening one; each next GET is twice as long, up to
    /// `max_request`.
    pub second_request: u64,
    pub max_request: u64,
    /// Attempts per GET and the first retry delay (doubling).
    pub attempts: u32,
    pub retry_delay: Duration,
}

/// The source of the bytes: where to fetch and what identifies the content.
pub(crate) struct PrefetchSource {
    pub api: Arc<dyn CellsApi>,
    pub path: String,
    /// Content key (Uuid + Etag): the data cache's key and the prefetcher's identity.
    pub key: String,
    /// Size of the content.
    pub size: u64,
    /// Where the data cache's writer takes complete blocks, if there is a cache.
    pub cache: Option<CacheWriter>,
    /// A version of the file (its id) rather than its current content.
    pub version: Option<String>,
}

struct Queue {
    pieces: VecDeque<Bytes>,
    /// Offset of the first byte of `pieces[0]`.
    start: u64,
    /// Offset after the last buffered byte (where the producer appends).
    end: u64,
    /// Offset after the furthest byte the reader has taken.
    read_to: u64,
    /// Set once the producer stopped for good before the end of the content.
    error: Option<PrefetchError>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// The producer appended a chunk (or failed).
    data_ready: Notify,
    /// The reader moved on: there may be room to fetch more.
    room: Notify,
}

/// Read-ahead for one handle on one content, from a block-aligned start offset.
pub(crate) struct Prefetcher {
    shared: Arc<Shared>,
    key: String,
    size: u64,
    max_ahead: u64,
    keep_behind: u64,
    task: tokio::task::JoinHandle<()>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Size of one queued chunk once the stream is going (a multiple of the cache block size).
const CHUNK_SIZE: u64 = 1024 * 1024;

impl Prefetcher {
    /// Start streaming `source` from `offset` (rounded down to a cache block).
    pub fn start(
        source: PrefetchSource,
        offset: u64,
        config: PrefetchConfig,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Prefetcher {
        let start = offset / cache::BLOCK_SIZE * cache::BLOCK_SIZE;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pieces: VecDeque::new(),
                start,
                end: start,
                read_to: start,
                error: None,
            }),
            data_ready: Notify::new(),
            room: Notify::new(),
        });
        let key = source.key.clone();
        let size = source.size;
        let (max_ahead, keep_behind) = (config.max_ahead, config.keep_behind);
        let task = tokio::spawn(produce(shared.clone(), source, start, config));
        Prefetcher {
            shared,
            key,
            size,
            max_ahead,
            keep_behind,
            task,
            _permit: permit,
        }
    }

    /// Whether a read at `offset` of content `key` belongs to this stream: the bytes are
    /// buffered, or due soon (at most `max_ahead` past what is buffered).
    pub fn covers(&self, key: &str, offset: u64) -> bool {
        if key != self.key {
            return false;
        }
        let queue = self.shared.queue.lock().unwrap();
        offset >= queue.start && offset <= queue.end.max(queue.read_to) + self.max_ahead
    }

    /// [`Prefetcher::read`] when every byte asked for is buffered already; `None` (and no
    /// change) otherwise.
    pub fn read_now(&self, offset: u64, len: u64) -> Option<Bytes> {
        let stop = (offset + len).min(self.size);
        if offset >= stop {
            return None;
        }
        let queue = self.shared.queue.lock().unwrap();
        if offset < queue.start || queue.end < stop {
            return None;
        }
        Some(self.take(queue, offset, stop))
    }

    /// Hand out the buffered `[offset, stop)`: the reader moves on, what lies far enough
    /// behind it is dropped, and the producer may fill the room.
    fn take(&self, mut queue: std::sync::MutexGuard<'_, Queue>, offset: u64, stop: u64) -> Bytes {
        let bytes = copy_range(&queue, offset, stop);
        queue.read_to = queue.read_to.max(stop);
        trim(&mut queue, self.keep_behind);
        drop(queue);
        self.shared.room.notify_one();
        bytes
    }

    /// The bytes `[offset, offset + len)` (clipped to the content's size), waiting for the
    /// producer as needed. The caller checked [`Prefetcher::covers`].
    pub async fn read(&self, offset: u64, len: u64) -> Result<Bytes, PrefetchError> {
        let stop = (offset + len).min(self.size);
        if offset >= stop {
            return Ok(Bytes::new());
        }
        loop {
            let ready = self.shared.data_ready.notified();
            tokio::pin!(ready);
            {
                let mut queue = self.shared.queue.lock().unwrap();
                if queue.end >= stop {
                    return Ok(self.take(queue, offset, stop));
                }
                if let Some(error) = &queue.error {
                    return Err(error.clone());
                }
                // Let the producer run far enough to reach `stop`.
                if stop > queue.read_to {
                    queue.read_to = queue.read_to.max(offset);
                    self.shared.room.notify_one();
                }
                ready.as_mut().enable();
            }
            ready.await;
        }
    }
}

/// Copy (or slice, when one piece holds it all) `[from, to)` out of the queue.
fn copy_range(queue: &Queue, from: u64, to: u64) -> Bytes {
    let mut at = queue.start;
    let mut out: Option<BytesMut> = None;
    for piece in &queue.pieces {
        let piece_end = at + piece.len() as u64;
        if piece_end > from && at < to {
            let lo = (from.max(at) - at) as usize;
            let hi = (to.min(piece_end) - at) as usize;
            if out.is_none() && from >= at && to <= piece_end {
                return piece.slice(lo..hi);
            }
            out.get_or_insert_with(|| BytesMut::with_capacity((to - from) as usize))
                .extend_from_slice(&piece[lo..hi]);
        }
        if piece_end >= to {
            break;
        }
        at = piece_end;
    }
    out.map(BytesMut::freeze).unwrap_or_default()
}

/// Drop pieces that lie wholly more than `keep_behind` bytes behind the reader.
fn trim(queue: &mut Queue, keep_behind: u64) {
    let floor = queue.read_to.saturating_sub(keep_behind);
    while let Some(first) = queue.pieces.front() {
        let first_end = queue.start + first.len() as u64;
        if first_end > floor {
            break;
        }
        queue.start = first_end;
        queue.pieces.pop_front();
    }
}

/// The producer: GETs from `start` to the end of the content, one after the other, a small
/// opening one then growing ranges, appending chunks while there is room ahead of the reader.
async fn produce(shared: Arc<Shared>, source: PrefetchSource, start: u64, config: PrefetchConfig) {
    let mut pos = start;
    let second = config.second_request.max(cache::BLOCK_SIZE);
    let mut request = config.opening_request.clamp(cache::BLOCK_SIZE, second);
    // The pieces of the chunk being gathered (it starts at `pos - gathered`): slices of the
    // HTTP client's buffers, queued as they are, so a byte is copied once on its way to the
    // reader (by `copy_range`, when a read spans pieces), not also into a chunk buffer.
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut gathered = 0u64;
    let mut chunk_size = cache::BLOCK_SIZE;
    let mut attempt = 0u32;
    let mut delay = config.retry_delay;
    while pos < source.size {
        let request_end = (pos + request).min(source.size);
        let outcome = async {
            let range = Some(ByteRange {
                offset: pos,
                len: Some(request_end - pos),
            });
            let mut stream = match &source.version {
                Some(v) => {
                    source
                        .api
                        .get_object_version(&source.path, v, range)
                        .await?
                }
                None => source.api.get_object(&source.path, range).await?,
            };
            while let Some(piece) = stream.next().await {
                let mut piece = piece?;
                attempt = 0;
                while !piece.is_empty() {
                    let room = ((chunk_size - gathered) as usize).min(piece.len());
                    pieces.push(piece.split_to(room));
                    gathered += room as u64;
                    pos += room as u64;
                    if gathered == chunk_size || pos == source.size {
                        publish(&shared, &source, std::mem::take(&mut pieces), &config).await;
                        gathered = 0;
                        chunk_size = (chunk_size * 2).min(CHUNK_SIZE);
                    }
                }
                if pos >= request_end {
                    break;
                }
            }
            Ok::<(), ApiError>(())
        }
        .await;
        match outcome {
            Ok(()) if pos >= request_end => {
                request = (request * 2).clamp(second, config.max_request.max(second));
            }
            Ok(()) => {
                let expected = source.size - start;
                let got = pos - start;
                fail(&shared, PrefetchError::Short { expected, got });
                return;
            }
            Err(e) if e.retry_now() && attempt + 1 < config.attempts.max(1) => {
                attempt += 1;
                tracing::warn!(path = %source.path, offset = pos, attempt, "download failed, resuming: {e}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                fail(&shared, PrefetchError::Api(e));
                return;
            }
        }
    }
}

/// Append a chunk (its pieces) for the reader and the data cache, then wait while far enough
/// ahead.
async fn publish(
    shared: &Shared,
    source: &PrefetchSource,
    pieces: Vec<Bytes>,
    config: &PrefetchConfig,
) {
    let chunk_start;
    {
        let mut queue = shared.queue.lock().unwrap();
        chunk_start = queue.end;
        for piece in &pieces {
            queue.end += piece.len() as u64;
            queue.pieces.push_back(piece.clone());
        }
    }
    shared.data_ready.notify_waiters();
    if let Some(cache) = &source.cache {
        cache.submit_parts(&source.key, chunk_start, &pieces);
    }
    loop {
        let room = shared.room.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        {
            let queue = shared.queue.lock().unwrap();
            if queue.end < queue.read_to + config.max_ahead {
                return;
            }
        }
        room.await;
    }
}

fn fail(shared: &Shared, error: PrefetchError) {
    shared.queue.lock().unwrap().error = Some(error);
    shared.data_ready.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_of(start: u64, pieces: &[&[u8]]) -> Queue {
        let pieces: VecDeque<Bytes> = pieces.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        let len: u64 = pieces.iter().map(|c| c.len() as u64).sum();
        Queue {
            pieces,
            start,
            end: start + len,
            read_to: start,
            error: None,
        }
    }

    #[test]
    fn ranges_are_sliced_within_a_piece_and_copied_across_pieces() {
        let queue = queue_of(10, &[b"abcd", b"efgh", b"ij"]);
        assert_eq!(copy_range(&queue, 11, 13), Bytes::from_static(b"bc"));
        assert_eq!(copy_range(&queue, 12, 19), Bytes::from_static(b"cdefghi"));
        assert_eq!(
            copy_range(&queue, 10, 20),
            Bytes::from_static(b"abcdefghij")
        );
        assert_eq!(copy_range(&queue, 14, 18), Bytes::from_static(b"efgh"));
    }

    #[tokio::test]
    async fn the_body_is_queued_as_received_and_copied_only_across_pieces() {
        use crate::api::memory::{MemoryCellsApi, MemoryWorkspace};
        let api = Arc::new(MemoryCellsApi::new(vec![MemoryWorkspace::new("ws", true)]));
        let content: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        api.put_file("ws/f", &content);
        // The memory server sends slices of the stored content (64 KiB pieces): where the
        // stored bytes lie tells whether the reader got them without a copy.
        let mut body = api.get_object("ws/f", None).await.unwrap();
        let stored = body.next().await.unwrap().unwrap().as_ptr();
        drop(body);
        let source = PrefetchSource {
            api: api.clone(),
            path: "ws/f".into(),
            key: "k".into(),
            size: content.len() as u64,
            cache: None,
            version: None,
        };
        let config = PrefetchConfig {
            max_ahead: 8 * 1024 * 1024,
            keep_behind: 1024 * 1024,
            opening_request: 128 * 1024,
            second_request: 1024 * 1024,
            max_request: 4 * 1024 * 1024,
            attempts: 1,
            retry_delay: Duration::from_millis(1),
        };
        let prefetcher = Prefetcher::start(source, 0, config, None);
        // Across a piece boundary (64 KiB): copied, and right.
        let got = prefetcher.read(65_000, 2000).await.unwrap();
        assert!(got[..] == content[65_000..67_000]);
        // Within the second piece, and within a piece of the second GET.
        for (offset, len) in [(70_000u64, 1000u64), (2_100_000, 5000)] {
            let got = prefetcher.read(offset, len).await.unwrap();
            assert!(got[..] == content[offset as usize..(offset + len) as usize]);
            assert_eq!(
                got.as_ptr(),
                stored.wrapping_add(offset as usize),
                "a read within one piece is a slice of it"
            );
        }
        let got = prefetcher.read(3 * 1024 * 1024 - 10, 100).await.unwrap();
        assert!(
            got[..] == content[content.len() - 10..],
            "clipped at the end"
        );
    }

    #[test]
    fn trimming_keeps_the_bytes_just_behind_the_reader() {
        let mut queue = queue_of(0, &[b"abcd", b"efgh", b"ijkl"]);
        queue.read_to = 9;
        trim(&mut queue, 2);
        assert_eq!(
            queue.start, 4,
            "only the first piece lies wholly behind 9 - 2"
        );
        assert_eq!(copy_range(&queue, 7, 12), Bytes::from_static(b"hijkl"));
        queue.read_to = 12;
        trim(&mut queue, 0);
        assert!(queue.pieces.is_empty());
        assert_eq!(queue.start, 12);
    }
}
