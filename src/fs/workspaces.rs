//! The workspace list as writes consult it: a write (permission check, recycle-bin choice)
//! never waits for the list to be fetched again once it is older than the folder cache time;
//! it uses the list it has and a refresh starts in the background (issue 30: at 20 ms a
//! request, every write after 5 s of quiet paid one more round trip first).
//!
//! Invariants:
//! - Only within the cache generation the list was fetched in (a flush, an event about the
//!   user's workspaces or a reconnection of the event stream makes the next caller wait for
//!   a fresh list), and only while it is younger than [`STALE_AT_MOST`]: beyond that a write
//!   waits as before.
//! - One background refresh at a time; its failure is the same as a foreground one's (noted
//!   by the outage tracker) and leaves the old list in place.
//! - The server stays the judge: a write the stale list allows but the server refuses fails
//!   with the server's answer, as it would have a moment later anyway.
//! - Listings of the mount's root (`ls` of the mountpoint) keep asking for a fresh list.
//! - While the server's change events are live, an event about the user's workspaces or
//!   rights (an IDM frame) flushes the list at once, so writes use it without any refresh for
//!   [`TRUSTED_WHILE_LIVE`] (a second `git status` no longer sends a workspace listing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{CellsFs, FsResult, Workspace};

/// How old a list writes may use while a fresh one is fetched.
const STALE_AT_MOST: Duration = Duration::from_secs(60);

/// How long writes use the list without refreshing it while the change events are live.
const TRUSTED_WHILE_LIVE: Duration = Duration::from_secs(60);

/// Whether a background refresh is under way.
#[derive(Default)]
pub(crate) struct Refresh {
    running: AtomicBool,
}

impl CellsFs {
    /// The workspace list for a write: the cached one at once, refreshed in the background
    /// when it is older than the folder cache time (see the module's invariants).
    pub(super) async fn workspaces_for_write(&self) -> FsResult<Arc<Vec<Workspace>>> {
        let live = self.inner.events_live.load(Ordering::SeqCst);
        let (refresh_after, stale_at_most) = if live {
            (TRUSTED_WHILE_LIVE, TRUSTED_WHILE_LIVE + STALE_AT_MOST)
        } else {
            (self.inner.options.dir_cache_time, STALE_AT_MOST)
        };
        let usable = {
            let cached = self.inner.workspaces.lock().unwrap();
            cached.as_ref().and_then(|(list, at, generation)| {
                (*generation == self.generation() && at.elapsed() < stale_at_most)
                    .then(|| (list.clone(), at.elapsed() >= refresh_after))
            })
        };
        let Some((list, refresh)) = usable else {
            return self.workspaces().await;
        };
        if !refresh {
            return Ok(list);
        }
        if !self
            .inner
            .workspace_refresh
            .running
            .swap(true, Ordering::SeqCst)
        {
            let fs = self.clone();
            tokio::spawn(async move {
                let _ = fs.workspaces().await;
                fs.inner
                    .workspace_refresh
                    .running
                    .store(false, Ordering::SeqCst);
            });
        }
        Ok(list)
    }
}
