//! Rename: through the server's move job, which the call waits for, except for a small file
//! this mount created moments ago, which the server copies in the background while the
//! mount already shows the new name ([`CellsFs::rename_in_background`]).
//!
//! Invariants:
//! - `RENAME_NOREPLACE` is honoured, `RENAME_EXCHANGE` refused; a folder move that would push
//!   a path below it past the server's key limit is refused (see `key_limit`).
//! - A background rename is journaled before the rename returns, so a crash is finished by
//!   the next mount ([`RenameStart::Replay`]); it copies, then deletes the old name for good.
//! - Until the copy is done, reads of the new name from the server wait for it
//!   ([`CellsFs::settle_copies`]); until the delete is done, the old name is hidden; changes
//!   at either name wait for both ([`CellsFs::settle_background`]). At most
//!   [`BACKGROUND_MOVES`] run at once.
//! - A replayed copy never overwrites a newer content at the new name with the older one.
//! - Locally, the inodes of the moved subtree keep their numbers and move to the new paths
//!   ([`CellsFs::moved_locally`]), with their pending uploads and overlay times.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    CellsFs, FileKind, FsError, FsResult, Meta, RENAME_EXCHANGE, RENAME_NOREPLACE, RemoteChange,
    UploadMode, base_name, checked_path, is_under_or_eq, journal, parent_path,
};
use crate::api::{ApiError, ApiResult, S3Entry};

/// A receiver in `pending` for `path` or a path below it (`""`: any).
fn pending_at_or_below(
    pending: &Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    path: &str,
) -> Option<tokio::sync::watch::Receiver<bool>> {
    let pending = pending.lock().unwrap();
    if pending.is_empty() {
        return None;
    }
    pending
        .iter()
        .find(|(p, _)| path.is_empty() || is_under_or_eq(p, path))
        .map(|(_, receiver)| receiver.clone())
}

/// A rename of a file this mount created less than `FRESH_RENAME_WINDOW` ago and at most
/// this big copies it on the server instead of moving it (see `rename`).
const FRESH_RENAME_MAX_SIZE: u64 = 64 * 1024 * 1024;

const FRESH_RENAME_WINDOW: Duration = Duration::from_secs(300);

/// Renames of fresh files the server may still be doing while the mount goes on.
pub(super) const BACKGROUND_MOVES: usize = 16;

/// Where a rename left to the background starts ([`CellsFs::rename_in_background`]).
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum RenameStart {
    /// Copy to the new name, then delete the old one.
    Copy,
    /// The copy is done: delete the old name.
    Delete,
    /// A previous mount's rename, from the journal: first see what the server has.
    Replay,
}

/// What the copy step of a background rename did.
enum RenameCopy {
    /// The new name holds the data: the old one is to be deleted.
    Copied,
    /// The server's move job did it all.
    Moved,
    /// Nothing is left to do.
    Nothing,
}

