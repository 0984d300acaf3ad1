//! A hostile Cells server for the tests: a minimal HTTP/1.1 responder on loopback (plain
//! tokio, so that a test controls every byte on the wire) whose answers come from one handler
//! closure per test. Whatever the handler leaves unanswered (`None`) gets the basics a client
//! needs to connect (unauthenticated bootconf, `/a/frontend/state` naming a user), then 404.
//!
//! Built to be reused by tests of bounded behaviour: [`Body::Writer`] hands the socket to the
//! test after the headers (a trickle, an endless or huge body, a connection cut),
//! [`HostileServer::start_pacing_uploads`] takes upload bodies a trickle at a time, and every
//! request is recorded ([`HostileServer::requests`]).
//!
//! Use from a test file with `mod hostile;`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (percent-encoded, with the query).
    pub target: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query's pairs, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// `POST /a/meta/bulk/get`: its first `NodePaths` entry (`ws/folder/*` for a listing).
    pub fn bulk_pattern(&self) -> Option<String> {
        (self.method == "POST" && self.path == "/a/meta/bulk/get")
            .then(|| self.json()["NodePaths"][0].as_str().map(str::to_string))
            .flatten()
    }

    /// `GET /a/tree/stat/<path>`: the path asked for.
    pub fn stat_path(&self) -> Option<&str> {
        (self.method == "GET")
            .then(|| self.path.strip_prefix("/a/tree/stat/"))
            .flatten()
    }

    /// `GET /io?list-type=2&prefix=...`: the listing's prefix.
    pub fn s3_list_prefix(&self) -> Option<&str> {
        (self.method == "GET" && self.path.trim_end_matches('/') == "/io")
            .then(|| self.query("prefix"))
            .flatten()
    }

    /// `GET /io/<key>`: the object's key.
    pub fn s3_get_key(&self) -> Option<&str> {
        (self.method == "GET")
            .then(|| self.path.strip_prefix("/io/"))
            .flatten()
            .filter(|k| !k.is_empty())
    }
}

/// What follows the headers.
pub enum Body {
    Bytes(Vec<u8>),
    /// The test writes the body itself on the socket (`length` is announced when given;
    /// otherwise the body ends when the connection closes). The connection is closed after.
    Writer {
        length: Option<u64>,
        write: Box<dyn FnOnce(TcpStream) -> BoxFuture<'static, ()> + Send>,
    },
}

/// An answer.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Bytes(body.into()),
        }
    }

    pub fn json(status: u16, value: Value) -> Response {
        Response::bytes(status, "application/json", value.to_string())
    }

    pub fn xml(status: u16, text: &str) -> Response {
        Response::bytes(status, "application/xml", text)
    }

    pub fn not_found() -> Response {
        Response::json(404, json!({"Title": "not found", "Code": 404}))
    }

    /// A body the test writes itself, after the headers.
    pub fn writer<F>(status: u16, length: Option<u64>, write: F) -> Response
    where
        F: FnOnce(TcpStream) -> BoxFuture<'static, ()> + Send + 'static,
    {
        Response {
            status,
            headers: vec![],
            body: Body::Writer {
                length,
                write: Box::new(write),
            },
        }
    }
}

/// A `treeNode` as the REST API sends it (`kind`: `"LEAF"` or `"COLLECTION"`).
pub fn tree_node(path: &str, kind: &str, size: u64) -> Value {
    json!({
        "Path": path,
        "Type": kind,
        "Size": size.to_string(),
        "MTime": "1700000000",
        "Uuid": format!("uuid-{}", path.len()),
        "Etag": "0123456789abcdef0123456789abcdef",
        "MetaStore": {},
    })
}

/// The answer to a stat: `{"Node": node}`.
pub fn stat_reply(node: Value) -> Response {
    Response::json(200, json!({ "Node": node }))
}

/// The answer to a bulk meta request (one page, no total).
pub fn bulk_reply(nodes: Vec<Value>) -> Response {
    Response::json(200, json!({ "Nodes": nodes }))
}

/// A workspace root for the workspaces listing (`bulk/get` of `["", "/*"]`).
pub fn workspace_node(slug: &str) -> Value {
    json!({
        "Path": slug,
        "Type": "COLLECTION",
        "Uuid": format!("ws-{slug}"),
        "MetaStore": {
            "ws_slug": serde_json::to_string(slug).unwrap(),
            "ws_scope": "\"ADMIN\"",
            "ws_permissions": "\"rw\"",
            "ws_label": serde_json::to_string(slug).unwrap(),
        },
    })
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A ListObjectsV2 answer: `objects` are `(key, size)`, `folders` are prefixes (with `/`).
pub fn s3_listing(prefix: &str, objects: &[(&str, u64)], folders: &[&str]) -> Response {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult><Name>io</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><IsTruncated>false</IsTruncated>",
        xml_escape(prefix),
        objects.len() + folders.len()
    );
    for (key, size) in objects {
        xml.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>\"0123456789abcdef0123456789abcdef\"</ETag><Size>{size}</Size></Contents>",
            xml_escape(key)
        ));
    }
    for p in folders {
        xml.push_str(&format!(
            "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
            xml_escape(p)
        ));
    }
    xml.push_str("</ListBucketResult>");
    Response::xml(200, &xml)
}

