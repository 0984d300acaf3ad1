//! Uploads with byte-level progress, and multipart uploads that resume: before starting a
//! multipart upload of a key, the server's unfinished uploads of that key are listed
//! (ListMultipartUploads); the newest one's parts (ListParts) are kept when their size is the
//! one this upload would send and their ETag is the MD5 of the local bytes, so only missing or
//! different parts are sent again.
//!
//! Invariants:
//! - A kept part is byte-identical to the local file range (MD5 checked), so a resumed
//!   upload can never mix old and new content.
//! - The object only appears under its key when CompleteMultipartUpload succeeds; a failed or
//!   interrupted upload is left on the server (not aborted) so the next run resumes it.
//! - Part sizes are multiples of 10 MiB (Cells' block hash), as `part_size_for` computes.

use std::path::Path;

use futures::StreamExt;
use md5::{Digest, Md5};
use reqwest::Method;
use reqwest::header::HeaderName;

use crate::api::body::{self, read_capped_text};
use crate::api::http::raw::{ProgressFn, S3Body, xml_blocks, xml_values};
use crate::api::http::{HttpCellsApi, part_size_for};
use crate::api::{ApiError, ApiResult, UploadOptions};

use super::base::{Replace, UploadFailure};

/// Upload `size` bytes of `source` to `key`: one PUT up to the threshold, a resumable
/// parallel multipart upload above. `progress` is called with bytes sent; `resumed` once with
/// the bytes of the parts kept from an earlier run (0 when none fit). `replace` is checked before sending, and again
/// before completing a multipart upload.
#[allow(clippy::too_many_arguments)]
pub async fn upload(
    api: &HttpCellsApi,
    key: &str,
    source: &Path,
    size: u64,
    options: &UploadOptions,
    progress: ProgressFn,
    resumed: ProgressFn,
    replace: Replace<'_>,
) -> Result<(), UploadFailure> {
    replace.check(api, key).await?;
    if size <= options.multipart_threshold {
        let mut headers = vec![];
        if let Some(ct) = &options.content_type {
            headers.push((reqwest::header::CONTENT_TYPE, ct.clone()));
        }
        let body = if size == 0 {
            S3Body::Bytes(bytes::Bytes::new())
        } else {
            S3Body::File {
                path: source.to_path_buf(),
                offset: 0,
                len: size,
                progress: Some(progress.clone()),
            }
        };
        api.s3_call(Method::PUT, key, &[], &headers, body, true)
            .await?;
        return Ok(());
    }
    multipart(api, key, source, size, options, progress, resumed, replace).await
}

