//! New names and removals: `create`, `mknod`, `mkdir`, `link` (refused), `unlink`, `rmdir`.
//!
//! Invariants:
//! - A new name goes through [`checked_path`] (valid, normalised, storable) and
//!   `check_writable` (the mount, the workspace, the recycle bin) before anything changes.
//! - A created file exists only here until its first upload (`InodeData::local`); a folder is
//!   created on the server at once.
//! - A removal goes to the workspace's recycle bin unless `permanent_delete` (or the
//!   workspace has none); it waits for an upload in flight and for background work on that
//!   path first (see `rename`); a file never uploaded is only dropped here. The inode leaves
//!   the namespace locally at once (its open handles still work).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::time::Instant;

use super::{
    CellsFs, Entry, FileKind, FsError, FsResult, Listing, Meta, OpenReply, base_name, checked_path,
    parent_path, valid_name,
};
use crate::api::ApiError;

impl CellsFs {
    /// Create and open a new file (created on the server at the first flush).
    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        flags: i32,
    ) -> FsResult<(Entry, OpenReply)> {
        self.versions_refuse(parent, name)?;
        let parent_path = self.dir_path(parent)?;
        let path = checked_path(&parent_path, name)?;
        self.check_writable(&path).await?;
        if self.fetch_meta(&path, true).await?.is_some() {
            return Err(FsError::Exists(path));
        }
        let ino = self.create_local(&path)?;
        self.ensure_staging(ino, true).await?;
        let fh = {
            let mut table = self.inner.table.lock().unwrap();
            let data = table.get_mut(ino)?;
            data.handles += 1;
            data.nlookup += 1;
            // The creator may always write the file it created, whatever the access mode.
            let data = table.get(ino)?;
            self.new_handle(ino, data, true, flags & libc::O_APPEND != 0)
        };
        let entry = self.entry_for(ino)?;
        Ok((
            entry,
            OpenReply {
                fh,
                keep_cache: false,
                direct_io: false,
            },
        ))
    }

    /// A file that exists only here until its first upload.
    fn create_local(&self, path: &str) -> FsResult<u64> {
        self.inner.negative.lock().unwrap().pop(path);
        let mut table = self.inner.table.lock().unwrap();
        let stamp = self.stamp();
        let ino = table.intern(path, Meta::local_file(), stamp);
        let data = table.get_mut(ino)?;
        data.local = true;
        data.created_here = Some(Instant::now());
        if let Some(listing) = table.listing_mut(parent_path(path)) {
            listing
                .children
                .insert(base_name(path).to_string(), Meta::local_file());
        }
        drop(table);
        self.inner.overlay.remove(path);
        Ok(ino)
    }

    /// `mknod`: regular files are created (empty); devices, fifos and sockets are refused.
    pub async fn mknod(&self, parent: u64, name: &OsStr, mode: u32) -> FsResult<Entry> {
        // The POSIX file-type bits, as `u32` on every platform (libc's are `u16` on macOS).
        const S_IFMT: u32 = 0o170000;
        const S_IFREG: u32 = 0o100000;
        if mode & S_IFMT != S_IFREG && mode & S_IFMT != 0 {
            return Err(FsError::NotSupported(format!(
                "{}: Cells stores only files and folders",
                name.to_string_lossy()
            )));
        }
        let (entry, open) = self.create(parent, name, mode, libc::O_WRONLY).await?;
        self.release(entry.attr.ino, open.fh).await?;
        self.entry_for(entry.attr.ino)
    }

    pub async fn mkdir(&self, parent: u64, name: &OsStr, _mode: u32) -> FsResult<Entry> {
        self.versions_refuse(parent, name)?;
        let parent_path = self.dir_path(parent)?;
        let path = checked_path(&parent_path, name)?;
        let name = base_name(&path).to_string();
        self.check_writable(&path).await?;
        // The server answers the creation of an existing folder with success (Cells v4), so
        // whether the name exists is asked of it rather than of a cache that may not have
        // seen a folder made elsewhere; what this mount holds locally still counts first.
        let exists = match self.cached_meta(&path) {
            Some(Some(_)) => true,
            _ => self.fetch_meta(&path, false).await?.is_some(),
        };
        if exists {
            return Err(FsError::Exists(path));
        }
        let _turn = self.inner.order.turn(&[&path]).await;
        self.settle_background(&path).await;
        let created = self
            .inner
            .api
            .create_folders(std::slice::from_ref(&path))
            .await
            .map_err(|e| FsError::api(&path, e))?;
        let meta = created
            .iter()
            .find(|n| n.path == path)
            .map(Meta::from_node)
            .unwrap_or_else(Meta::folder);
        self.inner.negative.lock().unwrap().pop(&path);
        let ino = {
            let mut table = self.inner.table.lock().unwrap();
            let stamp = self.stamp();
            let ino = table.intern(&path, meta.clone(), stamp);
            let data = table.get_mut(ino)?;
            data.nlookup += 1;
            data.listing = Some(Listing {
                children: BTreeMap::new(),
                at: Instant::now(),
                generation: self.generation(),
            });
            if let Some(listing) = table.listing_mut(&parent_path) {
                listing.children.insert(name, meta);
            }
            ino
        };
        self.entry_for(ino)
    }

    /// The node `name` in `parent`, required to exist: `(path, ino if known, meta)`.
    pub(super) async fn existing(&self, parent: u64, name: &OsStr) -> FsResult<(String, Meta)> {
        let parent_path = self.dir_path(parent)?;
        let name = valid_name(name)?;
        match self.resolve(&parent_path, &name).await? {
            (path, Some(meta)) => Ok((path, meta)),
            (path, None) => Err(FsError::NotFound(path)),
        }
    }

    /// The local side of a removal: the inode leaves the namespace (its handles still work).
    pub(super) fn removed_locally(&self, path: &str) {
        let mut table = self.inner.table.lock().unwrap();
        let victims = table.subtree_inos(path);
        for ino in victims {
            if let Some(file) = table.inodes.get(&ino).and_then(|d| d.file.clone()) {
                let mut guard = file.staging.lock().unwrap();
                if let Some(s) = guard.as_mut() {
                    s.clean_version = s.version;
                    // Parts sent while it was written: the upload is aborted.
                    s.stream = None;
                    if s.journaled {
                        s.done_mark = self.inner.journal.remove(&file.id);
                        s.journaled = false;
                    }
                }
            }
            table.detach(ino);
        }
        if let Some(listing) = table.listing_mut(parent_path(path)) {
            listing.children.remove(base_name(path));
        }
        drop(table);
        self.inner.overlay.remove(path);
        self.inner
            .negative
            .lock()
            .unwrap()
            .put(path.to_string(), (Instant::now(), self.generation()));
    }

    pub(super) async fn delete_on_server(
        &self,
        path: &str,
        kind: FileKind,
        permanently: bool,
    ) -> FsResult<()> {
        let permanent = permanently
            || self.inner.options.permanent_delete
            || self.workspace_of(path).await?.skip_recycle;
        // A file deleted for good needs no job: the gateway's DELETE is permanent and
        // synchronous (cells-api.md §6.7), where a delete job costs a few polls.
        let result = if permanent && kind == FileKind::File {
            self.inner.api.delete_object(path).await
        } else {
            self.inner
                .api
                .delete_nodes(&[path.to_string()], permanent)
                .await
        };
        match result {
            Ok(()) | Err(ApiError::NotFound(_)) => Ok(()),
            Err(e) => Err(FsError::api(path, e)),
        }
    }

    /// Remove a file (to the recycle bin unless `permanent_delete`). An open file stays
    /// readable through its handles.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.versions_refuse(parent, name)?;
        let (path, meta) = self.existing(parent, name).await?;
        if meta.kind == FileKind::Directory {
            return Err(FsError::IsADirectory(path));
        }
        self.check_writable(&path).await?;
        let (ino, open) = {
            let table = self.inner.table.lock().unwrap();
            match table
                .by_path
                .get(&path)
                .and_then(|i| table.inodes.get(i).map(|d| (*i, d)))
            {
                Some((ino, d)) => (Some(ino), d.handles > 0),
                None => (None, false),
            }
        };
        if let (Some(ino), true) = (ino, open) {
            // Keep the content for the open handles.
            self.ensure_staging(ino, false).await?;
        }
        // An upload of this name may still be on its way (the kernel sends `release` after
        // `close` has returned; write-back uploads later): it ends first, and one not begun
        // yet finds the file removed. Only then is the name deleted on the server.
        let file = ino.and_then(|ino| {
            let table = self.inner.table.lock().unwrap();
            table.inodes.get(&ino).and_then(|d| d.file.clone())
        });
        let _io = match &file {
            Some(file) => Some(file.io_lock.lock().await),
            None => None,
        };
        let _turn = self.inner.order.turn(&[&path]).await;
        // Read once the upload in flight is done: it may have stored the file meanwhile.
        let local = ino.is_some_and(|ino| {
            let table = self.inner.table.lock().unwrap();
            table.inodes.get(&ino).is_some_and(|d| d.local)
        });
        if !local {
            self.settle_background(&path).await;
            self.delete_on_server(&path, FileKind::File, false).await?;
        }
        self.removed_locally(&path);
        Ok(())
    }

    /// Remove an empty folder (ENOTEMPTY otherwise).
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.versions_refuse(parent, name)?;
        let (path, meta) = self.existing(parent, name).await?;
        if meta.kind != FileKind::Directory {
            return Err(FsError::NotADirectory(path));
        }
        if !path.contains('/') {
            return Err(FsError::PermissionDenied(format!(
                "{path}: workspaces cannot be removed"
            )));
        }
        self.check_writable(&path).await?;
        // Uploads below it asked for earlier end first (see `order`).
        let _turn = self.inner.order.turn(&[&path]).await;
        self.settle_background(&path).await;
        if !self.listing(&path, true).await?.is_empty() {
            return Err(FsError::NotEmpty(path));
        }
        self.delete_on_server(&path, FileKind::Directory, false)
            .await?;
        self.removed_locally(&path);
        Ok(())
    }

    /// Hard links cannot be stored by Cells: always refused.
    pub async fn link(&self, _ino: u64, _new_parent: u64, new_name: &OsStr) -> FsResult<Entry> {
        self.versions_refuse_ino(_ino)?;
        self.versions_refuse(_new_parent, new_name)?;
        Err(FsError::NotSupported(format!(
            "{}: Cells cannot store hard links",
            new_name.to_string_lossy()
        )))
    }
}
