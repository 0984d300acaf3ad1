//! An in-memory [`CellsApi`] for tests of the filesystem core and the CLI: a whole Cells tree
//! in a map, faithful to the server quirks the client must cope with, plus a fault switch.
//!
//! Faithfulness (cells-api.md): dotfiles are hidden from [`CellsApi::list_folder`] but shown by
//! [`CellsApi::list_folder_s3`] (which gives no Uuids and an empty listing for a missing
//! folder); mtimes are assigned by the "server" clock on every content write; uploads keep the
//! Uuid of the file they overwrite and create missing parents; a non-permanent delete moves
//! nodes into `<ws>/recycle_bin` (permanent in a `skip_recycle` workspace or inside the bin);
//! moves onto an existing path are refused; jobs complete before the call returns; a read-only
//! workspace answers `Forbidden` to every change.
//!
//! Faults: [`MemoryCellsApi::fail_next`] makes the next N trait calls (optionally only of one
//! operation) fail with a given error, [`MemoryCellsApi::set_delay`] delays every call. Test
//! helpers (`put_file`, `read_file`, ...) act like another client: no faults, no counting.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};

use super::{
    ApiError, ApiResult, ByteRange, ByteStream, CellsApi, Node, NodeKind, ObjectInfo, S3Entry,
    UploadOptions, Workspace,
};
use crate::paths::parent_of;

/// The name of the recycle bin folder at each workspace root.
pub const RECYCLE_BIN: &str = "recycle_bin";

/// A workspace of the in-memory server.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryWorkspace {
    pub slug: String,
    pub can_write: bool,
    pub skip_recycle: bool,
}

impl MemoryWorkspace {
    pub fn new(slug: &str, can_write: bool) -> MemoryWorkspace {
        MemoryWorkspace {
            slug: slug.to_string(),
            can_write,
            skip_recycle: false,
        }
    }
}

#[derive(Debug, Clone)]
struct MemNode {
    uuid: String,
    kind: NodeKind,
    content: Bytes,
    mtime: i64,
    etag: String,
    /// Original path of a node in the recycle bin.
    restore_path: Option<String>,
}

struct Fault {
    remaining: u32,
    operation: Option<String>,
    error: ApiError,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, MemNode>,
    workspaces: Vec<MemoryWorkspace>,
    next_id: u64,
    clock: Option<i64>,
    /// Unfinished multipart uploads: id -> (path, part number -> bytes).
    multipart: HashMap<String, (String, BTreeMap<u64, Bytes>)>,
}

/// The in-memory server. See the module documentation.
pub struct MemoryCellsApi {
    state: Mutex<State>,
    faults: Mutex<Vec<Fault>>,
    delay: Mutex<Duration>,
    operation_delays: Mutex<HashMap<String, Duration>>,
    calls: Mutex<HashMap<String, u64>>,
    /// The ranges `get_object` was asked for, in call order (`None`: the whole file).
    get_ranges: Mutex<Vec<Option<ByteRange>>>,
}

