//! What `cec mount --status` shows: [`MountStatus`] (JSON on the control socket), its text
//! rendering for people, and its assembly from the core's status and the events' counters.
//!
//! Invariants:
//! - A status holds no secret: the server's URL, the profile's name, paths and counters.
//! - Fields added after the first release read as their default when missing, so that a newer
//!   `cec` still reads the status of an older daemon.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What `cec mount --status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MountStatus {
    pub mountpoint: String,
    pub server: String,
    /// The stored profile the mount uses (`None`: `--url`/`--token`, or an older daemon).
    #[serde(default)]
    pub profile: Option<String>,
    pub pid: u32,
    pub uptime_secs: u64,
    pub read_only: bool,
    pub write_back_secs: Option<u64>,
    /// Uploads not yet on the server (path and bytes).
    pub pending_uploads: Vec<PendingUploadStatus>,
    pub cache_dir: String,
    pub cache_used_bytes: u64,
    pub cache_limit_bytes: u64,
    /// Most recent errors, newest last, each with its path (never a token).
    pub recent_errors: Vec<String>,
    /// `None` with `--no-events`.
    pub events_connected: Option<bool>,
    pub events_received: u64,
    /// Conflict copies stored lately (a file changed on the server and here), oldest first.
    #[serde(default)]
    pub conflict_copies: Vec<ConflictCopyStatus>,
}

/// One conflict copy: the file whose server version was kept, and where ours went.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConflictCopyStatus {
    pub path: String,
    pub copy: String,
    /// Unix seconds.
    pub at: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PendingUploadStatus {
    pub path: String,
    /// The file's size.
    pub bytes: u64,
    /// Bytes of it the running upload has sent.
    #[serde(default)]
    pub sent_bytes: u64,
    /// Bytes a second since the upload began; `None` before it began.
    #[serde(default)]
    pub rate_bytes_per_sec: Option<u64>,
    /// Write-back: seconds until the upload starts; `None` once it runs.
    #[serde(default)]
    pub starts_in_secs: Option<u64>,
}

impl PendingUploadStatus {
    /// `3.0 MiB of 10.0 MiB sent, 1.2 MiB/s`, `starts in 12s`, or `waiting`.
    pub fn progress(&self) -> String {
        let mut parts = Vec::new();
        if let Some(secs) = self.starts_in_secs {
            parts.push(format!("starts in {secs}s"));
        }
        if let Some(rate) = self.rate_bytes_per_sec {
            parts.push(format!(
                "{} of {} sent, {}/s",
                human_bytes(self.sent_bytes),
                human_bytes(self.bytes),
                human_bytes(rate)
            ));
        }
        if parts.is_empty() {
            parts.push("waiting".into());
        }
        parts.join(", ")
    }
}

impl std::fmt::Display for MountStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "mountpoint:      {}", self.mountpoint)?;
        writeln!(f, "server:          {}", self.server)?;
        writeln!(
            f,
            "profile:         {}",
            self.profile.as_deref().unwrap_or("(none)")
        )?;
        writeln!(f, "pid:             {}", self.pid)?;
        writeln!(f, "uptime:          {}s", self.uptime_secs)?;
        writeln!(
            f,
            "mode:            {}{}",
            if self.read_only {
                "read-only"
            } else {
                "read-write"
            },
            match self.write_back_secs {
                Some(s) => format!(", write-back {s}s"),
                None => String::new(),
            }
        )?;
        match self.events_connected {
            None => writeln!(f, "events:          off (TTLs only)")?,
            Some(c) => writeln!(
                f,
                "events:          {} ({} received)",
                if c { "connected" } else { "disconnected" },
                self.events_received
            )?,
        }
        writeln!(
            f,
            "cache:           {} used of {} in {}",
            human_bytes(self.cache_used_bytes),
            human_bytes(self.cache_limit_bytes),
            self.cache_dir
        )?;
        writeln!(f, "pending uploads: {}", self.pending_uploads.len())?;
        for p in &self.pending_uploads {
            writeln!(
                f,
                "  {} ({}): {}",
                p.path,
                human_bytes(p.bytes),
                p.progress()
            )?;
        }
        if !self.conflict_copies.is_empty() {
            writeln!(f, "conflict copies: {}", self.conflict_copies.len())?;
            for c in &self.conflict_copies {
                writeln!(f, "  {} -> {}", c.path, c.copy)?;
            }
        }
        writeln!(f, "recent errors:   {}", self.recent_errors.len())?;
        for e in &self.recent_errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Build the status the control socket serves.
pub(super) fn build_status(
    plan_view: &StatusContext,
    fs: &crate::fs::CellsFs,
    events: Option<&std::sync::Arc<crate::api::events::EventsStats>>,
) -> MountStatus {
    use std::sync::atomic::Ordering;
    let core = fs.status();
    MountStatus {
        mountpoint: plan_view.mountpoint.clone(),
        server: plan_view.server.clone(),
        profile: plan_view.profile.clone(),
        pid: std::process::id(),
        uptime_secs: plan_view.started.elapsed().as_secs(),
        read_only: plan_view.read_only,
        write_back_secs: plan_view.write_back_secs,
        pending_uploads: core
            .pending_uploads
            .iter()
            .map(|p| PendingUploadStatus {
                path: p.path.clone(),
                bytes: p.size,
                sent_bytes: p.sent,
                rate_bytes_per_sec: p.rate,
                starts_in_secs: p.starts_in_secs,
            })
            .collect(),
        cache_dir: plan_view.cache_dir.clone(),
        cache_used_bytes: core.cache_bytes,
        cache_limit_bytes: core.cache_capacity,
        recent_errors: core
            .recent_errors
            .iter()
            .map(|e| e.message.clone())
            .chain(
                core.recovered_files
                    .iter()
                    .map(|p| format!("kept after a failed upload: {}", p.display())),
            )
            .collect(),
        events_connected: events.map(|s| s.connected.load(Ordering::Relaxed)),
        events_received: events
            .map(|s| s.tree_events.load(Ordering::Relaxed))
            .unwrap_or(0),
        conflict_copies: core
            .conflict_copies
            .iter()
            .map(|c| ConflictCopyStatus {
                path: c.path.clone(),
                copy: c.copy.clone(),
                at: c.at,
            })
            .collect(),
    }
}

pub(super) struct StatusContext {
    pub(super) mountpoint: String,
    pub(super) server: String,
    pub(super) profile: Option<String>,
    pub(super) started: Instant,
    pub(super) read_only: bool,
    pub(super) write_back_secs: Option<u64>,
    pub(super) cache_dir: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_every_section() {
        let status = MountStatus {
            mountpoint: "/mnt/cells".into(),
            pending_uploads: vec![PendingUploadStatus {
                path: "personal-files/a.bin".into(),
                bytes: 3 * 1024 * 1024,
                sent_bytes: 1024 * 1024,
                rate_bytes_per_sec: Some(512 * 1024),
                starts_in_secs: None,
            }],
            recent_errors: vec!["upload failed: personal-files/b".into()],
            events_connected: Some(true),
            ..Default::default()
        };
        let text = status.to_string();
        assert!(
            text.contains("personal-files/a.bin (3.0 MiB): 1.0 MiB of 3.0 MiB sent, 512.0 KiB/s"),
            "{text}"
        );
        assert!(text.contains("upload failed: personal-files/b"), "{text}");
        assert!(text.contains("events:          connected"), "{text}");
    }
}
