//! Extended attributes: what Cells knows of a node beyond its bytes, as `user.cells.*`.
//!
//! | name | value | writable |
//! |---|---|---|
//! | `user.cells.uuid` | the node's Uuid | no (EPERM) |
//! | `user.cells.etag` | a file's Etag | no (EPERM) |
//! | `user.cells.tags` | the node's tags, comma-separated (`usermeta-tags`) | set / remove |
//! | `user.cells.bookmark` | `1` when the user bookmarked the node (`bookmark`) | set / remove |
//! | `user.cells.share` | the public URL of the node's public link | no (EPERM) |
//!
//! Where the values come from: a REST listing or stat carries them in the node's `MetaStore`
//! (`usermeta-tags`, `bookmark`, `workspaces_shares`), so they are cached with the rest of
//! the node's metadata ([`UserMeta`] in the cache's `Meta`) and answered without a request
//! while that metadata is trusted; stale metadata is re-read first (as `getattr` would). A
//! node known only from the S3 gateway (dotfiles, a fresh upload) has no user metadata in
//! cache: the first xattr call stats it over REST. The public URL is not in the listing (only
//! the link's id is): it is asked once (`GET /share/link/{Uuid}`) and kept for the attribute
//! timeout.
//!
//! Invariants:
//! - A write returns only once the server has stored it (the filesystem never reports
//!   success for what is not stored); the cached value is then updated at once, and the
//!   server's UPDATE_USER_META event (our echo, or another client's change) drops it like any
//!   metadata change.
//! - Values from the server are untrusted: tags longer than [`MAX_TAGS_BYTES`], holding a NUL
//!   or not a string are ignored (with a warning), link ids must look like Uuids, URLs are
//!   bounded (all checked in `api::usermeta`). Tags written are bounded by the same limit
//!   (ERANGE, as setxattr(2) says of a value past a filesystem's limit).
//! - Names this filesystem never has are answered at once, without looking at the inode
//!   ([`CellsFs::getxattr_never`]); unknown `user.*` names cannot be set (EOPNOTSUPP: Cells
//!   stores no arbitrary attributes); read-only ones answer EPERM, as a read-only attribute
//!   is not a matter of file permissions (EACCES would suggest a chmod could help).
//! - A file created here and not uploaded yet has no Cells attributes; setting one fails
//!   with EBUSY until it is on the server.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde_json::Value;

use super::{CellsFs, FileKind, FsError, FsResult, Meta, base_name, parent_path};
use crate::api::Node;
use crate::api::usermeta::{self, BOOKMARK_NAMESPACE, MAX_TAGS_BYTES, TAGS_NAMESPACE};

/// The read-only extended attribute holding the node's Uuid.
pub const XATTR_UUID: &str = "user.cells.uuid";
/// The read-only extended attribute holding the file's Etag.
pub const XATTR_ETAG: &str = "user.cells.etag";
/// The node's tags, comma-separated.
pub const XATTR_TAGS: &str = "user.cells.tags";
/// `1` when the node is bookmarked.
pub const XATTR_BOOKMARK: &str = "user.cells.bookmark";
/// The public URL of the node's public link (read-only).
pub const XATTR_SHARE: &str = "user.cells.share";

/// Public link URLs kept at most (each asked once per attribute timeout).
const MAX_CACHED_URLS: usize = 1024;

/// `setxattr` flags (Linux values).
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;

/// The user metadata of a node, as its listing or stat carried it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct UserMeta {
    /// Comma-separated tags; `None` when untagged.
    pub tags: Option<String>,
    pub bookmark: bool,
    /// The Uuid of the node's (first) public link.
    pub link: Option<String>,
}

impl UserMeta {
    /// What a REST node says (never `None`: a REST node always tells its user metadata).
    pub(super) fn from_node(node: &Node) -> Option<Arc<UserMeta>> {
        static EMPTY: OnceLock<Arc<UserMeta>> = OnceLock::new();
        let user = UserMeta {
            tags: usermeta::tags_of(node),
            bookmark: usermeta::is_bookmarked(node),
            link: usermeta::public_link_of(node),
        };
        if user == UserMeta::default() {
            Some(EMPTY.get_or_init(Default::default).clone())
        } else {
            Some(Arc::new(user))
        }
    }
}

