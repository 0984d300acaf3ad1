//! Symbolic links, stored as rclone stores them (`--links`): Cells has no link type, so a
//! link `NAME` is a regular file `NAME.rclonelink` whose content is the link's target, the
//! bytes exactly as `symlink()` gave them (never resolved, never normalised). A tree written
//! by `rclone copy --links` reads as links through a `--links` mount and the other way round.
//!
//! This module owns the name translation and the rules that decide what is shown as a link;
//! the core keeps working on stored (server) names, and calls in here at its few entry points
//! that take a visible name (`lookup`, the `existing` node of `unlink`/`rename`/`rmdir`) and
//! where it shows one (`readdir`, attributes, kernel invalidations).
//!
//! Rules (all of them hold only in a mount started with `--links`; without it, a
//! `.rclonelink` file is an ordinary file under its own name and `symlink()` is refused with
//! EPERM, the log saying once which option stores links):
//! - A stored file `V.rclonelink` (V not empty) is shown as the link `V` when its content is
//!   a possible path: 1 to 4,095 bytes (`PATH_MAX` less its NUL) with no NUL byte. Anything else (bigger,
//!   empty, holding a NUL, a folder of that name) is shown as the regular file it is, under
//!   its stored name: a link is never made out of something that cannot be one.
//! - A plain file or folder `V` and a link stored as `V.rclonelink` cannot both appear under
//!   `V`: **the plain node wins**, and the link file then shows as the regular file
//!   `V.rclonelink`. Why: the plain node is what every other client (the web interface, a
//!   mount without `--links`, `cec ls`) shows under `V`, it holds data while a link holds
//!   only a pointer, and nothing gets hidden: both stay visible and removable.
//! - While `V.rclonelink` is shown as the link `V`, the name `V.rclonelink` itself does not
//!   exist in the mount (one node, one name, one kind: the kernel never sees an inode change
//!   its type).
//! - `lstat` of a link gives its target's length as size, mode `lrwxrwxrwx`; `rename`,
//!   `unlink` and the server's change events act on the stored file (a renamed link keeps
//!   its suffix on the server).
//! - The daemon never follows a link: it only stores and returns targets; the kernel resolves
//!   paths, as on any filesystem. Targets are checked when read (a server may hold anything):
//!   a body other than the listing's size, or over 4 KiB, is refused.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::{
    CellsFs, Entry, FileKind, FsError, FsResult, Meta, base_name, checked_path, join_path,
    parent_path, unix_now, valid_name,
};

/// The suffix rclone gives the file that stores a link.
pub const SUFFIX: &str = ".rclonelink";

/// The longest target shown as a link, in bytes: Linux's `PATH_MAX` (4,096) counts the
/// terminating NUL, and the kernel refuses a longer `symlink()` target or `readlink` reply.
pub const MAX_TARGET: u64 = 4095;

/// The visible name of a stored name that may hold a link (`V.rclonelink` with V not empty).
pub fn visible_of(stored: &str) -> Option<&str> {
    stored.strip_suffix(SUFFIX).filter(|v| !v.is_empty())
}

/// The stored name of the link `visible`.
pub fn stored_of(visible: &str) -> String {
    format!("{visible}{SUFFIX}")
}

/// Whether content of `size` bytes may be a link's target.
pub fn size_fits(size: u64) -> bool {
    (1..=MAX_TARGET).contains(&size)
}

/// Whether `target` may be shown as a link's target: 1 to 4,095 bytes, no NUL.
pub fn valid_target(target: &[u8]) -> bool {
    size_fits(target.len() as u64) && !target.contains(&0)
}

/// What a stored file's content was found to be: the size and ETag it was read at, and the
/// target when the file is shown as a link (`None`: not a link).
type Known = (u64, String, Option<Bytes>);

/// The links state of a mount: which stored files were found to be links, by content.
#[derive(Default)]
pub(super) struct Links {
    /// Stored path → (size and ETag the content was read at, the target when the file is
    /// shown as a link, `None` when it is not).
    known: Mutex<HashMap<String, Known>>,
    /// The refusal of `symlink()` without `--links` was logged.
    refusal_logged: AtomicBool,
}

