//! Uploading staged content: now (`close` waits), or later in write-back, recorded first in
//! the journal (see `journal`) and replayed by the next mount; and what happens on failure.
//!
//! Invariants:
//! - Once `close` has returned, the data is on the server, in the write-back journal (a record
//!   carrying the bytes or naming a synced staging file) or in the recovery folder: it is
//!   never silently dropped.
//! - An upload goes to the file's current path (a rename while it waits moves the record with
//!   it) and is retried with backoff; a non-transient failure, or the last attempt in
//!   synchronous mode, keeps the data in the recovery folder and reports it.
//! - After an upload the cache holds the server's new metadata and the content stays clean
//!   only if no write happened meanwhile; the journal record is forgotten only then.
//! - Uploads of one file run one at a time (its `io_lock`); write-back uploads run at most
//!   [`WRITE_BACK_UPLOADS`] at once.
//! - At start, every pending journal record is replayed; staging files no record names are
//!   removed.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::{
    CellsFs, ConflictMode, FileKind, FileState, FsError, FsResult, Meta, Staging, base_name,
    conflict, content, journal, parent_path, progress, table, table::is_md5_hex, unix_now,
};
use crate::api::{ApiError, NodeKind, UploadOptions};

/// Uploaded contents up to this size are kept in the data cache (see `keep_written`).
const KEEP_WRITTEN_MAX: u64 = 4 << 20;

/// What an upload sends: a staging file, or the content held in memory.
pub(super) enum UploadSource {
    File(PathBuf),
    Memory(Bytes),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum UploadMode {
    /// `close`/`fsync` waits: retry, then keep the data in the recovery folder.
    Sync,
    /// Write-back: retry; a transient failure keeps the journal record for later.
    Journaled,
}

/// Write-back uploads that run at once (each small file is one request: latency-bound).
pub(super) const WRITE_BACK_UPLOADS: usize = 8;

impl CellsFs {
    pub(super) fn replay_journal(&self) -> FsResult<()> {
        for (id, record) in self.inner.journal.pending() {
            let staging_path = self.inner.staging_dir.join(&record.staging);
            // The journal checked the name; a link planted in the folder is not followed.
            let file = match std::os::unix::fs::OpenOptionsExt::custom_flags(
                std::fs::OpenOptions::new().read(true).write(true),
                libc::O_NOFOLLOW,
            )
            .open(&staging_path)
            {
                Ok(file) => file,
                Err(e) => {
                    self.record_error(format!(
                        "write-back journal: staging file of {} is missing ({e})",
                        record.path
                    ));
                    self.inner.journal.remove(&id);
                    continue;
                }
            };
            let size = file.metadata()?.len();
            let state = Arc::new(FileState {
                id: id.clone(),
                staging: Mutex::new(Some(Staging {
                    content: content::Content::in_file(file, staging_path),
                    size,
                    version: 1,
                    clean_version: 0,
                    journaled: true,
                    synced_version: 1,
                    scheduled: false,
                    done_mark: 0,
                    attempts: 0,
                    modified: SystemTime::now(),
                    appending: false,
                    stream: None,
                    stream_started: false,
                    failed: None,
                    base: record.base.clone(),
                })),
                io_lock: tokio::sync::Mutex::new(()),
                epoch: AtomicU64::new(0),
            });
            let ino = {
                let mut table = self.inner.table.lock().unwrap();
                let mut meta = Meta::local_file();
                meta.size = size;
                let ino = table.intern(&record.path, meta, None);
                let data = table.inodes.get_mut(&ino).expect("interned");
                data.file = Some(state.clone());
                data.local = true;
                ino
            };
            tracing::info!(path = %record.path, size, "replaying a pending upload from the write-back journal");
            self.schedule_upload(ino, state, Duration::ZERO);
        }
        Ok(())
    }

