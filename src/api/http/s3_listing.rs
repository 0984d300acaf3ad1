//! The gateway's folder listings (S3 ListObjectsV2 on `/io`): one level with the delimiter `/`
//! (the mount uses it to see the dotfiles REST listings hide), and a whole subtree with an
//! empty delimiter, which the mount uses to revalidate a dot-folder (`.git`) at once rather
//! than folder by folder (issue 30). The answer, a `ListBucketResult`, is decoded with serde
//! types of the XML crate; only the elements cec reads are declared, every other is skipped.
//!
//! Invariants:
//! - The answer is untrusted: its body is read through the [`body::S3_LISTING`] cap (which
//!   bounds how many entries it can hold), a size that is not a number counts as 0, a key
//!   that is the folder itself or ends with `/` (a folder marker) is not an object, and the
//!   folder itself (which the gateway repeats among its common prefixes) and an empty prefix
//!   are not sub-folders. Entries keep the order of the answer.
//! - The gateway never pages and takes `max-keys` as a node limit (cells-api.md §6.7): a
//!   one-level listing asks for [`GATEWAY_LIST_MAX`] (without it the gateway stops at 1,000
//!   nodes and a big folder's dotfiles past that point would be missed); a recursive listing
//!   asks for `limit + 1`, and an answer holding more than `limit` entries is reported as too
//!   big (`None`), never as a complete tree.
//! - Malformed XML is an [`ApiError::InvalidResponse`], never a partial listing.

use reqwest::Method;
use serde::Deserialize;

use super::s3::parse_time;
use super::transport::body_text;
use super::{BodySpec, HttpCellsApi, clean_path};
use crate::api::body;
use crate::api::{ApiError, ApiResult, ObjectInfo, S3Entry};

/// `max-keys` of one-level gateway listings: the Cells gateway takes it as a node limit and
/// never paginates (cells-api.md §6.7), and without it stops at 1,000 nodes, so a big
/// folder's dotfiles past that point would be missed.
const GATEWAY_LIST_MAX: &str = "1000000";

impl HttpCellsApi {
    /// The gateway's listing of folder `path`: one level with `delimiter` "/", every depth
    /// with "" (cells-api.md §6.7); `max_keys` bounds the nodes the gateway walks.
    pub(in crate::api) async fn list_s3(
        &self,
        path: &str,
        delimiter: &str,
        max_keys: &str,
    ) -> ApiResult<Vec<S3Entry>> {
        let path = clean_path(path);
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let resp = self
            .execute(self.s3_spec(
                Method::GET,
                "",
                &[
                    ("delimiter", delimiter),
                    ("list-type", "2"),
                    ("max-keys", max_keys),
                    ("prefix", &prefix),
                ],
                vec![],
                BodySpec::Empty,
                true,
            ))
            .await?;
        let text = body_text(resp, body::S3_LISTING).await?;
        parse_list_objects(&text, &prefix)
    }

    /// One level of folder `path`: its files (dotfiles included) and sub-folders.
    pub(super) async fn s3_list_folder(&self, path: &str) -> ApiResult<Vec<S3Entry>> {
        self.list_s3(path, "/", GATEWAY_LIST_MAX).await
    }

