//! `cec mount` and `cec unmount`: parse the mount options, pick the server (a profile, the
//! non-persistent flags, or `--demo`'s in-process emulator), then hand over to
//! [`crate::mount`] which owns the lifecycle.
//!
//! Invariants:
//! - `--daemon` returns only once the mount answers (exit 0) or with the daemon's own error
//!   (exit 1); it never leaves a half-started daemon behind.
//! - The cache directory defaults to one per (server, login, mountpoint), so a remount at
//!   the same place finds its write-back journal, data cache and mtime overlay again.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sha2::Digest;

use super::{CliError, GlobalArgs};
use crate::api::CellsApi;
use crate::fs::FsOptions;
use crate::mount::{self, MountPlan, Readiness};

/// Arguments of `cec mount`.
#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// Where to mount (an existing, empty directory); with --status and no MOUNTPOINT, every
    /// cec mount is listed
    #[arg(required_unless_present = "status")]
    pub mountpoint: Option<PathBuf>,
    /// Detach once the mount answers (fails with the reason otherwise)
    #[arg(long, short = 'd')]
    pub daemon: bool,
    /// Show the pending uploads, cache use and recent errors of the mount at MOUNTPOINT (without
    /// MOUNTPOINT: one line per cec mount)
    #[arg(long, conflicts_with_all = ["daemon", "demo"])]
    pub status: bool,
    /// With --status: print the status as JSON (one object, or a list without MOUNTPOINT)
    #[arg(long, requires = "status")]
    pub json: bool,
    /// Start a local Cells emulator with sample content and mount it (no server needed)
    #[arg(long)]
    pub demo: bool,
    /// Refuse every change
    #[arg(long)]
    pub read_only: bool,
    /// Let other users use the mount (non-root: needs user_allow_other in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Mount even over a folder that holds files (they are hidden until the unmount)
    #[arg(long)]
    pub allow_non_empty: bool,
    /// Delete permanently instead of moving to the workspace's recycle bin
    #[arg(long)]
    pub permanent_delete: bool,
    /// Store symbolic links as NAME.rclonelink files holding the target, as rclone --links
    /// does (without it, creating a link fails with "Operation not permitted")
    #[arg(long)]
    pub links: bool,
    /// Owner shown for every file (default: you)
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group shown for every file (default: your group)
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files, in octal
    #[arg(long, default_value = "644", value_parser = parse_mode)]
    pub file_mode: u16,
    /// Permission bits of folders, in octal
    #[arg(long, default_value = "755", value_parser = parse_mode)]
    pub dir_mode: u16,
    /// How long attributes are trusted (e.g. 1s, 500ms)
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub attr_timeout: Duration,
    /// How long a folder listing is trusted (e.g. 5s, 1m)
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub dir_cache_time: Duration,
    /// While the server's change events arrive, how long metadata and listings are trusted
    /// (events invalidate them at once; this bounds what a lost event leaves stale)
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub events_cache_time: Duration,
    /// Do not listen to the server's change events (rely on the TTLs only)
    #[arg(long)]
    pub no_events: bool,
    /// Where staging files, the data cache and the write-back journal live
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Hard cap of the on-disk data cache (e.g. 10G, 500M, 0 to disable)
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub cache_size: u64,
    /// Return from close at once and upload after SECONDS (journalled: survives crashes)
    #[arg(long, value_name = "SECONDS")]
    pub write_back: Option<u64>,
    /// When a file changed on the server since this mount read it: keep both (`copy`: ours
    /// becomes "NAME (conflict HOST DATE TIME).EXT"), last writer wins (`overwrite`), or
    /// close/fsync fail with EBUSY, ours kept in the recovery folder (`fail`)
    #[arg(long, default_value = "copy", value_name = "MODE")]
    pub conflicts: crate::fs::ConflictMode,
    /// A request to the server (not a transfer) that gets no answer in this time fails; with
    /// its retries, an operation gives up after 1.5 times this (e.g. 30s, 1m)
    #[arg(long, default_value = "30s", value_parser = parse_deadline)]
    pub request_timeout: Duration,
    /// A transfer fails when it moves less than --min-transfer-rate over this much waiting
    /// (nothing at all included); a slow transfer that progresses goes on (e.g. 30s, 2m)
    #[arg(long, default_value = "30s", value_parser = parse_deadline)]
    pub transfer_timeout: Duration,
    /// The floor of a transfer's rate, in bytes per second (e.g. 1K, 0: any byte counts)
    #[arg(long, default_value = "1K", value_parser = parse_size)]
    pub min_transfer_rate: u64,
}

