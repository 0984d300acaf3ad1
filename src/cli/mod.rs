//! The command line: the clap definition (global flags accepted anywhere, each with its
//! `CEC_*` variable, as in the official client), the dispatch to one file per command group,
//! [`connect`] that turns flags/environment/active profile into a ready [`Session`], and the
//! one place where errors become a sentence and an exit code.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 not found (listed in the README, "Exit codes").
//! A command whose stdout reader goes away ends quietly by SIGPIPE (the mount daemon
//! excepted; see `quiet_on_closed_stdout`).
//!
//! Precedence (the official client's): `--url` with a token (`--token`, `--token-file`,
//! `CEC_TOKEN`, `CEC_TOKEN_FILE`) or with `--login` + `--password` makes a non-persistent
//! session; otherwise the active profile of the config file is used. Flags beat variables.
//!
//! Invariants: secrets never go to stdout/stderr or logs; [`GlobalArgs`]' `Debug` hides them.

pub mod admin;
pub mod completion;
pub mod config;
pub mod credentials;
pub mod doc;
pub mod files;
pub mod get;
pub mod info;
pub mod journal;
pub mod mount;
pub mod mount_helper;
pub mod mount_list;
pub mod scp;
pub mod server_url;
pub mod share;
pub mod tools;
pub mod update;
pub mod version;
pub mod versions;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::api::ApiError;
use crate::api::http::{HttpCellsApi, HttpOptions, build_http_client, probe_server};
use crate::auth::{StaticToken, TokenSource, token_source_for_profile};
use crate::config::{ConfigError, ConfigStore, resolve_config_path};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: any failure.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: what was asked for does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;

/// `cec`: a client for Pydio Cells.
#[derive(Debug, Parser)]
#[command(
    name = "cec",
    version,
    about = "Mount a Pydio Cells server as a local filesystem, and manage it from the command line",
    long_about = "cec talks to a Pydio Cells server: `cec mount` mounts it as a local filesystem, \
and the other commands configure profiles and manage files.\n\n\
Every global flag can also be given as an environment variable: upper case, CEC_ prefix \
(CEC_URL, CEC_TOKEN, CEC_TOKEN_FILE, CEC_CONFIG, CEC_SKIP_VERIFY, CEC_SKIP_KEYRING, CEC_NO_CACHE, \
CEC_LOG, CEC_LOGIN, CEC_PASSWORD). Prefer the variables or --token-file to --token and \
--password, which other users can see in the process list."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags every command accepts, anywhere on the command line (shown under their own
/// heading in every `--help`).
#[derive(Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The full URL of the target server (non-persistent mode, with a token or login/password)
    #[arg(long, short = 'u', global = true, env = "CEC_URL", value_name = "URL")]
    pub url: Option<String>,
    /// A valid Personal Access Token (visible in `ps`: prefer CEC_TOKEN or --token-file)
    #[arg(
        long,
        short = 't',
        global = true,
        env = "CEC_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Read the Personal Access Token from this file (first line)
    #[arg(long, global = true, env = "CEC_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The user login, for login/password authentication only
    #[arg(long, global = true, env = "CEC_LOGIN", value_name = "LOGIN")]
    pub login: Option<String>,
    /// The user password, for login/password authentication only (prefer CEC_PASSWORD)
    #[arg(
        long,
        global = true,
        env = "CEC_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: Option<String>,
    /// Location of the config directory (holding config.json), or of the config file itself
    #[arg(long, global = true, env = "CEC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Use this stored profile (its id, `user@host:port`) instead of the active one
    #[arg(long, global = true, env = "CEC_PROFILE", value_name = "ID")]
    pub profile: Option<String>,
    /// Skip TLS certificate verification (not recommended)
    #[arg(long, global = true, env = "CEC_SKIP_VERIFY", alias = "skip_verify")]
    pub skip_verify: bool,
    /// Never use the keyring: secrets are stored in clear text in the config file
    #[arg(long, global = true, env = "CEC_SKIP_KEYRING", alias = "skip_keyring")]
    pub skip_keyring: bool,
    /// Force a token refresh at each call
    #[arg(long, global = true, env = "CEC_NO_CACHE", alias = "no_cache")]
    pub no_cache: bool,
    /// Log level: error, warn, info, debug or trace
    #[arg(
        long,
        global = true,
        env = "CEC_LOG",
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log: String,
}

impl std::fmt::Debug for GlobalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalArgs")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("token_file", &self.token_file)
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("config", &self.config)
            .field("profile", &self.profile)
            .field("skip_verify", &self.skip_verify)
            .field("skip_keyring", &self.skip_keyring)
            .field("no_cache", &self.no_cache)
            .field("log", &self.log)
            .finish()
    }
}

