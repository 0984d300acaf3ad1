//! The gateway's recursive listing of a folder (ListObjectsV2 with an empty delimiter): one
//! request for a whole subtree, which the mount uses to revalidate a dot-folder (`.git`) at
//! once rather than folder by folder (issue 30).
//!
//! Invariants: the gateway never pages and takes `max-keys` as a node limit (cells-api.md
//! §6.7), so `limit + 1` is asked for and an answer holding more than `limit` entries is
//! reported as too big (`None`), never as a complete tree; the body is capped like every
//! gateway listing; the folder itself (the prefix the gateway appends to its common
//! prefixes) is not an entry of its tree.

use super::{HttpCellsApi, clean_path};
use crate::api::{ApiResult, S3Entry};

impl HttpCellsApi {
    pub(super) async fn list_tree_s3_impl(
        &self,
        path: &str,
        limit: usize,
    ) -> ApiResult<Option<Vec<S3Entry>>> {
        let path = clean_path(path);
        let max_keys = limit.saturating_add(1).to_string();
        let entries: Vec<S3Entry> = self
            .list_s3(&path, "", &max_keys)
            .await?
            .into_iter()
            .filter(|e| !matches!(e, S3Entry::Folder(f) if f.trim_matches('/') == path))
            .collect();
        Ok((entries.len() <= limit).then_some(entries))
    }
}
