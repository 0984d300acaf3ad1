//! A name's changes reach the server in the order the user made them, through the real mount.
//!
//! Generated sequences of create (with or without data), append, keep a handle open, write
//! through it, close it, rename, unlink, mkdir, rmdir and folder renames, on a handful of
//! names, run through the kernel against a plain reference model (names pointing at file
//! identities, so that a handle follows its file across renames and unlinks). After each
//! sequence every handle is closed; then the mount and, once its background work is done,
//! the server must hold exactly the model's tree, and still hold it a moment later (an upload
//! arriving after an `unlink` brings a deleted file back; one arriving after a folder's
//! rename writes under the old name). Run in the default mode and with `--write-back`.

mod mount_common;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cec::api::{CellsApi, S3Entry};
use futures::StreamExt;
use mount_common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const FILES: [&str; 6] = ["a", "b", ".c", "d/x", "d/.y", "e/x"];
const DIRS: [&str; 2] = ["d", "e"];
const SLOTS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    /// `open(O_CREAT|O_TRUNC)`, write, close.
    Create(&'static str, Vec<u8>),
    /// `open(O_APPEND)` of an existing file, write, close.
    Append(&'static str, Vec<u8>),
    /// `open(O_RDWR|O_CREAT)` kept in a slot.
    Open(usize, &'static str),
    /// `pwrite` through a kept handle.
    WriteAt(usize, u64, Vec<u8>),
    Close(usize),
    Unlink(&'static str),
    Rename(&'static str, &'static str),
    Mkdir(&'static str),
    Rmdir(&'static str),
    RenameDir(&'static str, &'static str),
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 1..64),
        prop::collection::vec(any::<u8>(), 20_000..40_000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let file = prop::sample::select(&FILES[..]);
    let dir = prop::sample::select(&DIRS[..]);
    let slot = 0..SLOTS;
    prop_oneof![
        4 => (file.clone(), data()).prop_map(|(f, d)| Op::Create(f, d)),
        1 => (file.clone(), data()).prop_map(|(f, d)| Op::Append(f, d)),
        2 => (slot.clone(), file.clone()).prop_map(|(s, f)| Op::Open(s, f)),
        2 => (slot.clone(), 0..100u64, prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(s, o, d)| Op::WriteAt(s, o, d)),
        2 => slot.prop_map(Op::Close),
        4 => file.clone().prop_map(Op::Unlink),
        3 => (file.clone(), file).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => dir.clone().prop_map(Op::Mkdir),
        1 => dir.clone().prop_map(Op::Rmdir),
        1 => (dir.clone(), dir).prop_map(|(a, b)| Op::RenameDir(a, b)),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File(usize),
    Dir,
}

/// The reference: names to file identities, and each identity's content.
#[derive(Default)]
struct Model {
    names: BTreeMap<String, Node>,
    contents: Vec<Vec<u8>>,
    slots: [Option<usize>; SLOTS],
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

impl Model {
    fn parent_ok(&self, path: &str) -> bool {
        let p = parent(path);
        p.is_empty() || self.names.get(p) == Some(&Node::Dir)
    }

    fn file(&self, path: &str) -> Option<usize> {
        match self.names.get(path) {
            Some(Node::File(id)) => Some(*id),
            _ => None,
        }
    }

    fn new_file(&mut self, path: &str) -> usize {
        self.contents.push(Vec::new());
        let id = self.contents.len() - 1;
        self.names.insert(path.to_string(), Node::File(id));
        id
    }

    fn children(&self, dir: &str) -> usize {
        self.names.keys().filter(|p| parent(p) == dir).count()
    }

    /// Apply `op`; whether it succeeds.
    fn apply(&mut self, op: &Op) -> bool {
        match op {
            Op::Create(f, data) => {
                if !self.parent_ok(f) || self.names.get(*f) == Some(&Node::Dir) {
                    return false;
                }
                let id = self.file(f).unwrap_or_else(|| self.new_file(f));
                self.contents[id] = data.clone();
                true
            }
            Op::Append(f, data) => match self.file(f) {
                Some(id) => {
                    self.contents[id].extend_from_slice(data);
                    true
                }
                None => false,
            },
            Op::Open(slot, f) => {
                if self.slots[*slot].is_some() {
                    return true; // Not run: the slot is taken.
                }
                if !self.parent_ok(f) || self.names.get(*f) == Some(&Node::Dir) {
                    return false;
                }
                let id = self.file(f).unwrap_or_else(|| self.new_file(f));
                self.slots[*slot] = Some(id);
                true
            }
            Op::WriteAt(slot, offset, data) => {
                if let Some(id) = self.slots[*slot] {
                    let content = &mut self.contents[id];
                    let end = *offset as usize + data.len();
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[*offset as usize..end].copy_from_slice(data);
                }
                true
            }
            Op::Close(slot) => {
                self.slots[*slot] = None;
                true
            }
            Op::Unlink(f) => self.file(f).is_some() && self.names.remove(*f).is_some(),
            Op::Rename(from, to) => {
                let Some(id) = self.file(from) else {
                    return false;
                };
                if !self.parent_ok(to) || self.names.get(*to) == Some(&Node::Dir) {
                    return false;
                }
                if from != to {
                    self.names.remove(*from);
                    self.names.insert(to.to_string(), Node::File(id));
                }
                true
            }
            Op::Mkdir(d) => {
                if self.names.contains_key(*d) {
                    return false;
                }
                self.names.insert(d.to_string(), Node::Dir);
                true
            }
            Op::Rmdir(d) => {
                if self.names.get(*d) != Some(&Node::Dir) || self.children(d) > 0 {
                    return false;
                }
                self.names.remove(*d);
                true
            }
            Op::RenameDir(from, to) => {
                if self.names.get(*from) != Some(&Node::Dir) {
                    return false;
                }
                if from == to {
                    return true;
                }
                match self.names.get(*to) {
                    Some(Node::File(_)) => return false,
                    Some(Node::Dir) if self.children(to) > 0 => return false,
                    _ => {}
                }
                let moved: Vec<(String, Node)> = self
                    .names
                    .iter()
                    .filter(|(p, _)| *p == from || p.starts_with(&format!("{from}/")))
                    .map(|(p, n)| (p.clone(), n.clone()))
                    .collect();
                for (p, _) in &moved {
                    self.names.remove(p);
                }
                for (p, n) in moved {
                    self.names.insert(format!("{to}{}", &p[from.len()..]), n);
                }
                true
            }
        }
    }

    /// What the tree must hold: files with their content, folders with `None`.
    fn tree(&self) -> BTreeMap<String, Option<Vec<u8>>> {
        self.names
            .iter()
            .map(|(p, n)| match n {
                Node::File(id) => (p.clone(), Some(self.contents[*id].clone())),
                Node::Dir => (p.clone(), None),
            })
            .collect()
    }
}

/// Run `op` in the mount under `root`.
fn run(root: &Path, handles: &mut HashMap<usize, File>, op: &Op) -> std::io::Result<()> {
    let at = |p: &str| root.join(p);
    let result: std::io::Result<()> = match op {
        Op::Create(f, data) => File::create(at(f)).and_then(|mut file| file.write_all(data)),
        Op::Append(f, data) => OpenOptions::new()
            .append(true)
            .open(at(f))
            .and_then(|mut file| file.write_all(data)),
        Op::Open(slot, f) => {
            if handles.contains_key(slot) {
                return Ok(());
            }
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(at(f))
                .map(|file| {
                    handles.insert(*slot, file);
                })
        }
        Op::WriteAt(slot, offset, data) => match handles.get(slot) {
            Some(file) => file.write_all_at(data, *offset),
            None => Ok(()),
        },
        Op::Close(slot) => {
            handles.remove(slot);
            Ok(())
        }
        Op::Unlink(f) => std::fs::remove_file(at(f)),
        Op::Rename(from, to) => {
            if !at(from).is_file() {
                Err(std::io::ErrorKind::NotFound.into())
            } else {
                std::fs::rename(at(from), at(to))
            }
        }
        Op::Mkdir(d) => std::fs::create_dir(at(d)),
        Op::Rmdir(d) => std::fs::remove_dir(at(d)),
        Op::RenameDir(from, to) => {
            if !at(from).is_dir() {
                Err(std::io::ErrorKind::NotFound.into())
            } else {
                std::fs::rename(at(from), at(to))
            }
        }
    };
    result
}

/// The tree under `root` as the mount shows it.
fn mount_tree(root: &Path) -> std::io::Result<BTreeMap<String, Option<Vec<u8>>>> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, Option<Vec<u8>>>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if entry.file_type()?.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out)?;
            } else {
                let body = std::fs::read(&path)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("read {rel}: {e}")))?;
                out.insert(rel, Some(body));
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// The tree under the server folder `folder` (S3 listing: dotfiles included).
fn server_tree(h: &Harness, folder: &str) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut queue = vec![folder.to_string()];
    while let Some(dir) = queue.pop() {
        for entry in h.block_on(h.api.list_folder_s3(&dir)).unwrap() {
            match entry {
                S3Entry::Folder(path) => {
                    out.insert(path[folder.len() + 1..].to_string(), None);
                    queue.push(path);
                }
                S3Entry::Object(object) => {
                    // Gone between the listing and the read: the tree is still changing.
                    let body = h.block_on(async {
                        let mut stream = h.api.get_object(&object.path, None).await.ok()?;
                        let mut body = Vec::new();
                        while let Some(chunk) = stream.next().await {
                            body.extend_from_slice(&chunk.ok()?);
                        }
                        Some(body)
                    });
                    let body = body.unwrap_or_else(|| b"<vanished while read>".to_vec());
                    out.insert(object.path[folder.len() + 1..].to_string(), Some(body));
                }
            }
        }
    }
    out
}

fn describe(tree: &BTreeMap<String, Option<Vec<u8>>>) -> Vec<String> {
    tree.iter()
        .map(|(p, c)| match c {
            None => format!("{p}/"),
            Some(c) => format!(
                "{p} ({} bytes, sum {})",
                c.len(),
                c.iter().map(|&b| b as u64).sum::<u64>()
            ),
        })
        .collect()
}

/// Run `ops` in a fresh folder `name` of the mount, then compare the mount's and the server's
/// trees with the model's.
fn check_case(h: &Harness, personal: &Path, name: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    let root: PathBuf = personal.join(name);
    std::fs::create_dir(&root).unwrap();
    let mut model = Model::default();
    let mut handles = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let expected = model.apply(op);
        let got = run(&root, &mut handles, op);
        prop_assert_eq!(
            got.is_ok(),
            expected,
            "step {} {:?}: {:?}",
            i,
            op,
            got.err()
        );
    }
    drop(handles);
    let want = model.tree();
    let seen = mount_tree(&root).map_err(|e| TestCaseError::fail(format!("walk: {e}")))?;
    prop_assert_eq!(describe(&seen), describe(&want), "the mount's tree");
    // Background work (uploads after `release`, write-back, renames) ends within
    // seconds; then the server must hold the model's tree, and keep holding it.
    let folder = format!("personal-files/{name}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server_tree(h, &folder) != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    prop_assert_eq!(
        describe(&server_tree(h, &folder)),
        describe(&want),
        "the server's tree"
    );
    std::thread::sleep(Duration::from_millis(700));
    let later = server_tree(h, &folder);
    if later != want {
        return Err(TestCaseError::fail(format!(
            "the server's tree changed after it matched: {:?}, expected {:?}",
            describe(&later),
            describe(&want)
        )));
    }
    Ok(())
}

/// Random sequences; `CEC_ORDER_CASES` raises the count when hunting a rare failure.
fn check_mode(args: &[&str], cases: u32) {
    let cases = std::env::var("CEC_ORDER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let h = Harness::start();
    let m = h.mount("mnt", args);
    let personal = h.personal(&m);
    let case = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        case.set(case.get() + 1);
        check_case(&h, &personal, &format!("case-{}", case.get()), &ops)
    });
    if let Err(e) = result {
        panic!("{e}\n---- mount log ----\n{}", m.log_text());
    }
}

/// Replay a fixed sequence `times` times, each in a fresh folder (the races it once lost are
/// timing-dependent).
fn replay(args: &[&str], ops: &[Op], times: usize) {
    let h = Harness::start();
    let m = h.mount("mnt", args);
    let personal = h.personal(&m);
    for i in 0..times {
        if let Err(e) = check_case(&h, &personal, &format!("replay-{i}"), ops) {
            panic!("replay {i}: {e}\n---- mount log ----\n{}", m.log_text());
        }
    }
}

#[test]
fn changes_of_a_name_reach_the_server_in_order() {
    check_mode(&[], 40);
}

#[test]
fn changes_of_a_name_reach_the_server_in_order_with_write_back() {
    check_mode(&["--write-back", "0"], 40);
}

/// The names on the server in `folder` (dotfiles included).
fn server_names(h: &Harness, folder: &str) -> Vec<String> {
    server_tree(h, folder).into_keys().collect()
}

#[test]
fn empty_files_created_closed_and_unlinked_at_once_stay_deleted() {
    let h = Harness::start();
    for (name, args) in [("default", &[][..]), ("wb", &["--write-back", "0"][..])] {
        let m = h.mount(name, args);
        let dir = h.personal(&m).join(name);
        std::fs::create_dir(&dir).unwrap();
        for i in 0..20 {
            let path = dir.join(format!("g{i}"));
            drop(
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .unwrap(),
            );
            std::fs::remove_file(&path).unwrap();
        }
        std::thread::sleep(Duration::from_secs(2));
        let left = server_names(&h, &format!("personal-files/{name}"));
        assert!(left.is_empty(), "{name}: deleted files came back: {left:?}");
        let listed: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(listed.is_empty(), "{name}: the mount lists {listed:?}");
    }
}

#[test]
fn git_commits_leave_no_lock_files_behind() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let repo = h.personal(&m).join("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = "git -c user.name=t -c user.email=t@e -c init.defaultBranch=main";
    sh(&repo, &format!("{git} init -q ."));
    for i in 0..3 {
        std::fs::write(repo.join(format!("f{i}")), format!("{i}\n")).unwrap();
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{git} add -A && {git} commit -q -m c{i} 2>&1"))
            .current_dir(&repo)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && !text.contains("cannot lock"),
            "commit {i}: {text}"
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let locks: Vec<String> = server_names(&h, "personal-files/repo/.git")
        .into_iter()
        .filter(|p| p.ends_with(".lock") || p.contains("tmp_obj"))
        .collect();
    assert!(locks.is_empty(), "left on the server: {locks:?}");
    let status = sh(&repo, &format!("{git} status --porcelain"));
    assert!(status.is_empty(), "git status: {status}");
}

/// `n` bytes that differ from one call to the next (`seed`).
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The sequence, shrunk by the random test, that once showed `.c` in a listing after it had
/// been renamed over `a` in the background while `a` was open (a listing fetched while the
/// rename's delete was under way was cached; issue 22).
#[test]
fn a_dotfile_renamed_over_an_open_file_leaves_no_phantom_name() {
    use Op::*;
    let ops = vec![
        Append("d/x", bytes(43, 1)),
        Unlink("e/x"),
        Unlink("b"),
        Rename("e/x", "b"),
        Create("a", bytes(32_912, 2)),
        Create("b", Vec::new()),
        WriteAt(1, 30, bytes(18, 3)),
        Mkdir("e"),
        Close(1),
        Unlink(".c"),
        RenameDir("e", "d"),
        Rename("e/x", "b"),
        Open(0, "a"),
        Create(".c", bytes(57, 4)),
        Mkdir("d"),
        Create("d/x", bytes(37_750, 5)),
        WriteAt(1, 90, bytes(6, 6)),
        RenameDir("d", "d"),
        Create("d/.y", bytes(11, 7)),
        Rmdir("d"),
        Unlink("d/x"),
        Append("d/x", bytes(24_758, 8)),
        Unlink("e/x"),
        Unlink("b"),
        Unlink("e/x"),
        WriteAt(1, 33, bytes(29, 9)),
        Rename("a", "a"),
        Rename(".c", "a"),
        WriteAt(1, 17, bytes(8, 10)),
        Close(0),
        WriteAt(0, 30, bytes(10, 11)),
        Rename("b", "d/.y"),
    ];
    replay(&[], &ops, 8);
}

/// The start of the sequence after which a read in write-back mode once answered `EIO`: a
/// dotfile kept open while it is truncated by another open, unlinked and written again
/// through the kept handle, folders renamed and made again around it.
#[test]
fn a_dotfile_written_after_its_unlink_in_write_back_reads_back_everywhere() {
    use Op::*;
    let ops = vec![
        Mkdir("e"),
        Close(0),
        WriteAt(0, 55, bytes(10, 1)),
        Close(1),
        Unlink("a"),
        WriteAt(1, 52, bytes(25, 2)),
        Open(0, ".c"),
        Mkdir("d"),
        Unlink("d/x"),
        Open(1, "e/x"),
        Mkdir("e"),
        Create(".c", bytes(61, 3)),
        Append("a", Vec::new()),
        Unlink(".c"),
        Rmdir("e"),
        Rename("a", "e/x"),
        RenameDir("e", "d"),
        Append(".c", Vec::new()),
        WriteAt(0, 83, bytes(30, 4)),
        Unlink("d/.y"),
        Mkdir("e"),
        Create("d/.y", bytes(1_024, 5)),
        Rename("d/.y", "e/x"),
        WriteAt(1, 10, bytes(20, 6)),
        Create(".c", bytes(40, 7)),
        Rename(".c", "d/.y"),
        RenameDir("d", "e"),
        Close(0),
        WriteAt(1, 0, bytes(5, 8)),
    ];
    replay(&["--write-back", "0"], &ops, 8);
}

/// Found by the random test in write-back mode: a file written into a folder, the folder
/// renamed over an emptied one, then the file truncated by a new `open(O_TRUNC)` at its new
/// path. The server once kept the written bytes and stored the truncation as a conflict copy
/// (the mount's own pending upload was taken for someone else's version).
#[test]
fn a_file_truncated_after_its_folder_moved_in_write_back_is_no_conflict() {
    use Op::*;
    let ops = vec![
        Mkdir("d"),
        Create("d/x", Vec::new()),
        Unlink("d/x"),
        Mkdir("e"),
        Create("e/x", bytes(28, 1)),
        RenameDir("e", "d"),
        Create("d/x", Vec::new()),
    ];
    replay(&["--write-back", "0"], &ops, 20);
}

/// Found by the random test: a name unlinked in a folder, then a folder holding that name
/// renamed over it. The moved file was not found at its new path (the absence seen before
/// the move was still believed), so renaming it failed with ENOENT.
#[test]
fn a_name_unlinked_then_brought_back_by_a_folder_rename_is_found() {
    use Op::*;
    let ops = vec![
        Mkdir("d"),
        Open(1, "d/.y"),
        Mkdir("e"),
        Create("e/x", bytes(40, 1)),
        Create("d/x", bytes(40, 2)),
        Unlink("e/x"),
        RenameDir("d", "e"),
        WriteAt(1, 58, bytes(7, 3)),
        Rename("e/x", "b"),
    ];
    replay(&[], &ops, 5);
}