impl GlobalArgs {
    /// The profile store `--config` designates.
    pub fn config_store(&self) -> ConfigStore {
        ConfigStore::new(
            resolve_config_path(self.config.as_deref()),
            self.skip_keyring,
        )
    }

    /// The token given by `--token`, `CEC_TOKEN`, `--token-file` or `CEC_TOKEN_FILE`.
    pub fn resolved_token(&self) -> Result<Option<String>, CliError> {
        if let Some(t) = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(t.to_string()));
        }
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::failure(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                return Err(CliError::failure(format!(
                    "the token file {} is empty",
                    path.display()
                )));
            }
            return Ok(Some(token));
        }
        // Under systemd, a token handed over with `LoadCredential=cec-token:...`.
        credentials::token_from_credentials()
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage authentication profiles (add, ls, use, rm, check-keyring, relog)
    Config(config::ConfigArgs),
    /// Add a profile (older spelling of `config add`): oauth, token or login
    Configure(config::ConfigureArgs),
    /// Show the active profile and the server it points to
    Info,
    /// Forget every profile and its secrets (file and keyring)
    Clear(config::ClearArgs),
    /// Show the version of cec (and of the server of the active profile)
    Version,
    /// Print a shell completion script (bash, zsh, fish, ...)
    Completion(completion::CompletionArgs),
    /// Generate the documentation (Markdown or man pages) from the command definitions
    Doc(doc::DocArgs),
    /// Mount a Cells server as a local filesystem
    Mount(mount::MountArgs),
    /// Unmount a mounted Cells filesystem
    Unmount(mount::UnmountArgs),
    /// List files and folders on the server (workspaces at the root)
    Ls(files::LsArgs),
    /// Create folders on the server
    Mkdir(files::MkdirArgs),
    /// Move or rename files and folders on the server
    Mv(files::MoveArgs),
    /// Copy files and folders on the server
    Cp(files::MoveArgs),
    /// Delete files and folders (to the recycle bin unless -p)
    Rm(files::RmArgs),
    /// Restore files and folders from the recycle bin (--version: an older version of a file)
    Restore(files::RestoreArgs),
    /// List the versions of a file (newest first)
    Versions(versions::VersionsArgs),
    /// Copy files between this machine and the server (cells://workspace/path)
    Scp(scp::ScpArgs),
    /// Create and manage public links (ls, show, update, rm)
    Share(share::ShareArgs),
    /// Download a public link's file or folder (no profile needed)
    Get(get::GetArgs),
    /// Local helpers (hash)
    Tools(tools::ToolsArgs),
    /// Identity management (admin): users, groups, roles, workspaces, ACLs
    Idm(admin::IdmArgs),
    /// Storage management (admin): datasources
    Storage(admin::StorageArgs),
    /// Replace this binary with the newest signed release (checks its signature; --check only reports)
    Update(update::UpdateArgs),
}