impl Default for MemoryCellsApi {
    fn default() -> Self {
        MemoryCellsApi::new(vec![
            MemoryWorkspace::new("personal-files", true),
            MemoryWorkspace::new("common-files", true),
        ])
    }
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_under(path: &str, folder: &str) -> bool {
    path.len() > folder.len() && path.starts_with(folder) && path.as_bytes()[folder.len()] == b'/'
}

impl State {
    fn now(&self) -> i64 {
        self.clock.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        })
    }

    fn new_uuid(&mut self) -> String {
        self.next_id += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_id)
    }

    fn workspace(&self, path: &str) -> Option<&MemoryWorkspace> {
        let slug = path.split('/').next().unwrap_or("");
        self.workspaces.iter().find(|w| w.slug == slug)
    }

    fn check_writable(&self, path: &str) -> ApiResult<()> {
        match self.workspace(path) {
            None => Err(ApiError::NotFound(path.to_string())),
            Some(ws) if !ws.can_write => Err(ApiError::Forbidden(format!(
                "workspace {} is read-only",
                ws.slug
            ))),
            Some(_) if !path.contains('/') => Err(ApiError::Forbidden(format!(
                "cannot change the workspace root {path}"
            ))),
            Some(_) => Ok(()),
        }
    }

    fn to_node(&self, path: &str, node: &MemNode) -> Node {
        let size = match node.kind {
            NodeKind::File => node.content.len() as u64,
            NodeKind::Folder => self
                .nodes
                .range(format!("{path}/")..)
                .take_while(|(p, _)| is_under(p, path))
                .map(|(_, n)| n.content.len() as u64)
                .sum(),
        };
        Node {
            uuid: node.uuid.clone(),
            path: path.to_string(),
            kind: node.kind,
            size,
            mtime: node.mtime,
            etag: node.etag.clone(),
            meta: Default::default(),
        }
    }

    fn children(&self, folder: &str) -> Vec<(String, MemNode)> {
        let prefix = format!("{folder}/");
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p[prefix.len()..].contains('/'))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect()
    }

    fn mkdir_all(&mut self, path: &str) -> ApiResult<()> {
        if path.is_empty() {
            return Ok(());
        }
        match self.nodes.get(path) {
            Some(n) if n.kind == NodeKind::Folder => return Ok(()),
            Some(_) => return Err(ApiError::TypeConflict(format!("{path} is a file"))),
            None => {}
        }
        self.mkdir_all(parent_of(path))?;
        let uuid = self.new_uuid();
        let now = self.now();
        self.nodes.insert(
            path.to_string(),
            MemNode {
                etag: uuid.clone(),
                uuid,
                kind: NodeKind::Folder,
                content: Bytes::new(),
                mtime: now,
                restore_path: None,
            },
        );
        Ok(())
    }

    fn write_file(&mut self, path: &str, content: Bytes) -> ApiResult<String> {
        if let Some(n) = self.nodes.get(path)
            && n.kind == NodeKind::Folder
        {
            return Err(ApiError::TypeConflict(format!(
                "A folder already exists with the same name: {path}"
            )));
        }
        self.mkdir_all(parent_of(path))?;
        let etag = md5_hex(&content);
        let uuid = match self.nodes.get(path) {
            Some(n) => n.uuid.clone(),
            None => self.new_uuid(),
        };
        let now = self.now();
        self.nodes.insert(
            path.to_string(),
            MemNode {
                uuid,
                kind: NodeKind::File,
                content,
                mtime: now,
                etag: etag.clone(),
                restore_path: None,
            },
        );
        Ok(etag)
    }

    /// Move `from` (and its subtree) to `to`; `to` must not exist.
    fn move_tree(&mut self, from: &str, to: &str) -> ApiResult<()> {
        if !self.nodes.contains_key(from) {
            return Err(ApiError::NotFound(from.to_string()));
        }
        if self.nodes.contains_key(to) {
            return Err(ApiError::AlreadyExists(to.to_string()));
        }
        if is_under(to, from) || to == from {
            return Err(ApiError::InvalidRequest(format!(
                "cannot move {from} into itself"
            )));
        }
        self.mkdir_all(parent_of(to))?;
        let moved: Vec<String> = self
            .nodes
            .keys()
            .filter(|p| *p == from || is_under(p, from))
            .cloned()
            .collect();
        for old in moved {
            let node = self.nodes.remove(&old).expect("listed above");
            let new = format!("{to}{}", &old[from.len()..]);
            self.nodes.insert(new, node);
        }
        Ok(())
    }

    fn copy_tree(&mut self, from: &str, to: &str) -> ApiResult<()> {
        if !self.nodes.contains_key(from) {
            return Err(ApiError::NotFound(from.to_string()));
        }
        if self.nodes.contains_key(to) {
            return Err(ApiError::AlreadyExists(to.to_string()));
        }
        self.mkdir_all(parent_of(to))?;
        let copied: Vec<(String, MemNode)> = self
            .nodes
            .iter()
            .filter(|(p, _)| *p == from || is_under(p, from))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        let now = self.now();
        for (old, mut node) in copied {
            node.uuid = self.new_uuid();
            node.mtime = now;
            if node.kind == NodeKind::Folder {
                node.etag = node.uuid.clone();
            }
            self.nodes
                .insert(format!("{to}{}", &old[from.len()..]), node);
        }
        Ok(())
    }

    fn remove_tree(&mut self, path: &str) {
        self.nodes.retain(|p, _| p != path && !is_under(p, path));
    }
}

