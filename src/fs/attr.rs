//! What the kernel asks about names and attributes: `lookup`, `forget`, `getattr`, `setattr`,
//! and the attributes reported for an inode ([`CellsFs::attr_of`]).
//!
//! Invariants:
//! - Each successful `lookup` (and each entry `create`/`mkdir` returns) counts one kernel
//!   lookup; `forget` gives them back, and only then may the inode leave the table.
//! - `lookup_cached` and `getattr_cached` answer from memory only, exactly as the waiting
//!   calls would; `None` sends the request to the server path instead.
//! - Attributes of a node created or changed here (pending upload) come from the mount, not
//!   the server; times set by the user live in the overlay (Cells assigns mtimes itself),
//!   and a file's time never goes back once uploaded.
//! - Mode bits reflect what the server allows (no write bits where a workspace, the mount or
//!   the recycle bin is read-only); `chmod`/`chown` are accepted without effect.
//! - A truncate goes through the file's staged content like a write (see `write`): with no
//!   handle open it is committed at once.

use std::ffi::OsStr;
use std::time::SystemTime;

use super::{
    Attr, AttrReply, CellsFs, Entry, FileKind, FsError, FsResult, InodeData, Meta, ROOT_INO,
    SetAttr, TimeOrNow, cache, conflict, join_path, to_stamp, to_system_time, valid_name, versions,
};

impl CellsFs {
    pub(super) fn attr_of(&self, ino: u64, data: &InodeData) -> Attr {
        let options = &self.inner.options;
        let (size, dirty, modified) = match data.file.as_ref().map(|f| f.staging.lock().unwrap()) {
            Some(guard) => match guard.as_ref() {
                // A clean copy of a version the server no longer holds (a handle opened
                // before keeps it): the name shows the server's (see `conflict`).
                Some(s) if conflict::stale_copy(s, &data.meta) => (data.meta.size, false, None),
                Some(s) => (s.size, s.dirty(), Some(s.modified)),
                None => (data.meta.size, false, None),
            },
            None => (data.meta.size, false, None),
        };
        let pending = dirty || data.local;
        let etag = if pending {
            None
        } else {
            Some(data.meta.etag.as_str())
        };
        let times = if data.path.is_empty() {
            None
        } else {
            self.inner.overlay.get(&data.path, etag)
        };
        // Whole seconds, as the server keeps them: a file's time never goes back from the
        // mount's clock to the server's second once uploaded.
        let server_mtime = if pending {
            modified
                .map(|m| to_system_time(to_stamp(m).0, 0))
                .unwrap_or_else(|| to_system_time(data.meta.mtime, 0))
        } else {
            to_system_time(data.meta.mtime, 0)
        };
        let mtime = times
            .as_ref()
            .and_then(|t| t.mtime)
            .map(|(s, n)| to_system_time(s, n))
            .unwrap_or(server_mtime);
        let atime = times
            .as_ref()
            .and_then(|t| t.atime)
            .map(|(s, n)| to_system_time(s, n))
            .unwrap_or(mtime);
        let writable = self.writable_cached(&data.path);
        let (perm, nlink, size) = match data.kind {
            FileKind::Directory => {
                let root = data.path.is_empty();
                let mode = if writable && !root {
                    options.dir_mode
                } else {
                    options.dir_mode & !0o222
                };
                (mode, 2, 4096)
            }
            FileKind::File | FileKind::Symlink => {
                let mode = if writable {
                    options.file_mode
                } else {
                    options.file_mode & !0o222
                };
                (mode, if data.detached { 0 } else { 1 }, size)
            }
        };
        let (kind, perm, size) = match self.link_len(&data.path, &data.meta) {
            Some(len) if data.kind == FileKind::File => (FileKind::Symlink, 0o777, len),
            _ => (data.kind, perm, size),
        };
        Attr {
            ino,
            kind,
            size,
            blocks: size.div_ceil(512),
            atime,
            mtime,
            ctime: mtime,
            perm,
            nlink,
            uid: options.uid,
            gid: options.gid,
            blksize: cache::BLOCK_SIZE as u32,
        }
    }

