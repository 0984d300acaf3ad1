//! The REST v1 calls of [`HttpCellsApi`] under `/a` (JSON rules of cells-api.md §1.3): the
//! server probe and bootconf, the session's login, node metadata (`/meta/bulk/get`, paged
//! folder listings, the workspaces), `stat` and folder creation; and the decoding of the
//! server's `treeNode` JSON into [`Node`] and [`Workspace`].
//!
//! Invariants:
//! - Everything the server sends is untrusted: an int64 may come as a string or a number
//!   ([`json_i64`]), a missing field is empty or 0, answers are read through a size cap
//!   ([`crate::api::body`]).
//! - A folder listing is bounded by [`HttpOptions::max_folder_entries`]: a child count
//!   announced over it is refused before any page is asked for, and the listing stops with an
//!   error when the pages hold more, or when a full page adds nothing (a server that ignores
//!   the offset), never looping or growing without end. Duplicates across pages are dropped.
//! - The folder itself and an empty path are never entries of its listing.
//!
//! [`HttpOptions::max_folder_entries`]: super::HttpOptions::max_folder_entries

use std::hash::BuildHasher;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::{HttpCellsApi, clean_path, describe_reqwest_error, encode_path};
use crate::api::body;
use crate::api::meta::{BulkAnswer, TreeNode};
use crate::api::{ApiError, ApiResult, Node, NodeKind, Workspace};

/// The page size of REST folder listings (the official client uses 100; `Limit` has no
/// documented cap, and a 10,000-entry folder then costs 10 requests instead of 100).
pub const LIST_PAGE: usize = 1000;
/// REST listing pages fetched at once when the folder's child count is known.
const LIST_PAGES_AT_ONCE: usize = 4;

impl HttpCellsApi {
    /// `GET /a/frontend/bootconf`, authenticated or not.
    pub async fn bootconf(&self, authenticated: bool) -> ApiResult<Value> {
        if authenticated {
            return self
                .rest_json_capped(
                    Method::GET,
                    "/frontend/bootconf",
                    None,
                    "bootconf",
                    body::BOOTCONF,
                )
                .await;
        }
        probe_server(&self.http, &self.base_url).await
    }

    /// The server's version (authenticated bootconf `backend.Version`).
    pub async fn server_version(&self) -> ApiResult<String> {
        let v = self.bootconf(true).await?;
        Ok(v.pointer("/backend/Version")
            .and_then(|x| x.as_str())
            .unwrap_or("unknown")
            .to_string())
    }

    /// The login of the token's user, from the XML of `GET /a/frontend/state`.
    pub async fn session_login(&self) -> ApiResult<String> {
        let resp = self
            .execute(self.rest_spec(Method::GET, "/frontend/state", None, "frontend state"))
            .await?;
        let text = body::read_capped_text(resp, body::STATE).await?;
        parse_state_login(&text).ok_or_else(|| {
            ApiError::InvalidResponse(
                "the server's /a/frontend/state has no <user id=...> (is this a Pydio Cells server?)"
                    .into(),
            )
        })
    }

    async fn bulk_meta(
        &self,
        paths: Vec<String>,
        limit: usize,
        offset: usize,
        subject: &str,
    ) -> ApiResult<Vec<TreeNode>> {
        Ok(self.bulk_meta_page(paths, limit, offset, subject).await?.0)
    }

    /// One page of a bulk meta request, with the folder's child count when the server gave
    /// it (`Pagination.Total`, present only when not everything was returned).
    async fn bulk_meta_page(
        &self,
        paths: Vec<String>,
        limit: usize,
        offset: usize,
        subject: &str,
    ) -> ApiResult<(Vec<TreeNode>, Option<usize>)> {
        let mut body = json!({"NodePaths": paths});
        if limit > 0 {
            body["Limit"] = json!(limit);
            body["Offset"] = json!(offset);
        }
        let cap = if limit > 0 {
            body::LISTING_PAGE
        } else {
            body::WORKSPACES
        };
        // Decoded straight into typed nodes: no JSON value per node (issue 27).
        let answer: BulkAnswer = self
            .rest_decoded_capped(Method::POST, "/meta/bulk/get", Some(body), subject, cap)
            .await?;
        let total = (answer.total > 0).then_some(answer.total as usize);
        Ok((answer.nodes, total))
    }

