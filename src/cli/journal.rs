//! Logging under systemd: when stderr is the journal (systemd sets `JOURNAL_STREAM` to the
//! `device:inode` of the stream it connected), each event becomes one line with the syslog
//! priority prefix the journal understands (`<3>` error ... `<7>` debug) and no timestamp
//! or colour (the journal adds its own), so `journalctl -p warning` filters cec's lines.
//!
//! Invariants: the same filter as the terminal format (cec's own levels, other crates capped
//! at `warn`), so nothing reaches the journal that could not reach a terminal; one event is
//! one line (newlines in messages are escaped).

use std::fmt::Write as _;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether stderr is the stream systemd connected to the journal (`JOURNAL_STREAM` names
/// its device and inode; a redirected stderr does not match). Always false off Linux.
pub fn stderr_is_journal() -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // dev_t and ino_t differ in width and sign between platforms.
    #[allow(clippy::unnecessary_cast)]
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => st.st_dev as u64 == dev && st.st_ino as u64 == ino,
        Err(_) => false,
    }
}

/// The syslog priority of a tracing level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// `<priority>message field=value ...`, one line per event.
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut line), event)?;
        let line = line.replace('\n', "\\n");
        let mut out = String::with_capacity(line.len() + 4);
        write!(out, "<{}>{line}", priority(event.metadata().level()))?;
        writeln!(writer, "{out}")
    }
}

/// Install the journal format with `directives` (an `EnvFilter` string) on stderr.
pub fn init(directives: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(directives))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(JournalFormat)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_become_prefixed_single_lines() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(JournalFormat)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(path = "a/b", "upload failed");
            tracing::warn!("two\nlines");
            tracing::info!("mounted");
            tracing::debug!("detail");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "<3>upload failed path=\"a/b\"",
                "<4>two\\nlines",
                "<6>mounted",
                "<7>detail"
            ],
            "{text}"
        );
    }
}
