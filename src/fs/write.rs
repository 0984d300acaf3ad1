//! Writing a file: its whole content is staged ([`Staging`], shared by the handles of the
//! inode through its [`FileState`]), in memory while small and written from empty (see
//! `content`), else in a staging file (downloaded once unless truncated); `write` and
//! `truncate` change the staged content, which `upload` later sends.
//!
//! Invariants:
//! - Every change bumps the content's version; the content is on the server when that version
//!   equals `clean_version` ([`Staging::dirty`]).
//! - Staging creation and uploads of one file are serialised by its `io_lock` (held across
//!   awaits, per file only); the staged content itself is behind a plain mutex, never held
//!   across an `.await`.
//! - A change that failed (a full cache disk) leaves content that is not what was written: it
//!   is never stored, and every later write, `close` and `fsync` answers the error until the
//!   content is emptied ([`CellsFs::staging_failed`]).
//! - In write-back, a version a `close` acknowledged is uploaded before its staging file is
//!   changed in place ([`CellsFs::keep_acknowledged`]): a crash never replays a half-written
//!   file instead of it.
//! - A new file growing by appends past the multipart threshold streams its complete parts
//!   while it is written (see `stream`); any other change voids what was streamed.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::StreamExt;

use super::{
    CellsFs, FsError, FsResult, KernelInvalidation, UploadMode, base_name, conflict, content,
    parent_path, stream,
};
use crate::api::UploadOptions;

/// The content of a file opened for writing (shared by all its handles).
pub(super) struct Staging {
    pub(super) content: content::Content,
    pub(super) size: u64,
    /// Bumped by every change; the content is on the server when equal to `clean_version`.
    pub(super) version: u64,
    pub(super) clean_version: u64,
    /// A journal record exists for this pending upload.
    pub(super) journaled: bool,
    /// The version last made durable on the local disk (write-back).
    pub(super) synced_version: u64,
    /// A write-back task is scheduled.
    pub(super) scheduled: bool,
    /// The journal mark from which this file's last record is forgotten (0: it had none).
    pub(super) done_mark: u64,
    pub(super) attempts: u32,
    pub(super) modified: SystemTime,
    /// Every write since the content was empty appended at its end.
    pub(super) appending: bool,
    /// The parts sent while the file is written (see [`stream`]); at most one per content.
    pub(super) stream: Option<stream::PartStream>,
    pub(super) stream_started: bool,
    /// A change to the content failed (a full cache disk): it is not what was written, so it
    /// is never stored. Every write, `close` and `fsync` answers this error until the content
    /// is emptied (see [`CellsFs::staging_failed`]).
    pub(super) failed: Option<FsError>,
    /// The server version this content is based on; `None`: unknown (a journal record of
    /// an earlier version), never checked (see `conflict`).
    pub(super) base: Option<conflict::Base>,
}

impl Staging {
    /// The content changes other than by appending: whatever was streamed is void.
    pub(super) fn stop_stream(&mut self, emptied: bool) {
        self.stream = None;
        self.appending = emptied;
        if emptied {
            self.stream_started = false;
        }
    }

    pub(super) fn dirty(&self) -> bool {
        self.version != self.clean_version
    }
}

/// Per-file state shared by the handles of one inode.
pub(super) struct FileState {
    /// Identifies the staging file and the journal record.
    pub(super) id: String,
    pub(super) staging: Mutex<Option<Staging>>,
    /// Serialises staging creation and uploads of this file (held across awaits, per file).
    pub(super) io_lock: tokio::sync::Mutex<()>,
    /// Bumped when a clean staged content is dropped for the server's newer version: a
    /// handle opened before writes on the old one (see `conflict`).
    pub(super) epoch: AtomicU64,
}

impl FileState {
    pub(super) fn dirty(&self) -> bool {
        self.staging
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(Staging::dirty)
    }

    /// Why the staged content must not be stored, if it must not (see [`Staging::failed`]).
    pub(super) fn failed(&self) -> Option<FsError> {
        self.staging
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|s| s.failed.clone())
    }
}

