//! Raw calls of [`HttpCellsApi`] used by the CLI: a plain authenticated JSON request to any
//! `/a` endpoint of the official swagger (admin commands), and raw signed S3 gateway requests
//! (the resumable multipart upload of `cec scp`: ListMultipartUploads, ListParts, UploadPart
//! with progress, Complete).
//!
//! Invariants: the bearer header and the SigV4 `Authorization` are marked sensitive and never
//! formatted into an error; a 401 (or an S3 `AccessDenied`) triggers one token refresh and one
//! retry; S3 requests are signed `UNSIGNED-PAYLOAD` (never aws-chunked, never flexible
//! checksums); transient failures (connection errors, 429, 502-504) of idempotent requests are
//! retried with backoff; statuses map to [`ApiError`] as elsewhere.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;

use super::{
    HttpCellsApi, S3_BUCKET, SLOW_REQUEST_FACTOR, describe_reqwest_error, encode_path,
    read_error_body,
};
use crate::api::body::{self, read_capped_text};
use crate::api::deadline::UploadProgress;
use crate::api::{ApiError, ApiResult};

/// Called with the number of bytes just sent.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// The body of a raw S3 request, re-created for each attempt.
#[derive(Clone)]
pub enum S3Body {
    Empty,
    Bytes(bytes::Bytes),
    /// `len` bytes of a file from `offset`, reporting progress as they are sent.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
        progress: Option<ProgressFn>,
    },
}

const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl HttpCellsApi {
    /// `method /a<path>` with an optional JSON body; returns the JSON answer (`{}` if empty).
    pub async fn rest_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiResult<Value> {
        let url = format!("{}/a{}", self.base_url(), path);
        let mut token = self.tokens().token().await?;
        let mut refreshed = false;
        loop {
            let mut bearer = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ApiError::Auth("the token is not a valid header value".into()))?;
            bearer.set_sensitive(true);
            let mut req = self
                .http_client()
                .request(method.clone(), &url)
                .header(AUTHORIZATION, bearer)
                .timeout(self.deadlines().request * SLOW_REQUEST_FACTOR);
            if let Some(b) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| ApiError::Network(describe_reqwest_error(&e)))?;
            let status = resp.status().as_u16();
            let text = if (200..300).contains(&status) {
                read_capped_text(resp, body::ADMIN_ANSWER)
                    .await
                    .map_err(|e| ApiError::from(e).with_context(path))?
            } else {
                read_error_body(resp).await
            };
            if status == 401 && !refreshed {
                refreshed = true;
                token = self.tokens().refresh_after_unauthorized(&token).await?;
                continue;
            }
            if (200..300).contains(&status) {
                if text.trim().is_empty() {
                    return Ok(Value::Object(Default::default()));
                }
                return serde_json::from_str(&text)
                    .map_err(|_| ApiError::InvalidResponse(format!("{path} did not answer JSON")));
            }
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("Title").and_then(|t| t.as_str()).map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            let what = format!("{path}: {message}");
            return Err(match status {
                401 => ApiError::Unauthorized(what),
                403 => ApiError::Forbidden(what),
                404 => ApiError::NotFound(what),
                _ => ApiError::Server {
                    status,
                    message: what,
                },
            });
        }
    }
}

/// Pull every `<tag>value</tag>` out of a small XML document (values unescaped).
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(
            after[..end]
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    out
}

/// Every `<tag>...</tag>` block (raw inner XML).
pub fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

