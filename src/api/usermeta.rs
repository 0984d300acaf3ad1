//! User metadata of a node (tags, bookmark) and the public URL of a link, over REST
//! (cells-share-versions.md §1.2, §1.7, §3): `POST /a/user-meta/search`,
//! `PUT /a/user-meta/update`, `GET /a/share/link/{Uuid}`.
//!
//! Reading needs no call here: listings and stats carry the values in the node's `MetaStore`
//! (`usermeta-tags`, `bookmark`, `workspaces_shares`), decoded and checked once into the
//! typed [`super::Node::meta`] when the node is parsed ([`super::meta`]). Writing follows the web UI: look the node's value up first (its meta
//! `Uuid`), then `PUT` it (updating that meta when there is one) or `DELETE` what the search
//! found. A bookmark carries the caller's own policies (OWNER/READ/WRITE for `user:<login>`,
//! the web UI's `toggleBookmarkNode`); other namespaces are owned by the caller and readable
//! and writable by anyone who can see the node (the default `usermeta-tags` namespace's
//! policies).
//!
//! Invariants: every answer is untrusted: a search answer only counts for the node and
//! namespace asked; a link URL is bounded ([`MAX_URL_BYTES`]), free of control characters and
//! either absolute `http(s)://` or a path made absolute against the server's base URL. A call
//! returns only once the server has answered 2xx: nothing is reported stored that is not.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::HttpCellsApi;
use super::{ApiError, ApiResult, Node};

/// The namespace of tags in a default install.
pub const TAGS_NAMESPACE: &str = "usermeta-tags";
/// The reserved namespace of bookmarks.
pub const BOOKMARK_NAMESPACE: &str = "bookmark";
/// The longest public link URL accepted from the server.
pub const MAX_URL_BYTES: usize = 2048;
/// The longest tags value accepted, from the user or from the server.
pub const MAX_TAGS_BYTES: usize = 4096;

/// The node's tags (`MetaStore["usermeta-tags"]`, comma-separated; an array of strings was
/// joined when the node was decoded, and tags over the bound or holding NUL dropped then, see
/// [`checked_tags`]).
pub fn tags_of(node: &Node) -> Option<String> {
    Some(node.meta.user.as_deref()?.tags.as_deref()?.to_string())
}

/// Tags the server sent for `path`, kept when they are not empty, at most [`MAX_TAGS_BYTES`]
/// long and free of NUL; otherwise ignored (with a warning when not empty).
pub fn checked_tags(path: &str, tags: String) -> Option<String> {
    if tags.len() > MAX_TAGS_BYTES || tags.contains('\0') {
        tracing::warn!(
            "{path}: ignoring the server's tags ({} bytes, at most {MAX_TAGS_BYTES} without NUL)",
            tags.len()
        );
        return None;
    }
    (!tags.is_empty()).then_some(tags)
}

/// Whether the caller bookmarked the node (`MetaStore["bookmark"]`, `"true"` once decoded).
pub fn is_bookmarked(node: &Node) -> bool {
    node.meta.user.as_deref().is_some_and(|u| u.bookmark)
}

/// The Uuid of the node's first public link: `MetaStore["workspaces_shares"]` lists the
/// caller's share workspaces on the node, scope 3 (`LINK`) being a public link (read when the
/// node was decoded, see [`super::meta`]).
pub fn public_link_of(node: &Node) -> Option<String> {
    Some(
        node.meta
            .user
            .as_deref()?
            .public_link
            .as_deref()?
            .to_string(),
    )
}

/// A public link id as cec accepts it from the server: short, alphanumeric and dashes.
pub(super) fn valid_link_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `idmUserMeta` as sent and as read back (unknown fields ignored).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UserMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    #[serde(default)]
    pub node_uuid: String,
    #[serde(default)]
    pub namespace: String,
    /// The value, JSON-encoded (`"\"a,b\""`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub json_value: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
}

/// `serviceResourcePolicy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Policy {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub effect: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SearchRequest<'a> {
    node_uuids: [&'a str; 1],
    namespace: &'a str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SearchResponse {
    #[serde(default)]
    metadatas: Vec<UserMeta>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateRequest<'a> {
    operation: &'a str,
    meta_datas: Vec<UserMeta>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ShareLink {
    #[serde(default)]
    link_url: String,
}

fn policies(node_uuid: &str, namespace: &str, login: &str) -> Vec<Policy> {
    let p = |action: &str, subject: &str| Policy {
        resource: node_uuid.to_string(),
        action: action.into(),
        subject: subject.into(),
        effect: "allow".into(),
    };
    let owner = format!("user:{login}");
    let others = if namespace == BOOKMARK_NAMESPACE {
        owner.as_str()
    } else {
        "*"
    };
    vec![p("OWNER", &owner), p("READ", others), p("WRITE", others)]
}

fn decode<T: for<'de> Deserialize<'de>>(v: Value, what: &str) -> ApiResult<T> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::InvalidResponse(format!("{what}: unexpected answer ({e})")))
}

