//! The workspace list and what it allows: the mount root's entries, the mode bits a path
//! shows ([`CellsFs::writable_cached`]) and the check every change passes first
//! ([`CellsFs::check_writable`]: a read-only mount, the recycle bin, a read-only workspace).
//! The list is cached for the folder cache time and served as known while the server does
//! not answer (see `outage`).
//!
//! A write (permission check, recycle-bin choice) never waits for the list to be fetched
//! again once it is older than the folder cache time; it uses the list it has and a refresh
//! starts in the background (issue 30: at 20 ms a request, every write after 5 s of quiet
//! paid one more round trip first).
//!
//! Invariants of that stale list:
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
use std::time::{Duration, Instant};

use super::{CellsFs, FsError, FsResult, Workspace, in_recycle_bin};

/// How old a list writes may use while a fresh one is fetched.
const STALE_AT_MOST: Duration = Duration::from_secs(60);

/// How long writes use the list without refreshing it while the change events are live.
const TRUSTED_WHILE_LIVE: Duration = Duration::from_secs(60);

/// Whether a background refresh is under way.
#[derive(Default)]
pub(crate) struct Refresh {
    running: AtomicBool,
}

/// The workspace list, when it was fetched, and under which generation.
pub(super) type CachedWorkspaces = Option<(Arc<Vec<Workspace>>, Instant, u64)>;

impl CellsFs {
    pub(super) async fn workspaces(&self) -> FsResult<Arc<Vec<Workspace>>> {
        if let Some((list, at, generation)) = self.inner.workspaces.lock().unwrap().as_ref()
            && self.fresh(Some((*at, *generation)), self.inner.options.dir_cache_time)
        {
            return Ok(list.clone());
        }
        // The server is away: the list known, without waiting for it (see `outage`).
        self.inner
            .outage
            .cached_or_ask(|| self.known_workspaces().map(Ok), self.fetch_workspaces())
            .await
    }

    /// The workspace list last fetched, however old.
    fn known_workspaces(&self) -> Option<Arc<Vec<Workspace>>> {
        let cached = self.inner.workspaces.lock().unwrap();
        cached.as_ref().map(|(list, _, _)| list.clone())
    }

    /// The workspace list from the server (the one known when it is away).
    async fn fetch_workspaces(&self) -> FsResult<Arc<Vec<Workspace>>> {
        match self.inner.api.list_workspaces().await {
            Ok(list) => {
                self.inner.outage.answered();
                let list = Arc::new(list);
                *self.inner.workspaces.lock().unwrap() =
                    Some((list.clone(), Instant::now(), self.generation()));
                Ok(list)
            }
            Err(e) => {
                let e = FsError::api("listing workspaces", e);
                self.inner.outage.failed(&e);
                self.known_workspaces().ok_or(e)
            }
        }
    }

    pub(super) async fn workspace_of(&self, path: &str) -> FsResult<Workspace> {
        let slug = path.split('/').next().unwrap_or("");
        self.workspaces_for_write()
            .await?
            .iter()
            .find(|w| w.slug == slug)
            .cloned()
            .ok_or_else(|| FsError::NotFound(path.to_string()))
    }

    /// Whether `path` may be changed, as reported in mode bits (no server call when the
    /// workspaces are cached).
    pub(super) fn writable_cached(&self, path: &str) -> bool {
        if self.inner.options.read_only || in_recycle_bin(path) {
            return false;
        }
        if path.is_empty() {
            return false;
        }
        let slug = path.split('/').next().unwrap_or("");
        let cached = self.inner.workspaces.lock().unwrap();
        cached
            .as_ref()
            .and_then(|(list, _, _)| list.iter().find(|w| w.slug == slug).map(|w| w.can_write))
            .unwrap_or(true)
    }

    /// Refuse changes to `path` (an entry being created, changed or removed) where the mount,
    /// the workspace or the recycle bin is read-only.
    pub(super) async fn check_writable(&self, path: &str) -> FsResult<()> {
        if self.inner.options.read_only {
            return Err(FsError::ReadOnly(format!("{path} (read-only mount)")));
        }
        if !path.contains('/') {
            return Err(FsError::PermissionDenied(format!(
                "{path}: the mount root only lists workspaces"
            )));
        }
        if in_recycle_bin(path) {
            return Err(FsError::ReadOnly(format!(
                "{path} (the recycle bin is read-only; restore with `cec`)"
            )));
        }
        let ws = self.workspace_of(path).await?;
        if !ws.can_write {
            return Err(FsError::ReadOnly(format!(
                "{path} (workspace {} is read-only)",
                ws.slug
            )));
        }
        Ok(())
    }

    /// The workspace list for a write: the cached one at once, refreshed in the background
    /// when it is older than the folder cache time (see the module's invariants).
    async fn workspaces_for_write(&self) -> FsResult<Arc<Vec<Workspace>>> {
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