impl HttpCellsApi {
    /// `/io/<key>?<query>` with the key encoded per segment and the query values percent-encoded.
    fn s3_extra_url(&self, key: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}/{}", self.base_url(), S3_BUCKET);
        let key = key.trim_matches('/');
        if !key.is_empty() {
            url.push('/');
            url.push_str(&encode_path(key));
        }
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.to_string()
                    } else {
                        format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE))
                    }
                })
                .collect();
            url.push('?');
            url.push_str(&q.join("&"));
        }
        url
    }

    /// A signed request to the S3 gateway, retried when transient (idempotent requests only),
    /// with one token refresh on an authentication failure. Returns a successful response.
    pub async fn s3_call(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(HeaderName, String)],
        body: S3Body,
        idempotent: bool,
    ) -> ApiResult<reqwest::Response> {
        let url = self.s3_extra_url(key, query);
        let mut token = self.tokens().token().await?;
        let mut refreshed = false;
        let mut attempt = 0u32;
        let deadlines = self.deadlines();
        // Completing a multipart upload makes the server assemble the object first.
        let slow = method == Method::POST && query.iter().any(|(k, _)| *k == "uploadId");
        let request_deadline = if slow {
            deadlines.request * SLOW_REQUEST_FACTOR
        } else {
            deadlines.request
        };
        loop {
            let mut builder = self.http_client().request(method.clone(), &url);
            for (n, v) in headers {
                builder = builder.header(n.clone(), v.as_str());
            }
            // A body streamed from a file is a transfer, bounded on its progress (the
            // watchdog below); anything else is a request, bounded in all.
            let upload = UploadProgress::default();
            let streamed = match &body {
                S3Body::File { len, .. } => Some(*len),
                _ => None,
            };
            if streamed.is_none() {
                builder = builder.timeout(request_deadline);
            }
            builder = match &body {
                S3Body::Empty => builder,
                S3Body::Bytes(b) => builder
                    .header(reqwest::header::CONTENT_LENGTH, b.len().to_string())
                    .body(b.clone()),
                S3Body::File {
                    path,
                    offset,
                    len,
                    progress,
                } => {
                    use futures::StreamExt;
                    let progress = progress.clone();
                    let stream = super::file_stream(path, *offset, *len)?.map(move |chunk| {
                        if let (Ok(c), Some(p)) = (&chunk, &progress) {
                            p(c.len() as u64);
                        }
                        chunk
                    });
                    let stream = upload.counting(stream);
                    builder
                        .header(reqwest::header::CONTENT_LENGTH, len.to_string())
                        .body(reqwest::Body::wrap_stream(stream))
                }
            };
            let mut req = builder
                .build()
                .map_err(|e| ApiError::Local(format!("cannot build the request: {e}")))?;
            super::sign_s3(&mut req, &token)?;
            let retry = |attempt: u32| Duration::from_millis(200 * (1 << attempt.min(5)));
            let sent = self.http_client().execute(req);
            let outcome = match streamed {
                Some(len) => tokio::select! {
                    result = sent => result,
                    stalled = upload.watchdog(len, deadlines, key) => return Err(stalled),
                },
                None => sent.await,
            };
            match outcome {
                Err(e) if e.is_timeout() => {
                    return Err(ApiError::Timeout(format!(
                        "{key}: {}",
                        describe_reqwest_error(&e)
                    )));
                }
                Err(e) => {
                    if (idempotent || e.is_connect()) && attempt < 4 {
                        tokio::time::sleep(retry(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(ApiError::Network(describe_reqwest_error(&e)));
                }
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = read_error_body(resp).await;
                    let code = xml_values(&text, "Code")
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    let message = xml_values(&text, "Message")
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| format!("HTTP {status}"));
                    let auth = status == 401
                        || (status == 403
                            && matches!(
                                code.as_str(),
                                "AccessDenied" | "ExpiredToken" | "InvalidAccessKeyId"
                            ));
                    if auth && !refreshed {
                        refreshed = true;
                        if let Ok(t) = self.tokens().refresh_after_unauthorized(&token).await {
                            token = t;
                            continue;
                        }
                    }
                    if matches!(status, 429 | 502 | 503 | 504) && idempotent && attempt < 4 {
                        tokio::time::sleep(retry(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    let what = format!("{key}: {message}");
                    return Err(match (status, code.as_str()) {
                        (_, "NoSuchKey" | "NoSuchUpload" | "NoSuchBucket") | (404, _) => {
                            ApiError::NotFound(what)
                        }
                        (401, _) => ApiError::Unauthorized(what),
                        (403, _) => ApiError::Forbidden(what),
                        (409, _) => ApiError::AlreadyExists(what),
                        (400, _) => ApiError::InvalidRequest(what),
                        _ => ApiError::Server {
                            status,
                            message: what,
                        },
                    });
                }
            }
        }
    }
}
