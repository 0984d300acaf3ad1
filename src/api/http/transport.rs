//! The transport of [`HttpCellsApi`]: how one request reaches the server and what its answer
//! becomes. A [`RequestSpec`] (method, URL, headers, a re-creatable body, whether it is
//! idempotent, how long it may wait) is built into a request per attempt, authenticated for
//! its service (a bearer header for REST under `/a`, a SigV4 signature for the S3 gateway
//! under `/io`, see [`super::sigv4`]), sent, retried, and a failure decoded into [`ApiError`].
//!
//! Invariants:
//! - One `reqwest::Client` (rustls, certificates verified unless `skip_verify`), with no
//!   client-wide read timeout: each request carries its own deadline.
//! - Every attempt asks the [`TokenSource`] for the current token, so a long multipart upload
//!   re-signs each part with a fresh token. A 401 (or an S3 `AccessDenied`) triggers one
//!   refresh and one retry, never more.
//! - Connection errors, 429 and 502/503/504 are retried with exponential backoff and jitter
//!   (500 only for idempotent requests, since Cells also uses 500 for definitive errors);
//!   4xx never are, nor a request that ran out of time ([`ApiError::Timeout`]).
//! - Every request has a deadline ([`Deadlines`]): one for the request, its retries included,
//!   unless it is a transfer, which is bounded on its progress instead (see
//!   [`crate::api::deadline`]).
//! - Bodies are streamed from files (small ones read at once): nothing holds a whole file in
//!   memory. Only the first [`ERROR_BODY_MAX`] bytes of an error answer are read.
//! - Errors keep the status and the server's message, with anything that looks like a bearer
//!   value redacted; the `Authorization` header is marked sensitive and no token is ever
//!   formatted into an error or a log line.
//!
//! [`TokenSource`]: crate::api::token::TokenSource
//! [`Deadlines`]: crate::api::deadline::Deadlines

use std::path::Path;
use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::sigv4::sign_s3;
use super::{HttpCellsApi, S3_BUCKET};
use crate::api::body;
use crate::api::deadline::UploadProgress;
use crate::api::{ApiError, ApiResult, SentCounter};

/// The most of an error answer's body that is read.
const ERROR_BODY_MAX: usize = 64 * 1024;

/// Bodies read from a file up to this size are sent from memory, larger ones streamed.
pub(super) const SMALL_FILE_BODY: u64 = 256 * 1024;
/// A multipart completion or a server-side copy may take the server this many request
/// deadlines (it assembles or copies the whole content before answering).
pub(crate) const SLOW_REQUEST_FACTOR: u32 = 4;

/// Characters left as-is in an S3 key segment (RFC 3986 unreserved).
const KEY_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `cec/<version> (<os>/<arch>)`.
pub fn user_agent() -> String {
    format!(
        "cec/{} ({}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// The one HTTP client: rustls, verified certificates unless `skip_verify`.
///
/// No client-wide read timeout: every request sets its own deadline, and a transfer is
/// bounded on its progress instead ([`crate::api::deadline`]). A read timeout would also cut a
/// healthy upload that takes longer than it (hyper waits for the answer while it sends the
/// body, and nothing comes back until the end).
pub fn build_http_client(skip_verify: bool) -> Result<reqwest::Client, ApiError> {
    reqwest::Client::builder()
        .user_agent(user_agent())
        .connect_timeout(Duration::from_secs(15))
        .tls_danger_accept_invalid_certs(skip_verify)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ApiError::Local(format!("cannot build the HTTP client: {e}")))
}

/// A transport error as the API reports it: [`ApiError::Timeout`] when it ran out of time.
pub(in crate::api) fn transport_error(e: &reqwest::Error) -> ApiError {
    if e.is_timeout() {
        ApiError::Timeout(describe_reqwest_error(e))
    } else {
        ApiError::Network(describe_reqwest_error(e))
    }
}

/// A one-line description of a transport error: the innermost causes, without the URL's
/// query (which never holds secrets anyway).
pub fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    let detail = parts
        .into_iter()
        .filter(|p| !p.starts_with("client error") && !p.is_empty())
        .collect::<Vec<_>>();
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", detail.join(": "))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Service {
    Rest,
    S3,
}

/// A request body, re-creatable for each attempt.
#[derive(Clone)]
pub(in crate::api) enum BodySpec {
    Empty,
    Json(Value),
    Bytes(bytes::Bytes),
    /// `len` bytes of a file from `offset`.
    File {
        path: std::path::PathBuf,
        offset: u64,
        len: u64,
    },
}