/// Normalise tags written by the user: trimmed, empty ones dropped, comma-joined.
fn normalise_tags(value: &[u8]) -> FsResult<Option<String>> {
    if value.len() > MAX_TAGS_BYTES {
        return Err(FsError::XattrTooLarge(format!(
            "{XATTR_TAGS}: {} bytes, at most {MAX_TAGS_BYTES}",
            value.len()
        )));
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| FsError::InvalidArgument(format!("{XATTR_TAGS}: not UTF-8")))?;
    if text.contains('\0') {
        return Err(FsError::InvalidArgument(format!(
            "{XATTR_TAGS}: holds a NUL byte"
        )));
    }
    let tags: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    Ok((!tags.is_empty()).then(|| tags.join(",")))
}

/// `true` to set a bookmark, `false` to clear it.
fn bookmark_value(value: &[u8]) -> FsResult<bool> {
    match value.trim_ascii() {
        b"1" | b"true" | b"yes" => Ok(true),
        b"" | b"0" | b"false" | b"no" => Ok(false),
        _ => Err(FsError::InvalidArgument(format!(
            "{XATTR_BOOKMARK}: write 1 to bookmark, 0 (or remove the attribute) to clear"
        ))),
    }
}

/// Public link URLs by link Uuid, with when they were asked.
#[derive(Default)]
pub(super) struct LinkUrls(Mutex<HashMap<String, (String, Instant)>>);

/// What a write changes.
enum Change {
    Tags(Option<String>),
    Bookmark(bool),
}

impl CellsFs {
    /// `Some(error)` when `name` is no attribute this filesystem ever has, answered without
    /// looking at the inode: `ls -l` asks for `security.selinux` and `system.posix_acl_access`
    /// of every file, and the kernel writes ask for `security.capability`.
    pub fn getxattr_never(name: &OsStr) -> Option<FsError> {
        match name.to_str() {
            Some(
                XATTR_UUID
                | XATTR_ETAG
                | XATTR_TAGS
                | XATTR_BOOKMARK
                | XATTR_SHARE
                | super::versions::XATTR_VERSION,
            ) => None,
            _ => Some(FsError::NoAttribute(name.to_string_lossy().into_owned())),
        }
    }

    /// The path, metadata and whether the node is only here (created or changed, not
    /// uploaded) of `ino`.
    fn xattr_node(&self, ino: u64) -> FsResult<(String, Meta, bool)> {
        let table = self.inner.table.lock().unwrap();
        let data = table.get(ino)?;
        let pending = data.local || data.file.as_ref().is_some_and(|f| f.dirty());
        Ok((data.path.clone(), data.meta.clone(), pending))
    }

    /// The Uuid and user metadata of `ino`, from trusted metadata, else re-read (`getattr`'s
    /// way, then a REST stat when only the gateway described the node). `None` for the root
    /// and for a node not on the server yet.
    async fn user_meta(&self, ino: u64) -> FsResult<Option<(String, String, Arc<UserMeta>)>> {
        let trusted = {
            let table = self.inner.table.lock().unwrap();
            let data = table.get(ino)?;
            self.attr_trusted(ino, data)
        };
        if !trusted {
            self.getattr(ino, None).await?;
        }
        let (path, meta, pending) = self.xattr_node(ino)?;
        if path.is_empty() || pending {
            return Ok(None);
        }
        if let Some(user) = meta.user
            && !meta.uuid.is_empty()
        {
            return Ok(Some((path, meta.uuid, user)));
        }
        self.settle_copies(&path).await;
        let node = self
            .inner
            .api
            .stat(&path)
            .await
            .map_err(|e| FsError::api(&path, e))?
            .ok_or_else(|| FsError::NotFound(path.clone()))?;
        let Some(user) = UserMeta::from_node(&node) else {
            return Ok(None);
        };
        {
            let mut table = self.inner.table.lock().unwrap();
            if let Ok(data) = table.get_mut(ino)
                && data.path == path
                && data.meta.etag == meta.etag
            {
                data.meta.uuid = node.uuid.clone();
                data.meta.user = Some(user.clone());
            }
        }
        Ok((!node.uuid.is_empty()).then_some((path, node.uuid, user)))
    }

