//! The mount's whole errno policy, in one place (design.md §5).
//!
//! Every core operation fails with an [`FsError`]; the FUSE adapter only ever calls
//! [`FsError::errno`]. Server errors ([`ApiError`]) become `FsError::Api` and are mapped here:
//! 404 -> ENOENT, 401/403 -> EACCES, 409 -> EEXIST, 423 -> EBUSY, transient failures (after the
//! API client's own retries) -> EIO. Messages carry paths and the server's words, never tokens.

use crate::api::ApiError;

/// The errno of a missing extended attribute: ENODATA on Linux, ENOATTR on macOS (where
/// ENODATA exists but means something else).
#[cfg(not(target_os = "macos"))]
pub const ENOATTR: i32 = libc::ENODATA;
#[cfg(target_os = "macos")]
pub const ENOATTR: i32 = libc::ENOATTR;

/// Why a filesystem operation failed. `errno()` is the only mapping to the kernel's numbers.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FsError {
    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("file exists: {0}")]
    Exists(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
    #[error("is a directory: {0}")]
    IsADirectory(String),
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    /// The mount, the workspace or the recycle bin is read-only.
    #[error("read-only: {0}")]
    ReadOnly(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Cells cannot store this (symlinks, hard links, device nodes, fifos, sockets, xattrs).
    #[error("not supported by Cells: {0}")]
    NotSupported(String),
    /// Forbidden on this filesystem (e.g. renaming a workspace root).
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    /// Extended attributes other than the read-only `user.cells.*` ones: the filesystem has
    /// none, which `cp -a` and `rsync -X` take as "no xattr support here" and carry on.
    #[error("extended attributes not supported: {0}")]
    XattrNotSupported(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("name too long: {0}")]
    NameTooLong(String),
    #[error("bad file handle: {0}")]
    BadHandle(u64),
    #[error("no such attribute: {0}")]
    NoAttribute(String),
    /// An extended attribute's value is longer than Cells' metadata takes.
    #[error("attribute value too large: {0}")]
    XattrTooLarge(String),
    #[error("busy: {0}")]
    Busy(String),
    /// The local cache disk is full.
    #[error("no space left in the cache: {0}")]
    NoSpace(String),
    /// An upload failed for good; the data was kept in the recovery folder at `kept_at`.
    #[error("upload of {path} failed ({reason}); data kept in {kept_at}")]
    UploadFailed {
        path: String,
        reason: String,
        kept_at: String,
    },
    /// A write to a file's staged content failed (a full cache disk, say): what is staged is
    /// not what was written, so it is never stored and the server keeps its version, until
    /// the file is rewritten from empty. `no_space`: the failure was the disk being full.
    #[error("{path} was not stored ({reason}); the server keeps its version")]
    NotStored {
        path: String,
        reason: String,
        no_space: bool,
    },
    /// The file changed on the server since this mount's content was based on it, and the
    /// mount runs with `--conflicts fail`: the server keeps its version, ours is at `kept_at`
    /// (the recovery folder). EBUSY: someone else's version holds the name, as a lock would.
    #[error(
        "{path} changed on the server since this mount read it; the server keeps its version, \
         this mount's is kept in {kept_at}"
    )]
    Conflict { path: String, kept_at: String },
    /// A local file error in the cache directory.
    #[error("local I/O error: {0}")]
    Local(String),
    #[error("{context}: {source}")]
    Api {
        context: String,
        #[source]
        source: ApiError,
    },
}

impl FsError {
    /// Wrap a server error with the path (or operation) it concerns.
    pub fn api(context: impl Into<String>, source: ApiError) -> FsError {
        FsError::Api {
            context: context.into(),
            source,
        }
    }

