//! Folders: their listings as the cache keeps them, the metadata of one path (answered from
//! its folder's listing when there is one, else by one stat), and `opendir`/`readdir`.
//!
//! Invariants:
//! - A listing is complete (the REST listing plus the gateway's dotfiles) and cached with
//!   the time and generation it was fetched under; it is trusted for the folder cache time
//!   (longer while events are live, see `remote`).
//! - A listing fetched while this mount changed the folder may predate the change and is not
//!   kept (`Table::listing_changes`); the fetch is tried again a few times
//!   ([`LISTING_ATTEMPTS`]).
//! - While the server does not answer (see `outage`), the last known listing or metadata is
//!   served rather than an error.
//! - A path being deleted in the background (see `rename`) is hidden from listings and
//!   stats; one a background rename is copying to is asked of the server only once the copy
//!   is done.
//! - A folder handle takes its listing once, at offset 0: later offsets of the same handle
//!   see the same entries (consistent offsets); `readdir_emit` counts one kernel lookup per
//!   entry the kernel accepted with readdirplus, none for an interrupted request.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use unicode_normalization::UnicodeNormalization;

use super::{
    CellsFs, DirCaching, DirEntry, DirSnapshot, Entry, FileKind, FsError, FsResult, InodeData,
    Listing, Meta, ROOT_INO, base_name, join_path, parent_path, subtree_of, to_stamp, versions,
};
use crate::api::S3Entry;

pub(super) struct DirHandle {
    snapshot: Mutex<Option<DirSnapshot>>,
}

/// A stale entry whose folder was listed before (with at most this many entries) is
/// refreshed by listing the folder again instead of a stat.
const RELIST_MAX_ENTRIES: usize = 1000;

/// Fetches of one listing when this mount's own changes keep racing with them.
const LISTING_ATTEMPTS: u32 = 3;

impl CellsFs {
    /// The complete listing of folder `path`, from the cache or the server.
    pub(super) async fn listing(
        &self,
        path: &str,
        force: bool,
    ) -> FsResult<BTreeMap<String, Meta>> {
        if !force {
            let table = self.inner.table.lock().unwrap();
            if let Some(&ino) = table.by_path.get(path)
                && let Some(listing) = table.inodes.get(&ino).and_then(|d| d.listing.as_ref())
                && self.fresh(
                    Some((listing.at, listing.generation)),
                    self.trusted_for(self.inner.options.dir_cache_time, path),
                )
            {
                return Ok(listing.children.clone());
            }
        }
        if force {
            return self.listing_from_server(path, force).await;
        }
        self.inner
            .outage
            .cached_or_ask(
                || self.stale_listing(path).map(Ok),
                self.listing_from_server(path, force),
            )
            .await
    }

    /// [`CellsFs::listing`] asked of the server (the last listing known when it is away).
    async fn listing_from_server(
        &self,
        path: &str,
        force: bool,
    ) -> FsResult<BTreeMap<String, Meta>> {
        // A listing that raced with this mount's own changes (a create, rename or delete
        // answered while the server was listing) is fetched again, then returned uncached.
        for attempt in 1..=LISTING_ATTEMPTS {
            let changes_before = self.inner.table.lock().unwrap().listing_changes;
            let (result, raced) = match self.fetch_listing(path, changes_before).await {
                Ok(fetched) => fetched,
                Err(e) => {
                    // The server is away: the listing known, however old (see `outage`).
                    if self.inner.outage.failed(&e)
                        && !force
                        && let Some(stale) = self.stale_listing(path)
                    {
                        return Ok(stale);
                    }
                    return Err(e);
                }
            };
            if !raced || attempt == LISTING_ATTEMPTS {
                return Ok(result);
            }
        }
        unreachable!("the last attempt returns")
    }

    /// The last listing of folder `path` known, however old.
    fn stale_listing(&self, path: &str) -> Option<BTreeMap<String, Meta>> {
        let table = self.inner.table.lock().unwrap();
        let ino = table.by_path.get(path)?;
        Some(table.inodes.get(ino)?.listing.as_ref()?.children.clone())
    }

