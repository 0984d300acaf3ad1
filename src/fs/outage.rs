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
//!   A request that has nothing cached asks the server, bounded by the request deadline.
//! - A stale answer is what the cache last knew; once given, it is trusted for one TTL as if
//!   the server had just said it, and the first answer of the server replaces it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::FsError;

/// While the server is away, how often a request that could be answered from the cache asks
/// the server instead (to learn that it is back).
pub(crate) const RECHECK: Duration = Duration::from_secs(5);

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
}
