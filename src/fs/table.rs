//! The inode table: every node the kernel or an open handle may name, by inode number and by
//! mount path, with the server metadata the cache keeps for it ([`Meta`]) and, for a folder,
//! its cached listing ([`Listing`]).
//!
//! Invariants:
//! - Inode numbers are never reused while the kernel may hold them: an inode leaves the table
//!   only when its lookup count is zero, no handle is open on it and it has no pending upload
//!   ([`Table::maybe_drop`]); the root ([`ROOT_INO`]) never leaves.
//! - A node with a Uuid gets the same number in every mount and across renames
//!   ([`uuid_ino`]); other nodes get counted numbers, always below [`UUID_INO_BASE`].
//! - `by_path` names each reachable inode once and is ordered, so a folder's subtree is one
//!   contiguous range ([`subtree_of`]); a detached inode (unlinked, replaced) keeps its last
//!   path but is no longer in `by_path`.
//! - Server metadata refreshes only a clean inode: one created here or with changes not yet
//!   uploaded keeps what the mount knows ([`Table::intern`]).
//! - Every change this mount makes to a cached listing bumps `listing_changes`, so a listing
//!   fetched meanwhile (which may predate the change) is not kept (see `folders`).
//!
//! The table is a plain structure behind one mutex (`Inner::table`), never held across an
//! `.await`; the methods here do no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::{FileKind, FileState, FsError, FsResult, ROOT_INO, subtree_of, unix_now, xattrs};
use crate::api::{Node, NodeKind, ObjectInfo};

/// Server metadata of one node, as the cache keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Meta {
    /// Empty when only the S3 listing has been seen (dotfiles).
    pub(super) uuid: String,
    pub(super) kind: FileKind,
    pub(super) size: u64,
    pub(super) mtime: i64,
    pub(super) etag: String,
    /// Tags, bookmark, public link (see `xattrs`); `None` when the source (the S3 gateway,
    /// this mount) did not tell them.
    pub(super) user: Option<Arc<xattrs::UserMeta>>,
}

impl Meta {
    pub(super) fn from_node(node: &Node) -> Meta {
        Meta {
            user: xattrs::UserMeta::from_node(node),
            uuid: node.uuid.clone(),
            kind: match node.kind {
                NodeKind::File => FileKind::File,
                NodeKind::Folder => FileKind::Directory,
            },
            size: node.size,
            mtime: node.mtime,
            etag: node.etag.clone(),
        }
    }

    pub(super) fn from_object(object: &ObjectInfo) -> Meta {
        Meta {
            user: None,
            uuid: String::new(),
            kind: FileKind::File,
            size: object.size,
            mtime: object.mtime,
            etag: object.etag.clone(),
        }
    }

    pub(super) fn local_file() -> Meta {
        Meta {
            user: None,
            uuid: String::new(),
            kind: FileKind::File,
            size: 0,
            mtime: unix_now(),
            etag: String::new(),
        }
    }

    pub(super) fn folder() -> Meta {
        Meta {
            user: None,
            uuid: String::new(),
            kind: FileKind::Directory,
            size: 0,
            mtime: unix_now(),
            etag: String::new(),
        }
    }

    /// The data-cache key of this content. An Etag that is an MD5 names the bytes
    /// themselves (a single-part upload's, cells-api.md §6.8), whatever the node or its
    /// path: content this mount wrote is found again after any rename (see
    /// `CellsFs::keep_written`). Otherwise the node's Uuid, or its path when no Uuid is known.
    pub(super) fn content_key(&self, path: &str) -> String {
        if is_md5_hex(&self.etag) {
            md5_content_key(&self.etag)
        } else if self.uuid.is_empty() {
            format!("path:{path}:{}", self.etag)
        } else {
            format!("{}:{}", self.uuid, self.etag)
        }
    }
}

/// The data-cache key of the content whose MD5 (hex) is `md5`.
pub(super) fn md5_content_key(md5: &str) -> String {
    format!("md5:{md5}")
}

