//! Dot-folders (`.git`, `.venv`, ...) revalidated with one request for the whole subtree.
//!
//! Cells announces no change under a dot-folder, so what lives there is trusted for the
//! attribute timeout only (`--attr-timeout`, 1 s by default) and each of its folders used to
//! be listed again (a REST and a gateway listing) once that passed: a second `git status`
//! paid two requests for each of `.git`, `.git/refs`, `.git/refs/heads`, `.git/objects/xx`...
//! Here the first folder of a dot-folder that needs listing fetches the gateway's recursive
//! listing of the topmost dot-folder of its path (one request), and every folder below it is
//! answered from that one listing while it is younger than the attribute timeout.
//!
//! Invariants:
//! - Never staler than today: a folder answered from a tree listing is stamped with the time
//!   the tree was fetched, not the time it was used, so it is trusted no longer than a folder
//!   listing fetched at that moment would be.
//! - This mount's own changes are never hidden: a tree is used only while the mount changed no
//!   listing (`listing_changes`, bumped by every create, rename and delete here) and within
//!   the cache generation it was fetched in; otherwise it is fetched again.
//! - Bounded: a tree over [`DOT_TREE_MAX`] entries (the gateway never pages) is not kept, and
//!   that dot-folder is listed folder by folder as before; at most [`TREES`] trees are kept.
//! - A folder the tree does not hold is reported missing (the gateway lists every folder of
//!   a recursive listing as a common prefix); an empty tree (the dot-folder may be missing or
//!   empty: the gateway answers both alike) falls back to the folder's own listing.
//! - Entries keep the Uuid a REST answer gave them while their content is the same (the
//!   gateway's listing carries none), and a folder keeps its metadata.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lru::LruCache;
use unicode_normalization::UnicodeNormalization;

use super::{CellsFs, FileKind, FsError, FsResult, Meta, base_name, parent_path};
use crate::api::{ApiError, S3Entry};

/// Entries above which a dot-folder is listed folder by folder.
pub(crate) const DOT_TREE_MAX: usize = 5000;
/// Dot-folders whose tree is kept.
const TREES: usize = 16;

/// The topmost dot-folder of folder `path` (`ws/repo/.git` for `ws/repo/.git/refs/heads`),
/// `None` when no component of it starts with a dot. A workspace is never one.
pub(crate) fn dot_root(path: &str) -> Option<&str> {
    let mut end = 0;
    for (i, part) in path.split('/').enumerate() {
        end += part.len() + usize::from(i > 0);
        if i > 0 && part.starts_with('.') {
            return Some(&path[..end]);
        }
    }
    None
}

/// One recursive listing: the children of every folder below the root (the root included).
struct Tree {
    at: Instant,
    generation: u64,
    listing_changes: u64,
    folders: HashMap<String, Vec<S3Entry>>,
}

/// The recent recursive listings of dot-folders, and the dot-folders found too big for one.
pub(crate) struct DotTrees {
    trees: Mutex<LruCache<String, Arc<Tree>>>,
    too_big: Mutex<LruCache<String, Instant>>,
}

impl Default for DotTrees {
    fn default() -> Self {
        let size = NonZeroUsize::new(TREES).expect("non-zero");
        DotTrees {
            trees: Mutex::new(LruCache::new(size)),
            too_big: Mutex::new(LruCache::new(size)),
        }
    }
}

impl CellsFs {
    /// Whether a lookup in folder `parent` (not listed yet) is best answered by its listing
    /// from the recursive listing of its dot-folder (one request for the whole dot-folder, or
    /// none while it is fresh) rather than by a stat of the one name: under a dot-folder not
    /// found too big for one listing within the folder cache time.
    pub(super) fn dot_listable(&self, parent: &str) -> bool {
        let Some(root) = dot_root(parent) else {
            return false;
        };
        let mut too_big = self.inner.dot_trees.too_big.lock().unwrap();
        match too_big.get(root) {
            Some(at) if at.elapsed() < self.inner.options.dir_cache_time => false,
            Some(_) => {
                too_big.pop(root);
                true
            }
            None => true,
        }
    }

