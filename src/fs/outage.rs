//! The server's outages as the metadata paths see them: while the server does not answer
//! (timeouts, refused connections, 5xx), lookups, attributes and listings whose cache expired
//! are answered from what the cache still holds instead of failing, and without waiting for a
//! deadline each time.
//!
//! Invariants:
//! - The outage starts with the first request that fails for want of the server and ends with
//!   the first that succeeds; each is logged once (a warning, then a notice), never per request.
//! - While it lasts, at most one request per [`RECHECK`] asks the server (the probe) among
//!   those that could be answered from the cache; the others are answered from it at once.
//!   Everything the probe does on its way asks the server too ([`Outage::probing`]): a lookup
//!   that needs its folder's listing, a listing that needs the workspaces.
//!   A request that has nothing cached asks the server, bounded by the request deadline.
//! - A stale answer is what the cache last knew; once given, it is trusted for one TTL as if
//!   the server had just said it, and the first answer of the server replaces it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::FsError;

/// While the server is away, how often a request that could be answered from the cache asks
/// the server instead (to learn that it is back).
pub(crate) const RECHECK: Duration = Duration::from_secs(5);

tokio::task_local! {
    /// Set while a request that was granted the probe runs.
    static PROBING: ();
}

#[derive(Default)]
pub(crate) struct Outage {
    /// When a request last failed for want of the server, or a probe started; `None` while
    /// the server answers.
    last: Mutex<Option<Instant>>,
}

impl Outage {
    /// Whether `error` means the server is away rather than refusing the request.
    pub fn is_away(error: &FsError) -> bool {
        matches!(error, FsError::Api { source, .. } if source.is_transient())
    }

    /// Whether an outage is going on.
    pub fn ongoing(&self) -> bool {
        self.last.lock().unwrap().is_some()
    }

    /// During an outage, whether the caller, which could answer from the cache, should ask the
    /// server instead: once per [`RECHECK`].
    pub fn probe(&self) -> bool {
        if PROBING.try_with(|_| ()).is_ok() {
            return true;
        }
        let mut last = self.last.lock().unwrap();
        match *last {
            Some(at) if at.elapsed() < RECHECK => false,
            Some(_) => {
                *last = Some(Instant::now());
                true
            }
            None => true,
        }
    }

    /// Run `request`, which was granted the probe: the checks it passes through again ask the
    /// server as well, instead of answering from the cache (the probe would be spent on the
    /// first check and the request answered from the cache by the next).
    pub async fn probing<F: std::future::Future>(request: F) -> F::Output {
        PROBING.scope((), request).await
    }

    /// What a request answers: during an outage, what the cache knows (`cached`), at once,
    /// unless this request is the probe; otherwise (or as the probe) the server's answer
    /// (`ask`).
    pub async fn cached_or_ask<T, F>(&self, cached: impl FnOnce() -> Option<T>, ask: F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        if self.ongoing()
            && let Some(known) = cached()
        {
            if !self.probe() {
                return known;
            }
            return Outage::probing(ask).await;
        }
        ask.await
    }

    /// A request failed with `error`: an outage starts (or goes on) if it means the server is
    /// away. Returns whether it does.
    pub fn failed(&self, error: &FsError) -> bool {
        if !Outage::is_away(error) {
            return false;
        }
        let mut last = self.last.lock().unwrap();
        if last.is_none() {
            tracing::warn!(
                "the server does not answer ({error}): answering from the cache until it does"
            );
        }
        *last = Some(Instant::now());
        true
    }

    /// A request to the server succeeded: the outage, if any, is over.
    pub fn answered(&self) {
        let mut last = self.last.lock().unwrap();
        if last.take().is_some() {
            tracing::info!("the server answers again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;

    #[test]
    fn an_outage_starts_on_silence_not_on_refusals_and_probes_sparingly() {
        let outage = Outage::default();
        assert!(outage.probe());
        assert!(!outage.failed(&FsError::api("p", ApiError::NotFound("p".into()))));
        assert!(!outage.ongoing());
        assert!(outage.failed(&FsError::api("p", ApiError::Timeout("p".into()))));
        assert!(outage.ongoing());
        assert!(!outage.probe(), "just failed: answer from the cache");
        *outage.last.lock().unwrap() = Some(Instant::now() - RECHECK);
        assert!(outage.probe(), "one probe per RECHECK");
        assert!(!outage.probe());
        outage.answered();
        assert!(!outage.ongoing());
        assert!(outage.probe());
    }

    #[tokio::test]
    async fn what_a_probe_does_on_its_way_asks_the_server_too() {
        let outage = Outage::default();
        outage.failed(&FsError::api("p", ApiError::Timeout("p".into())));
        *outage.last.lock().unwrap() = Some(Instant::now() - RECHECK);
        assert!(outage.probe());
        let nested = Outage::probing(async { (outage.probe(), outage.probe()) }).await;
        assert_eq!(nested, (true, true), "inside the probe");
        assert!(!outage.probe(), "outside it: answered from the cache");
    }
}
