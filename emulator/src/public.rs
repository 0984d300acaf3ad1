//! Anonymous access to public links (cells-share-versions.md §1.8-§1.9): the page
//! `/public/<hash>` and the read-only WebDAV view `/public/<hash>/dav/<path>` (GET, HEAD,
//! PROPFIND, OPTIONS), with expiry, download limit and download counting.
//!
//! Invariants:
//! - The link checks come first, for the page and the DAV view alike, each a 404 HTML page
//!   with the server's message: unknown hash, expired (`AccessEnd` past), download limit
//!   reached, data deleted (no root left).
//! - A password-protected link needs HTTP Basic with any username and the link's password
//!   on the DAV view (401 `WWW-Authenticate: Basic realm="Link <hash>"` otherwise).
//! - The view shows only the link's roots: a single shared folder is the DAV root; a file
//!   (or several roots) appears under its base name. Paths never climb above a root.
//! - A download counts when the link has a download limit and a GET of a file starts at
//!   offset 0; ranged continuations and PROPFINDs never count. Download-disabled links serve
//!   listings but no content (403).
//! - Writes through the view (PUT, MKCOL, DELETE, ...) are not emulated: 403.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine as _;

use crate::SharedState;
use crate::shares::{self, Link};
use crate::store::NodeRecord;

/// The 404 texts of the public page (`computeTplConf`).
const UNKNOWN: &str = "Cannot find this link! Please contact the person who sent it to you.";
const EXPIRED: &str = "This link has expired. Please contact the person who sent it to you.";
const LIMIT_REACHED: &str = "This link has expired (number of maximum downloads has been reached).";
const DATA_DELETED: &str = "Error while loading link, the original data may have been deleted!";

/// Routes at the server root.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/public/{hash}", get(page))
        .route("/public/{hash}/", get(page))
        .route("/public/{hash}/dav", any(dav_root))
        .route("/public/{hash}/dav/", any(dav_root))
        .route("/public/{hash}/dav/{*path}", any(dav_path))
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn not_found_page(message: &str) -> Response {
    html(
        StatusCode::NOT_FOUND,
        format!(
            "<!DOCTYPE html><html><head><title>Pydio Cells</title></head><body><div class=\"error\">{}</div></body></html>\n",
            quick_xml::escape::escape(message)
        ),
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The link behind `hash` and its roots still there, or the 404 page saying why not.
async fn live_link(state: &SharedState, hash: String) -> Result<(Link, Vec<NodeRecord>), Response> {
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || {
        let link = shares::by_hash(&store, &hash).ok().flatten()?;
        let roots: Vec<NodeRecord> = shares::root_nodes(&store, &link)
            .into_iter()
            .flatten()
            .collect();
        Some((link, roots))
    })
    .await
    .ok()
    .flatten();
    let Some((link, roots)) = found else {
        return Err(not_found_page(UNKNOWN));
    };
    if link.access_end > 0 && link.access_end <= now_secs() {
        return Err(not_found_page(EXPIRED));
    }
    if link.max_downloads > 0 && link.downloads >= link.max_downloads {
        return Err(not_found_page(LIMIT_REACHED));
    }
    if roots.is_empty() {
        return Err(not_found_page(DATA_DELETED));
    }
    Ok((link, roots))
}

async fn page(State(state): State<SharedState>, Path(hash): Path<String>) -> Response {
    let (link, _) = match live_link(&state, hash).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let mut params = serde_json::json!({
        "MINISITE": link.hash,
        "START_REPOSITORY": link.uuid,
        "MAIN_ELEMENT": link.template,
    });
    if link.password.is_some() {
        params["PRESET_LOGIN"] = link.hidden_login.clone().into();
        params["PASSWORD_AUTH_ONLY"] = true.into();
    } else {
        params["PRELOG_USER"] = link.hidden_login.clone().into();
    }
    html(
        StatusCode::OK,
        format!(
            "<!DOCTYPE html><html><head><title>{}</title></head><body><div id=\"ajxp_desktop\"></div><script>window.pydioBootstrap = {{\"startParameters\": {}}};</script></body></html>\n",
            quick_xml::escape::escape(&link.label),
            params
        ),
    )
}

async fn dav_root(
    State(state): State<SharedState>,
    Path(hash): Path<String>,
    request: Request,
) -> Response {
    dav(state, hash, String::new(), request).await
}

async fn dav_path(
    State(state): State<SharedState>,
    Path((hash, path)): Path<(String, String)>,
    request: Request,
) -> Response {
    dav(state, hash, path, request).await
}

fn unauthorized(hash: &str) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized.").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"Link {hash}\"")) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn basic_password(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    Some(text.split_once(':')?.1.to_string())
}

