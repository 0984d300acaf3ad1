//! The mtime/atime overlay: times set by the user (`touch -d`, `rsync -a`, `cp -p`), which
//! Cells cannot store (it assigns mtimes itself), kept locally in `<cache>/times.json`.
//!
//! Invariants:
//! - An entry is bound to the Etag the file had when the times were set; when the server's
//!   Etag differs (someone changed the content) the entry is dropped and the server's time
//!   shows again. An entry set on a file whose upload is pending has no Etag yet and is bound
//!   to the Etag of that upload when it completes.
//! - Entries follow renames (keys are mount paths) and leave with unlinks.
//! - Every change is appended to `<cache>/times.log` at once (one line per path, so a change
//!   costs the same with 10 or 100,000 entries); the log is folded into `times.json`
//!   (temporary + rename) at open and whenever it outgrows the map. Both survive remounts and
//!   crashes; a torn last log line is skipped.
//! - Both files are 0600 whatever the umask (see `private`): they name the user's files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Seconds and nanoseconds since the Unix epoch (may be negative).
pub type Stamp = (i64, u32);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Times {
    /// The content version these times belong to; `None` while an upload is pending.
    pub etag: Option<String>,
    pub mtime: Option<Stamp>,
    pub atime: Option<Stamp>,
}

pub struct Overlay {
    /// The snapshot (`times.json`); changes since it are appended to `times.log`.
    file: PathBuf,
    entries: Mutex<BTreeMap<String, Times>>,
    log: Mutex<ChangeLog>,
}

/// Changes appended since the last snapshot: one JSON line per changed path, so a change
/// costs one short write however many entries there are (rewriting the whole map on every
/// `utime` made `tar x` of thousands of files quadratic). Compacted into the snapshot when
/// it outgrows the map.
struct ChangeLog {
    file: Option<std::fs::File>,
    lines: usize,
}

#[derive(Serialize, Deserialize)]
struct LogLine {
    path: String,
    /// `None`: the entry was removed.
    times: Option<Times>,
}

/// Keys of `entries` equal to `folder` or below it.
fn subtree_keys(entries: &BTreeMap<String, Times>, folder: &str) -> Vec<String> {
    super::subtree_of(entries, folder)
        .map(|(k, _)| k.clone())
        .collect()
}

impl Overlay {
    pub fn open(file: PathBuf) -> Overlay {
        let mut entries: BTreeMap<String, Times> = std::fs::read(&file)
            .ok()
            .and_then(|data| serde_json::from_slice(&data).ok())
            .unwrap_or_default();
        let log_path = file.with_extension("log");
        if let Ok(text) = std::fs::read_to_string(&log_path) {
            // A torn last line (crash mid-append) is skipped.
            for line in text.lines() {
                if let Ok(change) = serde_json::from_str::<LogLine>(line) {
                    match change.times {
                        Some(times) => entries.insert(change.path, times),
                        None => entries.remove(&change.path),
                    };
                }
            }
        }
        let overlay = Overlay {
            file,
            entries: Mutex::new(entries),
            log: Mutex::new(ChangeLog {
                file: None,
                lines: 0,
            }),
        };
        overlay.compact(&overlay.entries.lock().unwrap());
        overlay
    }

    /// Write the whole map as the new snapshot and start an empty log.
    fn compact(&self, entries: &BTreeMap<String, Times>) {
        let mut log = self.log.lock().unwrap();
        let tmp = self.file.with_extension("json.tmp");
        let data = serde_json::to_vec(entries).unwrap_or_default();
        if super::private::write(&tmp, &data).is_err() || std::fs::rename(&tmp, &self.file).is_err()
        {
            return;
        }
        log.file = super::private::create(&self.file.with_extension("log")).ok();
        log.lines = 0;
    }

    /// Persist the changes of `paths` (their current values in `entries`).
    fn save(&self, entries: &BTreeMap<String, Times>, paths: &[String]) {
        use std::io::Write;
        let too_long = {
            let mut log = self.log.lock().unwrap();
            let mut text = String::new();
            for path in paths {
                let line = LogLine {
                    path: path.clone(),
                    times: entries.get(path).cloned(),
                };
                if let Ok(json) = serde_json::to_string(&line) {
                    text.push_str(&json);
                    text.push('\n');
                }
            }
            let written = log
                .file
                .as_mut()
                .is_some_and(|f| f.write_all(text.as_bytes()).is_ok());
            log.lines += paths.len();
            !written || log.lines > (2 * entries.len()).max(1024)
        };
        if too_long {
            self.compact(entries);
        }
    }

    /// The times for `path` whose content has Etag `etag` (`None`: the content is local and
    /// pending). A stale entry (other Etag) is dropped.
    pub fn get(&self, path: &str, etag: Option<&str>) -> Option<Times> {
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.get(path)?.clone();
        match (&entry.etag, etag) {
            (Some(bound), Some(current)) if bound != current => {
                tracing::debug!(%path, %bound, %current, "times dropped: the content changed");
                entries.remove(path);
                self.save(&entries, &[path.to_string()]);
                None
            }
            _ => Some(entry),
        }
    }