/// How long a request may wait on the server ([`Deadlines`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::api) enum Wait {
    /// Answered within the request deadline, retries included.
    Request,
    /// Answered within [`SLOW_REQUEST_FACTOR`] request deadlines.
    Slow,
    /// Bounded on progress: an object's body, a PUT streamed from a file.
    Transfer,
}

#[derive(Clone)]
pub(in crate::api) struct RequestSpec {
    method: Method,
    pub(in crate::api) wait: Wait,
    url: String,
    service: Service,
    headers: Vec<(HeaderName, String)>,
    pub(super) body: BodySpec,
    idempotent: bool,
    /// What the request is about, for error messages (a path, a job id).
    subject: String,
    /// An upload's counter of bytes sent, which a successful request's body adds to.
    pub(super) sent: Option<SentCounter>,
}

/// Takes a failed attempt's bytes back from its upload's counter (on drop, unless kept).
struct Counted(Option<UploadProgress>);

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(progress) = self.0.take() {
            progress.take_back();
        }
    }
}

impl HttpCellsApi {
    fn rest_url(&self, path: &str) -> String {
        format!("{}/a{}", self.base_url, path)
    }

    /// `/io/<key>` with each key segment percent-encoded.
    fn s3_url(&self, key: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}/{}", self.base_url, S3_BUCKET);
        let key = key.trim_matches('/');
        if !key.is_empty() {
            url.push('/');
            url.push_str(&encode_path(key));
        }
        if !query.is_empty() {
            url.push('?');
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() && (*k == "uploads") {
                        k.to_string()
                    } else {
                        format!(
                            "{}={}",
                            utf8_percent_encode(k, KEY_SEGMENT),
                            utf8_percent_encode(v, KEY_SEGMENT)
                        )
                    }
                })
                .collect();
            url.push_str(&q.join("&"));
        }
        url
    }

    /// The request of one attempt. A transfer's body streamed from a file counts its bytes
    /// into `progress` and its length is returned with it.
    fn build(
        &self,
        spec: &RequestSpec,
        token: &str,
        timeout: Option<Duration>,
        progress: &UploadProgress,
    ) -> Result<(reqwest::Request, Option<u64>), ApiError> {
        let mut builder = self.http.request(spec.method.clone(), &spec.url);
        for (name, value) in &spec.headers {
            builder = builder.header(name.clone(), value.as_str());
        }
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        let mut streamed = None;
        builder = match &spec.body {
            BodySpec::Empty => builder,
            BodySpec::Json(v) => builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(v).map_err(|e| ApiError::Local(e.to_string()))?),
            BodySpec::Bytes(b) => builder
                .header(reqwest::header::CONTENT_LENGTH, b.len().to_string())
                .body(b.clone()),
            BodySpec::File { path, offset, len } if *len > SMALL_FILE_BODY => {
                streamed = Some(*len);
                let stream = progress.counting(file_stream(path, *offset, *len)?);
                builder
                    .header(reqwest::header::CONTENT_LENGTH, len.to_string())
                    .body(reqwest::Body::wrap_stream(stream))
            }
            BodySpec::File { path, offset, len } => builder
                .header(reqwest::header::CONTENT_LENGTH, len.to_string())
                .body(file_body(path, *offset, *len)?),
        };
        let mut req = builder
            .build()
            .map_err(|e| ApiError::Local(format!("cannot build the request: {e}")))?;
        match spec.service {
            Service::Rest => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        ApiError::Auth(
                            "the token contains characters not allowed in a header".into(),
                        )
                    })?;
                value.set_sensitive(true);
                req.headers_mut()
                    .insert(reqwest::header::AUTHORIZATION, value);
            }
            Service::S3 => sign_s3(&mut req, token)?,
        }
        Ok((req, streamed))
    }

    /// One attempt, within its deadline: `Err((error, whether the connection failed))`.
    async fn attempt(
        &self,
        spec: &RequestSpec,
        req: reqwest::Request,
        streamed: Option<u64>,
        progress: &UploadProgress,
    ) -> Result<reqwest::Response, (ApiError, bool)> {
        let deadlines = self.options.deadlines;
        let sent = self.http.execute(req);
        let outcome = match (spec.wait, streamed) {
            (Wait::Transfer, Some(len)) => tokio::select! {
                result = sent => result,
                stalled = progress.watchdog(len, deadlines, &spec.subject) => {
                    return Err((stalled, false));
                }
            },
            (Wait::Transfer, None) => match tokio::time::timeout(deadlines.transfer, sent).await {
                Ok(result) => result,
                Err(_) => {
                    let message =
                        format!("{}: no answer in {:?}", spec.subject, deadlines.transfer);
                    return Err((ApiError::Timeout(message), false));
                }
            },
            // The request's own timeout (set by `build`) bounds it.
            _ => sent.await,
        };
        outcome.map_err(|e| (transport_error(&e), e.is_connect()))
    }

    /// Send with retries and the one refresh on 401; returns a successful response.
    pub(in crate::api) async fn execute(&self, spec: RequestSpec) -> ApiResult<reqwest::Response> {
        let request_deadline = match spec.wait {
            Wait::Request => Some(self.options.deadlines.request),
            Wait::Slow => Some(self.options.deadlines.request * SLOW_REQUEST_FACTOR),
            Wait::Transfer => None,
        };
        // The whole call, retries included (transfers are bounded on progress instead).
        let call_end = request_deadline.map(|d| Instant::now() + d.mul_f64(1.5));
        let out_of_time = || {
            ApiError::Timeout(format!(
                "{}: no answer within {:?}",
                spec.subject,
                request_deadline.unwrap_or_default().mul_f64(1.5)
            ))
        };
        // A backoff delay, unless it would end past the call's deadline.
        let retry_delay = |attempt: u32, retry_after: Option<Duration>| {
            let d = retry_after.unwrap_or_else(|| backoff(self.options.retry_base_delay, attempt));
            match call_end {
                Some(end) if Instant::now() + d >= end => None,
                _ => Some(d),
            }
        };
        let mut token = self.tokens.token().await?;
        let mut refreshed = false;
        let mut attempt: u32 = 0;
        loop {
            let timeout = match (request_deadline, call_end) {
                (Some(deadline), Some(end)) => {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(out_of_time());
                    }
                    Some(deadline.min(left))
                }
                _ => None,
            };
            let progress = UploadProgress::also(spec.sent.clone());
            let (req, streamed) = self.build(&spec, &token, timeout, &progress)?;
            let mut counted = Counted(spec.sent.is_some().then(|| progress.clone()));
            let started = std::time::Instant::now();
            let result = self.attempt(&spec, req, streamed, &progress).await;
            tracing::trace!(
                "{} {} -> {:?} in {:?}",
                spec.method,
                spec.subject,
                result.as_ref().map(|r| r.status().as_u16()),
                started.elapsed()
            );
            match result {
                Err((e, connect)) => {
                    let retryable = (spec.idempotent || connect) && e.retry_now();
                    if retryable
                        && attempt < self.options.max_retries
                        && let Some(d) = retry_delay(attempt, None)
                    {
                        tracing::debug!(
                            "{} {}: {}; retrying in {:?}",
                            spec.method,
                            spec.subject,
                            e,
                            d
                        );
                        tokio::time::sleep(d).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        if let Some(progress) = counted.0.take()
                            && streamed.is_none()
                        {
                            progress.credit(match &spec.body {
                                BodySpec::File { len, .. } => *len,
                                BodySpec::Bytes(b) => b.len() as u64,
                                _ => 0,
                            });
                        }
                        return Ok(resp);
                    }
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(30)));
                    let is_head = spec.method == Method::HEAD;
                    let body = if is_head {
                        String::new()
                    } else {
                        let patience = self.options.deadlines.request;
                        tokio::time::timeout(patience, read_error_body(resp))
                            .await
                            .unwrap_or_default()
                    };
                    let failure = ServerFailure::parse(status, &body, spec.service);
                    if failure.is_auth_failure() && !refreshed {
                        refreshed = true;
                        match self.tokens.refresh_after_unauthorized(&token).await {
                            Ok(t) => {
                                token = t;
                                continue;
                            }
                            Err(e) if spec.service == Service::S3 && status.as_u16() == 403 => {
                                tracing::debug!("no new token after S3 AccessDenied: {e}");
                                return Err(failure.into_error(&spec.subject));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    let retryable = match status.as_u16() {
                        429 | 502 | 503 | 504 => true,
                        500 => spec.idempotent && !failure.is_definitive(),
                        _ => false,
                    };
                    if retryable
                        && attempt < self.options.max_retries
                        && let Some(d) = retry_delay(attempt, retry_after)
                    {
                        tracing::debug!(
                            "{} {}: HTTP {}; retrying in {:?}",
                            spec.method,
                            spec.subject,
                            status.as_u16(),
                            d
                        );
                        tokio::time::sleep(d).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(failure.into_error(&spec.subject));
                }
            }
        }
    }

    pub(in crate::api) fn rest_spec(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        subject: &str,
    ) -> RequestSpec {
        let idempotent = method == Method::GET || path == "/meta/bulk/get" || path == "/jobs/user";
        RequestSpec {
            method,
            wait: Wait::Request,
            url: self.rest_url(path),
            service: Service::Rest,
            headers: vec![],
            body: body.map(BodySpec::Json).unwrap_or(BodySpec::Empty),
            idempotent,
            subject: subject.to_string(),
            sent: None,
        }
    }

    pub(crate) async fn rest_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        subject: &str,
    ) -> ApiResult<Value> {
        self.rest_json_capped(method, path, body, subject, body::REST_ANSWER)
            .await
    }

    /// [`Self::rest_json`] with the body capped at `cap` (see [`body`]).
    pub(in crate::api) async fn rest_json_capped(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        subject: &str,
        cap: body::Cap,
    ) -> ApiResult<Value> {
        // An empty answer is an empty object (`Value`'s default is null).
        let value: Value = self
            .rest_decoded_capped(method, path, body, subject, cap)
            .await?;
        Ok(if value.is_null() {
            Value::Object(Default::default())
        } else {
            value
        })
    }

    /// As [`Self::rest_json_capped`], decoded straight into `T` (an empty answer is
    /// `T::default()`), without a JSON value tree in between.
    pub(in crate::api) async fn rest_decoded_capped<T>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        subject: &str,
        cap: body::Cap,
    ) -> ApiResult<T>
    where
        T: serde::de::DeserializeOwned + Default,
    {
        let bytes = self.rest_capped(method, path, body, subject, cap).await?;
        if bytes.is_empty() {
            return Ok(T::default());
        }
        serde_json::from_slice(&bytes).map_err(|_| not_json(path))
    }

    /// The body of a REST answer, read through `cap`.
    async fn rest_capped(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        subject: &str,
        cap: body::Cap,
    ) -> ApiResult<bytes::Bytes> {
        let resp = self
            .execute(self.rest_spec(method, path, body, subject))
            .await?;
        body::read_capped(resp, cap)
            .await
            .map_err(|e| ApiError::from(e).with_context(subject))
    }

    pub(in crate::api) fn s3_spec(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: Vec<(HeaderName, String)>,
        body: BodySpec,
        idempotent: bool,
    ) -> RequestSpec {
        RequestSpec {
            method,
            wait: Wait::Request,
            url: self.s3_url(key, query),
            service: Service::S3,
            headers,
            body,
            idempotent,
            subject: key.to_string(),
            sent: None,
        }
    }
}

