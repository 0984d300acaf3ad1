//! Trust in what is cached, and what makes it stale: the cache generation, the TTLs (longer
//! while the server's change events arrive), the remote changes the events client reports
//! ([`CellsFs::invalidate`]) and the kernel invalidations they cause.
//!
//! Invariants:
//! - A cached answer is valid only while its TTL runs and its generation is the current one;
//!   bumping the generation ([`CellsFs::bump_generation`]) makes everything cached stale at
//!   once (after an events reconnect, when events may have been lost).
//! - While events are live, answers about paths Cells announces are trusted for
//!   [`FsOptions::events_cache_time`] and the kernel is given matching TTLs; paths Cells never
//!   announces (dotfiles, anything under a dot-folder) keep the plain TTLs. When the stream
//!   stops, the kernel is told to forget what it holds from this mount.
//! - A remote change drops exactly what it makes stale (the node, its folder's listing, a
//!   moved subtree); an echo of this mount's own upload (same Etag) changes nothing.
//! - The kernel is notified only from one dedicated thread ([`CellsFs::set_notifier`]), never
//!   from a request or a task, and with no core lock held: a notification may block until a
//!   request in the same folder is answered.

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{
    CellsFs, InodeData, KernelNotifier, ROOT_INO, RemoteChange, Table, base_name, links,
    parent_path,
};

/// One request to the kernel, sent by the notifier thread.
pub(super) enum KernelInvalidation {
    Entry(u64, String),
    Inode(u64),
}