    /// What the cache knows of `path`, however old: `Some(Some(meta))`, `Some(None)` (not in
    /// its folder's last listing), or `None` (nothing).
    fn stale_meta(&self, path: &str) -> Option<Option<Meta>> {
        if self.delete_pending(path) {
            return Some(None);
        }
        let table = self.inner.table.lock().unwrap();
        if let Some(data) = table
            .by_path
            .get(path)
            .and_then(|ino| table.inodes.get(ino))
            && !data.detached
        {
            return Some(Some(data.meta.clone()));
        }
        let parent = table.by_path.get(parent_path(path))?;
        let listing = table.inodes.get(parent)?.listing.as_ref()?;
        Some(listing.children.get(base_name(path)).cloned())
    }

    /// One listing of `path` from the server, merged with this mount's local files; cached
    /// unless the table's listings changed since `changes_before` (then `raced` is true).
    async fn fetch_listing(
        &self,
        path: &str,
        changes_before: u64,
    ) -> FsResult<(BTreeMap<String, Meta>, bool)> {
        let generation = self.generation();
        let mut children = BTreeMap::new();
        // Names from the server that are no valid file names (`..`, `a/b`, NUL, over 255
        // bytes) are not shown: one warning for the listing, the rest of the folder lists.
        let mut refused: Vec<String> = Vec::new();
        // Under a dot-folder: answered by one listing of the whole dot-folder (`dotfolders`).
        let mut listed_at = None;
        if !path.is_empty()
            && let Some(found) = self.dot_children(path).await
        {
            let (at, found) = found?;
            (listed_at, children) = (Some(at), found);
        } else if path.is_empty() {
            for ws in self.workspaces().await?.iter() {
                if let Err(why) = crate::api::names::check_name(&ws.slug) {
                    refused.push(why);
                } else if ws.can_read {
                    children.insert(ws.slug.clone(), Meta::from_node(&ws.root));
                }
            }
        } else {
            self.settle_copies(path).await;
            // The REST listing hides dotfiles: the gateway's listing shows them. Both at once.
            let (nodes, objects) = tokio::join!(
                self.inner.api.list_folder(path),
                self.inner.api.list_folder_s3(path)
            );
            let nodes = nodes.map_err(|e| FsError::api(format!("listing {path}"), e))?;
            let objects =
                objects.map_err(|e| FsError::api(format!("listing {path} (gateway)"), e))?;
            self.inner.outage.answered();
            for node in &nodes {
                // Relative to the folder listed, so that a child `a/b` is seen as such.
                let relative = node
                    .path
                    .strip_prefix(path)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .unwrap_or_else(|| node.name());
                let name = relative.nfc().collect::<String>();
                if let Err(why) = crate::api::names::check_name(&name) {
                    refused.push(why);
                    continue;
                }
                children.insert(name, Meta::from_node(node));
            }
            for entry in objects {
                let (entry_path, meta) = match &entry {
                    S3Entry::Object(object) => (object.path.as_str(), Meta::from_object(object)),
                    S3Entry::Folder(folder) => (folder.as_str(), Meta::folder()),
                };
                if parent_path(entry_path) != path {
                    continue;
                }
                let name: String = base_name(entry_path).nfc().collect();
                if name.is_empty() || name == ".pydio" {
                    continue;
                }
                if let Err(why) = crate::api::names::check_name(&name) {
                    refused.push(why);
                    continue;
                }
                children.entry(name).or_insert(meta);
            }
        }
        if let Some(first) = refused.first() {
            tracing::warn!(
                "listing {}: {} entr{} not shown, not valid file names; first: {first}",
                crate::api::names::shown(path),
                refused.len(),
                if refused.len() == 1 { "y" } else { "ies" }
            );
        }
        {
            // Names deleted in the background are gone for this mount already.
            let pending = self.inner.pending_deletes.lock().unwrap();
            if !pending.is_empty() {
                children.retain(|name, _| !pending.contains_key(&join_path(path, name)));
            }
        }
        let mut table = self.inner.table.lock().unwrap();
        let raced = table.listing_changes != changes_before;
        let at = listed_at.unwrap_or_else(Instant::now);
        let stamp = Some((at, generation));
        for (name, meta) in children.iter().filter(|_| !raced) {
            let child = join_path(path, name);
            if let Some(&ino) = table.by_path.get(&child) {
                let data = table.inodes.get_mut(&ino).expect("consistent");
                if data.kind == meta.kind
                    && !data.local
                    && !data.file.as_ref().is_some_and(|f| f.dirty())
                {
                    // Keep a Uuid learned from a stat when the gateway listing has none.
                    let mut meta = meta.clone();
                    if meta.uuid.is_empty() && data.meta.etag == meta.etag {
                        meta.uuid = data.meta.uuid.clone();
                    }
                    data.meta = meta;
                    data.validated = stamp;
                }
            }
        }
        // Files created here and not uploaded yet belong to the listing too.
        let mut result = children;
        let prefix_len = if path.is_empty() { 0 } else { path.len() + 1 };
        let known = &*table;
        for (_, ino) in subtree_of(&known.by_path, path) {
            let Some(data) = known.inodes.get(ino) else {
                continue;
            };
            if data.local
                && !data.detached
                && parent_path(&data.path) == path
                && !data.path.is_empty()
            {
                // Over the server's entry, if any: the temporary node of an upload under way.
                result.insert(data.path[prefix_len..].to_string(), data.meta.clone());
            }
        }
        if !raced
            && let Some(&ino) = table.by_path.get(path)
            && let Some(data) = table.inodes.get_mut(&ino)
        {
            data.listing = Some(Listing {
                children: result.clone(),
                at,
                generation,
            });
            self.inner.lookups.listed(path);
        }
        Ok((result, raced))
    }