impl CellsFs {
    /// Finish a fresh file's rename on the server in the background (see [`RenameStart`]):
    /// copy `from` to `to` (the server's move job if the copy is refused), then delete `from`
    /// for good. This mount shows the new name already. Until the copy is done, reads of `to`
    /// from the server wait for it ([`CellsFs::settle_copies`]); until the delete is done,
    /// `from` is hidden; changes at either name wait for both ([`CellsFs::settle_background`]).
    /// A journaled rename (`id`) is forgotten once `to` holds the data: a crash before that
    /// is finished by the next mount, a crash after it can leave `from` behind (a copy).
    pub(super) fn rename_in_background(
        &self,
        id: Option<String>,
        record: journal::MoveRecord,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
        start: RenameStart,
    ) {
        let journal::MoveRecord { from, to } = record;
        let (copied, copy_receiver) = tokio::sync::watch::channel(false);
        let (deleted, delete_receiver) = tokio::sync::watch::channel(false);
        if start != RenameStart::Delete {
            self.inner
                .pending_copies
                .lock()
                .unwrap()
                .insert(to.clone(), copy_receiver);
        }
        self.inner
            .pending_deletes
            .lock()
            .unwrap()
            .insert(from.clone(), delete_receiver);
        let fs = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let outcome = match start {
                RenameStart::Copy => fs.copy_renamed(&from, &to).await,
                RenameStart::Delete => Ok(RenameCopy::Copied),
                RenameStart::Replay => fs.replay_renamed(&from, &to).await,
            };
            if let Some(id) = &id
                && (outcome.is_ok() || start != RenameStart::Replay)
            {
                fs.inner.journal.move_ended(id);
            }
            fs.inner.pending_copies.lock().unwrap().remove(&to);
            let _ = copied.send(true);
            let failed = match outcome {
                Ok(RenameCopy::Copied) => {
                    match fs.retry().run(|| fs.inner.api.delete_object(&from)).await {
                        Ok(()) | Err(ApiError::NotFound(_)) => false,
                        Err(e) => {
                            fs.record_error(format!(
                                "{from}: the old name of a file renamed to {to} could not be \
                                 deleted ({e}); it stays on the server"
                            ));
                            true
                        }
                    }
                }
                Ok(RenameCopy::Moved | RenameCopy::Nothing) => false,
                Err(e) => {
                    fs.record_error(format!(
                        "{from} -> {to}: the server could not finish the rename ({e}); the \
                         file stays under its old name"
                    ));
                    true
                }
            };
            if failed {
                // Show the server's names again: forget what this mount said of both (before
                // anyone waiting for the rename goes on).
                fs.invalidate(RemoteChange::Moved {
                    from: to.clone(),
                    to: from.clone(),
                });
            }
            // A listing fetched while the delete was under way may still hold the old name,
            // which stops being hidden now: count this as a change of the cached listings, so
            // that such a listing is not kept but fetched again (see `folders`).
            fs.inner.table.lock().unwrap().listing_changes += 1;
            fs.inner.pending_deletes.lock().unwrap().remove(&from);
            let _ = deleted.send(true);
        });
    }

    /// The copy of a background rename, retried; the server's move job if refused.
    async fn copy_renamed(&self, from: &str, to: &str) -> ApiResult<RenameCopy> {
        let api = &self.inner.api;
        match self.retry().run(|| api.copy_object(from, to)).await {
            Ok(()) => Ok(RenameCopy::Copied),
            Err(ApiError::NotFound(e)) => Err(ApiError::NotFound(e)),
            Err(e) => {
                tracing::debug!("copy of {from} to {to} failed ({e}), moving instead");
                api.move_nodes(&[from.to_string()], to, false)
                    .await
                    .map(|()| RenameCopy::Moved)
            }
        }
    }

    /// The copy of a rename a previous mount left in the journal, unless the server shows it
    /// done: `from` gone, or `to` holding the same content or a newer one (written after the
    /// copy; never overwritten with the older `from`).
    async fn replay_renamed(&self, from: &str, to: &str) -> ApiResult<RenameCopy> {
        let (source, target) = tokio::join!(self.server_meta(from), self.server_meta(to));
        let Some(source) = source? else {
            return Ok(RenameCopy::Nothing);
        };
        match target? {
            Some(t) if t.etag == source.etag || t.mtime > source.mtime => Ok(RenameCopy::Copied),
            Some(t) if t.mtime == source.mtime => {
                self.record_error(format!(
                    "{from} -> {to}: a rename left unfinished by a crash was not redone, both \
                     names were written the same second; both are kept"
                ));
                Ok(RenameCopy::Nothing)
            }
            _ => self.copy_renamed(from, to).await,
        }
    }

    /// The server's metadata of `path`, from no cache (dotfiles from the gateway's listing).
    async fn server_meta(&self, path: &str) -> ApiResult<Option<Meta>> {
        if !base_name(path).starts_with('.') {
            return Ok(self
                .inner
                .api
                .stat(path)
                .await?
                .map(|n| Meta::from_node(&n)));
        }
        let entries = self.inner.api.list_folder_s3(parent_path(path)).await?;
        Ok(entries.iter().find_map(|entry| match entry {
            S3Entry::Object(object) if object.path == path => Some(Meta::from_object(object)),
            _ => None,
        }))
    }

    /// Wait until the work finished operations left in the background (renames of fresh
    /// files: the server's copy, the delete of the old name) is done.
    pub async fn settle(&self) {
        self.settle_background("").await;
    }

    /// Wait until no background copy or delete at or below `path` is running (`""`: any):
    /// before a change on the server there.
    pub(super) async fn settle_background(&self, path: &str) {
        while let Some(mut receiver) = pending_at_or_below(&self.inner.pending_copies, path)
            .or_else(|| pending_at_or_below(&self.inner.pending_deletes, path))
        {
            let _ = receiver.wait_for(|done| *done).await;
        }
    }

    /// Wait until no background copy to `path` or below is running: before reading `path`
    /// from the server, which has it only once copied.
    pub(super) async fn settle_copies(&self, path: &str) {
        while let Some(mut receiver) = pending_at_or_below(&self.inner.pending_copies, path) {
            let _ = receiver.wait_for(|done| *done).await;
        }
    }

    pub(super) fn background_pending(&self, path: &str) -> bool {
        self.delete_pending(path) || self.inner.pending_copies.lock().unwrap().contains_key(path)
    }

    pub(super) fn delete_pending(&self, path: &str) -> bool {
        self.inner
            .pending_deletes
            .lock()
            .unwrap()
            .contains_key(path)
    }

    /// Rename through the server's move. `flags`: [`RENAME_NOREPLACE`] is honoured,
    /// [`RENAME_EXCHANGE`] is refused with EINVAL.
    pub(super) async fn rename_stored(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.versions_refuse(parent, name)?;
        self.versions_refuse(new_parent, new_name)?;
        if flags & RENAME_EXCHANGE != 0 {
            return Err(FsError::InvalidArgument(
                "RENAME_EXCHANGE: Cells cannot swap two nodes atomically".into(),
            ));
        }
        if flags & !RENAME_NOREPLACE != 0 {
            return Err(FsError::InvalidArgument(format!("rename flags {flags:#x}")));
        }
        let (from, meta) = self.existing(parent, name).await?;
        let to_parent = self.dir_path(new_parent)?;
        let to = checked_path(&to_parent, &self.stored_new_name(&from, name, new_name))?;
        if !from.contains('/') {
            return Err(FsError::PermissionDenied(format!(
                "{from}: workspaces cannot be renamed"
            )));
        }
        self.check_writable(&from).await?;
        self.check_writable(&to).await?;
        if from == to {
            return Ok(());
        }
        self.settle_background(&from).await;
        self.settle_background(&to).await;
        if is_under_or_eq(&to, &from) {
            return Err(FsError::InvalidArgument(format!(
                "cannot move {from} into itself"
            )));
        }
        let target = self.fetch_meta(&to, true).await?;
        if let Some(target) = &target {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists(to));
            }
            match (meta.kind, target.kind) {
                (FileKind::Directory, FileKind::File) => return Err(FsError::NotADirectory(to)),
                (FileKind::File, FileKind::Directory) => return Err(FsError::IsADirectory(to)),
                (FileKind::Directory, FileKind::Directory)
                    if !self.listing(&to, true).await?.is_empty() =>
                {
                    return Err(FsError::NotEmpty(to));
                }
                _ => {}
            }
        }
        if meta.kind == FileKind::Directory {
            self.check_paths_below_fit(&from, &to).await?;
        }
        // A file whose content is only here moves locally; anything else moves on the server
        // once its pending content is uploaded.
        let (source_ino, source_file, local, created_here) = {
            let table = self.inner.table.lock().unwrap();
            match table
                .by_path
                .get(&from)
                .and_then(|i| table.inodes.get(i).map(|d| (*i, d)))
            {
                Some((ino, d)) => (Some(ino), d.file.clone(), d.local, d.created_here),
                None => (None, None, false, None),
            }
        };
        if let (Some(ino), Some(file), false) = (source_ino, &source_file, local)
            && file.dirty()
        {
            self.upload(ino, file, UploadMode::Sync).await?;
        }
        let _io = match &source_file {
            Some(file) => Some(file.io_lock.lock().await),
            None => None,
        };
        // Changes of either name (or below them) asked for earlier reach the server first;
        // later ones wait for this rename (see `order`).
        let _turn = self.inner.order.turn(&[&from, &to]).await;
        let local = source_ino.is_some_and(|ino| {
            self.inner
                .table
                .lock()
                .unwrap()
                .inodes
                .get(&ino)
                .is_some_and(|d| d.local)
        });
        // A file this mount created moments ago (rsync's and editors' temporary files): no
        // one can have shared or tagged it yet, so a synchronous server-side copy plus a
        // permanent delete of the temporary name replaces the move job (hundreds of ms).
        // The copy also overwrites an existing target in place, keeping its identity.
        let fresh = meta.kind == FileKind::File
            && !local
            && meta.size <= FRESH_RENAME_MAX_SIZE
            && created_here.is_some_and(|at| at.elapsed() < FRESH_RENAME_WINDOW)
            && target.as_ref().is_none_or(|t| t.kind == FileKind::File);
        if fresh {
            // The inode's meta is the upload's; the one found by name may predate it.
            let (meta, open) = source_ino
                .and_then(|ino| {
                    let table = self.inner.table.lock().unwrap();
                    table
                        .inodes
                        .get(&ino)
                        .map(|d| (d.meta.clone(), d.handles > 0))
                })
                .unwrap_or((meta.clone(), false));
            // Closed (its reads then start with an open, which waits for the copy): the
            // rename returns at once and the server copies in the background, the rename
            // journaled first. `fsync` of the folder, `sync` and the unmount wait for it.
            // Open: the copy first, then only the delete in the background.
            let slot = self.inner.move_slots.clone().acquire_owned().await.ok();
            let record = journal::MoveRecord {
                from: from.clone(),
                to: to.clone(),
            };
            let journaled = (!open).then(|| {
                let id = uuid::Uuid::new_v4().simple().to_string();
                match self.inner.journal.move_started(&id, &record) {
                    Ok(()) => Some(id),
                    Err(e) => {
                        tracing::warn!("could not journal the rename of {from}: {e}");
                        None
                    }
                }
            });
            let start = match journaled.flatten() {
                Some(id) => Some((Some(id), RenameStart::Copy)),
                None => match self.inner.api.copy_object(&from, &to).await {
                    Ok(()) => Some((None, RenameStart::Delete)),
                    Err(e) => {
                        tracing::debug!("copy of {from} to {to} failed, moving instead: {e}");
                        None
                    }
                },
            };
            if let Some((id, start)) = start {
                self.removed_locally(&to);
                self.moved_locally(&from, &to, &meta);
                self.rename_in_background(id, record, slot, start);
                return Ok(());
            }
        }
        if let Some(target) = &target {
            let target_local = {
                let table = self.inner.table.lock().unwrap();
                table
                    .by_path
                    .get(&to)
                    .and_then(|i| table.inodes.get(i))
                    .is_some_and(|d| d.local)
            };
            if !target_local {
                self.delete_on_server(&to, target.kind, true).await?;
            }
            self.removed_locally(&to);
        }
        if !local {
            self.inner
                .api
                .move_nodes(std::slice::from_ref(&from), &to, false)
                .await
                .map_err(|e| FsError::api(format!("{from} -> {to}"), e))?;
        }
        self.moved_locally(&from, &to, &meta);
        Ok(())
    }

    /// The local side of a move: inodes of `from` and its subtree now live under `to`.
    fn moved_locally(&self, from: &str, to: &str, meta: &Meta) {
        let mut table = self.inner.table.lock().unwrap();
        let moved: Vec<(String, u64)> = table.subtree(from);
        let mut rejournal = Vec::new();
        for (old, _) in &moved {
            table.by_path.remove(old);
        }
        for (old, ino) in moved {
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(data) = table.inodes.get_mut(&ino) {
                data.path = new.clone();
                if let Some(file) = &data.file
                    && file
                        .staging
                        .lock()
                        .unwrap()
                        .as_ref()
                        .is_some_and(|s| s.journaled)
                {
                    rejournal.push((file.id.clone(), new.clone()));
                }
            }
            table.by_path.insert(new, ino);
        }
        if let Some(listing) = table.listing_mut(parent_path(from)) {
            listing.children.remove(base_name(from));
        }
        if let Some(listing) = table.listing_mut(parent_path(to)) {
            listing
                .children
                .insert(base_name(to).to_string(), meta.clone());
        }
        if meta.kind == FileKind::Directory {
            // Listings below carry their own paths implicitly; refresh them lazily.
            let stale = table.subtree_inos(to);
            for ino in stale {
                if let Some(data) = table.inodes.get_mut(&ino) {
                    data.validated = None;
                }
            }
        }
        drop(table);
        for (id, path) in rejournal {
            if let Err(e) = self.inner.journal.repath(&id, &path) {
                tracing::warn!(%path, "write-back journal: could not record the rename: {e}");
            }
        }
        self.inner.overlay.rename(from, to);
        let mut negative = self.inner.negative.lock().unwrap();
        // A folder moved here brings its names: absences seen under `to` before are void.
        super::forget_absences_under(&mut negative, to);
        negative.put(from.to_string(), (Instant::now(), self.generation()));
    }
}
