//! How long the client waits on the server: a deadline per request, and a progress floor per
//! transfer, so that a server that stops answering (paused, overloaded, a dead link) costs an
//! error in bounded time instead of a hang. Used by [`super::http::HttpCellsApi`].
//!
//! Invariants:
//! - A request that is not a transfer (REST calls, HEAD, listings, copy, delete, multipart
//!   create/abort/complete, small PUTs sent from memory) is answered, body included, within
//!   [`Deadlines::request`], or fails with [`ApiError::Timeout`]. Retries of the other
//!   transient failures (refused connections, 5xx) stay within [`Deadlines::budget`] in all;
//!   a timeout is not retried.
//! - A transfer (an object's GET body, a PUT streamed from a file) is bounded on progress,
//!   never on its total time: it fails once [`Deadlines::transfer`] of waiting on the server
//!   moved fewer than `min_rate` bytes per second (nothing at all included). A download
//!   counts only the time its reader waits: a reader that pauses (the read-ahead is far
//!   enough ahead) is not a slow server. The wait for the first byte of a GET, and for the
//!   answer once an upload's body is sent, are bounded the same way.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;

use super::{ApiError, ByteStream, SentCounter};

/// The deadlines of requests and the progress floor of transfers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadlines {
    /// A request that is not a transfer fails when not answered in this time (`--request-timeout`).
    pub request: Duration,
    /// A transfer fails when this much time spent waiting on the server moved fewer than
    /// `min_rate` bytes a second, or nothing (`--transfer-timeout`).
    pub transfer: Duration,
    /// Bytes per second below which a transfer is stalled (`--min-transfer-rate`).
    pub min_rate: u64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            request: Duration::from_secs(30),
            transfer: Duration::from_secs(30),
            min_rate: 1024,
        }
    }
}

impl Deadlines {
    /// How long one call (a request and its retries) may take in all: one and a half
    /// request deadlines.
    pub fn budget(&self) -> Duration {
        self.request.mul_f64(1.5)
    }

    /// Bytes a transfer must move in each window of [`Deadlines::transfer`] (at least one).
    pub fn window_floor(&self) -> u64 {
        ((self.min_rate as f64 * self.transfer.as_secs_f64()) as u64).max(1)
    }

    fn stalled(&self, what: &str, moved: u64) -> ApiError {
        ApiError::Timeout(format!(
            "{what}: {moved} bytes in {:?}, under the floor of {} bytes/s",
            self.transfer, self.min_rate
        ))
    }
}

/// A download body that fails with [`ApiError::Timeout`] once the server moves too little
/// while the reader waits (see the module's invariants).
pub fn guard_download(inner: ByteStream, deadlines: Deadlines, what: String) -> ByteStream {
    Box::pin(GuardedDownload {
        inner,
        deadlines,
        what,
        waited: Duration::ZERO,
        moved: 0,
        waiting_since: None,
        timer: None,
        failed: false,
    })
}

struct GuardedDownload {
    inner: ByteStream,
    deadlines: Deadlines,
    what: String,
    /// Time the reader spent waiting in the current window (before `waiting_since`).
    waited: Duration,
    /// Bytes received in the current window.
    moved: u64,
    /// The reader waits since then (the last poll was pending).
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl Stream for GuardedDownload {
    type Item = Result<Bytes, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(since) = this.waiting_since.take() {
                        this.waited += since.elapsed();
                    }
                    this.moved += chunk.len() as u64;
                    if this.waited >= this.deadlines.transfer {
                        // A whole window of waiting: it moved enough (else it failed below).
                        this.waited = Duration::ZERO;
                        this.moved = 0;
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(other) => {
                    this.waiting_since = None;
                    this.timer = None;
                    return Poll::Ready(other);
                }
                Poll::Pending => {}
            }
            let now = Instant::now();
            let since = *this.waiting_since.get_or_insert(now);
            let waited = this.waited + now.saturating_duration_since(since);
            if waited >= this.deadlines.transfer {
                if this.moved < this.deadlines.window_floor() {
                    this.failed = true;
                    return Poll::Ready(Some(Err(this.deadlines.stalled(&this.what, this.moved))));
                }
                this.waited = Duration::ZERO;
                this.moved = 0;
                this.waiting_since = Some(now);
            }
            let since = this.waiting_since.expect("set above");
            let window_end = tokio::time::Instant::from_std(
                since + this.deadlines.transfer.saturating_sub(this.waited),
            );
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(window_end)));
            if timer.deadline() != window_end {
                timer.as_mut().reset(window_end);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The window ended while waiting: check it (the inner stream is polled again first,
            // in case its bytes came at the same moment).
        }
    }
}

