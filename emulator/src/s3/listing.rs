//! ListObjects (v1 and v2) as the real gateway answers them (`ListPydioObjects`): the prefix
//! names a folder, its files become objects and its folders common prefixes, or every file
//! under it with an empty delimiter.
//!
//! Invariants:
//! - No pagination, but at most `max-keys` nodes (the real gateway passes it as the node
//!   limit); a missing folder lists as empty.

use s3s::S3Result;
use s3s::dto::*;

use crate::store::{NodeRecord, Store, StoreError};

use super::common::{Caller, blocking, store_error, strong_etag, timestamp};

impl Caller {
    /// The gateway listing (V1 and V2 share it) of `prefix`, off the async runtime.
    pub(super) async fn list(
        &self,
        prefix: &str,
        delimiter: &str,
        max_keys: i32,
    ) -> S3Result<(Vec<Object>, Vec<String>)> {
        let store = self.state.store.clone();
        let login = self.login.clone();
        let (p, d) = (prefix.to_owned(), delimiter.to_owned());
        blocking(move || list_pydio_objects(&store, &login, &p, &d, max_keys)).await
    }
}

/// `ListPydioObjects`: the prefix names a folder; files become objects, folders common
/// prefixes; no pagination, but at most `max_keys` nodes (the real gateway passes it as the
/// node limit); an empty delimiter lists recursively; `max_keys == 1` lists files only,
/// non-recursively; a missing folder lists as empty; when objects are returned for a
/// non-empty prefix, the prefix itself is appended to the common prefixes.
fn list_pydio_objects(
    store: &Store,
    login: &str,
    prefix: &str,
    delimiter: &str,
    max_keys: i32,
) -> S3Result<(Vec<Object>, Vec<String>)> {
    let tree_path = prefix.trim_start_matches('/');
    let folder = tree_path.trim_end_matches('/');
    let files_only = max_keys == 1;
    let recursive = delimiter.is_empty() && !files_only;
    let listed = if recursive {
        list_recursive_from(store, login, folder)
    } else {
        store.list(login, folder)
    };
    let nodes = match listed {
        Ok(nodes) => nodes,
        Err(StoreError::NotFound(_) | StoreError::NotAFolder(_)) => Vec::new(),
        Err(e) => return Err(store_error(e)),
    };
    let limit = usize::try_from(max_keys).ok().filter(|l| *l > 0);
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    let mut taken = 0usize;
    for node in nodes {
        if files_only && !node.is_leaf() {
            continue;
        }
        if limit.is_some_and(|l| taken >= l) {
            break;
        }
        taken += 1;
        if node.is_leaf() {
            objects.push(Object {
                key: Some(node.path.clone()),
                size: Some(i64::try_from(node.size).unwrap_or(i64::MAX)),
                last_modified: Some(timestamp(node.mtime)),
                e_tag: Some(strong_etag(&node.etag)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            });
        } else {
            prefixes.push(format!("{}/", node.path));
        }
    }
    if !objects.is_empty() && !prefix.trim_matches('/').is_empty() {
        prefixes.push(tree_path.to_owned());
    }
    Ok((objects, prefixes))
}

/// Every descendant of `folder`; from the virtual root, every workspace and its content.
fn list_recursive_from(
    store: &Store,
    login: &str,
    folder: &str,
) -> Result<Vec<NodeRecord>, StoreError> {
    if !folder.is_empty() {
        return store.list_recursive(login, folder);
    }
    let mut all = Vec::new();
    for root in store.list(login, "")? {
        let below = store.list_recursive(login, &root.path)?;
        all.push(root);
        all.extend(below);
    }
    Ok(all)
}

pub(super) fn common_prefix_list(prefixes: Vec<String>) -> Option<CommonPrefixList> {
    if prefixes.is_empty() {
        None
    } else {
        Some(
            prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(p) })
                .collect(),
        )
    }
}
