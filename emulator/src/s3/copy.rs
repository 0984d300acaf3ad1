//! CopyObject, served by a custom s3s route (after s3s verified the signature) because s3s's
//! `x-amz-copy-source` parser refuses the bucket name `io` (too short for AWS). The source
//! may name a version (`?versionId=`).
//!
//! Invariants:
//! - The source is read with the caller's rights and the destination written with them.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, header};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::store::{NodeRecord, StoreError};

use super::body::copy_into;
use super::common::{
    Caller, blocking, caller, check_bucket, folder_object_error, internal, key_path, store_error,
    version_error, xml_escape,
};

/// CopyObject is served by this custom route (after s3s verified the signature) because
/// s3s's `x-amz-copy-source` parser refuses the bucket name `io` (too short for AWS).
pub(super) struct CopyObjectRoute;

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
