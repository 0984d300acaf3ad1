//! A public link seen without any profile, through its public WebDAV view
//! (`<server>/public/<hash>/dav/<path>`, cells-share-versions.md §1.8): [`PublicLink`]
//! implements the read side of [`CellsApi`] (stat, listing, ranged GET) so that the transfer
//! engine downloads a link exactly as it downloads from a workspace (temporary files renamed
//! once complete, resume after a cut, names checked). Every write answers "read-only".
//!
//! Path space: the link's top item is named [`PublicLink::top`] (the shared file's name, or
//! the shared folder's); `top/a/b` is `/dav/<top target>/a/b`.
//!
//! Invariants (everything from the server is untrusted):
//! - A listed child's name is taken from its `href`, percent-decoded, relative to the folder
//!   listed; anything else (an href elsewhere, a name holding `/`, `..`) is passed on as is
//!   for [`crate::api::names::check_name`] to refuse: it never names a local file.
//! - Listings are bounded: each PROPFIND answer by [`LISTING_CAP`], the entries of all
//!   listings together by [`MAX_ENTRIES`], their depth by [`MAX_DEPTH`]; every request by
//!   the request deadline, every download by the transfer progress floor
//!   ([`super::deadline`]).
//! - A ranged GET answered without its range (200 instead of 206) is an error, never bytes
//!   written at the wrong place.
//! - The link password travels only in a Basic `Authorization` header marked sensitive; it
//!   is in no `Debug` output, error or log.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::TryStreamExt;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use quick_xml::events::Event;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};

use super::body::{Cap, read_capped_text, read_prefix};
use super::deadline::{Deadlines, guard_download};
use super::http::describe_reqwest_error;
use super::names::shown;
use super::{
    ApiError, ApiResult, ByteRange, ByteStream, CellsApi, Node, NodeKind, ObjectInfo, S3Entry,
    UploadOptions, Workspace,
};

/// One PROPFIND answer.
pub const LISTING_CAP: Cap = Cap {
    what: "a public link's folder listing",
    bytes: 32 * 1024 * 1024,
};
/// Entries of all the listings of one download together.
pub const MAX_ENTRIES: u64 = 200_000;
/// Folders deeper than this under the link's top are refused (an endless tree).
pub const MAX_DEPTH: usize = 256;

/// The 404 texts of the public page (the server's words for why a link is dead).
const DEAD_LINK_TEXTS: &[&str] = &[
    "This link has expired (number of maximum downloads has been reached).",
    "This link has expired. Please contact the person who sent it to you.",
    "Cannot find this link! Please contact the person who sent it to you.",
    "Error while loading link, the original data may have been deleted!",
];

/// Characters escaped in one path segment of a URL.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// A public link's address, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAddress {
    /// `scheme://host[:port][/prefix]/public/<hash>`.
    pub link_url: String,
    pub hash: String,
    /// A path inside the link given after `/dav/` (decoded segments), if any.
    pub sub: Vec<String>,
}

/// Split a public link URL (`https://host/public/<hash>`, optionally `/dav/<path>`).
pub fn parse_link_url(url: &str) -> Result<LinkAddress, String> {
    let parsed = url::Url::parse(url.trim()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} is not an http(s) URL"));
    }
    let segs: Vec<&str> = parsed
        .path_segments()
        .map(|s| s.collect())
        .unwrap_or_default();
    let at = segs
        .iter()
        .rposition(|s| *s == "public")
        .filter(|i| i + 1 < segs.len() && !segs[i + 1].is_empty())
        .ok_or_else(|| {
            format!("{url:?} is not a public link (expected https://<server>/public/<link id>)")
        })?;
    let hash = segs[at + 1].to_string();
    if !hash
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("{url:?}: {hash:?} is not a link id"));
    }
    let mut sub = Vec::new();
    let rest = &segs[at + 2..];
    match rest.split_first() {
        None => {}
        Some((&"", _)) => {}
        Some((&"dav", tail)) => {
            for s in tail.iter().filter(|s| !s.is_empty()) {
                let d = percent_decode_str(s).decode_utf8_lossy().to_string();
                super::names::check_name(&d).map_err(|why| format!("{url:?}: {why}"))?;
                sub.push(d);
            }
        }
        Some(_) => {
            return Err(format!(
                "{url:?}: only https://<server>/public/<link id>[/dav/<path>] is understood"
            ));
        }
    }
    let mut base = parsed.clone();
    base.set_query(None);
    base.set_fragment(None);
    base.set_path(&segs[..at + 2].join("/"));
    Ok(LinkAddress {
        link_url: base.as_str().trim_end_matches('/').to_string(),
        hash,
        sub,
    })
}

