//! [`HttpCellsApi`]: the [`CellsApi`] over real HTTP. REST v1 under `/a` (JSON rules of
//! cells-api.md §1.3), jobs waited for as §5.9, and the S3 gateway under `/io` signed with
//! SigV4 (access key = the bearer token, secret `gatewaysecret`, region `us-east-1`,
//! path-style, `UNSIGNED-PAYLOAD`; never aws-chunked, never flexible checksums).
//!
//! Invariants:
//! - One `reqwest::Client` (rustls, certificates verified unless `skip_verify`).
//! - Every attempt asks the [`TokenSource`] for the current token, so a long multipart upload
//!   re-signs each part with a fresh token. A 401 (or an S3 `AccessDenied`) triggers one
//!   refresh and one retry, never more.
//! - Connection errors, 429 and 502/503/504 are retried with exponential backoff and jitter
//!   (500 only for idempotent requests, since Cells also uses 500 for definitive errors);
//!   4xx never are, nor a request that ran out of time ([`ApiError::Timeout`]).
//! - Every request has a deadline ([`Deadlines`]): one for the request, its retries included,
//!   unless it is a transfer, which is bounded on its progress instead (see [`super::deadline`]).
//! - Bodies are streamed from and to files: nothing holds a whole file in memory.
//! - Errors keep the status and the server's message; the `Authorization` header is marked
//!   sensitive and no token is ever formatted into an error or a log line.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::body;
use super::deadline::{Deadlines, UploadProgress, guard_download};
use super::token::TokenSource;
use super::{
    ApiError, ApiResult, ByteRange, ByteStream, CellsApi, MIB, Node, NodeKind, ObjectInfo, S3Entry,
    SentCounter, UploadOptions, Workspace,
};

/// The S3 gateway's fixed secret (the server re-signs requests; any secret works).
pub const S3_SECRET: &str = "gatewaysecret";
pub const S3_REGION: &str = "us-east-1";
pub const S3_BUCKET: &str = "io";
/// Multipart part sizes are multiples of this (Cells' block hash works on 10 MiB blocks).
pub const PART_QUANTUM: u64 = 10 * MIB;
/// The page size of REST folder listings (the official client uses 100; `Limit` has no
/// documented cap, and a 10,000-entry folder then costs 10 requests instead of 100).
pub const LIST_PAGE: usize = 1000;
/// The default of [`HttpOptions::max_folder_entries`] (as many as a gateway listing asks for).
pub const MAX_FOLDER_ENTRIES: usize = 1_000_000;
/// REST listing pages fetched at once when the folder's child count is known.
const LIST_PAGES_AT_ONCE: usize = 4;
/// The most of an error answer's body that is read.
const ERROR_BODY_MAX: usize = 64 * 1024;
mod tree_listing;

/// Bodies read from a file up to this size are sent from memory, larger ones streamed.
const SMALL_FILE_BODY: u64 = 256 * 1024;
/// A multipart completion or a server-side copy may take the server this many request
/// deadlines (it assembles or copies the whole content before answering).
pub(crate) const SLOW_REQUEST_FACTOR: u32 = 4;
/// `max-keys` of gateway listings: the Cells gateway takes it as a node limit and never
/// paginates (cells-api.md §6.7), and without it stops at 1,000 nodes, so a big folder's
/// dotfiles past that point would be missed.
const GATEWAY_LIST_MAX: &str = "1000000";

