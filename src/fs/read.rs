//! Reading a file: from its staged content when it is open for writing here, else from the
//! server, through the handle's sequential read-ahead (see `prefetch`), the on-disk data
//! cache (see `cache`) or one ranged GET of the blocks needed.
//!
//! Invariants:
//! - A read returns fewer bytes than asked only at the end of the file; a body shorter than
//!   announced means the content changed on the server: its metadata is marked stale and
//!   the read fails rather than return a mix.
//! - Read-ahead starts only once the reader is sequential ([`STREAK_TO_PREFETCH`] reads in a
//!   row, or a read at offset 0) and all read-ahead buffers together stay within the global
//!   budget (semaphore permits of [`BUDGET_UNIT`] bytes).
//! - Cached blocks are keyed by the content (Uuid + Etag, see `Meta::content_key`): a new
//!   version never reads an old one's blocks. A sequential stream of a file larger than a
//!   [`STREAM_CACHE_SHARE`] share of the cache does not fill the cache.
//! - `read_ready` serves only bytes already waiting in the handle's read-ahead, without
//!   waiting and without changing anything otherwise.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{CellsFs, FsError, FsResult, Handle, Meta, cache, prefetch, versions};
use crate::api::{ApiError, ByteRange};

/// Read state of one handle: where the last read ended, and the sequential read-ahead.
pub(super) struct ReadState {
    pub(super) next_offset: u64,
    /// Reads in a row that each began where the previous one ended.
    pub(super) streak: u32,
    pub(super) prefetch: Option<prefetch::Prefetcher>,
}

impl ReadState {
    /// A read of `[offset, end)` was served: count the streak of sequential reads.
    pub(super) fn advance(&mut self, offset: u64, end: u64) {
        self.streak = if offset == self.next_offset {
            self.streak + 1
        } else {
            0
        };
        self.next_offset = end;
    }
}

/// Sequential reads in a row (after the first) before a stream starts: a random read split
/// by the kernel into two requests must not start one. A read at offset 0 starts at once.
pub(super) const STREAK_TO_PREFETCH: u32 = 2;

/// A file streamed sequentially is stored in the data cache only when it takes at most this
/// fraction (1/N) of the cache's capacity (see `CellsFs::stream_cache_writer`).
const STREAM_CACHE_SHARE: u64 = 4;

/// Read-ahead budget unit (semaphore permits are KiB).
pub(super) const BUDGET_UNIT: u64 = 1024;