    pub(super) async fn rest_list_workspaces(&self) -> ApiResult<Vec<Workspace>> {
        let nodes = self
            .bulk_meta(vec!["".into(), "/*".into()], 0, 0, "workspaces")
            .await?;
        Ok(nodes
            .into_iter()
            .map(TreeNode::into_node)
            .filter(|n| !n.path.is_empty() && !n.path.contains('/'))
            .map(workspace_from_node)
            .collect())
    }

    pub(super) async fn rest_list_folder(&self, path: &str) -> ApiResult<Vec<Node>> {
        let path = clean_path(path);
        if path.is_empty() {
            return Ok(self
                .rest_list_workspaces()
                .await?
                .into_iter()
                .map(|w| w.root)
                .collect());
        }
        let pattern = vec![format!("{path}/*")];
        let mut listing = Listing::new(&path, self.options.max_folder_entries);
        let (first, total) = self
            .bulk_meta_page(pattern.clone(), LIST_PAGE, 0, &path)
            .await?;
        let mut last = first.len();
        let mut offset = first.len();
        listing.add(first)?;
        if last >= LIST_PAGE
            && let Some(total) = total
        {
            // The child count is known: the other pages at once, a few at a time (offsets
            // made lazily: the count is the server's word, checked against the cap first). A
            // page may hold more than LIST_PAGE nodes when the server skipped dotfiles; pages
            // then overlap, never leave a gap: duplicates are dropped.
            listing.check_total(total)?;
            let mut pages = futures::stream::iter((1..).map(|k| k * LIST_PAGE))
                .take_while(|o| futures::future::ready(*o < total))
                .map(|o| {
                    let pattern = pattern.clone();
                    let path = &path;
                    async move { (o, self.bulk_meta(pattern, LIST_PAGE, o, path).await) }
                })
                .buffered(LIST_PAGES_AT_ONCE);
            while let Some((o, page)) = pages.next().await {
                let page = page?;
                last = page.len();
                offset = o + page.len();
                listing.add(page)?;
            }
        }
        // Children created since the count (or no count given): page on until a short page.
        // A full page that adds nothing means the server ignores the offset: stop there.
        while last >= LIST_PAGE {
            let page = self
                .bulk_meta(pattern.clone(), LIST_PAGE, offset, &path)
                .await?;
            last = page.len();
            offset += page.len();
            if listing.add(page)? == 0 && last >= LIST_PAGE {
                return Err(ApiError::InvalidResponse(format!(
                    "{path}: the server sent again a full page of entries already listed (at offset {offset}); it does not page as Cells does, so the listing stops"
                )));
            }
        }
        Ok(listing.nodes)
    }

