//! Two writers, one file: the mount never silently replaces a version of a file it has not
//! seen (issue 32).
//!
//! Every staged content knows the server version it is based on ([`Base`]): the Etag seen
//! when it was staged (open, first write, truncate) or left by this mount's last upload of
//! it; "no file there" for a file created here; [`Base::Stale`] once a handle opened before
//! a refresh wrote into it. Before an upload replaces the server's content (close, fsync,
//! write-back, journal replay) the mount asks the server which version it holds (one `HEAD`
//! on the S3 gateway: it answers for dotfiles too). The Cells gateway ignores `If-Match` on
//! `PUT` (its minio fork checks preconditions on GET and HEAD only, and the Pydio object
//! layer's `PutObject` takes none), so this check and the PUT are two requests: a write by
//! someone else landing between them is still overwritten (docs/SEMANTICS.md says how long
//! that window is).
//!
//! When the server's version moved on, what happens is the mount's `--conflicts` mode:
//! - `copy` (default): ours is stored beside it as `NAME (conflict HOST YYYY-MM-DD HHMMSS).EXT`
//!   (UTC), one WARN line names both, the status lists it, `close`/`fsync` succeed;
//! - `fail`: ours goes to the recovery folder and `close`/`fsync` fail with EBUSY;
//! - `overwrite`: no check at all (last writer wins, one request less per upload).
//!
//! Invariants:
//! - Identical content is never a conflict (the server's Etag is the MD5 of ours: an upload
//!   of ours that landed although its answer was lost, or the same bytes written twice).
//! - A server version shown as `"temporary"` (an upload in flight) is waited for a moment,
//!   then taken as someone else's, except while this mount streams parts to that very path.
//! - A file deleted on the server meanwhile is written again (nothing is overwritten).
//! - The conflict copy's name fits in 255 bytes and in the server's path limit; an existing
//!   name is never reused (a counter follows the time).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use std::sync::atomic::Ordering;

use super::{
    ApiError, ApiResult, CellsFs, FileState, FsError, FsResult, Handle, KernelInvalidation,
    MAX_KEY_BYTES, UploadMode, UploadSource, base_name, join_path, parent_path,
};

/// What the mount does when a file changed on the server since its copy was based on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// Keep the server's version; store ours beside it as a conflict copy.
    #[default]
    Copy,
    /// Last writer wins (no check before uploading).
    Overwrite,
    /// Keep the server's version; ours goes to the recovery folder; close/fsync fail (EBUSY).
    Fail,
}

impl std::str::FromStr for ConflictMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "copy" => Ok(ConflictMode::Copy),
            "overwrite" => Ok(ConflictMode::Overwrite),
            "fail" => Ok(ConflictMode::Fail),
            other => Err(format!(
                "unknown conflict mode {other:?}: use copy, overwrite or fail"
            )),
        }
    }
}

/// The server version a staged content is based on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// Created here: the server had no file at that path.
    Absent,
    /// The server's Etag of the version this content started from.
    Etag(String),
    /// Written through a handle opened before the content was refreshed from the server:
    /// based on a version the server no longer holds.
    Stale,
}

/// A conflict copy this mount stored, as the status lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictCopy {
    /// Unix seconds.
    pub at: u64,
    /// The file whose server version was kept.
    pub path: String,
    /// Where this mount's version went.
    pub copy: String,
}

/// How many conflict copies the status remembers.
const CONFLICTS_KEPT: usize = 50;
/// How long a `"temporary"` server version is waited for before it counts as someone
/// else's upload (the server may index our own upload a moment after answering it).
const TEMPORARY_WAIT: Duration = Duration::from_millis(1500);
const TEMPORARY_POLL: Duration = Duration::from_millis(250);
/// The longest extension kept after the conflict suffix (longer: part of the name).
const MAX_EXTENSION: usize = 16;
/// Linux's limit of one name, in bytes.
const NAME_MAX: usize = 255;

/// What the check before an upload found.
pub(super) enum Verdict {
    /// The server holds the base version (or nothing, or identical bytes): upload.
    Proceed,
    /// The server's version moved on (its Etag, as shown).
    Moved(String),
}

/// The server's version of a path: `None` when no file is there.
enum ServerVersion {
    Missing,
    File(String),
    /// A folder stands there: the upload fails on its own, as before.
    NotAFile,
}