    /// Every file and folder below `path`, or `None` when there are more than `limit`.
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

/// A `ListBucketResult`: its entries in the order of the answer.
#[derive(Deserialize)]
struct ListBucketResult {
    #[serde(rename = "$value", default)]
    items: Vec<ListItem>,
}

/// One child element of a `ListBucketResult`.
#[derive(Deserialize)]
enum ListItem {
    Contents(Contents),
    CommonPrefixes(CommonPrefixes),
    /// `Name`, `Prefix`, `KeyCount`, `IsTruncated`... : not read.
    #[serde(other)]
    Other,
}

/// An object. Sizes and dates are kept as text: a malformed one reads as 0, as before.
#[derive(Deserialize)]
struct Contents {
    #[serde(rename = "Key", default)]
    key: String,
    #[serde(rename = "Size", default)]
    size: Option<String>,
    #[serde(rename = "ETag", default)]
    etag: Option<String>,
    #[serde(rename = "LastModified", default)]
    last_modified: Option<String>,
}

/// A sub-folder (with the delimiter `/`), as its prefix ending with `/`.
#[derive(Deserialize)]
struct CommonPrefixes {
    #[serde(rename = "Prefix", default)]
    prefix: String,
}

/// The entries of a listing of the folder `prefix` (`ws/path/`, or `""` for the root).
fn parse_list_objects(xml: &str, prefix: &str) -> ApiResult<Vec<S3Entry>> {
    if xml.trim().is_empty() {
        // As the event-loop parser this replaced did: an empty answer lists nothing.
        return Ok(Vec::new());
    }
    let result: ListBucketResult = quick_xml::de::from_str(xml)
        .map_err(|e| ApiError::InvalidResponse(format!("the S3 listing is not valid XML: {e}")))?;
    let folder = prefix.trim_end_matches('/');
    let mut out = Vec::new();
    for item in result.items {
        match item {
            ListItem::Contents(c) => {
                if c.key.trim_end_matches('/') != folder && !c.key.ends_with('/') {
                    out.push(S3Entry::Object(ObjectInfo {
                        path: c.key.trim_matches('/').to_string(),
                        size: c.size.and_then(|s| s.trim().parse().ok()).unwrap_or(0),
                        etag: c
                            .etag
                            .map(|e| e.trim_matches('"').to_string())
                            .unwrap_or_default(),
                        mtime: c.last_modified.map(|t| parse_time(&t)).unwrap_or(0),
                        content_type: None,
                    }));
                }
            }
            ListItem::CommonPrefixes(p) => {
                let p = p.prefix.trim_end_matches('/');
                if !p.is_empty() && p != folder {
                    out.push(S3Entry::Folder(p.trim_start_matches('/').to_string()));
                }
            }
            ListItem::Other => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_parse() {
        let list = r#"<ListBucketResult><Contents><Key>ws/d/.hidden</Key><Size>3</Size><ETag>"e1"</ETag><LastModified>2024-01-02T03:04:05.000Z</LastModified></Contents><CommonPrefixes><Prefix>ws/d/sub/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>ws/d/</Prefix></CommonPrefixes></ListBucketResult>"#;
        let entries = parse_list_objects(list, "ws/d/").unwrap();
        assert_eq!(entries.len(), 2);
        match &entries[0] {
            S3Entry::Object(o) => {
                assert_eq!(o.path, "ws/d/.hidden");
                assert_eq!(o.size, 3);
                assert_eq!(o.etag, "e1");
                assert_eq!(o.mtime, 1_704_164_645);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(entries[1], S3Entry::Folder("ws/d/sub".into()));
    }

    /// What a Go server (the Cells gateway) sends: numeric character references for quotes,
    /// apostrophes and control characters, a namespace, elements cec does not read, spaces
    /// kept inside names, objects and folders interleaved.
    #[test]
    fn listing_decodes_references_skips_unknown_elements_and_keeps_order() {
        let list = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>io</Name><Prefix>ws/d/</Prefix><KeyCount>4</KeyCount><IsTruncated>false</IsTruncated>
  <Contents>
    <Key>ws/d/ it&#39;s &#34;q&#34;&#xA;</Key><ETag>&#34;abc&#34;</ETag><Size> 12 </Size>
    <Owner><ID>x</ID><DisplayName>y</DisplayName></Owner><StorageClass>STANDARD</StorageClass>
  </Contents>
  <CommonPrefixes><Prefix>ws/d/s&amp;b/</Prefix></CommonPrefixes>
  <Contents><Key>ws/d/x&lt;y&gt;</Key><Size>not a number</Size></Contents>
  <Contents><Key>ws/d/</Key></Contents>
  <Contents><Key>ws/d/marker/</Key></Contents>
  <CommonPrefixes><Prefix>ws/d/</Prefix></CommonPrefixes>
</ListBucketResult>"#;
        let entries = parse_list_objects(list, "ws/d/").unwrap();
        let object = |path: &str, size, etag: &str| {
            S3Entry::Object(ObjectInfo {
                path: path.into(),
                size,
                etag: etag.into(),
                mtime: 0,
                content_type: None,
            })
        };
        assert_eq!(
            entries,
            vec![
                object("ws/d/ it's \"q\"\n", 12, "abc"),
                S3Entry::Folder("ws/d/s&b".into()),
                object("ws/d/x<y>", 0, ""),
            ]
        );
        assert!(parse_list_objects("<ListBucketResult><Contents></ListBucketResult>", "").is_err());
        assert_eq!(parse_list_objects("", "ws/d/").unwrap(), vec![]);
    }
}
