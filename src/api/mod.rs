//! The Cells API as the rest of `cec` sees it: one [`CellsApi`] trait over the REST v1 API
//! (`/a`) and the S3 gateway (`/io`), the node types it returns, and the typed error every
//! caller maps from (the mount maps it to errno in `fs::error`, the CLI to a sentence and an
//! exit code).
//!
//! Invariants:
//! - Paths are user-space paths `<workspace-slug>/<path in workspace>` with no leading or
//!   trailing slash, NFC-normalised. The virtual root is `""`.
//! - Every job-based call (move, copy, delete, restore) returns only once the server's job
//!   has finished (or failed), so callers can treat them as synchronous.
//! - Nothing here holds a whole file in memory: downloads are streams, uploads read from a file.
//! - Errors keep the HTTP status and the server's message, never a token.

pub mod body;
pub mod cleartext;
pub mod deadline;
pub mod events;
pub mod http;
pub mod memory;
pub mod meta;
pub mod names;
pub mod public_link;
pub mod shares;
pub mod tls;
pub mod token;
pub mod usermeta;
pub mod versions;
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use meta::{NodeMeta, UserFields, WorkspaceMeta};

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    File,
    Folder,
}

/// One node of the tree, decoded from the server's `treeNode` (REST) or an S3 listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Stable id; survives renames. Empty when the source (an S3 listing) does not give it.
    pub uuid: String,
    /// User-space path, `<ws-slug>/<path>`; a workspace root is its slug.
    pub path: String,
    pub kind: NodeKind,
    /// Bytes; for folders the server's (lagging, indicative) aggregate.
    pub size: u64,
    /// Unix seconds, assigned by the server.
    pub mtime: i64,
    /// Content hash for files; `"temporary"` while an upload is in flight.
    pub etag: String,
    /// What cec reads of the server's `MetaStore` (hash, tags, bookmark, public link, the
    /// `ws_*` keys of a workspace root); every other key was dropped when the node was decoded.
    pub meta: NodeMeta,
}

impl Node {
    /// The last path segment (the workspace slug for a workspace root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    pub fn is_folder(&self) -> bool {
        self.kind == NodeKind::Folder
    }

    /// Cells' own content hash (`x-cells-hash`), when the server gave it.
    pub fn cells_hash(&self) -> Option<&str> {
        self.meta.cells_hash.as_deref()
    }

    /// True while an upload is in flight on this node.
    pub fn is_temporary(&self) -> bool {
        self.etag == "temporary"
    }
}

/// A workspace the user can see: a child of the virtual root.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    pub slug: String,
    pub uuid: String,
    pub label: String,
    pub description: String,
    /// `ws_scope`: `"ADMIN"` for a workspace, `"ROOM"` for a Cell.
    pub scope: String,
    pub can_read: bool,
    pub can_write: bool,
    /// `ws_skip_recycle`: deletes are permanent in this workspace.
    pub skip_recycle: bool,
    /// The workspace root as a node.
    pub root: Node,
}

/// Metadata of an object as the S3 gateway reports it (HEAD or a listing).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    pub path: String,
    pub size: u64,
    pub etag: String,
    /// Unix seconds.
    pub mtime: i64,
    pub content_type: Option<String>,
}

/// One entry of a folder listing through the S3 gateway (ListObjectsV2), which, unlike the
/// REST listing, shows names starting with a dot.
#[derive(Debug, Clone, PartialEq)]
pub enum S3Entry {
    Object(ObjectInfo),
    /// A sub-folder, as a user-space path without the trailing slash.
    Folder(String),
}

/// A byte range of an object. `len: None` reads to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    pub len: Option<u64>,
}

/// A streamed download body.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, ApiError>> + Send + 'static>>;

/// How an upload should be performed; `Default` gives the official client's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOptions {
    /// Files larger than this go through a multipart upload.
    pub multipart_threshold: u64,
    /// Part size; always a multiple of 10 MiB (the client rounds up).
    pub part_size: u64,
    /// Parts uploaded at once.
    pub parts_concurrency: usize,
    /// At most this many parts; the part size grows to fit.
    pub max_parts: u64,
    pub content_type: Option<String>,
    /// Counts the bytes of the upload's bodies as they are sent (for a progress display).
    pub sent: Option<SentCounter>,
}

/// Bytes of an upload sent so far, shared with whoever shows its progress. The bytes of a
/// request that failed are taken back, so a byte sent twice (a retry) counts once.
#[derive(Debug, Clone, Default)]
pub struct SentCounter(pub std::sync::Arc<std::sync::atomic::AtomicU64>);