/// Arguments of `cec unmount`.
#[derive(Debug, Clone, Args)]
pub struct UnmountArgs {
    /// The mountpoint to unmount
    pub mountpoint: PathBuf,
    /// How long to wait for pending uploads before giving up (e.g. 10m)
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Detach now even if busy: the mount lives on for the processes still using it, and
    /// its daemon finishes pending uploads and exits when the last of them leaves
    #[arg(long, short = 'l')]
    pub lazy: bool,
}

/// A duration that is not zero (`30s`, `2m`, `500ms`).
pub(crate) fn parse_deadline(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("{text:?}: a deadline cannot be zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{text:?} is not a duration such as 30s or 2m: {e}")),
    }
}

fn parse_mode(text: &str) -> Result<u16, String> {
    let digits = text.trim_start_matches("0o");
    match u16::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!("{text:?} is not an octal mode such as 644")),
    }
}

/// `10G`, `500M`, `64k`, `1024` (bytes; powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 10G or 500M"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown unit (use K, M, G or T)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl MountArgs {
    /// The mountpoint (clap requires one unless --status).
    pub fn mountpoint(&self) -> &Path {
        self.mountpoint.as_deref().unwrap_or(Path::new(""))
    }
}

pub fn run_mount(args: MountArgs, global: &GlobalArgs) -> ExitCode {
    if args.status {
        return super::report(match &args.mountpoint {
            Some(m) => show_status(m, args.json),
            None => super::mount_list::show_all(args.json),
        });
    }
    let mut readiness = Readiness::from_env();
    if args.daemon && !readiness.is_daemon_child() {
        return super::report(start_daemon(&args, global));
    }
    // A daemon gets the command line's secrets through a pipe, never argv nor environment.
    let mut global = global.clone();
    match mount::handoff::receive_secrets() {
        Ok(Some(secrets)) => {
            global.token = secrets.token.or(global.token);
            global.password = secrets.password.or(global.password);
        }
        Ok(None) => {}
        Err(e) => {
            readiness.failed(&e);
            return super::report(Err(CliError::failure(e)));
        }
    }
    let global = &global;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().max(2)))
        .enable_all()
        .thread_name("cec-mount")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let message = format!("cannot start the async runtime: {e}");
            readiness.failed(&message);
            return super::report(Err(CliError::failure(message)));
        }
    };
    let result = runtime.block_on(async {
        if args.demo {
            run_demo(&args, &mut readiness).await
        } else {
            let plan = match plan_for_profile(&args, global).await {
                Ok(plan) => plan,
                Err(e) => {
                    readiness.failed(&e.message);
                    return Err(e);
                }
            };
            mount::run(plan, &mut readiness)
                .await
                .map_err(|e| CliError::failure(format!("{e:#}")))
        }
    });
    // Uploads and the emulator are done; do not wait for stray blocking tasks.
    runtime.shutdown_timeout(Duration::from_secs(2));
    super::report(result)
}

pub fn run_unmount(args: UnmountArgs, _global: &GlobalArgs) -> ExitCode {
    let result = mount::unmount(&args.mountpoint, args.timeout, args.lazy)
        .map(|done| eprintln!("cec: {}", done.describe(&args.mountpoint)))
        .map_err(|e| CliError::failure(format!("{e:#}")));
    super::report(result)
}

fn show_status(mountpoint: &Path, json: bool) -> Result<(), CliError> {
    let status =
        mount::query_status(mountpoint).map_err(|e| CliError::failure(format!("{e:#}")))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("a status is JSON")
        );
    } else {
        print!("{status}");
    }
    Ok(())
}

