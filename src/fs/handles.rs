//! Open files: their handles and what `open`, `flush` (`close`), `fsync`, `fsyncdir` and
//! `release` do.
//!
//! Invariants:
//! - Close-to-open consistency: `open` revalidates the attributes (one stat once they are
//!   older than the TTL) and lets the kernel keep its page cache only when the content's
//!   Etag is the one it last opened.
//! - A handle counts on its inode (`InodeData::handles`): an inode with an open handle stays
//!   in the table, and an unlinked file stays readable through its handles.
//! - A handle keeps the file's epoch when opened (see `FileState::epoch` and `conflict`).
//! - `flush` and `fsync` return once the data is durable: on the server or, for `flush` in
//!   write-back, in the journal; `fsync` uploads now in every mode. A file still empty,
//!   new or just truncated, is stored by `release` rather than by an early `flush` (`cmd > f`
//!   closes a duplicate descriptor before it writes). `release` of the last handle stores
//!   what is still pending and frees the staged content once clean.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{
    CellsFs, FileKind, FsError, FsResult, InodeData, OpenReply, ReadState, UploadMode, versions,
};

pub(super) struct Handle {
    pub(super) ino: u64,
    pub(super) writable: bool,
    pub(super) append: bool,
    /// The file's [`FileState::epoch`] when opened.
    pub(super) epoch: u64,
    pub(super) read: tokio::sync::Mutex<ReadState>,
}

impl CellsFs {
    /// A new handle; `data` is the inode's (its file's epoch is the handle's).
    pub(super) fn new_handle(
        &self,
        ino: u64,
        data: &InodeData,
        writable: bool,
        append: bool,
    ) -> u64 {
        let fh = self.inner.next_fh.fetch_add(1, Ordering::SeqCst);
        let epoch = data
            .file
            .as_ref()
            .map_or(0, |f| f.epoch.load(Ordering::SeqCst));
        let handle = Arc::new(Handle {
            ino,
            writable,
            append,
            epoch,
            read: tokio::sync::Mutex::new(ReadState {
                next_offset: 0,
                streak: 0,
                prefetch: None,
            }),
        });
        self.inner.handles.lock().unwrap().insert(fh, handle);
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.inner
            .handles
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle(fh))
    }

    /// Open a file with the kernel's `flags` (`O_ACCMODE`, `O_TRUNC`, `O_APPEND` are honoured).
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<OpenReply> {
        if versions::is_virtual(ino) {
            return self.versions_open(ino, flags);
        }
        let (path, kind) = self.path_of(ino)?;
        if kind == FileKind::Directory {
            return Err(FsError::IsADirectory(path));
        }
        // Renamed moments ago: the server has the content under this name once copied.
        self.settle_copies(&path).await;
        let access = flags & libc::O_ACCMODE;
        let writable = access == libc::O_WRONLY || access == libc::O_RDWR;
        if writable {
            self.check_writable(&path).await?;
        }
        // Close-to-open consistency: revalidate the attributes at open (one stat once they
        // are older than the TTL; an event invalidates them sooner), and a clean staged copy
        // of an older version gives way to the server's (see `conflict`).
        self.getattr(ino, None).await?;
        self.refresh_if_stale(ino);
        self.inner.table.lock().unwrap().get_mut(ino)?.handles += 1;
        if writable {
            if let Err(e) = self.ensure_staging(ino, flags & libc::O_TRUNC != 0).await {
                let mut table = self.inner.table.lock().unwrap();
                if let Ok(data) = table.get_mut(ino) {
                    data.handles -= 1;
                }
                return Err(e);
            }
            if flags & libc::O_TRUNC != 0 {
                self.inner.overlay.content_replaced(&path);
            }
        }
        let (keep_cache, fh) = {
            let mut table = self.inner.table.lock().unwrap();
            let data = table.get_mut(ino)?;
            let staged = data
                .file
                .as_ref()
                .is_some_and(|f| f.staging.lock().unwrap().is_some());
            let same = !staged && data.kernel_etag.as_deref() == Some(data.meta.etag.as_str());
            data.kernel_etag = (!staged).then(|| data.meta.etag.clone());
            let fh = self.new_handle(ino, data, writable, flags & libc::O_APPEND != 0);
            (same, fh)
        };
        Ok(OpenReply {
            fh,
            keep_cache,
            direct_io: false,
        })
    }

    /// `close` of one descriptor: uploads pending changes (or journals them in write-back).
    pub async fn flush(&self, ino: u64, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        if !handle.writable {
            return Ok(());
        }
        let (file, local) = {
            let table = self.inner.table.lock().unwrap();
            let data = table.get(ino)?;
            (data.file.clone(), data.local)
        };
        let Some(file) = file else {
            return Ok(());
        };
        if let Some(failed) = file.failed() {
            return Err(failed);
        }
        // A file still empty, new or just truncated by its opening: `cmd > f` closes a
        // duplicate of the descriptor before it writes. Storing it then would cost an upload
        // for nothing (and, for an existing file, show other clients an empty version); the
        // last close (`release`) stores it if nothing is written. In write-back, the journal
        // records it now: `close` has returned when the kernel sends `release`, and a crash
        // between the two would lose a change that was acknowledged.
        let empty = file
            .staging
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.size == 0);
        if empty && (local || file.dirty()) && self.inner.options.write_back.is_none() {
            return Ok(());
        }
        self.commit(ino, file).await
    }

    /// Upload now, even in write-back mode; returns once the data is on the server, under
    /// the file's name.
    pub async fn fsync(&self, ino: u64, fh: u64, _datasync: bool) -> FsResult<()> {
        if versions::is_virtual(ino) {
            return Ok(());
        }
        self.handle(fh)?;
        let file = self.inner.table.lock().unwrap().get(ino)?.file.clone();
        if let Some(failed) = file.as_ref().and_then(|f| f.failed()) {
            return Err(failed);
        }
        if let Some(file) = file
            && file.dirty()
        {
            self.upload(ino, &file, UploadMode::Sync).await?;
        }
        let (path, _) = self.path_of(ino)?;
        self.settle_background(&path).await;
        Ok(())
    }

    /// Returns once the server holds every name this mount changed in the folder: folder
    /// operations are synchronous on the server, but a fresh file's rename may still be
    /// finishing in the background.
    pub async fn fsyncdir(&self, ino: u64) -> FsResult<()> {
        let path = self.dir_path(ino)?;
        self.settle_background(&path).await;
        Ok(())
    }

    /// Last close of a handle: uploads what is still pending, frees the handle.
    pub async fn release(&self, ino: u64, fh: u64) -> FsResult<()> {
        if versions::is_virtual(ino) {
            return self.versions_release(ino, fh);
        }
        let handle = self
            .inner
            .handles
            .lock()
            .unwrap()
            .remove(&fh)
            .ok_or(FsError::BadHandle(fh))?;
        let result = if handle.writable {
            let file = self.inner.table.lock().unwrap().get(ino)?.file.clone();
            match file {
                Some(file) => self.commit(ino, file).await,
                None => Ok(()),
            }
        } else {
            Ok(())
        };
        {
            let mut table = self.inner.table.lock().unwrap();
            if let Ok(data) = table.get_mut(handle.ino) {
                data.handles = data.handles.saturating_sub(1);
            }
        }
        self.release_staging_if_idle(ino);
        result
    }
}
