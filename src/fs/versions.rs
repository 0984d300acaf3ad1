//! The hidden, read-only `.versions` folder of every folder: the older versions of its
//! files, as ordinary read-only files, without any new command.
//!
//! ```text
//! docs/.versions/                              the files of docs, each as a folder
//! docs/.versions/report.docx/                  the versions of docs/report.docx
//! docs/.versions/report.docx/2026-12-07_19-50-12Z.docx   one version (read-only)
//! ```
//!
//! A version file is named by its time in UTC, `YYYY-MM-DD_HH-MM-SSZ`, followed by the
//! file's extension (so that it opens with the right program); two versions of the same
//! second are told apart by `_02`, `_03`, ... given in chronological order, so that a name
//! keeps designating the same version as new ones arrive, and sorting the names sorts the
//! versions by time. The version id is the xattr
//! [`XATTR_VERSION`] (`cec restore --version ID` takes it).
//!
//! Like ZFS's `.zfs/snapshot`, the folder is reached by name only: `readdir` never lists it,
//! so `find`, `du`, `rsync` and backups never descend into it and never double their work.
//!
//! Invariants:
//! - Its inodes live in their own range, [`VIRTUAL_BASE`]..[`VIRTUAL_END`]: below the
//!   Uuid-derived numbers (2^40 and up) and far above the counted ones (which would need
//!   2^39 allocations to get here). A number is derived from what the node is (folder,
//!   file, version id), so `readdir`, `lookup` and the next mount agree on it. They are forgotten as any inode is (lookup count and
//!   handles back to zero), and never enter the main table, so no path of the tree, no
//!   listing, no upload and no invalidation ever meets one.
//! - Read-only: every change inside (create, write, truncate, rename, unlink, mkdir,
//!   setattr, setxattr) fails with `EROFS`, and so does creating the name `.versions` in a
//!   folder (it is taken by this view).
//! - A node the server really holds under the name `.versions` wins: it is the user's data
//!   and must stay reachable and listed; the view is then not offered in that folder.
//! - Versions of a path that is not a file: `ENOENT`.
//! - A version's content never changes, so it is cached (read-ahead, data cache) under its
//!   own key, `version:<file uuid>:<version id>`, which never meets the current content's
//!   key (`<uuid>:<etag>`): an overwrite of the file cannot mix the two, and the kernel may
//!   keep a version's pages.
//! - Bounded: the server's list is capped by the API (`api::versions`), ids are checked
//!   there, and the names shown here are made from numbers and the file's own (already
//!   valid) name, never from server text. At most [`LISTS_KEPT`] lists are kept, each for
//!   the mount's listing TTL.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use lru::LruCache;

use super::{
    Attr, AttrReply, CellsFs, DirEntry, Entry, FileKind, FsError, FsResult, Handle, OpenReply,
    ROOT_INO, ReadState, STREAK_TO_PREFETCH, cache, join_path, valid_name,
};
use crate::api::ByteRange;
use crate::api::versions::FileVersion;

/// The name of the view in every folder.
pub const NAME: &str = ".versions";
/// The xattr of a version file holding its version id.
pub const XATTR_VERSION: &str = "user.cells.version";

const VIRTUAL_BASE: u64 = 1 << 39;
const VIRTUAL_END: u64 = 1 << 40;
/// Version lists kept in memory (each for the listing TTL).
const LISTS_KEPT: usize = 16;
/// The last time a name can show (9999-12-31T23:59:59Z).
const MAX_TIME: i64 = 253_402_300_799;

/// Whether `ino` is one of this view's.
pub fn is_virtual(ino: u64) -> bool {
    (VIRTUAL_BASE..VIRTUAL_END).contains(&ino)
}

/// Whether a lookup of `name` in `parent` is this view's business.
pub fn hooked(parent: u64, name: &OsStr) -> bool {
    is_virtual(parent) || name == NAME
}

