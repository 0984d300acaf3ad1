//! One page of a folder's children, read from the node table's indexes, as a real server
//! answers a page: its cost is the page's entries (plus walking the index past the offset),
//! not the whole folder. The REST listing (`rest.rs`) pages with it; what a page holds and the
//! `Pagination` quirks stay the REST handler's business.
//!
//! Invariants:
//! - A page is the slice `[offset, offset + limit)` of exactly the sequence [`Store::list`]
//!   then a stable sort by the asked field would give: by name (byte order), or by mtime with
//!   ties in name order; descending is that sequence reversed. The indexes `(parent, ipath)`
//!   and `(parent, mtime, ipath)` serve both without sorting.
//! - Sorting by size reads the whole folder (a folder's size is the sum of what it holds,
//!   computed per folder): no client pages by size, and the answer stays exact.
//! - Errors are [`Store::list`]'s: a missing folder is NotFound, a file NotAFolder.

use super::{
    NODE_COLS, NodeKind, NodeRecord, Resolved, Store, StoreError, get_node, row_to_record,
};

/// The order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    Name,
    Mtime,
    Size,
}

impl ListOrder {
    /// The REST `SortField` values the server knows; anything else sorts by name.
    pub fn from_sort_field(field: Option<&str>) -> ListOrder {
        match field.unwrap_or("") {
            "mtime" | "MTime" | "ajxp_modiftime" => ListOrder::Mtime,
            "size" | "Size" | "bytesize" => ListOrder::Size,
            _ => ListOrder::Name,
        }
    }
}

/// Which children, in which order, from where.
#[derive(Debug, Clone, Copy)]
pub struct PageQuery {
    pub order: ListOrder,
    pub descending: bool,
    /// Only children of this kind.
    pub kind: Option<NodeKind>,
    pub offset: usize,
    /// `None`: to the end.
    pub limit: Option<usize>,
}

/// Sort `children` as [`PageQuery`] says, in memory (stable: ties keep their order).
pub fn sort_children(children: &mut [NodeRecord], order: ListOrder, descending: bool) {
    match order {
        ListOrder::Mtime => children.sort_by_key(|c| c.mtime),
        ListOrder::Size => children.sort_by_key(|c| c.size),
        ListOrder::Name => children.sort_by(|a, b| a.name().cmp(b.name())),
    }
    if descending {
        children.reverse();
    }
}

fn kind_code(kind: NodeKind) -> i64 {
    if kind == NodeKind::Leaf { 0 } else { 1 }
}

impl Store {
    /// The folder at `folder_path` for listing: NotFound if missing, NotAFolder on a file;
    /// `None` for the virtual root (the workspaces).
    fn listed_folder(
        &self,
        login: &str,
        folder_path: &str,
    ) -> Result<Option<Resolved>, StoreError> {
        let r = self.resolve(login, folder_path)?;
        if r.ws.is_none() {
            return Ok(None);
        }
        let db = self.lock();
        let n =
            get_node(&db, &r.internal)?.ok_or_else(|| StoreError::NotFound(folder_path.into()))?;
        if n.is_leaf() {
            return Err(StoreError::NotAFolder(folder_path.into()));
        }
        Ok(Some(r))
    }

    /// How many children the folder has (of `kind` only, if given), dotfiles included.
    pub fn count_children(
        &self,
        login: &str,
        folder_path: &str,
        kind: Option<NodeKind>,
    ) -> Result<usize, StoreError> {
        let Some(r) = self.listed_folder(login, folder_path)? else {
            let roots = self.workspaces(login).into_iter().map(|w| w.root);
            return Ok(roots.filter(|n| kind.is_none_or(|k| n.kind == k)).count());
        };
        let db = self.lock();
        let n: i64 = match kind {
            None => db.query_row(
                "SELECT COUNT(*) FROM nodes WHERE parent = ?1",
                [&r.internal],
                |row| row.get(0),
            )?,
            Some(k) => db.query_row(
                "SELECT COUNT(*) FROM nodes WHERE parent = ?1 AND kind = ?2",
                rusqlite::params![r.internal, kind_code(k)],
                |row| row.get(0),
            )?,
        };
        Ok(n as usize)
    }