/// This machine's short host name (up to the first dot), safe in a file name.
pub fn short_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates (the last byte is kept 0 below).
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0;
    let raw = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let short: String = raw
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control() && *c != '/' && *c != '\\')
        .take(32)
        .collect();
    if short.trim().is_empty() {
        "localhost".into()
    } else {
        short
    }
}

/// `YYYY-MM-DD HHMMSS` of Unix time `secs`, in UTC.
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Split `name` into stem and extension (with its dot): a dotfile's leading dot and an
/// extension that is empty, too long or has spaces stay with the stem.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 => {
            let ext = &name[dot + 1..];
            if ext.is_empty() || ext.len() > MAX_EXTENSION || ext.contains(char::is_whitespace) {
                (name, "")
            } else {
                (&name[..dot], &name[dot..])
            }
        }
        _ => (name, ""),
    }
}

/// The longest prefix of `text` of at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The name of the conflict copy of `name`: `STEM (conflict HOST DATE TIME[ N]).EXT`, the
/// stem shortened so that the name fits in `max` bytes (at most [`NAME_MAX`]).
pub fn conflict_name(name: &str, host: &str, unix_secs: u64, n: u32, max: usize) -> String {
    let (stem, ext) = split_extension(name);
    let counter = if n > 1 {
        format!(" {n}")
    } else {
        String::new()
    };
    let suffix = format!(" (conflict {host} {}{counter})", utc_stamp(unix_secs));
    let room = max
        .min(NAME_MAX)
        .saturating_sub(suffix.len() + ext.len())
        .max(1);
    format!("{}{suffix}{ext}", cut(stem, room))
}

impl CellsFs {
    /// What the server holds at `path` now (one HEAD on the S3 gateway).
    async fn server_version(&self, path: &str) -> ApiResult<ServerVersion> {
        match self.inner.api.head_object(path).await {
            Ok(info) => Ok(ServerVersion::File(info.etag)),
            Err(ApiError::NotFound(_)) | Err(ApiError::Server { status: 404, .. }) => {
                Ok(ServerVersion::Missing)
            }
            Err(ApiError::TypeConflict(_)) => Ok(ServerVersion::NotAFile),
            Err(e) => Err(e),
        }
    }

    /// Before replacing the server's content at `path` with `source` (staged on `base`):
    /// does the server still hold that version? `own_stream`: this mount streams parts to
    /// `path` (the `"temporary"` version shown there is its own).
    pub(super) async fn check_base(
        &self,
        path: &str,
        base: Option<&Base>,
        source: &UploadSource,
        own_stream: bool,
    ) -> ApiResult<Verdict> {
        let Some(base) = base else {
            // A journal record from before bases were recorded: as before, no check.
            return Ok(Verdict::Proceed);
        };
        let mut waited = Duration::ZERO;
        let etag = loop {
            match self.server_version(path).await? {
                ServerVersion::Missing | ServerVersion::NotAFile => return Ok(Verdict::Proceed),
                ServerVersion::File(etag) if etag == "temporary" && own_stream => {
                    return Ok(Verdict::Proceed);
                }
                ServerVersion::File(etag) if etag == "temporary" && waited < TEMPORARY_WAIT => {
                    tokio::time::sleep(TEMPORARY_POLL).await;
                    waited += TEMPORARY_POLL;
                }
                ServerVersion::File(etag) => break etag,
            }
        };
        if matches!(base, Base::Etag(ours) if *ours == etag) {
            return Ok(Verdict::Proceed);
        }
        // Identical bytes are no conflict (an upload of ours whose answer was lost, say).
        if etag.len() == 32 && content_md5(source).await.is_some_and(|md5| md5 == etag) {
            return Ok(Verdict::Proceed);
        }
        Ok(Verdict::Moved(etag))
    }

