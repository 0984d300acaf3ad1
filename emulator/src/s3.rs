//! The S3 gateway (`/io`, also `/data`), as cells-api.md §6 describes the real one.
//!
//! The protocol layer (routing, XML, SigV4 header and presigned checks, streaming SHA-256
//! payload verification) is `s3s`; this module owns what is Cells-specific:
//! - **Token first.** Before s3s sees a request, [`s3_entry`] finds the caller's token (the
//!   SigV4 access key, an `X-Pydio-Bearer` header signed as `gateway`, or a `pydio_jwt` query
//!   parameter) and verifies it with [`crate::auth::Auth::verify`]; a bad or expired token is
//!   a 403 `AccessDenied` whatever the signature. Signatures are then verified by s3s with
//!   the secret `gatewaysecret` for every access key.
//! - **No streaming payloads.** `aws-chunked` / `STREAMING-*` bodies are refused
//!   (`SignatureDoesNotMatch`), as the real gateway effectively does because it re-signs
//!   requests.
//! - **Keys are user paths.** Bucket `io` or `data`, key `<workspace>/<path>`; every access
//!   goes through the store with the caller's login, so the store's rights apply.
//! - **Bodies stream.** A GET is read from the immutable blob by a blocking reader in large
//!   chunks; a PUT or a part is written to a temp file as it arrives. No whole object is ever
//!   held in memory.
//! - Multipart uploads in flight live under `<data_dir>/s3-multipart/<upload id>/` (a manifest
//!   and one file per part), so they survive a restart like the real gateway's.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::Digest as _;
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use crate::SharedState;
use crate::store::{CELLS_HASH_BLOCK, CellsHasher, NodeRecord, Store, StoreError, TempBlob};

/// The gateway's own access key (used with `X-Pydio-Bearer`).
pub const GATEWAY_ACCESS_KEY: &str = "gateway";
/// The secret every SigV4 signature is checked against.
pub const GATEWAY_SECRET: &str = "gatewaysecret";
/// The buckets the gateway answers.
pub const BUCKETS: [&str; 2] = ["io", "data"];

/// Size of the chunks a GET reads from disk and hands to the socket.
const READ_CHUNK: usize = 1 << 20;
/// Buffer used to copy blobs and parts on disk.
const COPY_BUFFER: usize = 1 << 20;
/// S3's minimum size of every part but the last (MinIO enforces it).
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// MinIO's default page size, which the real gateway passes as a node limit.
const DEFAULT_MAX_KEYS: i32 = 1000;

/// The S3 routes: `/` (ListBuckets), `/io[/key]`, `/data[/key]`.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/", any(s3_entry))
        .route("/io", any(s3_entry))
        .route("/io/", any(s3_entry))
        .route("/io/{*key}", any(s3_entry))
        .route("/data", any(s3_entry))
        .route("/data/", any(s3_entry))
        .route("/data/{*key}", any(s3_entry))
}

/// Who is calling, attached to the request before s3s runs.
#[derive(Clone)]
struct Caller {
    state: SharedState,
    login: String,
    /// Token came from `pydio_jwt`: GETs are forced to download as attachments.
    force_attachment: bool,
}

fn s3s_service() -> &'static S3Service {
    static SERVICE: OnceLock<S3Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let mut builder = S3ServiceBuilder::new(Gateway);
        builder.set_auth(GatewayAuth);
        builder.set_access(GatewayAccess);
        builder.set_validation(CellsBucketNames);
        builder.set_route(CopyObjectRoute);
        builder.build()
    })
}

async fn s3_entry(State(state): State<SharedState>, mut request: Request) -> Response {
    let headers = request.headers();
    if let Some(refusal) = refuse_streaming_payload(headers) {
        return refusal;
    }
    let query = request.uri().query().unwrap_or("");
    let token = match find_token(headers, query) {
        TokenSource::Token { token, from_query } => Some((token, from_query)),
        TokenSource::None => None,
    };
    let Some((token, from_query)) = token else {
        return s3_error_response(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Access Denied.",
            request.uri().path(),
        );
    };
    let principal = match state.auth.verify(&token) {
        Ok(p) => p,
        Err(_) => {
            return s3_error_response(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Access Denied.",
                request.uri().path(),
            );
        }
    };
    request.extensions_mut().insert(Caller {
        state,
        login: principal.login,
        force_attachment: from_query,
    });
    let request = request.map(s3s::Body::http_body_unsync);
    match s3s_service().call(request).await {
        Ok(response) => response.map(Body::new),
        Err(err) => {
            tracing::warn!(error = ?err, "s3 service error");
            s3_error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error, please try again.",
                "",
            )
        }
    }
}

