//! Progress display of a transfer: on a terminal, an overall bar (bytes, rate, files) and one
//! bar per file in flight (indicatif); elsewhere nothing but, in verbose mode, one log line
//! per finished file. Drawing goes to stderr only, so stdout stays clean for scripts. It also
//! keeps what is in flight, so that an interruption can say what is left where.
//!
//! Invariants: bars count only bytes sent by this run: the parts of a resumed upload that are
//! already on the server shorten the bars instead (so the rate is that of this run); notices
//! go above the bars ([`Progress::note`]), never through them, so no stale bar line remains.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sizes::human_size;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars, redrawn at `refresh`.
    Bars { refresh: Duration },
    /// No bars; one line per file when `verbose`.
    Logs { verbose: bool },
}

impl ProgressMode {
    /// Bars when stderr is a terminal and progress is not disabled.
    pub fn choose(no_progress: bool, quiet: bool, verbose: bool) -> ProgressMode {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        if tty && !no_progress && !verbose {
            ProgressMode::Bars {
                refresh: if quiet {
                    Duration::from_secs(3)
                } else {
                    Duration::from_millis(100)
                },
            }
        } else {
            ProgressMode::Logs { verbose }
        }
    }
}

/// The progress of one transfer.
pub struct Progress {
    mode: ProgressMode,
    multi: Option<MultiProgress>,
    overall: Mutex<Option<ProgressBar>>,
    /// Files in flight.
    flights: Mutex<Vec<Arc<Flight>>>,
    /// Files finished successfully.
    completed: AtomicU64,
}

/// How one file travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    Download,
    /// An upload in one PUT: nothing is kept on the server when it stops.
    Put,
    /// A multipart upload: the parts sent stay on the server and a re-run resumes them.
    Multipart,
}

/// One file in flight.
#[derive(Debug)]
pub struct Flight {
    pub remote: String,
    pub size: u64,
    pub leg: Leg,
    /// Bytes sent or received by this run.
    pub moved: AtomicU64,
    /// Bytes of a resumed upload already on the server before this run.
    pub resumed: AtomicU64,
}

/// The progress of one file (the bars are no-ops without a terminal).
#[derive(Clone)]
pub struct FileBar {
    bar: Option<ProgressBar>,
    overall: Option<ProgressBar>,
    multi: Option<MultiProgress>,
    flight: Arc<Flight>,
}

impl FileBar {
    /// `n` more bytes moved by this run.
    pub fn inc(&self, n: u64) {
        self.flight.moved.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Some(o) = &self.overall {
            o.inc(n);
        }
    }

    /// An upload resumes: `n` bytes were already on the server. They shorten the bars
    /// (which count what this run sends, and so its rate) and a notice says so.
    pub fn resumed(&self, n: u64) {
        // A retry within this run finds the parts this run sent: already counted.
        if n == 0
            || self.flight.moved.load(Ordering::Relaxed) > 0
            || self.flight.resumed.swap(n, Ordering::Relaxed) != 0
        {
            return;
        }
        if let Some(b) = &self.bar {
            b.set_length(self.flight.size.saturating_sub(n));
        }
        if let Some(o) = &self.overall {
            o.set_length(o.length().unwrap_or(0).saturating_sub(n));
        }
        let left = self.flight.size.saturating_sub(n);
        note(
            self.multi.as_ref(),
            &format!(
                "Resuming the upload of cells://{}: {} already on the server from an earlier run, {} to send",
                self.flight.remote,
                human_size(n),
                human_size(left)
            ),
        );
    }

    /// Bytes already on the server before this run (resumed upload).
    pub fn resumed_bytes(&self) -> u64 {
        self.flight.resumed.load(Ordering::Relaxed)
    }
}

/// Print a line above the bars (or on stderr without bars).
fn note(multi: Option<&MultiProgress>, line: &str) {
    match multi {
        Some(m) if m.println(line).is_ok() => {}
        _ => eprintln!("{line}"),
    }
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let multi = match mode {
            ProgressMode::Bars { refresh } => {
                let hz = (1000 / refresh.as_millis().max(1)).clamp(1, 20) as u8;
                Some(MultiProgress::with_draw_target(
                    ProgressDrawTarget::stderr_with_hz(hz),
                ))
            }
            ProgressMode::Logs { .. } => None,
        };
        Progress {
            mode,
            multi,
            overall: Mutex::new(None),
            flights: Mutex::new(Vec::new()),
            completed: AtomicU64::new(0),
        }
    }

    /// Start the overall bar.
    pub fn start(&self, files: u64, bytes: u64) {
        if let Some(m) = &self.multi {
            let bar = m.add(ProgressBar::new(bytes));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("total: 0/{files} files"));
            bar.set_length(bytes);
            bar.set_message(files.to_string());
            *self.overall.lock().expect("progress lock") = Some(bar);
        }
    }

    fn overall(&self) -> Option<ProgressBar> {
        self.overall.lock().expect("progress lock").clone()
    }

    /// A line for the user, above the bars.
    pub fn note(&self, line: &str) {
        note(self.multi.as_ref(), line);
    }

    /// A bar for one file.
    pub fn file(&self, name: &str, size: u64, leg: Leg) -> FileBar {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(size));
            b.set_style(
                ProgressStyle::with_template("{prefix:30!} [{bar:30}] {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_prefix(name.rsplit('/').next().unwrap_or(name).to_string());
            b
        });
        let flight = Arc::new(Flight {
            remote: name.to_string(),
            size,
            leg,
            moved: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
        });
        self.flights
            .lock()
            .expect("progress lock")
            .push(flight.clone());
        FileBar {
            bar,
            overall: self.overall(),
            multi: self.multi.clone(),
            flight,
        }
    }

    /// The files in flight now, and how many finished successfully.
    pub fn in_flight(&self) -> (Vec<Arc<Flight>>, u64) {
        (
            self.flights.lock().expect("progress lock").clone(),
            self.completed.load(Ordering::Relaxed),
        )
    }

    /// Hide the bars (before a final message).
    pub fn clear(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }

    /// A file is finished (or failed).
    pub fn file_done(&self, bar: &FileBar, name: &str, size: u64, ok: bool) {
        self.flights
            .lock()
            .expect("progress lock")
            .retain(|f| !Arc::ptr_eq(f, &bar.flight));
        if ok {
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(b) = &bar.bar {
            b.finish_and_clear();
            if let Some(m) = &self.multi {
                m.remove(b);
            }
        }
        if let Some(o) = &bar.overall {
            let done: u64 = o
                .prefix()
                .strip_prefix("total: ")
                .and_then(|s| s.split('/').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let total = o.message();
            o.set_prefix(format!("total: {}/{total} files", done + 1));
        }
        if let ProgressMode::Logs { verbose: true } = self.mode {
            if ok {
                eprintln!("{name}: done ({})", human_size(size));
            } else {
                eprintln!("{name}: failed");
            }
        }
    }

    /// Clear the bars.
    pub fn finish(&self) {
        if let Some(o) = self.overall() {
            o.finish();
        }
    }
}