    /// Staging files with no journal record belong to no pending upload.
    pub(super) fn clean_orphan_staging(&self) {
        let table = self.inner.table.lock().unwrap();
        let live: HashSet<String> = table
            .inodes
            .values()
            .filter_map(|d| d.file.as_ref().map(|f| f.id.clone()))
            .collect();
        drop(table);
        if let Ok(entries) = std::fs::read_dir(&self.inner.staging_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Make the file's pending changes durable: upload now, or journal them in write-back.
    pub(super) async fn commit(&self, ino: u64, file: Arc<FileState>) -> FsResult<()> {
        if let Some(failed) = file.failed() {
            return Err(failed);
        }
        if !file.dirty() {
            return Ok(());
        }
        match self.inner.options.write_back {
            Some(delay) => {
                self.journal_pending(ino, &file)?;
                self.schedule_upload(ino, file, delay);
                Ok(())
            }
            None => self.upload(ino, &file, UploadMode::Sync).await,
        }
    }

    fn journal_pending(&self, ino: u64, file: &FileState) -> FsResult<()> {
        let path = self.inner.table.lock().unwrap().get(ino)?.path.clone();
        let mut guard = file.staging.lock().unwrap();
        let Some(staging) = guard.as_mut() else {
            return Ok(());
        };
        if let Some(failed) = &staging.failed {
            return Err(failed.clone());
        }
        if staging.journaled && staging.synced_version == staging.version {
            return Ok(());
        }
        let record = journal::Record {
            path: path.clone(),
            staging: file.id.clone(),
            base: staging.base.clone(),
        };
        let recorded = if staging.size <= journal::INLINE_MAX {
            // One sync: the record carries the bytes, the staging file (if any) stays
            // unsynced. Bytes with no staging file stay with the journal too, for its
            // compactions.
            staging.content.to_bytes(staging.size).and_then(|bytes| {
                let only_copy = staging.content.is_memory();
                self.inner
                    .journal
                    .record_inline(&file.id, &record, bytes, only_copy)
            })
        } else {
            let synced = if staging.synced_version != staging.version {
                staging.content.sync_data()
            } else {
                Ok(())
            };
            // A record that carried older bytes must not outlive this version.
            synced.and_then(|()| {
                if !staging.journaled || self.inner.journal.carries_bytes(&file.id) {
                    self.inner.journal.record(&file.id, &record)
                } else {
                    Ok(())
                }
            })
        };
        if let Err(e) = recorded {
            // Not durable, so not acknowledged: never uploaded later either.
            return Err(self.staging_failed(&file.id, staging, &path, e.into()));
        }
        staging.synced_version = staging.version;
        staging.journaled = true;
        Ok(())
    }

    fn schedule_upload(&self, ino: u64, file: Arc<FileState>, delay: Duration) {
        {
            let mut guard = file.staging.lock().unwrap();
            match guard.as_mut() {
                Some(staging) if !staging.scheduled => staging.scheduled = true,
                _ => return,
            }
        }
        let weak = Arc::downgrade(&self.inner);
        let board = self.inner.progress.clone();
        tokio::spawn(async move {
            let mut wait = delay;
            loop {
                board.due(ino, Instant::now() + wait);
                tokio::time::sleep(wait).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let fs = CellsFs { inner };
                let slot = fs.inner.upload_slots.clone().acquire_owned().await;
                let uploaded = fs.upload(ino, &file, UploadMode::Journaled).await;
                drop(slot);
                match uploaded {
                    Ok(()) => break,
                    Err(e) if file.dirty() => {
                        let still_journaled = file
                            .staging
                            .lock()
                            .unwrap()
                            .as_ref()
                            .is_some_and(|s| s.journaled);
                        if !still_journaled {
                            break;
                        }
                        tracing::warn!("write-back upload will be retried: {e}");
                        wait = (wait * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    }
                    Err(_) => break,
                }
            }
            if let Some(staging) = file.staging.lock().unwrap().as_mut() {
                staging.scheduled = false;
            }
            if let Some(inner) = weak.upgrade() {
                CellsFs { inner }.release_staging_if_idle(ino);
            }
        });
    }

    /// Upload the staged content of `ino` to its current path, retrying. On success the cache
    /// holds the server's new metadata; on final failure the data goes to the recovery folder
    /// (Sync, or Journaled with a non-transient error).
    pub(super) async fn upload(
        &self,
        ino: u64,
        file: &FileState,
        mode: UploadMode,
    ) -> FsResult<()> {
        let _io = file.io_lock.lock().await;
        let _meter = progress::Ending {
            board: &self.inner.progress,
            ino,
        };
        let options = &self.inner.options;
        let mut delay = options.upload_retry_delay;
        let mut attempt = 0;
        let path_now = || {
            let table = self.inner.table.lock().unwrap();
            match table.get(ino) {
                Ok(data) => (data.path.clone(), data.detached),
                Err(_) => (String::new(), true),
            }
        };
        loop {
            let (path, detached) = path_now();
            // Changes of this name (or of a folder above it) asked for before this upload
            // reach the server first; later ones wait until it is done (see `order`).
            let _turn = match detached {
                true => None,
                false => Some(self.inner.order.turn(&[&path]).await),
            };
            let (path_then, detached) = path_now();
            if path_then != path {
                // Renamed while waiting for its turn: queue again under the new name.
                continue;
            }
            let snapshot = {
                let mut guard = file.staging.lock().unwrap();
                if let Some(failed) = guard.as_ref().and_then(|s| s.failed.clone()) {
                    return Err(failed);
                }
                match guard.as_mut() {
                    Some(s) if s.dirty() => {
                        if detached {
                            s.clean_version = s.version;
                            s.stream = None;
                            None
                        } else {
                            let source = match s.content.staging_path() {
                                Some(path) => UploadSource::File(path.to_path_buf()),
                                None => match s.content.to_bytes(s.size) {
                                    Ok(bytes) => UploadSource::Memory(bytes),
                                    Err(e) => {
                                        return Err(FsError::Local(format!(
                                            "{path}: cannot read the content: {e}"
                                        )));
                                    }
                                },
                            };
                            Some((source, s.size, s.version))
                        }
                    }
                    _ => None,
                }
            };
            let Some((source, size, version)) = snapshot else {
                self.forget_journal(file);
                return Ok(());
            };
            if self.background_pending(&path) {
                // The name's previous file is still being deleted (or copied to): upload after.
                self.settle_background(&path).await;
                continue;
            }
            // Does the server still hold the version this content is based on?
            let checked = if options.conflicts == ConflictMode::Overwrite {
                Ok(conflict::Verdict::Proceed)
            } else {
                let (base, own_stream) = file
                    .staging
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map(|s| {
                        let own = s.stream.as_ref().is_some_and(|parts| parts.path == path);
                        (s.base.clone(), own)
                    })
                    .unwrap_or((None, false));
                self.check_base(&path, base.as_ref(), &source, own_stream)
                    .await
            };
            let check_failed = match checked {
                Ok(conflict::Verdict::Proceed) => None,
                Ok(conflict::Verdict::Moved(server_etag)) => {
                    let resolved = self
                        .resolve_conflict(ino, file, &path, &source, version, &server_etag, mode)
                        .await;
                    match resolved {
                        // Written again meanwhile: that content is checked in turn.
                        Ok(()) if file.dirty() => continue,
                        other => return other,
                    }
                }
                Err(e) => Some(e),
            };
            // Parts sent while the file was written: send the rest and complete.
            let parts = file
                .staging
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|s| s.stream.take());
            let upload_options = UploadOptions {
                sent: Some(self.inner.progress.begin(ino, parts.is_some())),
                ..options.upload_options.clone()
            };
            let streamed = match parts {
                Some(parts)
                    if parts.path == path && size > options.upload_options.multipart_threshold =>
                {
                    match parts.finish(size).await {
                        Ok(etag) => Some(etag),
                        Err(e) => {
                            tracing::info!(
                                "the parts of {path} sent while it was written are void ({e}); \
                                 uploading it whole"
                            );
                            None
                        }
                    }
                }
                // Renamed or shrunk since: the stream is dropped, which aborts it.
                _ => None,
            };
            attempt += 1;
            let result = match (check_failed, streamed) {
                (Some(e), _) => Err(e),
                (None, Some(etag)) => Ok(etag),
                (None, None) => match &source {
                    UploadSource::File(staging_path) => {
                        self.inner
                            .api
                            .put_object_from_file(&path, staging_path, size, &upload_options)
                            .await
                    }
                    UploadSource::Memory(bytes) => {
                        self.inner
                            .api
                            .put_object(&path, bytes.clone(), &upload_options)
                            .await
                    }
                },
            };
            match result {
                Ok(etag) => {
                    self.keep_written(&source, size, &etag).await;
                    self.after_upload(ino, file, &path, etag, size, version)
                        .await;
                    if !file.dirty() {
                        return Ok(());
                    }
                    // Written again during the upload: go on with the newer content.
                    continue;
                }
                Err(e) => {
                    if let Some(s) = file.staging.lock().unwrap().as_mut() {
                        s.attempts += 1;
                    }
                    let retryable = e.is_transient() || matches!(e, ApiError::Local(_));
                    // Not after a timeout: the server stayed silent for a whole deadline.
                    if retryable && !e.is_timeout() && attempt < options.upload_attempts.max(1) {
                        tracing::warn!(%path, attempt, "upload failed, retrying: {e}");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                        continue;
                    }
                    if mode == UploadMode::Journaled && retryable {
                        self.record_error(format!(
                            "upload of {path} failed ({e}); kept in the write-back journal"
                        ));
                        return Err(FsError::api(&path, e));
                    }
                    return Err(self.keep_for_recovery(file, &path, &source, version, e));
                }
            }
        }
    }

    pub(super) fn keep_for_recovery(
        &self,
        file: &FileState,
        path: &str,
        source: &UploadSource,
        version: u64,
        error: ApiError,
    ) -> FsError {
        let kept = match source {
            UploadSource::File(staging_path) => {
                self.inner.journal.keep_for_recovery(path, staging_path)
            }
            UploadSource::Memory(bytes) => self.inner.journal.keep_bytes_for_recovery(path, bytes),
        };
        let kept_at = match (&kept, source) {
            (Ok(p), _) => p.display().to_string(),
            (Err(e), UploadSource::File(staging_path)) => format!(
                "nowhere ({e}); the staging file {} stays",
                staging_path.display()
            ),
            (Err(e), UploadSource::Memory(_)) => {
                format!(
                    "nowhere ({e}); the mount keeps it in memory and tries again at the next close"
                )
            }
        };
        if kept.is_ok() {
            if let Some(s) = file.staging.lock().unwrap().as_mut()
                && s.version == version
            {
                s.clean_version = version;
            }
            self.forget_journal(file);
        }
        let failure = FsError::UploadFailed {
            path: path.to_string(),
            reason: error.to_string(),
            kept_at,
        };
        self.record_error(failure.to_string());
        failure
    }

    /// Content just uploaded stays readable from the data cache under its MD5 (see
    /// `Meta::content_key`), so that reading it back (after a rename, a new open) costs no
    /// download: `git` renames `index.lock` onto `index`, then reads `index`. Only small
    /// contents ([`KEEP_WRITTEN_MAX`]), only when the bytes at hand are the ones the server
    /// acknowledged (their MD5 is its Etag: a staging file written again meanwhile is not).
    async fn keep_written(&self, source: &UploadSource, size: u64, etag: &str) {
        let Some(cache) = self.inner.data_cache.clone() else {
            return;
        };
        if size == 0 || size > KEEP_WRITTEN_MAX || !is_md5_hex(etag) {
            return;
        }
        let source = match source {
            UploadSource::Memory(bytes) => Ok(bytes.clone()),
            UploadSource::File(path) => Err(path.clone()),
        };
        let etag = etag.to_string();
        // Read, checked and stored off the runtime, before `close` returns: the next open
        // reads it.
        let _ = tokio::task::spawn_blocking(move || {
            use md5::Digest;
            let bytes = match source {
                Ok(bytes) => bytes,
                Err(path) => match std::fs::read(path) {
                    Ok(bytes) => Bytes::from(bytes),
                    Err(_) => return,
                },
            };
            if bytes.len() as u64 == size && hex::encode(md5::Md5::digest(&bytes)) == etag {
                cache.insert(&table::md5_content_key(&etag), 0, &bytes);
            }
        })
        .await;
    }

    pub(super) fn forget_journal(&self, file: &FileState) {
        let mut guard = file.staging.lock().unwrap();
        if let Some(s) = guard.as_mut()
            && s.journaled
            && !s.dirty()
        {
            s.done_mark = self.inner.journal.remove(&file.id);
            s.journaled = false;
        }
    }

    async fn after_upload(
        &self,
        ino: u64,
        file: &FileState,
        path: &str,
        etag: String,
        size: u64,
        version: u64,
    ) {
        // A single-part upload's ETag is the content's MD5, the very Etag the server's
        // listings show (cells-api.md §6.8): all that is left to learn is the Uuid (fetched
        // when asked for, `user.cells.uuid`) and the server's mtime (within a second of
        // ours). That saves one request per small file. Otherwise the REST stat gives the
        // Uuid and the listing's Etag (it may not find a dotfile on every server version:
        // the upload's ETag then stands in).
        let single_part = size <= self.inner.options.upload_options.multipart_threshold;
        let stat = if single_part && is_md5_hex(&etag) {
            None
        } else {
            self.inner.api.stat(path).await.ok().flatten()
        };
        let old_uuid = self
            .inner
            .table
            .lock()
            .unwrap()
            .get(ino)
            .map(|d| d.meta.uuid.clone())
            .unwrap_or_default();
        let meta = match stat {
            Some(node) if node.kind == NodeKind::File && !node.is_temporary() => {
                let mut meta = Meta::from_node(&node);
                meta.etag = if node.etag.is_empty() {
                    etag.clone()
                } else {
                    node.etag
                };
                meta
            }
            _ => Meta {
                user: None,
                uuid: old_uuid,
                kind: FileKind::File,
                size,
                mtime: unix_now(),
                etag: etag.clone(),
            },
        };
        self.inner.overlay.bind(path, &meta.etag);
        if let Some(s) = file.staging.lock().unwrap().as_mut() {
            if s.version == version {
                s.clean_version = version;
            }
            // What is staged now starts from the version just uploaded; a record still
            // pending for a newer version learns it (or its replay would see a conflict).
            let base = conflict::Base::Etag(meta.etag.clone());
            if s.journaled
                && s.dirty()
                && s.base.as_ref() != Some(&base)
                && let Err(e) = self.inner.journal.rebase(&file.id, &base)
            {
                tracing::warn!("write-back journal: cannot record the new base of {path}: {e}");
            }
            s.base = Some(base);
        }
        let mut table = self.inner.table.lock().unwrap();
        let stamp = self.stamp();
        if let Ok(data) = table.get_mut(ino) {
            data.meta = meta.clone();
            data.validated = stamp;
            data.local = false;
            data.kernel_etag = None;
        }
        if let Some(listing) = table.listing_mut(parent_path(path)) {
            listing.children.insert(base_name(path).to_string(), meta);
        }
        drop(table);
        self.forget_journal(file);
    }

    /// Upload every pending change now (write-back included). Used at unmount; failures are
    /// kept in the journal (write-back) or the recovery folder, and returned.
    pub async fn sync_all(&self) -> FsResult<()> {
        let pending: Vec<(u64, Arc<FileState>)> = {
            let table = self.inner.table.lock().unwrap();
            table
                .inodes
                .iter()
                .filter_map(|(&ino, d)| d.file.clone().map(|f| (ino, f)))
                .filter(|(_, f)| f.dirty())
                .collect()
        };
        let mode = if self.inner.options.write_back.is_some() {
            UploadMode::Journaled
        } else {
            UploadMode::Sync
        };
        if let Some(writer) = self.inner.cache_writer.clone() {
            // Blocks read so far reach the data cache (best effort, bounded by its queue).
            let _ = tokio::task::spawn_blocking(move || writer.flush()).await;
        }
        let mut first_error = None;
        for (ino, file) in pending {
            if let Err(e) = self.upload(ino, &file, mode).await {
                first_error.get_or_insert(e);
            }
            self.release_staging_if_idle(ino);
        }
        self.settle_background("").await;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