    /// One page of the folder's children (dotfiles and the recycle bin included).
    pub fn list_page(
        &self,
        login: &str,
        folder_path: &str,
        q: &PageQuery,
    ) -> Result<Vec<NodeRecord>, StoreError> {
        let r = match self.listed_folder(login, folder_path)? {
            Some(r) if q.order != ListOrder::Size => r,
            // The workspaces, or an order the index cannot give: the whole folder, sorted.
            _ => {
                let mut all = self.list(login, folder_path)?;
                all.retain(|c| q.kind.is_none_or(|k| c.kind == k));
                sort_children(&mut all, q.order, q.descending);
                let end = q.limit.map_or(all.len(), |l| q.offset.saturating_add(l));
                return Ok(all.into_iter().take(end).skip(q.offset).collect());
            }
        };
        let direction = if q.descending { "DESC" } else { "ASC" };
        let order_by = match q.order {
            ListOrder::Mtime => format!("mtime {direction}, ipath {direction}"),
            _ => format!("ipath {direction}"),
        };
        let kind_clause = if q.kind.is_some() {
            "AND kind = ?2"
        } else {
            "AND ?2 IS NULL"
        };
        let sql = format!(
            "SELECT {NODE_COLS} FROM nodes WHERE parent = ?1 {kind_clause} \
             ORDER BY {order_by} LIMIT ?3 OFFSET ?4"
        );
        let db = self.lock();
        let mut stmt = db.prepare_cached(&sql)?;
        // SQLite: a negative LIMIT means no limit.
        let limit = q.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
        let rows = stmt.query_map(
            rusqlite::params![
                r.internal,
                q.kind.map(kind_code),
                limit,
                q.offset.min(i64::MAX as usize) as i64
            ],
            row_to_record,
        )?;
        let page = rows.collect::<Result<Vec<_>, _>>()?;
        page.into_iter().map(|c| self.present(&db, &r, c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose `personal-files` holds `names` (files, except names ending in `/`).
    fn store_with(names: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::EmuConfig::for_tests(dir.path())).unwrap();
        for (i, name) in names.iter().enumerate() {
            let path = format!("personal-files/{}", name.trim_end_matches('/'));
            let node = if name.ends_with('/') {
                store.create_folders("alice", &path).unwrap()
            } else {
                store
                    .put_bytes("alice", &path, &vec![b'x'; i % 3], None)
                    .unwrap()
            };
            // Times with ties (three values), so that the name order breaks them.
            store
                .lock()
                .execute(
                    "UPDATE nodes SET mtime = ?1 WHERE uuid = ?2",
                    rusqlite::params![1_700_000_000 + (i as i64 * 7) % 3, node.uuid],
                )
                .unwrap();
        }
        (dir, store)
    }

    /// Every page of every order equals the slice of the whole folder sorted in memory.
    #[test]
    fn pages_are_slices_of_the_sorted_folder_in_every_order() {
        let names = [
            "b.txt", ".hidden", "a/", "C.txt", "z", "é.txt", "aa.txt", "m/", ".git/", "0",
        ];
        let (_dir, store) = store_with(&names);
        let folder = "personal-files";
        for order in [ListOrder::Name, ListOrder::Mtime, ListOrder::Size] {
            for descending in [false, true] {
                for kind in [None, Some(NodeKind::Leaf), Some(NodeKind::Collection)] {
                    let mut all = store.list("alice", folder).unwrap();
                    all.retain(|c| kind.is_none_or(|k| c.kind == k));
                    sort_children(&mut all, order, descending);
                    let expected: Vec<String> = all.iter().map(|c| c.path.clone()).collect();
                    assert_eq!(
                        store.count_children("alice", folder, kind).unwrap(),
                        expected.len()
                    );
                    for limit in [1, 3, 4, 100] {
                        let mut paged = Vec::new();
                        let mut offset = 0;
                        while offset < expected.len() + limit {
                            let q = PageQuery {
                                order,
                                descending,
                                kind,
                                offset,
                                limit: Some(limit),
                            };
                            let page = store.list_page("alice", folder, &q).unwrap();
                            assert!(page.len() <= limit);
                            paged.extend(page.into_iter().map(|c| c.path));
                            offset += limit;
                        }
                        assert_eq!(
                            paged, expected,
                            "{order:?} desc={descending} {kind:?} {limit}"
                        );
                    }
                    let q = PageQuery {
                        order,
                        descending,
                        kind,
                        offset: 2,
                        limit: None,
                    };
                    let rest: Vec<String> = store
                        .list_page("alice", folder, &q)
                        .unwrap()
                        .into_iter()
                        .map(|c| c.path)
                        .collect();
                    assert_eq!(rest, expected[2.min(expected.len())..].to_vec());
                }
            }
        }
    }

    #[test]
    fn a_missing_folder_or_a_file_is_refused_like_a_full_listing() {
        let (_dir, store) = store_with(&["f.txt"]);
        let q = PageQuery {
            order: ListOrder::Name,
            descending: false,
            kind: None,
            offset: 0,
            limit: Some(10),
        };
        assert!(matches!(
            store.list_page("alice", "personal-files/nope", &q),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.list_page("alice", "personal-files/f.txt", &q),
            Err(StoreError::NotAFolder(_))
        ));
        assert!(matches!(
            store.count_children("alice", "personal-files/f.txt", None),
            Err(StoreError::NotAFolder(_))
        ));
        // The virtual root lists the workspaces, paged the same way.
        let all = store.list("alice", "").unwrap().len();
        assert!(all >= 1);
        assert_eq!(store.count_children("alice", "", None).unwrap(), all);
        assert_eq!(store.list_page("alice", "", &q).unwrap().len(), all.min(10));
    }
}
