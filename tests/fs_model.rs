//! Property test of the filesystem core without a kernel: generated sequences of operations
//! (create, write at offsets, truncate, read, rename, unlink, mkdir, rmdir, handles kept open
//! across operations and closed later, remote changes followed by `invalidate`) run against
//! `CellsFs` over `MemoryCellsApi` and against a plain reference model; every result, every
//! errno and, whenever no handle is open, the server's whole tree must agree with the model.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;

use cec::api::memory::MemoryCellsApi;
use cec::fs::{CellsFs, FileKind, FsOptions, ROOT_INO, RemoteChange, SetAttr};
use proptest::prelude::*;

const WS: &str = "personal-files";

#[derive(Debug, Clone, PartialEq)]
enum ModelNode {
    File(Vec<u8>),
    Dir,
}

/// The reference: paths relative to the workspace root.
#[derive(Default, Debug)]
struct Model {
    nodes: BTreeMap<String, ModelNode>,
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn under_or_eq(path: &str, folder: &str) -> bool {
    path == folder || path.starts_with(&format!("{folder}/"))
}

impl Model {
    /// Resolve the parent directory of `path` like a path walk would.
    fn check_parent(&self, path: &str) -> Result<(), i32> {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            match self.nodes.get(&prefix) {
                None => return Err(libc::ENOENT),
                Some(ModelNode::File(_)) => return Err(libc::ENOTDIR),
                Some(ModelNode::Dir) => {}
            }
        }
        Ok(())
    }

    fn file(&self, path: &str) -> Result<&Vec<u8>, i32> {
        self.check_parent(path)?;
        match self.nodes.get(path) {
            None => Err(libc::ENOENT),
            Some(ModelNode::Dir) => Err(libc::EISDIR),
            Some(ModelNode::File(data)) => Ok(data),
        }
    }

    fn children(&self, dir: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|p| parent(p) == dir && !p.is_empty())
            .map(|p| p.rsplit('/').next().unwrap().to_string())
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(String, Vec<u8>),
    WriteAt(String, u64, Vec<u8>),
    Truncate(String, u64),
    Read(String),
    Mkdir(String),
    Unlink(String),
    Rmdir(String),
    Rename(String, String, bool),
    List(String),
    /// Open a handle (read-write) kept across the next operations.
    Open(String),
    /// Write through the n-th open handle.
    HandleWrite(usize, u64, Vec<u8>),
    /// Read through the n-th open handle.
    HandleRead(usize),
    CloseAll,
    RemoteWrite(String, Vec<u8>),
    RemoteDelete(String),
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a", "b", ".c", "x", "y", "x/a", "x/.c", "x/b", "y/a", "x/z", "x/z/a", "a/b",
    ])
    .prop_map(str::to_string)
}

fn data_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path_strategy(), data_strategy()).prop_map(|(p, d)| Op::Create(p, d)),
        3 => (path_strategy(), 0u64..400, data_strategy()).prop_map(|(p, o, d)| Op::WriteAt(p, o, d)),
        1 => (path_strategy(), 0u64..400).prop_map(|(p, s)| Op::Truncate(p, s)),
        3 => path_strategy().prop_map(Op::Read),
        2 => path_strategy().prop_map(Op::Mkdir),
        1 => path_strategy().prop_map(Op::Unlink),
        1 => path_strategy().prop_map(Op::Rmdir),
        2 => (path_strategy(), path_strategy(), any::<bool>()).prop_map(|(a, b, n)| Op::Rename(a, b, n)),
        1 => prop::sample::select(vec!["", "x", "y", "x/z"]).prop_map(|d| Op::List(d.to_string())),
        2 => path_strategy().prop_map(Op::Open),
        2 => (0usize..3, 0u64..400, data_strategy()).prop_map(|(h, o, d)| Op::HandleWrite(h, o, d)),
        1 => (0usize..3).prop_map(Op::HandleRead),
        1 => Just(Op::CloseAll),
        1 => (path_strategy(), data_strategy()).prop_map(|(p, d)| Op::RemoteWrite(p, d)),
        1 => path_strategy().prop_map(Op::RemoteDelete),
    ]
}

struct Harness {
    api: Arc<MemoryCellsApi>,
    fs: CellsFs,
    model: Model,
    /// Open handles: (ino, fh, model path at open time).
    handles: Vec<(u64, u64, String)>,
    _cache: tempfile::TempDir,
}

fn errno<T>(r: Result<T, cec::fs::FsError>) -> Result<T, i32> {
    r.map_err(|e| e.errno())
}

