//! The mount's lifecycle, around the filesystem core and the kernel adapter: prepare the
//! mountpoint (clear a dead mount left by a crash), mount, wait until the mount answers,
//! report readiness (to systemd, and to the parent process of `--daemon`), serve the control
//! socket of `cec mount --status`, and on SIGINT/SIGTERM, `cec unmount` or an external
//! `umount`, finish or journal pending uploads and unmount cleanly.
//!
//! The rooms, each with its own essay:
//! - `run`: the lifecycle of one mount, from preparing the mountpoint to the last
//!   upload; `invalidate` turns the server's events into the core's invalidations;
//! - `mountpoint`: what is at the mountpoint, making it usable, knowing the mount answers;
//!   `mounts`: the system's mount table; `detach`: the platform's unmount;
//! - `daemon`: `--daemon` and readiness (systemd, the parent), with [`handoff`] (the pipes
//!   between parent and daemon); [`cache_dir`]: the cache directory and its lock;
//! - `control`: the control socket and the runtime directory; `status`: what `--status` shows;
//! - `unmount`: `cec unmount`, with [`holders`] (who keeps a mount busy).
//!
//! Invariants:
//! - "Ready" is announced only after a `statfs` through the mountpoint answered with the FUSE
//!   magic: a `--daemon` parent never reports success for a mount that does not work.
//! - A mount that this process made is unmounted by this process on every exit path it
//!   controls (signals, control socket, errors after mounting); `auto_unmount` (fusermount3)
//!   covers the paths it does not (SIGKILL, panics).
//! - The control socket lives in a 0700 directory owned by the user and answers only status
//!   and unmount requests; it never carries a secret. The mount now at a mountpoint owns its
//!   socket path: it takes the path over from a detached mount, and a daemon removes the
//!   socket at exit only if the path is still its own socket (same device and inode).
//! - One daemon per cache directory ([`cache_dir::CacheLock`], held from before the journal
//!   is replayed until the process exits); the cache directory is the user's, 0700.
//! - `cec unmount` acts only on a cec mount, and never pretends: on a busy mount it fails
//!   as umount(8) does and names the processes that hold it ([`holders`]); `--lazy`
//!   detaches and says that the daemon lives on until the last user leaves.

pub mod cache_dir;
mod control;
mod daemon;
mod detach;
pub mod handoff;
pub mod holders;
mod invalidate;
mod mountpoint;
mod mounts;
mod run;
mod status;
mod unmount;

pub use control::{
    ControlRequest, control_socket_path, daemon_log_path, query_status, request_unmount,
    runtime_dir, serve_control_socket,
};
pub use daemon::{Readiness, spawn_daemon};
pub use detach::{find_fusermount, force_unmount, unmount_now};
pub use invalidate::remote_changes;
pub use mountpoint::{
    FUSE_SUPER_MAGIC, MountpointState, auto_unmount_possible, check_before_daemon,
    mountpoint_state, prepare_mountpoint, raise_kernel_read_ahead, wait_until_answers,
};
pub(crate) use mounts::unescape_mountinfo;
pub use mounts::{is_fuse_mount_point, is_macfuse_type, is_mount_point};
pub use run::{MountPlan, run};
pub use status::{ConflictCopyStatus, MountStatus, PendingUploadStatus, human_bytes};
pub use unmount::{Unmounted, unmount};

/// Environment variable naming the pipe (`FD:INODE`, see [`handoff`]) on which a `--daemon`
/// child reports readiness (`READY\n`) or failure (`ERROR <message>\n`) to its parent.
pub use handoff::READY_FD_ENV;