impl Links {
    fn remember(&self, path: &str, meta: &Meta, target: Option<Bytes>) {
        let mut known = self.known.lock().unwrap();
        // Bounded: the entries of folders long gone are dropped wholesale past this size.
        if known.len() > 100_000 {
            known.clear();
        }
        known.insert(path.to_string(), (meta.size, meta.etag.clone(), target));
    }

    /// What is known of `path` at this content: `Some(target)` when shown as a link.
    fn known(&self, path: &str, meta: &Meta) -> Option<Option<Bytes>> {
        let known = self.known.lock().unwrap();
        let (size, etag, target) = known.get(path)?;
        (*size == meta.size && *etag == meta.etag && !etag.is_empty()).then(|| target.clone())
    }
}

impl CellsFs {
    fn links_on(&self) -> bool {
        self.inner.options.links
    }

    /// A stored file that may be a link by its name, kind and size (content unchecked).
    fn link_candidate(&self, path: &str, meta: &Meta) -> bool {
        self.links_on()
            && meta.kind == FileKind::File
            && size_fits(meta.size)
            && visible_of(base_name(path)).is_some()
    }

    /// The target of the stored file `path` when its content makes it a link (reads the
    /// content once per version). Does not look at a plain sibling (see [`Self::resolve`]).
    async fn link_content(&self, path: &str, meta: &Meta) -> FsResult<Option<Bytes>> {
        if !self.link_candidate(path, meta) {
            return Ok(None);
        }
        if let Some(known) = self.inner.links.known(path, meta) {
            return Ok(known);
        }
        let body = self.fetch_range(path, 0, meta.size).await?;
        let target = (body.len() as u64 == meta.size && valid_target(&body)).then_some(body);
        self.inner.links.remember(path, meta, target.clone());
        Ok(target)
    }

    /// The size of the link shown for `path`, for attributes (memory only: `lookup` and
    /// `readdir` read the content before they show the entry).
    pub(super) fn link_len(&self, path: &str, meta: &Meta) -> Option<u64> {
        if !self.link_candidate(path, meta) {
            return None;
        }
        self.inner
            .links
            .known(path, meta)
            .flatten()
            .map(|t| t.len() as u64)
    }

    /// The stored path and metadata behind the visible `name` in folder `parent` (`None`
    /// when nothing is shown under that name). Without `--links`, the name itself.
    pub(super) async fn resolve(
        &self,
        parent: &str,
        name: &str,
    ) -> FsResult<(String, Option<Meta>)> {
        let path = join_path(parent, name);
        let meta = self.fetch_meta(&path, true).await?;
        if !self.links_on() {
            return Ok((path, meta));
        }
        if let Some(visible) = visible_of(name) {
            // A stored link file is reachable by its own name only while it is not shown
            // as the link `visible`.
            if let Some(m) = &meta
                && self.link_candidate(&path, m)
            {
                let plain = self.fetch_meta(&join_path(parent, visible), true).await?;
                if plain.is_some() {
                    self.inner.links.remember(&path, m, None);
                } else if self.link_content(&path, m).await?.is_some() {
                    return Ok((path, None));
                }
            }
            return Ok((path, meta));
        }
        if meta.is_some() {
            return Ok((path, meta));
        }
        let stored = stored_of(name);
        if stored.len() > 255 {
            return Ok((path, None));
        }
        let link_path = join_path(parent, &stored);
        if let Some(m) = self.fetch_meta(&link_path, true).await?
            && self.link_content(&link_path, &m).await?.is_some()
        {
            return Ok((link_path, Some(m)));
        }
        Ok((path, None))
    }

    /// Whether a `lookup` of `name` may be answered from memory without the link rules
    /// (a `.rclonelink` name, or a name memory knows absent, may be a link's).
    pub(super) fn plain_lookup(&self, name: &OsStr, found: bool) -> bool {
        !self.links_on() || (found && !name.to_str().is_some_and(|n| n.ends_with(SUFFIX)))
    }