    pub(super) async fn rest_stat(&self, path: &str) -> ApiResult<Option<Node>> {
        let path = clean_path(path);
        if path.is_empty() {
            return Ok(Some(Node {
                uuid: String::new(),
                path: String::new(),
                kind: NodeKind::Folder,
                size: 0,
                mtime: 0,
                etag: String::new(),
                meta: Default::default(),
            }));
        }
        match self
            .rest_json(
                Method::GET,
                &format!("/tree/stat/{}", encode_path(&path)),
                None,
                &path,
            )
            .await
        {
            Ok(v) => Ok(v.get("Node").map(parse_node)),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn rest_create_folders(&self, paths: &[String]) -> ApiResult<Vec<Node>> {
        if paths.is_empty() {
            return Ok(vec![]);
        }
        let nodes: Vec<Value> = paths
            .iter()
            .map(|p| json!({"Path": clean_path(p), "Type": "COLLECTION"}))
            .collect();
        let v = self
            .rest_json(
                Method::POST,
                "/tree/create",
                Some(json!({"Nodes": nodes, "Recursive": false})),
                &paths[0],
            )
            .await?;
        Ok(v.get("Children")
            .and_then(|c| c.as_array())
            .map(|c| {
                c.iter()
                    .map(|n| {
                        let mut node = parse_node(n);
                        node.kind = NodeKind::Folder;
                        node
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Probe a server without credentials: `GET /a/frontend/bootconf` must answer Cells' JSON.
/// Errors are one sentence naming the URL.
pub async fn probe_server(http: &reqwest::Client, base_url: &str) -> ApiResult<Value> {
    let url = format!("{}/a/frontend/bootconf", base_url.trim_end_matches('/'));
    let resp = http
        .get(&url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| ApiError::Network(format!("{base_url}: {}", describe_reqwest_error(&e))))?;
    let status = resp.status();
    let not_cells = |why: String| {
        ApiError::InvalidResponse(format!(
            "{base_url} does not answer as a Pydio Cells server ({why})"
        ))
    };
    if !status.is_success() {
        return Err(not_cells(format!(
            "GET /a/frontend/bootconf returned HTTP {}",
            status.as_u16()
        )));
    }
    let bytes = body::read_capped(resp, body::BOOTCONF)
        .await
        .map_err(|e| match e {
            body::BodyError::TooLarge(_) => not_cells(e.to_string()),
            e => ApiError::Network(format!("{base_url}: {e}")),
        })?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| not_cells("GET /a/frontend/bootconf is not JSON".into()))?;
    if v.get("ENDPOINT_REST_API").is_none() && v.get("backend").is_none() {
        return Err(not_cells("its bootconf lacks the Cells keys".into()));
    }
    Ok(v)
}

/// The `id` of the first `<user>` element of `/a/frontend/state`.
pub fn parse_state_login(xml: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) | Ok(quick_xml::events::Event::Empty(e))
                if e.local_name().as_ref() == b"user" =>
            {
                for attr in e.attributes().flatten() {
                    if attr.key.local_name().as_ref() == b"id" {
                        return attr
                            .unescape_value()
                            .ok()
                            .map(|v| v.into_owned())
                            .filter(|v| !v.is_empty());
                    }
                }
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// An int64 that the server may send as a string or a number (or omit: 0).
pub fn json_i64(v: Option<&Value>) -> i64 {
    v.map(crate::api::meta::int64).unwrap_or(0)
}

/// Decode a `treeNode` (as a listing page is decoded, see [`crate::api::meta`]).
pub fn parse_node(v: &Value) -> Node {
    use serde::Deserialize;
    TreeNode::deserialize(v).unwrap_or_default().into_node()
}

/// A workspace root node as a [`Workspace`].
pub fn workspace_from_node(node: Node) -> Workspace {
    let ws = node.meta.workspace.as_deref().cloned().unwrap_or_default();
    let slug = if ws.slug.is_empty() {
        node.path.clone()
    } else {
        ws.slug
    };
    let (can_read, can_write) = if ws.permissions.is_empty() {
        (true, true)
    } else {
        (ws.permissions.contains('r'), ws.permissions.contains('w'))
    };
    let uuid = if ws.uuid.is_empty() {
        node.uuid.clone()
    } else {
        ws.uuid
    };
    Workspace {
        slug,
        uuid,
        label: ws.label,
        description: ws.description,
        scope: ws.scope.unwrap_or_default(),
        can_read,
        can_write,
        skip_recycle: ws.skip_recycle,
        root: node,
    }
}

/// A folder listing being paged in: its nodes without duplicates, bounded by a count. The
/// paths already listed are found through a table of indices into `nodes` (hashed by path),
/// not a second copy of every path.
struct Listing<'a> {
    folder: &'a str,
    max: usize,
    hasher: std::hash::RandomState,
    seen: hashbrown::HashTable<u32>,
    nodes: Vec<Node>,
}

impl<'a> Listing<'a> {
    fn new(folder: &'a str, max: usize) -> Self {
        Listing {
            folder,
            // (indices are u32)
            max: max.min(u32::MAX as usize),
            hasher: Default::default(),
            seen: hashbrown::HashTable::new(),
            nodes: Vec::new(),
        }
    }

    fn too_many(&self, what: String) -> ApiError {
        ApiError::InvalidResponse(format!(
            "{}: the server {what}, more than cec lists in one folder ({}); the listing stops",
            self.folder, self.max
        ))
    }

    /// The server's child count, refused when over the cap (a server announcing 10^18
    /// children is not believed); room for that many entries is made at once (address space
    /// until filled: a count that lies costs no resident memory, and the pages asked for
    /// follow the same count).
    fn check_total(&mut self, total: usize) -> ApiResult<()> {
        if total > self.max {
            return Err(self.too_many(format!("announces {total} entries")));
        }
        let more = total.saturating_sub(self.nodes.len());
        self.nodes.reserve_exact(more);
        self.seen.reserve(more, |&i| {
            self.hasher.hash_one(self.nodes[i as usize].path.as_str())
        });
        Ok(())
    }

    /// Add a page's nodes; returns how many were new.
    fn add(&mut self, page: Vec<TreeNode>) -> ApiResult<usize> {
        let before = self.nodes.len();
        for node in page.into_iter().map(TreeNode::into_node) {
            if node.path == self.folder || node.path.is_empty() {
                continue;
            }
            let hash = self.hasher.hash_one(node.path.as_str());
            let nodes = &self.nodes;
            match self.seen.entry(
                hash,
                |&i| nodes[i as usize].path == node.path,
                |&i| self.hasher.hash_one(nodes[i as usize].path.as_str()),
            ) {
                hashbrown::hash_table::Entry::Occupied(_) => {}
                hashbrown::hash_table::Entry::Vacant(slot) => {
                    slot.insert(self.nodes.len() as u32);
                    self.nodes.push(node);
                }
            }
        }
        if self.nodes.len() > self.max {
            return Err(self.too_many(format!("sent over {} entries", self.max)));
        }
        Ok(self.nodes.len() - before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_decode_int64_strings_numbers_and_meta() {
        let v = json!({"Uuid": "u1", "Path": "/personal-files/a.txt/", "Type": "LEAF",
            "Size": "1234", "MTime": 1700000000, "Etag": "abc",
            "MetaStore": {"name": "\"a.txt\"", "ChildrenCount": "3", "weird": "not json",
                "x-cells-hash": "\"h\"", "usermeta-tags": "not json, kept"}});
        let n = parse_node(&v);
        assert_eq!(n.path, "personal-files/a.txt");
        assert_eq!(n.size, 1234);
        assert_eq!(n.mtime, 1_700_000_000);
        assert_eq!(n.kind, NodeKind::File);
        // Only the keys cec reads are kept (issue 27): the hash decoded, tags kept as sent.
        assert_eq!(
            n.meta,
            crate::api::NodeMeta {
                cells_hash: Some("h".into()),
                user: Some(Box::new(crate::api::meta::UserFields {
                    tags: Some("not json, kept".into()),
                    ..Default::default()
                })),
                ..Default::default()
            }
        );
        let empty = parse_node(&json!({"Path": "ws/empty"}));
        assert_eq!(empty.size, 0);
    }

    #[test]
    fn state_login_parse() {
        let xml = r#"<?xml version="1.0"?><tree><user id="alice"><repositories/></user></tree>"#;
        assert_eq!(parse_state_login(xml).as_deref(), Some("alice"));
    }
}