/// A place in the view: the virtual root of a multi-root link, or a node of the owner's
/// tree (`path` is the owner's user path, `href` the path under `/dav/`).
enum Place {
    VirtualRoot,
    Node { path: String },
}

/// Map the path under `/dav/` to a place. `None`: nothing there.
fn locate(roots: &[NodeRecord], rel: &str) -> Option<Place> {
    let segs: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    if segs.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    if roots.len() == 1 && !roots[0].is_leaf() {
        let mut path = roots[0].path.clone();
        for s in &segs {
            path.push('/');
            path.push_str(s);
        }
        return Some(Place::Node { path });
    }
    let Some((first, rest)) = segs.split_first() else {
        return Some(Place::VirtualRoot);
    };
    let root = roots.iter().find(|r| r.name() == *first)?;
    if root.is_leaf() && !rest.is_empty() {
        return None;
    }
    let mut path = root.path.clone();
    for s in rest {
        path.push('/');
        path.push_str(s);
    }
    Some(Place::Node { path })
}

async fn dav(state: SharedState, hash: String, rel: String, request: Request) -> Response {
    let (link, roots) = match live_link(&state, hash.clone()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    if link.password.is_some()
        && !basic_password(request.headers()).is_some_and(|pw| link.check_password(&pw))
    {
        return unauthorized(&hash);
    }
    let method = request.method().clone();
    if method == Method::OPTIONS {
        return (
            StatusCode::OK,
            [
                ("DAV", "1, 2"),
                ("Allow", "OPTIONS, GET, HEAD, PROPFIND"),
                ("MS-Author-Via", "DAV"),
            ],
        )
            .into_response();
    }
    if !link.read {
        return (StatusCode::FORBIDDEN, "Forbidden").into_response();
    }
    let Some(place) = locate(&roots, &rel) else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    let base = format!("/public/{hash}/dav/");
    match method.as_str() {
        "PROPFIND" => {
            let depth = request
                .headers()
                .get("Depth")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("infinity")
                .to_ascii_lowercase();
            propfind(&state, &link, &roots, place, &rel, &base, &depth).await
        }
        "GET" | "HEAD" => {
            let Place::Node { path } = place else {
                return (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response();
            };
            get_file(&state, &link, &path, &method, request.headers()).await
        }
        _ => (StatusCode::FORBIDDEN, "Forbidden").into_response(),
    }
}

/// A single `bytes=a-b` / `bytes=a-` range within `size`; `Err(())` if unsatisfiable.
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if size == 0 || start >= size || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn http_date(secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    ))
    .unwrap_or_default()
}

async fn get_file(
    state: &SharedState,
    link: &Link,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let store = state.store.clone();
    let (owner, p) = (link.owner.clone(), path.to_string());
    let opened = tokio::task::spawn_blocking(move || store.open_content_file(&owner, &p)).await;
    let (record, file) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(crate::store::StoreError::IsAFolder(_))) => {
            return (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response();
        }
        _ => return (StatusCode::NOT_FOUND, "Not Found").into_response(),
    };
    if link.download_disabled {
        return (
            StatusCode::FORBIDDEN,
            "You are not allowed to download this document",
        )
            .into_response();
    }
    let size = record.size;
    let range = match parse_range(headers, size) {
        Ok(r) => r,
        Err(()) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response();
        }
    };
    let (start, len, status) = match range {
        Some((a, b)) => (a, b - a + 1, StatusCode::PARTIAL_CONTENT),
        None => (0, size, StatusCode::OK),
    };
    let mime = record
        .mime
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, mime)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ETAG, format!("\"{}\"", record.etag))
        .header(header::LAST_MODIFIED, http_date(record.mtime))
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if method == Method::HEAD {
        return builder.body(Body::empty()).unwrap_or_default();
    }
    if link.max_downloads > 0 && start == 0 {
        let store = state.store.clone();
        let uuid = link.uuid.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = shares::count_download(&store, &uuid) {
                tracing::warn!("counting a link download: {e}");
            }
        });
    }
    let body = Body::from_stream(crate::s3::stream_file(file, start, len));
    builder.body(body).unwrap_or_default()
}