/// A failure as the user sees it: one sentence and an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl CliError {
    pub fn failure(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: EXIT_ERROR,
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }

    pub fn not_found(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: EXIT_NOT_FOUND,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<ApiError> for CliError {
    fn from(e: ApiError) -> CliError {
        let code = match e {
            ApiError::NotFound(_) => EXIT_NOT_FOUND,
            _ => EXIT_ERROR,
        };
        let message = match &e {
            ApiError::Network(m) if is_tls_failure(m) => format!(
                "the server's TLS certificate cannot be verified ({m}); if you trust this server, use --skip-verify"
            ),
            ApiError::Network(m) => format!("cannot reach the server: {m}"),
            _ => undoubled(&e.to_string()),
        };
        CliError { message, code }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> CliError {
        CliError::failure(e.to_string())
    }
}

/// `permission denied: x: permission denied: ...` (our kind, then the server's words saying
/// the same) reads as a stutter: the kind is dropped when the rest already says it.
fn undoubled(message: &str) -> String {
    match message.split_once(": ") {
        Some((kind, rest)) if rest.to_lowercase().contains(&kind.to_lowercase()) => {
            rest.to_string()
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_says_its_kind_once() {
        let e = CliError::from(ApiError::Forbidden(
            "team-docs/x: permission denied: no write access".into(),
        ));
        assert_eq!(e.message, "team-docs/x: permission denied: no write access");
        let e = CliError::from(ApiError::Forbidden(
            "team-docs/x: read-only workspace".into(),
        ));
        assert_eq!(
            e.message,
            "permission denied: team-docs/x: read-only workspace"
        );
    }
}

fn is_tls_failure(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("certificate") || m.contains("tls") || m.contains("unknownissuer")
}

/// Print the error as one line on stderr and turn it into an exit code.
pub fn report(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", e.message.trim_end_matches('.'));
            ExitCode::from(e.code)
        }
    }
}

/// A ready connection: the server, the client, the tokens and who we are.
#[derive(Clone)]
pub struct Session {
    /// `scheme://host[:port]`.
    pub base_url: String,
    pub api: Arc<HttpCellsApi>,
    pub tokens: Arc<dyn TokenSource>,
    /// The user's login (may be empty in non-persistent PAT mode until learnt).
    pub login: String,
    /// The stored profile used, `None` in non-persistent mode.
    pub profile_id: Option<String>,
    pub skip_verify: bool,
    /// The shared HTTP client (for the events websocket's TLS settings and the like).
    pub http: reqwest::Client,
    /// The server's public bootconf (`GET /a/frontend/bootconf`, fetched once when
    /// connecting, to check that the URL is a Cells server): the mount reads its websocket
    /// endpoint here rather than asking again.
    pub bootconf: serde_json::Value,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("base_url", &self.base_url)
            .field("login", &self.login)
            .field("profile_id", &self.profile_id)
            .finish_non_exhaustive()
    }
}

/// Turn the global flags / environment / active profile into a [`Session`], after checking
/// that the server answers as a Cells server (one unauthenticated request).
pub async fn connect(global: &GlobalArgs) -> Result<Session, CliError> {
    connect_with(global, HttpOptions::default()).await
}

/// [`connect`] with explicit HTTP options (retry and poll tuning).
pub async fn connect_with(
    global: &GlobalArgs,
    mut options: HttpOptions,
) -> Result<Session, CliError> {
    let token = global.resolved_token()?;
    let non_persistent_url = global
        .url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .map(crate::config::clean_url)
        .transpose()
        .map_err(CliError::usage)?;
    let (base_url, tokens, login, profile_id, skip_verify, http) = if let Some(url) =
        non_persistent_url
            .clone()
            .filter(|_| token.is_some() || (global.login.is_some() && global.password.is_some()))
    {
        let http = build_http_client(global.skip_verify)?;
        if let Some(token) = token {
            // The advice names where this token came from.
            let hint = match (&global.token, &global.token_file) {
                (Some(t), _) if !t.trim().is_empty() => {
                    "check --token / CEC_TOKEN (create a new Personal Access Token on the server)"
                        .to_string()
                }
                (_, Some(file)) => format!(
                    "check the token in {} (--token-file / CEC_TOKEN_FILE; create a new Personal Access Token on the server)",
                    file.display()
                ),
                _ => "check the cec-token credential given by systemd (create a new Personal Access Token on the server)".to_string(),
            };
            let tokens: Arc<dyn TokenSource> = Arc::new(StaticToken::new(token, hint));
            (url, tokens, String::new(), None, global.skip_verify, http)
        } else {
            let login = global.login.clone().unwrap_or_default();
            let password = global.password.clone().unwrap_or_default();
            let tokens: Arc<dyn TokenSource> = Arc::new(crate::auth::SessionTokenSource::new(
                http.clone(),
                &url,
                &login,
                &password,
            ));
            (url, tokens, login, None, global.skip_verify, http)
        }
    } else {
        if non_persistent_url.is_some() {
            return Err(CliError::usage(
                "--url needs a token (--token, --token-file, CEC_TOKEN) or --login with --password",
            ));
        }
        let store = global.config_store();
        let profile = tokio::task::spawn_blocking({
            let store = store.clone();
            let id = global.profile.clone();
            move || store.load_profile(id.as_deref())
        })
        .await
        .map_err(|e| CliError::failure(e.to_string()))??;
        let id = profile.id();
        let skip_verify = profile.skip_verify || global.skip_verify;
        let http = build_http_client(skip_verify)?;
        let persist = ConfigStore::new(store.path().to_path_buf(), false);
        let tokens = token_source_for_profile(http.clone(), &profile, Some((persist, id.clone())));
        let base = crate::config::clean_url(&profile.url).map_err(CliError::failure)?;
        (
            base,
            tokens,
            profile.user.clone(),
            Some(id),
            skip_verify,
            http,
        )
    };
    let bootconf = probe_server(&http, &base_url).await?;
    options.client = Some(http.clone());
    options.skip_verify = skip_verify;
    let api = Arc::new(HttpCellsApi::new(&base_url, tokens.clone(), options)?);
    if global.no_cache {
        // Force a refresh now, as the official client does at each call.
        let current = tokens.token().await?;
        if profile_id.is_some() {
            let _ = tokens.refresh_after_unauthorized(&current).await;
        }
    }
    let login = if login.is_empty() {
        api.session_login().await?
    } else {
        login
    };
    Ok(Session {
        base_url,
        api,
        tokens,
        login,
        profile_id,
        skip_verify,
        http,
        bootconf,
    })
}

/// Set up logging to stderr at `level` for cec (and the in-process emulator, whose request
/// log starts at `debug`); other crates
/// (HTTP, TLS, signing, D-Bus) are capped at `warn` so that nothing they trace (headers,
/// signing inputs) can reach the output.
pub fn init_logging(level: &str) {
    let level = match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "warn" | "warning" => "warn",
        "error" => "error",
        "off" => "off",
        _ => "info",
    };
    // The in-process emulator (`--demo`) logs one line per request at info: useful when it
    // runs as its own server, noise in a demo's terminal; shown from `debug` on.
    let requests = if matches!(level, "debug" | "trace") {
        level
    } else {
        "warn"
    };
    let directives =
        format!("warn,rustls=off,cec={level},cells_emu={level},cells_emu::rest={requests}");
    if journal::stderr_is_journal() {
        // Under systemd: priority-prefixed lines, no timestamps (the journal adds them).
        journal::init(&directives);
        return;
    }
    let filter = tracing_subscriber::EnvFilter::new(directives);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Run an async command on a fresh runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the async runtime")
        .block_on(future)
}

