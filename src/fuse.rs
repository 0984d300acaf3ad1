//! The kernel adapter: the only module that knows fuser. Each FUSE request becomes one call
//! to the filesystem core ([`CellsFs`]) in three beats: open a span, run the core's method
//! (on the runtime's context), reply (or map the core's error with [`FsError::errno`], the
//! mount's single errno policy).
//!
//! This file holds the translation itself, one method per request. Around it: `dispatch`
//! (where a request's work runs: the dispatch thread, a tokio task, interruptible or not),
//! `convert` (the core's types and errors as fuser's), `session` (mount options and the
//! fuser session) and `notifier` (the core's kernel cache invalidations).
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
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyBmap, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, WriteFlags,
};

mod convert;
mod dispatch;
mod notifier;
mod session;

pub use notifier::FuseNotifier;
pub use session::{FuseMountOptions, MountedSession, mount};

use convert::{
    core_rename_flags, errno, file_attr, file_type, open_flags, reply_attr, reply_entry,
    reply_lookup, time_or_now, xattr_reply,
};
use dispatch::open_only_reads;

use crate::fs::{self, CellsFs};
use crate::interrupts::{Interrupts, ReplySlot};

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
            return reply_lookup(reply, result, || self.fs.negative_ttl(parent.0, name));
        }
        let fs = self.fs.clone();
        let name = name.to_owned();
        let span = tracing::debug_span!("lookup", parent = parent.0, name = ?name);
        let slot = ReplySlot::new(reply);
        let answer = slot.clone();
        self.spawn_interruptible(req, span, &slot, async move {
            let result = fs.lookup(parent.0, &name).await;
            match answer.take() {
                Some(reply) => reply_lookup(reply, result, || fs.negative_ttl(parent.0, &name)),
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
