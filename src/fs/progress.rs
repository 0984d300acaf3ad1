//! Progress of the uploads the mount has pending, for `cec mount --status`: per file (by
//! inode), the bytes of its upload sent so far, when that upload began (for a rate), and in
//! write-back when the upload is due to start.
//!
//! Invariants:
//! - Cheap: the bytes are counted by the HTTP body as the client takes them (one atomic add a
//!   chunk, see [`SentCounter`]); this board's lock is taken once per upload event and by a
//!   status read, never while waiting on anything.
//! - Only shown, never decided on: nothing here says whether data is stored. A failed request
//!   takes its bytes back, and a new attempt of a whole upload starts again from zero, so the
//!   bytes shown never exceed what the current attempt sent.
//! - An entry lives from when an upload is scheduled, streamed or started until that upload
//!   returns; the status shows entries only for files still pending.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::SentCounter;

#[derive(Default)]
pub(super) struct Board {
    meters: Mutex<HashMap<u64, Meter>>,
}

#[derive(Default)]
struct Meter {
    sent: SentCounter,
    /// When the bytes counted began to be sent.
    started: Option<Instant>,
    /// Write-back: when the upload is due to start.
    due: Option<Instant>,
}

/// One pending upload's progress, as shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    /// Bytes a second since the upload began; `None` before it began.
    pub rate: Option<u64>,
    /// Write-back: the time left until the upload starts; `None` once started (or without
    /// write-back).
    pub starts_in: Option<Duration>,
}

impl Board {
    /// Write-back: the upload of `ino` waits until `at`.
    pub fn due(&self, ino: u64, at: Instant) {
        let mut meters = self.meters.lock().unwrap();
        meters.entry(ino).or_default().due = Some(at);
    }

    /// The counter of parts sent while the file is written (the upload begins now, unless it
    /// already has).
    pub fn streaming(&self, ino: u64) -> SentCounter {
        let mut meters = self.meters.lock().unwrap();
        let meter = meters.entry(ino).or_default();
        meter.started.get_or_insert_with(Instant::now);
        meter.due = None;
        meter.sent.clone()
    }

    /// An attempt of the upload of `ino` begins: from zero, or (`go_on`) after the bytes its
    /// parts sent while the file was written. Returns the counter its requests count into.
    pub fn begin(&self, ino: u64, go_on: bool) -> SentCounter {
        let mut meters = self.meters.lock().unwrap();
        let meter = meters.entry(ino).or_default();
        meter.due = None;
        if !go_on || meter.started.is_none() {
            meter.sent.reset();
            meter.started = Some(Instant::now());
        }
        meter.sent.clone()
    }

    /// The upload of `ino` returned (done, failed, or to be retried later).
    pub fn end(&self, ino: u64) {
        self.meters.lock().unwrap().remove(&ino);
    }

    pub fn get(&self, ino: u64) -> Progress {
        let meters = self.meters.lock().unwrap();
        let Some(meter) = meters.get(&ino) else {
            return Progress::default();
        };
        let now = Instant::now();
        let sent = meter.sent.get();
        Progress {
            sent,
            rate: meter.started.map(|at| {
                let secs = now.duration_since(at).as_secs_f64().max(0.001);
                (sent as f64 / secs) as u64
            }),
            starts_in: meter.due.map(|at| at.saturating_duration_since(now)),
        }
    }
}

/// Ends the upload's entry when the upload returns, however it returns.
pub(super) struct Ending<'a> {
    pub board: &'a Board,
    pub ino: u64,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.board.end(self.ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_counts_from_zero_and_a_stream_goes_on() {
        let board = Board::default();
        board.due(7, Instant::now() + Duration::from_secs(30));
        let p = board.get(7);
        assert!(p.starts_in.unwrap() > Duration::from_secs(28), "{p:?}");
        assert_eq!(p.rate, None);
        let sent = board.streaming(7);
        sent.add(100);
        assert_eq!(board.get(7).starts_in, None);
        assert_eq!(board.begin(7, true).get(), 100);
        assert_eq!(board.begin(7, false).get(), 0);
        board.end(7);
        assert_eq!(board.get(7), Progress::default());
    }
}
