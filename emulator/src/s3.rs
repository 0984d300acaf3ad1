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
//!
//! The rooms: this file holds the routes and the object and bucket operations (the [`S3`]
//! implementation); `entry` the way in (tokens, streaming payloads, s3s's service), `common`
//! what the handlers share (the caller, errors, keys), `body` streamed bodies, `multipart`
//! the multipart uploads, `listing` ListObjects, `copy` CopyObject.

mod body;
mod common;
mod copy;
mod entry;
mod listing;
mod multipart;

pub(crate) use body::stream_file;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::any;
use md5::Digest as _;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::SharedState;
use crate::store::{Store, StoreError};

use body::drain_body;
use common::{
    blocking, caller, check_bucket, content_type, folder_object_error, key_path, now, store_error,
    strong_etag, timestamp, version_error,
};
use entry::s3_entry;
use listing::common_prefix_list;

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

/// The S3 operations.
struct Gateway;

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
        multipart::create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(req).await
    }
}