/// Make a `LinkUrl` absolute against `base` and check it.
pub fn absolute_link_url(base: &str, link_url: &str) -> ApiResult<String> {
    let bad = |why: &str| ApiError::InvalidResponse(format!("the server's link URL {why}"));
    if link_url.is_empty() {
        return Err(bad("is empty"));
    }
    if link_url.chars().any(char::is_control) {
        return Err(bad("holds control characters"));
    }
    let url = if link_url.starts_with("https://") || link_url.starts_with("http://") {
        link_url.to_string()
    } else if link_url.starts_with('/') {
        format!("{}{link_url}", base.trim_end_matches('/'))
    } else {
        return Err(bad("is neither a URL nor an absolute path"));
    };
    if url.len() > MAX_URL_BYTES {
        return Err(bad(&format!("is longer than {MAX_URL_BYTES} bytes")));
    }
    Ok(url)
}

impl HttpCellsApi {
    /// The metas of `namespace` on the node the caller sees (`POST /a/user-meta/search`).
    async fn user_meta_search(&self, node_uuid: &str, namespace: &str) -> ApiResult<Vec<UserMeta>> {
        let body = serde_json::to_value(SearchRequest {
            node_uuids: [node_uuid],
            namespace,
        })
        .expect("serialisable");
        let v = self
            .rest_json(Method::POST, "/user-meta/search", Some(body), node_uuid)
            .await?;
        let found: SearchResponse = decode(v, "/user-meta/search")?;
        Ok(found
            .metadatas
            .into_iter()
            .filter(|m| m.node_uuid == node_uuid && m.namespace == namespace)
            .collect())
    }

    async fn user_meta_update(&self, operation: &str, metas: Vec<UserMeta>) -> ApiResult<()> {
        let subject = metas
            .first()
            .map(|m| m.node_uuid.clone())
            .unwrap_or_default();
        let body = serde_json::to_value(UpdateRequest {
            operation,
            meta_datas: metas,
        })
        .expect("serialisable");
        self.rest_json(Method::PUT, "/user-meta/update", Some(body), &subject)
            .await?;
        Ok(())
    }

    /// Store (`Some`) or remove (`None`) the value of `namespace` on the node `node_uuid`.
    pub(crate) async fn set_user_meta_http(
        &self,
        node_uuid: &str,
        namespace: &str,
        value: Option<&Value>,
    ) -> ApiResult<()> {
        let existing = self.user_meta_search(node_uuid, namespace).await?;
        let Some(value) = value else {
            if existing.is_empty() {
                return Ok(());
            }
            return self.user_meta_update("DELETE", existing).await;
        };
        let login = self.session_login().await?;
        let meta = UserMeta {
            uuid: existing
                .into_iter()
                .next()
                .map(|m| m.uuid)
                .unwrap_or_default(),
            node_uuid: node_uuid.to_string(),
            namespace: namespace.to_string(),
            json_value: value.to_string(),
            policies: policies(node_uuid, namespace, &login),
        };
        self.user_meta_update("PUT", vec![meta]).await
    }

    /// The absolute public URL of the link `link_uuid` (`GET /a/share/link/{Uuid}`).
    pub(crate) async fn share_link_url_http(&self, link_uuid: &str) -> ApiResult<String> {
        if !valid_link_id(link_uuid) {
            return Err(ApiError::InvalidResponse(format!(
                "the server gave an invalid link id {link_uuid:?}"
            )));
        }
        let v = self
            .rest_json(
                Method::GET,
                &format!("/share/link/{link_uuid}"),
                None,
                link_uuid,
            )
            .await?;
        let link: ShareLink = decode(v, "/share/link")?;
        absolute_link_url(self.base_url(), &link.link_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_urls_are_made_absolute_and_checked() {
        let base = "https://cells.example.com";
        assert_eq!(
            absolute_link_url(base, "/public/abc123").unwrap(),
            "https://cells.example.com/public/abc123"
        );
        assert_eq!(
            absolute_link_url(base, "https://share.example.com/public/x").unwrap(),
            "https://share.example.com/public/x"
        );
        assert!(absolute_link_url(base, "").is_err());
        assert!(absolute_link_url(base, "public/x").is_err());
        assert!(absolute_link_url(base, "/public/a\nb").is_err());
        assert!(absolute_link_url(base, &format!("/{}", "a".repeat(MAX_URL_BYTES))).is_err());
    }

    #[test]
    fn a_bookmark_is_private_and_tags_are_shared() {
        let b = policies("n", BOOKMARK_NAMESPACE, "alice");
        assert!(b.iter().all(|p| p.subject == "user:alice"));
        let t = policies("n", TAGS_NAMESPACE, "alice");
        assert_eq!(t[0].subject, "user:alice");
        assert_eq!(t[1].subject, "*");
    }
}