/// One entry of a PROPFIND answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DavEntry {
    /// The `href`, percent-decoded, as sent.
    pub href: String,
    pub folder: bool,
    pub size: u64,
    pub mtime: i64,
    pub etag: String,
    pub display_name: String,
}

/// Read the `<response>` entries of a multistatus (any namespace prefix); properties of a
/// propstat whose status is not 200 are ignored.
pub fn parse_multistatus(xml: &str) -> Result<Vec<DavEntry>, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut current: Option<DavEntry> = None;
    let mut pending = DavEntry::default();
    let mut path: Vec<String> = Vec::new();
    let mut status_ok = true;
    loop {
        match reader.read_event() {
            Err(e) => return Err(format!("invalid WebDAV answer: {e}")),
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_lowercase();
                match name.as_str() {
                    "response" => current = Some(DavEntry::default()),
                    "propstat" => {
                        pending = DavEntry::default();
                        status_ok = true;
                    }
                    "collection" => pending.folder = true,
                    _ => {}
                }
                path.push(name);
            }
            Ok(Event::Empty(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_lowercase();
                if name == "collection" {
                    pending.folder = true;
                }
            }
            Ok(Event::Text(t)) => {
                let raw = String::from_utf8_lossy(&t).to_string();
                let text = quick_xml::escape::unescape(&raw)
                    .map(|c| c.into_owned())
                    .unwrap_or(raw);
                let text = text.trim();
                match path.last().map(String::as_str) {
                    Some("href") if path.len() >= 2 && path[path.len() - 2] == "response" => {
                        if let Some(c) = current.as_mut() {
                            c.href.push_str(text);
                        }
                    }
                    Some("getcontentlength") => pending.size = text.parse().unwrap_or(0),
                    Some("getlastmodified") => {
                        pending.mtime = httpdate::parse_http_date(text)
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map(|d| d.as_secs() as i64)
                            .unwrap_or(0)
                    }
                    Some("getetag") => pending.etag = text.trim_matches('"').to_string(),
                    Some("displayname") => pending.display_name = text.to_string(),
                    Some("status") if path.iter().any(|p| p == "propstat") => {
                        status_ok = text.split_whitespace().nth(1) == Some("200")
                    }
                    _ => {}
                }
            }
            Ok(Event::End(_)) => {
                let name = path.pop().unwrap_or_default();
                match name.as_str() {
                    "propstat" => {
                        if status_ok && let Some(c) = current.as_mut() {
                            c.folder |= pending.folder;
                            if pending.size > 0 {
                                c.size = pending.size;
                            }
                            if pending.mtime != 0 {
                                c.mtime = pending.mtime;
                            }
                            if !pending.etag.is_empty() {
                                c.etag = pending.etag.clone();
                            }
                            if !pending.display_name.is_empty() {
                                c.display_name = pending.display_name.clone();
                            }
                        }
                    }
                    "response" => {
                        if let Some(mut c) = current.take() {
                            c.href = percent_decode_str(&c.href).decode_utf8_lossy().to_string();
                            out.push(c);
                        }
                    }
                    _ => {}
                }
            }
            Ok(_) => {}
        }
    }
    Ok(out)
}

/// A public link opened for reading.
pub struct PublicLink {
    http: reqwest::Client,
    address: LinkAddress,
    password: Option<String>,
    deadlines: Deadlines,
    /// The local name of the link's top item.
    top: String,
    /// The DAV path (segments) `top` stands for.
    top_target: Vec<String>,
    top_is_folder: bool,
    listed: AtomicU64,
}

impl std::fmt::Debug for PublicLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicLink")
            .field("address", &self.address)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