    /// The names `readdir` shows for a folder's stored children: stored name → visible name,
    /// for those shown as links (reads the targets it does not know yet).
    pub(super) async fn shown_links(
        &self,
        folder: &str,
        children: &std::collections::BTreeMap<String, Meta>,
    ) -> FsResult<HashMap<String, String>> {
        let mut shown = HashMap::new();
        if !self.links_on() {
            return Ok(shown);
        }
        for (name, meta) in children {
            let path = join_path(folder, name);
            let Some(visible) = visible_of(name) else {
                continue;
            };
            if !self.link_candidate(&path, meta) {
                continue;
            }
            if children.contains_key(visible) {
                self.inner.links.remember(&path, meta, None);
                continue;
            }
            if self.link_content(&path, meta).await?.is_some() {
                shown.insert(name.clone(), visible.to_string());
            }
        }
        Ok(shown)
    }

    /// The stored name a rename gives the node `from` (found under the visible `name`) when
    /// it moves to the visible `new_name`: a link keeps its suffix.
    pub(super) fn stored_new_name(&self, from: &str, name: &OsStr, new_name: &OsStr) -> OsString {
        let visible = valid_name(name).ok();
        if self.links_on() && visible.as_deref() != Some(base_name(from)) {
            let mut stored = new_name.to_owned();
            stored.push(SUFFIX);
            return stored;
        }
        new_name.to_owned()
    }