impl Harness {
    async fn new() -> Harness {
        let api = Arc::new(MemoryCellsApi::default());
        let cache = tempfile::tempdir().unwrap();
        let mut options = FsOptions::new(cache.path());
        options.upload_retry_delay = std::time::Duration::from_millis(1);
        let fs = CellsFs::new(api.clone(), options).await.unwrap();
        Harness {
            api,
            fs,
            model: Model::default(),
            handles: Vec::new(),
            _cache: cache,
        }
    }

    /// Inode of the workspace-relative `path` ("" = the workspace root).
    async fn resolve(&self, path: &str) -> Result<u64, i32> {
        let mut ino = errno(self.fs.lookup(ROOT_INO, OsStr::new(WS)).await)?
            .attr
            .ino;
        if path.is_empty() {
            return Ok(ino);
        }
        for part in path.split('/') {
            ino = errno(self.fs.lookup(ino, OsStr::new(part)).await)?.attr.ino;
        }
        Ok(ino)
    }

    async fn resolve_parent(&self, path: &str) -> Result<(u64, String), i32> {
        let name = path.rsplit('/').next().unwrap().to_string();
        let ino = self.resolve(parent(path)).await?;
        // The kernel's path walk refuses a file as a directory before calling the filesystem.
        if errno(self.fs.getattr(ino, None).await)?.attr.kind != FileKind::Directory {
            return Err(libc::ENOTDIR);
        }
        Ok((ino, name))
    }