/// What a virtual inode is.
#[derive(Clone, Debug)]
enum VNode {
    /// `<folder>/.versions`.
    Folder { folder: String },
    /// `<folder>/.versions/<name>`: the versions of the file `path`.
    File { path: String },
    /// One version of the file `path` (Uuid `uuid`), shown as `name`.
    Version {
        path: String,
        uuid: String,
        version: FileVersion,
    },
}

impl VNode {
    fn key(&self) -> String {
        match self {
            VNode::Folder { folder } => format!("d\0{folder}"),
            VNode::File { path } => format!("f\0{path}"),
            VNode::Version { path, version, .. } => format!("v\0{path}\0{}", version.id),
        }
    }
}

struct VEntry {
    node: VNode,
    nlookup: u64,
    handles: u32,
    created: i64,
}

/// A version list with the name of each version.
type Named = Arc<Vec<(String, FileVersion)>>;

/// The view's state, owned by the filesystem core.
pub(super) struct Versions {
    table: Mutex<VTable>,
    lists: Mutex<LruCache<String, (Instant, Named)>>,
}

struct VTable {
    inodes: HashMap<u64, VEntry>,
    by_key: HashMap<String, u64>,
}

impl Default for Versions {
    fn default() -> Self {
        Versions {
            table: Mutex::new(VTable {
                inodes: HashMap::new(),
                by_key: HashMap::new(),
            }),
            lists: Mutex::new(LruCache::new(
                NonZeroUsize::new(LISTS_KEPT).expect("non-zero"),
            )),
        }
    }
}

/// The preferred inode number of a virtual node: derived from what it is, so that a
/// `readdir` and a later `lookup` (and the next mount) give the same number.
fn preferred_ino(key: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    VIRTUAL_BASE + n % (VIRTUAL_END - VIRTUAL_BASE)
}

impl VTable {
    /// The inode of `node` (created when new), its lookup count raised by `lookups`.
    fn intern(&mut self, node: VNode, lookups: u64) -> u64 {
        let key = node.key();
        let ino = match self.by_key.get(&key) {
            Some(&ino) => ino,
            None => {
                let mut ino = preferred_ino(&key);
                // Taken by another node (two keys hashing alike): the next free one.
                while self.inodes.contains_key(&ino) {
                    ino = if ino + 1 >= VIRTUAL_END {
                        VIRTUAL_BASE
                    } else {
                        ino + 1
                    };
                }
                self.inodes.insert(
                    ino,
                    VEntry {
                        node,
                        nlookup: 0,
                        handles: 0,
                        created: super::unix_now(),
                    },
                );
                self.by_key.insert(key, ino);
                ino
            }
        };
        if let Some(e) = self.inodes.get_mut(&ino) {
            e.nlookup += lookups;
        }
        ino
    }

    fn maybe_drop(&mut self, ino: u64) {
        if let Some(e) = self.inodes.get(&ino)
            && e.nlookup == 0
            && e.handles == 0
        {
            let e = self.inodes.remove(&ino).expect("present");
            self.by_key.remove(&e.node.key());
        }
    }
}

/// The read-only error of this view.
fn read_only(what: &str) -> FsError {
    FsError::ReadOnly(format!("{what}: the {NAME} folders are read-only"))
}

/// `2026-12-07_19-50-12Z` for a Unix time (clamped to years 1970..=9999).
fn time_name(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.clamp(0, MAX_TIME) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.replacen('T', "_", 1).replace(':', "-")
}

/// `.ext` of a file name, when it has a short plain one.
fn extension(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && (1..=16).contains(&ext.len())
                && ext.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            &name[stem.len()..]
        }
        _ => "",
    }
}

/// Names for the versions (newest first) of the file `file_name`: unique, sortable, and
/// stable as versions are added (suffixes are given oldest first).
fn named(versions: Vec<FileVersion>, file_name: &str) -> Vec<(String, FileVersion)> {
    let ext = extension(file_name);
    let mut taken = std::collections::HashSet::new();
    let mut out: Vec<(String, FileVersion)> = Vec::with_capacity(versions.len());
    for v in versions.into_iter().rev() {
        let base = time_name(v.mtime);
        let mut name = format!("{base}{ext}");
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{base}_{n:02}{ext}");
            n += 1;
        }
        out.push((name, v));
    }
    out.reverse();
    out
}