/// Counts the bytes of an upload body as the HTTP client takes them (and into the upload's
/// own [`SentCounter`], when it has one).
#[derive(Clone, Default)]
pub struct UploadProgress(Arc<AtomicU64>, Option<SentCounter>);

impl UploadProgress {
    /// A progress that also counts into `also`.
    pub fn also(also: Option<SentCounter>) -> UploadProgress {
        UploadProgress(Arc::default(), also)
    }

    /// Count `n` bytes sent without a stream (a body sent whole).
    pub fn credit(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
        if let Some(also) = &self.1 {
            also.add(n);
        }
    }

    /// Take this attempt's bytes back from the upload's counter (the attempt failed).
    pub fn take_back(&self) {
        if let Some(also) = &self.1 {
            also.take_back(self.0.swap(0, Ordering::Relaxed));
        }
    }

    /// `stream`, counting into this progress.
    pub fn counting<S, E>(&self, stream: S) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    {
        use futures::StreamExt;
        let sent = self.0.clone();
        let also = self.1.clone();
        stream.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if let Some(also) = &also {
                    also.add(chunk.len() as u64);
                }
            }
        })
    }

    fn sent(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Resolves with the error to report once the upload of `total` bytes stalls: fewer than
    /// the floor in a window while the body is being sent, or no answer within the request
    /// deadline once it is all sent. Race it with the request.
    pub async fn watchdog(&self, total: u64, deadlines: Deadlines, what: &str) -> ApiError {
        let mut before = self.sent();
        loop {
            tokio::time::sleep(deadlines.transfer).await;
            let now = self.sent();
            if now >= total {
                tokio::time::sleep(deadlines.request).await;
                return ApiError::Timeout(format!(
                    "{what}: no answer {:?} after the upload",
                    deadlines.request
                ));
            }
            if now - before < deadlines.window_floor() {
                return deadlines.stalled(what, now - before);
            }
            before = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn short() -> Deadlines {
        Deadlines {
            request: Duration::from_millis(200),
            transfer: Duration::from_millis(200),
            min_rate: 1000,
        }
    }

    fn every(period: Duration, chunk: &'static [u8], count: usize) -> ByteStream {
        Box::pin(
            futures::stream::repeat_with(move || Ok(Bytes::from_static(chunk)))
                .then(move |b| async move {
                    tokio::time::sleep(period).await;
                    b
                })
                .take(count),
        )
    }

    #[tokio::test]
    async fn a_silent_download_fails_after_one_window() {
        let silent: ByteStream = Box::pin(futures::stream::pending());
        let mut guarded = guard_download(silent, short(), "f".into());
        let started = Instant::now();
        let item = tokio::time::timeout(Duration::from_secs(20), guarded.next())
            .await
            .expect("an answer in bounded time")
            .expect("an error, not the end");
        assert!(matches!(item, Err(ApiError::Timeout(_))), "{item:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(guarded.next().await.is_none());
    }

    #[tokio::test]
    async fn a_trickle_fails_and_a_steady_stream_passes() {
        // One byte every 50 ms: about 4 bytes per 200 ms window, under the floor of 200.
        let trickle = every(Duration::from_millis(50), b"x", 400);
        let received: Vec<_> = guard_download(trickle, short(), "f".into()).collect().await;
        assert!(matches!(received.last(), Some(Err(ApiError::Timeout(_)))));
        assert!(received.len() < 100, "{}", received.len());
        // 1,000 bytes every 20 ms: far over the floor, to the end.
        let steady = every(Duration::from_millis(20), &[0u8; 1000], 40);
        let received: Vec<_> = guard_download(steady, short(), "f".into()).collect().await;
        assert_eq!(received.len(), 40);
        assert!(received.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn a_reader_that_pauses_is_not_a_slow_server() {
        let bytes: ByteStream = Box::pin(futures::stream::iter(
            (0..3).map(|_| Ok(Bytes::from_static(b"abc"))),
        ));
        let mut guarded = guard_download(bytes, short(), "f".into());
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(guarded.next().await.unwrap().is_ok());
        }
        assert!(guarded.next().await.is_none());
    }

    #[tokio::test]
    async fn an_upload_watchdog_fires_on_a_stall_and_after_a_silent_end() {
        let progress = UploadProgress::default();
        let err = progress.watchdog(10_000, short(), "f").await;
        assert!(matches!(err, ApiError::Timeout(_)), "{err:?}");
        progress.0.store(10_000, Ordering::Relaxed);
        let started = Instant::now();
        let err = progress.watchdog(10_000, short(), "f").await;
        assert!(err.to_string().contains("after the upload"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(400));
    }
}