/// An MD5 in hex: what a single-part upload's ETag is on Cells.
pub(super) fn is_md5_hex(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Inode numbers derived from a Uuid are at or above this; counted ones stay below it.
const UUID_INO_BASE: u64 = 1 << 40;

/// The inode number of the node with this Uuid: the same in every mount, on every machine,
/// and across renames of the node or of any folder above it (Cells keeps a node's Uuid when
/// it moves), so tools that remember inode numbers (`find`, `du`, git's index, backups) see
/// one tree. Below 2^63: some programs hold inode numbers in signed 64-bit integers.
fn uuid_ino(uuid: &str) -> Option<u64> {
    use sha2::Digest;
    if uuid.is_empty() {
        return None;
    }
    let digest = sha2::Sha256::digest(uuid.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    Some(UUID_INO_BASE + n % ((1 << 63) - UUID_INO_BASE))
}

/// A folder listing, complete (REST listing plus the gateway's dotfiles).
pub(super) struct Listing {
    pub(super) children: BTreeMap<String, Meta>,
    pub(super) at: Instant,
    pub(super) generation: u64,
}

pub(super) struct InodeData {
    /// Mount path (`""` for the root). A detached inode keeps its last path.
    pub(super) path: String,
    pub(super) kind: FileKind,
    pub(super) meta: Meta,
    /// When `meta` was last confirmed by the server, and under which generation.
    pub(super) validated: Option<(Instant, u64)>,
    pub(super) listing: Option<Listing>,
    pub(super) nlookup: u64,
    pub(super) handles: u32,
    pub(super) file: Option<Arc<FileState>>,
    /// Created here, not yet on the server.
    pub(super) local: bool,
    /// When this mount created the file (kept after its first upload): a file nobody else
    /// can have linked to yet, which a rename may copy instead of moving (see `rename`).
    pub(super) created_here: Option<Instant>,
    /// Unlinked or replaced: no longer reachable by path.
    pub(super) detached: bool,
    /// Etag of the content when the kernel last opened it (for keep_cache).
    pub(super) kernel_etag: Option<String>,
    /// A folder: when the listing whose entries the kernel was last given was fetched (its
    /// copy of them may be reused while that listing is still the trusted one).
    pub(super) kernel_listing: Option<Instant>,
}

impl InodeData {
    /// A node as first seen: known by `path` with the server's `meta` (kind included), no
    /// listing, handle or staged content yet, `nlookup` lookups held by the kernel.
    pub(super) fn new(path: String, meta: Meta, nlookup: u64) -> InodeData {
        InodeData {
            path,
            kind: meta.kind,
            meta,
            validated: None,
            listing: None,
            nlookup,
            handles: 0,
            file: None,
            local: false,
            created_here: None,
            detached: false,
            kernel_etag: None,
            kernel_listing: None,
        }
    }
}

#[derive(Default)]
pub(super) struct Table {
    /// Boxed: the map's slots stay small (a folder of 100,000 entries grows it by doubling).
    pub(super) inodes: HashMap<u64, Box<InodeData>>,
    /// Path -> inode, ordered so that a folder's subtree is one contiguous range.
    pub(super) by_path: BTreeMap<String, u64>,
    pub(super) next_ino: u64,
    /// Bumped by every change this mount makes to a folder's cached listing: a listing
    /// fetched from the server while one happened may predate it and is not kept.
    pub(super) listing_changes: u64,
}

impl Table {
    pub(super) fn get(&self, ino: u64) -> FsResult<&InodeData> {
        self.inodes
            .get(&ino)
            .map(|data| &**data)
            .ok_or_else(|| FsError::NotFound(format!("inode {ino}")))
    }

    pub(super) fn get_mut(&mut self, ino: u64) -> FsResult<&mut InodeData> {
        self.inodes
            .get_mut(&ino)
            .map(|data| &mut **data)
            .ok_or_else(|| FsError::NotFound(format!("inode {ino}")))
    }

    /// The inode of `path`, created when unknown; server metadata refreshes a clean inode.
    pub(super) fn intern(
        &mut self,
        path: &str,
        meta: Meta,
        validated: Option<(Instant, u64)>,
    ) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            let data = self.inodes.get_mut(&ino).expect("by_path is consistent");
            if data.kind == meta.kind {
                let busy = data.local || data.file.as_ref().is_some_and(|f| f.dirty());
                if !busy {
                    // The same content: its time never moves backwards (the mount showed
                    // its own clock after uploading it; the server's may be a second behind).
                    let mtime = if meta.etag == data.meta.etag && !meta.etag.is_empty() {
                        meta.mtime.max(data.meta.mtime)
                    } else {
                        meta.mtime
                    };
                    data.meta = Meta { mtime, ..meta };
                    data.validated = validated;
                }
                return ino;
            }
            // The node changed type on the server: the old inode is gone.
            self.detach(ino);
        }
        let ino = match uuid_ino(&meta.uuid) {
            Some(ino) if !self.inodes.contains_key(&ino) => ino,
            // No Uuid known (a file created here, a dotfile seen only by the S3 listing), or
            // another node holds that number (two Uuids hashing alike): a counted number.
            _ => {
                self.next_ino += 1;
                self.next_ino
            }
        };
        self.inodes.insert(
            ino,
            Box::new(InodeData {
                validated,
                ..InodeData::new(path.to_string(), meta, 0)
            }),
        );
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    pub(super) fn detach(&mut self, ino: u64) {
        if let Some(data) = self.inodes.get_mut(&ino) {
            data.detached = true;
            if self.by_path.get(&data.path) == Some(&ino) {
                self.by_path.remove(&data.path);
            }
        }
        self.maybe_drop(ino);
    }

    /// Remove an inode the kernel no longer references and nothing else uses.
    pub(super) fn maybe_drop(&mut self, ino: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(data) = self.inodes.get(&ino) else {
            return;
        };
        let pending = data.file.as_ref().is_some_and(|f| f.dirty());
        if data.nlookup == 0 && data.handles == 0 && !pending && (data.detached || !data.local) {
            let data = self.inodes.remove(&ino).expect("present");
            if self.by_path.get(&data.path) == Some(&ino) {
                self.by_path.remove(&data.path);
            }
        }
    }

    /// `(path, ino)` of `folder` and everything below it (see [`subtree_of`]).
    pub(super) fn subtree(&self, folder: &str) -> Vec<(String, u64)> {
        subtree_of(&self.by_path, folder)
            .map(|(p, &i)| (p.clone(), i))
            .collect()
    }

    /// The inodes of `folder` and everything below it.
    pub(super) fn subtree_inos(&self, folder: &str) -> Vec<u64> {
        subtree_of(&self.by_path, folder).map(|(_, &i)| i).collect()
    }

    pub(super) fn listing_mut(&mut self, dir_path: &str) -> Option<&mut Listing> {
        self.listing_changes += 1;
        let ino = *self.by_path.get(dir_path)?;
        self.inodes.get_mut(&ino)?.listing.as_mut()
    }

    pub(super) fn drop_listing(&mut self, dir_path: &str) {
        self.listing_changes += 1;
        if let Some(&ino) = self.by_path.get(dir_path)
            && let Some(data) = self.inodes.get_mut(&ino)
        {
            data.listing = None;
        }
    }
}