/// `aws-chunked` bodies carry chunk signatures the real gateway cannot verify after it
/// re-signs the request: MinIO then answers `SignatureDoesNotMatch`.
fn refuse_streaming_payload(headers: &HeaderMap) -> Option<Response> {
    let sha = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let chunked_encoding = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("aws-chunked"))
        });
    if sha.starts_with("STREAMING-") || chunked_encoding || headers.contains_key("x-amz-trailer") {
        return Some(s3_error_response(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Streaming (aws-chunked) payloads are not supported by this gateway.",
            "",
        ));
    }
    None
}

enum TokenSource {
    Token { token: String, from_query: bool },
    None,
}

/// Find the caller's token: `X-Pydio-Bearer`, then the SigV4 access key (header or
/// presigned query) unless it is the gateway's own key, then `pydio_jwt`.
fn find_token(headers: &HeaderMap, query: &str) -> TokenSource {
    if let Some(bearer) = headers.get("x-pydio-bearer").and_then(|v| v.to_str().ok()) {
        let bearer = bearer.trim();
        if !bearer.is_empty() {
            return TokenSource::Token {
                token: bearer.to_owned(),
                from_query: false,
            };
        }
    }
    let mut access_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(access_key_from_authorization);
    let mut pydio_jwt = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if access_key.is_none() && name.eq_ignore_ascii_case("X-Amz-Credential") {
            access_key = value.split('/').next().map(str::to_owned);
        } else if name == "pydio_jwt" {
            pydio_jwt = Some(value.into_owned());
        }
    }
    if let Some(key) = access_key
        && !key.is_empty()
        && key != GATEWAY_ACCESS_KEY
    {
        return TokenSource::Token {
            token: key,
            from_query: false,
        };
    }
    match pydio_jwt {
        Some(token) if !token.is_empty() => TokenSource::Token {
            token,
            from_query: true,
        },
        _ => TokenSource::None,
    }
}

/// `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/s3/aws4_request, ...` → `<key>`.
fn access_key_from_authorization(value: &str) -> Option<String> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256")?;
    let credential = rest
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("Credential="))?;
    credential.split('/').next().map(str::to_owned)
}

fn s3_error_response(status: StatusCode, code: &str, message: &str, resource: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
        xml_escape(code),
        xml_escape(message),
        xml_escape(resource),
        uuid::Uuid::new_v4().simple()
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every access key shares the gateway secret: the token itself was checked in [`s3_entry`].
struct GatewayAuth;

#[async_trait::async_trait]
impl s3s::auth::S3Auth for GatewayAuth {
    async fn get_secret_key(&self, _access_key: &str) -> S3Result<s3s::auth::SecretKey> {
        Ok(s3s::auth::SecretKey::from(GATEWAY_SECRET))
    }
}

/// A request may proceed when [`s3_entry`] attached a verified caller.
struct GatewayAccess;

#[async_trait::async_trait]
impl s3s::access::S3Access for GatewayAccess {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        if cx.extensions_mut().get::<Caller>().is_some() {
            Ok(())
        } else {
            Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "Access Denied.",
            ))
        }
    }
}

/// `io` is shorter than S3 allows; the gateway answers exactly `io` and `data`.
struct CellsBucketNames;

impl s3s::validation::NameValidation for CellsBucketNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        !name.is_empty() && !name.contains('/')
    }
}

/// The S3 operations.
struct Gateway;

