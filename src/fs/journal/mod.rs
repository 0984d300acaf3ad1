//! The write-back journal and the recovery folder.
//!
//! With `--write-back`, `close` returns before the upload. Before it returns, a record naming
//! the destination path and the staging file is appended to the log `<cache>/journal/log` and
//! synced. A small file's record carries its bytes (up to [`INLINE_MAX`]), so its `close`
//! costs that one `fdatasync`; a larger file's staging file is synced first. When the
//! server confirmed the upload, a `done` line is appended (not synced: a lost one only means
//! an upload done twice). `CellsFs::new` reads the records still pending and uploads again: a
//! crash or a reboot loses nothing that `close` acknowledged.
//!
//! Invariants:
//! - A line is one JSON object ending in a newline; a line that does not parse (the one being
//!   appended when the machine stopped) is ignored, and only it can be torn. Zeros are
//!   written ahead of the last line (so a synced line does not grow the file): after the
//!   last newline there may be zeros, which do not parse either.
//! - The log is rewritten with the pending records alone (temporary file, sync, rename,
//!   directory sync) when the mount starts and whenever it holds four times more lines than
//!   pending records (and over a thousand), so it stays small. At the start a record's bytes
//!   are written into their staging file (and synced) before the rewrite; a later rewrite
//!   reads them back from the staging files (a file grown past [`INLINE_MAX`] since is
//!   synced instead, and its record loses its bytes). Only the bytes of content the mount
//!   holds in memory, which has no staging file, are kept in memory here too (as long as
//!   their record is pending; the mount bounds that content).
//! - A rename of a file with a pending record appends a `repath` line (synced): the record's
//!   bytes, if it has them, stay with it.
//! - Records of earlier versions (one `<id>.json` file each) are read too, and removed once the
//!   rewritten log holds them.
//! - The log also names the multipart uploads a big file is streamed into while it is written
//!   (`stream`, then `ended` once completed or aborted), so the next mount aborts those a crash
//!   left open (with the temporary node the server shows for them). Not synced: a crash of the
//!   machine at that moment leaves one such upload, as any client's would.
//! - It also names the renames of fresh files that return before the server's copy
//!   (`move`, synced before the rename returns; `moved` once the new name holds the data), so
//!   the next mount finishes those a crash interrupted.
//!
//! - Each line appended has a mark (a count since the journal was opened); [`Journal::durable`]
//!   is the mark up to which lines are on disk (a synced line makes every earlier one durable,
//!   and so does a rewrite). A staging file whose record was removed is reused for another
//!   file only once its `done` line is durable (see `staging_pool`).
//!
//! - The log is input like any other file: a line is acted on only once `validate` found it
//!   sound; any other is set aside when the journal is opened, reported by
//!   [`Journal::rejected`], never replayed. A staging file is never followed through a
//!   symbolic link.
//! - The journal's folder, the recovery folder and every file written in them are private to
//!   the user (0700 / 0600, see `private`).
//!
//! The recovery folder, where data that could not be uploaded is kept, is `recovery`'s.

mod log_file;
mod recovery;
mod validate;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::conflict::Base;
use super::private;
use log_file::LogFile;
use recovery::{Source, keep_in_recovery};
use validate::{REJECTED, valid_staging_name};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Destination: the mount path `<ws>/<path>`.
    pub path: String,
    /// The staging file's name inside `<cache>/staging`.
    pub staging: String,
    /// The server version the content is based on (absent in records of earlier versions:
    /// replayed unchecked, as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
}

/// The largest file whose bytes a record carries (instead of syncing its staging file).
pub const INLINE_MAX: u64 = 16 * 1024;

/// One line of the log.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    Put {
        id: String,
        record: Record,
        /// The content (base64), when the staging file was not synced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    },
    /// A pending record's new destination (after a rename).
    Repath {
        id: String,
        path: String,
    },
    /// A pending record's new base (an earlier version of it reached the server).
    Rebase {
        id: String,
        base: Base,
    },
    Done {
        id: String,
    },
    /// A multipart upload opened for `path`, its upload id.
    Stream {
        id: String,
        path: String,
    },
    Ended {
        id: String,
    },
    /// A rename the server has not done yet.
    Move {
        id: String,
        record: MoveRecord,
    },
    Moved {
        id: String,
    },
}

/// A rename finished in the background: copy `from` to `to`, then delete `from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub from: String,
    pub to: String,
}

