//! Changes to the tree: move/rename (a subtree's internal paths rewritten under one lock),
//! copy (content shared by id, new Uuids), delete (to the workspace's recycle bin, or for
//! good), restore from the recycle bin, and metadata edits.
//!
//! Invariants:
//! - A node's Uuid survives moves; a copy gets new Uuids.
//! - Writes need the workspace's write right (403 otherwise); a folder is never moved into
//!   itself; every mutation is announced on the change channel.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    ChangeKind, MetaEdit, NodeKind, NodeRecord, RECYCLE_BIN, RECYCLE_RESTORE_META, Resolved, Store,
    StoreError, desc_bounds, descendants, ensure_folders_internal, get_node, insert_node,
    internal_err, is_within, merge_meta, now_secs, parent_of, update_node,
};

impl Store {
    /// Rewrite the internal path of a node and its subtree (under the lock).
    fn relocate(&self, db: &rusqlite::Connection, from: &str, to: &str) -> Result<(), StoreError> {
        let (lo, hi) = desc_bounds(from);
        let from_len = from.chars().count() as i64;
        db.execute(
            "UPDATE nodes SET ipath = ?1 || substr(ipath, ?2 + 1),
                              parent = ?1 || substr(parent, ?2 + 1)
             WHERE ipath >= ?3 AND ipath < ?4",
            rusqlite::params![to, from_len, lo, hi],
        )?;
        db.execute(
            "UPDATE nodes SET ipath = ?1, parent = ?2 WHERE ipath = ?3",
            rusqlite::params![to, parent_of(to), from],
        )?;
        Ok(())
    }

    /// Move/rename `src` to `dst` (the full new path; its parent is created if missing).
    /// Uuids are kept. Refuses workspace roots, moving a folder into itself, and an existing
    /// `dst` (AlreadyExists). Needs write permission on both sides. Emits UPDATE_PATH.
    pub fn move_node(&self, login: &str, src: &str, dst: &str) -> Result<NodeRecord, StoreError> {
        let rs = self.resolve(login, src)?;
        let rd = self.resolve(login, dst)?;
        self.move_resolved(&rs, src, &rd, dst, None)
    }

    fn move_resolved(
        &self,
        rs: &Resolved,
        src: &str,
        rd: &Resolved,
        dst: &str,
        meta_edit: Option<&MetaEdit>,
    ) -> Result<NodeRecord, StoreError> {
        if rs.ws.is_none() || rs.is_ws_root() {
            return Err(StoreError::Forbidden(format!("cannot move {src}")));
        }
        if rd.ws.is_none() || rd.is_ws_root() {
            return Err(StoreError::AlreadyExists(dst.into()));
        }
        rs.require_write(src)?;
        rd.require_write(dst)?;
        let mut created = Vec::new();
        let (before, after) = {
            let mut db = self.lock();
            let n = get_node(&db, &rs.internal)?.ok_or_else(|| StoreError::NotFound(src.into()))?;
            if rs.internal == rd.internal {
                return Err(StoreError::AlreadyExists(dst.into()));
            }
            if is_within(&rd.internal, &rs.internal) {
                return Err(StoreError::Invalid(format!(
                    "cannot move {src} into itself"
                )));
            }
            if get_node(&db, &rd.internal)?.is_some() {
                return Err(StoreError::AlreadyExists(dst.into()));
            }
            let tx = db.transaction()?;
            ensure_folders_internal(&tx, parent_of(&rd.internal), &mut created)?;
            self.relocate(&tx, &rs.internal, &rd.internal)?;
            let mut moved =
                get_node(&tx, &rd.internal)?.ok_or_else(|| internal_err("moved node vanished"))?;
            if let Some(edit) = meta_edit {
                edit(&mut moved.meta);
                update_node(&tx, &moved)?;
            }
            tx.commit()?;
            let after = self.present(&db, rd, moved)?;
            let mut before = n;
            before.path = rs.user_path(&before.internal_path);
            (before, after)
        };
        for c in created {
            self.emit(ChangeKind::Create, None, Some(c));
        }
        let (mut s, mut t) = (before, after.clone());
        s.path.clear();
        t.path.clear();
        self.emit(ChangeKind::UpdatePath, Some(s), Some(t));
        Ok(after)
    }