    pub async fn getxattr(&self, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        if super::versions::is_virtual(ino) {
            return self.versions_getxattr(ino, name);
        }
        let (path, meta, pending) = self.xattr_node(ino)?;
        let missing = || FsError::NoAttribute(format!("{path}: {}", name.to_string_lossy()));
        if path.is_empty() || pending {
            return Err(missing());
        }
        match name.to_str() {
            Some(XATTR_UUID) => {
                let mut uuid = meta.uuid.clone();
                if uuid.is_empty() {
                    self.settle_copies(&path).await;
                }
                if uuid.is_empty()
                    && let Ok(Some(node)) = self.inner.api.stat(&path).await
                {
                    uuid = node.uuid;
                    let mut table = self.inner.table.lock().unwrap();
                    if let Ok(data) = table.get_mut(ino) {
                        data.meta.uuid = uuid.clone();
                    }
                }
                if uuid.is_empty() {
                    return Err(missing());
                }
                Ok(uuid.into_bytes())
            }
            Some(XATTR_ETAG) if meta.kind == FileKind::File && !meta.etag.is_empty() => {
                Ok(meta.etag.into_bytes())
            }
            Some(XATTR_TAGS) => {
                let (_, _, user) = self.user_meta(ino).await?.ok_or_else(missing)?;
                user.tags
                    .clone()
                    .map(String::into_bytes)
                    .ok_or_else(missing)
            }
            Some(XATTR_BOOKMARK) => {
                let (_, _, user) = self.user_meta(ino).await?.ok_or_else(missing)?;
                if user.bookmark {
                    Ok(b"1".to_vec())
                } else {
                    Err(missing())
                }
            }
            Some(XATTR_SHARE) => {
                let (path, _, user) = self.user_meta(ino).await?.ok_or_else(missing)?;
                let link = user.link.as_deref().ok_or_else(missing)?;
                Ok(self.link_url(&path, link).await?.into_bytes())
            }
            _ => Err(missing()),
        }
    }

    /// The public URL of the link `link`, asked at most once per attribute timeout.
    async fn link_url(&self, path: &str, link: &str) -> FsResult<String> {
        let ttl = self.inner.options.attr_timeout;
        if let Some((url, at)) = self.inner.link_urls.0.lock().unwrap().get(link)
            && at.elapsed() < ttl
        {
            return Ok(url.clone());
        }
        let url = self
            .inner
            .api
            .share_link_url(link)
            .await
            .map_err(|e| FsError::api(path, e))?;
        let mut urls = self.inner.link_urls.0.lock().unwrap();
        if urls.len() >= MAX_CACHED_URLS {
            urls.clear();
        }
        urls.insert(link.to_string(), (url.clone(), Instant::now()));
        Ok(url)
    }