    /// Server metadata of `path` (`None`: it does not exist), cached answers first.
    pub(super) async fn fetch_meta(&self, path: &str, use_cache: bool) -> FsResult<Option<Meta>> {
        if use_cache {
            if let Some(known) = self.cached_meta(path) {
                return Ok(known);
            }
        } else if self.delete_pending(path) {
            return Ok(None);
        }
        self.fetch_meta_from_server(path, use_cache).await
    }

    /// What memory says of `path` while it is trusted: `Some(Some(meta))`, `Some(None)` (it
    /// does not exist), or `None` (ask the server).
    pub(super) fn cached_meta(&self, path: &str) -> Option<Option<Meta>> {
        let name = base_name(path);
        let parent = parent_path(path);
        {
            // A file this mount holds content for (created here, or changed and not uploaded)
            // is what the name means, even while the server still deletes the name's previous
            // file (a fresh rename's old name, created again at once).
            let table = self.inner.table.lock().unwrap();
            if let Some(&ino) = table.by_path.get(path)
                && let Some(data) = table.inodes.get(&ino)
                && (data.local || data.file.as_ref().is_some_and(|f| f.dirty()))
            {
                return Some(Some(data.meta.clone()));
            }
        }
        if self.delete_pending(path) {
            return Some(None);
        }
        {
            let table = self.inner.table.lock().unwrap();
            if let Some(&ino) = table.by_path.get(path)
                && let Some(data) = table.inodes.get(&ino)
                && self.fresh(
                    data.validated,
                    self.trusted_for(self.inner.options.attr_timeout, path),
                )
            {
                return Some(Some(data.meta.clone()));
            }
            if let Some(&ino) = table.by_path.get(parent)
                && let Some(listing) = table.inodes.get(&ino).and_then(|d| d.listing.as_ref())
                && self.fresh(
                    Some((listing.at, listing.generation)),
                    self.trusted_for(
                        self.inner
                            .options
                            .attr_timeout
                            .min(self.inner.options.dir_cache_time),
                        path,
                    ),
                )
            {
                return Some(listing.children.get(name).cloned());
            }
        }
        let mut negative = self.inner.negative.lock().unwrap();
        if let Some(&(at, generation)) = negative.get(path) {
            if self.fresh(
                Some((at, generation)),
                self.trusted_for(self.inner.options.attr_timeout, path),
            ) {
                return Some(None);
            }
            negative.pop(path);
        }
        None
    }

    async fn fetch_meta_from_server(&self, path: &str, use_cache: bool) -> FsResult<Option<Meta>> {
        if !use_cache {
            return self.ask_meta(path, use_cache).await;
        }
        // The server is away: what the cache knows, without waiting for it (see `outage`).
        self.inner
            .outage
            .cached_or_ask(
                || self.stale_meta(path).map(Ok),
                self.ask_meta(path, use_cache),
            )
            .await
    }

