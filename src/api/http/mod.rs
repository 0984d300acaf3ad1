//! [`HttpCellsApi`]: the [`CellsApi`] over real HTTP. REST v1 under `/a` (JSON rules of
//! cells-api.md §1.3), jobs waited for as §5.9, and the S3 gateway under `/io` signed with
//! SigV4 (access key = the bearer token, secret `gatewaysecret`, region `us-east-1`,
//! path-style, `UNSIGNED-PAYLOAD`; never aws-chunked, never flexible checksums).
//!
//! This file holds the client itself (its options, its construction) and the [`CellsApi`]
//! implementation, which only dispatches; the work lives in one file per concern:
//! - [`transport`]: one request from spec to answer: the client, deadlines, retries with
//!   backoff, the one token refresh on 401, bodies from files, error decoding and redaction;
//! - [`sigv4`]: the signature of gateway requests;
//! - [`rest`]: REST v1 calls and the decoding of nodes and workspaces;
//! - [`jobs`]: move, copy, delete and restore, which start a server job and wait for it;
//! - [`s3`]: gateway transfers (HEAD, ranged GET, single and multipart PUT, copy, delete);
//! - [`s3_listing`]: gateway listings (one level, or a whole subtree), decoded from XML;
//! - [`raw`]: requests the commands build themselves: any `/a` JSON endpoint (admin), and
//!   signed gateway requests for `cec scp`'s resumable multipart uploads.
//!
//! Invariants (each file states its own in detail):
//! - One `reqwest::Client` (rustls, certificates verified unless `skip_verify`).
//! - Every attempt asks the [`TokenSource`] for the current token; a 401 (or an S3
//!   `AccessDenied`) triggers one refresh and one retry, never more.
//! - Transient failures are retried with backoff, 4xx never; every request has a deadline
//!   ([`Deadlines`]), a transfer is bounded on its progress instead.
//! - Bodies are streamed from and to files: nothing holds a whole file in memory.
//! - Everything the server sends is untrusted: answers are read through size caps, counts
//!   are bounded, malformed answers are errors.
//! - Errors keep the status and the server's message; the `Authorization` header is marked
//!   sensitive and no token is ever formatted into an error or a log line.

mod jobs;
pub mod raw;
mod rest;
mod s3;
mod s3_listing;
mod sigv4;
mod transport;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::deadline::Deadlines;
use super::token::TokenSource;
use super::{
    ApiError, ApiResult, ByteRange, ByteStream, CellsApi, Node, ObjectInfo, S3Entry, UploadOptions,
    Workspace,
};

pub use rest::{
    LIST_PAGE, json_i64, parse_node, parse_state_login, probe_server, workspace_from_node,
};
pub use s3::{PART_QUANTUM, part_size_for};
pub(crate) use sigv4::sign_s3;
pub use sigv4::{S3_REGION, S3_SECRET};
pub(in crate::api) use transport::{BodySpec, Wait, clean_path, transport_error};
pub(crate) use transport::{SLOW_REQUEST_FACTOR, file_stream, read_error_body};
pub use transport::{build_http_client, describe_reqwest_error, encode_path, user_agent};

/// The gateway's bucket: every object key is under `/io/`.
pub const S3_BUCKET: &str = "io";
/// The default of [`HttpOptions::max_folder_entries`] (as many as a gateway listing asks for).
pub const MAX_FOLDER_ENTRIES: usize = 1_000_000;

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

impl HttpCellsApi {
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
}

#[async_trait]
impl CellsApi for HttpCellsApi {
    // ----- REST v1 (in `rest`) -----

    async fn list_workspaces(&self) -> ApiResult<Vec<Workspace>> {
        self.rest_list_workspaces().await
    }

    async fn list_folder(&self, path: &str) -> ApiResult<Vec<Node>> {
        self.rest_list_folder(path).await
    }

    async fn stat(&self, path: &str) -> ApiResult<Option<Node>> {
        self.rest_stat(path).await
    }

    async fn create_folders(&self, paths: &[String]) -> ApiResult<Vec<Node>> {
        self.rest_create_folders(paths).await
    }

    // ----- Server jobs (in `jobs`) -----

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
        self.rest_delete_nodes(paths, permanently).await
    }

    async fn restore_nodes(&self, paths: &[String]) -> ApiResult<()> {
        self.rest_restore_nodes(paths).await
    }

    // ----- Gateway listings (in `s3_listing`) -----

    async fn list_folder_s3(&self, path: &str) -> ApiResult<Vec<S3Entry>> {
        self.s3_list_folder(path).await
    }

    async fn list_tree_s3(&self, path: &str, limit: usize) -> ApiResult<Option<Vec<S3Entry>>> {
        self.list_tree_s3_impl(path, limit).await
    }

    // ----- Gateway transfers (in `s3`) -----

    async fn head_object(&self, path: &str) -> ApiResult<ObjectInfo> {
        self.s3_head_object(path).await
    }

    async fn get_object(&self, path: &str, range: Option<ByteRange>) -> ApiResult<ByteStream> {
        self.s3_get_object(path, range).await
    }

    async fn put_object_from_file(
        &self,
        path: &str,
        source: &Path,
        size: u64,
        options: &UploadOptions,
    ) -> ApiResult<String> {
        self.s3_put_object_from_file(path, source, size, options)
            .await
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
        self.s3_copy_object(source, target).await
    }

    async fn delete_object(&self, path: &str) -> ApiResult<()> {
        self.s3_delete_object(path).await
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
