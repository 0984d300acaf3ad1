//! Interrupted requests: what lets Ctrl-C (or any signal) end a process that waits on the mount.
//!
//! When a process waiting on a FUSE request gets a signal, the kernel sends `FUSE_INTERRUPT`
//! naming the request; the process stays blocked until the request is answered. The adapter
//! ([`crate::fuse`]) registers the reply of each request that reads (lookup, getattr, read,
//! readdir, a read-only open, statfs) once it has to wait, in a [`ReplySlot`] shared by the
//! request's work and this table; an interrupt takes the reply out of the slot and answers
//! `EINTR` at once, so the signal reaches the process.
//!
//! Invariants:
//! - A reply is sent exactly once: whoever takes it out of its slot first (the work with its
//!   result, or an interrupt with `EINTR`) answers; the other finds the slot empty.
//! - The interrupted work is never dropped halfway: it runs to its end (bounded by the request
//!   deadlines) and its result is discarded, so no lock, single-flight leader or cache entry is
//!   abandoned in an unknown state. Work that would leave something behind once orphaned (a
//!   file handle from `open`) cleans it up itself.
//! - Requests that change the server (create, mkdir, unlink, rename, write, flush, release,
//!   fsync, setattr) are not interruptible: what the process is told always matches what the
//!   server holds, and each of them ends within its own deadline.
//! - An interrupt may be read before the request it names is registered (another dispatch
//!   thread): it is remembered (the last [`EARLY_KEPT`]) and applied at registration.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Interrupts remembered for requests not registered yet.
pub const EARLY_KEPT: usize = 64;

/// A reply that can be answered with an error (every fuser reply type can).
pub trait ErrorReply: Send + 'static {
    /// Answer the request with `errno`.
    fn error_reply(self, errno: fuser::Errno);
}

macro_rules! error_reply {
    ($($reply:ty),* $(,)?) => {
        $(impl ErrorReply for $reply {
            fn error_reply(self, errno: fuser::Errno) {
                self.error(errno)
            }
        })*
    };
}
error_reply!(
    fuser::ReplyEntry,
    fuser::ReplyAttr,
    fuser::ReplyData,
    fuser::ReplyOpen,
    fuser::ReplyDirectory,
    fuser::ReplyDirectoryPlus,
    fuser::ReplyStatfs,
    fuser::ReplyXattr,
    fuser::ReplyEmpty,
);

/// A request's reply, shared by its work and the interrupt table: taken once.
pub struct ReplySlot<R>(Arc<Mutex<Option<R>>>);

impl<R> Clone for ReplySlot<R> {
    fn clone(&self) -> Self {
        ReplySlot(self.0.clone())
    }
}

impl<R: ErrorReply> ReplySlot<R> {
    pub fn new(reply: R) -> Self {
        ReplySlot(Arc::new(Mutex::new(Some(reply))))
    }

    /// The reply, if nobody answered yet.
    pub fn take(&self) -> Option<R> {
        self.0.lock().unwrap().take()
    }

    /// Answer `EINTR` if nobody answered yet; whether this call did.
    fn interrupt(&self) -> bool {
        match self.take() {
            Some(reply) => {
                reply.error_reply(fuser::Errno::EINTR);
                true
            }
            None => false,
        }
    }
}

type Interrupter = Box<dyn FnOnce() -> bool + Send>;

#[derive(Default)]
struct Table {
    waiting: HashMap<u64, Interrupter>,
    /// Interrupts that named no registered request, newest last.
    early: VecDeque<u64>,
}

/// The requests that may be interrupted now, by the kernel's request id.
#[derive(Default)]
pub struct Interrupts {
    table: Mutex<Table>,
}

impl Interrupts {
    /// Make request `unique` interruptible until [`Interrupts::finished`]. If an interrupt
    /// for it already came, it is answered `EINTR` now.
    pub fn register<R: ErrorReply>(&self, unique: u64, slot: &ReplySlot<R>) {
        let mut table = self.table.lock().unwrap();
        if let Some(i) = table.early.iter().position(|&u| u == unique) {
            table.early.remove(i);
            drop(table);
            slot.interrupt();
            return;
        }
        let slot = slot.clone();
        table
            .waiting
            .insert(unique, Box::new(move || slot.interrupt()));
    }

    /// Request `unique` is answered (or about to be): interrupts no longer apply to it.
    pub fn finished(&self, unique: u64) {
        self.table.lock().unwrap().waiting.remove(&unique);
    }

    /// The kernel's interrupt for request `unique`: whether it was answered `EINTR` now.
    pub fn interrupt(&self, unique: u64) -> bool {
        let mut table = self.table.lock().unwrap();
        match table.waiting.remove(&unique) {
            Some(interrupter) => {
                drop(table);
                interrupter()
            }
            None => {
                // Either answered already or not registered yet: remember it for the latter.
                if table.early.len() == EARLY_KEPT {
                    table.early.pop_front();
                }
                table.early.push_back(unique);
                false
            }
        }
    }

    /// Requests registered now (for tests and the status).
    pub fn waiting(&self) -> usize {
        self.table.lock().unwrap().waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply that records how it was answered.
    struct Recorded(Arc<Mutex<Vec<String>>>);
    impl ErrorReply for Recorded {
        fn error_reply(self, errno: fuser::Errno) {
            self.0
                .lock()
                .unwrap()
                .push(format!("error {}", errno.code()));
        }
    }

    fn recorded() -> (Recorded, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        (Recorded(log.clone()), log)
    }

    #[test]
    fn an_interrupt_answers_eintr_once_and_the_work_finds_the_slot_empty() {
        let interrupts = Interrupts::default();
        let (reply, log) = recorded();
        let slot = ReplySlot::new(reply);
        interrupts.register(7, &slot);
        assert_eq!(interrupts.waiting(), 1);
        assert!(interrupts.interrupt(7));
        assert_eq!(*log.lock().unwrap(), vec![format!("error {}", libc::EINTR)]);
        assert!(
            slot.take().is_none(),
            "the work must not answer a second time"
        );
        assert_eq!(interrupts.waiting(), 0);
        assert!(
            !interrupts.interrupt(7),
            "a second interrupt answers nothing"
        );
    }

    #[test]
    fn a_finished_request_is_not_interrupted() {
        let interrupts = Interrupts::default();
        let (reply, log) = recorded();
        let slot = ReplySlot::new(reply);
        interrupts.register(8, &slot);
        let taken = slot.take();
        assert!(taken.is_some());
        interrupts.finished(8);
        assert!(!interrupts.interrupt(8));
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn an_interrupt_read_before_its_request_applies_at_registration() {
        let interrupts = Interrupts::default();
        assert!(!interrupts.interrupt(9));
        let (reply, log) = recorded();
        let slot = ReplySlot::new(reply);
        interrupts.register(9, &slot);
        assert_eq!(log.lock().unwrap().len(), 1);
        assert_eq!(interrupts.waiting(), 0);
        // Only the last EARLY_KEPT early interrupts are remembered.
        for unique in 100..100 + EARLY_KEPT as u64 + 1 {
            interrupts.interrupt(unique);
        }
        let (reply, log) = recorded();
        interrupts.register(100, &ReplySlot::new(reply));
        assert!(log.lock().unwrap().is_empty(), "the oldest was forgotten");
        let (reply, log) = recorded();
        interrupts.register(101, &ReplySlot::new(reply));
        assert_eq!(log.lock().unwrap().len(), 1);
    }
}
