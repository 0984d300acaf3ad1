//! The order in which this mount's changes reach the server, name by name.
//!
//! The kernel answers `close` before it sends `release`, uploads in write-back mode start
//! after a delay, and a fresh file's rename finishes in the background: so a change the user
//! made first (an upload) can still be on its way while the next one (an `unlink` of the same
//! name, a rename of its folder) is asked for. Sent as they come, the later request can reach
//! the server first, and the earlier one then brings back a file the user deleted, or writes it
//! under a folder that has moved.
//!
//! Every operation that changes the server at some paths (an upload, a delete, a move, a
//! folder creation) therefore takes a [`Turn`] for those paths before it sends its request,
//! and holds it until the server has answered. Turns are handed out in the order they are
//! asked for; a turn is granted once every earlier turn on an overlapping path (the same path,
//! a folder above it or a path below it) has ended. Changes of one name reach the server in the
//! order the user made them; changes of unrelated names never wait for each other.
//!
//! Invariants:
//! - A turn is registered when asked for, so a later request always queues behind it, even
//!   while it is still waiting for its own predecessors.
//! - A turn ends when its [`Turn`] is dropped (also when the future waiting for it is
//!   cancelled), and every waiter then looks again: no wake-up is lost.
//! - Lock order: a file's own upload lock (`FileState::io_lock`) is taken before a turn, never
//!   after one, so a turn holder never waits for a lock held by someone waiting for a turn.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The queue of server changes in progress or waiting, by the paths they touch.
#[derive(Default)]
pub(crate) struct PathOrder {
    state: Mutex<State>,
    ended: Notify,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Turns not ended yet, in the order they were asked for, with their paths.
    turns: BTreeMap<u64, Vec<String>>,
}

/// The right to change the server at some paths; dropping it ends the turn.
pub(crate) struct Turn {
    order: Arc<PathOrder>,
    id: u64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.order.state.lock().unwrap().turns.remove(&self.id);
        self.order.ended.notify_waiters();
    }
}

/// `a` and `b` are the same path, or one is a folder holding the other (`""` holds all).
fn overlaps(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.is_empty()
        || long == short
        || (long.starts_with(short) && long.as_bytes()[short.len()] == b'/')
}

impl PathOrder {
    /// Queue a change of `paths` and wait until every earlier change of an overlapping path
    /// has ended.
    pub(crate) async fn turn(self: &Arc<Self>, paths: &[&str]) -> Turn {
        let id = {
            let mut state = self.state.lock().unwrap();
            let id = state.next;
            state.next += 1;
            state
                .turns
                .insert(id, paths.iter().map(|p| p.to_string()).collect());
            id
        };
        let turn = Turn {
            order: self.clone(),
            id,
        };
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before looking, so an end between the look and the wait is seen.
            ended.as_mut().enable();
            if !self.waits(id) {
                return turn;
            }
            ended.await;
        }
    }

    /// An earlier turn on an overlapping path has not ended.
    fn waits(&self, id: u64) -> bool {
        let state = self.state.lock().unwrap();
        let Some(mine) = state.turns.get(&id) else {
            return false;
        };
        state.turns.range(..id).any(|(_, theirs)| {
            theirs
                .iter()
                .any(|t| mine.iter().any(|m| overlaps(t.as_str(), m.as_str())))
        })
    }

    /// Turns not ended (for tests and the status).
    #[cfg(test)]
    fn open_turns(&self) -> usize {
        self.state.lock().unwrap().turns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn overlapping_paths() {
        assert!(overlaps("ws/a", "ws/a"));
        assert!(overlaps("ws/a", "ws/a/b"));
        assert!(overlaps("ws/a/b", "ws/a"));
        assert!(overlaps("", "ws/a"));
        assert!(!overlaps("ws/a", "ws/ab"));
        assert!(!overlaps("ws/ab", "ws/a"));
        assert!(!overlaps("ws/a", "ws/b"));
    }

    #[tokio::test]
    async fn a_later_change_of_a_name_waits_for_the_earlier_one() {
        let order = Arc::new(PathOrder::default());
        let first = order.turn(&["ws/dir/f"]).await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (o, l) = (order.clone(), log.clone());
        let second = tokio::spawn(async move {
            let _t = o.turn(&["ws/dir"]).await;
            l.lock().unwrap().push("second");
        });
        // An unrelated name goes ahead at once.
        let unrelated = tokio::time::timeout(Duration::from_secs(5), order.turn(&["ws/other"]))
            .await
            .expect("an unrelated path never waits");
        drop(unrelated);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(log.lock().unwrap().is_empty(), "the folder's change waited");
        log.lock().unwrap().push("first");
        drop(first);
        second.await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["first", "second"]);
        assert_eq!(order.open_turns(), 0);
    }

    #[tokio::test]
    async fn turns_are_granted_in_the_order_asked_even_while_waiting() {
        let order = Arc::new(PathOrder::default());
        let first = order.turn(&["ws/a"]).await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, path) in ["ws/a", "ws", "ws/a/x", "ws/a"].into_iter().enumerate() {
            let (o, l) = (order.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                let _t = o.turn(&[path]).await;
                l.lock().unwrap().push(i);
                tokio::task::yield_now().await;
            }));
            // Each is asked for after the previous one.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*log.lock().unwrap(), [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_cancelled_wait_ends_its_turn() {
        let order = Arc::new(PathOrder::default());
        let first = order.turn(&["ws/a"]).await;
        let waiting = tokio::time::timeout(Duration::from_millis(20), order.turn(&["ws/a"])).await;
        assert!(waiting.is_err(), "the second turn waited");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), order.turn(&["ws/a"])).await;
        assert!(
            third.is_ok(),
            "a cancelled turn does not block the next one"
        );
    }
}
