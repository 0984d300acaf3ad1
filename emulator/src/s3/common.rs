//! What every S3 handler shares: who calls ([`Caller`], attached to the request by the entry),
//! bucket and key checks, the mapping of store errors to S3 errors, running blocking store
//! work, timestamps and Etags in S3's shapes, XML escaping.
//!
//! Invariants:
//! - Keys are user paths (`<workspace>/<path>`), handed to the store with the caller's login:
//!   the store's rights apply to every S3 access.
//! - A request without a verified caller is `AccessDenied`.

use axum::http::StatusCode;
use s3s::dto::{ETag, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Result};

use crate::SharedState;
use crate::store::{NodeRecord, StoreError};

use super::BUCKETS;

/// Who is calling, attached to the request before s3s runs.
#[derive(Clone)]
pub(super) struct Caller {
    pub(super) state: SharedState,
    pub(super) login: String,
    /// Token came from `pydio_jwt`: GETs are forced to download as attachments.
    pub(super) force_attachment: bool,
}

pub(super) fn caller<T>(req: &S3Request<T>) -> S3Result<Caller> {
    req.extensions
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| S3Error::with_message(S3ErrorCode::AccessDenied, "Access Denied."))
}

pub(super) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(super) fn check_bucket(bucket: &str) -> S3Result<()> {
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
pub(super) fn key_path(key: &str) -> String {
    key.trim_matches('/').to_owned()
}

pub(super) fn custom_error(code: &'static str, status: StatusCode, message: String) -> S3Error {
    let code = S3ErrorCode::from_bytes(code.as_bytes()).unwrap_or(S3ErrorCode::InternalError);
    let mut err = S3Error::with_message(code, message);
    err.set_status_code(status);
    err
}

/// How store errors surface on the S3 wire (MinIO codes the real gateway returns).
pub(super) fn store_error(err: StoreError) -> S3Error {
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

pub(super) fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "S3 gateway internal error");
    S3Error::with_message(S3ErrorCode::InternalError, "internal error")
}

/// Run store work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> S3Result<T> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

pub(super) fn timestamp(unix_seconds: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .into()
}

pub(super) fn now() -> Timestamp {
    time::OffsetDateTime::now_utc().into()
}

pub(super) fn strong_etag(etag: &str) -> ETag {
    ETag::Strong(etag.trim_matches('"').to_owned())
}

pub(super) fn etag_value(etag: &ETag) -> &str {
    match etag {
        ETag::Strong(s) | ETag::Weak(s) => s.trim_matches('"'),
    }
}

pub(super) fn content_type(record: &NodeRecord) -> String {
    record
        .mime
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// A version that cannot be read: unknown version id (or path) is `NoSuchVersion`.
pub(super) fn version_error(e: StoreError) -> S3Error {
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

/// HEAD/GET of a folder: the real gateway fails with a plain error (an internal error).
pub(super) fn folder_object_error() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InternalError,
        "S3 API Cannot send object info for folder",
    )
}