/// Why a link cannot be opened, told apart for the CLI.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenError {
    /// The link wants a password (none given: prompt and try again).
    PasswordNeeded,
    /// The password given is wrong.
    WrongPassword,
    Api(ApiError),
}

impl From<ApiError> for OpenError {
    fn from(e: ApiError) -> OpenError {
        OpenError::Api(e)
    }
}

impl PublicLink {
    /// Open the link at `url`: one PROPFIND of its top, which tells a file link (one file
    /// at the top of the view) from a folder link.
    pub async fn open(
        http: reqwest::Client,
        url: &str,
        password: Option<String>,
        deadlines: Deadlines,
    ) -> Result<PublicLink, OpenError> {
        let address =
            parse_link_url(url).map_err(|m| OpenError::Api(ApiError::InvalidRequest(m)))?;
        let mut link = PublicLink {
            http,
            address,
            password,
            deadlines,
            top: String::new(),
            top_target: Vec::new(),
            top_is_folder: true,
            listed: AtomicU64::new(0),
        };
        let sub = link.address.sub.clone();
        let entries = match link.propfind(&sub, "1").await {
            Err(ApiError::Unauthorized(_)) if link.password.is_none() => {
                return Err(OpenError::PasswordNeeded);
            }
            Err(ApiError::Unauthorized(_)) => return Err(OpenError::WrongPassword),
            other => other?,
        };
        let me = dav_path(&link.address, &sub);
        let (selves, children): (Vec<&DavEntry>, Vec<&DavEntry>) = entries
            .iter()
            .partition(|e| e.href.trim_end_matches('/') == me.trim_end_matches('/'));
        let this = selves.first().copied();
        if let Some(name) = sub.last() {
            link.top = name.clone();
            link.top_target = sub.clone();
            link.top_is_folder = this.is_none_or(|e| e.folder);
        } else if children.len() == 1 && !children[0].folder {
            // A file link: the view shows the file under its name.
            let name = child_name(&me, &children[0].href);
            super::names::check_name(&name).map_err(|why| {
                OpenError::Api(ApiError::InvalidResponse(format!("public link: {why}")))
            })?;
            link.top = name.clone();
            link.top_target = vec![name];
            link.top_is_folder = false;
        } else {
            // A folder link (or several roots): named after the folder when the view says
            // its name, else after the link id.
            let name = this.map(|e| e.display_name.clone()).unwrap_or_default();
            link.top = if super::names::check_name(&name).is_ok() && name != "dav" {
                name
            } else {
                link.address.hash.clone()
            };
            link.top_target = Vec::new();
            link.top_is_folder = true;
        }
        Ok(link)
    }

    /// The local name of the link's top item (a path for the transfer engine).
    pub fn top(&self) -> &str {
        &self.top
    }

    pub fn top_is_folder(&self) -> bool {
        self.top_is_folder
    }

    /// The DAV segments of a path of this API's space (`top/...`).
    fn segments(&self, path: &str) -> ApiResult<Vec<String>> {
        let path = path.trim_matches('/');
        let rest = if path == self.top {
            ""
        } else if let Some(r) = path.strip_prefix(&format!("{}/", self.top)) {
            r
        } else {
            return Err(ApiError::NotFound(format!("{path}: not in this link")));
        };
        let mut segs = self.top_target.clone();
        segs.extend(
            rest.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        if segs.len() > MAX_DEPTH {
            return Err(ApiError::InvalidResponse(format!(
                "the link's tree is deeper than {MAX_DEPTH} folders: refused"
            )));
        }
        Ok(segs)
    }

    fn url_of(&self, segs: &[String]) -> String {
        let mut u = format!("{}/dav/", self.address.link_url);
        let encoded: Vec<String> = segs
            .iter()
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        u.push_str(&encoded.join("/"));
        u
    }

    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.password {
            // Any user name; the password is the link's.
            Some(p) => req.basic_auth("cec", Some(p)),
            None => req,
        }
    }

