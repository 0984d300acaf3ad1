//! `cec scp`: copy files and trees between this machine and the server, with the official
//! client's flags (one side `cells://ws/path` or `cells//ws/path`) and the target naming of
//! scp(1) and cp: the source lands inside TARGET when TARGET is an existing folder or ends
//! with `/` (created when its parent exists); otherwise the copy is named TARGET. An existing
//! item at the destination stops the transfer unless `--force` (replace) or `--update`
//! (send what differs). Plus `--preserve-mtime`, parallel files, ranged parallel downloads
//! and a final summary.
//!
//! Symbolic links (upload): a source named on the command line is followed, as `cp` and
//! `scp` do; links inside a tree are skipped with one line each on stderr, unless
//! `-L`/`--follow-links` (as rsync's and cp's `-L`). With `-l`/`--links`, links are stored as
//! `NAME.rclonelink` files (rclone's convention, what `cec mount --links` shows as links) and
//! recreated on download. A download only ever writes inside the target folder: names from
//! the server are checked, and nothing is written through a link (see [`crate::transfer`]).
//!
//! Invariants: Ctrl-C stops the transfer without leaving a partial file under a final name
//! (the engine's temporary files are removed when its futures are dropped) and says what is
//! left: the parts of an unfinished multipart upload stay on the server, and running the
//! command again resumes them (and says so). Exit code 1 when any file failed, 3 when the
//! source does not exist.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Args;

use super::{CliError, GlobalArgs};
use crate::api::{CellsApi, MIB, UploadOptions};
use crate::sizes::human_size;
use crate::transfer::progress::{Leg, Progress, ProgressMode};
use crate::transfer::{self, TransferError, TransferOptions};

const STANDARD_PREFIX: &str = "cells://";
const COMPLETION_PREFIX: &str = "cells//";

#[derive(Debug, Args)]
#[command(
    after_help = "Naming, as with scp and cp: `cec scp a.txt cells://ws/docs` puts a.txt \
inside docs when docs is a folder, and names the copy docs when nothing is there; a TARGET \
ending with / is always a folder (created if its parent exists). An existing file at the \
destination is replaced only with --force.\n\nSymbolic links (upload): a SOURCE that is a link is followed. Links \
inside a folder are not: each is skipped with a line on stderr, so that a link to, say, ~/.ssh \
is never uploaded by accident; -L/--follow-links uploads what they point to (a link back to a \
folder being copied is still skipped). With -l/--links, links are neither followed nor \
skipped: each is stored as a file NAME.rclonelink holding its target (rclone's --links \
convention; `cec mount --links` shows them as links), and a download recreates such files as \
links. Downloads write only inside the TARGET folder: a name from the server that is not a \
valid file name (., .., containing / or NUL, over 255 bytes) is refused, and nothing is \
written through a symbolic link, whether this download made it or it was there before."
)]
pub struct ScpArgs {
    /// Source: a local path, cells://<workspace>/<path>, or a public link URL (https://<server>/public/<id>)
    pub source: String,
    /// Target: a folder to copy into (existing, or ending with /), or the name of the copy;
    /// cells://<workspace>/<path>, or a local path
    pub target: String,
    /// *DANGER* overwrite mode: items of the same name on the target side are merged or replaced
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Do not show progress bars
    #[arg(short = 'n', long = "no-progress")]
    pub no_progress: bool,
    /// Reduce the refresh frequency of the progress bars
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// No progress bars, one log line per file
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// As --verbose, with debug logs
    #[arg(short = 'w', long = "very-verbose")]
    pub very_verbose: bool,
    /// Files bigger than this size (in MB) are uploaded with a multipart upload
    #[arg(long = "multipart-threshold", default_value_t = 100, value_name = "MB")]
    pub multipart_threshold: u64,
    /// Part size (in MB) of multipart uploads; rounded up to a multiple of 10 MB
    #[arg(long = "part-size", default_value_t = 50, value_name = "MB")]
    pub part_size: u64,
    /// Parts of one file uploaded at once
    #[arg(long = "parts-concurrency", default_value_t = 3)]
    pub parts_concurrency: usize,
    /// Maximum number of parts of one upload (the part size grows to fit)
    #[arg(long = "max-parts-number", default_value_t = 5000)]
    pub max_parts_number: u64,
    /// Attempts per file (or per chunk of a download) before giving up
    #[arg(long = "retry-max-attempts", default_value_t = 5)]
    pub retry_max_attempts: u32,
    /// Accepted for compatibility (no effect: cec never sends whole-file MD5s)
    #[arg(long = "skip-md5", hide = true)]
    pub skip_md5: bool,
    /// Skip files already identical on the target side (same size and Cells hash); merge
    /// into existing folders
    #[arg(long)]
    pub update: bool,
    /// On upload, follow symbolic links inside the source folder (by default they are
    /// skipped, each with a notice)
    #[arg(short = 'L', long = "follow-links", conflicts_with = "links")]
    pub follow_links: bool,
    /// Store symbolic links as NAME.rclonelink files holding their target (as rclone --links)
    /// on upload, and recreate them as links on download
    #[arg(short = 'l', long)]
    pub links: bool,
    /// On download, set local modification times to the server's
    #[arg(long = "preserve-mtime")]
    pub preserve_mtime: bool,
    /// Files transferred at once
    #[arg(long = "files-concurrency", default_value_t = 4)]
    pub files_concurrency: usize,
    /// Parallel ranged GETs for one large download (1 = a single stream)
    #[arg(long = "download-concurrency", default_value_t = 4)]
    pub download_concurrency: usize,
    /// Downloads bigger than this (in MB) use parallel ranged GETs
    #[arg(
        long = "ranged-threshold",
        default_value_t = 64,
        value_name = "MB",
        hide = true
    )]
    pub ranged_threshold: u64,
    /// Size (in MB) of one ranged GET of a parallel download
    #[arg(
        long = "download-chunk-size",
        default_value_t = 16,
        value_name = "MB",
        hide = true
    )]
    pub download_chunk_size: u64,
    /// A transfer fails when it moves less than --min-transfer-rate over this much waiting
    /// on the server (nothing at all included); a slow transfer that progresses goes on
    #[arg(long, default_value = "30s", value_parser = super::mount::parse_deadline)]
    pub transfer_timeout: std::time::Duration,
    /// Download this version of the file (an id from `cec versions PATH`) instead of its
    /// current content
    #[arg(long, value_name = "ID")]
    pub version: Option<String>,
    /// The floor of a transfer's rate, in bytes per second (e.g. 1K, 0: any byte counts)
    #[arg(long, default_value = "1K", value_parser = super::mount::parse_size)]
    pub min_transfer_rate: u64,
}