impl MemoryCellsApi {
    /// A server with these workspaces, each with an empty root folder.
    pub fn new(workspaces: Vec<MemoryWorkspace>) -> MemoryCellsApi {
        let mut state = State::default();
        for ws in &workspaces {
            state.mkdir_all(&ws.slug).expect("workspace root");
        }
        state.workspaces = workspaces;
        MemoryCellsApi {
            state: Mutex::new(state),
            faults: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
            operation_delays: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            get_ranges: Mutex::new(Vec::new()),
        }
    }

    /// Make the next `count` trait calls fail with `error`; only calls of `operation` (the
    /// trait method's name, e.g. `"put_object_from_file"`) when given.
    pub fn fail_next(&self, count: u32, operation: Option<&str>, error: ApiError) {
        self.faults.lock().unwrap().push(Fault {
            remaining: count,
            operation: operation.map(str::to_string),
            error,
        });
    }

    /// Remove every pending fault.
    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// Delay every trait call by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Delay every call of the trait method `operation` by `delay` (on top of `set_delay`).
    pub fn set_operation_delay(&self, operation: &str, delay: Duration) {
        self.operation_delays
            .lock()
            .unwrap()
            .insert(operation.to_string(), delay);
    }

    /// Fix the server clock (Unix seconds) or let it follow the real one (`None`).
    pub fn set_clock(&self, now: Option<i64>) {
        self.state.lock().unwrap().clock = now;
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn unfinished_multipart_uploads(&self) -> usize {
        self.state.lock().unwrap().multipart.len()
    }

    /// Parts received so far by the multipart uploads not completed nor aborted.
    pub fn multipart_parts_received(&self) -> usize {
        let state = self.state.lock().unwrap();
        state.multipart.values().map(|(_, parts)| parts.len()).sum()
    }

    /// How many times the trait method `operation` was called (faulty calls included).
    pub fn calls(&self, operation: &str) -> u64 {
        self.calls
            .lock()
            .unwrap()
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    pub fn reset_calls(&self) {
        self.calls.lock().unwrap().clear();
        self.get_ranges.lock().unwrap().clear();
    }

    /// The ranges `get_object` was asked for since the last [`MemoryCellsApi::reset_calls`],
    /// in call order (`None`: the whole file).
    pub fn get_ranges(&self) -> Vec<Option<ByteRange>> {
        self.get_ranges.lock().unwrap().clone()
    }

    /// Another client writes a file (parents created).
    pub fn put_file(&self, path: &str, content: &[u8]) {
        self.state
            .lock()
            .unwrap()
            .write_file(path, Bytes::copy_from_slice(content))
            .expect("put_file");
    }

    /// Another client creates a folder (parents created).
    pub fn make_folder(&self, path: &str) {
        self.state
            .lock()
            .unwrap()
            .mkdir_all(path)
            .expect("make_folder");
    }

    /// Another client removes a node and its subtree (permanently).
    pub fn remove(&self, path: &str) {
        self.state.lock().unwrap().remove_tree(path);
    }

    /// Another client moves a node.
    pub fn rename(&self, from: &str, to: &str) {
        self.state
            .lock()
            .unwrap()
            .move_tree(from, to)
            .expect("rename");
    }

    /// The content of a file, `None` when absent or a folder.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let state = self.state.lock().unwrap();
        state
            .nodes
            .get(path)
            .filter(|n| n.kind == NodeKind::File)
            .map(|n| n.content.to_vec())
    }

    /// The node at `path` as the REST stat would give it.
    pub fn node(&self, path: &str) -> Option<Node> {
        let state = self.state.lock().unwrap();
        state.nodes.get(path).map(|n| state.to_node(path, n))
    }

    /// Every path (workspace roots included), sorted.
    pub fn paths(&self) -> Vec<String> {
        self.state.lock().unwrap().nodes.keys().cloned().collect()
    }

    async fn enter(&self, operation: &str) -> ApiResult<()> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(operation.to_string())
            .or_default() += 1;
        let delay = *self.delay.lock().unwrap()
            + self
                .operation_delays
                .lock()
                .unwrap()
                .get(operation)
                .copied()
                .unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut faults = self.faults.lock().unwrap();
        let hit = faults.iter_mut().position(|f| {
            f.remaining > 0 && f.operation.as_deref().is_none_or(|op| op == operation)
        });
        if let Some(index) = hit {
            let fault = &mut faults[index];
            fault.remaining -= 1;
            let error = fault.error.clone();
            if fault.remaining == 0 {
                faults.remove(index);
            }
            return Err(error);
        }
        Ok(())
    }
}