/// A response's body as text, capped at `cap`; a body cut short is a network error.
pub(super) async fn body_text(resp: reqwest::Response, cap: body::Cap) -> ApiResult<String> {
    Ok(body::read_capped_text(resp, cap).await?)
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(8));
    let capped = exp.min(Duration::from_secs(5));
    let jitter: f64 = 0.5 + rand::random::<f64>();
    capped.mul_f64(jitter)
}

/// The start of an error body (error bodies are small; the rest is not read).
pub(crate) async fn read_error_body(resp: reqwest::Response) -> String {
    body::read_prefix(resp, ERROR_BODY_MAX).await
}

/// A non-success answer, decoded.
struct ServerFailure {
    status: StatusCode,
    service: Service,
    code: String,
    message: String,
}

impl ServerFailure {
    fn parse(status: StatusCode, body: &str, service: Service) -> ServerFailure {
        let mut code = String::new();
        let mut message = String::new();
        let trimmed = body.trim();
        if trimmed.starts_with('{') {
            if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
                let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                code = field("Code");
                message = [field("Title"), field("Detail")]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                if message.is_empty() {
                    message = field("error");
                }
            }
        } else if trimmed.starts_with('<') {
            code = xml_field(trimmed, "Code").unwrap_or_default();
            message = xml_field(trimmed, "Message").unwrap_or_default();
        }
        if message.is_empty() && !trimmed.starts_with('<') {
            message = trimmed.chars().take(200).collect();
        }
        if message.is_empty() {
            message = status.canonical_reason().unwrap_or("error").to_string();
        }
        ServerFailure {
            status,
            service,
            code,
            message: redact(&message),
        }
    }

    fn is_auth_failure(&self) -> bool {
        match self.status.as_u16() {
            401 => true,
            403 => {
                self.service == Service::S3
                    && matches!(
                        self.code.as_str(),
                        "AccessDenied" | "ExpiredToken" | "InvalidAccessKeyId" | "InvalidToken"
                    )
            }
            _ => false,
        }
    }

    fn is_definitive(&self) -> bool {
        let m = self.message.to_lowercase();
        m.contains("exist") || m.contains("not found") || m.contains("unknown field")
    }

    fn into_error(self, subject: &str) -> ApiError {
        let what = if subject.is_empty() {
            self.message.clone()
        } else {
            format!("{subject}: {}", self.message)
        };
        let lower = self.message.to_lowercase();
        match (self.status.as_u16(), self.code.as_str()) {
            (_, "NoSuchKey" | "NoSuchBucket" | "NoSuchUpload") | (404, _) => {
                ApiError::NotFound(what)
            }
            (401, _) => ApiError::Unauthorized(what),
            (403, _) => ApiError::Forbidden(what),
            (409, _) | (_, "BucketAlreadyExists") => ApiError::AlreadyExists(what),
            (423, _) => ApiError::Locked(what),
            (400, _) | (_, "InvalidArgument" | "InvalidRequest") => ApiError::InvalidRequest(what),
            (_, _) if lower.contains("folder already exists") => ApiError::TypeConflict(what),
            (_, _) if lower.contains("already exists") => ApiError::AlreadyExists(what),
            (status, _) => ApiError::Server {
                status,
                message: what,
            },
        }
    }
}

