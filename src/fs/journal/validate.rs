//! What the journal accepts from its log: the log is input like any other file (a crash,
//! another version, or someone with access to the cache directory may have written it).
//!
//! Invariants:
//! - A record is acted on only if it names its staging file by a plain name
//!   ([`valid_staging_name`]: no `/`, no `..`, nothing absolute) and its destination by a
//!   mount path the server can store ([`valid_mount_path`]); a move or stream line only with
//!   such paths.
//! - Any other line is set aside when the journal is opened ([`Journal::set_aside`]):
//!   appended to `<cache>/journal/rejected` (0600, synced), its data (if its staging name is
//!   plain) copied to the recovery folder, the reason reported, never replayed. A record
//!   whose staging name is not plain never has the file it names read.
//! - Messages quote untrusted names shortened ([`shorten`]).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{
    Journal, Line, MoveRecord, Record, Source, keep_in_recovery, line_bytes, private, sorted,
};
use crate::fs::MAX_KEY_BYTES;

/// The file, in the journal's folder, that keeps the lines set aside.
pub(super) const REJECTED: &str = "rejected";

/// Whether `name` may name a staging file: a plain file name inside `<cache>/staging`, as the
/// mount makes them (a Uuid): ASCII letters, digits, `-`, `_` and `.`, not starting with `.`,
/// at most 255 bytes. Anything else (`/etc/passwd`, `../x`, `..`) is refused with the reason.
pub(crate) fn valid_staging_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "staging file {:?} is not a plain file name inside the cache directory",
            shorten(name)
        ))
    }
}

/// Whether `path` is a mount path a record may write to: `<workspace>/<path>`, with no empty,
/// `.` or `..` component, no NUL, no component over 255 bytes, and no longer than the server
/// can store ([`MAX_KEY_BYTES`]).
pub(crate) fn valid_mount_path(path: &str) -> Result<(), String> {
    let why = if path.len() > MAX_KEY_BYTES {
        Some(format!(
            "is {} bytes long, more than the server stores ({})",
            path.len(),
            MAX_KEY_BYTES
        ))
    } else if path.contains('\0') {
        Some("contains a NUL byte".to_string())
    } else if !path.contains('/') {
        Some("names no file inside a workspace".to_string())
    } else if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == ".." || part.len() > 255)
    {
        Some("has an empty, `.`, `..` or over-long component".to_string())
    } else {
        None
    };
    match why {
        Some(why) => Err(format!("destination {:?} {why}", shorten(path))),
        None => Ok(()),
    }
}

