//! The FUSE ceiling of the mount benchmark: a trivial in-memory filesystem (files, folders,
//! create, write, truncate, rename, unlink) that answers every request from a `Vec<u8>` under
//! one mutex. Whatever a workload costs here is the price of FUSE itself on this machine
//! (kernel round trips, copies, the 2 cores shared with the workload), with no network, no
//! disk and no cache policy: no real mount can beat it.
//!
//! Invariants:
//! - The kernel is configured as `cec mount` configures it (1 MiB writes and read-ahead, the
//!   latter raised through sysfs once the mount answers; readdirplus, 2 session threads), so
//!   the two differ only by what happens behind FUSE.
//! - Files are opened without `FOPEN_KEEP_CACHE`: every open reads through FUSE again, like
//!   a cold read of a remote file.
//! - Runs in the foreground until the mount is unmounted (`umount MOUNTPOINT`) or it gets
//!   SIGINT/SIGTERM, on which it unmounts itself.
//!
//! Usage: `fuse-ceiling MOUNTPOINT [--preload NAME=PATH]...` (copies PATH into the root
//! folder as NAME before mounting: "the same bytes" the other mounts serve).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use fuser::{
    BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

const TTL: Duration = Duration::from_secs(1);
const MAX_REQUEST: u32 = 1024 * 1024;
const ROOT: u64 = 1;

enum Content {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, u64>),
}

struct Node {
    parent: u64,
    mode: u16,
    mtime: SystemTime,
    content: Content,
}

struct Tree {
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
}

struct MemoryFs {
    tree: Mutex<Tree>,
    uid: u32,
    gid: u32,
}