    /// Copy `src` (file or whole folder) to `dst` (full new path). New Uuids. Emits CREATE for
    /// each created node.
    pub fn copy_node(&self, login: &str, src: &str, dst: &str) -> Result<NodeRecord, StoreError> {
        let rs = self.resolve(login, src)?;
        let rd = self.resolve(login, dst)?;
        if rs.ws.is_none() {
            return Err(StoreError::Forbidden(format!("cannot copy {src}")));
        }
        if rd.ws.is_none() || rd.is_ws_root() {
            return Err(StoreError::AlreadyExists(dst.into()));
        }
        rd.require_write(dst)?;
        let mut created = Vec::new();
        let top = {
            let mut db = self.lock();
            let n = get_node(&db, &rs.internal)?.ok_or_else(|| StoreError::NotFound(src.into()))?;
            if is_within(&rd.internal, &rs.internal) {
                return Err(StoreError::Invalid(format!(
                    "cannot copy {src} into itself"
                )));
            }
            if get_node(&db, &rd.internal)?.is_some() {
                return Err(StoreError::AlreadyExists(dst.into()));
            }
            let mut nodes = vec![n];
            if nodes[0].kind == NodeKind::Collection {
                nodes.extend(descendants(&db, &rs.internal)?);
            }
            let tx = db.transaction()?;
            ensure_folders_internal(&tx, parent_of(&rd.internal), &mut created)?;
            let now = now_secs();
            let mut new_blobs = Vec::new();
            let mut result = Ok(());
            for mut c in nodes {
                let rel = &c.internal_path[rs.internal.len()..];
                c.internal_path = format!("{}{rel}", rd.internal);
                c.uuid = uuid::Uuid::new_v4().to_string();
                c.mtime = now;
                c.meta.remove(RECYCLE_RESTORE_META);
                if let Some(cid) = c.content_id.take() {
                    let new_cid = uuid::Uuid::new_v4().simple().to_string();
                    let (from, to) = (self.blob_path(&cid), self.blob_path(&new_cid));
                    if let Some(dir) = to.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    if std::fs::hard_link(&from, &to).is_err()
                        && let Err(e) = std::fs::copy(&from, &to)
                    {
                        result = Err(StoreError::from(e));
                        break;
                    }
                    new_blobs.push(to);
                    c.content_id = Some(new_cid);
                }
                if let Err(e) = insert_node(&tx, &c) {
                    result = Err(e);
                    break;
                }
                created.push(c);
            }
            if let Err(e) = result {
                drop(tx);
                for b in new_blobs {
                    let _ = std::fs::remove_file(b);
                }
                return Err(e);
            }
            tx.commit()?;
            let top = get_node(&db, &rd.internal)?.ok_or_else(|| internal_err("copy vanished"))?;
            self.present(&db, &rd, top)?
        };
        for c in created {
            self.emit(ChangeKind::Create, None, Some(c));
        }
        Ok(top)
    }

