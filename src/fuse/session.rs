//! Mounting: the kernel-facing mount options ([`FuseMountOptions`]: read-only, who may use
//! the mount, `auto_unmount`, the source name, dispatch threads) made into fuser's
//! configuration, the session started on its own threads, and the core given its notifier.
//!
//! Invariants:
//! - Every mount is `nodev`, `nosuid`, `noatime`, with `default_permissions` (the kernel
//!   checks modes) and the subtype `cec` (listed as `fuse.cec`, which `cec unmount` checks).
//! - `auto_unmount` never opens the mount to other users: it needs `allow_other` or
//!   `allow_root`, and gets `allow_root` unless `allow_other` was asked.
//! - fuser's own unmount is never used (with `auto_unmount` it leaves a live mount): the
//!   lifecycle unmounts, then [`MountedSession::join`]s.

use std::io;
use std::path::Path;
use std::sync::Arc;

use fuser::{Config, MountOption, SessionACL};

use super::CellsFuse;
use super::notifier::FuseNotifier;
use crate::fs::CellsFs;

/// How to mount (the kernel-facing part of the mount options).
#[derive(Debug, Clone)]
pub struct FuseMountOptions {
    pub read_only: bool,
    /// Let other users use the mount (`allow_other`; needs `user_allow_other` unless root).
    pub allow_other: bool,
    /// Ask fusermount3 to unmount when this process dies, however it dies.
    pub auto_unmount: bool,
    /// Source name shown in `mount`/`df` (e.g. `cells:alice@host`).
    pub fs_name: String,
    /// fuser dispatch threads (requests are served concurrently on tokio regardless).
    pub threads: usize,
}

/// A live mount: the fuser session running on its own threads.
pub struct MountedSession {
    session: fuser::BackgroundSession,
    ended: tokio::sync::watch::Receiver<()>,
}

impl MountedSession {
    /// Resolves once the session ended (unmounted from outside, or the kernel connection
    /// broke), without polling: fuser drops the adapter then.
    pub async fn ended(&mut self) {
        while self.ended.changed().await.is_ok() {}
    }

    /// Wait for the session to end (after the filesystem was unmounted). fuser's own
    /// unmount is not used: with `auto_unmount` it leaves a live mount in place.
    pub fn join(self) -> io::Result<()> {
        self.session.join()
    }
}

/// macOS volume name: the mountpoint's last component (e.g. "Cells"), without the characters
/// that would break the mount option list.
#[cfg(target_os = "macos")]
fn volume_name(mountpoint: &Path) -> String {
    let name: String = mountpoint
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| *c != ',' && *c != '=' && !c.is_control())
        .collect();
    if name.is_empty() { "cec".into() } else { name }
}

/// Mount `fs` at `mountpoint`, give the core its kernel notifier and start serving.
pub fn mount(
    fs: CellsFs,
    runtime: tokio::runtime::Handle,
    mountpoint: &Path,
    options: &FuseMountOptions,
) -> io::Result<MountedSession> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(options.fs_name.clone()),
        MountOption::Subtype("cec".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        if options.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else if options.auto_unmount {
        // auto_unmount needs allow_other or allow_root; allow_root keeps others out.
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    if options.auto_unmount {
        config.mount_options.push(MountOption::AutoUnmount);
    }
    // macFUSE: the name Finder shows (else "macFUSE Volume 0"), and no `._*` AppleDouble
    // files written to the server.
    #[cfg(target_os = "macos")]
    {
        // `subtype=` is Linux's: macFUSE's `fssubtype` is a number, not a name.
        config
            .mount_options
            .retain(|o| !matches!(o, MountOption::Subtype(_)));
        config.mount_options.push(MountOption::CUSTOM(format!(
            "volname={}",
            volume_name(mountpoint)
        )));
        config
            .mount_options
            .push(MountOption::CUSTOM("noappledouble".into()));
    }
    // fuser serves a session with more than one thread (and clone_fd) only on Linux.
    let threads = if cfg!(target_os = "linux") {
        options.threads.max(1)
    } else {
        1
    };
    config.n_threads = Some(threads);
    config.clone_fd = threads > 1;
    let (adapter, ended) = CellsFuse::new(fs.clone(), runtime, threads);
    let session = fuser::Session::new(adapter, mountpoint, &config)?;
    fs.set_notifier(Arc::new(FuseNotifier {
        notifier: session.notifier(),
    }));
    let session = session.spawn()?;
    Ok(MountedSession { session, ended })
}
