//! The kernel adapter: the only module that knows fuser. Each FUSE request becomes one call
//! to the filesystem core ([`CellsFs`]) in three beats: open a span, run the core's method
//! (on the runtime's context), reply (or map the core's error with [`FsError::errno`], the
//! mount's single errno policy).
//!
//! Invariants:
//! - No request waits on fuser's dispatch thread: the core's method runs there up to its
//!   first wait (most requests never wait, and a hop to a runtime worker costs two thread
//!   wake-ups); a request that has to wait (the network, another request's lock) moves with
//!   its reply (fuser replies are `Send + 'static`) into a tokio task, so a slow upload or
//!   listing never stalls other requests. Requests that may sync the disk before their
//!   first wait (a write-back journal line: about a tenth of a millisecond) do so on the
//!   dispatch thread only when the session has another one to serve the requests meanwhile.
//! - Nothing here decides semantics: attributes, TTLs, errors and cache flags all come from
//!   the core; this file only converts types.
//! - Kernel cache invalidations requested by the core go through [`FuseNotifier`], which is
//!   never called from inside a request handler (the core calls it from the events task).

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, Config, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyBmap, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL, WriteFlags,
};
use tracing::Instrument;

use crate::fs::{self, CellsFs, FsError, KernelNotifier};
use crate::interrupts::{ErrorReply, Interrupts, ReplySlot};

/// Largest request asked of the kernel: writes (the kernel caps them at 1 MiB here) and the
/// read-ahead (see [`crate::mount::raise_kernel_read_ahead`]).
pub const MAX_REQUEST: u32 = 1024 * 1024;

/// The fuser [`Filesystem`] over the core.
pub struct CellsFuse {
    fs: CellsFs,
    runtime: tokio::runtime::Handle,
    /// fuser threads reading requests for this session.
    dispatch_threads: usize,
    /// Requests that read and wait: an interrupt (Ctrl-C) answers them `EINTR`.
    interrupts: Arc<Interrupts>,
    /// Dropped with the adapter, which fuser drops when the session ends: its receivers
    /// learn it then (see [`MountedSession::ended`]).
    _session_alive: tokio::sync::watch::Sender<()>,
}

impl CellsFuse {
    /// The adapter, and a receiver that sees its sender go when the session ends.
    pub fn new(
        fs: CellsFs,
        runtime: tokio::runtime::Handle,
        dispatch_threads: usize,
    ) -> (CellsFuse, tokio::sync::watch::Receiver<()>) {
        let (session_alive, ended) = tokio::sync::watch::channel(());
        let adapter = CellsFuse {
            fs,
            runtime,
            dispatch_threads,
            interrupts: Arc::default(),
            _session_alive: session_alive,
        };
        (adapter, ended)
    }

    /// Run `work` on the runtime inside `span`.
    fn spawn_on_runtime<F>(&self, span: tracing::Span, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(work.instrument(span));
    }

    /// For requests that may sync the disk before their first wait (`flush`, `release` and
    /// `rename` journal in write-back, a truncate by path): as [`CellsFuse::spawn`] when
    /// another dispatch thread serves the requests meanwhile (the hop to a worker would cost
    /// more than the sync: measured, 3,000 `printf > f` in write-back took 17% less time),
    /// else on the runtime, so that a lone dispatch thread never waits for the disk while
    /// requests answered from memory queue behind it.
    fn spawn_may_sync<F>(&self, span: tracing::Span, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.dispatch_threads > 1 {
            self.spawn(span, work);
        } else {
            self.spawn_on_runtime(span, work);
        }
    }

    /// Run `work` inside `span`: first on this dispatch thread, up to its first wait; only
    /// work that has to wait moves to the runtime. Most requests (a write into the staged
    /// content, a setattr, an xattr, a read the read-ahead has in memory) finish in that step.
    fn spawn<F>(&self, span: tracing::Span, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut work = Box::pin(work.instrument(span));
        let _runtime = self.runtime.enter();
        // A future may be polled with one waker and then another: the runtime's first poll
        // of the task registers the waker that counts.
        let mut first_step = std::task::Context::from_waker(std::task::Waker::noop());
        if work.as_mut().poll(&mut first_step).is_pending() {
            self.runtime.spawn(work);
        }
    }
}

