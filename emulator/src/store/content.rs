//! File content: temp files for uploads, sealing them into `blobs/`, committing them as the
//! content of a file (creating parents, keeping the Uuid on overwrite), small contents in one
//! call, placeholders of uploads in progress, and opening a file's content for reading.
//!
//! Invariants:
//! - A blob is fsynced and renamed into `blobs/` before it is indexed, and a committed blob
//!   is never modified: an overwrite indexes a new blob, then unlinks the old one.
//! - An overwrite keeps the node's Uuid; every commit is announced on the change channel.

use std::collections::BTreeMap;
use std::path::PathBuf;

use md5::Digest as _;
use serde_json::Value;

use super::{
    CellsHasher, ChangeKind, NodeKind, NodeRecord, Resolved, Store, StoreError, TEMPORARY_ETAG,
    TempBlob, ensure_folders_internal, get_node, guess_mime, hash_file, insert_node, internal_err,
    merge_meta, new_folder, now_secs, parent_of, update_node,
};

impl Store {
    /// A new temp file for an upload.
    pub fn tmp_file(&self) -> Result<TempBlob, StoreError> {
        let path = self
            .data_dir
            .join("tmp")
            .join(uuid::Uuid::new_v4().to_string());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempBlob {
            path,
            file: Some(file),
            md5: Some(md5::Md5::default()),
            block: CellsHasher::new(),
            written: 0,
            etag_override: None,
            sealed: false,
        })
    }

    /// Seal a temp blob into `blobs/`: returns (content id, size, md5 hex, cells hash, etag).
    fn seal(&self, mut blob: TempBlob) -> Result<(String, u64, String, String), StoreError> {
        use std::io::Write;
        let file = blob
            .file
            .take()
            .ok_or_else(|| internal_err("temp blob already sealed"))?;
        let mut file = file;
        file.flush()?;
        file.sync_all()?;
        let len = file.metadata()?.len();
        drop(file);
        let hashes_hold = len == blob.written && blob.block.is_valid();
        let (etag, cells) = match (hashes_hold, blob.md5.take(), blob.etag_override.take()) {
            (true, Some(md5), etag) => (
                etag.unwrap_or_else(|| hex::encode(md5.finalize())),
                std::mem::take(&mut blob.block).finish(),
            ),
            (true, None, Some(etag)) => (etag, std::mem::take(&mut blob.block).finish()),
            (_, _, etag) => {
                let (md5hex, cells) = hash_file(&blob.path)?;
                (etag.unwrap_or(md5hex), cells)
            }
        };
        let content_id = uuid::Uuid::new_v4().simple().to_string();
        let dest = self.blob_path(&content_id);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::rename(&blob.path, &dest)?;
        blob.sealed = true;
        if let Some(dir) = dest.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok((content_id, len, etag, cells))
    }

    /// Make `blob` the content of the file at `path`: parents are created, a folder at `path`
    /// (IsAFolder) or a file where a parent must be (NotAFolder) is refused; an existing file
    /// (or placeholder) keeps its Uuid. `meta` entries are merged into the node's metadata.
    /// Emits CREATE (new node) or UPDATE_CONTENT.
    pub fn commit_file(
        &self,
        login: &str,
        path: &str,
        blob: TempBlob,
        mime: Option<String>,
        meta: BTreeMap<String, Value>,
    ) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() || r.is_ws_root() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        r.require_write(path)?;
        let (content_id, size, etag, cells_hash) = self.seal(blob)?;
        let result = self.index_content(&r, path, &content_id, size, etag, cells_hash, mime, meta);
        if result.is_err() {
            let _ = std::fs::remove_file(self.blob_path(&content_id));
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn index_content(
        &self,
        r: &Resolved,
        path: &str,
        content_id: &str,
        size: u64,
        etag: String,
        cells_hash: String,
        mime: Option<String>,
        meta: BTreeMap<String, Value>,
    ) -> Result<NodeRecord, StoreError> {
        let mut created = Vec::new();
        let (node, old_blob, is_new) = {
            let db = self.lock();
            let existing = get_node(&db, &r.internal)?;
            if existing.as_ref().is_some_and(|e| !e.is_leaf()) {
                return Err(StoreError::IsAFolder(path.into()));
            }
            ensure_folders_internal(&db, parent_of(&r.internal), &mut created)?;
            let name = r.internal.rsplit('/').next().unwrap_or("");
            let mime = mime
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| guess_mime(name));
            let (node, old_blob, is_new) = match existing {
                Some(mut n) => {
                    let is_placeholder = n.content_id.is_none();
                    let old = n.content_id.take();
                    n.size = size;
                    n.mtime = now_secs();
                    n.etag = etag;
                    n.mime = Some(mime);
                    n.cells_hash = Some(cells_hash);
                    n.content_id = Some(content_id.to_string());
                    merge_meta(&mut n.meta, meta);
                    update_node(&db, &n)?;
                    let _ = is_placeholder;
                    (n, old, false)
                }
                None => {
                    let mut n = new_folder(&r.internal);
                    n.kind = NodeKind::Leaf;
                    n.size = size;
                    n.etag = etag;
                    n.mime = Some(mime);
                    n.cells_hash = Some(cells_hash);
                    n.content_id = Some(content_id.to_string());
                    merge_meta(&mut n.meta, meta);
                    insert_node(&db, &n)?;
                    (n, None, true)
                }
            };
            (self.present(&db, r, node)?, old_blob, is_new)
        };
        if let Some(old) = old_blob {
            let _ = std::fs::remove_file(self.blob_path(&old));
        }
        for c in created {
            self.emit(ChangeKind::Create, None, Some(c));
        }
        let mut ev = node.clone();
        ev.path.clear();
        self.emit(
            if is_new {
                ChangeKind::Create
            } else {
                ChangeKind::UpdateContent
            },
            None,
            Some(ev),
        );
        Ok(node)
    }

    /// Write a whole small content (helper for REST LEAF creation, samples and tests).
    pub fn put_bytes(
        &self,
        login: &str,
        path: &str,
        bytes: &[u8],
        mime: Option<String>,
    ) -> Result<NodeRecord, StoreError> {
        use std::io::Write;
        let mut blob = self.tmp_file()?;
        blob.write_all(bytes)?;
        self.commit_file(login, path, blob, mime, BTreeMap::new())
    }

    /// Index an upload in flight at `path` (Etag `"temporary"`, size `clear_size`) unless a
    /// file already exists there (then it is returned unchanged). Emits CREATE when created.
    pub fn create_placeholder(
        &self,
        login: &str,
        path: &str,
        clear_size: u64,
    ) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() || r.is_ws_root() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        r.require_write(path)?;
        let mut created = Vec::new();
        let (node, is_new) = {
            let db = self.lock();
            match get_node(&db, &r.internal)? {
                Some(n) if !n.is_leaf() => return Err(StoreError::IsAFolder(path.into())),
                Some(n) => (self.present(&db, &r, n)?, false),
                None => {
                    ensure_folders_internal(&db, parent_of(&r.internal), &mut created)?;
                    let mut n = new_folder(&r.internal);
                    n.kind = NodeKind::Leaf;
                    n.size = clear_size;
                    n.etag = TEMPORARY_ETAG.into();
                    n.mime = Some(guess_mime(n.name()));
                    insert_node(&db, &n)?;
                    (self.present(&db, &r, n)?, true)
                }
            }
        };
        for c in created {
            self.emit(ChangeKind::Create, None, Some(c));
        }
        if is_new {
            let mut ev = node.clone();
            ev.path.clear();
            self.emit(ChangeKind::Create, None, Some(ev));
        }
        Ok(node)
    }

    /// Remove the placeholder at `path` if it is still one (aborted upload). Emits DELETE.
    pub fn drop_placeholder(&self, login: &str, path: &str) -> Result<(), StoreError> {
        let r = self.resolve(login, path)?;
        let removed = {
            let db = self.lock();
            match get_node(&db, &r.internal)? {
                Some(n) if n.is_leaf() && n.content_id.is_none() => {
                    db.execute("DELETE FROM nodes WHERE uuid = ?1", [&n.uuid])?;
                    Some(n)
                }
                _ => None,
            }
        };
        if let Some(n) = removed {
            self.emit(ChangeKind::Delete, Some(n), None);
        }
        Ok(())
    }

    fn content_record(
        &self,
        db: &rusqlite::Connection,
        r: &Resolved,
        path: &str,
    ) -> Result<(NodeRecord, PathBuf), StoreError> {
        let n = get_node(db, &r.internal)?.ok_or_else(|| StoreError::NotFound(path.into()))?;
        if !n.is_leaf() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        let cid = n
            .content_id
            .clone()
            .ok_or_else(|| StoreError::NotFound(format!("{path} (upload in progress)")))?;
        let n = self.present(db, r, n)?;
        Ok((n, self.blob_path(&cid)))
    }

    /// The file at `path` and the path of its immutable blob. Open it promptly: an overwrite
    /// unlinks the old blob (prefer [`Store::open_content_file`], race-free). NotFound for a
    /// placeholder without content; IsAFolder for a folder.
    pub fn open_content(
        &self,
        login: &str,
        path: &str,
    ) -> Result<(NodeRecord, PathBuf), StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        let db = self.lock();
        self.content_record(&db, &r, path)
    }

    /// Like [`Store::open_content`], with the blob already opened (under the index lock, so
    /// the file matches the record even if the node is overwritten right after).
    pub fn open_content_file(
        &self,
        login: &str,
        path: &str,
    ) -> Result<(NodeRecord, std::fs::File), StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        let db = self.lock();
        let (n, p) = self.content_record(&db, &r, path)?;
        let f = std::fs::File::open(p)?;
        Ok((n, f))
    }
}