    /// The server's version of `path` moved on since `file`'s content (version `version`)
    /// was based on it: keep the server's, and ours as the mode says. `Ok` once ours is
    /// stored as a conflict copy; otherwise the error `close`/`fsync` answer (ours then is
    /// in the recovery folder, or still pending when it could be kept nowhere, or, in
    /// write-back, when the server is away).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn resolve_conflict(
        &self,
        ino: u64,
        file: &FileState,
        path: &str,
        source: &UploadSource,
        version: u64,
        server_etag: &str,
        mode: UploadMode,
    ) -> FsResult<()> {
        let outcome = if self.inner.options.conflicts == ConflictMode::Fail {
            let kept = match source {
                UploadSource::File(staging) => self.inner.journal.keep_for_recovery(path, staging),
                UploadSource::Memory(bytes) => {
                    self.inner.journal.keep_bytes_for_recovery(path, bytes)
                }
            };
            let at = kept.map_err(|e| {
                let error = FsError::Local(format!(
                    "{path} changed on the server and this mount's version could not be kept \
                     in the recovery folder ({e}); it stays pending"
                ));
                self.record_error(error.to_string());
                error
            })?;
            let error = FsError::Conflict {
                path: path.to_string(),
                kept_at: at.display().to_string(),
            };
            self.record_error(error.to_string());
            Err(error)
        } else {
            let copy = match self.store_conflict_copy(path, source).await {
                Ok(copy) => copy,
                Err(e) if mode == UploadMode::Journaled && e.is_transient() => {
                    self.record_error(format!(
                        "{path} changed on the server; storing this mount's version beside it \
                         failed ({e}); kept in the write-back journal"
                    ));
                    return Err(FsError::api(path, e));
                }
                // Ours goes to the recovery folder (and the status), as any failed upload.
                Err(e) => return Err(self.keep_for_recovery(file, path, source, version, e)),
            };
            tracing::warn!(
                "conflict: {path} changed on the server (now {server_etag}) since this mount's \
                 copy was based on it; the server's version stays at {path}, this mount's is \
                 stored as {copy}"
            );
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut list = self.inner.conflicts.lock().unwrap();
            list.push_back(ConflictCopy {
                at,
                path: path.to_string(),
                copy,
            });
            while list.len() > CONFLICTS_KEPT {
                list.pop_front();
            }
            Ok(())
        };
        // Ours is stored elsewhere: this content is no longer pending. Its base stays: a
        // handle still open writes on a version the server no longer holds.
        if let Some(s) = file.staging.lock().unwrap().as_mut()
            && s.version == version
        {
            s.clean_version = version;
            s.stream = None;
        }
        self.forget_journal(file);
        // The name shows the server's version from now on.
        let parent = {
            let mut table = self.inner.table.lock().unwrap();
            if let Ok(data) = table.get_mut(ino) {
                data.validated = None;
                data.kernel_etag = None;
                data.local = false;
            }
            table.drop_listing(parent_path(path));
            table.by_path.get(parent_path(path)).copied()
        };
        if let Some(notifier) = self.inner.notifier.get() {
            let _ = notifier.send(KernelInvalidation::Inode(ino));
            if let Some(parent) = parent {
                let _ = notifier.send(KernelInvalidation::Inode(parent));
            }
        }
        outcome
    }

    /// A write through `handle`: when it was opened before the content was refreshed from
    /// the server, what it writes is based on a version the server no longer holds.
    pub(super) fn note_writer_epoch(&self, handle: &Handle, file: &FileState) {
        if handle.epoch != file.epoch.load(Ordering::SeqCst)
            && let Some(s) = file.staging.lock().unwrap().as_mut()
        {
            s.base = Some(Base::Stale);
        }
    }

    /// Upload `source` beside `path` under a conflict name no file holds; returns that path.
    async fn store_conflict_copy(&self, path: &str, source: &UploadSource) -> ApiResult<String> {
        let host = short_hostname();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let folder = parent_path(path);
        let room = MAX_KEY_BYTES.saturating_sub(folder.len() + 1);
        let mut target = None;
        for n in 1..=20 {
            let candidate = join_path(folder, &conflict_name(base_name(path), &host, now, n, room));
            match self.server_version(&candidate).await {
                Ok(ServerVersion::Missing) => {
                    target = Some(candidate);
                    break;
                }
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
        let target = target.ok_or_else(|| {
            ApiError::AlreadyExists(format!("{path}: no free name for a conflict copy"))
        })?;
        let options = &self.inner.options;
        let stored = self
            .retry()
            .run(|| async {
                match source {
                    UploadSource::File(staging) => {
                        let size = std::fs::metadata(staging)
                            .map_err(|e| ApiError::Local(e.to_string()))?
                            .len();
                        self.inner
                            .api
                            .put_object_from_file(&target, staging, size, &options.upload_options)
                            .await
                    }
                    UploadSource::Memory(bytes) => {
                        self.inner
                            .api
                            .put_object(&target, bytes.clone(), &options.upload_options)
                            .await
                    }
                }
            })
            .await;
        stored?;
        self.inner.negative.lock().unwrap().pop(&target);
        Ok(target)
    }

    /// A new open of `ino`: when its staged content is clean but based on a version the
    /// server no longer holds (close-to-open), drop it so the open sees the server's; the
    /// handles opened before keep writing on the old version ([`Base::Stale`]).
    pub(super) fn refresh_if_stale(&self, ino: u64) {
        let table = self.inner.table.lock().unwrap();
        let Ok(data) = table.get(ino) else {
            return;
        };
        if data.local || data.detached {
            return;
        }
        let Some(file) = data.file.clone() else {
            return;
        };
        let server = data.meta.etag.clone();
        let mut guard = file.staging.lock().unwrap();
        let stale = guard.as_ref().is_some_and(|s| {
            !s.dirty()
                && !s.journaled
                && !s.scheduled
                && s.failed.is_none()
                && s.stream.is_none()
                && s.base.as_ref() != Some(&Base::Etag(server.clone()))
        });
        if !stale {
            return;
        }
        if let Some(staging) = guard.take()
            && let Some(staging_path) = staging.content.staging_path()
        {
            let _ = std::fs::remove_file(staging_path);
        }
        file.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The conflict copies stored lately, oldest first.
    pub(super) fn conflict_copies(&self) -> Vec<ConflictCopy> {
        self.inner
            .conflicts
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }
}

/// Whether `staging` is a clean copy of a version older than the server's `meta`.
pub(super) fn stale_copy(staging: &super::Staging, meta: &super::Meta) -> bool {
    !staging.dirty()
        && staging.failed.is_none()
        && matches!(&staging.base, Some(Base::Etag(e)) if *e != meta.etag && !meta.etag.is_empty())
}

/// The conflict copies the core remembers.
pub(super) type ConflictList = std::sync::Mutex<VecDeque<ConflictCopy>>;

/// MD5 (hex) of the content an upload would send; `None` when it cannot be read.
async fn content_md5(source: &UploadSource) -> Option<String> {
    use md5::Digest;
    match source {
        UploadSource::Memory(bytes) => Some(hex::encode(md5::Md5::digest(bytes))),
        UploadSource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut file = std::fs::File::open(path).ok()?;
                let mut hasher = md5::Md5::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file.read(&mut buf).ok()?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                Some(hex::encode(hasher.finalize()))
            })
            .await
            .ok()
            .flatten()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_extension_and_fit() {
        let at = 1_765_100_000; // 2025-12-07 09:33:20 UTC
        assert_eq!(utc_stamp(at), "2025-12-07 093320");
        assert_eq!(utc_stamp(0), "1970-01-01 000000");
        assert_eq!(
            conflict_name("doc.txt", "host", at, 1, 1024),
            "doc (conflict host 2025-12-07 093320).txt"
        );
        assert_eq!(
            conflict_name("doc.txt", "host", at, 2, 1024),
            "doc (conflict host 2025-12-07 093320 2).txt"
        );
        assert_eq!(
            conflict_name(".bashrc", "h", at, 1, 1024),
            ".bashrc (conflict h 2025-12-07 093320)"
        );
        assert_eq!(
            conflict_name("Makefile", "h", at, 1, 1024),
            "Makefile (conflict h 2025-12-07 093320)"
        );
        assert_eq!(
            conflict_name("a.tar.gz", "h", at, 1, 1024),
            "a.tar (conflict h 2025-12-07 093320).gz"
        );
        assert_eq!(
            conflict_name("notes.my long ext", "h", at, 1, 1024),
            "notes.my long ext (conflict h 2025-12-07 093320)"
        );
        let long = format!("{}.txt", "é".repeat(200));
        let name = conflict_name(&long, "h", at, 1, 1024);
        assert!(name.len() <= NAME_MAX, "{} bytes", name.len());
        assert!(name.ends_with(" (conflict h 2025-12-07 093320).txt"));
        // The server's path limit leaves less room.
        assert!(conflict_name(&long, "h", at, 1, 100).len() <= 100);
    }

    #[test]
    fn modes_parse() {
        assert_eq!("copy".parse::<ConflictMode>(), Ok(ConflictMode::Copy));
        assert_eq!(
            "overwrite".parse::<ConflictMode>(),
            Ok(ConflictMode::Overwrite)
        );
        assert_eq!("fail".parse::<ConflictMode>(), Ok(ConflictMode::Fail));
        assert!("merge".parse::<ConflictMode>().is_err());
        assert!(!short_hostname().is_empty());
    }
}