    /// The errno the kernel receives. This is the mount's whole policy.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound(_) => libc::ENOENT,
            FsError::Exists(_) => libc::EEXIST,
            FsError::NotADirectory(_) => libc::ENOTDIR,
            FsError::IsADirectory(_) => libc::EISDIR,
            FsError::NotEmpty(_) => libc::ENOTEMPTY,
            FsError::ReadOnly(_) => libc::EROFS,
            FsError::PermissionDenied(_) => libc::EACCES,
            FsError::NotSupported(_) => libc::EPERM,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::XattrNotSupported(_) => libc::EOPNOTSUPP,
            FsError::InvalidArgument(_) => libc::EINVAL,
            FsError::NameTooLong(_) => libc::ENAMETOOLONG,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::NoAttribute(_) => ENOATTR,
            FsError::XattrTooLarge(_) => libc::ERANGE,
            FsError::Busy(_) => libc::EBUSY,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::UploadFailed { .. } => libc::EIO,
            FsError::Conflict { .. } => libc::EBUSY,
            FsError::NotStored { no_space: true, .. } => libc::ENOSPC,
            FsError::NotStored {
                no_space: false, ..
            } => libc::EIO,
            FsError::Local(_) => libc::EIO,
            FsError::Api { source, .. } => api_errno(source),
        }
    }
}

fn api_errno(error: &ApiError) -> i32 {
    match error {
        ApiError::NotFound(_) => libc::ENOENT,
        ApiError::Unauthorized(_) | ApiError::Forbidden(_) | ApiError::Auth(_) => libc::EACCES,
        ApiError::AlreadyExists(_) => libc::EEXIST,
        ApiError::TypeConflict(_) => libc::EEXIST,
        ApiError::Locked(_) => libc::EBUSY,
        ApiError::InvalidRequest(_) => libc::EINVAL,
        ApiError::Server { status: 404, .. } => libc::ENOENT,
        ApiError::Server {
            status: 401 | 403, ..
        } => libc::EACCES,
        ApiError::Server { status: 409, .. } => libc::EEXIST,
        ApiError::Server { status: 423, .. } => libc::EBUSY,
        ApiError::Server { .. }
        | ApiError::Network(_)
        | ApiError::Timeout(_)
        | ApiError::InvalidResponse(_)
        | ApiError::JobFailed(_)
        | ApiError::Local(_) => libc::EIO,
    }
}

impl From<std::io::Error> for FsError {
    fn from(error: std::io::Error) -> Self {
        if error.raw_os_error() == Some(libc::ENOSPC) {
            FsError::NoSpace(error.to_string())
        } else {
            FsError::Local(error.to_string())
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_map_as_design_section_5_says() {
        let cases = [
            (ApiError::NotFound("x".into()), libc::ENOENT),
            (ApiError::Unauthorized("x".into()), libc::EACCES),
            (ApiError::Forbidden("x".into()), libc::EACCES),
            (ApiError::AlreadyExists("x".into()), libc::EEXIST),
            (ApiError::Locked("x".into()), libc::EBUSY),
            (ApiError::Network("x".into()), libc::EIO),
            (ApiError::Timeout("x".into()), libc::EIO),
            (
                ApiError::Server {
                    status: 503,
                    message: "x".into(),
                },
                libc::EIO,
            ),
        ];
        for (error, errno) in cases {
            assert_eq!(FsError::api("p", error.clone()).errno(), errno, "{error:?}");
        }
        assert_eq!(FsError::ReadOnly("p".into()).errno(), libc::EROFS);
        let conflict = FsError::Conflict {
            path: "p".into(),
            kept_at: "k".into(),
        };
        assert_eq!(conflict.errno(), libc::EBUSY);
        assert_eq!(
            FsError::from(std::io::Error::from_raw_os_error(libc::ENOSPC)).errno(),
            libc::ENOSPC
        );
    }

    #[test]
    fn content_not_stored_is_enospc_when_the_disk_was_full_else_eio() {
        let not_stored = |no_space| FsError::NotStored {
            path: "p".into(),
            reason: "r".into(),
            no_space,
        };
        assert_eq!(not_stored(true).errno(), libc::ENOSPC);
        assert_eq!(not_stored(false).errno(), libc::EIO);
    }
}