impl CellsFs {
    /// Give the core a way to invalidate kernel caches (once, after mounting).
    /// The notifier is only ever called from one dedicated thread, never from a request.
    pub fn set_notifier(&self, notifier: Arc<dyn KernelNotifier>) {
        let (sender, receiver) = std::sync::mpsc::channel::<KernelInvalidation>();
        let links_on = self.inner.options.links;
        if self.inner.notifier.set(sender).is_err() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("cec-invalidate".into())
            .spawn(move || {
                for request in receiver {
                    match request {
                        KernelInvalidation::Entry(parent, name) => {
                            notifier.invalidate_entry(parent, OsStr::new(&name));
                            // The link a `.rclonelink` file is shown as (`--links`).
                            if let Some(visible) =
                                links_on.then(|| links::visible_of(&name)).flatten()
                            {
                                notifier.invalidate_entry(parent, OsStr::new(visible));
                            }
                        }
                        KernelInvalidation::Inode(ino) => notifier.invalidate_inode(ino),
                    }
                }
            });
        if let Err(e) = spawned {
            self.record_error(format!("cannot start the kernel invalidation thread: {e}"));
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    pub(super) fn fresh(&self, stamp: Option<(Instant, u64)>, ttl: Duration) -> bool {
        stamp.is_some_and(|(at, generation)| generation == self.generation() && at.elapsed() < ttl)
    }

    /// How long the kernel may keep what the mount tells it about `data` without asking
    /// again: `--attr-timeout`, or, while change events arrive (they invalidate the kernel's
    /// copy precisely), what is left of the mount's own trust in it. Entries and attributes
    /// the kernel keeps are answered without a request to the daemon at all (`stat`, path
    /// walks), which is most of a metadata-heavy job such as a no-op `rsync`.
    pub(super) fn kernel_ttl(&self, data: &InodeData) -> Duration {
        let base = self.inner.options.attr_timeout;
        let trust = self.trusted_for(base, &data.path);
        match data.validated {
            Some((at, generation)) if trust > base && generation == self.generation() => {
                trust.saturating_sub(at.elapsed()).max(base)
            }
            _ => base,
        }
    }

    /// How long an answer about `path` validated under TTL `base` is trusted: longer while
    /// change events arrive, except for paths Cells never announces (dotfiles and whatever
    /// lives under a dot-folder).
    pub(super) fn trusted_for(&self, base: Duration, path: &str) -> Duration {
        if self.events_cover(path) {
            base.max(self.inner.options.events_cache_time)
        } else {
            base
        }
    }

    /// Whether a change of `path` elsewhere would reach this mount as an event now: the
    /// stream is live and Cells announces that path (not a dotfile, nor under a dot-folder).
    pub(super) fn events_cover(&self, path: &str) -> bool {
        let announced = !path.split('/').any(|part| part.starts_with('.'));
        announced && self.inner.events_live.load(Ordering::SeqCst)
    }

    pub(super) fn stamp(&self) -> Option<(Instant, u64)> {
        Some((Instant::now(), self.generation()))
    }

    /// A remote change: drop what it makes stale and tell the kernel.
    pub fn invalidate(&self, change: RemoteChange) {
        let mut entries: Vec<(u64, String)> = Vec::new();
        let mut inodes: Vec<u64> = Vec::new();
        {
            let mut table = self.inner.table.lock().unwrap();
            let mut negative = self.inner.negative.lock().unwrap();
            // `name_changed`: the name appeared or went away, so the kernel's entry for it
            // (maybe negative) is stale. An entry that still names the same node is kept:
            // invalidating it would unhash a folder that is some process's working directory
            // (its getcwd then fails with ENOENT).
            let mut touch_entry = |table: &mut Table,
                                   path: &str,
                                   subtree: bool,
                                   name_changed: bool,
                                   inodes: &mut Vec<u64>| {
                if subtree {
                    super::forget_absences_under(&mut negative, path);
                } else {
                    negative.pop(path);
                }
                table.drop_listing(parent_path(path));
                if name_changed && let Some(&parent) = table.by_path.get(parent_path(path)) {
                    entries.push((parent, base_name(path).to_string()));
                }
                let victims: Vec<u64> = if subtree {
                    table.subtree_inos(path)
                } else {
                    table.by_path.get(path).copied().into_iter().collect()
                };
                for ino in victims {
                    if let Some(data) = table.inodes.get_mut(&ino) {
                        let busy = data.local || data.file.as_ref().is_some_and(|f| f.dirty());
                        if !busy {
                            data.validated = None;
                            data.listing = None;
                            inodes.push(ino);
                        }
                    }
                }
            };
            match &change {
                // A node this mount knows at that path and still trusts (most often the echo
                // of its own upload or mkdir): nothing to forget. A remote replacement sends a
                // delete first, which takes that trust away.
                RemoteChange::Created { path }
                    if table
                        .by_path
                        .get(path)
                        .and_then(|ino| table.inodes.get(ino))
                        .is_some_and(|d| d.validated.is_some()) => {}
                RemoteChange::Created { path } => {
                    touch_entry(&mut table, path, false, true, &mut inodes)
                }
                RemoteChange::ContentChanged { path, etag } => {
                    let same = table
                        .by_path
                        .get(path)
                        .and_then(|i| table.inodes.get(i))
                        .is_some_and(|d| etag.as_deref() == Some(d.meta.etag.as_str()));
                    if !same {
                        touch_entry(&mut table, path, false, false, &mut inodes);
                    }
                }
                RemoteChange::MetaChanged { path } => {
                    // The parent's listing holds the node's metadata too (tags, bookmark,
                    // links: see `xattrs`).
                    table.drop_listing(parent_path(path));
                    if let Some(&ino) = table.by_path.get(path)
                        && let Some(data) = table.inodes.get_mut(&ino)
                    {
                        data.validated = None;
                        inodes.push(ino);
                    }
                }
                RemoteChange::Moved { from, to } => {
                    touch_entry(&mut table, from, true, true, &mut inodes);
                    touch_entry(&mut table, to, true, true, &mut inodes);
                }
                RemoteChange::Deleted { path } => {
                    touch_entry(&mut table, path, true, true, &mut inodes)
                }
            }
        }
        // A clean staging copy no handle uses is now possibly stale.
        for &ino in &inodes {
            self.release_staging_if_idle(ino);
        }
        let Some(notifier) = self.inner.notifier.get() else {
            return;
        };
        for ino in inodes {
            let _ = notifier.send(KernelInvalidation::Inode(ino));
        }
        for (parent, name) in entries {
            let _ = notifier.send(KernelInvalidation::Entry(parent, name));
        }
    }

    /// Consider every cached entry stale (after an events reconnect: events may be lost).
    fn bump_generation(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The event stream was subscribed (`true`) or lost (`false`). Whatever was cached before
    /// is stale either way (events may have been missed); from now on, while live, cached
    /// answers are trusted for [`FsOptions::events_cache_time`].
    ///
    /// The kernel was given long TTLs while the stream was live ([`CellsFs::kernel_ttl`]):
    /// when it stops, the kernel forgets every name and attribute it holds from this mount.
    pub fn set_events_live(&self, live: bool) {
        let was_live = self.inner.events_live.swap(live, Ordering::SeqCst);
        self.bump_generation();
        if was_live {
            self.invalidate_kernel_cache(false);
            self.withdraw_negatives();
        }
    }

    /// The user's workspaces changed (an access granted or taken away): every cached entry
    /// is stale, and the kernel forgets the workspaces it holds (the root's entries).
    pub fn workspaces_changed(&self) {
        self.bump_generation();
        self.invalidate_kernel_cache(true);
        self.withdraw_negatives();
    }

    /// Ask the kernel to forget the entries and attributes of the inodes this mount knows:
    /// all of them, or only the workspaces.
    fn invalidate_kernel_cache(&self, only_workspaces: bool) {
        let Some(notifier) = self.inner.notifier.get() else {
            return;
        };
        if only_workspaces {
            let _ = notifier.send(KernelInvalidation::Inode(ROOT_INO));
        }
        let table = self.inner.table.lock().unwrap();
        for (path, &ino) in &table.by_path {
            if path.is_empty() || (only_workspaces && path.contains('/')) {
                continue;
            }
            let _ = notifier.send(KernelInvalidation::Inode(ino));
            if let Some(&parent) = table.by_path.get(parent_path(path)) {
                let _ = notifier.send(KernelInvalidation::Entry(
                    parent,
                    base_name(path).to_string(),
                ));
            }
        }
    }
}