impl SentCounter {
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Take `n` bytes back (never below zero).
    pub fn take_back(&self, n: u64) {
        use std::sync::atomic::Ordering;
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    pub fn reset(&self) {
        self.0.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Two options are equal when they count into the same counter.
impl PartialEq for SentCounter {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SentCounter {}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            multipart_threshold: 100 * MIB,
            part_size: 50 * MIB,
            parts_concurrency: 3,
            max_parts: 5000,
            content_type: None,
            sent: None,
        }
    }
}

pub const MIB: u64 = 1024 * 1024;

/// Everything that can go wrong talking to Cells. Each variant keeps what the server said
/// (status and message); none ever contains a token.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ApiError {
    #[error("not found: {0}")]
    NotFound(String),
    /// The token was refused even after one refresh.
    #[error("not authenticated: {0}")]
    Unauthorized(String),
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A file stands where a folder is needed, or the reverse.
    #[error("type conflict: {0}")]
    TypeConflict(String),
    #[error("locked: {0}")]
    Locked(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Any other HTTP status, after retries for the retryable ones.
    #[error("server error {status}: {message}")]
    Server { status: u16, message: String },
    /// Could not reach the server (refused, reset, TLS), after retries.
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The server did not answer within the request's deadline, or a transfer stopped
    /// progressing (see [`deadline`]). Transient, but not retried at once: a server that kept
    /// silent that long is not expected to answer the next attempt sooner.
    #[error("the server did not answer in time: {0}")]
    Timeout(String),
    /// The server answered something that is not what the API promises.
    #[error("unexpected answer from the server: {0}")]
    InvalidResponse(String),
    /// A move, copy, delete or restore job ended in error.
    #[error("server job failed: {0}")]
    JobFailed(String),
    /// Authentication is impossible without the user (revoked refresh token, expired PAT):
    /// the message says what to run.
    #[error("{0}")]
    Auth(String),
    /// A local file error (reading an upload source, ...).
    #[error("local I/O error: {0}")]
    Local(String),
}

impl ApiError {
    /// Whether retrying the same request later could succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Network(_) | ApiError::Timeout(_) => true,
            ApiError::Server { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Whether the request ran out of time (its deadline, or a transfer's progress floor).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ApiError::Timeout(_))
    }

    /// Whether to try the same request again now (after a short backoff): transient, but
    /// not a timeout, which already took the whole deadline.
    pub fn retry_now(&self) -> bool {
        self.is_transient() && !self.is_timeout()
    }

    /// This error with `subject` (what was asked) in front of its message, for the errors
    /// whose message does not already say it (an answer too large, cut or late).
    pub fn with_context(self, subject: &str) -> ApiError {
        match self {
            ApiError::InvalidResponse(m) => ApiError::InvalidResponse(format!("{subject}: {m}")),
            ApiError::Timeout(m) => ApiError::Timeout(format!("{subject}: {m}")),
            ApiError::Network(m) => ApiError::Network(format!("{subject}: {m}")),
            other => other,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The server as the CLI and the mount use it. Implemented over HTTP by the REST + S3 client,
/// and in memory / with injected faults by tests.
#[async_trait]
pub trait CellsApi: Send + Sync + 'static {
    /// The workspaces (and Cells) the user can see, in the server's order.
    async fn list_workspaces(&self) -> ApiResult<Vec<Workspace>>;

    /// The children of a folder through REST, all pages, folders first, dotfiles not shown
    /// (the server hides them). `NotFound` when the folder does not exist.
    async fn list_folder(&self, path: &str) -> ApiResult<Vec<Node>>;

    /// The children of a folder through the S3 gateway's ListObjectsV2, dotfiles included,
    /// no Uuids. An empty vector when the folder does not exist (the gateway's quirk).
    async fn list_folder_s3(&self, path: &str) -> ApiResult<Vec<S3Entry>>;

    /// One node; `Ok(None)` when it does not exist.
    async fn stat(&self, path: &str) -> ApiResult<Option<Node>>;

    /// Create folders (missing parents are created too). Returns the created folders.
    async fn create_folders(&self, paths: &[String]) -> ApiResult<Vec<Node>>;

    /// Move `sources` to `target` and wait for the job. `target_is_parent`: `target` is an
    /// existing folder that receives the sources under their names; otherwise `target` is
    /// the full new path of the single source.
    async fn move_nodes(
        &self,
        sources: &[String],
        target: &str,
        target_is_parent: bool,
    ) -> ApiResult<()>;

    /// Copy, with the same rules as [`CellsApi::move_nodes`], and wait for the job.
    async fn copy_nodes(
        &self,
        sources: &[String],
        target: &str,
        target_is_parent: bool,
    ) -> ApiResult<()>;

    /// Delete (to the workspace recycle bin, or permanently) and wait for the jobs.
    async fn delete_nodes(&self, paths: &[String], permanently: bool) -> ApiResult<()>;

    /// Restore nodes from the recycle bin (paths inside `<ws>/recycle_bin`) and wait.
    async fn restore_nodes(&self, paths: &[String]) -> ApiResult<()>;

    /// HEAD of an object through the gateway.
    async fn head_object(&self, path: &str) -> ApiResult<ObjectInfo>;

    /// A streamed (ranged) GET of a file's content.
    async fn get_object(&self, path: &str, range: Option<ByteRange>) -> ApiResult<ByteStream>;

    /// Upload `size` bytes read from the local file `source` to `path` (single PUT below the
    /// threshold, parallel multipart above). Returns the new ETag. Missing parent folders are
    /// created by the server.
    async fn put_object_from_file(
        &self,
        path: &str,
        source: &Path,
        size: u64,
        options: &UploadOptions,
    ) -> ApiResult<String>;

    /// Upload `content` to `path` in one PUT (content held in memory, below the multipart
    /// threshold). Returns the new ETag.
    async fn put_object(
        &self,
        path: &str,
        content: bytes::Bytes,
        options: &UploadOptions,
    ) -> ApiResult<String>;

    /// Start a multipart upload of `path` whose size is not known yet (the mount sends the
    /// parts of a big file while it is still being written). Returns the upload id. The server
    /// shows a temporary node at `path` until the upload is completed or aborted.
    async fn create_multipart(&self, path: &str, options: &UploadOptions) -> ApiResult<String>;

    /// Send part `number` (from 1) of an upload: `len` bytes of the local file `source` from
    /// `offset`. Returns the part's ETag.
    async fn upload_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u64,
        source: &Path,
        offset: u64,
        len: u64,
    ) -> ApiResult<String>;

    /// Assemble the parts `(number, etag)` (in order) into the object. Returns its ETag.
    async fn complete_multipart(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[(u64, String)],
    ) -> ApiResult<String>;

    /// Drop an unfinished multipart upload, its parts and its temporary node.
    async fn abort_multipart(&self, path: &str, upload_id: &str) -> ApiResult<()>;

    /// Server-side copy of one file through the gateway.
    async fn copy_object(&self, source: &str, target: &str) -> ApiResult<()>;

    /// Permanent delete of one file through the gateway (bypasses the recycle bin).
    async fn delete_object(&self, path: &str) -> ApiResult<()>;

    // ----- file versions (see `versions`) -----

    /// The versions of the file at `path`, newest first, checked (see `versions`).
    /// `NotFound` when the path does not exist; empty for a folder or an unversioned file.
    async fn list_versions(&self, _path: &str) -> ApiResult<Vec<versions::FileVersion>> {
        Err(versions::unsupported())
    }

    /// A streamed (ranged) GET of one version's content.
    async fn get_object_version(
        &self,
        _path: &str,
        _version: &str,
        _range: Option<ByteRange>,
    ) -> ApiResult<ByteStream> {
        Err(versions::unsupported())
    }

    /// Make a version the current content (server-side copy of the version onto the file;
    /// the content replaced remains a version).
    async fn restore_version(&self, _path: &str, _version: &str) -> ApiResult<()> {
        Err(versions::unsupported())
    }
    // ---- Public links (`cec share`; HTTP implementation in src/api/shares.rs) ----

    /// `PUT /a/share/link`: create a link (no `Uuid` in it) or update one (the whole link).
    async fn put_share_link(
        &self,
        request: &shares::PutShareLinkRequest,
    ) -> ApiResult<shares::ShareLink> {
        let _ = request;
        Err(no_public_links())
    }

    /// `GET /a/share/link/{Uuid}`.
    async fn get_share_link(&self, uuid: &str) -> ApiResult<shares::ShareLink> {
        let _ = uuid;
        Err(no_public_links())
    }

    /// `DELETE /a/share/link/{Uuid}`.
    async fn delete_share_link(&self, uuid: &str) -> ApiResult<()> {
        let _ = uuid;
        Err(no_public_links())
    }

    /// The user's links, one entry per shared node (`POST /a/share/resources`).
    async fn list_share_links(&self) -> ApiResult<Vec<shares::LinkResource>> {
        Err(no_public_links())
    }

    // ----- Tags, bookmarks and links of a node (HTTP: src/api/usermeta.rs) -----

    /// Store (`Some`) or remove (`None`) the user metadata `namespace` (`usermeta-tags`,
    /// `bookmark`) of the node `node_uuid`; `value` is sent JSON-encoded. Returns once the
    /// server has stored it.
    async fn set_user_meta(
        &self,
        node_uuid: &str,
        namespace: &str,
        value: Option<&serde_json::Value>,
    ) -> ApiResult<()> {
        let _ = (node_uuid, namespace, value);
        Err(ApiError::InvalidRequest(
            "this backend does not support user metadata (tags, bookmarks)".into(),
        ))
    }

    /// The absolute public URL of the public link `link_uuid`.
    async fn share_link_url(&self, link_uuid: &str) -> ApiResult<String> {
        let _ = link_uuid;
        Err(ApiError::InvalidRequest(
            "this backend does not support public links".into(),
        ))
    }

    // ---- Round trips (issue 30) ------------------------------------------------------------

    /// Every file and folder below folder `path` (not `path` itself) through the gateway's
    /// recursive ListObjectsV2 (empty delimiter), in one request: `Ok(None)` when there are
    /// more than `limit` entries (the gateway never pages: the caller lists folder by folder).
    async fn list_tree_s3(&self, path: &str, limit: usize) -> ApiResult<Option<Vec<S3Entry>>> {
        let _ = limit;
        Err(ApiError::InvalidRequest(format!(
            "{path}: this backend does not support recursive listings"
        )))
    }
}

fn no_public_links() -> ApiError {
    ApiError::InvalidRequest("this backend does not support public links".into())
}
