//! Progress display of a transfer: on a terminal, an overall bar (bytes, rate, files) and one
//! bar per file in flight (indicatif); elsewhere nothing but, in verbose mode, one log line
//! per finished file. Drawing goes to stderr only, so stdout stays clean for scripts.

use std::sync::Mutex;
use std::time::Duration;

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
}

/// The progress of one file (a no-op without bars).
#[derive(Clone)]
pub struct FileBar {
    bar: Option<ProgressBar>,
    overall: Option<ProgressBar>,
}

impl FileBar {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Some(o) = &self.overall {
            o.inc(n);
        }
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

    /// A bar for one file.
    pub fn file(&self, name: &str, size: u64) -> FileBar {
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
        FileBar {
            bar,
            overall: self.overall(),
        }
    }

    /// A file is finished (or failed).
    pub fn file_done(&self, bar: &FileBar, name: &str, size: u64, ok: bool) {
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
                eprintln!("{name}: done ({})", crate::cli::files::human_size(size));
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