impl CellsFuse {
    /// As [`CellsFuse::spawn`], for a request that only reads: once it has to wait, the
    /// kernel's interrupt answers it `EINTR` through `slot` (see [`crate::interrupts`]); the
    /// work goes on to its end and answers only if `slot` still holds the reply.
    fn spawn_interruptible<R, F>(
        &self,
        req: &Request,
        span: tracing::Span,
        slot: &ReplySlot<R>,
        work: F,
    ) where
        R: ErrorReply,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut work = Box::pin(work.instrument(span));
        let _runtime = self.runtime.enter();
        let mut first_step = std::task::Context::from_waker(std::task::Waker::noop());
        if work.as_mut().poll(&mut first_step).is_pending() {
            let unique = req.unique().0;
            self.interrupts.register(unique, slot);
            let interrupts = self.interrupts.clone();
            self.runtime.spawn(async move {
                work.await;
                interrupts.finished(unique);
            });
        }
    }
}

/// Whether an `open` with `flags` only reads (no write access, no truncation): only such an
/// open may be interrupted, since its handle is released unseen if it was.
fn open_only_reads(flags: i32) -> bool {
    flags & libc::O_ACCMODE == libc::O_RDONLY && flags & libc::O_TRUNC == 0
}

/// Reply to a request answered with an entry (lookup, create, mkdir, ...).
fn reply_entry(reply: ReplyEntry, op: &str, result: fs::FsResult<fs::Entry>) {
    match result {
        Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(e.generation)),
        Err(err) => reply.error(errno(op, &err)),
    }
}

/// Reply to a request answered with attributes (getattr, setattr).
fn reply_attr(reply: ReplyAttr, op: &str, result: fs::FsResult<fs::AttrReply>) {
    match result {
        Ok(a) => reply.attr(&a.ttl, &file_attr(&a.attr)),
        Err(err) => reply.error(errno(op, &err)),
    }
}

