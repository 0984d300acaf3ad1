//! The core's window on the kernel's caches: [`FuseNotifier`] turns the core's
//! invalidations (an entry, an inode) into fuser notifications.
//!
//! Invariants:
//! - Never called from inside a request handler: the core calls it from the events task.
//! - A failed invalidation (the entry was never cached, the mount is going) is logged at
//!   debug level and changes nothing else: TTLs remain the safety net.

use std::ffi::OsStr;

use fuser::INodeNo;

use crate::fs::KernelNotifier;

/// The core's window on the kernel caches.
pub struct FuseNotifier {
    pub(super) notifier: fuser::Notifier,
}

impl KernelNotifier for FuseNotifier {
    fn invalidate_entry(&self, parent: u64, name: &OsStr) {
        if let Err(err) = self.notifier.inval_entry(INodeNo(parent), name) {
            tracing::debug!(parent, ?name, error = %err, "kernel entry invalidation failed");
        }
    }

    fn invalidate_inode(&self, ino: u64) {
        if let Err(err) = self.notifier.inval_inode(INodeNo(ino), 0, 0) {
            tracing::debug!(ino, error = %err, "kernel inode invalidation failed");
        }
    }
}