impl ScpArgs {
    fn options(&self) -> Result<TransferOptions, CliError> {
        if self.part_size == 0 || self.max_parts_number == 0 || self.parts_concurrency == 0 {
            return Err(CliError::usage(
                "--part-size, --max-parts-number and --parts-concurrency must be positive",
            ));
        }
        let part = self.part_size.div_ceil(10) * 10 * MIB;
        Ok(TransferOptions {
            upload: UploadOptions {
                multipart_threshold: self.multipart_threshold.saturating_mul(MIB),
                part_size: part,
                parts_concurrency: self.parts_concurrency,
                max_parts: self.max_parts_number,
                content_type: None,
                sent: None,
            },
            force: self.force,
            update: self.update,
            preserve_mtime: self.preserve_mtime,
            files_concurrency: self.files_concurrency.max(1),
            range_concurrency: self.download_concurrency.max(1),
            ranged_threshold: self.ranged_threshold.saturating_mul(MIB),
            range_chunk: self.download_chunk_size.max(1).saturating_mul(MIB),
            retry_max_attempts: self.retry_max_attempts.max(1),
            follow_links: self.follow_links,
            links: self.links,
            ..TransferOptions::default()
        })
    }
}

/// Which way a transfer goes; `into` when the target ends with `/` (a folder, as in cp).
#[derive(Debug, PartialEq, Eq)]
pub enum Direction {
    Upload {
        local: PathBuf,
        remote: String,
        into: bool,
    },
    Download {
        remote: String,
        local: PathBuf,
        into: bool,
    },
}

/// Apply the official client's prefix rules: exactly one side is remote.
pub fn direction(source: &str, target: &str) -> Result<Direction, CliError> {
    let remote_of = |s: &str| {
        s.strip_prefix(STANDARD_PREFIX)
            .or_else(|| s.strip_prefix(COMPLETION_PREFIX))
            .map(|p| p.trim_matches('/').to_string())
    };
    match (remote_of(source), remote_of(target)) {
        (Some(_), Some(_)) => Err(CliError::usage(
            "both sides are on the server: use `cec cp` to copy on the server side",
        )),
        (None, None) => Err(CliError::usage(
            "both sides are local: prefix the server side with cells:// (or cells//)",
        )),
        (None, Some(remote)) => Ok(Direction::Upload {
            local: PathBuf::from(source),
            remote,
            into: target.ends_with('/'),
        }),
        (Some(remote), None) => Ok(Direction::Download {
            remote,
            local: PathBuf::from(target),
            into: target.ends_with('/') || target.ends_with("/.") || target == ".",
        }),
    }
}

