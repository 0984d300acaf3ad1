//! File versions over the wire (cells-share-versions.md §2): the list of a file's versions
//! (`POST /a/meta/bulk/get` with `"Versions": true`), one version's content (S3 GET with
//! `?versionId=`) and the restore of a version as the web UI does it (an S3 CopyObject of the
//! key onto itself with `x-amz-copy-source: /io/<key>?versionId=<id>`; the old current content
//! stays a version, since the copy is a content change the server versions).
//!
//! Invariants:
//! - The list is untrusted: its body is capped ([`VERSION_LIST`]), at most
//!   [`MAX_VERSIONS`] versions are accepted (more is an error, never a silent cut), and a
//!   version whose id is not a plain token ([`valid_version_id`]) is dropped, so that what
//!   reaches a caller (a file name in the mount, an xattr, a query string) is safe to use.
//! - Order: newest first (by time, then by the server's order, which the reference says
//!   is newest first but does not promise).
//! - Nothing holds a version's content in memory: downloads are streams.

use serde::Deserialize;
use serde_json::json;

use super::body::Cap;
use super::deadline::guard_download;
use super::http::{BodySpec, HttpCellsApi, S3_BUCKET, Wait, clean_path, encode_path};
use super::{ApiError, ApiResult, ByteRange, ByteStream};
use futures::TryStreamExt;
use reqwest::Method;

/// The most bytes of a version list read (a version node is the file's node with a few
/// metadata: about 1 KB).
pub const VERSION_LIST: Cap = Cap {
    what: "a file's version list",
    bytes: 16 * 1024 * 1024,
};

/// The most versions of one file accepted from the server.
pub const MAX_VERSIONS: usize = 10_000;

/// The longest version id accepted (the server's are UUIDs, 36 bytes).
pub const MAX_VERSION_ID: usize = 128;

/// One version of a file, as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileVersion {
    /// The version id (`versionId`), a plain token (see [`valid_version_id`]).
    pub id: String,
    /// Unix seconds: when this content was written.
    pub mtime: i64,
    pub size: u64,
    /// The content hash of this version.
    pub etag: String,
    /// The server's description (Markdown, or `N/A`).
    pub description: String,
    /// Who wrote it, when the description names a user (`[name](user://login)`).
    pub author: Option<String>,
}

/// A version id safe to put in a query string, an xattr or a log line: 1 to
/// [`MAX_VERSION_ID`] bytes of ASCII letters, digits, `-`, `_` and `.`.
pub fn valid_version_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_VERSION_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The login a version description names (`... by [Alice](user://alice)`), if any.
pub fn author_of(description: &str) -> Option<String> {
    let start = description.find("(user://")? + "(user://".len();
    let rest = &description[start..];
    let login = &rest[..rest.find(')')?];
    let ok = !login.is_empty()
        && login.len() <= 255
        && !login.chars().any(|c| c.is_control() || c == '/');
    ok.then(|| login.to_string())
}

#[derive(Deserialize)]
struct BulkAnswer {
    #[serde(rename = "Nodes", default)]
    nodes: Vec<VersionNode>,
}

/// A version node: the current file's node with the version's Etag, size and time, and the
/// `versionId` / `versionDescription` metadata (JSON-encoded strings).
#[derive(Deserialize)]
struct VersionNode {
    #[serde(rename = "Etag", default)]
    etag: String,
    #[serde(rename = "MTime", default)]
    mtime: Option<serde_json::Value>,
    #[serde(rename = "Size", default)]
    size: Option<serde_json::Value>,
    #[serde(rename = "MetaStore", default)]
    meta: std::collections::HashMap<String, serde_json::Value>,
}

/// A `MetaStore` value: a JSON-encoded string (`"\"abc\""`), or tolerated as a plain one.
fn meta_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => {
            Some(serde_json::from_str::<String>(s).unwrap_or_else(|_| s.clone()))
        }
        _ => None,
    }
}