    /// Record times set by the user; `etag` as in [`Overlay::get`].
    pub fn set(&self, path: &str, etag: Option<&str>, mtime: Option<Stamp>, atime: Option<Stamp>) {
        let mut entries = self.entries.lock().unwrap();
        let previous = entries.get(path).cloned();
        let keep = previous.filter(|p| p.etag.as_deref() == etag || p.etag.is_none());
        let entry = Times {
            etag: etag.map(str::to_string),
            mtime: mtime.or(keep.as_ref().and_then(|k| k.mtime)),
            atime: atime.or(keep.as_ref().and_then(|k| k.atime)),
        };
        entries.insert(path.to_string(), entry);
        self.save(&entries, &[path.to_string()]);
    }

    /// An upload of `path` completed with `etag`: bind a pending entry to it.
    pub fn bind(&self, path: &str, etag: &str) {
        let mut entries = self.entries.lock().unwrap();
        if let Some(entry) = entries.get_mut(path)
            && entry.etag.is_none()
        {
            entry.etag = Some(etag.to_string());
            self.save(&entries, &[path.to_string()]);
        }
    }

    /// The content of `path` was replaced locally: forget the user's times.
    pub fn content_replaced(&self, path: &str) {
        let mut entries = self.entries.lock().unwrap();
        if entries.remove(path).is_some() {
            self.save(&entries, &[path.to_string()]);
        }
    }

    /// `from` (and its subtree) now lives at `to`.
    pub fn rename(&self, from: &str, to: &str) {
        let mut entries = self.entries.lock().unwrap();
        let mut moved = subtree_keys(&entries, from);
        let sources = moved.len();
        moved.extend(subtree_keys(&entries, to));
        if moved.is_empty() {
            return;
        }
        let mut renamed = Vec::new();
        for (i, key) in moved.iter().enumerate() {
            if let Some(value) = entries.remove(key)
                && i < sources
            {
                renamed.push((format!("{to}{}", &key[from.len()..]), value));
            }
        }
        let mut changed = moved;
        changed.extend(renamed.iter().map(|(k, _)| k.clone()));
        entries.extend(renamed);
        self.save(&entries, &changed);
    }

    /// `path` and its subtree are gone.
    pub fn remove(&self, path: &str) {
        let mut entries = self.entries.lock().unwrap();
        let gone = subtree_keys(&entries, path);
        for key in &gone {
            entries.remove(key);
        }
        if !gone.is_empty() {
            self.save(&entries, &gone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(s: i64) -> Option<Stamp> {
        Some((s, 0))
    }

    #[test]
    fn changes_survive_reopen_through_the_log_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("times.json");
        let overlay = Overlay::open(file.clone());
        overlay.set("ws/a/x", Some("e1"), stamp(100), None);
        overlay.set("ws/a/y", None, stamp(200), None);
        overlay.set("ws/ab", Some("e3"), stamp(300), None);
        overlay.bind("ws/a/y", "e2");
        overlay.rename("ws/a", "ws/b");
        overlay.set("ws/gone", Some("e4"), stamp(400), None);
        overlay.remove("ws/gone");
        drop(overlay);
        // A crash mid-append leaves a torn line: it is skipped.
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("times.log"))
            .unwrap();
        log.write_all(b"{\"path\":\"ws/torn\",\"ti").unwrap();
        drop(log);
        let overlay = Overlay::open(file.clone());
        assert_eq!(overlay.get("ws/b/x", Some("e1")).unwrap().mtime, stamp(100));
        let y = overlay.get("ws/b/y", Some("e2")).unwrap();
        assert_eq!((y.etag.as_deref(), y.mtime), (Some("e2"), stamp(200)));
        assert!(overlay.get("ws/a/x", None).is_none(), "moved away");
        assert_eq!(
            overlay.get("ws/ab", Some("e3")).unwrap().mtime,
            stamp(300),
            "a sibling sharing the prefix stays"
        );
        assert!(overlay.get("ws/gone", None).is_none());
        assert!(overlay.get("ws/torn", None).is_none());
        // Opening folded the log into the snapshot.
        assert_eq!(
            std::fs::metadata(dir.path().join("times.log"))
                .unwrap()
                .len(),
            0
        );
        // Many changes keep the log bounded: folded in once it has twice as many lines as
        // the map has entries (here 25,000 changes of 5,000 entries, ~75 bytes a line).
        for i in 0..5000 {
            overlay.set(&format!("ws/many/f{i}"), Some("e"), stamp(i), None);
        }
        for i in 0..20_000 {
            overlay.set("ws/many/f0", Some("e"), stamp(i), None);
        }
        let log_len = std::fs::metadata(dir.path().join("times.log"))
            .unwrap()
            .len();
        assert!(
            log_len < 1_000_000,
            "log of {log_len} bytes was never compacted"
        );
        drop(overlay);
        let overlay = Overlay::open(file);
        assert_eq!(
            overlay.get("ws/many/f4999", Some("e")).unwrap().mtime,
            stamp(4999)
        );
    }
}
