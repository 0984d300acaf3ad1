//! Type conversions between the core and fuser: the core's entries and attributes as
//! fuser's, its open flags, times and rename flags, and its errors as errnos through
//! [`FsError::errno`], the mount's single errno policy.
//!
//! Invariants:
//! - Nothing here decides semantics: attributes, TTLs, cache flags and errnos all come from
//!   the core; only their shape changes.
//! - Each error is logged once, where it becomes an errno: expected outcomes (ENOENT, EEXIST,
//!   a refusal by design...) at debug level, real failures as warnings.
//! - Rename flags reach the core in Linux's values on every platform.

use fuser::{
    Errno, FileAttr, FileType, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyEntry, ReplyXattr,
};

use crate::fs::{self, FsError};

/// Reply to a request answered with an entry (lookup, create, mkdir, ...).
pub(super) fn reply_entry(reply: ReplyEntry, op: &str, result: fs::FsResult<fs::Entry>) {
    match result {
        Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(e.generation)),
        Err(err) => reply.error(errno(op, &err)),
    }
}

/// Reply to a lookup: a missing name becomes a negative entry (node 0) that the kernel keeps
/// for `negative_ttl` (asked of the core only then), or a plain ENOENT when that is zero.
pub(super) fn reply_lookup(
    reply: ReplyEntry,
    result: fs::FsResult<fs::Entry>,
    negative_ttl: impl FnOnce() -> std::time::Duration,
) {
    match result {
        // Linux only: negative entries (node 0) are unverified on macOS's FUSE.
        Err(err) if err.errno() == libc::ENOENT && cfg!(target_os = "linux") => {
            let ttl = negative_ttl();
            if ttl.is_zero() {
                return reply.error(errno("lookup", &err));
            }
            tracing::debug!(ttl = ?ttl, "{err}: negative entry");
            reply.entry(&ttl, &negative_attr(), Generation(0))
        }
        other => reply_entry(reply, "lookup", other),
    }
}

/// The attributes of a negative entry: only its node number (0) means anything.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: std::time::UNIX_EPOCH,
        mtime: std::time::UNIX_EPOCH,
        ctime: std::time::UNIX_EPOCH,
        crtime: std::time::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// Reply to a request answered with attributes (getattr, setattr).
pub(super) fn reply_attr(reply: ReplyAttr, op: &str, result: fs::FsResult<fs::AttrReply>) {
    match result {
        Ok(a) => reply.attr(&a.ttl, &file_attr(&a.attr)),
        Err(err) => reply.error(errno(op, &err)),
    }
}

/// Map a core error to the kernel's errno, logging it once (expected outcomes quietly: a
/// refusal by design, such as the hard link or symbolic link `git` probes with, is ordinary
/// traffic, not a warning).
pub(super) fn errno(op: &str, err: &FsError) -> Errno {
    let code = err.errno();
    if matches!(err, FsError::NotSupported(_)) {
        tracing::debug!(op, errno = code, "{err}");
        return Errno::from_i32(code);
    }
    match code {
        libc::ENOENT
        | libc::EEXIST
        | libc::ENOTEMPTY
        | crate::fs::error::ENOATTR
        | libc::ENOTDIR
        | libc::EISDIR
        | libc::ENAMETOOLONG
        | libc::EOPNOTSUPP => {
            tracing::debug!(op, errno = code, "{err}")
        }
        _ => tracing::warn!(op, errno = code, "{err}"),
    }
    Errno::from_i32(code)
}

pub(super) fn file_type(kind: fs::FileKind) -> FileType {
    match kind {
        fs::FileKind::File => FileType::RegularFile,
        fs::FileKind::Directory => FileType::Directory,
        fs::FileKind::Symlink => FileType::Symlink,
    }
}

pub(super) fn file_attr(attr: &fs::Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.blocks,
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.mtime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: attr.blksize,
        flags: 0,
    }
}

pub(super) fn open_flags(reply: &fs::OpenReply) -> FopenFlags {
    let mut flags = FopenFlags::empty();
    if reply.keep_cache {
        flags |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if reply.direct_io {
        flags |= FopenFlags::FOPEN_DIRECT_IO;
    }
    flags
}

pub(super) fn time_or_now(t: fuser::TimeOrNow) -> fs::TimeOrNow {
    match t {
        fuser::TimeOrNow::Now => fs::TimeOrNow::Now,
        fuser::TimeOrNow::SpecificTime(at) => fs::TimeOrNow::At(at),
    }
}

/// Answer a getxattr/listxattr: the size when asked (`size == 0`), ERANGE when too small.
pub(super) fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

/// The kernel's rename flags in the core's (Linux) values.
#[cfg(target_os = "linux")]
pub(super) fn core_rename_flags(bits: u32) -> u32 {
    bits
}

/// The kernel's rename flags in the core's (Linux) values: macOS has `RENAME_EXCL` and
/// `RENAME_SWAP` where Linux has `RENAME_NOREPLACE` and `RENAME_EXCHANGE`.
#[cfg(not(target_os = "linux"))]
pub(super) fn core_rename_flags(bits: u32) -> u32 {
    let mut core = bits & !(libc::RENAME_EXCL | libc::RENAME_SWAP);
    if bits & libc::RENAME_EXCL != 0 {
        core |= crate::fs::RENAME_NOREPLACE;
    }
    if bits & libc::RENAME_SWAP != 0 {
        core |= crate::fs::RENAME_EXCHANGE;
    }
    core
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::Arc;

    /// What `errno` logs at `info` and above, as the foreground terminal shows it.
    fn logged(op: &str, err: &FsError) -> String {
        let buf = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buf = buf.clone();
            move || Sink(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            errno(op, err);
        });
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn refusals_by_design_are_not_warnings() {
        for op in ["link", "symlink"] {
            let err = FsError::NotSupported(format!("{op}: not supported on Cells"));
            assert_eq!(errno(op, &err), Errno::from_i32(libc::EPERM));
            assert!(logged(op, &err).is_empty(), "{}", logged(op, &err));
        }
        // A real failure still is one.
        let err = FsError::Local("disk gone".into());
        assert!(logged("write", &err).contains("WARN"));
    }
}