impl CellsFs {
    /// The shared state of an open file, its whole content staged: in memory when written
    /// from empty (see `content`), else in a staging file (downloaded once unless `truncate`).
    pub(super) async fn ensure_staging(
        &self,
        ino: u64,
        truncate: bool,
    ) -> FsResult<Arc<FileState>> {
        let file = {
            let mut table = self.inner.table.lock().unwrap();
            let data = table.get_mut(ino)?;
            data.file
                .get_or_insert_with(|| {
                    Arc::new(FileState {
                        id: uuid::Uuid::new_v4().to_string(),
                        staging: Mutex::new(None),
                        io_lock: tokio::sync::Mutex::new(()),
                        epoch: AtomicU64::new(0),
                    })
                })
                .clone()
        };
        if truncate {
            self.keep_acknowledged(ino, &file).await?;
        }
        let _io = file.io_lock.lock().await;
        {
            // Before the staging lock: the table's is taken first.
            let staged_path = self.path_of(ino).map(|(p, _)| p).unwrap_or_default();
            let mut guard = file.staging.lock().unwrap();
            if let Some(staging) = guard.as_mut() {
                if truncate && (staging.size > 0 || staging.failed.is_some()) {
                    // Rewritten from empty: the content is known again, whatever failed.
                    staging.failed = None;
                    if let Err(e) = staging.content.set_len(0, &self.staging_file_for(&file.id)) {
                        let failed = self.staging_failed(&file.id, staging, &staged_path, e.into());
                        return Err(failed);
                    }
                    staging.size = 0;
                    staging.version += 1;
                    staging.modified = SystemTime::now();
                    staging.stop_stream(true);
                }
                return Ok(file.clone());
            }
        }
        let (path, meta, local) = {
            let table = self.inner.table.lock().unwrap();
            let data = table.get(ino)?;
            (data.path.clone(), data.meta.clone(), data.local)
        };
        let mut size = 0;
        let content = if truncate || local || meta.size == 0 {
            // Written from empty: in memory while small (see `content`).
            content::Content::in_memory(&self.inner.memory_budget)
        } else {
            let (mut staging_file, staging_path) = self
                .inner
                .staging_pool
                .take(&file.id, self.inner.journal.durable())?;
            let downloaded: FsResult<()> = async {
                let mut stream = self
                    .inner
                    .api
                    .get_object(&path, None)
                    .await
                    .map_err(|e| FsError::api(&path, e))?;
                use std::io::Write;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| FsError::api(&path, e))?;
                    staging_file.write_all(&chunk)?;
                    size += chunk.len() as u64;
                }
                Ok(())
            }
            .await;
            if let Err(e) = downloaded {
                // A partial copy (a full disk, a broken download) would only hold disk space.
                drop(staging_file);
                let _ = std::fs::remove_file(&staging_path);
                return Err(e);
            }
            content::Content::in_file(staging_file, staging_path)
        };
        let version = u64::from(truncate && meta.size > 0 || local);
        *file.staging.lock().unwrap() = Some(Staging {
            content,
            size,
            version,
            clean_version: 0,
            journaled: false,
            synced_version: 0,
            scheduled: false,
            done_mark: 0,
            attempts: 0,
            modified: SystemTime::now(),
            appending: size == 0,
            stream: None,
            stream_started: false,
            failed: None,
            base: Some(if local {
                conflict::Base::Absent
            } else {
                conflict::Base::Etag(meta.etag.clone())
            }),
        });
        Ok(file.clone())
    }

    /// Hands out the staging file of `id` when its content leaves memory.
    pub(super) fn staging_file_for<'a>(
        &'a self,
        id: &'a str,
    ) -> impl Fn() -> std::io::Result<(std::fs::File, PathBuf)> + 'a {
        move || {
            self.inner
                .staging_pool
                .take(id, self.inner.journal.durable())
        }
    }

    /// A change to the staged content of the file `id` (at `path`) failed with `error` (the
    /// cache disk is full, say): what is staged is no longer what was written, so it is never
    /// stored. The pending upload is dropped (streamed parts are aborted): the server keeps
    /// its version. The staged bytes are discarded, which frees the disk that is likely full:
    /// the writer was told its data was not stored and still has it. Except when an earlier
    /// `close` journaled this content (write-back), which was acknowledged: the staged file
    /// then moves to the recovery folder (a rename, no space needed), or if that fails stays
    /// with its record, for the next mount. Every later write, `close`, `fsync` and read of
    /// this content answers the returned error, until the file is emptied (an open with
    /// `O_TRUNC`, a truncate to 0) or its last handle closes (the server's version shows
    /// again). The error is logged and listed in the status with the path.
    pub(super) fn staging_failed(
        &self,
        id: &str,
        staging: &mut Staging,
        path: &str,
        error: FsError,
    ) -> FsError {
        if let Some(failed) = &staging.failed {
            return failed.clone();
        }
        let no_space = error.errno() == libc::ENOSPC;
        let mut reason = error.to_string();
        staging.stream = None;
        staging.clean_version = staging.version;
        let staged = std::mem::replace(
            &mut staging.content,
            content::Content::in_memory(&self.inner.memory_budget),
        );
        let old_size = std::mem::replace(&mut staging.size, 0);
        if staging.journaled {
            let journal = &self.inner.journal;
            let kept = match staged.staging_path() {
                Some(staging_path) => journal.move_to_recovery(path, staging_path),
                None => staged
                    .to_bytes(old_size)
                    .and_then(|bytes| journal.keep_bytes_for_recovery(path, &bytes)),
            };
            match kept {
                Ok(at) => {
                    staging.done_mark = journal.remove(id);
                    staging.journaled = false;
                    reason = format!(
                        "{reason}; what an earlier close acknowledged, with the writes since, \
                         is kept in {}",
                        at.display()
                    );
                }
                Err(e) => {
                    staging.content = staged;
                    staging.size = old_size;
                    reason = format!(
                        "{reason}; the write-back journal keeps what an earlier close \
                         acknowledged (not moved to the recovery folder: {e})"
                    );
                }
            }
        } else if let Some(staging_path) = staged.staging_path() {
            let _ = std::fs::remove_file(staging_path);
        }
        let failed = FsError::NotStored {
            path: path.to_string(),
            reason,
            no_space,
        };
        self.record_error(failed.to_string());
        staging.failed = Some(failed.clone());
        failed
    }

    /// Write `data` at `offset` into the file's staged content; returns the bytes written.
    pub async fn write(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        if !handle.writable {
            return Err(FsError::BadHandle(fh));
        }
        if data.is_empty() {
            // POSIX: a write of nothing changes nothing (not even the size).
            return Ok(0);
        }
        let (file, path, new_here) = {
            let table = self.inner.table.lock().unwrap();
            let d = table.get(ino)?;
            // Not on the server, or empty there (`fio` and the shell create the file first).
            let empty_there = d.local || d.meta.size == 0;
            (d.file.clone(), d.path.clone(), empty_there && !d.detached)
        };
        let file = match file {
            Some(file) if file.staging.lock().unwrap().is_some() => file,
            _ => self.ensure_staging(ino, false).await?,
        };
        self.keep_acknowledged(ino, &file).await?;
        self.note_writer_epoch(&handle, &file);
        {
            let mut guard = file.staging.lock().unwrap();
            let staging = guard
                .as_mut()
                .ok_or_else(|| FsError::Local(format!("{path}: no staging file")))?;
            if let Some(failed) = &staging.failed {
                return Err(failed.clone());
            }
            let at = if handle.append { staging.size } else { offset };
            if let Err(e) = staging
                .content
                .write_at(data, at, &self.staging_file_for(&file.id))
            {
                return Err(self.staging_failed(&file.id, staging, &path, e.into()));
            }
            if at != staging.size {
                staging.stop_stream(false);
            }
            staging.size = staging.size.max(at + data.len() as u64);
            staging.version += 1;
            staging.modified = SystemTime::now();
            if new_here {
                self.stream_parts(ino, &path, staging);
            }
        }
        self.inner.overlay.content_replaced(&path);
        Ok(data.len() as u32)
    }

    /// A new file growing by appends past the multipart threshold sends its complete parts
    /// now, while it is written (see [`stream`]); in write-back too, where the upload then
    /// only has the tail to send. Only for a file not on the server yet or empty there (the
    /// server shows a temporary node at the path while a multipart upload is open: no one
    /// loses sight of content meanwhile).
    fn stream_parts(&self, ino: u64, path: &str, staging: &mut Staging) {
        let options = &self.inner.options;
        if !staging.appending {
            return;
        }
        if staging.stream.is_none() {
            if staging.stream_started || staging.size <= options.upload_options.multipart_threshold
            {
                return;
            }
            // Content this large is in a staging file (see `content::MEMORY_MAX`).
            let Some(staging_path) = staging.content.staging_path() else {
                return;
            };
            staging.stream_started = true;
            staging.stream = Some(stream::PartStream::start(
                self.inner.api.clone(),
                self.inner.journal.clone(),
                path,
                staging_path.to_path_buf(),
                &UploadOptions {
                    sent: Some(self.inner.progress.streaming(ino)),
                    ..options.upload_options.clone()
                },
                self.retry(),
            ));
        }
        if let Some(parts) = staging.stream.as_mut() {
            parts.feed(staging.size);
        }
    }

    /// Write-back: a version a `close` acknowledged is in the journal, by a record that names
    /// the staging file (a record carries the bytes of a small file only). That file is about
    /// to change in place: a crash in the middle of the change would replay a half-written
    /// file instead of the acknowledged one, so that version is uploaded first. If it cannot
    /// be (the server is away), the change fails and the acknowledged version stays pending.
    pub(super) async fn keep_acknowledged(&self, ino: u64, file: &FileState) -> FsResult<()> {
        let at_risk = file
            .staging
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.journaled && s.dirty() && s.synced_version == s.version)
            && !self.inner.journal.carries_bytes(&file.id);
        if at_risk {
            self.upload(ino, file, UploadMode::Journaled).await?;
        }
        Ok(())
    }

    /// Drop the content of a clean file no handle uses (a staging file goes back to the pool).
    pub(super) fn release_staging_if_idle(&self, ino: u64) {
        let mut table = self.inner.table.lock().unwrap();
        let Some(data) = table.inodes.get_mut(&ino) else {
            return;
        };
        if data.handles > 0 {
            return;
        }
        let Some(file) = data.file.clone() else {
            return;
        };
        let mut guard = file.staging.lock().unwrap();
        let idle = guard
            .as_ref()
            .is_none_or(|s| !s.dirty() && !s.journaled && !s.scheduled);
        if idle {
            // A file the server never had, whose content failed to stage: nothing of it is
            // stored, so its name goes too (the server's view, with nothing in between).
            let unstored = (data.local
                && !data.detached
                && guard.as_ref().is_some_and(|s| s.failed.is_some()))
            .then(|| data.path.clone());
            if let Some(Staging {
                content: content::Content::File { file, path },
                size,
                done_mark,
                ..
            }) = guard.take()
            {
                let durable = self.inner.journal.durable();
                self.inner
                    .staging_pool
                    .give_back(file, path, size, done_mark, durable);
            }
            drop(guard);
            data.file = None;
            table.maybe_drop(ino);
            if let Some(path) = unstored {
                let parent = table.by_path.get(parent_path(&path)).copied();
                drop(table);
                self.removed_locally(&path);
                if let (Some(notifier), Some(parent)) = (self.inner.notifier.get(), parent) {
                    let name = base_name(&path).to_string();
                    let _ = notifier.send(KernelInvalidation::Entry(parent, name));
                }
            }
        }
    }
}