    /// [`CellsFs::fetch_meta_from_server`] past the outage's shortcut.
    async fn ask_meta(&self, path: &str, use_cache: bool) -> FsResult<Option<Meta>> {
        let name = base_name(path);
        let parent = parent_path(path);
        // A folder listed before and not too big is listed again rather than asked about one
        // name: `rsync`, `ls -l` and `find` go through every sibling (one request for all).
        let known_listing = {
            let table = self.inner.table.lock().unwrap();
            table
                .by_path
                .get(parent)
                .and_then(|&ino| table.inodes.get(&ino))
                .and_then(|d| d.listing.as_ref())
                .map(|l| l.children.len())
        };
        let relist = use_cache
            && match known_listing {
                Some(len) => len <= RELIST_MAX_ENTRIES,
                // Under a dot-folder: its one recursive listing (see `dotfolders`).
                None if self.dot_listable(parent) => true,
                // A folder never listed is listed at its second lookup (see `lookups`).
                None => {
                    !parent.is_empty()
                        && self.inner.lookups.list_instead(
                            parent,
                            self.inner.options.dir_cache_time,
                            self.generation(),
                        )
                }
            };
        let dot_folder = if use_cache {
            self.dot_folder_meta(path).await
        } else {
            None
        };
        let found = if let Some(found) = dot_folder {
            found
        } else if parent.is_empty() || name.starts_with('.') || relist {
            // Workspaces come from their list; dotfiles only from the gateway's listing.
            self.listing(parent, !use_cache || relist)
                .await
                .map(|l| l.get(name).cloned())
        } else {
            self.settle_copies(path).await;
            match self.inner.api.stat(path).await {
                Ok(node) => {
                    self.inner.outage.answered();
                    Ok(node.map(|n| Meta::from_node(&n)))
                }
                Err(e) => Err(FsError::api(path, e)),
            }
        };
        let found = match found {
            Ok(found) => found,
            Err(e) if e.errno() == libc::ENOENT => None,
            Err(e) => {
                if self.inner.outage.failed(&e)
                    && use_cache
                    && let Some(stale) = self.stale_meta(path)
                {
                    return Ok(stale);
                }
                return Err(e);
            }
        };
        if found.is_none() {
            self.inner
                .negative
                .lock()
                .unwrap()
                .put(path.to_string(), (Instant::now(), self.generation()));
        }
        Ok(found)
    }

    /// Open a folder; the listing is taken once per handle (consistent offsets).
    pub async fn opendir(&self, ino: u64, _flags: i32) -> FsResult<u64> {
        if versions::is_virtual(ino) {
            return self.versions_opendir(ino);
        }
        self.dir_path(ino)?;
        let fh = self.inner.next_fh.fetch_add(1, Ordering::SeqCst);
        self.inner.dir_handles.lock().unwrap().insert(
            fh,
            Arc::new(DirHandle {
                snapshot: Mutex::new(None),
            }),
        );
        Ok(fh)
    }

    /// Whether the kernel may keep the entries of folder `ino` it reads from the handle just
    /// opened ([`DirCaching`]). Only while events are live for it (they drop the mount's
    /// listing when the folder changes elsewhere), and reused only while the listing the
    /// kernel was given is still the one the mount trusts; the kernel drops its copy itself
    /// when this mount changes the folder.
    pub fn dir_caching(&self, ino: u64) -> DirCaching {
        let table = self.inner.table.lock().unwrap();
        let Ok(data) = table.get(ino) else {
            return DirCaching::None;
        };
        if data.path.is_empty() || !self.events_cover(&data.path) {
            return DirCaching::None;
        }
        let trust = self.trusted_for(self.inner.options.dir_cache_time, &data.path);
        match &data.listing {
            Some(listing)
                if data.kernel_listing == Some(listing.at)
                    && self.fresh(Some((listing.at, listing.generation)), trust) =>
            {
                DirCaching::Keep
            }
            _ => DirCaching::Fill,
        }
    }