fn start_daemon(args: &MountArgs, global: &GlobalArgs) -> Result<(), CliError> {
    // The daemon would fail the same way; say it before forking.
    mount::check_before_daemon(args.mountpoint(), args.allow_non_empty)
        .map_err(|e| CliError::failure(format!("{e:#}")))?;
    let secrets = mount::handoff::Secrets {
        token: global.token.clone(),
        password: global.password.clone(),
    };
    let pid = mount::spawn_daemon(args.mountpoint(), Duration::from_secs(120), &secrets)
        .map_err(|e| CliError::failure(format!("{e:#}")))?;
    let log = mount::daemon_log_path(args.mountpoint())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    eprintln!(
        "cec: mounted at {} (daemon pid {pid}, log {log}); stop with `cec unmount {}`",
        args.mountpoint().display(),
        args.mountpoint().display()
    );
    Ok(())
}

/// The HTTP client's options from the command line: the deadlines.
fn http_options(args: &MountArgs) -> crate::api::http::HttpOptions {
    crate::api::http::HttpOptions {
        deadlines: crate::api::deadline::Deadlines {
            request: args.request_timeout,
            transfer: args.transfer_timeout,
            min_rate: args.min_transfer_rate,
        },
        ..crate::api::http::HttpOptions::default()
    }
}

/// The core's options from the command line.
fn fs_options(args: &MountArgs, cache_dir: PathBuf) -> FsOptions {
    let mut options = FsOptions::new(cache_dir);
    options.uid = args.uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    options.gid = args.gid.unwrap_or_else(|| nix::unistd::getegid().as_raw());
    options.file_mode = args.file_mode;
    options.dir_mode = args.dir_mode;
    options.read_only = args.read_only;
    options.permanent_delete = args.permanent_delete;
    options.links = args.links;
    options.attr_timeout = args.attr_timeout;
    options.dir_cache_time = args.dir_cache_time;
    options.events_cache_time = args.events_cache_time;
    options.cache_size = args.cache_size;
    options.write_back = args.write_back.map(Duration::from_secs);
    options.conflicts = args.conflicts;
    options
}

/// `~/.cache/cec/mounts/<host>-<hash of server, login, mountpoint>` unless `--cache-dir`
/// (macOS: `~/Library/Caches/com.pydio.cec/mounts/...`, from the same `ProjectDirs`).
fn default_cache_dir(server: &str, login: &str, mountpoint: &Path) -> Result<PathBuf, CliError> {
    let base = directories::ProjectDirs::from("com", "pydio", "cec")
        .map(|d| d.cache_dir().to_path_buf())
        .ok_or_else(|| {
            CliError::failure("cannot find a cache directory (no home?): pass --cache-dir")
        })?;
    let abs = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let mut hasher = sha2::Sha256::new();
    hasher.update(server.as_bytes());
    hasher.update([0]);
    hasher.update(login.as_bytes());
    hasher.update([0]);
    hasher.update(abs.as_os_str().as_encoded_bytes());
    let host: String = server
        .split("://")
        .nth(1)
        .unwrap_or(server)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Ok(base
        .join("mounts")
        .join(format!("{host}-{}", hex::encode(&hasher.finalize()[..6]))))
}

fn fs_name(login: &str, server: &str) -> String {
    let host = server.split("://").nth(1).unwrap_or(server);
    if login.is_empty() {
        format!("cells:{host}")
    } else {
        format!("cells:{login}@{host}")
    }
}

async fn plan_for_profile(args: &MountArgs, global: &GlobalArgs) -> Result<MountPlan, CliError> {
    let session = super::connect_with(global, http_options(args)).await?;
    let websocket_endpoint = session
        .bootconf
        .get("ENDPOINT_WEBSOCKET")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let cache_dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir(&session.base_url, &session.login, args.mountpoint())?,
    };
    let api: Arc<dyn CellsApi> = session.api.clone();
    Ok(MountPlan {
        mountpoint: args.mountpoint().to_path_buf(),
        server: session.base_url.clone(),
        profile: session.profile_id.clone(),
        api,
        tokens: session.tokens.clone(),
        fs_options: fs_options(args, cache_dir),
        allow_other: args.allow_other,
        allow_non_empty: args.allow_non_empty,
        events: !args.no_events,
        websocket_endpoint,
        skip_verify: session.skip_verify,
        fs_name: fs_name(&session.login, &session.base_url),
        ready_timeout: Duration::from_secs(30),
    })
}

/// The folder of a demo's data and cache, per mountpoint (so a demo remounted at the same
/// place finds its changes again).
fn demo_key(mountpoint: &Path) -> String {
    let abs = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let name: String = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect();
    let digest = sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes());
    format!("{name}-{}", hex::encode(&digest[..6]))
}