impl CellsFs {
    fn vnode(&self, ino: u64) -> FsResult<(VNode, i64)> {
        let table = self.inner.versions.table.lock().unwrap();
        let e = table
            .inodes
            .get(&ino)
            .ok_or_else(|| FsError::NotFound(format!("inode {ino}")))?;
        Ok((e.node.clone(), e.created))
    }

    fn vattr(&self, ino: u64, node: &VNode, created: i64) -> Attr {
        let o = &self.inner.options;
        let (kind, size, mtime, perm, nlink) = match node {
            VNode::Folder { .. } | VNode::File { .. } => {
                (FileKind::Directory, 4096, created, 0o555 & o.dir_mode, 2)
            }
            VNode::Version { version, .. } => (
                FileKind::File,
                version.size,
                version.mtime,
                0o444 & o.file_mode,
                1,
            ),
        };
        let t = super::to_system_time(mtime.clamp(0, MAX_TIME), 0);
        Attr {
            ino,
            kind,
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            perm,
            nlink,
            uid: o.uid,
            gid: o.gid,
            blksize: cache::BLOCK_SIZE as u32,
        }
    }

    fn ventry(&self, node: VNode, lookups: u64) -> Entry {
        let ino = self
            .inner
            .versions
            .table
            .lock()
            .unwrap()
            .intern(node.clone(), lookups);
        Entry {
            attr: self.vattr(ino, &node, super::unix_now()),
            ttl: self.inner.options.attr_timeout,
            generation: 0,
        }
    }

    /// The versions of the file `path`, named, from memory for the listing TTL.
    async fn version_list(&self, path: &str) -> FsResult<Named> {
        let ttl = self.inner.options.dir_cache_time;
        if let Some((at, list)) = self.inner.versions.lists.lock().unwrap().get(path)
            && at.elapsed() < ttl
        {
            return Ok(list.clone());
        }
        let versions = self
            .inner
            .api
            .list_versions(path)
            .await
            .map_err(|e| FsError::api(path, e))?;
        let list = Arc::new(named(versions, super::base_name(path)));
        self.inner
            .versions
            .lists
            .lock()
            .unwrap()
            .put(path.to_string(), (Instant::now(), list.clone()));
        Ok(list)
    }

    /// The file at `path` (its Uuid), or ENOENT when it is no file.
    async fn versioned_file(&self, path: &str) -> FsResult<String> {
        match self.fetch_meta(path, true).await? {
            Some(meta) if meta.kind == FileKind::File => Ok(meta.uuid),
            _ => Err(FsError::NotFound(format!("{path}: no such file"))),
        }
    }