impl CellsFs {
    /// Read up to `size` bytes at `offset` (fewer only at end of file).
    pub async fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        if versions::is_virtual(ino) {
            return self.versions_read(ino, fh, offset, size).await;
        }
        let handle = self.handle(fh)?;
        let (file, path, meta) = {
            let table = self.inner.table.lock().unwrap();
            let data = table.get(ino)?;
            (data.file.clone(), data.path.clone(), data.meta.clone())
        };
        if let Some(file) = file {
            let guard = file.staging.lock().unwrap();
            if let Some(staging) = guard.as_ref() {
                if let Some(failed) = &staging.failed {
                    return Err(failed.clone());
                }
                let end = (offset + size as u64).min(staging.size);
                if offset >= end {
                    return Ok(Bytes::new());
                }
                let mut buf = vec![0u8; (end - offset) as usize];
                staging.content.read_exact_at(&mut buf, offset)?;
                return Ok(Bytes::from(buf));
            }
        }
        self.read_remote(&handle, &path, &meta, offset, size as u64)
            .await
    }

    /// [`CellsFs::read`] when the bytes wait in the handle's read-ahead already, without
    /// waiting: `None` otherwise (and nothing changed). A sequential reader is mostly served
    /// so, straight from the request thread.
    pub fn read_ready(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Option<Bytes> {
        let handle = self.handle(fh).ok()?;
        let key = {
            let table = self.inner.table.lock().unwrap();
            let data = table.get(ino).ok()?;
            if data
                .file
                .as_ref()
                .is_some_and(|f| f.staging.lock().unwrap().is_some())
            {
                return None;
            }
            let end = (offset + size as u64).min(data.meta.size);
            if offset >= end {
                return None;
            }
            data.meta.content_key(&data.path)
        };
        let mut state = handle.read.try_lock().ok()?;
        let prefetcher = state.prefetch.as_ref()?;
        if !prefetcher.covers(&key, offset) {
            return None;
        }
        let bytes = prefetcher.read_now(offset, size as u64)?;
        state.advance(offset, offset + bytes.len() as u64);
        Some(bytes)
    }

    /// A read from the server: from the handle's sequential read-ahead when the reader is
    /// sequential, else from the data cache or one ranged GET of the blocks needed.
    async fn read_remote(
        &self,
        handle: &Handle,
        path: &str,
        meta: &Meta,
        offset: u64,
        size: u64,
    ) -> FsResult<Bytes> {
        let end = (offset + size).min(meta.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let key = meta.content_key(path);
        let mut state = handle.read.lock().await;
        state.advance(offset, end);
        if let Some(prefetcher) = &state.prefetch
            && prefetcher.covers(&key, offset)
        {
            let result = self.read_prefetched(prefetcher, path, offset, end).await;
            if result.is_err() {
                // The next read starts afresh (a new stream, new retries).
                state.prefetch = None;
            }
            return result;
        }
        state.prefetch = None;
        if let Some(bytes) = self.read_cached(&key, meta.size, offset, end) {
            return Ok(bytes);
        }
        if offset == 0 || state.streak > STREAK_TO_PREFETCH {
            let prefetcher = self.start_prefetch(path, key, meta.size, offset, None);
            let result = self.read_prefetched(&prefetcher, path, offset, end).await;
            if result.is_ok() {
                state.prefetch = Some(prefetcher);
            }
            return result;
        }
        // A random read: the blocks it needs, once, into the data cache.
        let block_start = offset / cache::BLOCK_SIZE * cache::BLOCK_SIZE;
        let want = ((end - block_start).div_ceil(cache::BLOCK_SIZE) * cache::BLOCK_SIZE)
            .max(self.inner.options.read_ahead_initial)
            .min(meta.size - block_start);
        let bytes = self.fetch_range(path, block_start, want).await?;
        if bytes.len() as u64 != want {
            return Err(self.short_body(path, want, bytes.len() as u64));
        }
        if let Some(writer) = &self.inner.cache_writer {
            writer.submit_range(&key, block_start, &bytes);
        }
        Ok(bytes.slice((offset - block_start) as usize..(end - block_start) as usize))
    }

    /// `[offset, end)` from the data cache when every block of it is there.
    pub(super) fn read_cached(&self, key: &str, size: u64, offset: u64, end: u64) -> Option<Bytes> {
        self.inner.data_cache.as_ref()?.read(key, size, offset, end)
    }

    /// Where a sequential stream of a `size`-byte file stores its blocks: the data cache,
    /// unless the file would take more than [`STREAM_CACHE_SHARE`] of its capacity. A
    /// one-time read of a large file (a video, a backup being restored) would otherwise
    /// evict everything else and cost more CPU to store than to download; the kernel's page
    /// cache still keeps it while memory allows, and random reads of it are still cached.
    fn stream_cache_writer(&self, size: u64) -> Option<cache::CacheWriter> {
        let capacity = self.inner.data_cache.as_ref()?.capacity();
        if size > capacity / STREAM_CACHE_SHARE {
            return None;
        }
        self.inner.cache_writer.clone()
    }

    /// A sequential read-ahead from `offset`, sized by the global read-ahead budget.
    pub(super) fn start_prefetch(
        &self,
        path: &str,
        key: String,
        size: u64,
        offset: u64,
        version: Option<String>,
    ) -> prefetch::Prefetcher {
        let options = &self.inner.options;
        let keep_behind = 4 * 1024 * 1024;
        let wanted = options.read_ahead_max.max(cache::BLOCK_SIZE);
        let units = (wanted + keep_behind + 1024 * 1024).div_ceil(BUDGET_UNIT) as u32;
        let (max_ahead, permit) = match self.inner.read_budget.clone().try_acquire_many_owned(units)
        {
            Ok(permit) => (wanted, Some(permit)),
            // The budget is spent by other readers: a small window outside it.
            Err(_) => (options.read_ahead_initial.max(cache::BLOCK_SIZE), None),
        };
        let source = prefetch::PrefetchSource {
            api: self.inner.api.clone(),
            path: path.to_string(),
            key,
            size,
            cache: self.stream_cache_writer(size),
            version,
        };
        let config = prefetch::PrefetchConfig {
            max_ahead,
            keep_behind,
            opening_request: options.read_ahead_initial,
            second_request: 8 * 1024 * 1024,
            max_request: 256 * 1024 * 1024,
            attempts: options.upload_attempts.max(1),
            retry_delay: options.upload_retry_delay,
        };
        prefetch::Prefetcher::start(source, offset, config, permit)
    }

    /// A body shorter than announced: the content changed on the server since it was
    /// listed. Its metadata is no longer trusted.
    pub(super) fn short_body(&self, path: &str, expected: u64, got: u64) -> FsError {
        self.mark_stale(path);
        FsError::api(
            path,
            ApiError::InvalidResponse(format!(
                "expected {expected} bytes, got {got} (changed on the server?)"
            )),
        )
    }

    pub(super) async fn read_prefetched(
        &self,
        prefetcher: &prefetch::Prefetcher,
        path: &str,
        offset: u64,
        end: u64,
    ) -> FsResult<Bytes> {
        match prefetcher.read(offset, end - offset).await {
            Ok(bytes) => Ok(bytes),
            Err(prefetch::PrefetchError::Api(e)) => Err(FsError::api(path, e)),
            Err(prefetch::PrefetchError::Short { expected, got }) => {
                Err(self.short_body(path, expected, got))
            }
        }
    }

    /// A ranged GET read whole; a transient failure (also a connection cut mid-body) is
    /// retried from the start of the range, with backoff.
    pub(super) async fn fetch_range(&self, path: &str, offset: u64, len: u64) -> FsResult<Bytes> {
        let attempts = self.inner.options.upload_attempts.max(1);
        let mut delay = self.inner.options.upload_retry_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_range_once(path, offset, len).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) if e.retry_now() && attempt < attempts => {
                    tracing::warn!(%path, offset, attempt, "download failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(FsError::api(path, e)),
            }
        }
    }

    async fn fetch_range_once(&self, path: &str, offset: u64, len: u64) -> Result<Bytes, ApiError> {
        let mut stream = self
            .inner
            .api
            .get_object(
                path,
                Some(ByteRange {
                    offset,
                    len: Some(len),
                }),
            )
            .await?;
        let mut out = BytesMut::with_capacity(len as usize);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }

    fn mark_stale(&self, path: &str) {
        let mut table = self.inner.table.lock().unwrap();
        if let Some(&ino) = table.by_path.get(path)
            && let Some(data) = table.inodes.get_mut(&ino)
        {
            data.validated = None;
        }
    }
}