/// Never let something that looks like a bearer value through in a server message.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for word in message.split_inclusive(char::is_whitespace) {
        let core = word.trim_end();
        if core.len() >= 32
            && core
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.=+/".contains(c))
        {
            out.push_str("<redacted>");
            out.push_str(&word[core.len()..]);
        } else {
            out.push_str(word);
        }
    }
    out
}

/// `len` bytes of the file at `path` from `offset`, as a request body. A small body is read at
/// once: streaming it would hand each read of the file to tokio's blocking pool, two thread
/// wake-ups for a few kilobytes.
fn file_body(path: &Path, offset: u64, len: u64) -> ApiResult<reqwest::Body> {
    if len <= SMALL_FILE_BODY {
        let file = std::fs::File::open(path).map_err(|e| cannot_read(path, e))?;
        let mut bytes = vec![0; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, offset)
            .map_err(|e| cannot_read(path, e))?;
        return Ok(bytes.into());
    }
    Ok(reqwest::Body::wrap_stream(file_stream(path, offset, len)?))
}

/// `len` bytes of the local file `path` from `offset`, as a stream of 256 KiB chunks.
pub(crate) fn file_stream(
    path: &Path,
    offset: u64,
    len: u64,
) -> ApiResult<tokio_util::io::ReaderStream<tokio::io::Take<tokio::fs::File>>> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| cannot_read(path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| cannot_read(path, e))?;
    let file = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
    Ok(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ))
}