/// Decode the answer of a version listing (see the module's invariants).
pub fn parse_versions(body: &[u8]) -> ApiResult<Vec<FileVersion>> {
    let answer: BulkAnswer = serde_json::from_slice(body).map_err(|e| {
        ApiError::InvalidResponse(format!("the version list is not what Cells sends: {e}"))
    })?;
    if answer.nodes.len() > MAX_VERSIONS {
        return Err(ApiError::InvalidResponse(format!(
            "the server lists {} versions of one file (at most {MAX_VERSIONS} are accepted)",
            answer.nodes.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<FileVersion> = Vec::with_capacity(answer.nodes.len());
    for node in answer.nodes {
        let Some(id) = meta_string(node.meta.get("versionId")) else {
            continue;
        };
        if !valid_version_id(&id) || !seen.insert(id.clone()) {
            tracing::warn!("a version with an invalid or repeated id was skipped");
            continue;
        }
        let description = meta_string(node.meta.get("versionDescription"))
            .unwrap_or_default()
            .chars()
            .take(4096)
            .collect::<String>();
        out.push(FileVersion {
            author: author_of(&description),
            id,
            mtime: super::http::json_i64(node.mtime.as_ref()),
            size: super::http::json_i64(node.size.as_ref()).max(0) as u64,
            etag: node.etag.chars().take(256).collect(),
            description,
        });
    }
    // Newest first; equal times keep the server's order.
    out.sort_by_key(|v| std::cmp::Reverse(v.mtime));
    Ok(out)
}

/// The error of a backend without file versions.
pub fn unsupported() -> ApiError {
    ApiError::InvalidRequest("this backend does not support file versions".into())
}

impl HttpCellsApi {
    /// See [`super::CellsApi::list_versions`].
    pub(super) async fn versions_of(&self, path: &str) -> ApiResult<Vec<FileVersion>> {
        let path = clean_path(path);
        let body = json!({"NodePaths": [path], "Versions": true});
        // Read as raw bytes under the cap, then decoded into small typed records.
        let resp = self
            .execute(self.rest_spec(Method::POST, "/meta/bulk/get", Some(body), &path))
            .await?;
        let bytes = super::body::read_capped(resp, VERSION_LIST)
            .await
            .map_err(|e| ApiError::from(e).with_context(&path))?;
        parse_versions(&bytes)
    }

    /// See [`super::CellsApi::get_object_version`].
    pub(super) async fn version_content(
        &self,
        path: &str,
        version: &str,
        range: Option<ByteRange>,
    ) -> ApiResult<ByteStream> {
        if !valid_version_id(version) {
            return Err(ApiError::InvalidRequest(format!(
                "{version:?} is not a version id"
            )));
        }
        let path = clean_path(path);
        let mut headers = vec![];
        if let Some(r) = range {
            match r.len {
                Some(0) => return Ok(Box::pin(futures::stream::empty())),
                Some(len) => headers.push((
                    reqwest::header::RANGE,
                    format!("bytes={}-{}", r.offset, r.offset + len - 1),
                )),
                None => headers.push((reqwest::header::RANGE, format!("bytes={}-", r.offset))),
            }
        }
        let mut spec = self.s3_spec(
            Method::GET,
            &path,
            &[("versionId", version)],
            headers,
            BodySpec::Empty,
            true,
        );
        spec.wait = Wait::Transfer;
        let resp = match self.execute(spec).await {
            Err(ApiError::Server { status: 416, .. }) => {
                return Ok(Box::pin(futures::stream::empty()));
            }
            other => other?,
        };
        let stream = resp
            .bytes_stream()
            .map_err(|e| super::http::transport_error(&e));
        Ok(guard_download(
            Box::pin(stream),
            self.deadlines(),
            format!("reading version {version} of {path}"),
        ))
    }

    /// See [`super::CellsApi::restore_version`].
    pub(super) async fn version_restore(&self, path: &str, version: &str) -> ApiResult<()> {
        if !valid_version_id(version) {
            return Err(ApiError::InvalidRequest(format!(
                "{version:?} is not a version id"
            )));
        }
        let path = clean_path(path);
        // The AWS form: the key percent-encoded per segment, then the version id.
        let source = format!("/{S3_BUCKET}/{}?versionId={version}", encode_path(&path));
        self.copy_onto(&path, source).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_decoded_checked_and_sorted_newest_first() {
        let body = br#"{"Nodes":[
            {"Etag":"a","MTime":"100","Size":"3","MetaStore":{"versionId":"\"v1\"","versionDescription":"\"N/A\""}},
            {"Etag":"b","MTime":"300","Size":"5","MetaStore":{"versionId":"\"v3\"","versionDescription":"\"File modified by [Alice](user://alice)\""}},
            {"Etag":"c","MTime":"200","Size":4,"MetaStore":{"versionId":"\"../../etc\""}},
            {"Etag":"d","MTime":"200","Size":"4","MetaStore":{}},
            {"Etag":"e","MTime":"200","Size":"4","MetaStore":{"versionId":"\"v1\""}}
        ]}"#;
        let v = parse_versions(body).unwrap();
        let ids: Vec<&str> = v.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["v3", "v1"]);
        assert_eq!(v[0].author.as_deref(), Some("alice"));
        assert_eq!(v[0].size, 5);
        assert_eq!(v[1].author, None);
        assert_eq!(v[1].description, "N/A");
        assert!(parse_versions(b"{}").unwrap().is_empty());
        assert!(parse_versions(b"[1]").is_err());
    }

    #[test]
    fn a_huge_version_list_is_refused() {
        let node = r#"{"MetaStore":{"versionId":"\"x\""}}"#;
        let body = format!("{{\"Nodes\":[{}]}}", vec![node; MAX_VERSIONS + 1].join(","));
        assert!(matches!(
            parse_versions(body.as_bytes()),
            Err(ApiError::InvalidResponse(_))
        ));
    }

    #[test]
    fn version_ids_are_plain_tokens() {
        assert!(valid_version_id("5f1e6c0a-1b2c-4d5e-8f90-0123456789ab"));
        for bad in ["", "a/b", "a b", "a\0", "a?b", "é", &"x".repeat(129)] {
            assert!(!valid_version_id(bad), "{bad:?}");
        }
        assert_eq!(author_of("by [A](user://a)"), Some("a".into()));
        assert_eq!(author_of("by [A](user://a/b)"), None);
        assert_eq!(author_of("N/A"), None);
    }
}
