//! How a request's work runs: first on fuser's dispatch thread, up to its first wait, and
//! only work that has to wait moves to a tokio task with its reply (fuser replies are
//! `Send + 'static`), so that a slow upload or listing never stalls other requests.
//!
//! Invariants:
//! - No request waits on a dispatch thread: what is pending after the first poll goes to the
//!   runtime, whose first poll registers the waker that counts.
//! - A request that may sync the disk before its first wait stays on the dispatch thread only
//!   when the session has another thread to serve the requests meanwhile.
//! - Only a request that reads may be interrupted ([`crate::interrupts`]): its work runs to
//!   its end, and answers only if the interrupt did not answer first.

use fuser::Request;
use tracing::Instrument;

use super::CellsFuse;
use crate::interrupts::{ErrorReply, ReplySlot};

impl CellsFuse {
    /// Run `work` on the runtime inside `span`.
    pub(super) fn spawn_on_runtime<F>(&self, span: tracing::Span, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(work.instrument(span));
    }

    /// For requests that may sync the disk before their first wait (`flush`, `release` and
    /// `rename` journal in write-back, a truncate by path): as [`CellsFuse::spawn`] when
    /// another dispatch thread serves the requests meanwhile (the hop to a worker would cost
    /// more than the sync: measured, 3,000 `printf > f` in write-back took 17% less time),
    /// else on the runtime, so that a lone dispatch thread never waits for the disk while
    /// requests answered from memory queue behind it.
    pub(super) fn spawn_may_sync<F>(&self, span: tracing::Span, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.dispatch_threads > 1 {
            self.spawn(span, work);
        } else {
            self.spawn_on_runtime(span, work);
        }
    }

    /// Run `work` inside `span`: first on this dispatch thread, up to its first wait; only
    /// work that has to wait moves to the runtime. Most requests (a write into the staged
    /// content, a setattr, an xattr, a read the read-ahead has in memory) finish in that step.
    pub(super) fn spawn<F>(&self, span: tracing::Span, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut work = Box::pin(work.instrument(span));
        let _runtime = self.runtime.enter();
        // A future may be polled with one waker and then another: the runtime's first poll
        // of the task registers the waker that counts.
        let mut first_step = std::task::Context::from_waker(std::task::Waker::noop());
        if work.as_mut().poll(&mut first_step).is_pending() {
            self.runtime.spawn(work);
        }
    }

    /// As [`CellsFuse::spawn`], for a request that only reads: once it has to wait, the
    /// kernel's interrupt answers it `EINTR` through `slot` (see [`crate::interrupts`]); the
    /// work goes on to its end and answers only if `slot` still holds the reply.
    pub(super) fn spawn_interruptible<R, F>(
        &self,
        req: &Request,
        span: tracing::Span,
        slot: &ReplySlot<R>,
        work: F,
    ) where
        R: ErrorReply,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut work = Box::pin(work.instrument(span));
        let _runtime = self.runtime.enter();
        let mut first_step = std::task::Context::from_waker(std::task::Waker::noop());
        if work.as_mut().poll(&mut first_step).is_pending() {
            let unique = req.unique().0;
            self.interrupts.register(unique, slot);
            let interrupts = self.interrupts.clone();
            self.runtime.spawn(async move {
                work.await;
                interrupts.finished(unique);
            });
        }
    }
}

/// Whether an `open` with `flags` only reads (no write access, no truncation): only such an
/// open may be interrupted, since its handle is released unseen if it was.
pub(super) fn open_only_reads(flags: i32) -> bool {
    flags & libc::O_ACCMODE == libc::O_RDONLY && flags & libc::O_TRUNC == 0
}