    /// The attribute names, NUL-terminated and concatenated (the kernel's format).
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        if super::versions::is_virtual(ino) {
            return self.versions_listxattr(ino);
        }
        let (path, kind) = self.path_of(ino)?;
        let mut out = Vec::new();
        if path.is_empty() {
            return Ok(out);
        }
        let mut add = |name: &str| {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        };
        add(XATTR_UUID);
        if kind == FileKind::File {
            add(XATTR_ETAG);
        }
        // The names of the user metadata the node has; if the server cannot say now, the
        // names known without it (a listing must not fail for them).
        match self.user_meta(ino).await {
            Ok(Some((_, _, user))) => {
                if user.tags.is_some() {
                    add(XATTR_TAGS);
                }
                if user.bookmark {
                    add(XATTR_BOOKMARK);
                }
                if user.link.is_some() {
                    add(XATTR_SHARE);
                }
            }
            Ok(None) => {}
            Err(e) if e.errno() == libc::ENOENT => return Err(e),
            Err(e) => tracing::debug!("{path}: user metadata unknown for listxattr: {e}"),
        }
        Ok(out)
    }

    /// `setxattr`: tags and bookmark are stored on the server before this returns; the other
    /// Cells attributes are read-only (EPERM), any other name is unsupported (EOPNOTSUPP).
    pub async fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        let change = match self.xattr_name(ino, name)? {
            XATTR_TAGS => Change::Tags(normalise_tags(value)?),
            _ => Change::Bookmark(bookmark_value(value)?),
        };
        self.change_user_meta(ino, name, change, flags).await
    }

    /// `removexattr`: clears tags or the bookmark on the server (ENODATA when absent).
    pub async fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        let change = match self.xattr_name(ino, name)? {
            XATTR_TAGS => Change::Tags(None),
            _ => Change::Bookmark(false),
        };
        self.change_user_meta(ino, name, change, XATTR_REPLACE)
            .await
    }

    /// The writable attribute `name` is, or why it cannot be written.
    fn xattr_name(&self, ino: u64, name: &OsStr) -> FsResult<&'static str> {
        self.versions_refuse_ino(ino)?;
        let path = self.path_of(ino).map(|(p, _)| p).unwrap_or_default();
        match name.to_str() {
            Some(XATTR_TAGS) if !path.is_empty() => Ok(XATTR_TAGS),
            Some(XATTR_BOOKMARK) if !path.is_empty() => Ok(XATTR_BOOKMARK),
            Some(n @ (XATTR_UUID | XATTR_ETAG | XATTR_SHARE | XATTR_TAGS | XATTR_BOOKMARK)) => {
                Err(FsError::NotPermitted(format!(
                    "{path}: extended attribute {n} is read-only here (the public link is \
                     made with `cec share`; {XATTR_TAGS} and {XATTR_BOOKMARK} can be set on \
                     files and folders)"
                )))
            }
            _ => Err(FsError::XattrNotSupported(format!(
                "{path}: {} (Cells stores no arbitrary extended attributes; {XATTR_TAGS} and \
                 {XATTR_BOOKMARK} can be set)",
                name.to_string_lossy()
            ))),
        }
    }

    async fn change_user_meta(
        &self,
        ino: u64,
        name: &OsStr,
        change: Change,
        flags: i32,
    ) -> FsResult<()> {
        let shown = name.to_string_lossy();
        let (path, _, pending) = self.xattr_node(ino)?;
        if self.inner.options.read_only {
            return Err(FsError::ReadOnly(path));
        }
        if pending {
            return Err(FsError::Busy(format!(
                "{path}: not on the server yet; set {shown} once it is uploaded (after close)"
            )));
        }
        let (path, uuid, user) = self
            .user_meta(ino)
            .await?
            .ok_or_else(|| FsError::NoAttribute(format!("{path}: {shown}")))?;
        let exists = match &change {
            Change::Tags(_) => user.tags.is_some(),
            Change::Bookmark(_) => user.bookmark,
        };
        if flags & XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists(format!("{path}: {shown}")));
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoAttribute(format!("{path}: {shown}")));
        }
        let mut updated = (*user).clone();
        let (namespace, value) = match change {
            Change::Tags(tags) => {
                updated.tags = tags.clone();
                (TAGS_NAMESPACE, tags.map(Value::String))
            }
            Change::Bookmark(on) => {
                updated.bookmark = on;
                (BOOKMARK_NAMESPACE, on.then(|| Value::String("true".into())))
            }
        };
        self.inner
            .api
            .set_user_meta(&uuid, namespace, value.as_ref())
            .await
            .map_err(|e| FsError::api(&path, e))?;
        // Stored: the cache says so at once (the server's event confirms it later).
        let updated = Arc::new(updated);
        let mut table = self.inner.table.lock().unwrap();
        if let Ok(data) = table.get_mut(ino)
            && data.meta.uuid == uuid
        {
            data.meta.user = Some(updated.clone());
        }
        if let Some(&parent) = table.by_path.get(parent_path(&path))
            && let Some(listing) = table
                .inodes
                .get_mut(&parent)
                .and_then(|d| d.listing.as_mut())
            && let Some(child) = listing.children.get_mut(base_name(&path))
            && child.uuid == uuid
        {
            child.user = Some(updated);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A node as a REST listing sends it, with this `MetaStore`.
    fn node(meta: Value) -> Node {
        crate::api::http::parse_node(&json!({"Uuid": "u", "Path": "ws/a", "MetaStore": meta}))
    }

    #[test]
    fn user_metadata_is_read_from_the_listing_and_bounded() {
        let u = UserMeta::from_node(&node(json!({
            "usermeta-tags": "a,b", "bookmark": "true",
            "workspaces_shares": [{"UUID": "r-1", "Scope": 2}, {"UUID": "l-1", "Scope": 3}]
        })))
        .unwrap();
        assert_eq!(u.tags.as_deref(), Some("a,b"));
        assert!(u.bookmark);
        assert_eq!(u.link.as_deref(), Some("l-1"));
        let hostile = UserMeta::from_node(&node(json!({
            "usermeta-tags": "x".repeat(MAX_TAGS_BYTES + 1),
            "workspaces_shares": [{"UUID": "../../x", "Scope": 3}]
        })))
        .unwrap();
        assert_eq!(*hostile, UserMeta::default());
        let nul = UserMeta::from_node(&node(json!({"usermeta-tags": "a\u{0}b"}))).unwrap();
        assert_eq!(nul.tags, None);
    }

    #[test]
    fn written_tags_are_normalised_and_bounded() {
        assert_eq!(
            normalise_tags(b" invoice, 2026,,").unwrap().as_deref(),
            Some("invoice,2026")
        );
        assert_eq!(normalise_tags(b" , ").unwrap(), None);
        assert_eq!(
            normalise_tags(&vec![b'a'; MAX_TAGS_BYTES + 1])
                .unwrap_err()
                .errno(),
            libc::ERANGE
        );
        assert_eq!(normalise_tags(b"\xff").unwrap_err().errno(), libc::EINVAL);
        assert!(bookmark_value(b"1").unwrap());
        assert!(!bookmark_value(b"0").unwrap());
        assert!(bookmark_value(b"maybe").is_err());
    }
}