impl Caller {
    /// The gateway listing (V1 and V2 share it) of `prefix`, off the async runtime.
    async fn list(
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

fn caller<T>(req: &S3Request<T>) -> S3Result<Caller> {
    req.extensions
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| S3Error::with_message(S3ErrorCode::AccessDenied, "Access Denied."))
}

fn check_bucket(bucket: &str) -> S3Result<()> {
    if BUCKETS.contains(&bucket) {
        Ok(())
    } else {
        Err(S3Error::with_message(
            S3ErrorCode::NoSuchBucket,
            "The specified bucket does not exist",
        ))
    }
}

/// An object key as a store path (no leading/trailing slash).
fn key_path(key: &str) -> String {
    key.trim_matches('/').to_owned()
}

fn custom_error(code: &'static str, status: StatusCode, message: String) -> S3Error {
    let code = S3ErrorCode::from_bytes(code.as_bytes()).unwrap_or(S3ErrorCode::InternalError);
    let mut err = S3Error::with_message(code, message);
    err.set_status_code(status);
    err
}

/// How store errors surface on the S3 wire (MinIO codes the real gateway returns).
fn store_error(err: StoreError) -> S3Error {
    match err {
        StoreError::NotFound(_) => {
            S3Error::with_message(S3ErrorCode::NoSuchKey, "The specified key does not exist.")
        }
        StoreError::Forbidden(_) => {
            S3Error::with_message(S3ErrorCode::AccessDenied, "Access Denied.")
        }
        StoreError::IsAFolder(p) => custom_error(
            "XMinioObjectExistsAsDirectory",
            StatusCode::CONFLICT,
            format!("A folder already exists with the same name: {p}"),
        ),
        StoreError::NotAFolder(p) => custom_error(
            "XMinioParentIsObject",
            StatusCode::BAD_REQUEST,
            format!("Object-prefix is already an object: {p}"),
        ),
        StoreError::AlreadyExists(p) => custom_error(
            "XMinioObjectExistsAsDirectory",
            StatusCode::CONFLICT,
            format!("{p} already exists"),
        ),
        StoreError::Invalid(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        StoreError::Locked(m) => custom_error("Locked", StatusCode::LOCKED, m),
        StoreError::Internal(e) => {
            tracing::error!(error = %e, "store error behind the S3 gateway");
            S3Error::with_message(S3ErrorCode::InternalError, "internal error")
        }
    }
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "S3 gateway internal error");
    S3Error::with_message(S3ErrorCode::InternalError, "internal error")
}

/// Run store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> S3Result<T> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

fn timestamp(unix_seconds: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .into()
}

fn now() -> Timestamp {
    time::OffsetDateTime::now_utc().into()
}

fn strong_etag(etag: &str) -> ETag {
    ETag::Strong(etag.trim_matches('"').to_owned())
}

fn etag_value(etag: &ETag) -> &str {
    match etag {
        ETag::Strong(s) | ETag::Weak(s) => s.trim_matches('"'),
    }
}

fn content_type(record: &NodeRecord) -> String {
    record
        .mime
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// A file's content as a stream of large chunks, read by a blocking task.
pub(crate) struct FileChunks {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
}

impl Stream for FileChunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

pub(crate) fn stream_file(mut file: std::fs::File, start: u64, len: u64) -> FileChunks {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
            let mut buf = vec![0u8; n];
            if let Err(e) = file.read_exact(&mut buf) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            left -= n as u64;
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
    });
    FileChunks { rx }
}

/// Why a request body could not be stored.
enum BodyError {
    /// The client's body failed (hash mismatch, length mismatch, disconnect).
    Client(String),
    /// Writing it failed on our side.
    Io(std::io::Error),
}

impl From<BodyError> for S3Error {
    fn from(e: BodyError) -> S3Error {
        match e {
            BodyError::Client(msg) if msg.contains("Sha256Mismatch") => custom_error(
                "XAmzContentSHA256Mismatch",
                StatusCode::BAD_REQUEST,
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ),
            BodyError::Client(msg)
                if msg.contains("LengthMismatch") || msg.contains("Incomplete") =>
            {
                S3Error::with_message(
                    S3ErrorCode::IncompleteBody,
                    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
                )
            }
            BodyError::Client(msg) => S3Error::with_message(S3ErrorCode::IncompleteBody, msg),
            BodyError::Io(e) => internal(e),
        }
    }
}

/// Stream a request body into `sink` on a blocking thread, chunk by chunk, as it arrives.
async fn drain_body<W: Write + Send + 'static>(
    body: Option<StreamingBlob>,
    sink: W,
) -> Result<W, BodyError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        while let Some(chunk) = rx.blocking_recv() {
            sink.write_all(&chunk)?;
        }
        sink.flush()?;
        Ok::<W, std::io::Error>(sink)
    });
    let mut client_error = None;
    if let Some(mut body) = body {
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed: its error is reported below
                    }
                }
                Err(e) => {
                    client_error = Some(e.to_string());
                    break;
                }
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| BodyError::Io(std::io::Error::other(e)))?;
    if let Some(msg) = client_error {
        return Err(BodyError::Client(msg));
    }
    written.map_err(BodyError::Io)
}