    /// Whether dot-folder `path` (a dot-name in a folder that is not under one, which this
    /// mount knows as a folder) still exists, from its own recursive listing (which the
    /// lookups below it use next) rather than from a listing of its parent: `None` when that
    /// cannot tell (not such a folder, empty or too big for one listing).
    pub(super) async fn dot_folder_meta(&self, path: &str) -> Option<FsResult<Option<Meta>>> {
        if dot_root(path) != Some(path) {
            return None;
        }
        let known = {
            let table = self.inner.table.lock().unwrap();
            table
                .by_path
                .get(path)
                .and_then(|ino| table.inodes.get(ino))
                .filter(|d| d.kind == FileKind::Directory && !d.detached && !d.local)
                .map(|d| d.meta.clone())
        }?;
        match self.dot_children(path).await? {
            Ok(_) => Some(Ok(Some(known))),
            Err(e) if e.errno() == libc::ENOENT => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The children of folder `path` under a dot-folder, from the recursive listing of its
    /// dot-folder (fetched now if there is no usable one), with the moment they were listed.
    /// `None`: not under a dot-folder, or this dot-folder is listed folder by folder.
    pub(super) async fn dot_children(
        &self,
        path: &str,
    ) -> Option<FsResult<(Instant, BTreeMap<String, Meta>)>> {
        let root = dot_root(path)?;
        self.settle_copies(path).await;
        let generation = self.generation();
        let changes = self.inner.table.lock().unwrap().listing_changes;
        let ttl = self.inner.options.attr_timeout;
        let usable = |t: &Tree| {
            t.generation == generation && t.listing_changes == changes && t.at.elapsed() < ttl
        };
        let kept = self
            .inner
            .dot_trees
            .trees
            .lock()
            .unwrap()
            .get(root)
            .cloned();
        let tree = match kept {
            Some(tree) if usable(&tree) => tree,
            _ => {
                let at = Instant::now();
                let entries = match self.inner.api.list_tree_s3(root, DOT_TREE_MAX).await {
                    Ok(Some(entries)) if !entries.is_empty() => entries,
                    // Empty: missing or empty (the gateway answers both alike); the folder's
                    // own listing tells.
                    Ok(Some(_)) => return None,
                    Ok(None) => {
                        let mut too_big = self.inner.dot_trees.too_big.lock().unwrap();
                        too_big.put(root.to_string(), Instant::now());
                        return None;
                    }
                    // A backend without recursive listings.
                    Err(ApiError::InvalidRequest(_)) => return None,
                    Err(e) => return Some(Err(FsError::api(format!("listing {root}"), e))),
                };
                self.inner.outage.answered();
                let mut folders: HashMap<String, Vec<S3Entry>> = HashMap::new();
                folders.insert(root.to_string(), Vec::new());
                let below = format!("{root}/");
                for entry in entries {
                    let entry_path = match &entry {
                        S3Entry::Object(o) => o.path.as_str(),
                        S3Entry::Folder(f) => f.as_str(),
                    };
                    // Untrusted: only what lies below the root counts.
                    if !entry_path.starts_with(&below) {
                        continue;
                    }
                    if let S3Entry::Folder(f) = &entry {
                        folders.entry(f.clone()).or_default();
                    }
                    folders
                        .entry(parent_path(entry_path).to_string())
                        .or_default()
                        .push(entry);
                }
                let tree = Arc::new(Tree {
                    at,
                    generation,
                    listing_changes: changes,
                    folders,
                });
                self.inner
                    .dot_trees
                    .trees
                    .lock()
                    .unwrap()
                    .put(root.to_string(), tree.clone());
                tree
            }
        };
        let Some(entries) = tree.folders.get(path) else {
            return Some(Err(FsError::NotFound(path.to_string())));
        };
        // What the last listing of the folder said: a Uuid, a folder's metadata.
        let previous: BTreeMap<String, Meta> = {
            let table = self.inner.table.lock().unwrap();
            table
                .by_path
                .get(path)
                .and_then(|ino| table.inodes.get(ino))
                .and_then(|d| d.listing.as_ref())
                .map(|l| l.children.clone())
                .unwrap_or_default()
        };
        let mut children = BTreeMap::new();
        for entry in entries {
            let (entry_path, meta) = match entry {
                S3Entry::Object(object) => (object.path.as_str(), Meta::from_object(object)),
                S3Entry::Folder(folder) => (folder.as_str(), Meta::folder()),
            };
            let name: String = base_name(entry_path).nfc().collect();
            if name.is_empty() || name == ".pydio" || crate::api::names::check_name(&name).is_err()
            {
                continue;
            }
            let meta = match previous.get(&name) {
                Some(prev) if prev.kind == FileKind::Directory && meta.kind == prev.kind => {
                    prev.clone()
                }
                Some(prev)
                    if prev.kind == meta.kind
                        && prev.etag == meta.etag
                        && prev.size == meta.size =>
                {
                    Meta {
                        uuid: prev.uuid.clone(),
                        ..meta
                    }
                }
                _ => meta,
            };
            children.entry(name).or_insert(meta);
        }
        Some(Ok((tree.at, children)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topmost_dot_folder_of_a_path() {
        assert_eq!(dot_root("ws/repo/.git/refs/heads"), Some("ws/repo/.git"));
        assert_eq!(dot_root("ws/repo/.git"), Some("ws/repo/.git"));
        assert_eq!(dot_root("ws/a/.x/b/.y"), Some("ws/a/.x"));
        assert_eq!(dot_root("ws/repo/src"), None);
        assert_eq!(dot_root(".ws/a"), None, "a workspace is never one");
        assert_eq!(dot_root(""), None);
    }
}