fn md5_of_range(path: &Path, offset: u64, len: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut f = f.take(len);
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The newest unfinished multipart upload of exactly `key`, if any.
async fn pending_upload(api: &HttpCellsApi, key: &str) -> ApiResult<Option<String>> {
    let resp = api
        .s3_call(
            Method::GET,
            "",
            &[("uploads", ""), ("prefix", key)],
            &[],
            S3Body::Empty,
            true,
        )
        .await?;
    let text = read_capped_text(resp, body::S3_ANSWER)
        .await
        .map_err(|e| ApiError::from(e).with_context(key))?;
    Ok(xml_blocks(&text, "Upload")
        .into_iter()
        .filter(|u| xml_values(u, "Key").first().map(String::as_str) == Some(key))
        .filter_map(|u| xml_values(u, "UploadId").into_iter().next())
        .next_back())
}

/// Parts already on the server: (number, etag, size).
async fn listed_parts(
    api: &HttpCellsApi,
    key: &str,
    upload_id: &str,
) -> ApiResult<Vec<(u64, String, u64)>> {
    let mut out = Vec::new();
    let mut marker = String::new();
    loop {
        let mut query = vec![("uploadId", upload_id)];
        if !marker.is_empty() {
            query.push(("part-number-marker", marker.as_str()));
        }
        let resp = api
            .s3_call(Method::GET, key, &query, &[], S3Body::Empty, true)
            .await?;
        let text = read_capped_text(resp, body::S3_ANSWER)
            .await
            .map_err(|e| ApiError::from(e).with_context(key))?;
        for p in xml_blocks(&text, "Part") {
            let n = xml_values(p, "PartNumber")
                .first()
                .and_then(|v| v.parse().ok());
            let size = xml_values(p, "Size").first().and_then(|v| v.parse().ok());
            let etag = xml_values(p, "ETag").first().cloned();
            if let (Some(n), Some(size), Some(etag)) = (n, size, etag) {
                out.push((n, etag.trim_matches('"').to_string(), size));
            }
        }
        let truncated =
            xml_values(&text, "IsTruncated").first().map(String::as_str) == Some("true");
        let next = xml_values(&text, "NextPartNumberMarker")
            .into_iter()
            .next()
            .unwrap_or_default();
        if !truncated || next.is_empty() || next == marker {
            break;
        }
        marker = next;
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn multipart(
    api: &HttpCellsApi,
    key: &str,
    source: &Path,
    size: u64,
    options: &UploadOptions,
    progress: ProgressFn,
    resumed: ProgressFn,
    replace: Replace<'_>,
) -> Result<(), UploadFailure> {
    let part_size = part_size_for(size, options.part_size, options.max_parts);
    let parts: Vec<(u64, u64, u64)> = (0..size.div_ceil(part_size))
        .map(|i| (i + 1, i * part_size, part_size.min(size - i * part_size)))
        .collect();
    let mut done: Vec<(u64, String)> = Vec::new();
    let mut upload_id = None;
    let mut kept = 0u64;
    if let Some(id) = pending_upload(api, key).await.ok().flatten() {
        match listed_parts(api, key, &id).await {
            Ok(listed) => {
                for (n, etag, psize) in listed {
                    let Some(&(_, offset, len)) = parts.iter().find(|p| p.0 == n) else {
                        continue;
                    };
                    if psize != len {
                        continue;
                    }
                    let path = source.to_path_buf();
                    let md5 = tokio::task::spawn_blocking(move || md5_of_range(&path, offset, len))
                        .await
                        .map_err(|e| ApiError::Local(e.to_string()))?
                        .map_err(|e| ApiError::Local(format!("{}: {e}", source.display())))?;
                    if md5.eq_ignore_ascii_case(&etag) {
                        kept += len;
                        done.push((n, etag));
                    }
                }
                tracing::debug!(
                    "resuming the upload of {key}: {} of {} parts already on the server",
                    done.len(),
                    parts.len()
                );
                resumed(kept);
                upload_id = Some(id);
            }
            Err(e) => tracing::debug!("cannot list the parts of a pending upload of {key}: {e}"),
        }
    }
    let upload_id = match upload_id {
        Some(id) => id,
        None => {
            let mut headers = vec![(
                HeaderName::from_static("x-amz-meta-pydio-clear-size"),
                size.to_string(),
            )];
            if let Some(ct) = &options.content_type {
                headers.push((reqwest::header::CONTENT_TYPE, ct.clone()));
            }
            let resp = api
                .s3_call(
                    Method::POST,
                    key,
                    &[("uploads", "")],
                    &headers,
                    S3Body::Empty,
                    false,
                )
                .await?;
            let text = read_capped_text(resp, body::S3_ANSWER)
                .await
                .map_err(|e| ApiError::from(e).with_context(key))?;
            xml_values(&text, "UploadId")
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::InvalidResponse("no UploadId in the answer".into()))?
        }
    };
    let missing: Vec<(u64, u64, u64)> = parts
        .iter()
        .filter(|p| !done.iter().any(|d| d.0 == p.0))
        .copied()
        .collect();
    let uploaded: Vec<ApiResult<(u64, String)>> = futures::stream::iter(missing)
        .map(|(n, offset, len)| {
            let upload_id = upload_id.clone();
            let progress = progress.clone();
            async move {
                let number = n.to_string();
                let resp = api
                    .s3_call(
                        Method::PUT,
                        key,
                        &[
                            ("partNumber", number.as_str()),
                            ("uploadId", upload_id.as_str()),
                        ],
                        &[],
                        S3Body::File {
                            path: source.to_path_buf(),
                            offset,
                            len,
                            progress: Some(progress),
                        },
                        true,
                    )
                    .await?;
                let etag = resp
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string();
                Ok((n, etag))
            }
        })
        .buffer_unordered(options.parts_concurrency.max(1))
        .collect()
        .await;
    for r in uploaded {
        done.push(r?);
    }
    done.sort_by_key(|d| d.0);
    // The parts are on the server but invisible: the last moment to find that someone
    // changed the file meanwhile (the upload stays pending; `--force` completes it).
    replace.check(api, key).await?;
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (n, etag) in &done {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>\"{etag}\"</ETag></Part>"
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    let resp = api
        .s3_call(
            Method::POST,
            key,
            &[("uploadId", upload_id.as_str())],
            &[(reqwest::header::CONTENT_TYPE, "application/xml".to_string())],
            S3Body::Bytes(bytes::Bytes::from(xml)),
            true,
        )
        .await?;
    let text = read_capped_text(resp, body::S3_ANSWER)
        .await
        .map_err(|e| ApiError::from(e).with_context(key))?;
    if let Some(code) = xml_values(&text, "Code").into_iter().next() {
        let message = xml_values(&text, "Message")
            .into_iter()
            .next()
            .unwrap_or_default();
        return Err(ApiError::Server {
            status: 200,
            message: format!("{key}: {code}: {message}"),
        }
        .into());
    }
    Ok(())
}