/// Copy a whole file into a writer with a large buffer.
fn copy_into(mut from: impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

// ---------------------------------------------------------------------------------------
// Multipart uploads on disk

/// What an upload in flight records about itself (`manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadManifest {
    upload_id: String,
    bucket: String,
    /// Object key (`<workspace>/<path>`).
    key: String,
    login: String,
    /// Unix seconds.
    initiated: i64,
    content_type: Option<String>,
}

/// What one stored part records (`part-NNNNN.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartRecord {
    part_number: i32,
    etag: String,
    size: u64,
    last_modified: i64,
    /// Hex MD5 of each 10 MiB block of the part, the last (partial) one included, computed as
    /// the part arrived; absent in records written before they were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    block_md5s: Option<Vec<String>>,
}

impl PartRecord {
    /// The raw block digests, if recorded and well-formed.
    fn block_digests(&self) -> Option<Vec<[u8; 16]>> {
        self.block_md5s
            .as_ref()?
            .iter()
            .map(|h| {
                let mut d = [0u8; 16];
                hex::decode_to_slice(h, &mut d).ok()?;
                Some(d)
            })
            .collect()
    }
}

fn uploads_dir(store: &Store) -> PathBuf {
    store.data_dir().join("s3-multipart")
}

fn upload_dir(store: &Store, upload_id: &str) -> S3Result<PathBuf> {
    // Upload ids are our own UUIDs: anything else is unknown (and never a path).
    if upload_id.is_empty() || !upload_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(no_such_upload());
    }
    Ok(uploads_dir(store).join(upload_id))
}

fn no_such_upload() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchUpload,
        "The specified multipart upload does not exist.",
    )
}