type Handler = Arc<dyn Fn(&Request) -> Option<Response> + Send + Sync>;

/// The server; stops (with its connections) when dropped.
pub struct HostileServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HostileServer {
    /// Serve on a free loopback port with `handler`, on the current tokio runtime.
    pub async fn start<F>(handler: F) -> HostileServer
    where
        F: Fn(&Request) -> Option<Response> + Send + Sync + 'static,
    {
        HostileServer::start_pacing_uploads(None, handler).await
    }

    /// [`HostileServer::start`], reading PUT bodies `pace.0` bytes every `pace.1` when given
    /// (an upload that trickles).
    pub async fn start_pacing_uploads<F>(
        pace: Option<(usize, std::time::Duration)>,
        handler: F,
    ) -> HostileServer
    where
        F: Fn(&Request) -> Option<Response> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = requests.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(serve(socket, handler.clone(), log.clone(), pace));
                while connections.try_join_next().is_some() {}
            }
        });
        HostileServer {
            url,
            requests,
            task,
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a client needs to connect, for what the test's handler does not answer.
fn basics(req: &Request) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/a/frontend/bootconf") => Response::json(
            200,
            json!({"ENDPOINT_REST_API": "/a", "backend": {"Version": "4.4.0"}}),
        ),
        ("GET", "/a/frontend/state") => Response::xml(
            200,
            "<?xml version=\"1.0\"?><tree><user id=\"mallory\"><repositories/></user></tree>",
        ),
        _ => Response::not_found(),
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Read from `socket` until `buffer` holds `want` bytes; `None` if the connection ends.
async fn fill(socket: &mut TcpStream, buffer: &mut Vec<u8>, want: usize) -> Option<()> {
    while buffer.len() < want {
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some(())
}

/// Read one request; `None` when the connection ended (or sent nonsense). With `pace`, a PUT
/// body is read `pace.0` bytes every `pace.1` (a server that takes uploads slowly).
async fn read_request(
    socket: &mut TcpStream,
    buffer: &mut Vec<u8>,
    pace: Option<(usize, std::time::Duration)>,
) -> Option<Request> {
    const HEAD_MAX: usize = 64 * 1024;
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buffer.len() > HEAD_MAX {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    buffer.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buffer.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let have = buffer.len();
                fill(socket, buffer, have + 1).await?;
            };
            let size_text = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buffer.drain(..line_end + 2);
            fill(socket, buffer, size + 2).await?;
            body.extend_from_slice(&buffer[..size]);
            buffer.drain(..size + 2);
            if size == 0 {
                break body;
            }
        }
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match pace {
            Some((step, period)) if method == "PUT" => {
                while buffer.len() < length {
                    tokio::time::sleep(period).await;
                    let mut chunk = vec![0u8; step.min(length - buffer.len())];
                    let n = socket.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                }
            }
            _ => fill(socket, buffer, length).await?,
        }
        buffer.drain(..length).collect()
    };
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    Some(Request {
        method,
        path: decode(raw_path),
        query,
        target,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

async fn serve(
    mut socket: TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<Request>>>,
    pace: Option<(usize, std::time::Duration)>,
) {
    let mut buffer = Vec::new();
    while let Some(req) = read_request(&mut socket, &mut buffer, pace).await {
        log.lock().unwrap().push(req.clone());
        let response = handler(&req).unwrap_or_else(|| basics(&req));
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            response.status,
            reason(response.status)
        );
        for (k, v) in &response.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match response.body {
            Body::Bytes(bytes) => {
                let body = if req.method == "HEAD" {
                    &[][..]
                } else {
                    &bytes[..]
                };
                head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
                if socket.write_all(head.as_bytes()).await.is_err()
                    || socket.write_all(body).await.is_err()
                {
                    return;
                }
            }
            Body::Writer { length, write } => {
                if let Some(length) = length {
                    head.push_str(&format!("Content-Length: {length}\r\n"));
                }
                head.push_str("Connection: close\r\n\r\n");
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                write(socket).await;
                return;
            }
        }
    }
}
