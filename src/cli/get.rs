//! `cec get URL [LOCAL]`: download what a public link shares (a file, or a folder and
//! everything in it), with no profile and no account, through the link's public WebDAV
//! view ([`crate::api::public_link`]). `cec scp URL LOCAL` does the same.
//!
//! Naming as `cec scp`: into LOCAL when it is an existing folder or ends with `/` (the
//! current folder by default), else as LOCAL. A file link lands under the file's name, a
//! folder link under the folder's (the link id when the server does not say it).
//!
//! Invariants: everything the server says is untrusted (names checked before they name a
//! local file, listings bounded, every request bounded in time, see `public_link`); the
//! transfer engine writes each file under a temporary name and renames it once complete, so
//! a failure or Ctrl-C never leaves a partial file under its final name. Each file is one
//! GET from its start (no parallel ranges): a link's download counter counts each file once.
//! The link password is read from the terminal (no echo) or a file, never from argv.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{CliError, GlobalArgs};
use crate::api::CellsApi;
use crate::api::deadline::Deadlines;
use crate::api::http::build_http_client;
use crate::api::public_link::{OpenError, PublicLink};
use crate::transfer::progress::{Progress, ProgressMode};
use crate::transfer::{self, TransferError, TransferOptions};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cec get https://cells.example.com/public/479cc5dbdf8b\n  \
cec get https://cells.example.com/public/479cc5dbdf8b ~/Downloads/\n\n\
No profile is needed: anyone with the URL may download. A password-protected link asks for \
its password on the terminal, or reads it from --password-file. Expired, removed or \
exhausted links end with exit code 3 and the server's reason."
)]
pub struct GetArgs {
    /// The public link: https://<server>/public/<link id>
    pub url: String,
    /// Where to download: a folder (existing, or ending with /) or the name of the copy;
    /// the current folder by default
    pub local: Option<String>,
    /// Read the link's password from this file (first line)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Replace what exists locally under the same name
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Do not show progress bars
    #[arg(short = 'n', long = "no-progress")]
    pub no_progress: bool,
    /// Set local modification times to the server's
    #[arg(long = "preserve-mtime")]
    pub preserve_mtime: bool,
}

/// How `get` (and `scp` from a link) runs.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    pub password_file: Option<PathBuf>,
    pub force: bool,
    pub preserve_mtime: bool,
    pub progress: Option<ProgressMode>,
    pub deadlines: Deadlines,
}

pub async fn run_get(args: GetArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let options = GetOptions {
        password_file: args.password_file,
        force: args.force,
        preserve_mtime: args.preserve_mtime,
        progress: Some(ProgressMode::choose(args.no_progress, false, false)),
        deadlines: Deadlines::default(),
    };
    let local = args.local.unwrap_or_else(|| ".".to_string());
    download_link(&args.url, &local, options, global).await
}

/// Whether a `scp` source is a public link URL.
pub fn is_link_url(source: &str) -> bool {
    (source.starts_with("https://") || source.starts_with("http://"))
        && crate::api::public_link::parse_link_url(source).is_ok()
}

fn read_password_file(file: &PathBuf) -> Result<String, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::failure(format!(
            "cannot read the password file {}: {e}",
            file.display()
        ))
    })?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Open the link, asking for its password on the terminal when it needs one.
async fn open(
    url: &str,
    options: &GetOptions,
    global: &GlobalArgs,
) -> Result<PublicLink, CliError> {
    let http = build_http_client(global.skip_verify)?;
    let mut password = options
        .password_file
        .as_ref()
        .map(read_password_file)
        .transpose()?;
    let mut asked = false;
    loop {
        match PublicLink::open(http.clone(), url, password.clone(), options.deadlines).await {
            Ok(link) => return Ok(link),
            Err(OpenError::PasswordNeeded) => {
                if !std::io::stdin().is_terminal() {
                    return Err(CliError::usage(
                        "this link is protected by a password: give it with --password-file FILE (or run on a terminal to be asked)",
                    ));
                }
                let pw = rpassword::prompt_password("Password of this link: ")
                    .map_err(|e| CliError::failure(format!("cannot read the password: {e}")))?;
                password = Some(pw);
                asked = true;
            }
            Err(OpenError::WrongPassword) => {
                let from = if asked {
                    "typed"
                } else {
                    "in the password file"
                };
                return Err(CliError::failure(format!(
                    "the link refused the password {from}"
                )));
            }
            Err(OpenError::Api(e)) => return Err(e.into()),
        }
    }
}

/// Download the link at `url` to `local` (scp naming).
pub async fn download_link(
    url: &str,
    local: &str,
    options: GetOptions,
    global: &GlobalArgs,
) -> Result<(), CliError> {
    let link = open(url, &options, global).await?;
    let top = link.top().to_string();
    let api: Arc<dyn CellsApi> = Arc::new(link);
    let into = local.ends_with('/') || local.ends_with("/.") || local == ".";
    let target = PathBuf::from(local);
    let topts = TransferOptions {
        force: options.force,
        preserve_mtime: options.preserve_mtime,
        // One GET per file from its start: the link's download counter counts it once.
        ranged_threshold: u64::MAX,
        range_concurrency: 1,
        retry_delay: Duration::from_millis(300),
        ..TransferOptions::default()
    };
    let progress = Progress::new(
        options
            .progress
            .unwrap_or(ProgressMode::choose(false, false, false)),
    );
    let work = transfer::download(api, &top, &target, into, &topts, &progress);
    let mut work = Box::pin(work);
    let result = tokio::select! {
        r = &mut work => r,
        _ = tokio::signal::ctrl_c() => {
            drop(work);
            progress.clear();
            return Err(CliError::failure(
                "interrupted; files completed before are in place, partial downloads were removed",
            ));
        }
    };
    let summary = result.map_err(|e| match e {
        TransferError::NotFound(m) => CliError::not_found(m),
        TransferError::Api(a) => CliError::from(a),
        other => CliError::failure(other.to_string()),
    })?;
    for f in &summary.failures {
        eprintln!("Failed: {f}");
    }
    eprintln!("{}", summary.line());
    if summary.failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "{} item(s) could not be downloaded",
            summary.failures.len()
        )))
    }
}
