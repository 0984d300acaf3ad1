//! The lifecycle of one mount ([`run`]): prepare the mountpoint, take the cache directory's
//! lock, build the core, mount, wait until the mount answers, report readiness, serve the
//! control socket and the events, and on SIGINT/SIGTERM, `cec unmount` or an external
//! `umount`, finish or journal pending uploads and unmount cleanly.
//!
//! Invariants:
//! - "Ready" is announced only after the mount answered ([`super::wait_until_answers`]): a
//!   `--daemon` parent never reports success for a mount that does not work.
//! - A mount that this process made is unmounted by this process on every exit path it
//!   controls (signals, control socket, errors after mounting); `auto_unmount` (fusermount3)
//!   covers the paths it does not (SIGKILL, panics).
//! - The cache directory's lock is held from before the journal is replayed until the
//!   process exits: one daemon per cache directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::cache_dir;
use super::control::{control_socket_path, serve_control_socket};
use super::daemon::Readiness;
use super::detach::unmount_now;
use super::invalidate::CoreEventSink;
use super::mountpoint::{
    auto_unmount_possible, prepare_mountpoint, raise_kernel_read_ahead, wait_until_answers,
};
use super::mounts::absolute;
use super::status::{MountStatus, StatusContext, build_status};

/// Everything a mount needs, assembled by `cec mount` (or a test).
pub struct MountPlan {
    pub mountpoint: PathBuf,
    /// Server base URL (display, and the events URL).
    pub server: String,
    /// The stored profile used (shown by `cec mount --status`).
    pub profile: Option<String>,
    pub api: std::sync::Arc<dyn crate::api::CellsApi>,
    pub tokens: std::sync::Arc<dyn crate::auth::TokenSource>,
    pub fs_options: crate::fs::FsOptions,
    pub allow_other: bool,
    /// Mount even over a folder that holds files (see [`super::prepare_mountpoint`]).
    pub allow_non_empty: bool,
    /// Listen to `/ws/event` (otherwise TTLs only).
    pub events: bool,
    /// `ENDPOINT_WEBSOCKET` from bootconf, when known.
    pub websocket_endpoint: Option<String>,
    /// Accept any TLS certificate on the events websocket too (`--skip-verify`).
    pub skip_verify: bool,
    /// Source name shown by `mount` and `df`.
    pub fs_name: String,
    /// How long to wait for the mount to answer.
    pub ready_timeout: Duration,
}

/// Why the mount is stopping.
#[derive(Debug)]
enum StopReason {
    Signal(&'static str),
    ControlSocket,
    UnmountedFromOutside,
}

/// Mount, serve until asked to stop, then finish uploads and unmount. Reports readiness
/// (or the failure) through `readiness`. Runs on a multi-threaded tokio runtime.
pub async fn run(plan: MountPlan, readiness: &mut Readiness) -> anyhow::Result<()> {
    match mount_and_serve(plan, readiness).await {
        Ok(()) => Ok(()),
        Err(err) => {
            readiness.failed(&format!("{err:#}"));
            Err(err)
        }
    }
}

async fn mount_and_serve(plan: MountPlan, readiness: &mut Readiness) -> anyhow::Result<()> {
    use std::sync::Arc;
    use tokio::signal::unix::{SignalKind, signal};

    let mountpoint = plan.mountpoint.clone();
    {
        let mp = mountpoint.clone();
        let allow_non_empty = plan.allow_non_empty;
        tokio::task::spawn_blocking(move || prepare_mountpoint(&mp, allow_non_empty)).await??;
    }
    // The cache directory is this daemon's alone, from before the journal is replayed until
    // the process exits (the lock lives as long as this function runs).
    let _cache_lock = {
        let dir = plan.fs_options.cache_dir.clone();
        cache_dir::prepare_cache_dir(&dir)?;
        cache_dir::lock_cache_dir(&dir, &mountpoint)?
    };
    // Signals are caught from here on, so a SIGTERM during start-up still ends cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let status_context = StatusContext {
        mountpoint: absolute(&mountpoint)?.display().to_string(),
        server: plan.server.clone(),
        profile: plan.profile.clone(),
        started: Instant::now(),
        read_only: plan.fs_options.read_only,
        write_back_secs: plan.fs_options.write_back.map(|d| d.as_secs()),
        cache_dir: plan.fs_options.cache_dir.display().to_string(),
    };
    let read_only = plan.fs_options.read_only;
    let write_back = plan.fs_options.write_back.is_some();
    let fs = crate::fs::CellsFs::new(plan.api.clone(), plan.fs_options)
        .await
        .map_err(|e| anyhow!("cannot prepare the filesystem: {e}"))?;