    /// `lookup` when [`hooked`]: in a virtual folder, or the name `.versions`.
    pub(super) async fn versions_lookup(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        let name = valid_name(name)?;
        if !is_virtual(parent) {
            let folder = self.dir_path(parent)?;
            let path = join_path(&folder, &name);
            // The server's own `.versions` wins (see the module's invariants); none at the
            // root, which holds only workspaces.
            let meta = self.fetch_meta(&path, true).await?;
            if meta.is_some() || folder.is_empty() {
                return self.looked_up(path, meta);
            }
            return Ok(self.ventry(VNode::Folder { folder }, 1));
        }
        match self.vnode(parent)?.0 {
            VNode::Folder { folder } => {
                let path = join_path(&folder, &name);
                self.versioned_file(&path).await?;
                Ok(self.ventry(VNode::File { path }, 1))
            }
            VNode::File { path } => {
                let uuid = self.versioned_file(&path).await?;
                let list = self.version_list(&path).await?;
                let version = list
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| FsError::NotFound(format!("{path}: no version {name}")))?;
                Ok(self.ventry(
                    VNode::Version {
                        path,
                        uuid,
                        version,
                    },
                    1,
                ))
            }
            VNode::Version { path, .. } => Err(FsError::NotADirectory(path)),
        }
    }

    /// `forget` of a virtual inode.
    pub(super) fn versions_forget(&self, ino: u64, nlookup: u64) {
        let mut table = self.inner.versions.table.lock().unwrap();
        if let Some(e) = table.inodes.get_mut(&ino) {
            e.nlookup = e.nlookup.saturating_sub(nlookup);
            table.maybe_drop(ino);
        }
    }

    /// `getattr` of a virtual inode (always from memory).
    pub(super) fn versions_getattr(&self, ino: u64) -> FsResult<AttrReply> {
        let (node, created) = self.vnode(ino)?;
        Ok(AttrReply {
            attr: self.vattr(ino, &node, created),
            ttl: self.inner.options.attr_timeout,
        })
    }

    /// Refuse a change of the namespace at `parent`/`name`: inside the view, or creating
    /// the name `.versions` in a folder where the server holds none.
    pub(super) fn versions_refuse(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        if is_virtual(parent) {
            return Err(read_only(&name.to_string_lossy()));
        }
        if name == NAME {
            let table = self.inner.table.lock().unwrap();
            let folder = table
                .get(parent)
                .map(|d| d.path.clone())
                .unwrap_or_default();
            if !folder.is_empty() && !table.by_path.contains_key(&join_path(&folder, NAME)) {
                return Err(read_only(&join_path(&folder, NAME)));
            }
        }
        Ok(())
    }

    /// Refuse any change of a virtual inode (setattr, setxattr, link).
    pub(super) fn versions_refuse_ino(&self, ino: u64) -> FsResult<()> {
        if is_virtual(ino) {
            return Err(read_only(&format!("inode {ino}")));
        }
        Ok(())
    }

    pub(super) fn versions_opendir(&self, ino: u64) -> FsResult<u64> {
        match self.vnode(ino)?.0 {
            VNode::Version { path, .. } => Err(FsError::NotADirectory(path)),
            _ => Ok(self.inner.next_fh.fetch_add(1, Ordering::SeqCst)),
        }
    }

    /// `readdir` of a virtual folder: the folder's files (as folders), or a file's versions.
    pub(super) async fn versions_readdir<F>(
        &self,
        ino: u64,
        offset: u64,
        plus: bool,
        mut add: F,
    ) -> FsResult<()>
    where
        F: FnMut(&DirEntry) -> bool + Send,
    {
        let (node, created) = self.vnode(ino)?;
        let children: Vec<(String, VNode)> = match &node {
            VNode::Folder { folder } => self
                .listing(folder, false)
                .await?
                .into_iter()
                .filter(|(_, meta)| meta.kind == FileKind::File)
                .map(|(name, _)| {
                    let path = join_path(folder, &name);
                    (name, VNode::File { path })
                })
                .collect(),
            VNode::File { path } => {
                let uuid = self.versioned_file(path).await?;
                self.version_list(path)
                    .await?
                    .iter()
                    .map(|(name, version)| {
                        (
                            name.clone(),
                            VNode::Version {
                                path: path.clone(),
                                uuid: uuid.clone(),
                                version: version.clone(),
                            },
                        )
                    })
                    .collect()
            }
            VNode::Version { path, .. } => return Err(FsError::NotADirectory(path.clone())),
        };
        let here = self.vattr(ino, &node, created);
        let ttl = self.inner.options.attr_timeout;
        let dots = [(".", ino), ("..", ROOT_INO)];
        let total = dots.len() + children.len();
        for i in offset as usize..total {
            let entry = if i < dots.len() {
                let (name, dot) = dots[i];
                DirEntry {
                    ino: dot,
                    offset: i as u64 + 1,
                    kind: FileKind::Directory,
                    name: OsString::from(name),
                    entry: Entry {
                        attr: Attr {
                            ino: dot,
                            ..here.clone()
                        },
                        ttl,
                        generation: 0,
                    },
                }
            } else {
                let (name, child) = &children[i - dots.len()];
                // Counted as a lookup only once the kernel takes it (readdirplus).
                let child_ino = self
                    .inner
                    .versions
                    .table
                    .lock()
                    .unwrap()
                    .intern(child.clone(), 0);
                let attr = self.vattr(child_ino, child, super::unix_now());
                DirEntry {
                    ino: child_ino,
                    offset: i as u64 + 1,
                    kind: attr.kind,
                    name: OsString::from(name),
                    entry: Entry {
                        attr,
                        ttl,
                        generation: 0,
                    },
                }
            };
            let full = add(&entry);
            let mut table = self.inner.versions.table.lock().unwrap();
            if full {
                if i >= dots.len() {
                    table.maybe_drop(entry.ino);
                }
                break;
            }
            if i >= dots.len() {
                if plus && let Some(e) = table.inodes.get_mut(&entry.ino) {
                    e.nlookup += 1;
                }
                table.maybe_drop(entry.ino);
            }
        }
        Ok(())
    }

    /// `open` of a version file: read-only.
    pub(super) fn versions_open(&self, ino: u64, flags: i32) -> FsResult<OpenReply> {
        let (node, _) = self.vnode(ino)?;
        let VNode::Version { path, .. } = node else {
            return Err(FsError::IsADirectory(format!("inode {ino}")));
        };
        let access = flags & libc::O_ACCMODE;
        if access != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(read_only(&path));
        }
        let fh = self.inner.next_fh.fetch_add(1, Ordering::SeqCst);
        let handle = Arc::new(Handle {
            ino,
            writable: false,
            append: false,
            epoch: 0,
            read: tokio::sync::Mutex::new(ReadState {
                next_offset: 0,
                streak: 0,
                prefetch: None,
            }),
        });
        self.inner.handles.lock().unwrap().insert(fh, handle);
        if let Some(e) = self
            .inner
            .versions
            .table
            .lock()
            .unwrap()
            .inodes
            .get_mut(&ino)
        {
            e.handles += 1;
        }
        // A version never changes: the kernel may keep its pages.
        Ok(OpenReply {
            fh,
            keep_cache: true,
            direct_io: false,
        })
    }

    pub(super) fn versions_release(&self, ino: u64, fh: u64) -> FsResult<()> {
        self.inner
            .handles
            .lock()
            .unwrap()
            .remove(&fh)
            .ok_or(FsError::BadHandle(fh))?;
        let mut table = self.inner.versions.table.lock().unwrap();
        if let Some(e) = table.inodes.get_mut(&ino) {
            e.handles = e.handles.saturating_sub(1);
        }
        table.maybe_drop(ino);
        Ok(())
    }

    /// `read` of a version file: the handle's read-ahead, the data cache, or a ranged GET,
    /// as for any file, under the version's own content key.
    pub(super) async fn versions_read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> FsResult<Bytes> {
        let handle = self.handle(fh)?;
        let VNode::Version {
            path,
            uuid,
            version,
        } = self.vnode(ino)?.0
        else {
            return Err(FsError::IsADirectory(format!("inode {ino}")));
        };
        let end = (offset + size as u64).min(version.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let owner = if uuid.is_empty() { &path } else { &uuid };
        let key = format!("version:{owner}:{}", version.id);
        let mut state = handle.read.lock().await;
        state.advance(offset, end);
        if let Some(prefetcher) = &state.prefetch
            && prefetcher.covers(&key, offset)
        {
            let result = self.read_prefetched(prefetcher, &path, offset, end).await;
            if result.is_err() {
                state.prefetch = None;
            }
            return result;
        }
        state.prefetch = None;
        if let Some(bytes) = self.read_cached(&key, version.size, offset, end) {
            return Ok(bytes);
        }
        if offset == 0 || state.streak > STREAK_TO_PREFETCH {
            let prefetcher =
                self.start_prefetch(&path, key, version.size, offset, Some(version.id.clone()));
            let result = self.read_prefetched(&prefetcher, &path, offset, end).await;
            if result.is_ok() {
                state.prefetch = Some(prefetcher);
            }
            return result;
        }
        // A random read: the blocks it needs, once, into the data cache.
        let block_start = offset / cache::BLOCK_SIZE * cache::BLOCK_SIZE;
        let want = ((end - block_start).div_ceil(cache::BLOCK_SIZE) * cache::BLOCK_SIZE)
            .max(self.inner.options.read_ahead_initial)
            .min(version.size - block_start);
        let bytes = self
            .retry()
            .run(|| async {
                let mut stream = self
                    .inner
                    .api
                    .get_object_version(
                        &path,
                        &version.id,
                        Some(ByteRange {
                            offset: block_start,
                            len: Some(want),
                        }),
                    )
                    .await?;
                let mut out = BytesMut::with_capacity(want as usize);
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk?);
                }
                Ok(out.freeze())
            })
            .await
            .map_err(|e| FsError::api(&path, e))?;
        if bytes.len() as u64 != want {
            return Err(self.short_body(&path, want, bytes.len() as u64));
        }
        if let Some(writer) = &self.inner.cache_writer {
            writer.submit_range(&key, block_start, &bytes);
        }
        Ok(bytes.slice((offset - block_start) as usize..(end - block_start) as usize))
    }

    /// `getxattr` of a virtual inode: a version's id.
    pub(super) fn versions_getxattr(&self, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        match (self.vnode(ino)?.0, name.to_str()) {
            (VNode::Version { version, .. }, Some(XATTR_VERSION)) => Ok(version.id.into_bytes()),
            (VNode::Version { version, .. }, Some(super::XATTR_ETAG))
                if !version.etag.is_empty() =>
            {
                Ok(version.etag.into_bytes())
            }
            _ => Err(FsError::NoAttribute(name.to_string_lossy().into_owned())),
        }
    }

    pub(super) fn versions_listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        Ok(match self.vnode(ino)?.0 {
            VNode::Version { .. } => format!("{XATTR_VERSION}\0").into_bytes(),
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, mtime: i64) -> FileVersion {
        FileVersion {
            id: id.into(),
            mtime,
            size: 1,
            etag: String::new(),
            description: String::new(),
            author: None,
        }
    }

    #[test]
    fn names_are_times_unique_sortable_and_stable() {
        let list = named(
            vec![
                v("c", 1_700_000_001),
                v("b", 1_700_000_000),
                v("a", 1_700_000_000),
            ],
            "report.docx",
        );
        let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "2023-11-14_22-13-21Z.docx",
                "2023-11-14_22-13-20Z_02.docx",
                "2023-11-14_22-13-20Z.docx"
            ]
        );
        // A newer version of the same second does not rename the older ones.
        let list2 = named(
            vec![
                v("d", 1_700_000_001),
                v("c", 1_700_000_001),
                v("b", 1_700_000_000),
                v("a", 1_700_000_000),
            ],
            "report.docx",
        );
        assert_eq!(list2[1].0, list[0].0);
        assert_eq!(list2[0].0, "2023-11-14_22-13-21Z_02.docx");
        // Sorting the names sorts the versions by time.
        let mut sorted: Vec<&str> = list2.iter().map(|(n, _)| n.as_str()).collect();
        sorted.sort();
        let ids: Vec<&str> = sorted
            .iter()
            .map(|n| list2.iter().find(|(m, _)| m == n).unwrap().1.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        // Absurd times are clamped; odd extensions are not kept.
        assert_eq!(
            named(vec![v("x", -5)], "Makefile")[0].0,
            "1970-01-01_00-00-00Z"
        );
        assert_eq!(
            named(vec![v("x", i64::MAX)], "a.b c")[0].0,
            "9999-12-31_23-59-59Z"
        );
        assert_eq!(extension(".bashrc"), "");
        assert_eq!(extension("a.tar.gz"), ".gz");
    }

    #[test]
    fn the_range_is_apart() {
        assert!(is_virtual(VIRTUAL_BASE + 1));
        assert!(!is_virtual(ROOT_INO));
        assert!(!is_virtual(1 << 40));
        assert!(hooked(ROOT_INO, OsStr::new(".versions")));
        assert!(!hooked(ROOT_INO, OsStr::new("versions")));
    }
}
