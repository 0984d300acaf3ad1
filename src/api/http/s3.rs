//! The S3 gateway transfers of [`HttpCellsApi`] under `/io`: HEAD, ranged GET, single PUT,
//! multipart uploads (create, parts in parallel, complete, abort), server-side copy and
//! delete. Requests are built and sent by the transport and signed by [`super::sigv4`].
//!
//! Invariants:
//! - Nothing holds a whole file in memory: an upload reads its parts from the source file, a
//!   download is a stream bounded on progress ([`guard_download`]).
//! - Part sizes are multiples of [`PART_QUANTUM`] (Cells' block hash works on 10 MiB blocks),
//!   grown so that an upload never has more than `max_parts` parts.
//! - A multipart upload that fails is aborted (best effort), so no half-assembled object is
//!   left behind; it only becomes visible under its name once the server completed it, and a
//!   completion answered 200 with an `<Error>` body is a failure.
//! - A range past the end (416) reads as empty; a zero-length range asks nothing.

use std::path::Path;
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName};

use super::transport::{SMALL_FILE_BODY, body_text, transport_error, xml_field};
use super::{BodySpec, HttpCellsApi, S3_BUCKET, Wait, clean_path, encode_path};
use crate::api::body;
use crate::api::deadline::guard_download;
use crate::api::{
    ApiError, ApiResult, ByteRange, ByteStream, MIB, ObjectInfo, SentCounter, UploadOptions,
};

/// Multipart part sizes are multiples of this (Cells' block hash works on 10 MiB blocks).
pub const PART_QUANTUM: u64 = 10 * MIB;

impl HttpCellsApi {
    /// A server-side copy (S3 CopyObject) of `copy_source` (the `x-amz-copy-source` value:
    /// `/bucket/key`, maybe with `?versionId=`) onto `target`.
    pub(in crate::api) async fn copy_onto(
        &self,
        target: &str,
        copy_source: String,
    ) -> ApiResult<()> {
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
    pub(super) async fn put_body(
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
    pub(super) async fn multipart_create(
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
    pub(super) async fn multipart_part(
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

    pub(super) async fn multipart_complete(
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

    pub(super) async fn multipart_abort(&self, key: &str, upload_id: &str) -> ApiResult<()> {
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
    pub(super) async fn s3_head_object(&self, path: &str) -> ApiResult<ObjectInfo> {
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

    pub(super) async fn s3_get_object(
        &self,
        path: &str,
        range: Option<ByteRange>,
    ) -> ApiResult<ByteStream> {
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

    pub(super) async fn s3_put_object_from_file(
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

    pub(super) async fn s3_copy_object(&self, source: &str, target: &str) -> ApiResult<()> {
        let source = clean_path(source);
        let copy_source = format!("/{S3_BUCKET}/{}", encode_path(&source));
        self.copy_onto(&clean_path(target), copy_source).await
    }

    pub(super) async fn s3_delete_object(&self, path: &str) -> ApiResult<()> {
        let path = clean_path(path);
        self.execute(self.s3_spec(Method::DELETE, &path, &[], vec![], BodySpec::Empty, true))
            .await?;
        Ok(())
    }
}

/// An upload streamed from a file is a transfer; one sent from memory is a request.
fn upload_wait(body: &BodySpec) -> Wait {
    match body {
        BodySpec::File { len, .. } if *len > SMALL_FILE_BODY => Wait::Transfer,
        _ => Wait::Request,
    }
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

/// Parse an S3 timestamp (RFC 3339 in listings, HTTP date in headers) to Unix seconds.
pub(super) fn parse_time(s: &str) -> i64 {
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
}