impl Tree {
    fn dir(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get(&ino).map(|n| &n.content) {
            Some(Content::Dir(children)) => Ok(children),
            Some(Content::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.content) {
            Some(Content::Dir(children)) => Ok(children),
            Some(Content::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn insert(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u16,
        content: Content,
    ) -> Result<u64, Errno> {
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = Node {
            parent,
            mode,
            mtime: SystemTime::now(),
            content,
        };
        self.nodes.insert(ino, node);
        self.dir_mut(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.get(name).ok_or(Errno::ENOENT)?;
        match (&self.nodes[&ino].content, want_dir) {
            (Content::Dir(children), true) if !children.is_empty() => return Err(Errno::ENOTEMPTY),
            (Content::Dir(_), false) => return Err(Errno::EISDIR),
            (Content::File(_), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.dir_mut(parent)?.remove(name);
        self.nodes.remove(&ino);
        Ok(())
    }
}

impl MemoryFs {
    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, size, nlink) = match &node.content {
            Content::File(data) => (FileType::RegularFile, data.len() as u64, 1),
            Content::Dir(_) => (FileType::Directory, 0, 2),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: node.mode,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn attr_of(&self, tree: &Tree, ino: u64) -> Result<FileAttr, Errno> {
        tree.nodes
            .get(&ino)
            .map(|n| self.attr(ino, n))
            .ok_or(Errno::ENOENT)
    }
}

impl Filesystem for MemoryFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(MAX_REQUEST);
        let _ = config.set_max_readahead(MAX_REQUEST);
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let tree = self.tree.lock().unwrap();
        let found = tree
            .dir(parent.0)
            .and_then(|d| d.get(name).copied().ok_or(Errno::ENOENT));
        match found.and_then(|ino| self.attr_of(&tree, ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let tree = self.tree.lock().unwrap();
        match self.attr_of(&tree, ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut tree = self.tree.lock().unwrap();
        let Some(node) = tree.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(mode) = mode {
            node.mode = (mode & 0o7777) as u16;
        }
        if let Some(size) = size {
            match &mut node.content {
                Content::File(data) => data.resize(size as usize, 0),
                Content::Dir(_) => return reply.error(Errno::EISDIR),
            }
        }
        match mtime {
            Some(TimeOrNow::SpecificTime(at)) => node.mtime = at,
            Some(TimeOrNow::Now) => node.mtime = SystemTime::now(),
            None => {}
        }
        let attr = self.attr(ino.0, node);
        reply.attr(&TTL, &attr);
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
        let mut tree = self.tree.lock().unwrap();
        let made = tree.insert(
            parent.0,
            name,
            (mode & 0o7777) as u16,
            Content::Dir(BTreeMap::new()),
        );
        match made.and_then(|ino| self.attr_of(&tree, ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.tree.lock().unwrap().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.tree.lock().unwrap().remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut tree = self.tree.lock().unwrap();
        let result = (|| {
            let ino = *tree.dir(parent.0)?.get(name).ok_or(Errno::ENOENT)?;
            tree.dir(newparent.0)?;
            if let Some(&old) = tree.dir(newparent.0)?.get(newname) {
                if let Some(Content::Dir(children)) = tree.nodes.get(&old).map(|n| &n.content)
                    && !children.is_empty()
                {
                    return Err(Errno::ENOTEMPTY);
                }
                tree.nodes.remove(&old);
            }
            tree.dir_mut(parent.0)?.remove(name);
            tree.dir_mut(newparent.0)?.insert(newname.to_owned(), ino);
            if let Some(node) = tree.nodes.get_mut(&ino) {
                node.parent = newparent.0;
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let tree = self.tree.lock().unwrap();
        match tree.nodes.get(&ino.0).map(|n| &n.content) {
            Some(Content::File(data)) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(Content::Dir(_)) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut tree = self.tree.lock().unwrap();
        match tree.nodes.get_mut(&ino.0) {
            Some(Node {
                content: Content::File(bytes),
                mtime,
                ..
            }) => {
                let end = offset as usize + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[offset as usize..end].copy_from_slice(data);
                *mtime = SystemTime::now();
                reply.written(data.len() as u32);
            }
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.tree.lock().unwrap();
        let children = match tree.dir(ino.0) {
            Ok(children) => children,
            Err(e) => return reply.error(e),
        };
        let parent = tree.nodes[&ino.0].parent;
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            (parent, FileType::Directory, OsStr::new("..")),
        ];
        let entries = dots
            .into_iter()
            .chain(children.iter().map(|(name, &child)| {
                let kind = match tree.nodes[&child].content {
                    Content::File(_) => FileType::RegularFile,
                    Content::Dir(_) => FileType::Directory,
                };
                (child, kind, name.as_os_str())
            }));
        for (i, (child, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    // With FUSE_DO_READDIRPLUS the kernel lists folders through this one (as it does on cec).
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let tree = self.tree.lock().unwrap();
        let children = match tree.dir(ino.0) {
            Ok(children) => children,
            Err(e) => return reply.error(e),
        };
        let parent = tree.nodes[&ino.0].parent;
        let dots = [(ino.0, OsStr::new(".")), (parent, OsStr::new(".."))];
        let entries = dots.into_iter().chain(
            children
                .iter()
                .map(|(name, &child)| (child, name.as_os_str())),
        );
        for (i, (child, name)) in entries.enumerate().skip(offset as usize) {
            let Ok(attr) = self.attr_of(&tree, child) else {
                continue;
            };
            if reply.add(
                INodeNo(child),
                (i + 1) as u64,
                name,
                &TTL,
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut tree = self.tree.lock().unwrap();
        let made = tree.insert(
            parent.0,
            name,
            (mode & 0o7777) as u16,
            Content::File(Vec::new()),
        );
        match made.and_then(|ino| self.attr_of(&tree, ino)) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let mountpoint = PathBuf::from(args.next().ok_or_else(|| {
        io::Error::other("usage: fuse-ceiling MOUNTPOINT [--preload NAME=PATH]...")
    })?);
    let mut tree = Tree {
        nodes: BTreeMap::new(),
        next_ino: ROOT + 1,
    };
    tree.nodes.insert(
        ROOT,
        Node {
            parent: ROOT,
            mode: 0o755,
            mtime: SystemTime::now(),
            content: Content::Dir(BTreeMap::new()),
        },
    );
    while let Some(flag) = args.next() {
        let spec = args
            .next()
            .filter(|_| flag == "--preload")
            .ok_or_else(|| io::Error::other("expected --preload NAME=PATH"))?;
        let spec = spec.to_string_lossy().into_owned();
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| io::Error::other("expected NAME=PATH"))?;
        let bytes = std::fs::read(path)?;
        tree.insert(ROOT, OsStr::new(name), 0o644, Content::File(bytes))
            .map_err(|_| io::Error::other("duplicate name"))?;
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let fs = MemoryFs {
        tree: Mutex::new(tree),
        uid,
        gid,
    };

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("fuse-ceiling".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::RW,
    ];
    config.n_threads = Some(2);
    config.clone_fd = true;
    // Unmount on SIGINT/SIGTERM (fuser installs no handler): block them in every thread
    // (before the session threads exist, which inherit the mask) and wait for them here.
    // SAFETY: plain libc signal-mask calls on a zeroed sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let session = fuser::Session::new(fs, &mountpoint, &config)?.spawn()?;
    raise_read_ahead(&mountpoint);
    let waiter = std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is an initialised signal set.
        unsafe { libc::sigwait(&set, &mut sig) };
    });
    eprintln!("fuse-ceiling: mounted on {}", mountpoint.display());
    loop {
        if waiter.is_finished() {
            let _ = std::process::Command::new("umount")
                .arg(&mountpoint)
                .status();
            break;
        }
        if session.guard.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    session.join()
}

/// The kernel offers FUSE its default read-ahead (128 KiB) and caps the mount's at it when it
/// gets the `init` reply; like `cec mount`, raise it afterwards through the mount's device.
/// A `stat` of the root answers only once `init` is done.
fn raise_read_ahead(mountpoint: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let setting = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(meta.dev()),
        libc::minor(meta.dev())
    );
    if let Err(e) = std::fs::write(&setting, (MAX_REQUEST / 1024).to_string()) {
        eprintln!("fuse-ceiling: read-ahead left as it is ({setting}: {e})");
    }
}