/// Map a core error to the kernel's errno, logging it once (expected outcomes quietly: a
/// refusal by design, such as the hard link or symbolic link `git` probes with, is ordinary
/// traffic, not a warning).
fn errno(op: &str, err: &FsError) -> Errno {
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

fn file_type(kind: fs::FileKind) -> FileType {
    match kind {
        fs::FileKind::File => FileType::RegularFile,
        fs::FileKind::Directory => FileType::Directory,
        fs::FileKind::Symlink => FileType::Symlink,
    }
}

fn file_attr(attr: &fs::Attr) -> FileAttr {
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

fn open_flags(reply: &fs::OpenReply) -> FopenFlags {
    let mut flags = FopenFlags::empty();
    if reply.keep_cache {
        flags |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if reply.direct_io {
        flags |= FopenFlags::FOPEN_DIRECT_IO;
    }
    flags
}

fn time_or_now(t: fuser::TimeOrNow) -> fs::TimeOrNow {
    match t {
        fuser::TimeOrNow::Now => fs::TimeOrNow::Now,
        fuser::TimeOrNow::SpecificTime(at) => fs::TimeOrNow::At(at),
    }
}

impl Filesystem for CellsFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(MAX_REQUEST);
        // Refused when the kernel offers less (its default, 128 KiB): the mount raises it
        // once it answers.
        let _ = config.set_max_readahead(MAX_REQUEST);
        let _ = config.set_max_background(64);
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            // The kernel then caches "no ACL" per inode: `ls -l` no longer asks every file
            // for `system.posix_acl_access` (modes are fixed, so there is nothing to mask).
            InitFlags::FUSE_POSIX_ACL,
        ] {
            if config.add_capabilities(flag).is_err() {
                tracing::debug!(?flag, "kernel lacks FUSE capability");
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // Answered from memory when it can be, without a trip through the runtime.
        if let Some(result) = self.fs.lookup_cached(parent.0, name) {
            return reply_entry(reply, "lookup", result);
        }
        let fs = self.fs.clone();
        let name = name.to_owned();
        let span = tracing::debug_span!("lookup", parent = parent.0, name = ?name);
        let slot = ReplySlot::new(reply);
        let answer = slot.clone();
        self.spawn_interruptible(req, span, &slot, async move {
            let result = fs.lookup(parent.0, &name).await;
            match answer.take() {
                Some(reply) => reply_entry(reply, "lookup", result),
                // Interrupted: the kernel never saw the entry, so it will never forget it.
                None => {
                    if let Ok(entry) = result {
                        fs.forget(entry.attr.ino, 1);
                    }
                }
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(result) = self.fs.getattr_cached(ino.0) {
            return reply_attr(reply, "getattr", result);
        }
        let fs = self.fs.clone();
        let span = tracing::debug_span!("getattr", ino = ino.0);
        let slot = ReplySlot::new(reply);
        let answer = slot.clone();
        self.spawn_interruptible(req, span, &slot, async move {
            let result = fs.getattr(ino.0, fh.map(|f| f.0)).await;
            if let Some(reply) = answer.take() {
                reply_attr(reply, "getattr", result)
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<fuser::TimeOrNow>,
        mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fs = self.fs.clone();
        let changes = fs::SetAttr {
            size,
            atime: atime.map(time_or_now),
            mtime: mtime.map(time_or_now),
            mode,
            uid,
            gid,
            fh: fh.map(|f| f.0),
        };
        let span = tracing::debug_span!("setattr", ino = ino.0, ?size);
        let work = async move { reply_attr(reply, "setattr", fs.setattr(ino.0, changes).await) };
        // A truncate by path commits the file (in write-back, a synced journal line).
        if size.is_some() && fh.is_none() {
            self.spawn_may_sync(span, work);
        } else {
            self.spawn(span, work);
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("readlink", ino = ino.0);
        self.spawn(span, async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(err) => reply.error(errno("readlink", &err)),
            }
        });
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let span = tracing::debug_span!("mknod", parent = parent.0, name = ?name);
        self.spawn(span, async move {
            reply_entry(reply, "mknod", fs.mknod(parent.0, &name, mode).await)
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let span = tracing::debug_span!("mkdir", parent = parent.0, name = ?name);
        self.spawn(span, async move {
            reply_entry(reply, "mkdir", fs.mkdir(parent.0, &name, mode).await)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let span = tracing::debug_span!("unlink", parent = parent.0, name = ?name);
        self.spawn(span, async move {
            match fs.unlink(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("unlink", &err)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let span = tracing::debug_span!("rmdir", parent = parent.0, name = ?name);
        self.spawn(span, async move {
            match fs.rmdir(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("rmdir", &err)),
            }
        });
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let fs = self.fs.clone();
        let name = link_name.to_owned();
        let target = target.as_os_str().to_owned();
        let span = tracing::debug_span!("symlink", parent = parent.0, name = ?name);
        self.spawn(span, async move {
            reply_entry(reply, "symlink", fs.symlink(parent.0, &name, &target).await)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let newname = newname.to_owned();
        let span = tracing::debug_span!("rename", parent = parent.0, name = ?name,
            newparent = newparent.0, newname = ?newname);
        self.spawn_may_sync(span, async move {
            match fs
                .rename(
                    parent.0,
                    &name,
                    newparent.0,
                    &newname,
                    core_rename_flags(flags.bits()),
                )
                .await
            {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("rename", &err)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let fs = self.fs.clone();
        let newname = newname.to_owned();
        let span = tracing::debug_span!("link", ino = ino.0, newparent = newparent.0);
        self.spawn(span, async move {
            reply_entry(reply, "link", fs.link(ino.0, newparent.0, &newname).await)
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("open", ino = ino.0, flags = flags.0);
        if open_only_reads(flags.0) {
            let slot = ReplySlot::new(reply);
            let answer = slot.clone();
            return self.spawn_interruptible(req, span, &slot, async move {
                let result = fs.open(ino.0, flags.0).await;
                match (answer.take(), result) {
                    (Some(reply), Ok(o)) => reply.opened(FileHandle(o.fh), open_flags(&o)),
                    (Some(reply), Err(err)) => reply.error(errno("open", &err)),
                    // Interrupted: nobody will release the handle but us (it only read).
                    (None, Ok(o)) => {
                        let _ = fs.release(ino.0, o.fh).await;
                    }
                    (None, Err(_)) => {}
                }
            });
        }
        self.spawn(span, async move {
            match fs.open(ino.0, flags.0).await {
                Ok(o) => reply.opened(FileHandle(o.fh), open_flags(&o)),
                Err(err) => reply.error(errno("open", &err)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if let Some(data) = self.fs.read_ready(ino.0, fh.0, offset, size) {
            // Already read ahead: no trip through the runtime.
            return reply.data(&data);
        }
        let fs = self.fs.clone();
        let span = tracing::trace_span!("read", ino = ino.0, fh = fh.0, offset, size);
        let slot = ReplySlot::new(reply);
        let answer = slot.clone();
        self.spawn_interruptible(req, span, &slot, async move {
            let result = fs.read(ino.0, fh.0, offset, size).await;
            match (answer.take(), result) {
                (Some(reply), Ok(data)) => reply.data(&data),
                (Some(reply), Err(err)) => reply.error(errno("read", &err)),
                (None, _) => {}
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        // The request buffer is reused by fuser as soon as we return: copy once.
        let data = data.to_vec();
        let span = tracing::trace_span!("write", ino = ino.0, fh = fh.0, offset, len = data.len());
        self.spawn(span, async move {
            match fs.write(ino.0, fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(err) => reply.error(errno("write", &err)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("flush", ino = ino.0, fh = fh.0);
        self.spawn_may_sync(span, async move {
            match fs.flush(ino.0, fh.0).await {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("flush", &err)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("release", ino = ino.0, fh = fh.0);
        self.spawn_may_sync(span, async move {
            match fs.release(ino.0, fh.0).await {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("release", &err)),
            }
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("fsync", ino = ino.0, fh = fh.0);
        self.spawn_on_runtime(span, async move {
            match fs.fsync(ino.0, fh.0, datasync).await {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("fsync", &err)),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("opendir", ino = ino.0);
        self.spawn(span, async move {
            match fs.opendir(ino.0, flags.0).await {
                Ok(fh) => {
                    let caching = match fs.dir_caching(ino.0) {
                        fs::DirCaching::None => FopenFlags::empty(),
                        fs::DirCaching::Fill => FopenFlags::FOPEN_CACHE_DIR,
                        fs::DirCaching::Keep => {
                            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                        }
                    };
                    reply.opened(FileHandle(fh), caching)
                }
                Err(err) => reply.error(errno("opendir", &err)),
            }
        });
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("readdir", ino = ino.0, offset);
        if fs.lists_in_one_call(ino.0) {
            let mut reply = reply;
            return self.spawn(span, async move {
                let result = fs
                    .readdir(ino.0, fh.0, offset, false, |e| {
                        reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), &e.name)
                    })
                    .await;
                match result {
                    Ok(()) => reply.ok(),
                    Err(err) => reply.error(errno("readdir", &err)),
                }
            });
        }
        let slot = ReplySlot::new(reply);
        let answer = slot.clone();
        self.spawn_interruptible(req, span, &slot, async move {
            let snapshot = fs.readdir_snapshot(ino.0, fh.0, offset).await;
            let Some(mut reply) = answer.take() else {
                return;
            };
            match snapshot {
                Ok(snapshot) => {
                    fs.readdir_emit(&snapshot, offset, false, |e| {
                        reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), &e.name)
                    });
                    reply.ok()
                }
                Err(err) => reply.error(errno("readdir", &err)),
            }
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("readdirplus", ino = ino.0, offset);
        if fs.lists_in_one_call(ino.0) {
            let mut reply = reply;
            return self.spawn(span, async move {
                let result = fs
                    .readdir(ino.0, fh.0, offset, true, |e| {
                        reply.add(
                            INodeNo(e.ino),
                            e.offset,
                            &e.name,
                            &e.entry.ttl,
                            &file_attr(&e.entry.attr),
                            Generation(e.entry.generation),
                        )
                    })
                    .await;
                match result {
                    Ok(()) => reply.ok(),
                    Err(err) => reply.error(errno("readdirplus", &err)),
                }
            });
        }
        let slot = ReplySlot::new(reply);
        let answer = slot.clone();
        self.spawn_interruptible(req, span, &slot, async move {
            let snapshot = fs.readdir_snapshot(ino.0, fh.0, offset).await;
            // Interrupted: no entry reaches the kernel, so none counts a lookup.
            let Some(mut reply) = answer.take() else {
                return;
            };
            match snapshot {
                Ok(snapshot) => {
                    fs.readdir_emit(&snapshot, offset, true, |e| {
                        reply.add(
                            INodeNo(e.ino),
                            e.offset,
                            &e.name,
                            &e.entry.ttl,
                            &file_attr(&e.entry.attr),
                            Generation(e.entry.generation),
                        )
                    });
                    reply.ok()
                }
                Err(err) => reply.error(errno("readdirplus", &err)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("releasedir", ino = ino.0);
        self.spawn(span, async move {
            match fs.releasedir(ino.0, fh.0).await {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("releasedir", &err)),
            }
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("fsyncdir", ino = ino.0);
        self.spawn_on_runtime(span, async move {
            match fs.fsyncdir(ino.0).await {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("fsyncdir", &err)),
            }
        });
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("statfs");
        let slot = ReplySlot::new(reply);
        let answer = slot.clone();
        self.spawn_interruptible(req, span, &slot, async move {
            let result = fs.statfs(ino.0).await;
            match (answer.take(), result) {
                (Some(reply), Ok(s)) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                ),
                (Some(reply), Err(err)) => reply.error(errno("statfs", &err)),
                (None, _) => {}
            }
        });
    }

    fn interrupt(&self, _req: &Request, unique: fuser::RequestId) -> Result<(), Errno> {
        if self.interrupts.interrupt(unique.0) {
            tracing::debug!(request = unique.0, "interrupted: answered EINTR");
        }
        // No reply to the interrupt itself: the kernel expects none once it is handled.
        Ok(())
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let (name, value) = (name.to_owned(), value.to_vec());
        let span = tracing::debug_span!("setxattr", ino = ino.0, name = ?name);
        self.spawn(span, async move {
            match fs.setxattr(ino.0, &name, &value, flags).await {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("setxattr", &err)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if let Some(err) = CellsFs::getxattr_never(name) {
            // No trip through the runtime for the names the kernel and `ls` ask of every file.
            return reply.error(errno("getxattr", &err));
        }
        let fs = self.fs.clone();
        let name = name.to_owned();
        let span = tracing::debug_span!("getxattr", ino = ino.0, name = ?name);
        self.spawn(span, async move {
            match fs.getxattr(ino.0, &name).await {
                Ok(value) => xattr_reply(reply, &value, size),
                Err(err) => reply.error(errno("getxattr", &err)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let fs = self.fs.clone();
        let span = tracing::debug_span!("listxattr", ino = ino.0);
        self.spawn(span, async move {
            match fs.listxattr(ino.0).await {
                Ok(value) => xattr_reply(reply, &value, size),
                Err(err) => reply.error(errno("listxattr", &err)),
            }
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let span = tracing::debug_span!("removexattr", ino = ino.0, name = ?name);
        self.spawn(span, async move {
            match fs.removexattr(ino.0, &name).await {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno("removexattr", &err)),
            }
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // `default_permissions` makes the kernel check modes itself.
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let span = tracing::debug_span!("create", parent = parent.0, name = ?name);
        self.spawn(span, async move {
            match fs.create(parent.0, &name, mode, flags).await {
                Ok((e, o)) => reply.created(
                    &e.ttl,
                    &file_attr(&e.attr),
                    Generation(e.generation),
                    FileHandle(o.fh),
                    open_flags(&o),
                ),
                Err(err) => reply.error(errno("create", &err)),
            }
        });
    }

    // Below: operations Cells has no use for. They are answered quietly (fuser's defaults
    // log a warning per call) with the errno that makes the kernel fall back sensibly.

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        // ENOSYS: the kernel keeps POSIX locks locally.
        reply.error(Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn bmap(&self, _req: &Request, _ino: INodeNo, _blocksize: u32, _idx: u64, reply: ReplyBmap) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        // ENOSYS: the kernel's generic lseek applies (no SEEK_DATA/SEEK_HOLE knowledge).
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // ENOSYS: the kernel falls back to read + write.
        reply.error(Errno::ENOSYS);
    }
}

/// Answer a getxattr/listxattr: the size when asked (`size == 0`), ERANGE when too small.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

/// The core's window on the kernel caches.
pub struct FuseNotifier {
    notifier: fuser::Notifier,
}

impl KernelNotifier for FuseNotifier {
    fn invalidate_entry(&self, parent: u64, name: &OsStr) {
        if let Err(err) = self.notifier.inval_entry(INodeNo(parent), name) {
            tracing::debug!(parent, ?name, error = %err, "kernel entry invalidation failed");
        }
    }

    fn invalidate_inode(&self, ino: u64) {
        if let Err(err) = self.notifier.inval_inode(INodeNo(ino), 0, 0) {
            tracing::debug!(ino, error = %err, "kernel inode invalidation failed");
        }
    }
}

/// How to mount (the kernel-facing part of the mount options).
#[derive(Debug, Clone)]
pub struct FuseMountOptions {
    pub read_only: bool,
    /// Let other users use the mount (`allow_other`; needs `user_allow_other` unless root).
    pub allow_other: bool,
    /// Ask fusermount3 to unmount when this process dies, however it dies.
    pub auto_unmount: bool,
    /// Source name shown in `mount`/`df` (e.g. `cells:alice@host`).
    pub fs_name: String,
    /// fuser dispatch threads (requests are served concurrently on tokio regardless).
    pub threads: usize,
}

/// A live mount: the fuser session running on its own threads.
pub struct MountedSession {
    session: fuser::BackgroundSession,
    ended: tokio::sync::watch::Receiver<()>,
}

impl MountedSession {
    /// Resolves once the session ended (unmounted from outside, or the kernel connection
    /// broke), without polling: fuser drops the adapter then.
    pub async fn ended(&mut self) {
        while self.ended.changed().await.is_ok() {}
    }

    /// Wait for the session to end (after the filesystem was unmounted). fuser's own
    /// unmount is not used: with `auto_unmount` it leaves a live mount in place.
    pub fn join(self) -> io::Result<()> {
        self.session.join()
    }
}

/// macOS volume name: the mountpoint's last component (e.g. "Cells"), without the characters
/// that would break the mount option list.
#[cfg(target_os = "macos")]
fn volume_name(mountpoint: &Path) -> String {
    let name: String = mountpoint
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| *c != ',' && *c != '=' && !c.is_control())
        .collect();
    if name.is_empty() { "cec".into() } else { name }
}

/// Mount `fs` at `mountpoint`, give the core its kernel notifier and start serving.
pub fn mount(
    fs: CellsFs,
    runtime: tokio::runtime::Handle,
    mountpoint: &Path,
    options: &FuseMountOptions,
) -> io::Result<MountedSession> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(options.fs_name.clone()),
        MountOption::Subtype("cec".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        if options.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else if options.auto_unmount {
        // auto_unmount needs allow_other or allow_root; allow_root keeps others out.
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    if options.auto_unmount {
        config.mount_options.push(MountOption::AutoUnmount);
    }
    // macFUSE: the name Finder shows (else "macFUSE Volume 0"), and no `._*` AppleDouble
    // files written to the server.
    #[cfg(target_os = "macos")]
    {
        // `subtype=` is Linux's: macFUSE's `fssubtype` is a number, not a name.
        config
            .mount_options
            .retain(|o| !matches!(o, MountOption::Subtype(_)));
        config.mount_options.push(MountOption::CUSTOM(format!(
            "volname={}",
            volume_name(mountpoint)
        )));
        config
            .mount_options
            .push(MountOption::CUSTOM("noappledouble".into()));
    }
    // fuser serves a session with more than one thread (and clone_fd) only on Linux.
    let threads = if cfg!(target_os = "linux") {
        options.threads.max(1)
    } else {
        1
    };
    config.n_threads = Some(threads);
    config.clone_fd = threads > 1;
    let (adapter, ended) = CellsFuse::new(fs.clone(), runtime, threads);
    let session = fuser::Session::new(adapter, mountpoint, &config)?;
    fs.set_notifier(Arc::new(FuseNotifier {
        notifier: session.notifier(),
    }));
    let session = session.spawn()?;
    Ok(MountedSession { session, ended })
}

/// The kernel's rename flags in the core's (Linux) values.
#[cfg(target_os = "linux")]
fn core_rename_flags(bits: u32) -> u32 {
    bits
}

/// The kernel's rename flags in the core's (Linux) values: macOS has `RENAME_EXCL` and
/// `RENAME_SWAP` where Linux has `RENAME_NOREPLACE` and `RENAME_EXCHANGE`.
#[cfg(not(target_os = "linux"))]
fn core_rename_flags(bits: u32) -> u32 {
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
