//! The mtime/atime overlay: times set by the user (`touch -d`, `rsync -a`, `cp -p`), which
//! Cells cannot store (it assigns mtimes itself), kept locally in `<cache>/times.json`.
//!
//! Invariants:
//! - An entry is bound to the Etag the file had when the times were set; when the server's
//!   Etag differs (someone changed the content) the entry is dropped and the server's time
//!   shows again. An entry set on a file whose upload is pending has no Etag yet and is bound
//!   to the Etag of that upload when it completes.
//! - Entries follow renames (keys are mount paths) and leave with unlinks.
//! - The file is rewritten atomically (temporary + rename) after each change, so it survives
//!   remounts and crashes.

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
    file: PathBuf,
    entries: Mutex<BTreeMap<String, Times>>,
}

fn is_under_or_eq(path: &str, folder: &str) -> bool {
    path == folder
        || (path.len() > folder.len()
            && path.starts_with(folder)
            && path.as_bytes()[folder.len()] == b'/')
}

impl Overlay {
    pub fn open(file: PathBuf) -> Overlay {
        let entries = std::fs::read(&file)
            .ok()
            .and_then(|data| serde_json::from_slice(&data).ok())
            .unwrap_or_default();
        Overlay {
            file,
            entries: Mutex::new(entries),
        }
    }

    fn save(&self, entries: &BTreeMap<String, Times>) {
        let tmp = self.file.with_extension("json.tmp");
        let data = serde_json::to_vec(entries).unwrap_or_default();
        if std::fs::write(&tmp, data).is_ok() {
            let _ = std::fs::rename(&tmp, &self.file);
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
                self.save(&entries);
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
        self.save(&entries);
    }

    /// An upload of `path` completed with `etag`: bind a pending entry to it.
    pub fn bind(&self, path: &str, etag: &str) {
        let mut entries = self.entries.lock().unwrap();
        if let Some(entry) = entries.get_mut(path)
            && entry.etag.is_none()
        {
            entry.etag = Some(etag.to_string());
            self.save(&entries);
        }
    }

    /// The content of `path` was replaced locally: forget the user's times.
    pub fn content_replaced(&self, path: &str) {
        let mut entries = self.entries.lock().unwrap();
        if entries.remove(path).is_some() {
            self.save(&entries);
        }
    }

    /// `from` (and its subtree) now lives at `to`.
    pub fn rename(&self, from: &str, to: &str) {
        let mut entries = self.entries.lock().unwrap();
        let moved: Vec<String> = entries
            .keys()
            .filter(|k| is_under_or_eq(k, from) || is_under_or_eq(k, to))
            .cloned()
            .collect();
        if moved.is_empty() {
            return;
        }
        let mut renamed = Vec::new();
        for key in moved {
            let value = entries.remove(&key).expect("listed");
            if is_under_or_eq(&key, from) {
                renamed.push((format!("{to}{}", &key[from.len()..]), value));
            }
        }
        entries.extend(renamed);
        self.save(&entries);
    }

    /// `path` and its subtree are gone.
    pub fn remove(&self, path: &str) {
        let mut entries = self.entries.lock().unwrap();
        let before = entries.len();
        entries.retain(|k, _| !is_under_or_eq(k, path));
        if entries.len() != before {
            self.save(&entries);
        }
    }
}
