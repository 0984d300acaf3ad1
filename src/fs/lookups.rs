//! When a lookup the cache cannot answer asks the server about one name, and when it lists the
//! name's folder instead: one listing answers every sibling and every absent name, so a program
//! walking a folder nobody listed yet (`stat` of 100 missing names, `cat` of 200 files one by
//! one, `git status`) pays about one round trip for the folder rather than one per name.
//!
//! Rule: the first lookup in a folder without a listing asks about its one name (a lone `stat`
//! of a file in a huge folder stays cheap); a second lookup in the same folder within the
//! folder cache time (`--dir-cache-time`) lists the folder, and the listing then answers every
//! other name of it, present or absent, while it is trusted.
//!
//! Invariants:
//! - Only counts: it never answers a lookup itself, and a wrong or forgotten count only
//!   costs a request (a stat instead of a listing or the reverse), never a wrong answer.
//! - Bounded memory: at most [`TRACKED_FOLDERS`] folders are remembered (least recently
//!   asked about forgotten first).
//! - A count belongs to one generation of the cache: a cache flush (`generation` bump)
//!   starts every folder over.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Folders whose recent lookups are remembered.
pub(crate) const TRACKED_FOLDERS: usize = 1024;

/// Lookups sent to the server per folder not listed yet.
pub(crate) struct LookupTally {
    /// Folder path -> (first lookup of the window, cache generation, lookups in the window).
    folders: Mutex<LruCache<String, (Instant, u64, u32)>>,
}

impl Default for LookupTally {
    fn default() -> Self {
        LookupTally {
            folders: Mutex::new(LruCache::new(
                NonZeroUsize::new(TRACKED_FOLDERS).expect("non-zero"),
            )),
        }
    }
}

impl LookupTally {
    /// A lookup in folder `parent` (which has no listing) must ask the server: whether to
    /// list the folder (`true`) rather than ask about the one name. `window` is how long
    /// earlier lookups in the folder count; `generation` the cache's generation now.
    pub fn list_instead(&self, parent: &str, window: Duration, generation: u64) -> bool {
        let mut folders = self.folders.lock().unwrap();
        let now = Instant::now();
        match folders.get_mut(parent) {
            Some((since, seen_generation, count))
                if *seen_generation == generation && since.elapsed() < window =>
            {
                *count += 1;
                true
            }
            _ => {
                folders.put(parent.to_string(), (now, generation, 1));
                false
            }
        }
    }

    /// Folder `parent` was listed: its lookups start over once the listing expires.
    pub fn listed(&self, parent: &str) {
        self.folders.lock().unwrap().pop(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lookup_in_a_folder_lists_it() {
        let tally = LookupTally::default();
        let w = Duration::from_secs(5);
        assert!(!tally.list_instead("ws/a", w, 1));
        assert!(tally.list_instead("ws/a", w, 1));
        assert!(!tally.list_instead("ws/b", w, 1), "another folder");
        assert!(
            !tally.list_instead("ws/b", w, 2),
            "a new generation starts over"
        );
        tally.listed("ws/a");
        assert!(!tally.list_instead("ws/a", w, 1), "listed: starts over");
        assert!(!tally.list_instead("ws/c", Duration::ZERO, 1));
        assert!(
            !tally.list_instead("ws/c", Duration::ZERO, 1),
            "window passed"
        );
    }
}