/// clap writes the arguments it found into an error's usage line, the ones `CEC_*`
/// variables gave included: `Usage: cec scp --url <URL> --token <TOKEN> <SOURCE> <TARGET>`
/// reads as if they were required. The same error, parsed again without those variables,
/// shows the command as its `--help` does (kept only if it is the same kind of error).
fn usage_without_environment(error: clap::Error) -> clap::Error {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return error;
    }
    let vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("CEC_"))
        .collect();
    if vars.is_empty() {
        return error;
    }
    for k in &vars {
        // SAFETY: still single-threaded (nothing started yet); the process exits next.
        unsafe { std::env::remove_var(k) };
    }
    match Cli::try_parse() {
        Err(again) if again.kind() == error.kind() => again,
        _ => error,
    }
}

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let e = usage_without_environment(e);
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    init_logging(&cli.global.log);
    run(cli)
}

/// Let a closed reader end a command quietly (`cec completion zsh | head -1`), as `ls` does:
/// by SIGPIPE. Rust ignores SIGPIPE, so a write to a gone reader is an error and `println!`
/// panics on it; a panic hook turns exactly that panic (its message names the broken pipe
/// and stdout is a pipe without a reader) into death by SIGPIPE, without a word. SIGPIPE
/// itself stays ignored: a server closing a socket mid-write must stay an error (sockets
/// written without MSG_NOSIGNAL would otherwise kill the process). Not for the mount daemon.
fn quiet_on_closed_stdout(command: &Command) {
    if matches!(command, Command::Mount(a) if !a.status) {
        return;
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if (text.contains("Broken pipe") || text.contains("BrokenPipe")) && stdout_reader_gone() {
            // SAFETY: restoring the default action, then raising the signal it is for.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
        default_hook(info);
    }));
}

/// Whether stdout is a pipe or socket whose reader went away.
fn stdout_reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: 1,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & libc::POLLERR != 0
}

/// Dispatch a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    quiet_on_closed_stdout(&cli.command);
    let global = cli.global;
    match cli.command {
        Command::Config(args) => report(block_on(config::run_config(args, &global))),
        Command::Configure(args) => report(block_on(config::run_configure(args, &global))),
        Command::Info => report(block_on(info::run_info(&global))),
        Command::Clear(args) => report(block_on(config::run_clear(args, &global))),
        Command::Version => report(block_on(version::run_version(&global))),
        Command::Completion(args) => report(completion::run_completion(args)),
        Command::Doc(args) => report(doc::run_doc(args)),
        Command::Mount(args) => mount::run_mount(args, &global),
        Command::Unmount(args) => mount::run_unmount(args, &global),
        Command::Ls(args) => report(block_on(files::run_ls(args, &global))),
        Command::Mkdir(args) => report(block_on(files::run_mkdir(args, &global))),
        Command::Mv(args) => report(block_on(files::run_mv(args, &global))),
        Command::Cp(args) => report(block_on(files::run_cp(args, &global))),
        Command::Rm(args) => report(block_on(files::run_rm(args, &global))),
        Command::Restore(args) => report(block_on(files::run_restore(args, &global))),
        Command::Versions(args) => report(block_on(versions::run_versions(args, &global))),
        Command::Scp(args) => report(block_on(scp::run_scp(args, &global))),
        Command::Share(args) => report(block_on(share::run_share(args, &global))),
        Command::Get(args) => report(block_on(get::run_get(args, &global))),
        Command::Tools(args) => report(tools::run_tools(args)),
        Command::Idm(args) => report(block_on(admin::run_idm(args, &global))),
        Command::Storage(args) => report(block_on(admin::run_storage(args, &global))),
        Command::Update(args) => report(block_on(update::run_update(args))),
    }
}