fn href_escape(path: &str) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    const SET: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'&')
        .add(b'\'');
    utf8_percent_encode(path, SET).to_string()
}

fn response_xml(href: &str, name: &str, node: Option<&NodeRecord>) -> String {
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let mut props = format!("<D:displayname>{}</D:displayname>", esc(name));
    match node {
        Some(n) if n.is_leaf() => {
            props.push_str(&format!(
                "<D:resourcetype/><D:getcontentlength>{}</D:getcontentlength><D:getcontenttype>{}</D:getcontenttype><D:getetag>\"{}\"</D:getetag><D:getlastmodified>{}</D:getlastmodified>",
                n.size,
                esc(n.mime.as_deref().unwrap_or("application/octet-stream")),
                esc(&n.etag),
                http_date(n.mtime)
            ));
        }
        Some(n) => props.push_str(&format!(
            "<D:resourcetype><D:collection/></D:resourcetype><D:getlastmodified>{}</D:getlastmodified>",
            http_date(n.mtime)
        )),
        None => props.push_str("<D:resourcetype><D:collection/></D:resourcetype>"),
    }
    format!(
        "<D:response><D:href>{}</D:href><D:propstat><D:prop>{props}</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>",
        esc(&href_escape(href))
    )
}

async fn propfind(
    state: &SharedState,
    link: &Link,
    roots: &[NodeRecord],
    place: Place,
    rel: &str,
    base: &str,
    depth: &str,
) -> Response {
    let store = state.store.clone();
    let owner = link.owner.clone();
    let roots = roots.to_vec();
    let rel = rel.trim_matches('/').to_string();
    let base = base.to_string();
    let depth = depth.to_string();
    let built = tokio::task::spawn_blocking(move || -> Option<String> {
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">",
        );
        let self_href = |is_dir: bool| {
            let mut h = format!("{base}{rel}");
            if is_dir && !h.ends_with('/') {
                h.push('/');
            }
            h
        };
        match place {
            Place::VirtualRoot => {
                out.push_str(&response_xml(&base, "dav", None));
                if depth != "0" {
                    for r in &roots {
                        let href = if r.is_leaf() {
                            format!("{base}{}", r.name())
                        } else {
                            format!("{base}{}/", r.name())
                        };
                        out.push_str(&response_xml(&href, r.name(), Some(r)));
                    }
                }
            }
            Place::Node { path } => {
                let node = store.stat(&owner, &path).ok()?;
                let name = if rel.is_empty() {
                    node.name().to_string()
                } else {
                    rel.rsplit('/').next().unwrap_or("").to_string()
                };
                out.push_str(&response_xml(
                    &self_href(!node.is_leaf()),
                    &name,
                    Some(&node),
                ));
                if !node.is_leaf() && depth != "0" {
                    let children = if depth == "1" {
                        store.list(&owner, &path).ok()?
                    } else {
                        store.list_recursive(&owner, &path).ok()?
                    };
                    let dir_href = self_href(true);
                    for c in children {
                        let sub = c.path.strip_prefix(&format!("{path}/")).unwrap_or(c.name());
                        let mut href = format!("{dir_href}{sub}");
                        if !c.is_leaf() {
                            href.push('/');
                        }
                        out.push_str(&response_xml(&href, c.name(), Some(&c)));
                    }
                }
            }
        }
        out.push_str("</D:multistatus>\n");
        Some(out)
    })
    .await
    .ok()
    .flatten();
    match built {
        Some(xml) => (
            StatusCode::MULTI_STATUS,
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            xml,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}
