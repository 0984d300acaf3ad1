//! The write-back journal and the recovery folder.
//!
//! With `--write-back`, `close` returns before the upload. Before it returns, the staging file
//! is synced and a journal record `<cache>/journal/<id>.json` naming the destination path and
//! the staging file is written atomically (temporary + rename + directory sync). The record is
//! removed only after the server confirmed the upload. `CellsFs::new` reads every record and
//! uploads again: a crash or a reboot loses nothing that `close` acknowledged.
//!
//! When an upload fails for good, the staging file is copied to `<cache>/recovery/` under a
//! name built from the time and the path, and the failure is reported; data is never dropped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Destination: the mount path `<ws>/<path>`.
    pub path: String,
    /// The staging file's name inside `<cache>/staging`.
    pub staging: String,
}

pub struct Journal {
    dir: PathBuf,
    recovery: PathBuf,
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Journal {
    pub fn open(cache_dir: &Path) -> std::io::Result<Journal> {
        let dir = cache_dir.join("journal");
        let recovery = cache_dir.join("recovery");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&recovery)?;
        Ok(Journal { dir, recovery })
    }

    /// Record (or re-record, after a rename) a pending upload; durable when this returns.
    pub fn record(&self, id: &str, record: &Record) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{id}.tmp"));
        let data = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(format!("{id}.json")))?;
        sync_dir(&self.dir);
        Ok(())
    }

    /// The upload is on the server (or in the recovery folder): forget it.
    pub fn remove(&self, id: &str) {
        if std::fs::remove_file(self.dir.join(format!("{id}.json"))).is_ok() {
            sync_dir(&self.dir);
        }
    }

    /// Every record left by a previous mount, as `(id, record)`.
    pub fn pending(&self) -> Vec<(String, Record)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                let _ = std::fs::remove_file(entry.path());
                continue;
            };
            if let Ok(data) = std::fs::read(entry.path())
                && let Ok(record) = serde_json::from_slice::<Record>(&data)
            {
                out.push((id.to_string(), record));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Keep a copy of `staging` for `path` in the recovery folder; returns where.
    pub fn keep_for_recovery(&self, path: &str, staging: &Path) -> std::io::Result<PathBuf> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let flat: String = path
            .chars()
            .map(|c| if c == '/' { '_' } else { c })
            .collect();
        let mut target = self.recovery.join(format!("{stamp}-{flat}"));
        let mut n = 1;
        while target.exists() {
            target = self.recovery.join(format!("{stamp}-{n}-{flat}"));
            n += 1;
        }
        std::fs::copy(staging, &target)?;
        Ok(target)
    }

    /// Files in the recovery folder.
    pub fn recovered(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.recovery)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}