    pub(super) fn entry_for(&self, ino: u64) -> FsResult<Entry> {
        let table = self.inner.table.lock().unwrap();
        let data = table.get(ino)?;
        Ok(Entry {
            attr: self.attr_of(ino, data),
            ttl: self.kernel_ttl(data),
            generation: 0,
        })
    }

    pub(super) fn path_of(&self, ino: u64) -> FsResult<(String, FileKind)> {
        let table = self.inner.table.lock().unwrap();
        let data = table.get(ino)?;
        Ok((data.path.clone(), data.kind))
    }

    /// The mount path of `name` (checked) in the live folder `parent`.
    pub(super) fn child_path(&self, parent: u64, name: &OsStr) -> FsResult<String> {
        Ok(join_path(&self.dir_path(parent)?, &valid_name(name)?))
    }

    pub(super) fn dir_path(&self, ino: u64) -> FsResult<String> {
        let table = self.inner.table.lock().unwrap();
        let data = table.get(ino)?;
        if data.kind != FileKind::Directory {
            return Err(FsError::NotADirectory(data.path.clone()));
        }
        if data.detached {
            return Err(FsError::NotFound(data.path.clone()));
        }
        Ok(data.path.clone())
    }

    /// Find `name` in `parent`. Counts one kernel lookup on success.
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        if versions::hooked(parent, name) {
            return self.versions_lookup(parent, name).await;
        }
        let parent_path = self.dir_path(parent)?;
        let name = valid_name(name)?;
        let (path, meta) = self.resolve(&parent_path, &name).await?;
        self.looked_up(path, meta)
    }

    /// [`CellsFs::lookup`] when memory can answer it (the answer is the same), without
    /// waiting: `None` when the server must be asked. The kernel asks again for every path
    /// component each time its entry expires (`--attr-timeout`): `rsync`'s no-op run, `git
    /// status` and `ls -l` are mostly such questions.
    pub fn lookup_cached(&self, parent: u64, name: &OsStr) -> Option<FsResult<Entry>> {
        if versions::hooked(parent, name) {
            return None;
        }
        let path = match self.child_path(parent, name) {
            Ok(path) => path,
            Err(e) => return Some(Err(e)),
        };
        let meta = self.cached_meta(&path)?;
        if !self.plain_lookup(name, meta.is_some()) {
            return None;
        }
        Some(self.looked_up(path, meta))
    }

    pub(super) fn looked_up(&self, path: String, meta: Option<Meta>) -> FsResult<Entry> {
        let Some(meta) = meta else {
            return Err(FsError::NotFound(path));
        };
        let mut table = self.inner.table.lock().unwrap();
        let validated = self.stamp();
        let ino = table.intern(&path, meta, validated);
        let data = table.get_mut(ino)?;
        data.nlookup += 1;
        let data = table.get(ino)?;
        Ok(Entry {
            attr: self.attr_of(ino, data),
            ttl: self.kernel_ttl(data),
            generation: 0,
        })
    }

    /// The kernel dropped `nlookup` references to `ino`.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        if versions::is_virtual(ino) {
            return self.versions_forget(ino, nlookup);
        }
        let mut table = self.inner.table.lock().unwrap();
        if let Some(data) = table.inodes.get_mut(&ino) {
            data.nlookup = data.nlookup.saturating_sub(nlookup);
            table.maybe_drop(ino);
        }
    }

    /// The attributes of `ino` need no check with the server: it is only here (or changing
    /// here), or it was confirmed recently enough.
    pub(super) fn attr_trusted(&self, ino: u64, data: &InodeData) -> bool {
        let busy = data.local
            || data.detached
            || data.file.as_ref().is_some_and(|f| f.dirty())
            || ino == ROOT_INO;
        busy || self.fresh(
            data.validated,
            self.trusted_for(self.inner.options.attr_timeout, &data.path),
        )
    }

    /// [`CellsFs::getattr`] when memory can answer it, without waiting: `None` when the
    /// server must be asked.
    pub fn getattr_cached(&self, ino: u64) -> Option<FsResult<AttrReply>> {
        if versions::is_virtual(ino) {
            return Some(self.versions_getattr(ino));
        }
        let table = self.inner.table.lock().unwrap();
        let data = match table.get(ino) {
            Ok(data) => data,
            Err(e) => return Some(Err(e)),
        };
        self.attr_trusted(ino, data).then(|| {
            Ok(AttrReply {
                attr: self.attr_of(ino, data),
                ttl: self.kernel_ttl(data),
            })
        })
    }

    pub async fn getattr(&self, ino: u64, _fh: Option<u64>) -> FsResult<AttrReply> {
        if versions::is_virtual(ino) {
            return self.versions_getattr(ino);
        }
        let (path, needs_check) = {
            let table = self.inner.table.lock().unwrap();
            let data = table.get(ino)?;
            (data.path.clone(), !self.attr_trusted(ino, data))
        };
        if needs_check {
            match self.fetch_meta(&path, true).await? {
                Some(meta) => {
                    let mut table = self.inner.table.lock().unwrap();
                    let stamp = self.stamp();
                    if table.by_path.get(&path) == Some(&ino) {
                        table.intern(&path, meta, stamp);
                    }
                }
                None => {
                    let mut table = self.inner.table.lock().unwrap();
                    let has_handles = table.get(ino)?.handles > 0;
                    if !has_handles {
                        table.detach(ino);
                        return Err(FsError::NotFound(path));
                    }
                }
            }
        }
        let table = self.inner.table.lock().unwrap();
        let data = table.get(ino)?;
        Ok(AttrReply {
            attr: self.attr_of(ino, data),
            ttl: self.kernel_ttl(data),
        })
    }

    /// Truncate/extend, set times (kept in the local overlay); mode/uid/gid accepted without
    /// effect.
    pub async fn setattr(&self, ino: u64, changes: SetAttr) -> FsResult<AttrReply> {
        self.versions_refuse_ino(ino)?;
        let (path, kind) = self.path_of(ino)?;
        if let Some(size) = changes.size {
            if kind == FileKind::Directory {
                return Err(FsError::IsADirectory(path));
            }
            self.check_writable(&path).await?;
            let file = self.ensure_staging(ino, size == 0).await?;
            self.keep_acknowledged(ino, &file).await?;
            if let Some(handle) = changes.fh.and_then(|fh| self.handle(fh).ok()) {
                self.note_writer_epoch(&handle, &file);
            }
            {
                let mut guard = file.staging.lock().unwrap();
                let staging = guard.as_mut().expect("staging exists");
                if size == 0 {
                    // Emptied: the content is known again, whatever failed before.
                    staging.failed = None;
                } else if let Some(failed) = &staging.failed {
                    return Err(failed.clone());
                }
                if let Err(e) = staging
                    .content
                    .set_len(size, &self.staging_file_for(&file.id))
                {
                    return Err(self.staging_failed(&file.id, staging, &path, e.into()));
                }
                staging.size = size;
                staging.version += 1;
                staging.modified = SystemTime::now();
                staging.stop_stream(size == 0);
            }
            self.inner.overlay.content_replaced(&path);
            // truncate(2) has no handle: the change is committed now; ftruncate's at close.
            let has_handles = self.inner.table.lock().unwrap().get(ino)?.handles > 0;
            if !has_handles {
                let committed = self.commit(ino, file).await;
                self.release_staging_if_idle(ino);
                committed?;
            }
        }
        if (changes.atime.is_some() || changes.mtime.is_some())
            && (kind == FileKind::File || !path.is_empty())
        {
            if self.inner.options.read_only {
                return Err(FsError::ReadOnly(path));
            }
            let stamp_of = |t: TimeOrNow| match t {
                TimeOrNow::Now => to_stamp(SystemTime::now()),
                TimeOrNow::At(time) => to_stamp(time),
            };
            let etag = {
                let table = self.inner.table.lock().unwrap();
                let data = table.get(ino)?;
                let pending = data.local || data.file.as_ref().is_some_and(|f| f.dirty());
                (!pending).then(|| data.meta.etag.clone())
            };
            self.inner.overlay.set(
                &path,
                etag.as_deref(),
                changes.mtime.map(stamp_of),
                changes.atime.map(stamp_of),
            );
        }
        self.getattr(ino, changes.fh).await
    }
}