    /// Rename (see [`Self::rename_stored`]); with `--links`, the node the rename replaces
    /// in the other form is removed too: a link renamed over the plain file `y` (`ln -sf`
    /// over a file) stores `y.rclonelink` and removes `y`, which would otherwise win the
    /// name; a plain file renamed over the link `y` removes `y.rclonelink`.
    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        let displaced = self
            .displaced_by_rename(parent, name, new_parent, new_name)
            .await?;
        if displaced.is_some() && flags & super::RENAME_NOREPLACE != 0 {
            return Err(FsError::Exists(new_name.to_string_lossy().into_owned()));
        }
        self.rename_stored(parent, name, new_parent, new_name, flags)
            .await?;
        if let Some(path) = displaced {
            let removed = async {
                self.check_writable(&path).await?;
                self.settle_background(&path).await;
                self.delete_on_server(&path, FileKind::File, true).await
            };
            match removed.await {
                Ok(()) => self.removed_locally(&path),
                Err(e) => {
                    self.record_error(format!("{path}: replaced by a rename, not removed: {e}"))
                }
            }
        }
        Ok(())
    }

    /// The stored file a rename of visible `name` to visible `new_name` displaces in the
    /// other form (see [`Self::rename`]).
    async fn displaced_by_rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> FsResult<Option<String>> {
        if !self.links_on() {
            return Ok(None);
        }
        let (from, _) = self.existing(parent, name).await?;
        let folder = self.dir_path(new_parent)?;
        let visible = valid_name(new_name)?;
        let source_is_link = valid_name(name).ok().as_deref() != Some(base_name(&from));
        let other = if source_is_link {
            join_path(&folder, &visible)
        } else {
            let stored = stored_of(&visible);
            if stored.len() > 255 {
                return Ok(None);
            }
            join_path(&folder, &stored)
        };
        if other == from {
            return Ok(None);
        }
        let Some(meta) = self.fetch_meta(&other, true).await? else {
            return Ok(None);
        };
        let displaced = if source_is_link {
            meta.kind == FileKind::File
        } else {
            visible_of(base_name(&from)).is_none()
                && self.link_content(&other, &meta).await?.is_some()
        };
        Ok(displaced.then_some(other))
    }

    /// `symlink()`: with `--links`, store `NAME.rclonelink` holding `target`; refused
    /// (EPERM) otherwise.
    pub async fn symlink(&self, parent: u64, name: &OsStr, target: &OsStr) -> FsResult<Entry> {
        self.versions_refuse(parent, name)?;
        if !self.links_on() {
            if !self
                .inner
                .links
                .refusal_logged
                .swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    "symbolic link {} refused: Cells has no links; mount with --links \
                     (fstab/mount.cec: -o links) to store them as NAME.rclonelink files, \
                     as rclone --links does",
                    name.to_string_lossy()
                );
            }
            return Err(FsError::NotSupported(format!(
                "{}: Cells cannot store symbolic links (mount with --links to store them as \
                 .rclonelink files)",
                name.to_string_lossy()
            )));
        }
        let target = target.as_encoded_bytes();
        if target.len() as u64 > MAX_TARGET {
            return Err(FsError::NameTooLong(format!(
                "link target of {} bytes",
                target.len()
            )));
        }
        if !valid_target(target) {
            return Err(FsError::InvalidArgument("empty link target".into()));
        }
        let folder = self.dir_path(parent)?;
        let visible = valid_name(name)?;
        let stored_name = stored_of(&visible);
        let path = checked_path(&folder, OsStr::new(&stored_name))?;
        self.check_writable(&path).await?;
        if self.resolve(&folder, &visible).await?.1.is_some()
            || self.fetch_meta(&path, true).await?.is_some()
        {
            return Err(FsError::Exists(join_path(&folder, &visible)));
        }
        let _turn = self.inner.order.turn(&[&path]).await;
        let body = Bytes::copy_from_slice(target);
        let options = self.inner.options.upload_options.clone();
        let api = self.inner.api.clone();
        let etag = self
            .retry()
            .run(|| api.put_object(&path, body.clone(), &options))
            .await
            .map_err(|e| FsError::api(&path, e))?;
        let meta = Meta {
            uuid: String::new(),
            kind: FileKind::File,
            size: body.len() as u64,
            mtime: unix_now(),
            etag,
            user: None,
        };
        self.inner.links.remember(&path, &meta, Some(body));
        self.inner.negative.lock().unwrap().pop(&path);
        self.inner.overlay.remove(&path);
        {
            let mut table = self.inner.table.lock().unwrap();
            if let Some(listing) = table.listing_mut(parent_path(&path)) {
                listing
                    .children
                    .insert(base_name(&path).to_string(), meta.clone());
            }
        }
        self.looked_up(path, Some(meta))
    }

    /// `readlink()`: the target of a link, as stored.
    pub async fn readlink(&self, ino: u64) -> FsResult<Bytes> {
        let (path, meta) = {
            let table = self.inner.table.lock().unwrap();
            let data = table.get(ino)?;
            (data.path.clone(), data.meta.clone())
        };
        match self.link_content(&path, &meta).await? {
            Some(target) => Ok(target),
            None => Err(FsError::InvalidArgument(format!("{path} is not a link"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_translate_both_ways() {
        assert_eq!(stored_of("lib64"), "lib64.rclonelink");
        assert_eq!(visible_of("lib64.rclonelink"), Some("lib64"));
        assert_eq!(visible_of("a.b.rclonelink"), Some("a.b"));
        // The bare suffix has no visible name: it stays a file.
        assert_eq!(visible_of(".rclonelink"), None);
        assert_eq!(visible_of("lib64"), None);
        assert_eq!(visible_of("x.rclonelink.txt"), None);
        // A link whose name itself ends in the suffix round-trips (rclone does the same).
        assert_eq!(
            visible_of(&stored_of("odd.rclonelink")),
            Some("odd.rclonelink")
        );
    }

    #[test]
    fn only_what_can_be_a_path_is_a_target() {
        assert!(valid_target(b"lib"));
        assert!(valid_target(b"/etc/passwd"));
        assert!(valid_target(&[b'a'; 4095]));
        assert!(!valid_target(&[b'a'; 4096]), "PATH_MAX with its NUL");
        assert!(!valid_target(b""), "empty");
        assert!(!valid_target(b"a\0b"), "NUL");
        assert!(size_fits(1) && size_fits(4095) && !size_fits(0) && !size_fits(4096));
    }

    fn meta(size: u64, etag: &str) -> Meta {
        Meta {
            uuid: String::new(),
            kind: FileKind::File,
            size,
            mtime: 0,
            etag: etag.into(),
            user: None,
        }
    }

    #[test]
    fn a_known_target_holds_only_for_the_content_it_was_read_at() {
        let links = Links::default();
        links.remember(
            "w/a.rclonelink",
            &meta(3, "e1"),
            Some(Bytes::from_static(b"lib")),
        );
        assert_eq!(
            links.known("w/a.rclonelink", &meta(3, "e1")),
            Some(Some(Bytes::from_static(b"lib")))
        );
        assert_eq!(links.known("w/a.rclonelink", &meta(3, "e2")), None);
        assert_eq!(links.known("w/a.rclonelink", &meta(4, "e1")), None);
        // Without an ETag, content cannot be told apart: always read again.
        links.remember("w/b.rclonelink", &meta(3, ""), None);
        assert_eq!(links.known("w/b.rclonelink", &meta(3, "")), None);
    }
}