/// Characters left as-is in an S3 key segment (RFC 3986 unreserved).
const KEY_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Tuning of the client.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Accept any TLS certificate (`--skip-verify`).
    pub skip_verify: bool,
    /// Retries after the first attempt for transient failures.
    pub max_retries: u32,
    /// First backoff delay; doubles each retry, with ±50 % jitter, capped at 5 s.
    pub retry_base_delay: Duration,
    /// First job poll delay; grows to `job_poll_max`.
    pub job_poll_initial: Duration,
    pub job_poll_max: Duration,
    /// A job still running after this is reported as failed.
    pub job_timeout: Duration,
    /// The deadline of a request and the progress floor of a transfer.
    pub deadlines: Deadlines,
    /// A folder listing with more entries than this (announced or sent) fails: the bound
    /// on what a server's paging can make the client hold or request.
    pub max_folder_entries: usize,
    /// Use this client instead of building one (to share it with the token source).
    pub client: Option<reqwest::Client>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            skip_verify: false,
            max_retries: 4,
            retry_base_delay: Duration::from_millis(200),
            job_poll_initial: Duration::from_millis(10),
            job_poll_max: Duration::from_millis(500),
            job_timeout: Duration::from_secs(3600),
            deadlines: Deadlines::default(),
            max_folder_entries: MAX_FOLDER_ENTRIES,
            client: None,
        }
    }
}

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
/// bounded on its progress instead ([`super::deadline`]). A read timeout would also cut a
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
pub(super) fn transport_error(e: &reqwest::Error) -> ApiError {
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

/// The REST + S3 client.
pub struct HttpCellsApi {
    base_url: String,
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    options: HttpOptions,
}

impl std::fmt::Debug for HttpCellsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCellsApi")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// A request body, re-creatable for each attempt.
#[derive(Clone)]
pub(super) enum BodySpec {
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
pub(super) enum Wait {
    /// Answered within the request deadline, retries included.
    Request,
    /// Answered within [`SLOW_REQUEST_FACTOR`] request deadlines.
    Slow,
    /// Bounded on progress: an object's body, a PUT streamed from a file.
    Transfer,
}

#[derive(Clone)]
pub(super) struct RequestSpec {
    method: Method,
    pub(super) wait: Wait,
    url: String,
    service: Service,
    headers: Vec<(HeaderName, String)>,
    body: BodySpec,
    idempotent: bool,
    /// What the request is about, for error messages (a path, a job id).
    subject: String,
    /// An upload's counter of bytes sent, which a successful request's body adds to.
    sent: Option<SentCounter>,
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
    /// The gateway's listing of folder `path`: one level with `delimiter` "/", every depth
    /// with "" (cells-api.md §6.7); `max_keys` bounds the nodes the gateway walks.
    /// A server-side copy (S3 CopyObject) of `copy_source` (the `x-amz-copy-source` value:
    /// `/bucket/key`, maybe with `?versionId=`) onto `target`.
    pub(super) async fn copy_onto(&self, target: &str, copy_source: String) -> ApiResult<()> {
        let mut spec = self.s3_spec(
            Method::PUT,
            target,
            &[],
            vec![(HeaderName::from_static("x-amz-copy-source"), copy_source)],
            BodySpec::Bytes(bytes::Bytes::new()),
            true,
        );
        spec.wait = Wait::Slow;
        self.execute(spec).await?;
        Ok(())
    }

    pub(super) async fn list_s3(
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

    /// A client for the server at `base_url` (`scheme://host[:port]`).
    pub fn new(
        base_url: &str,
        tokens: Arc<dyn TokenSource>,
        options: HttpOptions,
    ) -> Result<HttpCellsApi, ApiError> {
        let http = match &options.client {
            Some(c) => c.clone(),
            None => build_http_client(options.skip_verify)?,
        };
        super::cleartext::warn_once(base_url);
        Ok(HttpCellsApi {
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
            tokens,
            options,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// The deadlines requests and transfers are held to.
    pub fn deadlines(&self) -> Deadlines {
        self.options.deadlines
    }

    pub fn tokens(&self) -> &Arc<dyn TokenSource> {
        &self.tokens
    }

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
    pub(super) async fn execute(&self, spec: RequestSpec) -> ApiResult<reqwest::Response> {
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

    pub(super) fn rest_spec(
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
    pub(super) async fn rest_json_capped(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        subject: &str,
        cap: body::Cap,
    ) -> ApiResult<Value> {
        let resp = self
            .execute(self.rest_spec(method, path, body, subject))
            .await?;
        let bytes = body::read_capped(resp, cap)
            .await
            .map_err(|e| ApiError::from(e).with_context(subject))?;
        if bytes.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&bytes).map_err(|_| {
            ApiError::InvalidResponse(format!(
                "{path} did not answer JSON (is this a Pydio Cells server?)"
            ))
        })
    }

    pub(super) fn s3_spec(
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

    /// Poll `POST /a/jobs/user` until the job is finished (§5.9).
    pub async fn wait_for_job(&self, job_id: &str) -> ApiResult<()> {
        let started = Instant::now();
        let mut delay = self.options.job_poll_initial;
        loop {
            let v = self
                .rest_json(
                    Method::POST,
                    "/jobs/user",
                    Some(json!({"JobIDs": [job_id], "LoadTasks": "Any"})),
                    job_id,
                )
                .await?;
            let job = v.get("Jobs").and_then(|j| j.as_array()).and_then(|jobs| {
                jobs.iter()
                    .find(|j| j.get("ID").and_then(|i| i.as_str()) == Some(job_id))
                    .or_else(|| jobs.first())
            });
            let Some(job) = job else {
                // AutoClean: a finished job disappears from the list.
                return Ok(());
            };
            let tasks: Vec<&Value> = job
                .get("Tasks")
                .and_then(|t| t.as_array())
                .map(|t| t.iter().collect())
                .unwrap_or_default();
            let mut all_finished = !tasks.is_empty();
            for task in &tasks {
                let status = task.get("Status").and_then(|s| s.as_str()).unwrap_or("");
                let message = task
                    .get("StatusMessage")
                    .and_then(|s| s.as_str())
                    .unwrap_or("")
                    .to_string();
                match status {
                    "Error" => {
                        return Err(ApiError::JobFailed(if message.is_empty() {
                            format!("job {job_id} ended in error")
                        } else {
                            message
                        }));
                    }
                    "Interrupted" => {
                        return Err(ApiError::JobFailed(format!("job {job_id} was interrupted")));
                    }
                    "Finished" => {}
                    _ => all_finished = false,
                }
            }
            if all_finished {
                return Ok(());
            }
            if started.elapsed() > self.options.job_timeout {
                return Err(ApiError::JobFailed(format!(
                    "job {job_id} still running after {:?}",
                    self.options.job_timeout
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.options.job_poll_max);
        }
    }

    async fn bulk_meta(
        &self,
        paths: Vec<String>,
        limit: usize,
        offset: usize,
        subject: &str,
    ) -> ApiResult<Vec<Value>> {
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
    ) -> ApiResult<(Vec<Value>, Option<usize>)> {
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
        let mut v = self
            .rest_json_capped(Method::POST, "/meta/bulk/get", Some(body), subject, cap)
            .await?;
        let total = v
            .get("Pagination")
            .map(|p| json_i64(p.get("Total")))
            .filter(|t| *t > 0)
            .map(|t| t as usize);
        let nodes = match v.get_mut("Nodes").map(Value::take) {
            Some(Value::Array(nodes)) => nodes,
            _ => Vec::new(),
        };
        Ok((nodes, total))
    }

    async fn job_request(
        &self,
        name: &str,
        sources: &[String],
        target: &str,
        target_is_parent: bool,
    ) -> ApiResult<()> {
        let params = json!({
            "nodes": sources.iter().map(|s| clean_path(s)).collect::<Vec<_>>(),
            "target": clean_path(target),
            "targetParent": target_is_parent,
        });
        let body = json!({"JsonParameters": params.to_string()});
        let subject = sources.first().cloned().unwrap_or_default();
        let v = self
            .rest_json(
                Method::PUT,
                &format!("/jobs/user/{name}"),
                Some(body),
                &subject,
            )
            .await?;
        let job = v
            .get("JobUuid")
            .and_then(|j| j.as_str())
            .filter(|j| !j.is_empty())
            .ok_or_else(|| {
                ApiError::InvalidResponse(format!("the {name} request returned no job id"))
            })?
            .to_string();
        self.wait_for_job(&job).await
    }

    async fn wait_for_jobs(&self, v: &Value, key: &str) -> ApiResult<()> {
        let ids: Vec<String> = v
            .get(key)
            .and_then(|j| j.as_array())
            .map(|jobs| {
                jobs.iter()
                    .filter_map(|j| j.get("Uuid").and_then(|u| u.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            self.wait_for_job(&id).await?;
        }
        Ok(())
    }

    async fn upload_single(
        &self,
        key: &str,
        source: &Path,
        size: u64,
        options: &UploadOptions,
    ) -> ApiResult<String> {
        let body = if size == 0 {
            BodySpec::Bytes(bytes::Bytes::new())
        } else {
            BodySpec::File {
                path: source.to_path_buf(),
                offset: 0,
                len: size,
            }
        };
        self.put_body(key, body, options).await
    }

    /// One PUT of `body` to `key`; returns the ETag.
    async fn put_body(
        &self,
        key: &str,
        body: BodySpec,
        options: &UploadOptions,
    ) -> ApiResult<String> {
        let mut headers = vec![];
        if let Some(ct) = &options.content_type {
            headers.push((reqwest::header::CONTENT_TYPE, ct.clone()));
        }
        let mut spec = self.s3_spec(Method::PUT, key, &[], headers, body, true);
        spec.wait = upload_wait(&spec.body);
        spec.sent = options.sent.clone();
        let resp = self.execute(spec).await?;
        Ok(etag_of(resp.headers()))
    }

    async fn upload_multipart(
        &self,
        key: &str,
        source: &Path,
        size: u64,
        options: &UploadOptions,
    ) -> ApiResult<String> {
        let part_size = part_size_for(size, options.part_size, options.max_parts);
        let upload_id = self.multipart_create(key, Some(size), options).await?;
        let parts: Vec<(u64, u64, u64)> = (0..size.div_ceil(part_size))
            .map(|i| {
                let offset = i * part_size;
                (i + 1, offset, part_size.min(size - offset))
            })
            .collect();
        let uploaded: ApiResult<Vec<(u64, String)>> = futures::stream::iter(parts)
            .map(|(number, offset, len)| {
                let upload_id = upload_id.clone();
                async move {
                    let etag = self
                        .multipart_part(
                            key,
                            &upload_id,
                            number,
                            source,
                            offset,
                            len,
                            options.sent.clone(),
                        )
                        .await?;
                    Ok((number, etag))
                }
            })
            .buffer_unordered(options.parts_concurrency.max(1))
            .try_collect()
            .await;
        let mut uploaded = match uploaded {
            Ok(u) => u,
            Err(e) => {
                if let Err(abort_err) = self.multipart_abort(key, &upload_id).await {
                    tracing::warn!("could not abort the multipart upload of {key}: {abort_err}");
                }
                return Err(e);
            }
        };
        uploaded.sort_by_key(|(n, _)| *n);
        self.multipart_complete(key, &upload_id, &uploaded).await
    }

    /// CreateMultipartUpload; `size`, when known, is announced so that the temporary node
    /// shows it during the upload.
    async fn multipart_create(
        &self,
        key: &str,
        size: Option<u64>,
        options: &UploadOptions,
    ) -> ApiResult<String> {
        let mut headers = vec![];
        if let Some(size) = size {
            headers.push((
                HeaderName::from_static("x-amz-meta-pydio-clear-size"),
                size.to_string(),
            ));
        }
        if let Some(ct) = &options.content_type {
            headers.push((reqwest::header::CONTENT_TYPE, ct.clone()));
        }
        let resp = self
            .execute(self.s3_spec(
                Method::POST,
                key,
                &[("uploads", "")],
                headers,
                BodySpec::Empty,
                false,
            ))
            .await?;
        let text = body_text(resp, body::S3_ANSWER).await?;
        xml_field(&text, "UploadId").ok_or_else(|| {
            ApiError::InvalidResponse("the multipart initiation returned no UploadId".into())
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn multipart_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u64,
        source: &Path,
        offset: u64,
        len: u64,
        sent: Option<SentCounter>,
    ) -> ApiResult<String> {
        let n = number.to_string();
        let mut spec = self.s3_spec(
            Method::PUT,
            key,
            &[("partNumber", &n), ("uploadId", upload_id)],
            vec![],
            BodySpec::File {
                path: source.to_path_buf(),
                offset,
                len,
            },
            true,
        );
        spec.wait = upload_wait(&spec.body);
        spec.sent = sent;
        let resp = self.execute(spec).await?;
        Ok(etag_of(resp.headers()))
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u64, String)],
    ) -> ApiResult<String> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>\"{}\"</ETag></Part>",
                xml_escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let mut spec = self.s3_spec(
            Method::POST,
            key,
            &[("uploadId", upload_id)],
            vec![(reqwest::header::CONTENT_TYPE, "application/xml".into())],
            BodySpec::Bytes(bytes::Bytes::from(xml)),
            true,
        );
        spec.wait = Wait::Slow;
        let resp = self.execute(spec).await?;
        let text = body_text(resp, body::S3_ANSWER).await?;
        if let Some(code) = xml_field(&text, "Code") {
            let message = xml_field(&text, "Message").unwrap_or_default();
            return Err(ApiError::Server {
                status: 200,
                message: format!("{code}: {message}"),
            });
        }
        Ok(xml_field(&text, "ETag")
            .map(|e| e.trim_matches('"').to_string())
            .unwrap_or_default())
    }

    async fn multipart_abort(&self, key: &str, upload_id: &str) -> ApiResult<()> {
        let abort = self.s3_spec(
            Method::DELETE,
            key,
            &[("uploadId", upload_id)],
            vec![],
            BodySpec::Empty,
            true,
        );
        self.execute(abort).await?;
        Ok(())
    }
}

/// A response's body as text, capped at `cap`; a body cut short is a network error.
async fn body_text(resp: reqwest::Response, cap: body::Cap) -> ApiResult<String> {
    Ok(body::read_capped_text(resp, cap).await?)
}

/// An upload streamed from a file is a transfer; one sent from memory is a request.
fn upload_wait(body: &BodySpec) -> Wait {
    match body {
        BodySpec::File { len, .. } if *len > SMALL_FILE_BODY => Wait::Transfer,
        _ => Wait::Request,
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

/// Sign an S3 gateway request with SigV4: the token as access key, `gatewaysecret` as secret,
/// `UNSIGNED-PAYLOAD`. The signed headers are marked sensitive so they are never logged.
pub(crate) fn sign_s3(req: &mut reqwest::Request, token: &str) -> Result<(), ApiError> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign,
    };
    use aws_sigv4::sign::v4;
    let identity =
        aws_credential_types::Credentials::new(token, S3_SECRET, None, None, "cec").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(S3_REGION)
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| ApiError::Local(format!("cannot sign the S3 request: {e}")))?
        .into();
    let signed_headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            n.starts_with("x-amz-") || n == "content-type" || n == "range"
        })
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_string(), v.to_string()))
        })
        .collect();
    let url = req.url().to_string();
    let method = req.method().as_str().to_string();
    let signable = SignableRequest::new(
        &method,
        url.as_str(),
        signed_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::UnsignedPayload,
    )
    .map_err(|e| ApiError::Local(format!("cannot sign the S3 request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| ApiError::Local(format!("cannot sign the S3 request: {e}")))?
        .into_parts();
    let (headers, _params) = instructions.into_parts();
    for h in headers {
        let name = HeaderName::from_bytes(h.name().as_bytes())
            .map_err(|e| ApiError::Local(e.to_string()))?;
        let mut value = HeaderValue::from_str(h.value()).map_err(|_| {
            ApiError::Auth("the token contains characters not allowed in a header".into())
        })?;
        if h.sensitive() || name == reqwest::header::AUTHORIZATION {
            value.set_sensitive(true);
        }
        req.headers_mut().insert(name, value);
    }
    Ok(())
}

/// Percent-encode each segment of a path, keeping the slashes.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| utf8_percent_encode(seg, KEY_SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn clean_path(p: &str) -> String {
    p.trim_matches('/').to_string()
}

fn etag_of(headers: &HeaderMap) -> String {
    headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_default()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The text of the first `<name>` element (unescaped), if any.
fn xml_field(xml: &str, name: &str) -> Option<String> {
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

/// The part size for an upload of `size` bytes: `requested` rounded up to a multiple of
/// 10 MiB, grown so that there are at most `max_parts` parts.
pub fn part_size_for(size: u64, requested: u64, max_parts: u64) -> u64 {
    let round = |v: u64| v.div_ceil(PART_QUANTUM).max(1) * PART_QUANTUM;
    let mut part = round(requested.max(1));
    let max_parts = max_parts.max(1);
    if size.div_ceil(part) > max_parts {
        part = round(size.div_ceil(max_parts));
    }
    part
}

/// An int64 that the server may send as a string or a number (or omit: 0).
pub fn json_i64(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// Decode a `treeNode`.
pub fn parse_node(v: &Value) -> Node {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let mut meta = BTreeMap::new();
    if let Some(store) = v.get("MetaStore").and_then(|m| m.as_object()) {
        for (k, raw) in store {
            let decoded = match raw {
                Value::String(text) => {
                    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
                }
                other => other.clone(),
            };
            meta.insert(k.clone(), decoded);
        }
    }
    let kind = match v.get("Type").and_then(|t| t.as_str()) {
        Some("COLLECTION") => NodeKind::Folder,
        Some("LEAF") => NodeKind::File,
        _ if meta.contains_key("ws_scope") => NodeKind::Folder,
        _ => NodeKind::File,
    };
    Node {
        uuid: s("Uuid"),
        path: s("Path").trim_matches('/').to_string(),
        kind,
        size: json_i64(v.get("Size")).max(0) as u64,
        mtime: json_i64(v.get("MTime")),
        etag: s("Etag"),
        meta,
    }
}

fn meta_str(node: &Node, key: &str) -> String {
    match node.meta.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn meta_bool(node: &Node, key: &str) -> bool {
    match node.meta.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// A workspace root node as a [`Workspace`].
pub fn workspace_from_node(node: Node) -> Workspace {
    let slug = {
        let s = meta_str(&node, "ws_slug");
        if s.is_empty() { node.path.clone() } else { s }
    };
    let perms = meta_str(&node, "ws_permissions");
    let (can_read, can_write) = if perms.is_empty() {
        (true, true)
    } else {
        (perms.contains('r'), perms.contains('w'))
    };
    let uuid = {
        let u = meta_str(&node, "ws_uuid");
        if u.is_empty() { node.uuid.clone() } else { u }
    };
    Workspace {
        slug,
        uuid,
        label: meta_str(&node, "ws_label"),
        description: meta_str(&node, "ws_description"),
        scope: meta_str(&node, "ws_scope"),
        can_read,
        can_write,
        skip_recycle: meta_bool(&node, "ws_skip_recycle"),
        root: node,
    }
}

/// Parse an S3 timestamp (RFC 3339 in listings, HTTP date in headers) to Unix seconds.
fn parse_time(s: &str) -> i64 {
    let to_secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    if let Ok(t) = humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z')) {
        return to_secs(t);
    }
    if let Ok(t) = httpdate::parse_http_date(s.trim()) {
        return to_secs(t);
    }
    0
}

fn parse_list_objects(xml: &str, prefix: &str) -> ApiResult<Vec<S3Entry>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "Contents" || name == "CommonPrefixes" {
                    fields.clear();
                }
                stack.push(name);
            }
            Ok(Event::Text(t)) => {
                if let Some(name) = stack.last() {
                    let text = t
                        .decode()
                        .map(|s| {
                            quick_xml::escape::unescape(&s)
                                .map(|c| c.into_owned())
                                .unwrap_or_else(|_| s.into_owned())
                        })
                        .unwrap_or_default();
                    fields.entry(name.clone()).or_default().push_str(&text);
                }
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some(name) = stack.last() {
                    let text = match r.decode().unwrap_or_default().as_ref() {
                        "amp" => "&".to_string(),
                        "lt" => "<".to_string(),
                        "gt" => ">".to_string(),
                        "quot" => "\"".to_string(),
                        "apos" => "'".to_string(),
                        other => format!("&{other};"),
                    };
                    fields.entry(name.clone()).or_default().push_str(&text);
                }
            }
            Ok(Event::End(_)) => {
                let name = stack.pop().unwrap_or_default();
                if name == "Contents" {
                    let key = fields.get("Key").cloned().unwrap_or_default();
                    if key.trim_end_matches('/') != prefix.trim_end_matches('/')
                        && !key.ends_with('/')
                    {
                        out.push(S3Entry::Object(ObjectInfo {
                            path: key.trim_matches('/').to_string(),
                            size: fields
                                .get("Size")
                                .and_then(|s| s.trim().parse().ok())
                                .unwrap_or(0),
                            etag: fields
                                .get("ETag")
                                .map(|e| e.trim_matches('"').to_string())
                                .unwrap_or_default(),
                            mtime: fields
                                .get("LastModified")
                                .map(|t| parse_time(t))
                                .unwrap_or(0),
                            content_type: None,
                        }));
                    }
                } else if name == "CommonPrefixes" {
                    let p = fields.get("Prefix").cloned().unwrap_or_default();
                    let p = p.trim_end_matches('/').to_string();
                    if !p.is_empty() && p != prefix.trim_end_matches('/') {
                        out.push(S3Entry::Folder(p.trim_start_matches('/').to_string()));
                    }
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => {
                return Err(ApiError::InvalidResponse(format!(
                    "the S3 listing is not valid XML: {e}"
                )));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A folder listing being paged in: its nodes without duplicates, bounded by a count.
struct Listing<'a> {
    folder: &'a str,
    max: usize,
    seen: HashSet<String>,
    nodes: Vec<Node>,
}

impl<'a> Listing<'a> {
    fn new(folder: &'a str, max: usize) -> Self {
        Listing {
            folder,
            max,
            seen: HashSet::new(),
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
    /// children is not believed).
    fn check_total(&self, total: usize) -> ApiResult<()> {
        if total > self.max {
            return Err(self.too_many(format!("announces {total} entries")));
        }
        Ok(())
    }

    /// Add a page's nodes; returns how many were new.
    fn add(&mut self, page: Vec<Value>) -> ApiResult<usize> {
        let before = self.nodes.len();
        for node in page.iter().map(parse_node) {
            if node.path == self.folder || node.path.is_empty() {
                continue;
            }
            if self.seen.insert(node.path.clone()) {
                self.nodes.push(node);
            }
        }
        if self.nodes.len() > self.max {
            return Err(self.too_many(format!("sent over {} entries", self.max)));
        }
        Ok(self.nodes.len() - before)
    }
}

#[async_trait]
impl CellsApi for HttpCellsApi {
    async fn list_tree_s3(&self, path: &str, limit: usize) -> ApiResult<Option<Vec<S3Entry>>> {
        self.list_tree_s3_impl(path, limit).await
    }

    async fn list_workspaces(&self) -> ApiResult<Vec<Workspace>> {
        let nodes = self
            .bulk_meta(vec!["".into(), "/*".into()], 0, 0, "workspaces")
            .await?;
        Ok(nodes
            .iter()
            .map(parse_node)
            .filter(|n| !n.path.is_empty() && !n.path.contains('/'))
            .map(workspace_from_node)
            .collect())
    }

    async fn list_folder(&self, path: &str) -> ApiResult<Vec<Node>> {
        let path = clean_path(path);
        if path.is_empty() {
            return Ok(self
                .list_workspaces()
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

    async fn list_folder_s3(&self, path: &str) -> ApiResult<Vec<S3Entry>> {
        self.list_s3(path, "/", GATEWAY_LIST_MAX).await
    }

    async fn stat(&self, path: &str) -> ApiResult<Option<Node>> {
        let path = clean_path(path);
        if path.is_empty() {
            return Ok(Some(Node {
                uuid: String::new(),
                path: String::new(),
                kind: NodeKind::Folder,
                size: 0,
                mtime: 0,
                etag: String::new(),
                meta: BTreeMap::new(),
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

    async fn create_folders(&self, paths: &[String]) -> ApiResult<Vec<Node>> {
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

    async fn move_nodes(
        &self,
        sources: &[String],
        target: &str,
        target_is_parent: bool,
    ) -> ApiResult<()> {
        self.job_request("move", sources, target, target_is_parent)
            .await
    }

    async fn copy_nodes(
        &self,
        sources: &[String],
        target: &str,
        target_is_parent: bool,
    ) -> ApiResult<()> {
        self.job_request("copy", sources, target, target_is_parent)
            .await
    }

    async fn delete_nodes(&self, paths: &[String], permanently: bool) -> ApiResult<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let nodes: Vec<Value> = paths
            .iter()
            .map(|p| json!({"Path": clean_path(p)}))
            .collect();
        let v = self
            .rest_json(
                Method::POST,
                "/tree/delete",
                Some(json!({"Nodes": nodes, "RemovePermanently": permanently})),
                &paths[0],
            )
            .await?;
        self.wait_for_jobs(&v, "DeleteJobs").await
    }

    async fn restore_nodes(&self, paths: &[String]) -> ApiResult<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let nodes: Vec<Value> = paths
            .iter()
            .map(|p| json!({"Path": clean_path(p)}))
            .collect();
        let v = self
            .rest_json(
                Method::POST,
                "/tree/restore",
                Some(json!({"Nodes": nodes})),
                &paths[0],
            )
            .await?;
        self.wait_for_jobs(&v, "RestoreJobs").await
    }

    async fn head_object(&self, path: &str) -> ApiResult<ObjectInfo> {
        let path = clean_path(path);
        let resp = self
            .execute(self.s3_spec(Method::HEAD, &path, &[], vec![], BodySpec::Empty, true))
            .await?;
        let h = resp.headers();
        let header = |n: reqwest::header::HeaderName| {
            h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        Ok(ObjectInfo {
            size: header(reqwest::header::CONTENT_LENGTH)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            etag: etag_of(h),
            mtime: header(reqwest::header::LAST_MODIFIED)
                .map(|t| parse_time(&t))
                .unwrap_or(0),
            content_type: header(reqwest::header::CONTENT_TYPE),
            path,
        })
    }

    async fn get_object(&self, path: &str, range: Option<ByteRange>) -> ApiResult<ByteStream> {
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
        let mut spec = self.s3_spec(Method::GET, &path, &[], headers, BodySpec::Empty, true);
        spec.wait = Wait::Transfer;
        let resp = match self.execute(spec).await {
            Err(ApiError::Server { status: 416, .. }) => {
                return Ok(Box::pin(futures::stream::empty()));
            }
            other => other?,
        };
        let stream = resp.bytes_stream().map_err(|e| transport_error(&e));
        Ok(guard_download(
            Box::pin(stream),
            self.options.deadlines,
            format!("reading {path}"),
        ))
    }

    async fn put_object_from_file(
        &self,
        path: &str,
        source: &Path,
        size: u64,
        options: &UploadOptions,
    ) -> ApiResult<String> {
        let path = clean_path(path);
        if size > options.multipart_threshold {
            self.upload_multipart(&path, source, size, options).await
        } else {
            self.upload_single(&path, source, size, options).await
        }
    }

    async fn put_object(
        &self,
        path: &str,
        content: bytes::Bytes,
        options: &UploadOptions,
    ) -> ApiResult<String> {
        self.put_body(&clean_path(path), BodySpec::Bytes(content), options)
            .await
    }

    async fn create_multipart(&self, path: &str, options: &UploadOptions) -> ApiResult<String> {
        self.multipart_create(&clean_path(path), None, options)
            .await
    }

    async fn upload_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u64,
        source: &Path,
        offset: u64,
        len: u64,
    ) -> ApiResult<String> {
        self.multipart_part(
            &clean_path(path),
            upload_id,
            number,
            source,
            offset,
            len,
            None,
        )
        .await
    }

    async fn complete_multipart(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[(u64, String)],
    ) -> ApiResult<String> {
        self.multipart_complete(&clean_path(path), upload_id, parts)
            .await
    }

    async fn abort_multipart(&self, path: &str, upload_id: &str) -> ApiResult<()> {
        self.multipart_abort(&clean_path(path), upload_id).await
    }

    async fn copy_object(&self, source: &str, target: &str) -> ApiResult<()> {
        let source = clean_path(source);
        let copy_source = format!("/{S3_BUCKET}/{}", encode_path(&source));
        self.copy_onto(&clean_path(target), copy_source).await
    }

    async fn delete_object(&self, path: &str) -> ApiResult<()> {
        let path = clean_path(path);
        self.execute(self.s3_spec(Method::DELETE, &path, &[], vec![], BodySpec::Empty, true))
            .await?;
        Ok(())
    }

    // File versions: implemented in `super::versions`.
    async fn list_versions(&self, path: &str) -> ApiResult<Vec<super::versions::FileVersion>> {
        self.versions_of(path).await
    }

    async fn get_object_version(
        &self,
        path: &str,
        version: &str,
        range: Option<ByteRange>,
    ) -> ApiResult<ByteStream> {
        self.version_content(path, version, range).await
    }

    async fn restore_version(&self, path: &str, version: &str) -> ApiResult<()> {
        self.version_restore(path, version).await
    }

    // Public links: implemented in src/api/shares.rs.
    async fn put_share_link(
        &self,
        request: &super::shares::PutShareLinkRequest,
    ) -> ApiResult<super::shares::ShareLink> {
        self.share_put_link(request).await
    }

    async fn get_share_link(&self, uuid: &str) -> ApiResult<super::shares::ShareLink> {
        self.share_get_link(uuid).await
    }

    async fn delete_share_link(&self, uuid: &str) -> ApiResult<()> {
        self.share_delete_link(uuid).await
    }

    async fn list_share_links(&self) -> ApiResult<Vec<super::shares::LinkResource>> {
        self.share_list_links().await
    }

    // ----- Tags, bookmarks and links of a node (in `usermeta`) -----

    async fn set_user_meta(
        &self,
        node_uuid: &str,
        namespace: &str,
        value: Option<&serde_json::Value>,
    ) -> ApiResult<()> {
        self.set_user_meta_http(node_uuid, namespace, value).await
    }

    async fn share_link_url(&self, link_uuid: &str) -> ApiResult<String> {
        self.share_link_url_http(link_uuid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_are_multiples_of_ten_mib() {
        assert_eq!(part_size_for(300 * MIB, 50 * MIB, 5000), 50 * MIB);
        assert_eq!(part_size_for(300 * MIB, 15 * MIB, 5000), 20 * MIB);
        // 10 parts max for 1 GiB: 1024/10 = 102.4 MiB -> 110 MiB.
        assert_eq!(part_size_for(1024 * MIB, 50 * MIB, 10), 110 * MIB);
        assert_eq!(part_size_for(1, 0, 5000), 10 * MIB);
    }

    #[test]
    fn nodes_decode_int64_strings_numbers_and_meta() {
        let v = json!({"Uuid": "u1", "Path": "/personal-files/a.txt/", "Type": "LEAF",
            "Size": "1234", "MTime": 1700000000, "Etag": "abc",
            "MetaStore": {"name": "\"a.txt\"", "ChildrenCount": "3", "weird": "not json"}});
        let n = parse_node(&v);
        assert_eq!(n.path, "personal-files/a.txt");
        assert_eq!(n.size, 1234);
        assert_eq!(n.mtime, 1_700_000_000);
        assert_eq!(n.kind, NodeKind::File);
        assert_eq!(n.meta["name"], json!("a.txt"));
        assert_eq!(n.meta["ChildrenCount"], json!(3));
        assert_eq!(n.meta["weird"], json!("not json"));
        let empty = parse_node(&json!({"Path": "ws/empty"}));
        assert_eq!(empty.size, 0);
    }

    #[test]
    fn state_login_and_listing_parse() {
        let xml = r#"<?xml version="1.0"?><tree><user id="alice"><repositories/></user></tree>"#;
        assert_eq!(parse_state_login(xml).as_deref(), Some("alice"));
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

    #[test]
    fn paths_are_encoded_per_segment_and_messages_redacted() {
        assert_eq!(encode_path("ws/a b/é#?.txt"), "ws/a%20b/%C3%A9%23%3F.txt");
        let m = redact(
            "token d-_-x3N8jg9VYegwf5KpKFTlYnQIzCrvbXHzS24uB7k.mibFBN2bGy3TUVzJvcrnUlI9UuM3 is invalid",
        );
        assert_eq!(m, "token <redacted> is invalid");
    }
}