    /// Delete a node (and its subtree). `permanently = false` moves it into its workspace's
    /// recycle bin (created on the fly, name made unique) and records its original location
    /// in `pydio:recycle_restore`; it is permanent anyway when the workspace skips the recycle
    /// bin or the node already is in a recycle bin. Workspace roots and the recycle bin folder
    /// itself are refused. Returns the node where it now is (its former location if deleted
    /// permanently). Emits UPDATE_PATH or DELETE.
    pub fn delete_node(
        &self,
        login: &str,
        path: &str,
        permanently: bool,
    ) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        let Some((ws, _)) = &r.ws else {
            return Err(StoreError::Forbidden("cannot delete the root".into()));
        };
        if r.is_ws_root() {
            return Err(StoreError::Forbidden(format!(
                "cannot delete workspace root {path}"
            )));
        }
        r.require_write(path)?;
        let bin = format!("{}/{RECYCLE_BIN}", r.root);
        if r.internal == bin {
            return Err(StoreError::Forbidden(
                "cannot delete the recycle bin".into(),
            ));
        }
        let permanent = permanently || ws.skip_recycle || is_within(&r.internal, &bin);
        if !permanent {
            let n = self.stat(login, path)?;
            let bin_path = r.user_path(&bin);
            {
                let db = self.lock();
                if get_node(&db, &bin)?.is_none() {
                    let mut created = Vec::new();
                    ensure_folders_internal(&db, &bin, &mut created)?;
                    let mut b = get_node(&db, &bin)?.ok_or_else(|| internal_err("no bin"))?;
                    b.meta.insert("recycle_bin".into(), Value::Bool(true));
                    update_node(&db, &b)?;
                }
            }
            // A free name in the bin.
            let name = n.name().to_string();
            let (stem, ext) = match name.rsplit_once('.') {
                Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
                _ => (name.clone(), String::new()),
            };
            let mut candidate = format!("{bin_path}/{name}");
            let mut i = 1;
            while self.stat(login, &candidate).is_ok() {
                candidate = format!("{bin_path}/{stem}-{i}{ext}");
                i += 1;
            }
            let rd = self.resolve(login, &candidate)?;
            let original = r.internal.clone();
            return self.move_resolved(
                &r,
                path,
                &rd,
                &candidate,
                Some(&move |m: &mut BTreeMap<String, Value>| {
                    m.insert(RECYCLE_RESTORE_META.into(), Value::String(original.clone()));
                }),
            );
        }
        let (node, blobs) = {
            let mut db = self.lock();
            let n = get_node(&db, &r.internal)?.ok_or_else(|| StoreError::NotFound(path.into()))?;
            let mut blobs: Vec<String> = n.content_id.iter().cloned().collect();
            let tx = db.transaction()?;
            if !n.is_leaf() {
                for d in descendants(&tx, &r.internal)? {
                    blobs.extend(d.content_id);
                }
                let (lo, hi) = desc_bounds(&r.internal);
                tx.execute(
                    "DELETE FROM nodes WHERE ipath >= ?1 AND ipath < ?2",
                    [lo, hi],
                )?;
            }
            tx.execute("DELETE FROM nodes WHERE uuid = ?1", [&n.uuid])?;
            tx.commit()?;
            let mut n = n;
            n.path = r.user_path(&n.internal_path);
            (n, blobs)
        };
        for b in blobs {
            let _ = std::fs::remove_file(self.blob_path(&b));
        }
        let mut ev = node.clone();
        ev.path.clear();
        self.emit(ChangeKind::Delete, Some(ev), None);
        Ok(node)
    }

    /// Move a node out of the recycle bin to its recorded original path (parents recreated).
    /// Invalid when the node has no restore record. Emits UPDATE_PATH.
    pub fn restore_node(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Err(StoreError::Invalid("cannot restore the root".into()));
        }
        let n = self.stat(login, path)?;
        let Some(Value::String(original)) = n.meta.get(RECYCLE_RESTORE_META).cloned() else {
            return Err(StoreError::Invalid(format!(
                "{path} is not in a recycle bin"
            )));
        };
        if !is_within(&original, &r.root) {
            return Err(StoreError::Invalid(format!(
                "{path} cannot be restored here"
            )));
        }
        let dst = r.user_path(&original);
        let rd = self.resolve(login, &dst)?;
        self.move_resolved(
            &r,
            path,
            &rd,
            &dst,
            Some(&|m: &mut BTreeMap<String, Value>| {
                m.remove(RECYCLE_RESTORE_META);
            }),
        )
    }

    /// Permanently delete a file (S3 DELETE). IsAFolder on a folder. Emits DELETE.
    pub fn delete_file(&self, login: &str, path: &str) -> Result<NodeRecord, StoreError> {
        let n = self.stat(login, path)?;
        if !n.is_leaf() {
            return Err(StoreError::IsAFolder(path.into()));
        }
        self.delete_node(login, path, true)
    }

    /// Merge metadata into a node (`Value::Null` removes a key). Emits UPDATE_META.
    pub fn set_meta(
        &self,
        login: &str,
        path: &str,
        meta: BTreeMap<String, Value>,
    ) -> Result<NodeRecord, StoreError> {
        let r = self.resolve(login, path)?;
        if r.ws.is_none() {
            return Err(StoreError::Forbidden("cannot edit the root".into()));
        }
        r.require_write(path)?;
        let node = {
            let db = self.lock();
            let mut n =
                get_node(&db, &r.internal)?.ok_or_else(|| StoreError::NotFound(path.into()))?;
            merge_meta(&mut n.meta, meta);
            update_node(&db, &n)?;
            self.present(&db, &r, n)?
        };
        let mut ev = node.clone();
        ev.path.clear();
        self.emit(ChangeKind::UpdateMeta, None, Some(ev));
        Ok(node)
    }
}