#[async_trait]
impl CellsApi for MemoryCellsApi {
    async fn list_workspaces(&self) -> ApiResult<Vec<Workspace>> {
        self.enter("list_workspaces").await?;
        let state = self.state.lock().unwrap();
        Ok(state
            .workspaces
            .iter()
            .map(|ws| {
                let node = state.nodes.get(&ws.slug).expect("workspace root");
                Workspace {
                    slug: ws.slug.clone(),
                    uuid: node.uuid.clone(),
                    label: ws.slug.clone(),
                    description: String::new(),
                    scope: "ADMIN".to_string(),
                    can_read: true,
                    can_write: ws.can_write,
                    skip_recycle: ws.skip_recycle,
                    root: state.to_node(&ws.slug, node),
                }
            })
            .collect())
    }

    async fn list_folder(&self, path: &str) -> ApiResult<Vec<Node>> {
        self.enter("list_folder").await?;
        let state = self.state.lock().unwrap();
        match state.nodes.get(path) {
            Some(n) if n.kind == NodeKind::Folder => {}
            _ => return Err(ApiError::NotFound(path.to_string())),
        }
        let mut children: Vec<Node> = state
            .children(path)
            .iter()
            .filter(|(p, _)| !name_of(p).starts_with('.'))
            .map(|(p, n)| state.to_node(p, n))
            .collect();
        children.sort_by(|a, b| (!a.is_folder(), a.name()).cmp(&(!b.is_folder(), b.name())));
        Ok(children)
    }

    async fn list_folder_s3(&self, path: &str) -> ApiResult<Vec<S3Entry>> {
        self.enter("list_folder_s3").await?;
        let state = self.state.lock().unwrap();
        Ok(state
            .children(path)
            .into_iter()
            .map(|(p, n)| match n.kind {
                NodeKind::Folder => S3Entry::Folder(p),
                NodeKind::File => S3Entry::Object(ObjectInfo {
                    path: p,
                    size: n.content.len() as u64,
                    etag: n.etag,
                    mtime: n.mtime,
                    content_type: None,
                }),
            })
            .collect())
    }

    async fn stat(&self, path: &str) -> ApiResult<Option<Node>> {
        self.enter("stat").await?;
        let state = self.state.lock().unwrap();
        Ok(state.nodes.get(path).map(|n| state.to_node(path, n)))
    }

    async fn create_folders(&self, paths: &[String]) -> ApiResult<Vec<Node>> {
        self.enter("create_folders").await?;
        let mut state = self.state.lock().unwrap();
        if paths.is_empty() {
            return Err(ApiError::Server {
                status: 500,
                message: "empty Nodes".into(),
            });
        }
        // As Cells v4: an existing folder is returned as a success (update-if-exists), only a
        // file in the way is refused.
        for path in paths {
            state.check_writable(path)?;
            if state
                .nodes
                .get(path)
                .is_some_and(|n| n.kind != NodeKind::Folder)
            {
                return Err(ApiError::TypeConflict(format!("{path} is a file")));
            }
        }
        let mut created = Vec::new();
        for path in paths {
            state.mkdir_all(path)?;
            let node = state.nodes.get(path).expect("just created");
            created.push(state.to_node(path, node));
        }
        Ok(created)
    }

    async fn move_nodes(
        &self,
        sources: &[String],
        target: &str,
        target_is_parent: bool,
    ) -> ApiResult<()> {
        self.enter("move_nodes").await?;
        let mut state = self.state.lock().unwrap();
        for source in sources {
            state.check_writable(source)?;
            let to = if target_is_parent {
                format!("{target}/{}", name_of(source))
            } else {
                target.to_string()
            };
            state.check_writable(&to)?;
            state.move_tree(source, &to)?;
        }
        Ok(())
    }

    async fn copy_nodes(
        &self,
        sources: &[String],
        target: &str,
        target_is_parent: bool,
    ) -> ApiResult<()> {
        self.enter("copy_nodes").await?;
        let mut state = self.state.lock().unwrap();
        for source in sources {
            let to = if target_is_parent {
                format!("{target}/{}", name_of(source))
            } else {
                target.to_string()
            };
            state.check_writable(&to)?;
            state.copy_tree(source, &to)?;
        }
        Ok(())
    }