/// `text` cut to a length fit for a message.
fn shorten(text: &str) -> String {
    const SHOWN: usize = 120;
    if text.len() <= SHOWN {
        return text.to_string();
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl Journal {
    /// Take the lines that fail validation out of what was read (see the module
    /// documentation): append them to the `rejected` file, keep their data in the recovery
    /// folder when their staging name is plain, and return why each was set aside.
    pub(super) fn set_aside(
        dir: &Path,
        recovery: &Path,
        staging_dir: &Path,
        pending: &mut HashMap<String, Record>,
        inline_data: &mut HashMap<String, Vec<u8>>,
        streams: &mut HashMap<String, String>,
        moves: &mut HashMap<String, MoveRecord>,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let mut out = Vec::new();
        for (id, record) in sorted(pending) {
            let staging_ok = valid_staging_name(&record.staging);
            let Err(why) = staging_ok
                .clone()
                .and_then(|()| valid_mount_path(&record.path))
            else {
                continue;
            };
            pending.remove(&id);
            let data = inline_data.remove(&id);
            let kept = if staging_ok.is_err() {
                // The file it names is not ours: never read it.
                "its data is not read".to_string()
            } else {
                let kept = match &data {
                    Some(bytes) => keep_in_recovery(recovery, &record.path, Source::Bytes(bytes)),
                    None => keep_in_recovery(
                        recovery,
                        &record.path,
                        Source::Staging(staging_dir, &record.staging),
                    ),
                };
                match kept {
                    Ok(at) => format!("its data is kept in {}", at.display()),
                    Err(e) => format!("its data could not be kept ({e})"),
                }
            };
            out.push(format!(
                "write-back journal: upload record {id} set aside, never replayed: {why}; {kept}"
            ));
            lines.push(Line::Put {
                id,
                record,
                data: data.map(|bytes| BASE64.encode(bytes)),
            });
        }
        for (id, record) in sorted(moves) {
            let Err(why) =
                valid_mount_path(&record.from).and_then(|()| valid_mount_path(&record.to))
            else {
                continue;
            };
            moves.remove(&id);
            out.push(format!(
                "write-back journal: rename record {id} set aside, never replayed: {why}"
            ));
            lines.push(Line::Move { id, record });
        }
        for (id, path) in sorted(streams) {
            let Err(why) = valid_mount_path(&path) else {
                continue;
            };
            streams.remove(&id);
            out.push(format!(
                "write-back journal: upload stream record set aside, never replayed: {why}"
            ));
            lines.push(Line::Stream { id, path });
        }
        if lines.is_empty() {
            return out;
        }
        let target = dir.join(REJECTED);
        let appended = private::options()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .and_then(|mut file| {
                private::tighten_file(&file)?;
                for line in &lines {
                    file.write_all(&line_bytes(line)?)?;
                }
                file.sync_data()
            });
        let kept = match appended {
            Ok(()) => format!("the lines set aside are in {}", target.display()),
            Err(e) => format!(
                "the lines set aside could not be kept in {} ({e})",
                target.display()
            ),
        };
        for message in &mut out {
            message.push_str("; ");
            message.push_str(&kept);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::staged;
    use super::*;
    use bytes::Bytes;

    #[test]
    fn records_naming_files_outside_the_cache_or_bad_paths_are_set_aside() {
        let top = tempfile::tempdir().unwrap();
        let cache = top.path().join("cache");
        let journal = Journal::open(&cache).unwrap();
        std::fs::write(cache.join("staging/sgood"), b"good").unwrap();
        std::fs::write(cache.join("staging/sdots"), b"dots").unwrap();
        journal.record("good", &staged("ws/good", "sgood")).unwrap();
        for (id, record) in [
            ("abs", staged("ws/abs", "/etc/passwd")),
            ("up", staged("ws/up", "../../planted")),
            ("dot", staged("ws/dot", "..")),
            ("empty", staged("ws/empty", "")),
            ("dots", staged("ws/../../x", "sdots")),
            ("root", staged("ws", "sroot")),
            ("long", staged(&format!("ws/{}", "x".repeat(1100)), "slong")),
        ] {
            journal
                .record_inline(id, &record, Bytes::from_static(b"planted"), false)
                .unwrap();
        }
        journal
            .move_started(
                "m",
                &MoveRecord {
                    from: "ws/a".into(),
                    to: "/ws/b".into(),
                },
            )
            .unwrap();
        journal.stream_started("u", "ws//x");
        drop(journal);
        let journal = Journal::open(&cache).unwrap();
        assert_eq!(
            journal.pending(),
            vec![("good".to_string(), staged("ws/good", "sgood"))]
        );
        assert!(journal.open_moves().is_empty() && journal.open_streams().is_empty());
        assert!(!top.path().join("planted").exists());
        assert_eq!(journal.rejected().len(), 9, "{:#?}", journal.rejected());
        let rejected = std::fs::read_to_string(cache.join("journal/rejected")).unwrap();
        assert_eq!(rejected.lines().count(), 9, "{rejected}");
        // A record naming the mount's own staging file keeps its data (here, its bytes).
        let kept: Vec<Vec<u8>> = journal
            .recovered()
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .collect();
        assert_eq!(kept.len(), 3, "dots, root and long");
        assert!(kept.iter().all(|k| k == b"planted"));
        drop(journal);
        let journal = Journal::open(&cache).unwrap();
        assert!(journal.rejected().is_empty(), "set aside once");
        assert_eq!(journal.pending().len(), 1);
    }
}
