//! The control socket of a running mount, and where a mount keeps its runtime files: the
//! per-user runtime directory, with one socket and one daemon log per mountpoint (named by a
//! hash of the mountpoint's absolute path). Clients are `cec mount --status` and `cec unmount`.
//!
//! Invariants:
//! - The runtime directory is the user's own, 0700 (refused when someone else owns it); the
//!   socket is 0600 and answers only `status` and `unmount`, one line each way; no secret ever
//!   travels on it. A client waits at most 30 s for the answer.
//! - The mount now at a mountpoint owns its socket path: it takes the path over from a mount
//!   detached from there, and removes the socket at exit only while the path is still its own
//!   socket (same device and inode).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use sha2::Digest;

use super::mounts::absolute;
use super::status::MountStatus;

/// The directory holding control sockets and daemon logs: `$XDG_RUNTIME_DIR/cec`, else
/// `/run/cec` for root, else `$TMPDIR/cec-<uid>` (macOS: no `/run`, so `$TMPDIR/cec-<uid>`,
/// a per-user directory under `/var/folders`). Created 0700.
pub fn runtime_dir() -> anyhow::Result<PathBuf> {
    let uid = nix::unistd::getuid();
    let dir = if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        PathBuf::from(xdg).join("cec")
    } else if uid.is_root() && Path::new("/run").is_dir() {
        PathBuf::from("/run/cec")
    } else {
        std::env::temp_dir().join(format!("cec-{uid}"))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(&dir)?;
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != uid.as_raw() || !meta.is_dir() {
        bail!("{} is not a directory owned by you", dir.display());
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// A stable key for a mountpoint (its absolute path, hashed).
fn mountpoint_key(mountpoint: &Path) -> anyhow::Result<String> {
    let abs = absolute(mountpoint)?;
    let digest = sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes());
    Ok(hex::encode(&digest[..8]))
}

/// The control socket of the mount at `mountpoint`.
pub fn control_socket_path(mountpoint: &Path) -> anyhow::Result<PathBuf> {
    Ok(runtime_dir()?.join(format!("mount-{}.sock", mountpoint_key(mountpoint)?)))
}

/// The log file of a `--daemon` mount at `mountpoint`.
pub fn daemon_log_path(mountpoint: &Path) -> anyhow::Result<PathBuf> {
    Ok(runtime_dir()?.join(format!("mount-{}.log", mountpoint_key(mountpoint)?)))
}

/// A request on the control socket (one line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    Status,
    Unmount,
}

/// Ask the mount at `mountpoint` for its status.
pub fn query_status(mountpoint: &Path) -> anyhow::Result<MountStatus> {
    let reply = control_request(mountpoint, "status")?;
    serde_json::from_str(&reply).context("unreadable status from the mount")
}

/// Ask the mount at `mountpoint` to finish its uploads and unmount. Returns once the
/// request was accepted (the mount then exits on its own).
pub fn request_unmount(mountpoint: &Path) -> anyhow::Result<()> {
    let reply = control_request(mountpoint, "unmount")?;
    if reply.trim() == "ok" {
        Ok(())
    } else {
        bail!("the mount refused to unmount: {}", reply.trim())
    }
}

fn control_request(mountpoint: &Path, command: &str) -> anyhow::Result<String> {
    let path = control_socket_path(mountpoint)?;
    let mut stream = UnixStream::connect(&path).map_err(|err| {
        anyhow!(
            "no cec mount answers for {} ({}: {err})",
            mountpoint.display(),
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    if reply.is_empty() {
        bail!(
            "the mount at {} closed the control socket",
            mountpoint.display()
        );
    }
    Ok(reply)
}

/// Serve the control socket until `cancel` fires. `status` builds the status on demand;
/// an `unmount` request is forwarded on `unmount_tx`.
pub async fn serve_control_socket(
    path: PathBuf,
    status: std::sync::Arc<dyn Fn() -> MountStatus + Send + Sync>,
    unmount_tx: tokio::sync::mpsc::Sender<()>,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    // Whatever is at the path belongs to a crashed mount or to one detached from this
    // mountpoint (`cec unmount --lazy`, which lives on until its last user leaves): this
    // mount is the one at the mountpoint now (it is mounted before this runs), so the path is
    // ours. The detached one keeps serving its own requests on its listening socket, and
    // will not remove ours when it exits (see below).
    if std::fs::symlink_metadata(&path).is_ok() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            tracing::info!(
                socket = %path.display(),
                "another process (a mount detached from here?) served this control socket; \
                 taking it over"
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let identity = std::fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()))?;
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(error = %err, "control socket accept failed");
                    continue;
                }
            },
        };
        let status = status.clone();
        let unmount_tx = unmount_tx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match line.trim() {
                "status" => {
                    let status = tokio::task::spawn_blocking(move || status()).await;
                    match status {
                        Ok(s) => serde_json::to_string(&s).unwrap_or_default(),
                        Err(_) => "error status unavailable".into(),
                    }
                }
                "unmount" => {
                    let _ = unmount_tx.send(()).await;
                    "ok".into()
                }
                other => format!("error unknown request {other:?}"),
            };
            let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
        });
    }
    // Only our own socket: a mount made here since may have taken the path over.
    if std::fs::symlink_metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == identity) {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ask the control socket at `path` for a status, from a blocking thread.
    async fn status_pid_at(path: &Path) -> Option<u32> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut stream = UnixStream::connect(&path).ok()?;
            stream.write_all(b"status\n").ok()?;
            let mut reply = String::new();
            BufReader::new(stream).read_line(&mut reply).ok()?;
            serde_json::from_str::<MountStatus>(&reply)
                .ok()
                .map(|s| s.pid)
        })
        .await
        .unwrap()
    }

    /// A daemon detached from its mountpoint (`cec unmount --lazy`) still answers on the
    /// control socket: the next mount at that place takes the path over at once, and the
    /// detached daemon, when it exits, leaves the new socket alone (it used to delete it, and
    /// `cec mount --status` and `cec unmount` could no longer reach the new mount).
    #[tokio::test]
    async fn a_new_mount_takes_the_control_socket_over_and_the_old_one_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mount.sock");
        let serve = |pid: u32| {
            let status: std::sync::Arc<dyn Fn() -> MountStatus + Send + Sync> =
                std::sync::Arc::new(move || MountStatus {
                    pid,
                    ..Default::default()
                });
            let (unmount_tx, unmount_rx) = tokio::sync::mpsc::channel(1);
            let cancel = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn(serve_control_socket(
                path.clone(),
                status,
                unmount_tx,
                cancel.clone(),
            ));
            (task, cancel, unmount_rx)
        };
        let (old, old_cancel, _old_rx) = serve(1);
        let mut waited = 0;
        while status_pid_at(&path).await != Some(1) {
            waited += 1;
            assert!(waited < 100, "the first server never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (new, new_cancel, _new_rx) = serve(2);
        let mut waited = 0;
        while status_pid_at(&path).await != Some(2) {
            waited += 1;
            assert!(waited < 100, "the new mount did not take the socket over");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The detached daemon exits: the path still reaches the new mount.
        old_cancel.cancel();
        old.await.unwrap().unwrap();
        assert_eq!(status_pid_at(&path).await, Some(2));
        new_cancel.cancel();
        new.await.unwrap().unwrap();
        assert!(!path.exists(), "a daemon removes its own socket");
    }
}
