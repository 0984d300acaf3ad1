//! Symbolic links in `cec scp`, with `-l`/`--links`: stored as rclone stores them (and as a
//! `cec mount --links` shows them, see `src/fs/links.rs`), a regular file `NAME.rclonelink`
//! whose content is the link's target, bytes as `readlink` gives them.
//!
//! - Upload: a link inside the source tree is read (never followed) and stored as
//!   `NAME.rclonelink`.
//! - Download: a stored `NAME.rclonelink` becomes the local link `NAME` once every file has
//!   been written; one that cannot be a path (over 4,095 bytes, empty, holding a NUL), or
//!   whose `NAME` the same folder also holds as a plain node (the plain node wins, as in the
//!   mount), or whose `NAME` is not a valid local name, is downloaded as the regular file it
//!   is.
//!
//! Invariant (with or without `--links`): a download never writes through a link. Before a
//! folder is created or a file written, every component of its path below the target folder
//! is checked with `lstat`: a link there (sent by the server earlier in this very transfer,
//! or there before) makes that item fail, so a hostile server sending `a` as a link to
//! `/etc` and then `a/passwd` gets nothing written outside the target. Links are created
//! last and only under names the listing gave to no other node, and a link is put in place
//! by renaming a fresh link over the name (never by writing through what is there).

use std::path::{Component, Path, PathBuf};

use futures::StreamExt;

use crate::api::names::check_name;
use crate::api::{ByteRange, CellsApi, UploadOptions};

use super::download::temp_path_for;
use super::{Summary, TransferError, join_remote};

/// The suffix of a stored link.
pub const SUFFIX: &str = ".rclonelink";

/// The longest target a link may have (Linux's `PATH_MAX` less its NUL).
pub const MAX_TARGET: u64 = 4095;

/// A link to store: its target bytes, at `remote` (`NAME.rclonelink`).
#[derive(Debug, Clone)]
pub(super) struct LinkUp {
    pub local: PathBuf,
    pub remote: String,
    pub target: Vec<u8>,
}

/// A stored link to recreate: the local link's path and the stored file.
#[derive(Debug, Clone)]
pub(super) struct LinkDown {
    pub local: PathBuf,
    pub remote: String,
    pub size: u64,
}

/// The link to store for the local link `path` found in remote folder `remote_folder`.
pub(super) fn link_up(path: &Path, remote_folder: &str, name: &str) -> Result<LinkUp, String> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::fs::read_link(path)
        .map_err(|e| format!("{}: cannot read the link: {e}", path.display()))?;
    Ok(LinkUp {
        local: path.to_path_buf(),
        remote: join_remote(remote_folder, &format!("{name}{SUFFIX}")),
        target: target.as_os_str().as_bytes().to_vec(),
    })
}

/// The visible name of a stored child `name` of a folder whose children are `siblings`, when
/// it may be downloaded as a link (its content still to be checked).
pub(super) fn link_name<'a>(name: &'a str, size: u64, siblings: &[&str]) -> Option<&'a str> {
    let visible = name.strip_suffix(SUFFIX).filter(|v| !v.is_empty())?;
    ((1..=MAX_TARGET).contains(&size)
        && check_name(visible).is_ok()
        && !siblings.contains(&visible))
    .then_some(visible)
}

/// Whether `target` may be a link's target.
pub(super) fn valid_target(target: &[u8]) -> bool {
    (1..=MAX_TARGET as usize).contains(&target.len()) && !target.contains(&0)
}