    async fn delete_nodes(&self, paths: &[String], permanently: bool) -> ApiResult<()> {
        self.enter("delete_nodes").await?;
        let mut state = self.state.lock().unwrap();
        for path in paths {
            state.check_writable(path)?;
            if !state.nodes.contains_key(path) {
                return Err(ApiError::NotFound(path.clone()));
            }
        }
        for path in paths {
            let ws = state.workspace(path).cloned().expect("checked");
            let bin = format!("{}/{RECYCLE_BIN}", ws.slug);
            let in_bin = path == &bin || is_under(path, &bin);
            if permanently || ws.skip_recycle || in_bin {
                state.remove_tree(path);
                continue;
            }
            state.mkdir_all(&bin)?;
            let mut target = format!("{bin}/{}", name_of(path));
            let mut n = 1;
            while state.nodes.contains_key(&target) {
                target = format!("{bin}/{}-{n}", name_of(path));
                n += 1;
            }
            state.move_tree(path, &target)?;
            if let Some(node) = state.nodes.get_mut(&target) {
                node.restore_path = Some(path.clone());
            }
        }
        Ok(())
    }

    async fn restore_nodes(&self, paths: &[String]) -> ApiResult<()> {
        self.enter("restore_nodes").await?;
        let mut state = self.state.lock().unwrap();
        for path in paths {
            let original = state
                .nodes
                .get(path)
                .ok_or_else(|| ApiError::NotFound(path.clone()))?
                .restore_path
                .clone()
                .ok_or_else(|| ApiError::InvalidRequest(format!("{path} is not in a bin")))?;
            state.move_tree(path, &original)?;
            if let Some(node) = state.nodes.get_mut(&original) {
                node.restore_path = None;
            }
        }
        Ok(())
    }

    async fn head_object(&self, path: &str) -> ApiResult<ObjectInfo> {
        self.enter("head_object").await?;
        let state = self.state.lock().unwrap();
        match state.nodes.get(path) {
            None => Err(ApiError::NotFound(path.to_string())),
            Some(n) if n.kind == NodeKind::Folder => {
                Err(ApiError::TypeConflict(format!("{path} is a folder")))
            }
            Some(n) => Ok(ObjectInfo {
                path: path.to_string(),
                size: n.content.len() as u64,
                etag: n.etag.clone(),
                mtime: n.mtime,
                content_type: None,
            }),
        }
    }

    async fn get_object(&self, path: &str, range: Option<ByteRange>) -> ApiResult<ByteStream> {
        self.get_ranges.lock().unwrap().push(range);
        self.enter("get_object").await?;
        let content = {
            let state = self.state.lock().unwrap();
            match state.nodes.get(path) {
                None => return Err(ApiError::NotFound(path.to_string())),
                Some(n) if n.kind == NodeKind::Folder => {
                    return Err(ApiError::TypeConflict(format!("{path} is a folder")));
                }
                Some(n) => n.content.clone(),
            }
        };
        let total = content.len() as u64;
        let (start, end) = match range {
            None => (0, total),
            Some(r) => {
                if r.offset >= total && total > 0 {
                    return Err(ApiError::Server {
                        status: 416,
                        message: "InvalidRange".into(),
                    });
                }
                let end = match r.len {
                    Some(len) => (r.offset + len).min(total),
                    None => total,
                };
                (r.offset.min(total), end)
            }
        };
        let body = content.slice(start as usize..end as usize);
        let chunks: Vec<ApiResult<Bytes>> = (0..body.len())
            .step_by(64 * 1024)
            .map(|i| Ok(body.slice(i..(i + 64 * 1024).min(body.len()))))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn put_object_from_file(
        &self,
        path: &str,
        source: &Path,
        size: u64,
        _options: &UploadOptions,
    ) -> ApiResult<String> {
        self.enter("put_object_from_file").await?;
        let content = tokio::fs::read(source)
            .await
            .map_err(|e| ApiError::Local(format!("{}: {e}", source.display())))?;
        if content.len() as u64 != size {
            return Err(ApiError::Local(format!(
                "{}: expected {size} bytes, read {}",
                source.display(),
                content.len()
            )));
        }
        let mut state = self.state.lock().unwrap();
        state.check_writable(path)?;
        state.write_file(path, Bytes::from(content))
    }

    async fn put_object(
        &self,
        path: &str,
        content: Bytes,
        _options: &UploadOptions,
    ) -> ApiResult<String> {
        self.enter("put_object").await?;
        let mut state = self.state.lock().unwrap();
        state.check_writable(path)?;
        state.write_file(path, content)
    }

    async fn create_multipart(&self, path: &str, _options: &UploadOptions) -> ApiResult<String> {
        self.enter("create_multipart").await?;
        let mut state = self.state.lock().unwrap();
        state.check_writable(path)?;
        let id = format!("upload-{}", state.new_uuid());
        state
            .multipart
            .insert(id.clone(), (path.to_string(), BTreeMap::new()));
        Ok(id)
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
        self.enter("upload_part").await?;
        let content = {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(source)
                .map_err(|e| ApiError::Local(format!("{}: {e}", source.display())))?;
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| ApiError::Local(format!("{}: {e}", source.display())))?;
            Bytes::from(buf)
        };
        let etag = md5_hex(&content);
        let mut state = self.state.lock().unwrap();
        match state.multipart.get_mut(upload_id) {
            Some((p, parts)) if p == path => {
                parts.insert(number, content);
                Ok(etag)
            }
            _ => Err(ApiError::NotFound(format!("{path}: no upload {upload_id}"))),
        }
    }

