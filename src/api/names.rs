//! Names that come from the server are untrusted input: before one becomes a local file name
//! (a download, a folder listing of the mount) it goes through [`check_name`], the one rule
//! for every such name.

/// The longest file name, in bytes, that Linux (and macOS) accept: `NAME_MAX`.
pub const NAME_MAX: usize = 255;

/// Whether `name`, given by the server, may be used as one local file name: not empty, not
/// `.` or `..`, no `/`, no NUL, at most [`NAME_MAX`] bytes. The error says why, with the name
/// shown escaped ([`shown`]).
pub fn check_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "is `.` or `..`"
    } else if name.contains('/') {
        "contains `/`"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name.len() > NAME_MAX {
        "is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(format!(
        "the server sent an invalid name {} (it {why})",
        shown(name)
    ))
}

/// `name` for a message: quoted, control characters escaped, at most 80 characters.
pub fn shown(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .collect();
    if name.chars().count() > 80 {
        out.push_str(&format!("... ({} bytes)", name.len()));
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_pass() {
        for bad in ["", ".", "..", "a/b", "/", "a\0b", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "...", ".git", "a b", "é", &"x".repeat(255), "a\nb"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        assert!(check_name("..").unwrap_err().contains("\"..\""));
        assert!(shown("a\0b").contains("\\0"));
    }
}