fn cannot_read(path: &Path, e: std::io::Error) -> ApiError {
    ApiError::Local(format!("cannot read {}: {e}", path.display()))
}

/// Percent-encode each segment of a path, keeping the slashes.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| utf8_percent_encode(seg, KEY_SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

pub(in crate::api) fn clean_path(p: &str) -> String {
    p.trim_matches('/').to_string()
}

/// The text of the first `<name>` element (unescaped), if any.
pub(super) fn xml_field(xml: &str, name: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) => {
                inside = e.local_name().as_ref() == name.as_bytes();
            }
            Ok(quick_xml::events::Event::Text(t)) if inside => {
                return t.decode().ok().map(|s| {
                    quick_xml::escape::unescape(&s)
                        .map(|c| c.into_owned())
                        .unwrap_or_else(|_| s.into_owned())
                });
            }
            Ok(quick_xml::events::Event::End(_)) if inside => return Some(String::new()),
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// The error of a REST answer that is not the JSON expected.
fn not_json(path: &str) -> ApiError {
    ApiError::InvalidResponse(format!(
        "{path} did not answer JSON (is this a Pydio Cells server?)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment_and_messages_redacted() {
        assert_eq!(encode_path("ws/a b/é#?.txt"), "ws/a%20b/%C3%A9%23%3F.txt");
        let m = redact(
            "token d-_-x3N8jg9VYegwf5KpKFTlYnQIzCrvbXHzS24uB7k.mibFBN2bGy3TUVzJvcrnUlI9UuM3 is invalid",
        );
        assert_eq!(m, "token <redacted> is invalid");
    }
}