    async fn read_through(&self, ino: u64, fh: u64) -> Result<Vec<u8>, i32> {
        let mut out = Vec::new();
        loop {
            let chunk = errno(self.fs.read(ino, fh, out.len() as u64, 100).await)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }

    async fn close_all(&mut self) {
        for (ino, fh, _) in std::mem::take(&mut self.handles) {
            self.fs.flush(ino, fh).await.unwrap();
            self.fs.release(ino, fh).await.unwrap();
        }
    }

    /// Apply `op` to both sides and compare.
    async fn step(&mut self, op: &Op) {
        let namespace_op = matches!(
            op,
            Op::Unlink(_)
                | Op::Rmdir(_)
                | Op::Rename(..)
                | Op::RemoteWrite(..)
                | Op::RemoteDelete(_)
        );
        if namespace_op {
            self.close_all().await;
        }
        match op {
            Op::Create(path, data) => {
                let expected = self.model.check_parent(path).and_then(|_| {
                    if self.model.nodes.contains_key(path) {
                        Err(libc::EEXIST)
                    } else {
                        Ok(())
                    }
                });
                let got = async {
                    let (parent, name) = self.resolve_parent(path).await?;
                    let (entry, open) = errno(
                        self.fs
                            .create(parent, OsStr::new(&name), 0o644, libc::O_WRONLY)
                            .await,
                    )?;
                    let ino = entry.attr.ino;
                    errno(self.fs.write(ino, open.fh, 0, data).await)?;
                    errno(self.fs.flush(ino, open.fh).await)?;
                    errno(self.fs.release(ino, open.fh).await)?;
                    Ok(())
                }
                .await;
                assert_eq!(got, expected, "{op:?}");
                if got.is_ok() {
                    self.model
                        .nodes
                        .insert(path.clone(), ModelNode::File(data.clone()));
                }
            }
            Op::WriteAt(path, offset, data) => {
                let expected = self.model.file(path).map(|_| ());
                let got = async {
                    let ino = self.resolve(path).await?;
                    let open = errno(self.fs.open(ino, libc::O_RDWR).await)?;
                    errno(self.fs.write(ino, open.fh, *offset, data).await)?;
                    errno(self.fs.flush(ino, open.fh).await)?;
                    errno(self.fs.release(ino, open.fh).await)?;
                    Ok(())
                }
                .await;
                assert_eq!(got, expected, "{op:?}");
                if got.is_ok()
                    && !data.is_empty()
                    && let Some(ModelNode::File(content)) = self.model.nodes.get_mut(path)
                {
                    // A write of nothing changes nothing, not even the size.
                    let end = *offset as usize + data.len();
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[*offset as usize..end].copy_from_slice(data);
                }
            }
            Op::Truncate(path, size) => {
                let expected = self.model.file(path).map(|_| ());
                let got = async {
                    let ino = self.resolve(path).await?;
                    let changes = SetAttr {
                        size: Some(*size),
                        ..SetAttr::default()
                    };
                    errno(self.fs.setattr(ino, changes).await)?;
                    Ok(())
                }
                .await;
                assert_eq!(got, expected, "{op:?}");
                if got.is_ok()
                    && let Some(ModelNode::File(content)) = self.model.nodes.get_mut(path)
                {
                    content.resize(*size as usize, 0);
                }
            }
            Op::Read(path) => {
                let expected = self.model.file(path).cloned();
                let got = async {
                    let ino = self.resolve(path).await?;
                    let attr = errno(self.fs.getattr(ino, None).await)?.attr;
                    let open = errno(self.fs.open(ino, libc::O_RDONLY).await)?;
                    let data = self.read_through(ino, open.fh).await?;
                    errno(self.fs.release(ino, open.fh).await)?;
                    assert_eq!(attr.size, data.len() as u64, "size of {path}");
                    Ok(data)
                }
                .await;
                assert_eq!(got, expected, "{op:?}");
            }
            Op::Mkdir(path) => {
                let expected = self.model.check_parent(path).and_then(|_| {
                    if self.model.nodes.contains_key(path) {
                        Err(libc::EEXIST)
                    } else {
                        Ok(())
                    }
                });
                let got = async {
                    let (parent, name) = self.resolve_parent(path).await?;
                    let entry = errno(self.fs.mkdir(parent, OsStr::new(&name), 0o755).await)?;
                    assert_eq!(entry.attr.kind, FileKind::Directory);
                    Ok(())
                }
                .await;
                assert_eq!(got, expected, "{op:?}");
                if got.is_ok() {
                    self.model.nodes.insert(path.clone(), ModelNode::Dir);
                }
            }
            Op::Unlink(path) => {
                let expected = self.model.file(path).map(|_| ());
                let got = async {
                    let (parent, name) = self.resolve_parent(path).await?;
                    errno(self.fs.unlink(parent, OsStr::new(&name)).await)
                }
                .await;
                assert_eq!(got, expected, "{op:?}");
                if got.is_ok() {
                    self.model.nodes.remove(path);
                }
            }
            Op::Rmdir(path) => {
                let expected =
                    self.model
                        .check_parent(path)
                        .and_then(|_| match self.model.nodes.get(path) {
                            None => Err(libc::ENOENT),
                            Some(ModelNode::File(_)) => Err(libc::ENOTDIR),
                            Some(ModelNode::Dir) if !self.model.children(path).is_empty() => {
                                Err(libc::ENOTEMPTY)
                            }
                            Some(ModelNode::Dir) => Ok(()),
                        });
                let got = async {
                    let (parent, name) = self.resolve_parent(path).await?;
                    errno(self.fs.rmdir(parent, OsStr::new(&name)).await)
                }
                .await;
                assert_eq!(got, expected, "{op:?}");
                if got.is_ok() {
                    self.model.nodes.remove(path);
                }
            }
            Op::Rename(from, to, noreplace) => {
                let expected = self.expected_rename(from, to, *noreplace);
                let got = async {
                    let (from_parent, from_name) = self.resolve_parent(from).await?;
                    let (to_parent, to_name) = self.resolve_parent(to).await?;
                    let flags = if *noreplace {
                        libc::RENAME_NOREPLACE
                    } else {
                        0
                    };
                    errno(
                        self.fs
                            .rename(
                                from_parent,
                                OsStr::new(&from_name),
                                to_parent,
                                OsStr::new(&to_name),
                                flags,
                            )
                            .await,
                    )
                }
                .await;
                assert_eq!(got, expected, "{op:?}");
                if got.is_ok() && from != to {
                    let moved: Vec<(String, ModelNode)> = self
                        .model
                        .nodes
                        .iter()
                        .filter(|(p, _)| under_or_eq(p, from))
                        .map(|(p, n)| (p.clone(), n.clone()))
                        .collect();
                    self.model.nodes.remove(to);
                    for (p, n) in moved {
                        self.model.nodes.remove(&p);
                        self.model
                            .nodes
                            .insert(format!("{to}{}", &p[from.len()..]), n);
                    }
                }
            }
            Op::List(dir) => {
                let probe = if dir.is_empty() {
                    "_".to_string()
                } else {
                    format!("{dir}/_")
                };
                let expected = match self.model.check_parent(&probe) {
                    Ok(())
                        if dir.is_empty() || self.model.nodes.get(dir) == Some(&ModelNode::Dir) =>
                    {
                        Ok(self.model.children(dir))
                    }
                    Ok(()) => Err(libc::ENOENT),
                    Err(e) => Err(e),
                };
                let got = async {
                    let ino = self.resolve(dir).await?;
                    let fh = errno(self.fs.opendir(ino, 0).await)?;
                    let mut names = Vec::new();
                    errno(
                        self.fs
                            .readdir(ino, fh, 0, true, |e| {
                                names.push(e.name.to_string_lossy().into_owned());
                                false
                            })
                            .await,
                    )?;
                    errno(self.fs.releasedir(ino, fh).await)?;
                    let mut names: Vec<String> = names
                        .into_iter()
                        .filter(|n| n != "." && n != "..")
                        .filter(|n| !(dir.is_empty() && n == "recycle_bin"))
                        .collect();
                    names.sort();
                    Ok(names)
                }
                .await;
                let expected = expected.map(|mut v| {
                    v.sort();
                    v
                });
                assert_eq!(got, expected, "{op:?}");
            }
            Op::Open(path) => {
                let expected = self.model.file(path).map(|_| ());
                let got = async {
                    let ino = self.resolve(path).await?;
                    let open = errno(self.fs.open(ino, libc::O_RDWR).await)?;
                    Ok((ino, open.fh))
                }
                .await;
                assert_eq!(got.map(|_| ()), expected, "{op:?}");
                if let Ok((ino, fh)) = got {
                    self.handles.push((ino, fh, path.clone()));
                }
            }
            Op::HandleWrite(n, offset, data) => {
                if self.handles.is_empty() {
                    return;
                }
                let (ino, fh, path) = self.handles[n % self.handles.len()].clone();
                let written = self.fs.write(ino, fh, *offset, data).await.unwrap();
                assert_eq!(written as usize, data.len());
                if !data.is_empty()
                    && let Some(ModelNode::File(content)) = self.model.nodes.get_mut(&path)
                {
                    // A write of nothing changes nothing, not even the size.
                    let end = *offset as usize + data.len();
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[*offset as usize..end].copy_from_slice(data);
                }
            }
            Op::HandleRead(n) => {
                if self.handles.is_empty() {
                    return;
                }
                let (ino, fh, path) = self.handles[n % self.handles.len()].clone();
                let got = self.read_through(ino, fh).await.unwrap();
                assert_eq!(Ok(&got), self.model.file(&path), "{op:?}");
            }
            Op::CloseAll => self.close_all().await,
            Op::RemoteWrite(path, data) => {
                if self.model.check_parent(path).is_err()
                    || self.model.nodes.get(path) == Some(&ModelNode::Dir)
                {
                    return;
                }
                let full = format!("{WS}/{path}");
                let existed = self.model.nodes.contains_key(path);
                self.api.put_file(&full, data);
                let etag = self.api.node(&full).map(|n| n.etag);
                self.fs.invalidate(if existed {
                    RemoteChange::ContentChanged { path: full, etag }
                } else {
                    RemoteChange::Created { path: full }
                });
                self.model
                    .nodes
                    .insert(path.clone(), ModelNode::File(data.clone()));
            }
            Op::RemoteDelete(path) => {
                if !self.model.nodes.contains_key(path) {
                    return;
                }
                let full = format!("{WS}/{path}");
                self.api.remove(&full);
                self.fs.invalidate(RemoteChange::Deleted { path: full });
                self.model.nodes.retain(|p, _| !under_or_eq(p, path));
            }
        }
        // A rename may leave the delete of the old name running: the operation is over
        // for the model once it is done.
        self.fs.settle().await;
        if self.handles.is_empty() {
            self.check_server();
        }
    }

    fn expected_rename(&self, from: &str, to: &str, noreplace: bool) -> Result<(), i32> {
        self.model.check_parent(from)?;
        self.model.check_parent(to)?;
        let Some(source) = self.model.nodes.get(from) else {
            return Err(libc::ENOENT);
        };
        if from == to {
            return Ok(());
        }
        if under_or_eq(to, from) {
            return Err(libc::EINVAL);
        }
        match (source, self.model.nodes.get(to)) {
            (_, None) => Ok(()),
            (_, Some(_)) if noreplace => Err(libc::EEXIST),
            (ModelNode::Dir, Some(ModelNode::File(_))) => Err(libc::ENOTDIR),
            (ModelNode::File(_), Some(ModelNode::Dir)) => Err(libc::EISDIR),
            (ModelNode::Dir, Some(ModelNode::Dir)) if !self.model.children(to).is_empty() => {
                Err(libc::ENOTEMPTY)
            }
            _ => Ok(()),
        }
    }

    /// With no handle open, the server holds exactly the model.
    fn check_server(&self) {
        let prefix = format!("{WS}/");
        let bin = format!("{WS}/recycle_bin");
        let mut server = BTreeMap::new();
        for path in self.api.paths() {
            if !path.starts_with(&prefix) || under_or_eq(&path, &bin) {
                continue;
            }
            let node = match self.api.read_file(&path) {
                Some(data) => ModelNode::File(data),
                None => ModelNode::Dir,
            };
            server.insert(path[prefix.len()..].to_string(), node);
        }
        assert_eq!(
            server, self.model.nodes,
            "server tree differs from the model"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_core_behaves_like_the_reference_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut harness = Harness::new().await;
            for op in &ops {
                harness.step(op).await;
            }
            harness.close_all().await;
            harness.check_server();
            let status = harness.fs.status();
            assert!(status.pending_uploads.is_empty(), "{status:?}");
            assert!(status.recent_errors.is_empty(), "{status:?}");
        });
    }
}