/// Rewrite the log once it holds this many lines and four times more than pending records.
const COMPACT_AFTER: usize = 1000;

pub struct Journal {
    dir: PathBuf,
    staging_dir: PathBuf,
    recovery: PathBuf,
    log: Mutex<Log>,
    /// Why each line set aside at open was (see the module documentation).
    rejected: Vec<String>,
}

struct Log {
    file: LogFile,
    live: Live,
    lines: usize,
    /// Lines appended since the journal was opened (the mark of the last one).
    appended: u64,
    /// The mark up to which appended lines are durable (synced, or folded by a rewrite).
    durable: u64,
}

/// What the log holds that is not done yet.
struct Live {
    /// Pending records by id.
    pending: HashMap<String, Record>,
    /// Pending records whose bytes only the log holds (their staging file was not synced).
    inline: HashSet<String>,
    /// The bytes of those records that have no staging file at all (the mount held the
    /// content in memory): a rewrite takes them from here.
    held: HashMap<String, Bytes>,
    /// Multipart uploads open: upload id -> path.
    streams: HashMap<String, String>,
    /// Renames not done on the server yet, by id.
    moves: HashMap<String, MoveRecord>,
}

impl Live {
    /// Lines a rewritten log holds.
    fn len(&self) -> usize {
        self.pending.len() + self.streams.len() + self.moves.len()
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The entries of `map`, by id.
fn sorted<T: Clone>(map: &HashMap<String, T>) -> Vec<(String, T)> {
    let mut out: Vec<(String, T)> = map
        .iter()
        .map(|(id, value)| (id.clone(), value.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn line_bytes(line: &Line) -> std::io::Result<Vec<u8>> {
    let mut data = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    data.push(b'\n');
    Ok(data)
}

impl Journal {
    pub fn open(cache_dir: &Path) -> std::io::Result<Journal> {
        let dir = cache_dir.join("journal");
        let recovery = cache_dir.join("recovery");
        let staging_dir = cache_dir.join("staging");
        private::create_dir(&dir)?;
        private::create_dir(&recovery)?;
        private::create_dir(&staging_dir)?;
        let mut pending = HashMap::new();
        // The bytes of records that carry them, by id (the last line for an id wins).
        let mut inline_data: HashMap<String, Vec<u8>> = HashMap::new();
        let mut streams = HashMap::new();
        let mut moves = HashMap::new();
        let mut legacy = Vec::new();
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if let Ok(data) = std::fs::read(entry.path())
                    && let Ok(record) = serde_json::from_slice::<Record>(&data)
                {
                    pending.insert(id.to_string(), record);
                }
                legacy.push(entry.path());
            } else if name != "log" && name != REJECTED {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if let Ok(data) = std::fs::read(dir.join("log")) {
            for line in data.split(|b| *b == b'\n') {
                match serde_json::from_slice::<Line>(line) {
                    Ok(Line::Put { id, record, data }) => {
                        match data.map(|d| BASE64.decode(d)) {
                            // A line that parses but does not decode is as good as torn.
                            Some(Err(_)) => continue,
                            Some(Ok(bytes)) => {
                                inline_data.insert(id.clone(), bytes);
                            }
                            None => {
                                inline_data.remove(&id);
                            }
                        }
                        pending.insert(id, record);
                    }
                    Ok(Line::Repath { id, path }) => {
                        if let Some(record) = pending.get_mut(&id) {
                            record.path = path;
                        }
                    }
                    Ok(Line::Rebase { id, base }) => {
                        if let Some(record) = pending.get_mut(&id) {
                            record.base = Some(base);
                        }
                    }
                    Ok(Line::Done { id }) => {
                        pending.remove(&id);
                        inline_data.remove(&id);
                    }
                    Ok(Line::Stream { id, path }) => {
                        streams.insert(id, path);
                    }
                    Ok(Line::Ended { id }) => {
                        streams.remove(&id);
                    }
                    Ok(Line::Move { id, record }) => {
                        moves.insert(id, record);
                    }
                    Ok(Line::Moved { id }) => {
                        moves.remove(&id);
                    }
                    Err(_) => {}
                }
            }
        }
        let rejected = Self::set_aside(
            &dir,
            &recovery,
            &staging_dir,
            &mut pending,
            &mut inline_data,
            &mut streams,
            &mut moves,
        );
        // Bytes only the log held go to their staging files (synced) before the rewrite drops
        // them; those that cannot be written stay in the log.
        let mut written = false;
        inline_data.retain(|id, bytes| {
            let Some(record) = pending.get(id) else {
                return false;
            };
            let stored = open_staging(&staging_dir, &record.staging, true)
                .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_data()));
            match stored {
                Ok(()) => {
                    written = true;
                    false
                }
                Err(e) => {
                    tracing::warn!(path = %record.path, "write-back journal: keeping the bytes in the log: {e}");
                    true
                }
            }
        });
        if written {
            let _ = sync_dir(&staging_dir);
        }
        let live = Live {
            pending,
            inline: inline_data.keys().cloned().collect(),
            held: HashMap::new(),
            streams,
            moves,
        };
        let log = Log {
            file: LogFile::new(Self::rewrite(&dir, &live, &inline_data)?)?,
            lines: live.len(),
            live,
            appended: 0,
            durable: 0,
        };
        for path in legacy {
            let _ = std::fs::remove_file(path);
        }
        Ok(Journal {
            dir,
            staging_dir,
            recovery,
            log: Mutex::new(log),
            rejected,
        })
    }

    /// Why each line set aside when the journal was opened was (empty: none was).
    pub fn rejected(&self) -> &[String] {
        &self.rejected
    }

    /// Write a log holding `live` alone, durably, and open it for appending; the records in
    /// `inline_data` keep their bytes.
    fn rewrite(
        dir: &Path,
        live: &Live,
        inline_data: &HashMap<String, Vec<u8>>,
    ) -> std::io::Result<std::fs::File> {
        let tmp = dir.join("log.tmp");
        {
            let mut out = std::io::BufWriter::new(private::create(&tmp)?);
            for (id, record) in sorted(&live.pending) {
                let data = inline_data.get(&id).map(|bytes| BASE64.encode(bytes));
                out.write_all(&line_bytes(&Line::Put { id, record, data })?)?;
            }
            for (id, path) in sorted(&live.streams) {
                out.write_all(&line_bytes(&Line::Stream { id, path })?)?;
            }
            for (id, record) in sorted(&live.moves) {
                out.write_all(&line_bytes(&Line::Move { id, record })?)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        let log = dir.join("log");
        std::fs::rename(&tmp, &log)?;
        let _ = sync_dir(dir);
        std::fs::OpenOptions::new().write(true).open(&log)
    }

    /// Record a pending upload whose staging file is synced; durable when this returns.
    pub fn record(&self, id: &str, record: &Record) -> std::io::Result<()> {
        self.put(id, record, None)
    }

    /// Record a pending upload with its bytes (at most [`INLINE_MAX`]), its staging file left
    /// unsynced; durable when this returns. `no_staging_file`: the content has no staging
    /// file (it is held in memory), so the journal keeps these bytes for its rewrites.
    pub fn record_inline(
        &self,
        id: &str,
        record: &Record,
        bytes: Bytes,
        no_staging_file: bool,
    ) -> std::io::Result<()> {
        self.put(id, record, Some((bytes, no_staging_file)))
    }

    fn put(&self, id: &str, record: &Record, inline: Option<(Bytes, bool)>) -> std::io::Result<()> {
        let line = Line::Put {
            id: id.to_string(),
            record: record.clone(),
            data: inline.as_ref().map(|(bytes, _)| BASE64.encode(bytes)),
        };
        self.append_synced(&line, |live| {
            live.pending.insert(id.to_string(), record.clone());
            live.held.remove(id);
            match inline {
                Some((bytes, no_staging_file)) => {
                    live.inline.insert(id.to_string());
                    if no_staging_file {
                        live.held.insert(id.to_string(), bytes);
                    }
                }
                None => {
                    live.inline.remove(id);
                }
            }
        })
    }

    /// Whether the pending record of `id` carries its bytes (its staging file is not synced).
    pub fn carries_bytes(&self, id: &str) -> bool {
        self.log.lock().unwrap().live.inline.contains(id)
    }

    /// A pending upload's destination changed (a rename); durable when this returns.
    pub fn repath(&self, id: &str, path: &str) -> std::io::Result<()> {
        if !self.log.lock().unwrap().live.pending.contains_key(id) {
            return Ok(());
        }
        let line = Line::Repath {
            id: id.to_string(),
            path: path.to_string(),
        };
        self.append_synced(&line, |live| {
            if let Some(record) = live.pending.get_mut(id) {
                record.path = path.to_string();
            }
        })
    }

    /// A pending upload's content is now based on `base` (this mount uploaded an earlier
    /// version of it); durable when this returns.
    pub fn rebase(&self, id: &str, base: &Base) -> std::io::Result<()> {
        if !self.log.lock().unwrap().live.pending.contains_key(id) {
            return Ok(());
        }
        let line = Line::Rebase {
            id: id.to_string(),
            base: base.clone(),
        };
        self.append_synced(&line, |live| {
            if let Some(record) = live.pending.get_mut(id) {
                record.base = Some(base.clone());
            }
        })
    }

    /// The upload is on the server (or in the recovery folder): forget it. Returns the mark
    /// from which the record is forgotten durably (see [`Journal::durable`]).
    pub fn remove(&self, id: &str) -> u64 {
        let mut log = self.log.lock().unwrap();
        log.live.inline.remove(id);
        log.live.held.remove(id);
        if log.live.pending.remove(id).is_some()
            && !self.append(&mut log, &Line::Done { id: id.to_string() })
        {
            // The record stays in the log without its `done` line (a full disk, say): its
            // staging file must never be reused, or a replay after a crash would upload
            // another file's bytes to this path. No mark is ever durable enough.
            tracing::warn!("write-back journal: the end of an upload could not be recorded");
            return u64::MAX;
        }
        log.appended
    }

    /// The mark up to which lines are durable: a record removed with a mark at most this
    /// will not come back after a crash.
    pub fn durable(&self) -> u64 {
        self.log.lock().unwrap().durable
    }

    /// A multipart upload was opened for `path` (see the module documentation).
    pub fn stream_started(&self, upload_id: &str, path: &str) {
        let mut log = self.log.lock().unwrap();
        log.live
            .streams
            .insert(upload_id.to_string(), path.to_string());
        self.append(
            &mut log,
            &Line::Stream {
                id: upload_id.to_string(),
                path: path.to_string(),
            },
        );
    }

    /// The multipart upload was completed or aborted.
    pub fn stream_ended(&self, upload_id: &str) {
        let mut log = self.log.lock().unwrap();
        if log.live.streams.remove(upload_id).is_some() {
            self.append(
                &mut log,
                &Line::Ended {
                    id: upload_id.to_string(),
                },
            );
        }
    }

    /// A rename that returns before the server has done it; durable when this returns.
    pub fn move_started(&self, id: &str, record: &MoveRecord) -> std::io::Result<()> {
        let line = Line::Move {
            id: id.to_string(),
            record: record.clone(),
        };
        self.append_synced(&line, |live| {
            live.moves.insert(id.to_string(), record.clone());
        })
    }

    /// The new name holds the data on the server (or the rename was given up and reported).
    pub fn move_ended(&self, id: &str) {
        let mut log = self.log.lock().unwrap();
        if log.live.moves.remove(id).is_some() {
            self.append(&mut log, &Line::Moved { id: id.to_string() });
        }
    }

    /// Renames a previous mount left unfinished, by id.
    pub fn open_moves(&self) -> Vec<(String, MoveRecord)> {
        sorted(&self.log.lock().unwrap().live.moves)
    }

    /// Multipart uploads a previous mount left open, as `(upload id, path)`.
    pub fn open_streams(&self) -> Vec<(String, String)> {
        sorted(&self.log.lock().unwrap().live.streams)
    }

    /// Append `line` and sync it; `live` takes it in once it is durable.
    fn append_synced(&self, line: &Line, update: impl FnOnce(&mut Live)) -> std::io::Result<()> {
        let data = line_bytes(line)?;
        let mut log = self.log.lock().unwrap();
        log.file.append(&data)?;
        log.appended += 1;
        log.lines += 1;
        log.file.sync_data()?;
        log.durable = log.appended;
        update(&mut log.live);
        Ok(())
    }

    /// Append a line that needs no sync; compact the log when it grew. False when the line
    /// could not be appended.
    fn append(&self, log: &mut Log, line: &Line) -> bool {
        let Ok(data) = line_bytes(line) else {
            return false;
        };
        if log.file.append(&data).is_err() {
            return false;
        }
        log.lines += 1;
        log.appended += 1;
        let live = log.live.len();
        if log.lines >= COMPACT_AFTER && log.lines >= 4 * live {
            let rewritten = self.inline_bytes(&log.live).and_then(|inline_data| {
                let file = LogFile::new(Self::rewrite(&self.dir, &log.live, &inline_data)?)?;
                Ok((file, inline_data))
            });
            match rewritten {
                Ok((file, inline_data)) => {
                    log.file = file;
                    log.lines = live;
                    log.durable = log.appended;
                    log.live.inline = inline_data.into_keys().collect();
                }
                Err(e) => tracing::warn!("could not compact the write-back journal: {e}"),
            }
        }
        true
    }

    /// For a rewrite: the bytes of the records whose bytes only the log holds, read back from
    /// their staging files (no sync: the rewritten log carries them again). A staging file
    /// grown past [`INLINE_MAX`] since is synced instead, and its record loses its bytes.
    fn inline_bytes(&self, live: &Live) -> std::io::Result<HashMap<String, Vec<u8>>> {
        let mut out = HashMap::new();
        let mut synced = false;
        for id in &live.inline {
            let Some(record) = live.pending.get(id) else {
                continue;
            };
            if let Some(bytes) = live.held.get(id) {
                out.insert(id.clone(), bytes.to_vec());
                continue;
            }
            let mut file = std::fs::File::open(self.staging_dir.join(&record.staging))?;
            if file.metadata()?.len() <= INLINE_MAX {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                out.insert(id.clone(), bytes);
            } else {
                file.sync_data()?;
                synced = true;
            }
        }
        if synced {
            sync_dir(&self.staging_dir)?;
        }
        Ok(out)
    }

    /// Every record pending, as `(id, record)`, by id.
    pub fn pending(&self) -> Vec<(String, Record)> {
        sorted(&self.log.lock().unwrap().live.pending)
    }
}

/// Open the staging file `name` of `staging_dir` (a plain name, see [`valid_staging_name`]),
/// never through a symbolic link; `create`: create or empty it for writing (0600).
fn open_staging(staging_dir: &Path, name: &str, create: bool) -> std::io::Result<std::fs::File> {
    valid_staging_name(name).map_err(std::io::Error::other)?;
    let mut options = private::options();
    options.custom_flags(libc::O_NOFOLLOW);
    if create {
        options.write(true).create(true).truncate(true);
    } else {
        options.read(true);
    }
    let file = options.open(staging_dir.join(name))?;
    if create {
        private::tighten_file(&file)?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn record(path: &str) -> Record {
        staged(path, &format!("s-{}", path.replace('/', "_")))
    }

    #[test]
    fn records_survive_a_reopen_until_removed_and_a_torn_line_is_ignored() {
        let cache = tempfile::tempdir().unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        journal.record("a", &record("ws/a")).unwrap();
        journal.record("b", &record("ws/b")).unwrap();
        journal.record("a", &record("ws/renamed")).unwrap();
        journal.remove("b");
        drop(journal);
        // The machine stopped in the middle of an append.
        let log = cache.path().join("journal/log");
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(br#"{"put":{"id":"c","rec"#).unwrap();
        drop(file);
        let journal = Journal::open(cache.path()).unwrap();
        assert_eq!(
            journal.pending(),
            vec![("a".to_string(), record("ws/renamed"))]
        );
        // The reopen rewrote the log with the pending record alone.
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        journal.remove("a");
        drop(journal);
        assert!(Journal::open(cache.path()).unwrap().pending().is_empty());
    }

    pub(super) fn staged(path: &str, staging: &str) -> Record {
        Record {
            path: path.into(),
            staging: staging.into(),
            base: None,
        }
    }

    #[test]
    fn a_record_keeps_its_base_through_a_rebase_and_a_reopen() {
        let cache = tempfile::tempdir().unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        let mut r = record("ws/a");
        r.base = Some(Base::Etag("e1".into()));
        journal.record("a", &r).unwrap();
        journal.rebase("a", &Base::Etag("e2".into())).unwrap();
        // An unknown id: nothing to do.
        journal.rebase("zz", &Base::Absent).unwrap();
        drop(journal);
        let journal = Journal::open(cache.path()).unwrap();
        r.base = Some(Base::Etag("e2".into()));
        assert_eq!(journal.pending(), vec![("a".to_string(), r)]);
        // Records written before bases existed read as "unknown".
        let old: Record = serde_json::from_str(r#"{"path":"ws/b","staging":"s"}"#).unwrap();
        assert_eq!(old.base, None);
    }

    #[test]
    fn a_small_record_carries_its_bytes_through_a_crash_and_a_rename() {
        let cache = tempfile::tempdir().unwrap();
        let staging = cache.path().join("staging");
        let journal = Journal::open(cache.path()).unwrap();
        std::fs::write(staging.join("sa"), b"hello").unwrap();
        journal
            .record_inline(
                "a",
                &staged("ws/a", "sa"),
                Bytes::from_static(b"hello"),
                false,
            )
            .unwrap();
        journal.repath("a", "ws/renamed").unwrap();
        std::fs::write(staging.join("sb"), b"big, synced").unwrap();
        journal.record("b", &staged("ws/b", "sb")).unwrap();
        drop(journal);
        // The machine stopped before the unsynced staging file reached the disk.
        std::fs::write(staging.join("sa"), b"").unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        assert_eq!(
            journal.pending(),
            vec![
                ("a".to_string(), staged("ws/renamed", "sa")),
                ("b".to_string(), staged("ws/b", "sb"))
            ]
        );
        assert_eq!(std::fs::read(staging.join("sa")).unwrap(), b"hello");
        assert_eq!(std::fs::read(staging.join("sb")).unwrap(), b"big, synced");
        // The bytes are in the staging file now; the rewritten log no longer holds them.
        let text = std::fs::read_to_string(cache.path().join("journal/log")).unwrap();
        assert!(!text.contains("data"), "{text}");
        // A later record without bytes (the file grew, its staging file was synced) wins.
        journal
            .record_inline(
                "c",
                &staged("ws/c", "sc"),
                Bytes::from_static(b"old"),
                false,
            )
            .unwrap();
        std::fs::write(staging.join("sc"), b"newer and synced").unwrap();
        journal.record("c", &staged("ws/c", "sc")).unwrap();
        drop(journal);
        let _journal = Journal::open(cache.path()).unwrap();
        assert_eq!(
            std::fs::read(staging.join("sc")).unwrap(),
            b"newer and synced"
        );
    }

    #[test]
    fn compaction_keeps_a_record_whose_bytes_only_the_log_held() {
        let cache = tempfile::tempdir().unwrap();
        let staging = cache.path().join("staging");
        let journal = Journal::open(cache.path()).unwrap();
        std::fs::write(staging.join("skeep"), b"kept bytes").unwrap();
        let keep = staged("ws/keep", "skeep");
        journal
            .record_inline("keep", &keep, Bytes::from_static(b"kept bytes"), false)
            .unwrap();
        // Content the mount held in memory: no staging file at all, only the log has it.
        let held = staged("ws/held", "sheld");
        journal
            .record_inline("held", &held, Bytes::from_static(b"held bytes"), true)
            .unwrap();
        // Written again after its close, past what a record carries: synced at the rewrite.
        let grown = vec![b'g'; INLINE_MAX as usize + 1];
        journal
            .record_inline(
                "grow",
                &staged("ws/grow", "sgrow"),
                Bytes::from_static(b"small"),
                false,
            )
            .unwrap();
        std::fs::write(staging.join("sgrow"), &grown).unwrap();
        for i in 0..2 * COMPACT_AFTER {
            let id = format!("f{i}");
            journal.record(&id, &record(&id)).unwrap();
            journal.remove(&id);
        }
        let text = std::fs::read_to_string(cache.path().join("journal/log")).unwrap();
        assert!(text.lines().count() < COMPACT_AFTER);
        assert!(
            text.contains("data"),
            "the rewritten log carries the bytes again"
        );
        assert!(journal.log.lock().unwrap().live.inline.contains("keep"));
        assert!(journal.log.lock().unwrap().live.inline.contains("held"));
        assert!(!journal.log.lock().unwrap().live.inline.contains("grow"));
        assert!(
            !staging.join("sheld").exists(),
            "a rewrite creates no staging file"
        );
        drop(journal);
        // The machine stopped before the staging file reached the disk.
        std::fs::write(staging.join("skeep"), b"").unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        assert_eq!(
            journal.pending(),
            vec![
                ("grow".to_string(), staged("ws/grow", "sgrow")),
                ("held".to_string(), held),
                ("keep".to_string(), keep)
            ]
        );
        assert_eq!(std::fs::read(staging.join("skeep")).unwrap(), b"kept bytes");
        assert_eq!(std::fs::read(staging.join("sheld")).unwrap(), b"held bytes");
        assert_eq!(std::fs::read(staging.join("sgrow")).unwrap(), grown);
    }

    #[test]
    fn a_removal_is_durable_once_a_later_line_is_synced() {
        let cache = tempfile::tempdir().unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        journal.record("a", &record("ws/a")).unwrap();
        let mark = journal.remove("a");
        assert!(journal.durable() < mark, "the done line is not synced");
        journal.record("b", &record("ws/b")).unwrap();
        assert!(
            journal.durable() >= mark,
            "syncing b's line wrote a's done line too"
        );
        assert_eq!(journal.remove("nothing"), journal.remove("nothing"));
    }

    #[test]
    fn a_done_line_that_cannot_be_written_never_lets_the_staging_file_be_reused() {
        let cache = tempfile::tempdir().unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        journal.record("a", &record("ws/a")).unwrap();
        // The disk is full: no line can be appended (a read-only descriptor stands in).
        let log = std::fs::File::open(cache.path().join("journal/log")).unwrap();
        journal.log.lock().unwrap().file = LogFile::new(log).unwrap();
        let mark = journal.remove("a");
        assert!(
            mark > journal.durable(),
            "a record whose done line is not on disk counts as forgotten (mark {mark})"
        );
        drop(journal);
        assert_eq!(
            Journal::open(cache.path()).unwrap().pending(),
            vec![("a".to_string(), record("ws/a"))],
            "the record is still in the log"
        );
    }

    #[test]
    fn the_log_is_compacted_as_records_come_and_go() {
        let cache = tempfile::tempdir().unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        journal.record("keep", &record("ws/keep")).unwrap();
        for i in 0..2 * COMPACT_AFTER {
            let id = format!("f{i}");
            journal.record(&id, &record(&id)).unwrap();
            journal.remove(&id);
        }
        let lines = std::fs::read_to_string(cache.path().join("journal/log"))
            .unwrap()
            .lines()
            .count();
        assert!(lines < COMPACT_AFTER, "{lines} lines");
        drop(journal);
        assert_eq!(
            Journal::open(cache.path()).unwrap().pending(),
            vec![("keep".to_string(), record("ws/keep"))]
        );
    }

    #[test]
    fn open_streams_are_remembered_until_they_end() {
        let cache = tempfile::tempdir().unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        journal.stream_started("u1", "ws/big");
        journal.stream_started("u2", "ws/other");
        journal.stream_ended("u2");
        drop(journal);
        let journal = Journal::open(cache.path()).unwrap();
        assert_eq!(
            journal.open_streams(),
            vec![("u1".to_string(), "ws/big".to_string())]
        );
        assert!(journal.pending().is_empty());
        journal.stream_ended("u1");
        drop(journal);
        assert!(
            Journal::open(cache.path())
                .unwrap()
                .open_streams()
                .is_empty()
        );
    }

    #[test]
    fn renames_are_remembered_until_they_end_and_survive_compaction() {
        let cache = tempfile::tempdir().unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        let record = |from: &str, to: &str| MoveRecord {
            from: from.into(),
            to: to.into(),
        };
        journal
            .move_started("m1", &record("ws/.a.x", "ws/a"))
            .unwrap();
        journal
            .move_started("m2", &record("ws/.b.x", "ws/b"))
            .unwrap();
        journal.move_ended("m2");
        for i in 0..2 * COMPACT_AFTER {
            let id = format!("m{}", i + 10);
            journal.move_started(&id, &record(&id, &id)).unwrap();
            journal.move_ended(&id);
        }
        drop(journal);
        let journal = Journal::open(cache.path()).unwrap();
        assert_eq!(
            journal.open_moves(),
            vec![("m1".to_string(), record("ws/.a.x", "ws/a"))]
        );
        assert!(journal.pending().is_empty() && journal.open_streams().is_empty());
        journal.move_ended("m1");
        drop(journal);
        assert!(Journal::open(cache.path()).unwrap().open_moves().is_empty());
    }

    #[test]
    fn records_of_earlier_versions_are_taken_over() {
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("journal");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("old.json"),
            serde_json::to_vec(&record("ws/old")).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("old2.tmp"), b"half").unwrap();
        let journal = Journal::open(cache.path()).unwrap();
        assert_eq!(
            journal.pending(),
            vec![("old".to_string(), record("ws/old"))]
        );
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["log".to_string()]);
        drop(journal);
        assert_eq!(Journal::open(cache.path()).unwrap().pending().len(), 1);
    }
}