    let auto_unmount = auto_unmount_possible();
    let mut fuse_options = crate::fuse::FuseMountOptions {
        read_only,
        allow_other: plan.allow_other,
        auto_unmount,
        fs_name: plan.fs_name.clone(),
        threads: 2,
    };
    let runtime = tokio::runtime::Handle::current();
    let mounted = {
        let (fs, mp, opts, rt) = (
            fs.clone(),
            mountpoint.clone(),
            fuse_options.clone(),
            runtime.clone(),
        );
        tokio::task::spawn_blocking(move || crate::fuse::mount(fs, rt, &mp, &opts)).await?
    };
    let mut mounted = match mounted {
        Ok(m) => m,
        Err(err) if fuse_options.auto_unmount => {
            tracing::warn!(error = %err, "mounting with auto_unmount failed; retrying without");
            fuse_options.auto_unmount = false;
            let (fs, mp, opts, rt) = (
                fs.clone(),
                mountpoint.clone(),
                fuse_options.clone(),
                runtime,
            );
            tokio::task::spawn_blocking(move || crate::fuse::mount(fs, rt, &mp, &opts))
                .await?
                .map_err(|e| mount_error(&mountpoint, e))?
        }
        Err(err) => return Err(mount_error(&mountpoint, err)),
    };
    if !fuse_options.auto_unmount {
        tracing::info!(
            "auto_unmount unavailable (needs fusermount3): a killed mount leaves a dead mountpoint, cleared at the next mount"
        );
    }

    // From here on, every exit path unmounts.
    let answered = {
        let mp = mountpoint.clone();
        let timeout = plan.ready_timeout;
        tokio::task::spawn_blocking(move || wait_until_answers(&mp, timeout)).await?
    };
    if let Err(err) = answered {
        let mp = mountpoint.clone();
        let _ = tokio::task::spawn_blocking(move || unmount_now(&mp)).await;
        drop(mounted);
        return Err(err);
    }
    match raise_kernel_read_ahead(&mountpoint, crate::fuse::MAX_REQUEST / 1024) {
        Ok(kib) => tracing::debug!(kib, "kernel read-ahead"),
        Err(err) => tracing::debug!("kernel read-ahead left as it is: {err:#}"),
    }

    let events = if plan.events {
        let url =
            crate::api::events::websocket_url(&plan.server, plan.websocket_endpoint.as_deref());
        let sink = Arc::new(CoreEventSink { fs: fs.clone() });
        Some(crate::api::events::EventsClient::spawn(
            crate::api::events::EventsConfig {
                skip_verify: plan.skip_verify,
                ..crate::api::events::EventsConfig::new(url)
            },
            plan.tokens.clone(),
            sink,
        ))
    } else {
        None
    };