    async fn dir_snapshot(&self, ino: u64) -> FsResult<Vec<(DirEntry, String)>> {
        let path = self.dir_path(ino)?;
        let children = self.listing(&path, false).await?;
        let shown_links = self.shown_links(&path, &children).await?;
        let mut table = self.inner.table.lock().unwrap();
        // Which listing these entries come from (none if it changed meanwhile).
        let source = table
            .get(ino)
            .ok()
            .and_then(|d| d.listing.as_ref())
            .and_then(|l| l.children.keys().eq(children.keys()).then_some(l.at));
        if let Ok(data) = table.get_mut(ino) {
            data.kernel_listing = source;
        }
        let ttl = self.inner.options.attr_timeout;
        let parent_ino = table
            .by_path
            .get(parent_path(&path))
            .copied()
            .filter(|_| !path.is_empty())
            .unwrap_or(ROOT_INO);
        let mut out = Vec::with_capacity(children.len() + 2);
        for (name, dot_ino) in [(".", ino), ("..", parent_ino)] {
            let attr = match table.inodes.get(&dot_ino) {
                Some(data) => self.attr_of(dot_ino, data),
                None => continue,
            };
            out.push((
                DirEntry {
                    ino: dot_ino,
                    offset: 0,
                    kind: FileKind::Directory,
                    name: OsString::from(name),
                    entry: Entry {
                        attr,
                        ttl,
                        generation: 0,
                    },
                },
                String::new(),
            ));
        }
        let stamp = self.stamp();
        for (name, meta) in children {
            let child = join_path(&path, &name);
            let child_ino = table.intern(&child, meta, stamp);
            let data = table.get(child_ino)?;
            let attr = self.attr_of(child_ino, data);
            let name = shown_links.get(&name).cloned().unwrap_or(name);
            out.push((
                DirEntry {
                    ino: child_ino,
                    offset: 0,
                    kind: attr.kind,
                    name: OsString::from(name),
                    entry: Entry {
                        attr,
                        ttl: self.kernel_ttl(data),
                        generation: 0,
                    },
                },
                child,
            ));
        }
        for (i, (entry, _)) in out.iter_mut().enumerate() {
            entry.offset = i as u64 + 1;
        }
        Ok(out)
    }

    /// [`CellsFs::readdir_snapshot`] then [`CellsFs::readdir_emit`], in one call.
    pub async fn readdir<F>(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        plus: bool,
        add: F,
    ) -> FsResult<()>
    where
        F: FnMut(&DirEntry) -> bool + Send,
    {
        if versions::is_virtual(ino) {
            return self.versions_readdir(ino, offset, plus, add).await;
        }
        let snapshot = self.readdir_snapshot(ino, fh, offset).await?;
        self.readdir_emit(&snapshot, offset, plus, add);
        Ok(())
    }

    /// Whether folder `ino` is listed only through [`CellsFs::readdir`] (the `.versions`
    /// view), not through [`CellsFs::readdir_snapshot`] and [`CellsFs::readdir_emit`].
    pub fn lists_in_one_call(&self, ino: u64) -> bool {
        versions::is_virtual(ino)
    }

    /// The entries handle `fh` of folder `ino` serves from `offset`: the listing is taken
    /// (and waited for) at offset 0, later offsets reuse it. Nothing is counted yet: see
    /// [`CellsFs::readdir_emit`] (the adapter calls the two apart, so that an interrupted
    /// request counts no lookup).
    pub async fn readdir_snapshot(&self, ino: u64, fh: u64, offset: u64) -> FsResult<DirSnapshot> {
        let handle = self
            .inner
            .dir_handles
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle(fh))?;
        let existing = handle.snapshot.lock().unwrap().clone();
        Ok(match existing {
            Some(s) if offset > 0 => s,
            _ => {
                let s = Arc::new(self.dir_snapshot(ino).await?);
                *handle.snapshot.lock().unwrap() = Some(s.clone());
                s
            }
        })
    }

    /// Emit `snapshot`'s entries from `offset` (0 = start; `.` and `..` included) by calling
    /// `add` for each until it returns `true` (reply buffer full). With `plus`, each entry
    /// `add` accepted (except `.` and `..`) counts one kernel lookup, as readdirplus requires.
    pub fn readdir_emit<F>(&self, snapshot: &DirSnapshot, offset: u64, plus: bool, mut add: F)
    where
        F: FnMut(&DirEntry) -> bool,
    {
        for (entry, path) in snapshot.iter().skip(offset as usize) {
            if add(entry) {
                break;
            }
            if plus && !path.is_empty() {
                let mut table = self.inner.table.lock().unwrap();
                match table.inodes.get_mut(&entry.ino) {
                    Some(data) => data.nlookup += 1,
                    None => {
                        // Forgotten since the snapshot: bring the same number back.
                        let meta = Meta {
                            user: None,
                            uuid: String::new(),
                            kind: entry.kind,
                            size: entry.entry.attr.size,
                            mtime: to_stamp(entry.entry.attr.mtime).0,
                            etag: String::new(),
                        };
                        if !table.by_path.contains_key(path) {
                            table.by_path.insert(path.clone(), entry.ino);
                        }
                        table
                            .inodes
                            .insert(entry.ino, Box::new(InodeData::new(path.clone(), meta, 1)));
                    }
                }
            }
        }
    }

    pub async fn releasedir(&self, _ino: u64, fh: u64) -> FsResult<()> {
        self.inner.dir_handles.lock().unwrap().remove(&fh);
        Ok(())
    }
}