    async fn complete_multipart(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[(u64, String)],
    ) -> ApiResult<String> {
        self.enter("complete_multipart").await?;
        let mut state = self.state.lock().unwrap();
        let Some((p, sent)) = state.multipart.get(upload_id) else {
            return Err(ApiError::NotFound(format!("{path}: no upload {upload_id}")));
        };
        if p != path {
            return Err(ApiError::NotFound(format!("{path}: no upload {upload_id}")));
        }
        let mut content = Vec::new();
        for (number, etag) in parts {
            match sent.get(number) {
                Some(part) if md5_hex(part) == *etag => content.extend_from_slice(part),
                _ => {
                    return Err(ApiError::Server {
                        status: 400,
                        message: format!("InvalidPart: part {number} of {path}"),
                    });
                }
            }
        }
        state.multipart.remove(upload_id);
        state.check_writable(path)?;
        let etag = state.write_file(path, Bytes::from(content))?;
        Ok(format!("{etag}-{}", parts.len()))
    }

    async fn abort_multipart(&self, path: &str, upload_id: &str) -> ApiResult<()> {
        self.enter("abort_multipart").await?;
        let mut state = self.state.lock().unwrap();
        match state.multipart.remove(upload_id) {
            Some(_) => Ok(()),
            None => Err(ApiError::NotFound(format!("{path}: no upload {upload_id}"))),
        }
    }

    async fn copy_object(&self, source: &str, target: &str) -> ApiResult<()> {
        self.enter("copy_object").await?;
        let mut state = self.state.lock().unwrap();
        state.check_writable(target)?;
        let content = match state.nodes.get(source) {
            Some(n) if n.kind == NodeKind::File => n.content.clone(),
            Some(_) => return Err(ApiError::TypeConflict(source.to_string())),
            None => return Err(ApiError::NotFound(source.to_string())),
        };
        if source == target {
            return Err(ApiError::Server {
                status: 501,
                message: "NotImplemented".into(),
            });
        }
        state.write_file(target, content).map(|_| ())
    }

    async fn delete_object(&self, path: &str) -> ApiResult<()> {
        self.enter("delete_object").await?;
        let mut state = self.state.lock().unwrap();
        state.check_writable(path)?;
        match state.nodes.get(path) {
            Some(n) if n.kind == NodeKind::File => {
                state.remove_tree(path);
                Ok(())
            }
            Some(_) => Err(ApiError::TypeConflict(path.to_string())),
            None => Err(ApiError::NotFound(path.to_string())),
        }
    }

    async fn list_tree_s3(&self, path: &str, limit: usize) -> ApiResult<Option<Vec<S3Entry>>> {
        self.enter("list_tree_s3").await?;
        let state = self.state.lock().unwrap();
        let prefix = format!("{path}/");
        let entries: Vec<S3Entry> = state
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, n)| match n.kind {
                NodeKind::Folder => S3Entry::Folder(p.clone()),
                NodeKind::File => S3Entry::Object(ObjectInfo {
                    path: p.clone(),
                    size: n.content.len() as u64,
                    etag: n.etag.clone(),
                    mtime: n.mtime,
                    content_type: None,
                }),
            })
            .collect();
        Ok((entries.len() <= limit).then_some(entries))
    }
}