/// Refuse `path` when a component of it strictly below `root` is a symbolic link (or cannot
/// be read other than as missing): writing there could land outside `root`. `path` itself
/// may be a link when `replaced` (a file or link put in place by a rename over the name).
pub(super) fn no_link_below(root: &Path, path: &Path, replaced: bool) -> Result<(), TransferError> {
    let Ok(rel) = path.strip_prefix(root) else {
        return Err(TransferError::Local(format!(
            "{} is not inside the target folder {}",
            path.display(),
            root.display()
        )));
    };
    let mut at = root.to_path_buf();
    let components: Vec<_> = rel.components().collect();
    for (i, c) in components.iter().enumerate() {
        let Component::Normal(part) = c else {
            return Err(TransferError::Local(format!(
                "{}: not a plain path below {}",
                path.display(),
                root.display()
            )));
        };
        at.push(part);
        let last = i + 1 == components.len();
        match std::fs::symlink_metadata(&at) {
            // The item itself may be a link: it is replaced by a rename, never written through.
            Ok(m) if m.file_type().is_symlink() && !(last && replaced) => {
                return Err(TransferError::Local(format!(
                    "{}: {} is a symbolic link: not written through",
                    path.display(),
                    at.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(TransferError::Local(format!("{}: {e}", at.display())));
            }
        }
    }
    Ok(())
}

/// Store the links: one PUT each.
pub(super) async fn upload_links(api: &dyn CellsApi, links: Vec<LinkUp>, summary: &mut Summary) {
    let options = UploadOptions::default();
    for link in links {
        let size = link.target.len() as u64;
        match api
            .put_object(&link.remote, bytes::Bytes::from(link.target), &options)
            .await
        {
            Ok(_) => {
                summary.files += 1;
                summary.bytes += size;
            }
            Err(e) => summary
                .failures
                .push(format!("{}: {e}", link.local.display())),
        }
    }
}

/// Read a stored link's target (bounded), `None` when it cannot be one.
async fn read_target(api: &dyn CellsApi, link: &LinkDown) -> Result<Option<Vec<u8>>, String> {
    let mut stream = api
        .get_object(
            &link.remote,
            Some(ByteRange {
                offset: 0,
                len: Some(link.size),
            }),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        if body.len() as u64 > link.size {
            return Ok(None);
        }
    }
    Ok((body.len() as u64 == link.size && valid_target(&body)).then_some(body))
}

/// Recreate the links below `root`; a stored link that cannot be one becomes a regular file
/// job (returned, to download as the file it is, under its stored name).
pub(super) async fn download_links(
    api: &dyn CellsApi,
    root: &Path,
    links: Vec<LinkDown>,
    merge: bool,
    summary: &mut Summary,
) -> Vec<LinkDown> {
    use std::os::unix::ffi::OsStrExt;
    let mut as_files = Vec::new();
    for link in links {
        let target = match read_target(api, &link).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                as_files.push(link);
                continue;
            }
            Err(e) => {
                summary.failures.push(format!("{}: {e}", link.remote));
                continue;
            }
        };
        let placed = (|| -> Result<(), String> {
            no_link_below(root, &link.local, true).map_err(|e| e.to_string())?;
            match std::fs::symlink_metadata(&link.local) {
                Ok(m) if m.is_dir() => {
                    return Err(format!("{}: a folder is there", link.local.display()));
                }
                Ok(_) if !merge => {
                    return Err(format!(
                        "{} already exists (--force replaces it)",
                        link.local.display()
                    ));
                }
                _ => {}
            }
            let temp = temp_path_for(&link.local);
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &temp)
                .map_err(|e| format!("{}: {e}", link.local.display()))?;
            std::fs::rename(&temp, &link.local).map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                format!("{}: {e}", link.local.display())
            })
        })();
        match placed {
            Ok(()) => {
                summary.files += 1;
                summary.bytes += target.len() as u64;
            }
            Err(e) => summary.failures.push(e),
        }
    }
    as_files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_stored_names_may_be_links() {
        assert_eq!(link_name("a.rclonelink", 3, &["a.rclonelink"]), Some("a"));
        assert_eq!(
            link_name("a.rclonelink", 3, &["a", "a.rclonelink"]),
            None,
            "plain wins"
        );
        assert_eq!(link_name(".rclonelink", 3, &[]), None);
        assert_eq!(link_name("..rclonelink", 3, &[]), None, "`.` is no name");
        assert_eq!(link_name("...rclonelink", 3, &[]), None, "`..` is no name");
        assert_eq!(link_name("a.rclonelink", 0, &[]), None);
        assert_eq!(link_name("a.rclonelink", 4096, &[]), None);
        assert_eq!(link_name("a.txt", 3, &[]), None);
    }

    #[test]
    fn a_path_through_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a")).unwrap();
        assert!(no_link_below(root, &root.join("d/x"), true).is_ok());
        assert!(no_link_below(root, &root.join("new/x"), true).is_ok());
        // A file may replace a link (renamed over it, not written through); a folder may not
        // be made of one.
        assert!(no_link_below(root, &root.join("a"), true).is_ok());
        assert!(no_link_below(root, &root.join("a"), false).is_err());
        assert!(no_link_below(root, &root.join("a/passwd"), true).is_err());
        assert!(no_link_below(root, &root.join("a/x/y"), true).is_err());
        assert!(no_link_below(root, Path::new("/elsewhere/x"), true).is_err());
    }

    #[test]
    fn targets() {
        assert!(valid_target(b"/etc"));
        assert!(!valid_target(b""));
        assert!(!valid_target(b"a\0"));
        assert!(!valid_target(&[b'a'; 4096]));
    }
}