    /// A failed answer as an error, with the server's reason for a dead link.
    async fn failure(&self, what: &str, resp: reqwest::Response) -> ApiError {
        let status = resp.status();
        let body = read_prefix(resp, 64 * 1024).await;
        match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(format!(
                "{what}: this link needs a password, and the one given was refused"
            )),
            StatusCode::FORBIDDEN => ApiError::Forbidden(format!(
                "{what}: the link does not allow this (downloads may be disabled)"
            )),
            StatusCode::NOT_FOUND => {
                let reason = DEAD_LINK_TEXTS
                    .iter()
                    .find(|t| body.contains(*t))
                    .map(|t| t.to_string());
                match reason {
                    Some(r) => {
                        ApiError::NotFound(format!("public link {}: {r}", self.address.hash))
                    }
                    None => ApiError::NotFound(format!("{what}: not found")),
                }
            }
            s => ApiError::Server {
                status: s.as_u16(),
                message: format!("{what}: HTTP {s}"),
            },
        }
    }

    /// PROPFIND `segs` at `depth`; the entries, bounded.
    async fn propfind(&self, segs: &[String], depth: &str) -> ApiResult<Vec<DavEntry>> {
        let url = self.url_of(segs);
        let what = if segs.is_empty() {
            "public link".to_string()
        } else {
            shown(&segs.join("/"))
        };
        let method = Method::from_bytes(b"PROPFIND").expect("a valid method");
        let resp = self
            .request(method, &url)
            .header("Depth", depth)
            .header(reqwest::header::CONTENT_TYPE, "application/xml")
            .body(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><D:propfind xmlns:D=\"DAV:\"><D:allprop/></D:propfind>",
            )
            .timeout(self.deadlines.request)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        if resp.status() != StatusCode::MULTI_STATUS {
            return Err(self.failure(&what, resp).await);
        }
        let text = read_capped_text(resp, LISTING_CAP)
            .await
            .map_err(|e| ApiError::from(e).with_context(&what))?;
        let entries = parse_multistatus(&text)
            .map_err(|m| ApiError::InvalidResponse(format!("{what}: {m}")))?;
        let total = self
            .listed
            .fetch_add(entries.len() as u64, Ordering::Relaxed)
            + entries.len() as u64;
        if total > MAX_ENTRIES {
            return Err(ApiError::InvalidResponse(format!(
                "the link lists more than {MAX_ENTRIES} entries: refused"
            )));
        }
        Ok(entries)
    }

    fn node(&self, path: &str, e: &DavEntry) -> Node {
        Node {
            uuid: String::new(),
            path: path.to_string(),
            kind: if e.folder {
                NodeKind::Folder
            } else {
                NodeKind::File
            },
            size: e.size,
            mtime: e.mtime,
            etag: e.etag.clone(),
            meta: Default::default(),
        }
    }
}

/// The server path of the DAV view at `segs` (decoded, as hrefs are compared).
fn dav_path(address: &LinkAddress, segs: &[String]) -> String {
    let path = url::Url::parse(&address.link_url)
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    let mut p = format!("{}/dav/", path.trim_end_matches('/'));
    p.push_str(&segs.join("/"));
    percent_decode_str(&p).decode_utf8_lossy().to_string()
}

