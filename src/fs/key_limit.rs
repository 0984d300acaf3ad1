//! Moving a folder lengthens every path below it by the same number of bytes: a path the server
//! could store may pass the S3 gateway's [`MAX_KEY_BYTES`] once moved, and the file would be
//! listed but never readable or writable again through the gateway. [`checked_path`] refuses
//! a new name that is too long itself; this module refuses a folder move that would make a
//! path below the folder too long (`ENAMETOOLONG`), before anything moves.
//!
//! Invariants:
//! - Only a move that lengthens the folder's path is checked; it costs one request (the
//!   gateway's listing of every depth below the folder) plus what the mount holds there that
//!   the server has not seen yet (files created here, still staged).
//! - The check never blocks a move it cannot decide: when the listing fails (a server away,
//!   more than [`TREE_CHECK_MAX`] entries below), the move goes on as before and the log
//!   says why.
//!
//! [`checked_path`]: super::checked_path

use super::{CellsFs, FsError, FsResult, MAX_KEY_BYTES};
use crate::api::S3Entry;

/// Entries below a moved folder read to check their path lengths; a bigger tree moves
/// unchecked (its listing would cost more than the move).
const TREE_CHECK_MAX: usize = 100_000;

impl CellsFs {
    /// Refuse to move folder `from` to `to` when a path below it would then be longer than
    /// the server stores.
    pub(super) async fn check_paths_below_fit(&self, from: &str, to: &str) -> FsResult<()> {
        let growth = to.len().saturating_sub(from.len());
        if growth == 0 {
            return Ok(());
        }
        let below = format!("{from}/");
        let mut longest: Option<String> = {
            let table = self.inner.table.lock().unwrap();
            table
                .by_path
                .keys()
                .filter(|p| p.starts_with(&below))
                .max_by_key(|p| p.len())
                .cloned()
        };
        match self.inner.api.list_tree_s3(from, TREE_CHECK_MAX).await {
            Ok(None) => {
                tracing::warn!(
                    "moving {from}: more than {TREE_CHECK_MAX} entries below it; path lengths \
                     below it not checked"
                );
            }
            Ok(Some(entries)) => {
                for entry in entries {
                    let path = match entry {
                        S3Entry::Object(info) => info.path,
                        S3Entry::Folder(path) => path,
                    };
                    if longest.as_ref().is_none_or(|l| path.len() > l.len()) {
                        longest = Some(path);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(
                    "moving {from}: could not list what is below it to check path lengths \
                     ({err}); moving it unchecked"
                );
            }
        }
        match longest {
            Some(path) if path.len() + growth > MAX_KEY_BYTES => {
                Err(FsError::NameTooLong(format!(
                    "{to}: moving {from} there would make {path} {} bytes long, more than the \
                 {MAX_KEY_BYTES} the server stores",
                    path.len() + growth
                )))
            }
            _ => Ok(()),
        }
    }
}