fn read_manifest(dir: &Path) -> Option<UploadManifest> {
    let text = std::fs::read(dir.join("manifest.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The manifest of `upload_id` if it belongs to this caller and key.
fn owned_upload(
    store: &Store,
    upload_id: &str,
    login: &str,
    key: &str,
) -> S3Result<(PathBuf, UploadManifest)> {
    let dir = upload_dir(store, upload_id)?;
    let manifest = read_manifest(&dir).ok_or_else(no_such_upload)?;
    if manifest.login != login || manifest.key != key {
        return Err(no_such_upload());
    }
    Ok((dir, manifest))
}

fn part_file(dir: &Path, n: i32) -> PathBuf {
    dir.join(format!("part-{n:05}"))
}

fn part_record_file(dir: &Path, n: i32) -> PathBuf {
    dir.join(format!("part-{n:05}.json"))
}

fn list_part_records(dir: &Path) -> Vec<PartRecord> {
    let mut parts: Vec<PartRecord> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("part-") && name.ends_with(".json")
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<PartRecord>(&b).ok())
        .collect();
    parts.sort_by_key(|p| p.part_number);
    parts
}

/// Write `bytes` to `path` atomically (temp + rename).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A part being received: written to a temp file while its MD5 and the MD5s of its 10 MiB
/// blocks (from which the object's `x-cells-hash` is built at completion) are computed.
struct PartWriter {
    file: std::fs::File,
    md5: md5::Md5,
    blocks: CellsHasher,
    size: u64,
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.md5.update(&buf[..n]);
        self.blocks.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Removes a temp file unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Listing

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

fn common_prefix_list(prefixes: Vec<String>) -> Option<CommonPrefixList> {
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

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let who = caller(&req)?;
        let buckets = BUCKETS
            .iter()
            .map(|name| Bucket {
                name: Some((*name).to_owned()),
                creation_date: Some(now()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some(who.login.clone()),
                id: Some(who.login),
            }),
            ..Default::default()
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        check_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        check_bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let who = caller(&req)?;
        check_bucket(&req.input.bucket)?;
        let path = key_path(&req.input.key);
        let store = who.state.store.clone();
        let login = who.login.clone();
        let version = req.input.version_id.clone();
        let record = blocking(move || match version {
            Some(v) => crate::versions::open_at_path(&store, &login, &path, &v)
                .map(|(r, _)| r)
                .map_err(version_error),
            None => store.stat(&login, &path).map_err(store_error),
        })
        .await?;
        if !record.is_leaf() {
            return Err(folder_object_error());
        }
        if record.content_id.is_none() {
            return Err(store_error(StoreError::NotFound(record.path)));
        }
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(i64::try_from(record.size).unwrap_or(i64::MAX)),
            content_type: Some(content_type(&record)),
            e_tag: Some(strong_etag(&record.etag)),
            last_modified: Some(timestamp(record.mtime)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let who = caller(&req)?;
        check_bucket(&req.input.bucket)?;
        let path = key_path(&req.input.key);
        let store = who.state.store.clone();
        let login = who.login.clone();
        let version = req.input.version_id.clone();
        let (record, file) = blocking(move || match version {
            Some(v) => {
                crate::versions::open_at_path(&store, &login, &path, &v).map_err(version_error)
            }
            None => store.open_content_file(&login, &path).map_err(|e| match e {
                StoreError::IsAFolder(_) => folder_object_error(),
                e => store_error(e),
            }),
        })
        .await?;
        let full = record.size;
        let (start, len, content_range) = match req.input.range {
            None => (0, full, None),
            Some(range) => {
                let r = range.check(full).map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidRange,
                        "The requested range is not satisfiable",
                    )
                })?;
                let range_header = format!("bytes {}-{}/{}", r.start, r.end - 1, full);
                (r.start, r.end - r.start, Some(range_header))
            }
        };
        let body = StreamingBlob::wrap(stream_file(file, start, len));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            accept_ranges: Some("bytes".into()),
            content_length: Some(i64::try_from(len).unwrap_or(i64::MAX)),
            content_range,
            content_type: Some(content_type(&record)),
            content_disposition: who.force_attachment.then(|| "attachment".to_owned()),
            e_tag: Some(strong_etag(&record.etag)),
            last_modified: Some(timestamp(record.mtime)),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let who = caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        let path = key_path(&input.key);
        let store = who.state.store.clone();
        if input.key.ends_with('/') {
            // S3 tools make folders with empty "dir/" objects: make a real folder.
            if input.content_length.unwrap_or(0) != 0 {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    "an object key ending with '/' names a folder and takes no content",
                ));
            }
            let login = who.login.clone();
            blocking(move || match store.create_folders(&login, &path) {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(store_error(e)),
            })
            .await?;
            return Ok(S3Response::new(PutObjectOutput {
                e_tag: Some(strong_etag(&hex::encode(md5::Md5::digest(b"")))),
                ..Default::default()
            }));
        }
        let announced = input
            .content_length
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0);
        // The real server indexes a "temporary" node before writing any byte.
        let placeholder = {
            let store = store.clone();
            let login = who.login.clone();
            let path = path.clone();
            blocking(move || {
                let existing = store.stat(&login, &path).ok();
                let created = store
                    .create_placeholder(&login, &path, announced)
                    .map_err(store_error)?;
                let created_now = existing.is_none();
                let tmp = store.tmp_file().map_err(store_error)?;
                Ok((created, created_now, tmp))
            })
            .await?
        };
        let (_placeholder_node, created_now, tmp) = placeholder;
        let drop_placeholder = |store: Arc<Store>, login: String, path: String| async move {
            if created_now {
                let _ = tokio::task::spawn_blocking(move || store.drop_placeholder(&login, &path))
                    .await;
            }
        };
        let blob = match drain_body(input.body, tmp).await {
            Ok(blob) => blob,
            Err(e) => {
                drop_placeholder(store.clone(), who.login.clone(), path.clone()).await;
                return Err(e.into());
            }
        };
        let mime = input.content_type.clone();
        let committed = {
            let store = store.clone();
            let login = who.login.clone();
            let path = path.clone();
            blocking(move || {
                store
                    .commit_file(&login, &path, blob, mime, BTreeMap::new())
                    .map_err(store_error)
            })
            .await
        };
        let record = match committed {
            Ok(r) => r,
            Err(e) => {
                drop_placeholder(store, who.login, path).await;
                return Err(e);
            }
        };
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(strong_etag(&record.etag)),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let who = caller(&req)?;
        check_bucket(&req.input.bucket)?;
        let path = key_path(&req.input.key);
        let store = who.state.store.clone();
        let login = who.login.clone();
        blocking(move || match store.delete_file(&login, &path) {
            // S3 semantics (MinIO): deleting a missing key succeeds.
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(store_error(e)),
        })
        .await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        _req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "A header you provided implies functionality that is not implemented",
        ))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let who = caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().unwrap_or_default();
        let max_keys = input.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        let (objects, prefixes) = who.list(&prefix, &delimiter, max_keys).await?;
        let key_count = i32::try_from(objects.len() + prefixes.len()).unwrap_or(i32::MAX);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(prefix),
            delimiter: (!delimiter.is_empty()).then_some(delimiter),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            is_truncated: Some(false),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            contents: (!objects.is_empty()).then_some(objects),
            common_prefixes: common_prefix_list(prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let who = caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().unwrap_or_default();
        let max_keys = input.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        let (objects, prefixes) = who.list(&prefix, &delimiter, max_keys).await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(prefix),
            delimiter: (!delimiter.is_empty()).then_some(delimiter),
            marker: input.marker,
            max_keys: Some(max_keys),
            is_truncated: Some(false),
            contents: (!objects.is_empty()).then_some(objects),
            common_prefixes: common_prefix_list(prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let who = caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        let key = key_path(&input.key);
        let clear_size = input
            .metadata
            .as_ref()
            .and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("pydio-clear-size"))
                    .map(|(_, v)| v.trim().parse::<u64>().unwrap_or(0))
            })
            .unwrap_or(0);
        let upload_id = uuid::Uuid::new_v4().to_string();
        let manifest = UploadManifest {
            upload_id: upload_id.clone(),
            bucket: input.bucket.clone(),
            key: key.clone(),
            login: who.login.clone(),
            initiated: time::OffsetDateTime::now_utc().unix_timestamp(),
            content_type: input.content_type.clone(),
        };
        let store = who.state.store.clone();
        let login = who.login.clone();
        let id = upload_id.clone();
        blocking(move || {
            store
                .create_placeholder(&login, &manifest.key, clear_size)
                .map_err(store_error)?;
            let dir = upload_dir(&store, &id)?;
            std::fs::create_dir_all(&dir).map_err(internal)?;
            let json = serde_json::to_vec(&manifest).map_err(internal)?;
            write_atomically(&dir.join("manifest.json"), &json).map_err(internal)
        })
        .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let who = caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        let part_number = input.part_number;
        if !(1..=10_000).contains(&part_number) {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            ));
        }
        let key = key_path(&input.key);
        let store = who.state.store.clone();
        let login = who.login.clone();
        let upload_id = input.upload_id.clone();
        let (dir, tmp_path, file) = blocking(move || {
            let (dir, _) = owned_upload(&store, &upload_id, &login, &key)?;
            let tmp_path = dir.join(format!("incoming-{}", uuid::Uuid::new_v4().simple()));
            let file = std::fs::File::create(&tmp_path).map_err(internal)?;
            Ok((dir, tmp_path, file))
        })
        .await?;
        let mut guard = RemoveOnDrop(Some(tmp_path.clone()));
        let writer = PartWriter {
            file,
            md5: md5::Md5::new(),
            blocks: CellsHasher::new(),
            size: 0,
        };
        let written = drain_body(input.body, writer).await?;
        let etag = hex::encode(written.md5.finalize());
        let block_md5s = written
            .blocks
            .finish_blocks()
            .iter()
            .map(hex::encode)
            .collect();
        let record = PartRecord {
            part_number,
            etag: etag.clone(),
            size: written.size,
            last_modified: time::OffsetDateTime::now_utc().unix_timestamp(),
            block_md5s: Some(block_md5s),
        };
        drop(written.file);
        blocking(move || {
            std::fs::rename(&tmp_path, part_file(&dir, part_number)).map_err(internal)?;
            let json = serde_json::to_vec(&record).map_err(internal)?;
            write_atomically(&part_record_file(&dir, part_number), &json).map_err(internal)
        })
        .await?;
        guard.0 = None;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(strong_etag(&etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let who = caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        let key = key_path(&input.key);
        let requested: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0),
                    p.e_tag.as_ref().map(etag_value).unwrap_or("").to_owned(),
                )
            })
            .collect();
        if requested.is_empty() {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                "You must specify at least one part",
            ));
        }
        let store = who.state.store.clone();
        let login = who.login.clone();
        let upload_id = input.upload_id.clone();
        let record = blocking(move || {
            let (dir, manifest) = owned_upload(&store, &upload_id, &login, &key)?;
            let stored = list_part_records(&dir);
            if requested.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidPartOrder,
                    "The list of parts was not in ascending order.",
                ));
            }
            let mut chosen = Vec::with_capacity(requested.len());
            for (i, (n, etag)) in requested.iter().enumerate() {
                let part = stored
                    .iter()
                    .find(|p| p.part_number == *n && p.etag == *etag)
                    .ok_or_else(|| {
                        S3Error::with_message(
                            S3ErrorCode::InvalidPart,
                            "One or more of the specified parts could not be found.",
                        )
                    })?;
                if i + 1 < requested.len() && part.size < MIN_PART_SIZE {
                    return Err(S3Error::with_message(
                        S3ErrorCode::EntityTooSmall,
                        "Your proposed upload is smaller than the minimum allowed object size.",
                    ));
                }
                chosen.push(part.clone());
            }
            let mut blob: TempBlob = store.tmp_file().map_err(store_error)?;
            let mut digests = Vec::with_capacity(chosen.len() * 16);
            // The object's block boundaries are the parts' when every part but the last is a
            // whole number of blocks: its x-cells-hash then follows from the parts' block
            // digests, and the parts are concatenated without reading them through here.
            let part_blocks: Option<Vec<Vec<[u8; 16]>>> = chosen
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let aligned = i + 1 == chosen.len() || p.size.is_multiple_of(CELLS_HASH_BLOCK);
                    if aligned { p.block_digests() } else { None }
                })
                .collect();
            for (i, part) in chosen.iter().enumerate() {
                let mut file =
                    std::fs::File::open(part_file(&dir, part.part_number)).map_err(internal)?;
                match &part_blocks {
                    Some(blocks) => {
                        blob.append_file_with_blocks(&mut file, part.size, &blocks[i])
                            .map_err(internal)?;
                    }
                    None => {
                        copy_into(file, &mut blob).map_err(internal)?;
                    }
                }
                digests.extend_from_slice(&hex::decode(&part.etag).map_err(internal)?);
            }
            blob.flush().map_err(internal)?;
            blob.set_etag(format!(
                "{}-{}",
                hex::encode(md5::Md5::digest(&digests)),
                chosen.len()
            ));
            let record = store
                .commit_file(
                    &login,
                    &manifest.key,
                    blob,
                    manifest.content_type.clone(),
                    BTreeMap::new(),
                )
                .map_err(store_error)?;
            let _ = std::fs::remove_dir_all(&dir);
            Ok(record)
        })
        .await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(strong_etag(&record.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let who = caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        let key = key_path(&input.key);
        let store = who.state.store.clone();
        let login = who.login.clone();
        blocking(move || {
            let (dir, manifest) = owned_upload(&store, &input.upload_id, &login, &key)?;
            std::fs::remove_dir_all(&dir).map_err(internal)?;
            // The temporary index node goes with the upload (if it still is one).
            let _ = store.drop_placeholder(&login, &manifest.key);
            Ok(())
        })
        .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let who = caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        let key = key_path(&input.key);
        let store = who.state.store.clone();
        let login = who.login.clone();
        let upload_id = input.upload_id.clone();
        let marker = input.part_number_marker.unwrap_or(0);
        let max_parts = input.max_parts.unwrap_or(1000).max(1);
        let (parts, truncated) = blocking(move || {
            let (dir, _) = owned_upload(&store, &upload_id, &login, &key)?;
            let mut parts: Vec<PartRecord> = list_part_records(&dir)
                .into_iter()
                .filter(|p| p.part_number > marker)
                .collect();
            let max = usize::try_from(max_parts).unwrap_or(1000);
            let truncated = parts.len() > max;
            parts.truncate(max);
            Ok((parts, truncated))
        })
        .await?;
        let next = parts.last().map(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max_parts),
            is_truncated: Some(truncated),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| Part {
                        part_number: Some(p.part_number),
                        e_tag: Some(strong_etag(&p.etag)),
                        size: Some(i64::try_from(p.size).unwrap_or(i64::MAX)),
                        last_modified: Some(timestamp(p.last_modified)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let who = caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let store = who.state.store.clone();
        let login = who.login.clone();
        let p = prefix.trim_start_matches('/').to_owned();
        let mut uploads = blocking(move || {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(uploads_dir(&store))
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some(m) = read_manifest(&entry.path())
                    && m.login == login
                    && m.key.starts_with(&p)
                {
                    found.push(m);
                }
            }
            Ok(found)
        })
        .await?;
        uploads.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(prefix),
            max_uploads: Some(input.max_uploads.unwrap_or(1000)),
            is_truncated: Some(false),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|m| MultipartUpload {
                        key: Some(m.key),
                        upload_id: Some(m.upload_id),
                        initiated: Some(timestamp(m.initiated)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

/// CopyObject is served by this custom route (after s3s verified the signature) because
/// s3s's `x-amz-copy-source` parser refuses the bucket name `io` (too short for AWS).
struct CopyObjectRoute;

#[async_trait::async_trait]
impl s3s::route::S3Route for CopyObjectRoute {
    fn is_match(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        _extensions: &mut http::Extensions,
    ) -> bool {
        method == http::Method::PUT
            && headers.contains_key("x-amz-copy-source")
            && !uri.query().unwrap_or("").contains("uploadId=")
    }

    async fn check_access(&self, req: &mut S3Request<s3s::Body>) -> S3Result<()> {
        caller(req).map(|_| ())
    }

    async fn call(&self, req: S3Request<s3s::Body>) -> S3Result<S3Response<s3s::Body>> {
        let who = caller(&req)?;
        let (dst_bucket, dst_key) = bucket_and_key(req.uri.path())?;
        let source = req
            .headers
            .get("x-amz-copy-source")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let (src_bucket, src_key, src_version) = parse_copy_source(&source)?;
        let record = copy_object(
            &who,
            &dst_bucket,
            &dst_key,
            &src_bucket,
            &src_key,
            src_version,
        )
        .await?;
        let modified = time::OffsetDateTime::from_unix_timestamp(record.mtime)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(internal)?;
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag></CopyObjectResult>",
            xml_escape(&modified),
            xml_escape(&record.etag)
        );
        let mut resp = S3Response::new(s3s::Body::from(xml));
        resp.headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/xml"),
        );
        Ok(resp)
    }
}

/// `/<bucket>/<percent-encoded key>` (leading slash optional) → `(bucket, decoded key)`.
fn bucket_and_key(path: &str) -> S3Result<(String, String)> {
    let decoded = percent_encoding::percent_decode_str(path.trim_start_matches('/'))
        .decode_utf8()
        .map_err(|_| S3Error::with_message(S3ErrorCode::InvalidArgument, "invalid key encoding"))?;
    let (bucket, key) = decoded.split_once('/').ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
    })?;
    Ok((bucket.to_owned(), key.to_owned()))
}

/// `x-amz-copy-source` in either encoding: the AWS form `io/<encoded key>?versionId=<id>`,
/// or the whole string percent-encoded as the Cells web UI sends it
/// (`io%2F<key>%3FversionId%3D<id>`) → `(bucket, decoded key, version id)`.
fn parse_copy_source(source: &str) -> S3Result<(String, String, Option<String>)> {
    if let Some((path, version)) = source.split_once("?versionId=") {
        let (bucket, key) = bucket_and_key(path)?;
        return Ok((bucket, key, Some(version.to_owned())));
    }
    let (bucket, key) = bucket_and_key(source)?;
    match key.rsplit_once("?versionId=") {
        Some((k, v)) if source.contains("%3F") || source.contains("%3f") => {
            Ok((bucket, k.to_owned(), Some(v.to_owned())))
        }
        _ => Ok((bucket, key, None)),
    }
}

/// A version that cannot be read: unknown version id (or path) is `NoSuchVersion`.
fn version_error(e: StoreError) -> S3Error {
    match e {
        StoreError::NotFound(_) => custom_error(
            "NoSuchVersion",
            StatusCode::NOT_FOUND,
            "The specified version does not exist.".into(),
        ),
        StoreError::IsAFolder(_) => folder_object_error(),
        e => store_error(e),
    }
}

/// Server-side copy of one file: the content is copied into a new upload of `dst`.
async fn copy_object(
    who: &Caller,
    dst_bucket: &str,
    dst_key: &str,
    src_bucket: &str,
    src_key: &str,
    src_version: Option<String>,
) -> S3Result<NodeRecord> {
    check_bucket(dst_bucket)?;
    check_bucket(src_bucket)?;
    let src = key_path(src_key);
    let dst = key_path(dst_key);
    if src == dst && src_version.is_none() {
        // The real gateway cannot rewrite an object in place (no metadata-only copy).
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "A header you provided implies functionality that is not implemented",
        ));
    }
    let store = who.state.store.clone();
    let login = who.login.clone();
    blocking(move || {
        let (src_record, file) = match &src_version {
            Some(v) => {
                crate::versions::open_at_path(&store, &login, &src, v).map_err(version_error)?
            }
            None => store.open_content_file(&login, &src).map_err(|e| match e {
                StoreError::IsAFolder(_) => folder_object_error(),
                e => store_error(e),
            })?,
        };
        let mut tmp = store.tmp_file().map_err(store_error)?;
        copy_into(file, &mut tmp).map_err(internal)?;
        store
            .commit_file(&login, &dst, tmp, src_record.mime.clone(), BTreeMap::new())
            .map_err(store_error)
    })
    .await
}

/// HEAD/GET of a folder: the real gateway fails with a plain error (an internal error).
fn folder_object_error() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InternalError,
        "S3 API Cannot send object info for folder",
    )
}