    let cancel = tokio_util::sync::CancellationToken::new();
    let (unmount_tx, mut unmount_rx) = tokio::sync::mpsc::channel::<()>(1);
    let control_path = control_socket_path(&mountpoint)?;
    let status_fn: Arc<dyn Fn() -> MountStatus + Send + Sync> = {
        let fs = fs.clone();
        let events_stats = events.as_ref().map(|e| e.stats.clone());
        Arc::new(move || build_status(&status_context, &fs, events_stats.as_ref()))
    };
    let control = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if let Err(err) =
                serve_control_socket(control_path, status_fn, unmount_tx, cancel).await
            {
                tracing::warn!(
                    "no control socket ({err:#}): `cec unmount` and `cec mount --status` cannot \
                     reach this mount; stop it with SIGTERM"
                );
            }
        }
    });

    readiness.ready(&mountpoint);
    tracing::info!(mountpoint = %mountpoint.display(), server = %plan.server, "mounted");
    eprintln!(
        "cec: {} mounted at {} (stop with Ctrl-C or `cec unmount {}`)",
        plan.server,
        mountpoint.display(),
        mountpoint.display()
    );

    let reason = tokio::select! {
        _ = sigint.recv() => StopReason::Signal("SIGINT"),
        _ = sigterm.recv() => StopReason::Signal("SIGTERM"),
        // (`None` disables the branch: the control socket is not served; the mount goes on.)
        Some(()) = unmount_rx.recv() => StopReason::ControlSocket,
        () = mounted.ended() => StopReason::UnmountedFromOutside,
    };
    let why = match &reason {
        StopReason::Signal(name) => *name,
        StopReason::ControlSocket => "cec unmount",
        StopReason::UnmountedFromOutside => "unmounted from outside",
    };
    tracing::info!(reason = why, "stopping");
    Readiness::stopping();
    if let Some(events) = events {
        events.stop().await;
    }

    // Finish (or journal, with write-back) what is pending; a second request to stop skips
    // the wait. A stop that came from an unmount (`umount`, `cec unmount`) was the first
    // request: a signal after it is the second one only if another follows (systemd stops a
    // mount unit with `umount`, then SIGTERM to the daemon).
    let mut first_signal_pending = !matches!(reason, StopReason::Signal(_));
    let sync = fs.sync_all();
    tokio::pin!(sync);
    let synced = loop {
        let signal = tokio::select! {
            r = &mut sync => break r.map_err(|e| e.to_string()),
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        };
        if first_signal_pending {
            first_signal_pending = false;
            tracing::info!(
                signal,
                "stopping: finishing the pending uploads first (a second signal abandons them)"
            );
            continue;
        }
        break Err(format!("interrupted by a second {signal}"));
    };
    if let Err(err) = &synced {
        eprintln!(
            "cec: not every pending upload finished ({err}); {}",
            if write_back {
                "they stay in the write-back journal and resume at the next mount"
            } else {
                "see `cec mount --status` of the next mount and the recovery folder"
            }
        );
    }

    // Unmount ourselves: fuser's own unmount leaves an `auto_unmount` mount in place
    // (fusermount3 only unmounts a filesystem whose daemon died), so it cannot be trusted.
    if !matches!(reason, StopReason::UnmountedFromOutside) {
        let mp = mountpoint.clone();
        tokio::task::spawn_blocking(move || unmount_now(&mp)).await??;
    }
    // The session threads end once the kernel connection is gone.
    let joined = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || mounted.join()),
    )
    .await;
    match joined {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "the FUSE session ended with an error"),
        Ok(Err(err)) => tracing::warn!(error = %err, "the FUSE session thread panicked"),
        Err(_) => tracing::warn!(
            "files are still open on the detached mount; exiting anyway (their users get errors)"
        ),
    }
    cancel.cancel();
    let _ = control.await;
    eprintln!("cec: unmounted {}", mountpoint.display());
    Ok(())
}

fn mount_error(mountpoint: &Path, err: std::io::Error) -> anyhow::Error {
    #[cfg(target_os = "macos")]
    let hint = " (is macFUSE installed, and its system extension allowed in System Settings?)";
    #[cfg(not(target_os = "macos"))]
    let hint = match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (mounting needs root, or fusermount3 and access to /dev/fuse)"
        }
        Some(libc::ENOENT) if !Path::new("/dev/fuse").exists() => {
            " (/dev/fuse is missing: load the fuse module or run with --device /dev/fuse)"
        }
        Some(libc::ENOENT) => " (is fusermount3 installed? Debian: apt install fuse3)",
        _ => "",
    };
    anyhow!("cannot mount at {}: {err}{hint}", mountpoint.display())
}