pub async fn run_scp(args: ScpArgs, global: &GlobalArgs) -> Result<(), CliError> {
    if super::get::is_link_url(&args.source) {
        // A public link as the source: `cec get` does it, without a profile.
        let deadlines = crate::api::deadline::Deadlines {
            transfer: args.transfer_timeout,
            min_rate: args.min_transfer_rate,
            ..Default::default()
        };
        let verbose = args.verbose || args.very_verbose;
        let options = super::get::GetOptions {
            force: args.force,
            preserve_mtime: args.preserve_mtime,
            progress: Some(ProgressMode::choose(args.no_progress, args.quiet, verbose)),
            deadlines,
            ..Default::default()
        };
        return super::get::download_link(&args.source, &args.target, options, global).await;
    }
    let dir = direction(&args.source, &args.target)?;
    if let Some(id) = &args.version {
        let Direction::Download {
            remote,
            local,
            into,
        } = &dir
        else {
            return Err(CliError::usage(
                "--version downloads a version: cec scp --version ID cells://PATH LOCAL",
            ));
        };
        return super::versions::run_scp_version(remote, local, *into, id, args.force, global)
            .await;
    }
    let options = args.options()?;
    if let Direction::Upload { local, .. } = &dir
        && !local.exists()
    {
        return Err(CliError::not_found(format!(
            "{} does not exist",
            local.display()
        )));
    }
    let mut http = crate::api::http::HttpOptions::default();
    http.deadlines.transfer = args.transfer_timeout;
    http.deadlines.min_rate = args.min_transfer_rate;
    let session = super::connect_with(global, http).await?;
    let api: Arc<dyn CellsApi> = session.api.clone();
    let verbose = args.verbose || args.very_verbose;
    let progress = Progress::new(ProgressMode::choose(args.no_progress, args.quiet, verbose));
    let work = async {
        match &dir {
            Direction::Upload {
                local,
                remote,
                into,
            } => {
                if verbose {
                    eprintln!("Uploading {} to cells://{remote}", local.display());
                }
                transfer::upload(
                    api.clone(),
                    Some(session.api.clone()),
                    local,
                    remote,
                    *into,
                    &options,
                    &progress,
                )
                .await
            }
            Direction::Download {
                remote,
                local,
                into,
            } => {
                if verbose {
                    eprintln!("Downloading cells://{remote} to {}", local.display());
                }
                transfer::download(api.clone(), remote, local, *into, &options, &progress).await
            }
        }
    };
    let mut work = Box::pin(work);
    let result = tokio::select! {
        r = &mut work => r,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the transfer removes the partial downloads (see `transfer`).
            drop(work);
            return Err(interrupted(&progress, &dir));
        }
    };
    let summary = result.map_err(|e| match e {
        TransferError::NotFound(m) => CliError::not_found(m),
        TransferError::Api(a) => CliError::from(a),
        other => CliError::failure(other.to_string()),
    })?;
    for n in &summary.notices {
        eprintln!("Skipped: {n}");
    }
    for f in &summary.failures {
        eprintln!("Failed: {f}");
    }
    eprintln!("{}", summary.line());
    if summary.failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "{} file(s) could not be transferred",
            summary.failures.len()
        )))
    }
}

/// What an interruption leaves, said truthfully: completed files are in place, partial
/// downloads are removed, a single-PUT upload leaves nothing, a multipart upload leaves its
/// parts (and a placeholder) on the server, which a re-run resumes.
fn interrupted(progress: &Progress, dir: &Direction) -> CliError {
    progress.clear();
    let (flights, completed) = progress.in_flight();
    let mut resumable = false;
    for f in &flights {
        let line = match f.leg {
            Leg::Download => format!(
                "cells://{}: not downloaded; its partial local copy was removed",
                f.remote
            ),
            Leg::Put => format!(
                "cells://{}: not uploaded; nothing of it is kept on the server",
                f.remote
            ),
            Leg::Multipart => {
                resumable = true;
                let done = f.moved.load(Ordering::Relaxed) + f.resumed.load(Ordering::Relaxed);
                format!(
                    "cells://{}: upload stopped after {} of {}; the parts completed stay on \
                     the server, with an unfinished placeholder under that name (not a usable \
                     file yet)",
                    f.remote,
                    human_size(done.min(f.size)),
                    human_size(f.size)
                )
            }
        };
        eprintln!("{line}");
    }
    let folder = match dir {
        Direction::Upload { local, .. } => local.is_dir(),
        Direction::Download { .. } => false,
    };
    let mut message = format!(
        "interrupted; {completed} file{} completed before are in place",
        if completed == 1 { "" } else { "s" }
    );
    if resumable {
        message.push_str(if folder {
            "; run the same command again with --update to resume (completed files are skipped, \
             unfinished uploads continue from their parts)"
        } else {
            "; run the same command again to resume the upload from its parts"
        });
    }
    CliError::failure(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_side_is_remote() {
        assert_eq!(
            direction("./a", "cells://ws/x/").unwrap(),
            Direction::Upload {
                local: "./a".into(),
                remote: "ws/x".into(),
                into: true
            }
        );
        assert_eq!(
            direction("cells//ws/f.txt", "/tmp").unwrap(),
            Direction::Download {
                remote: "ws/f.txt".into(),
                local: "/tmp".into(),
                into: false
            }
        );
        assert_eq!(direction("a", "b").unwrap_err().code, 2);
        assert_eq!(direction("cells://a", "cells//b").unwrap_err().code, 2);
    }
}
