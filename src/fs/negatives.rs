//! Negative entries the kernel keeps: after a lookup of a missing name, the kernel may
//! remember the absence (a negative dentry) for as long as the mount itself trusts it, so a
//! program probing the same missing names again (`git`, shells walking `$PATH`, build tools)
//! does not reach the daemon at all.
//!
//! Invariants:
//! - An absence is trusted for `--attr-timeout`, or, while change events arrive and Cells
//!   announces the path, for `--events-cache-time` (see `remote::trusted_for`): exactly what
//!   the mount's own negative cache uses.
//! - A remote creation at a name reaches the kernel as an entry invalidation of that name
//!   (see `remote::invalidate`), which drops a negative entry as well as a positive one; the
//!   mount's own creations go through the kernel, which updates its entry itself.
//! - Every negative entry given for longer than `--attr-timeout` is remembered here until it
//!   expires, so that it can be withdrawn when the events stop or the workspaces change
//!   ([`CellsFs::withdraw_negatives`]). When [`LONG_NEGATIVES`] are remembered, further ones
//!   get `--attr-timeout` only: nothing the kernel holds for long is ever forgotten here.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{CellsFs, KernelInvalidation, base_name, parent_path, versions};

/// Negative entries with a long timeout remembered at most (a path each).
const LONG_NEGATIVES: usize = 20_000;

/// Paths the kernel was told are absent, each with when the kernel stops trusting that.
#[derive(Default)]
pub(super) struct KernelNegatives {
    until: Mutex<HashMap<String, Instant>>,
}

impl KernelNegatives {
    /// Remember that the kernel trusts the absence of `path` until `until`; false when no
    /// room is left (then the kernel must be given a short timeout).
    fn remember(&self, path: String, until: Instant) -> bool {
        let mut map = self.until.lock().unwrap();
        if map.len() >= LONG_NEGATIVES && !map.contains_key(&path) {
            let now = Instant::now();
            map.retain(|_, t| *t > now);
            if map.len() >= LONG_NEGATIVES {
                return false;
            }
        }
        map.insert(path, until);
        true
    }

    /// The paths whose negative entries may still be in the kernel; forgets them all.
    fn take_live(&self) -> Vec<String> {
        let now = Instant::now();
        let mut map = self.until.lock().unwrap();
        map.drain()
            .filter(|(_, t)| *t > now)
            .map(|(p, _)| p)
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.until.lock().unwrap().len()
    }
}

impl CellsFs {
    /// How long the kernel may remember that `name` is absent from `parent`, after
    /// [`CellsFs::lookup`] answered NotFound for it (zero: not at all).
    pub fn negative_ttl(&self, parent: u64, name: &OsStr) -> Duration {
        if versions::hooked(parent, name) || versions::is_virtual(parent) {
            return Duration::ZERO;
        }
        let Ok(path) = self.child_path(parent, name) else {
            return Duration::ZERO;
        };
        let base = self.inner.options.attr_timeout;
        let ttl = self.trusted_for(base, &path);
        if ttl <= base {
            return ttl;
        }
        if self
            .inner
            .kernel_negatives
            .remember(path, Instant::now() + ttl)
        {
            ttl
        } else {
            base
        }
    }

    /// Ask the kernel to forget the negative entries given with a long timeout (the events
    /// that would have withdrawn them one by one stopped, or the workspaces changed).
    pub(super) fn withdraw_negatives(&self) {
        let paths = self.inner.kernel_negatives.take_live();
        let Some(notifier) = self.inner.notifier.get() else {
            return;
        };
        let table = self.inner.table.lock().unwrap();
        for path in paths {
            if let Some(&parent) = table.by_path.get(parent_path(&path)) {
                let _ = notifier.send(KernelInvalidation::Entry(
                    parent,
                    base_name(&path).to_string(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_record_refuses_more_until_some_expire() {
        let negatives = KernelNegatives::default();
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..LONG_NEGATIVES {
            assert!(negatives.remember(format!("ws/n{i}"), later));
        }
        assert!(!negatives.remember("ws/one-more".into(), later));
        // Known paths are refreshed, not refused.
        assert!(negatives.remember("ws/n0".into(), later));
        assert_eq!(negatives.take_live().len(), LONG_NEGATIVES);
        assert_eq!(negatives.len(), 0);
        let past = Instant::now();
        for i in 0..LONG_NEGATIVES {
            assert!(negatives.remember(format!("ws/n{i}"), past));
        }
        assert!(
            negatives.remember("ws/one-more".into(), later),
            "expired make room"
        );
        assert_eq!(negatives.take_live(), vec!["ws/one-more".to_string()]);
    }
}