/// The name of a child at `href` in the folder at `parent` (both decoded server paths): the
/// rest of the href after the parent, without its trailing `/`. An href outside the parent
/// gives the whole href, which holds a `/` and is refused as a name.
fn child_name(parent: &str, href: &str) -> String {
    let href = match url::Url::parse(href) {
        Ok(u) if u.has_host() => percent_decode_str(u.path()).decode_utf8_lossy().to_string(),
        _ => href.to_string(),
    };
    let parent = format!("{}/", parent.trim_end_matches('/'));
    let rest = match href.strip_prefix(&parent) {
        Some(r) => r,
        None => return href,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.to_string()
}

fn transport(e: &reqwest::Error) -> ApiError {
    if e.is_timeout() {
        ApiError::Timeout(describe_reqwest_error(e))
    } else {
        ApiError::Network(describe_reqwest_error(e))
    }
}

fn read_only() -> ApiError {
    ApiError::Forbidden("a public link is read-only here".into())
}

#[async_trait]
impl CellsApi for PublicLink {
    async fn list_workspaces(&self) -> ApiResult<Vec<Workspace>> {
        Ok(vec![])
    }

    async fn list_folder(&self, path: &str) -> ApiResult<Vec<Node>> {
        let segs = self.segments(path)?;
        let me = dav_path(&self.address, &segs);
        let entries = self.propfind(&segs, "1").await?;
        let path = path.trim_matches('/');
        Ok(entries
            .iter()
            .filter(|e| e.href.trim_end_matches('/') != me.trim_end_matches('/'))
            .map(|e| {
                let name = child_name(&me, &e.href);
                self.node(&format!("{path}/{name}"), e)
            })
            .collect())
    }

    async fn list_folder_s3(&self, path: &str) -> ApiResult<Vec<S3Entry>> {
        let _ = path;
        Err(ApiError::InvalidRequest(
            "a public link has no S3 view".into(),
        ))
    }

    async fn stat(&self, path: &str) -> ApiResult<Option<Node>> {
        let segs = match self.segments(path) {
            Ok(s) => s,
            Err(ApiError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let me = dav_path(&self.address, &segs);
        let entries = match self.propfind(&segs, "0").await {
            Ok(e) => e,
            Err(ApiError::NotFound(m)) if m.contains(": not found") => return Ok(None),
            Err(e) => return Err(e),
        };
        let this = entries
            .iter()
            .find(|e| e.href.trim_end_matches('/') == me.trim_end_matches('/'))
            .or(entries.first());
        Ok(this.map(|e| self.node(path.trim_matches('/'), e)))
    }

    async fn create_folders(&self, _paths: &[String]) -> ApiResult<Vec<Node>> {
        Err(read_only())
    }

    async fn move_nodes(&self, _s: &[String], _t: &str, _p: bool) -> ApiResult<()> {
        Err(read_only())
    }

    async fn copy_nodes(&self, _s: &[String], _t: &str, _p: bool) -> ApiResult<()> {
        Err(read_only())
    }

    async fn delete_nodes(&self, _paths: &[String], _permanently: bool) -> ApiResult<()> {
        Err(read_only())
    }

    async fn restore_nodes(&self, _paths: &[String]) -> ApiResult<()> {
        Err(read_only())
    }

    async fn head_object(&self, path: &str) -> ApiResult<ObjectInfo> {
        let node = self
            .stat(path)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("{path}: not found")))?;
        Ok(ObjectInfo {
            path: node.path,
            size: node.size,
            etag: node.etag,
            mtime: node.mtime,
            content_type: None,
        })
    }

    async fn get_object(&self, path: &str, range: Option<ByteRange>) -> ApiResult<ByteStream> {
        let segs = self.segments(path)?;
        let url = self.url_of(&segs);
        let mut req = self.request(Method::GET, &url);
        if let Some(r) = range {
            req = match r.len {
                Some(0) => return Ok(Box::pin(futures::stream::empty())),
                Some(len) => {
                    req.header(RANGE, format!("bytes={}-{}", r.offset, r.offset + len - 1))
                }
                None => req.header(RANGE, format!("bytes={}-", r.offset)),
            };
        }
        let what = shown(path);
        // The answer's head within the transfer deadline; the body on the progress floor.
        let resp = tokio::time::timeout(self.deadlines.transfer, req.send())
            .await
            .map_err(|_| {
                ApiError::Timeout(format!(
                    "{what}: no answer in {:?}",
                    self.deadlines.transfer
                ))
            })?
            .map_err(|e| transport(&e))?;
        let status = resp.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(Box::pin(futures::stream::empty()));
        }
        if !status.is_success() {
            return Err(self.failure(&what, resp).await);
        }
        if let Some(r) = range.filter(|r| r.offset > 0) {
            let start = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if status != StatusCode::PARTIAL_CONTENT || start != Some(r.offset) {
                return Err(ApiError::InvalidResponse(format!(
                    "{what}: the server did not send the range asked for"
                )));
            }
        }
        let stream = resp.bytes_stream().map_err(|e| transport(&e));
        Ok(guard_download(
            Box::pin(stream),
            self.deadlines,
            format!("reading {what}"),
        ))
    }

    async fn put_object_from_file(
        &self,
        _path: &str,
        _source: &std::path::Path,
        _size: u64,
        _options: &UploadOptions,
    ) -> ApiResult<String> {
        Err(read_only())
    }

    async fn put_object(
        &self,
        _path: &str,
        _content: bytes::Bytes,
        _options: &UploadOptions,
    ) -> ApiResult<String> {
        Err(read_only())
    }

    async fn create_multipart(&self, _path: &str, _options: &UploadOptions) -> ApiResult<String> {
        Err(read_only())
    }

    async fn upload_part(
        &self,
        _path: &str,
        _upload_id: &str,
        _number: u64,
        _source: &std::path::Path,
        _offset: u64,
        _len: u64,
    ) -> ApiResult<String> {
        Err(read_only())
    }

    async fn complete_multipart(
        &self,
        _path: &str,
        _upload_id: &str,
        _parts: &[(u64, String)],
    ) -> ApiResult<String> {
        Err(read_only())
    }

    async fn abort_multipart(&self, _path: &str, _upload_id: &str) -> ApiResult<()> {
        Err(read_only())
    }

    async fn copy_object(&self, _source: &str, _target: &str) -> ApiResult<()> {
        Err(read_only())
    }

    async fn delete_object(&self, _path: &str) -> ApiResult<()> {
        Err(read_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_urls_are_split() {
        let a = parse_link_url("https://h:8080/public/479cc5dbdf8b").unwrap();
        assert_eq!(a.link_url, "https://h:8080/public/479cc5dbdf8b");
        assert_eq!(a.hash, "479cc5dbdf8b");
        assert!(a.sub.is_empty());
        let a = parse_link_url("http://h/cells/public/abc/dav/a%20b/c.txt?x=1").unwrap();
        assert_eq!(a.link_url, "http://h/cells/public/abc");
        assert_eq!(a.sub, vec!["a b".to_string(), "c.txt".to_string()]);
        assert!(parse_link_url("https://h/public/").is_err());
        assert!(parse_link_url("https://h/ws/a").is_err());
        assert!(parse_link_url("ftp://h/public/abc").is_err());
        assert!(parse_link_url("https://h/public/abc/dav/%2E%2E/x").is_err());
    }

    #[test]
    fn child_names_come_from_hrefs_relative_to_the_parent() {
        assert_eq!(child_name("/public/h/dav/", "/public/h/dav/a.txt"), "a.txt");
        assert_eq!(child_name("/public/h/dav/d", "/public/h/dav/d/sub/"), "sub");
        assert_eq!(
            child_name("/public/h/dav/", "http://x/public/h/dav/é.txt"),
            "é.txt"
        );
        // Elsewhere, or climbing: names that check_name refuses.
        assert!(child_name("/public/h/dav/", "/etc/passwd").contains('/'));
        assert!(child_name("/public/h/dav/", "/public/h/dav/../x").contains('/'));
        assert_eq!(child_name("/public/h/dav/", "/public/h/dav/.."), "..");
    }

    #[test]
    fn multistatus_with_any_prefix() {
        let xml = r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:">
<d:response><d:href>/public/h/dav/</d:href><d:propstat><d:prop><d:displayname>Docs</d:displayname>
<d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
<d:response><d:href>/public/h/dav/a%20b.txt</d:href><d:propstat><d:prop><d:resourcetype/>
<d:getcontentlength>12</d:getcontentlength><d:getlastmodified>Sun, 06 Nov 1994 08:49:37 GMT</d:getlastmodified>
<d:getetag>"e1"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
<d:propstat><d:prop><d:getcontentlength>99</d:getcontentlength></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>
</d:multistatus>"#;
        let e = parse_multistatus(xml).unwrap();
        assert_eq!(e.len(), 2);
        assert!(e[0].folder);
        assert_eq!(e[0].display_name, "Docs");
        assert_eq!(e[1].href, "/public/h/dav/a b.txt");
        assert_eq!(e[1].size, 12);
        assert_eq!(e[1].mtime, 784111777);
        assert_eq!(e[1].etag, "e1");
        assert!(!e[1].folder);
    }
}
