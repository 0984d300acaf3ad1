//! What the mount reports about itself and how it retries: the status `cec mount --status`
//! shows ([`CellsFs::status`]), the recent errors worth showing to the user, `statfs`, and
//! the retry policy of requests ([`Retry`]).
//!
//! Invariants:
//! - At most [`RECENT_ERRORS`] errors are kept, oldest dropped first; each is also logged once.
//! - A request is retried only on a transient error (never after a timeout: the server stayed
//!   silent for a whole deadline already), the delay doubling, as many attempts as the
//!   options say.
//! - The status reads counters and tables only: it never waits for the server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{BUDGET_UNIT, CellsFs, FsResult, FsStatus, PendingUpload, RecentError, StatFs, cache};

/// How a request is retried: transient errors only (not a timeout: the server stayed silent
/// for a whole deadline already), `attempts` in all, the delay doubling.
#[derive(Clone, Copy)]
pub(super) struct Retry {
    pub attempts: u32,
    pub delay: Duration,
}

impl Retry {
    pub(super) async fn run<T, F, Fut>(self, mut call: F) -> crate::api::ApiResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::api::ApiResult<T>>,
    {
        let mut delay = self.delay;
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.retry_now() && attempt < self.attempts.max(1) => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                result => return result,
            }
        }
    }
}

const RECENT_ERRORS: usize = 50;

impl CellsFs {
    /// Retries as the options say (the upload attempts and delay).
    pub(super) fn retry(&self) -> Retry {
        Retry {
            attempts: self.inner.options.upload_attempts,
            delay: self.inner.options.upload_retry_delay,
        }
    }

    pub(super) fn record_error(&self, message: String) {
        tracing::warn!("{message}");
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut errors = self.inner.errors.lock().unwrap();
        errors.push_back(RecentError { at, message });
        while errors.len() > RECENT_ERRORS {
            errors.pop_front();
        }
    }

    pub async fn statfs(&self, _ino: u64) -> FsResult<StatFs> {
        let bsize = cache::BLOCK_SIZE as u32;
        let blocks = (1u64 << 50) / bsize as u64;
        Ok(StatFs {
            blocks,
            bfree: blocks,
            bavail: blocks,
            files: 1 << 32,
            ffree: 1 << 32,
            bsize,
            namelen: 255,
            frsize: bsize,
        })
    }

    /// Pending uploads, cache use, recent errors.
    pub fn status(&self) -> FsStatus {
        let table = self.inner.table.lock().unwrap();
        let mut pending_uploads = Vec::new();
        for (&ino, data) in table.inodes.iter() {
            if let Some(file) = &data.file
                && let Some(s) = file.staging.lock().unwrap().as_ref()
                && s.dirty()
                && !data.detached
            {
                let progress = self.inner.progress.get(ino);
                pending_uploads.push(PendingUpload {
                    path: data.path.clone(),
                    size: s.size,
                    attempts: s.attempts,
                    sent: progress.sent,
                    rate: progress.rate,
                    starts_in_secs: progress.starts_in.map(|d| d.as_secs_f64().ceil() as u64),
                });
            }
        }
        pending_uploads.sort_by(|a, b| a.path.cmp(&b.path));
        let inodes = table.inodes.len();
        drop(table);
        let budget_total =
            (self.inner.options.read_ahead_budget / BUDGET_UNIT).clamp(1, u32::MAX as u64 >> 3);
        let available = self.inner.read_budget.available_permits() as u64;
        FsStatus {
            pending_uploads,
            cache_bytes: self.inner.data_cache.as_ref().map_or(0, |c| c.used()),
            cache_capacity: self.inner.data_cache.as_ref().map_or(0, |c| c.capacity()),
            read_ahead_bytes: budget_total.saturating_sub(available) * BUDGET_UNIT,
            recent_errors: self.inner.errors.lock().unwrap().iter().cloned().collect(),
            recovered_files: self.inner.journal.recovered(),
            conflict_copies: self.conflict_copies(),
            inodes,
            open_handles: self.inner.handles.lock().unwrap().len(),
            generation: self.generation(),
        }
    }
}