/// The login `--demo` mounts as.
pub const DEMO_LOGIN: &str = "alice";

/// `--demo`: an in-process cells-emu on loopback with sample content (kept in the cache
/// directory, so changes survive), a fresh token, and a mount of it. Each demo has its own
/// data and cache (`demo/<hash of the mountpoint>` unless `--cache-dir`), 0700 and locked
/// for its whole life: two demos never share a server's files or a journal.
async fn run_demo(args: &MountArgs, readiness: &mut Readiness) -> Result<(), CliError> {
    let fail = |readiness: &mut Readiness, message: String| {
        readiness.failed(&message);
        CliError::failure(message)
    };
    let base = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => directories::ProjectDirs::from("com", "pydio", "cec")
            .map(|d| d.cache_dir().join("demo").join(demo_key(args.mountpoint())))
            .ok_or_else(|| {
                fail(
                    readiness,
                    "cannot find a cache directory: pass --cache-dir".into(),
                )
            })?,
    };
    // Held until the demo ends: its server data is this demo's alone (the mount then locks
    // its own cache below).
    let _demo_lock = mount::cache_dir::prepare_cache_dir(&base)
        .and_then(|()| mount::cache_dir::lock_cache_dir(&base, args.mountpoint()))
        .and_then(|lock| mount::cache_dir::prepare_cache_dir(&base.join("server")).map(|()| lock))
        .map_err(|e| fail(readiness, format!("{e:#}")))?;
    let mut config = cells_emu::EmuConfig::for_tests(base.join("server"));
    // Random passwords for this demo alone (the server listens on 127.0.0.1, which every
    // local user can reach): the mount uses a token minted here, nobody needs them.
    for (_, password) in &mut config.users {
        *password = format!("{:032x}", rand::random::<u128>());
    }
    config.sample = true;
    config.faults = false;
    let emulator = cells_emu::start(config)
        .await
        .map_err(|e| fail(readiness, format!("cannot start the demo server: {e:#}")))?;
    let token = emulator
        .state
        .auth
        .mint_pat(
            DEMO_LOGIN,
            cells_emu::auth::PatExpiry::AutoRefresh(Duration::from_secs(24 * 3600)),
        )
        .map_err(|e| fail(readiness, format!("cannot create a demo token: {e:#}")))?;
    let tokens: Arc<dyn crate::auth::TokenSource> = Arc::new(crate::auth::StaticToken::new(
        token,
        "restart `cec mount --demo`",
    ));
    let api =
        crate::api::http::HttpCellsApi::new(&emulator.url, tokens.clone(), http_options(args))
            .map_err(|e| fail(readiness, format!("cannot build the HTTP client: {e}")))?;
    let api: Arc<dyn CellsApi> = Arc::new(api);
    eprintln!(
        "cec: demo server at {} (user {DEMO_LOGIN}, data in {})",
        emulator.url,
        base.join("server").display()
    );
    let plan = MountPlan {
        mountpoint: args.mountpoint().to_path_buf(),
        server: emulator.url.clone(),
        profile: Some("demo".into()),
        api,
        tokens,
        fs_options: fs_options(args, base.join("cache")),
        allow_other: args.allow_other,
        allow_non_empty: args.allow_non_empty,
        events: !args.no_events,
        websocket_endpoint: None,
        skip_verify: false,
        fs_name: fs_name(DEMO_LOGIN, "demo"),
        ready_timeout: Duration::from_secs(30),
    };
    let result = mount::run(plan, readiness).await;
    emulator.stop().await;
    result.map_err(|e| CliError::failure(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes_parse() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
        assert_eq!(parse_mode("644").unwrap(), 0o644);
        assert_eq!(parse_mode("0o750").unwrap(), 0o750);
        assert!(parse_mode("9").is_err());
    }

    #[test]
    fn cache_dirs_differ_per_mountpoint_and_user() {
        let a = default_cache_dir("https://h:443", "alice", Path::new("/mnt/a")).unwrap();
        let b = default_cache_dir("https://h:443", "alice", Path::new("/mnt/b")).unwrap();
        let c = default_cache_dir("https://h:443", "bob", Path::new("/mnt/a")).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            default_cache_dir("https://h:443", "alice", Path::new("/mnt/a")).unwrap()
        );
    }
}
