//! What a hostile server cannot make the client do (issue 23): `cec scp` never writes or
//! removes anything outside its target whatever names the server sends (`..` as the node
//! downloaded, `.`, `..`, `a/b`, NUL, over 255 bytes, duplicates among children); `scp`
//! upload does not follow symbolic links inside a tree unless `-L`; `cec ls` never prints a
//! control character raw; the mount lists only the server's names that are valid file names,
//! and the rest of the folder still lists.
//!
//! The hostile server is `tests/hostile/mod.rs`; the upload test runs against cells-emu.

mod common;
mod hostile;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cec::api::CellsApi;
use common::*;
use hostile::*;

const LONG: usize = 300;

/// A local layout: `<home>/parent/{keep.txt, target/inside.txt}`.
struct Local {
    home: tempfile::TempDir,
}

impl Local {
    fn new() -> Local {
        let home = tempfile::tempdir().unwrap();
        let target = home.path().join("parent").join("target");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(home.path().join("parent").join("keep.txt"), "keep").unwrap();
        std::fs::write(target.join("inside.txt"), "inside").unwrap();
        Local { home }
    }
    fn parent(&self) -> PathBuf {
        self.home.path().join("parent")
    }
    fn target(&self) -> PathBuf {
        self.parent().join("target")
    }
    fn names(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
    /// Everything outside the target is as it was.
    fn parent_untouched(&self) {
        assert_eq!(
            Local::names(&self.parent()),
            BTreeSet::from(["keep.txt".to_string(), "target".to_string()]),
            "something was written or removed next to the target"
        );
        assert_eq!(
            std::fs::read_to_string(self.parent().join("keep.txt")).unwrap(),
            "keep"
        );
        assert!(self.target().join("inside.txt").is_file());
    }
    async fn scp(&self, server: &HostileServer, args: &[&str]) -> Run {
        let mut cmd = cec_cmd(self.home.path());
        cmd.env("CEC_URL", &server.url)
            .env("CEC_TOKEN", "any-token")
            .arg("scp")
            .arg("--no-progress")
            .args(args);
        run(cmd).await
    }
}

/// `stat` of `ws/evil` answers a node named `..`; its listing holds one file `payload`.
fn dotdot_server(kind: &'static str) -> impl Fn(&Request) -> Option<Response> + Send + Sync {
    move |req| {
        if req.stat_path() == Some("ws/evil") {
            return Some(stat_reply(tree_node("ws/..", kind, 7)));
        }
        if req.bulk_pattern().as_deref() == Some("ws/evil/*") {
            return Some(bulk_reply(vec![tree_node("ws/evil/payload", "LEAF", 7)]));
        }
        if req.s3_get_key().is_some() {
            return Some(Response::bytes(200, "application/octet-stream", "PAYLOAD"));
        }
        None
    }
}

#[tokio::test]
async fn scp_download_of_a_file_named_dotdot_removes_nothing_above_the_target() {
    // SEMANTICS (issue 23): "a removal never reaches above the target".
    let server = HostileServer::start(dotdot_server("LEAF")).await;
    let local = Local::new();
    let target = local.target();
    let r = local
        .scp(
            &server,
            &["--force", "cells://ws/evil", target.to_str().unwrap()],
        )
        .await;
    assert_ne!(r.code(), 0, "{}", r.all());
    assert!(
        r.stderr.contains("invalid name \"..\""),
        "the error names the bad name: {}",
        r.stderr
    );
    local.parent_untouched();
}

#[tokio::test]
async fn scp_download_of_a_folder_named_dotdot_writes_nothing_above_the_target() {
    let server = HostileServer::start(dotdot_server("COLLECTION")).await;
    for flag in ["--force", "--update"] {
        let local = Local::new();
        let target = local.target();
        let r = local
            .scp(
                &server,
                &[flag, "cells://ws/evil", target.to_str().unwrap()],
            )
            .await;
        assert_ne!(r.code(), 0, "{flag}: {}", r.all());
        assert!(r.stderr.contains("invalid name \"..\""), "{}", r.stderr);
        local.parent_untouched();
        assert_eq!(
            Local::names(&target),
            BTreeSet::from(["inside.txt".to_string()])
        );
    }
}

#[tokio::test]
async fn scp_download_refuses_invalid_child_names_and_keeps_the_valid_ones() {
    let long = format!("ws/evil/{}", "n".repeat(LONG));
    let children = vec![
        tree_node("ws/evil/good", "LEAF", 4),
        // Valid, and long: its temporary download name must stay within NAME_MAX too.
        tree_node(&format!("ws/evil/{}", "l".repeat(250)), "LEAF", 2),
        tree_node("ws/evil/.", "COLLECTION", 0),
        tree_node("ws/evil/..", "LEAF", 2),
        tree_node("ws/evil/a/b", "LEAF", 2),
        tree_node("ws/evil/x\0y", "LEAF", 2),
        tree_node(&long, "LEAF", 2),
        tree_node("ws/evil/dup", "LEAF", 3),
        // Another path, the same local name.
        tree_node("ws/other/dup", "LEAF", 4),
    ];
    let server = HostileServer::start(move |req| {
        if req.stat_path() == Some("ws/evil") {
            return Some(stat_reply(tree_node("ws/evil", "COLLECTION", 0)));
        }
        if req.bulk_pattern().as_deref() == Some("ws/evil/*") {
            return Some(bulk_reply(children.clone()));
        }
        if let Some(pattern) = req.bulk_pattern() {
            // Whatever folder the client goes into, it holds a file named `..`.
            let folder = pattern.trim_end_matches("/*");
            return Some(bulk_reply(vec![tree_node(
                &format!("{folder}/.."),
                "LEAF",
                2,
            )]));
        }
        let body: &str = match req.s3_get_key()? {
            "ws/evil/good" => "good",
            "ws/evil/dup" => "one",
            "ws/other/dup" => "TWO!",
            _ => "xx",
        };
        Some(Response::bytes(200, "application/octet-stream", body))
    })
    .await;
    let local = Local::new();
    let target = local.target();
    let r = local
        .scp(&server, &["cells://ws/evil", target.to_str().unwrap()])
        .await;
    assert_eq!(r.code(), 1, "refused names count as failures: {}", r.all());
    for shown in [
        "\"..\"",
        "\".\"",
        "\"a/b\"",
        "\"x\\0y\"",
        "(300 bytes)",
        "twice",
    ] {
        assert!(
            r.stderr.contains(shown),
            "{shown} not reported: {}",
            r.stderr
        );
    }
    local.parent_untouched();
    let evil = target.join("evil");
    assert_eq!(
        Local::names(&evil),
        BTreeSet::from(["dup".to_string(), "good".to_string(), "l".repeat(250)])
    );
    assert_eq!(
        std::fs::read_to_string(evil.join("l".repeat(250))).unwrap(),
        "xx"
    );
    assert_eq!(std::fs::read_to_string(evil.join("good")).unwrap(), "good");
    assert_eq!(std::fs::read_to_string(evil.join("dup")).unwrap(), "one");
}

// ----- upload: symbolic links -----

fn remote_tree<'a>(
    api: &'a dyn CellsApi,
    root: &'a str,
) -> futures::future::BoxFuture<'a, BTreeSet<String>> {
    Box::pin(async move {
        let mut out = BTreeSet::new();
        for child in api.list_folder(root).await.unwrap() {
            let rel = child.path.clone();
            if child.is_folder() {
                out.extend(remote_tree(api, &child.path).await);
                out.insert(format!("{rel}/"));
            } else {
                out.insert(rel);
            }
        }
        out
    })
}

#[tokio::test]
async fn scp_upload_skips_links_inside_the_tree_unless_follow_links() {
    let server = spawn_emulator().await;
    let token = mint_pat(&server, "alice");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Outside the tree: what links point to.
    std::fs::create_dir_all(h.join("secret-dir")).unwrap();
    std::fs::write(h.join("secret-dir").join("id_rsa"), "KEY").unwrap();
    std::fs::write(h.join("secret.txt"), "SECRET").unwrap();
    let src = h.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "a").unwrap();
    std::fs::write(src.join("sub").join("b.txt"), "b").unwrap();
    std::os::unix::fs::symlink(h.join("secret-dir"), src.join("link-dir")).unwrap();
    std::os::unix::fs::symlink(h.join("secret.txt"), src.join("link-file")).unwrap();
    std::os::unix::fs::symlink("..", src.join("sub").join("loop")).unwrap();
    std::os::unix::fs::symlink(&src, h.join("src-link")).unwrap();
    let scp = |args: &[&str]| {
        let mut cmd = cec_cmd(h);
        cmd.env("CEC_URL", &server.url)
            .env("CEC_TOKEN", &token)
            .args(["scp", "--no-progress"])
            .args(args);
        run(cmd)
    };
    let api = api_with_token(&server, &token);
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    // Default: links inside the tree are skipped, one notice each.
    let r = scp(&[src.to_str().unwrap(), "cells://personal-files/plain/"]).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert_eq!(
        remote_tree(api.as_ref(), "personal-files/plain").await,
        set(&[
            "personal-files/plain/src/",
            "personal-files/plain/src/a.txt",
            "personal-files/plain/src/sub/",
            "personal-files/plain/src/sub/b.txt",
        ])
    );
    for link in ["link-dir", "link-file", "loop"] {
        assert_eq!(
            r.stderr
                .lines()
                .filter(|l| l.starts_with("Skipped: ") && l.contains(link))
                .count(),
            1,
            "one notice for {link}: {}",
            r.stderr
        );
    }

    // -L: followed, except the link back to a folder being walked.
    let r = scp(&[
        "-L",
        src.to_str().unwrap(),
        "cells://personal-files/followed/",
    ])
    .await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert_eq!(
        remote_tree(api.as_ref(), "personal-files/followed").await,
        set(&[
            "personal-files/followed/src/",
            "personal-files/followed/src/a.txt",
            "personal-files/followed/src/link-dir/",
            "personal-files/followed/src/link-dir/id_rsa",
            "personal-files/followed/src/link-file",
            "personal-files/followed/src/sub/",
            "personal-files/followed/src/sub/b.txt",
        ])
    );
    assert!(
        r.stderr.contains("loop") && r.stderr.contains("Skipped: "),
        "{}",
        r.stderr
    );

    // A link named on the command line is followed (as cp and scp do), under its own name.
    let r = scp(&[
        h.join("src-link").to_str().unwrap(),
        "cells://personal-files/top/",
    ])
    .await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(
        remote_tree(api.as_ref(), "personal-files/top")
            .await
            .contains("personal-files/top/src-link/a.txt")
    );

    // --help says what happens to links.
    let mut cmd = cec_cmd(h);
    cmd.args(["scp", "--help"]);
    let help = run(cmd).await;
    assert!(help.stdout.contains("--follow-links"), "{}", help.stdout);
    assert!(help.stdout.contains("Symbolic links"), "{}", help.stdout);
}

// ----- the mount's listings -----

mod injecting {
    //! A `CellsApi` over the in-memory server that adds crafted names to the listings of
    //! one folder and a workspace named `..`.
    use std::path::Path;

    use async_trait::async_trait;
    use cec::api::memory::MemoryCellsApi;
    use cec::api::*;

    pub struct Injecting {
        pub inner: MemoryCellsApi,
        pub folder: String,
        pub rest: Vec<String>,
        pub s3: Vec<S3Entry>,
    }

    fn node(path: &str, kind: NodeKind) -> Node {
        Node {
            uuid: format!("u-{}", path.len()),
            path: path.to_string(),
            kind,
            size: 1,
            mtime: 1_700_000_000,
            etag: "e".into(),
            meta: Default::default(),
        }
    }

    #[async_trait]
    impl CellsApi for Injecting {
        async fn list_workspaces(&self) -> ApiResult<Vec<Workspace>> {
            let mut all = self.inner.list_workspaces().await?;
            let mut evil = all[0].clone();
            evil.slug = "..".into();
            evil.root = node("..", NodeKind::Folder);
            all.push(evil);
            Ok(all)
        }
        async fn list_folder(&self, path: &str) -> ApiResult<Vec<Node>> {
            let mut all = self.inner.list_folder(path).await?;
            if path == self.folder {
                all.extend(self.rest.iter().map(|p| node(p, NodeKind::File)));
            }
            Ok(all)
        }
        async fn list_tree_s3(&self, path: &str, limit: usize) -> ApiResult<Option<Vec<S3Entry>>> {
            self.inner.list_tree_s3(path, limit).await
        }
        async fn list_folder_s3(&self, path: &str) -> ApiResult<Vec<S3Entry>> {
            let mut all = self.inner.list_folder_s3(path).await?;
            if path == self.folder {
                all.extend(self.s3.iter().cloned());
            }
            Ok(all)
        }
        async fn stat(&self, path: &str) -> ApiResult<Option<Node>> {
            self.inner.stat(path).await
        }
        async fn create_folders(&self, paths: &[String]) -> ApiResult<Vec<Node>> {
            self.inner.create_folders(paths).await
        }
        async fn move_nodes(&self, s: &[String], t: &str, p: bool) -> ApiResult<()> {
            self.inner.move_nodes(s, t, p).await
        }
        async fn copy_nodes(&self, s: &[String], t: &str, p: bool) -> ApiResult<()> {
            self.inner.copy_nodes(s, t, p).await
        }
        async fn delete_nodes(&self, paths: &[String], permanently: bool) -> ApiResult<()> {
            self.inner.delete_nodes(paths, permanently).await
        }
        async fn restore_nodes(&self, paths: &[String]) -> ApiResult<()> {
            self.inner.restore_nodes(paths).await
        }
        async fn head_object(&self, path: &str) -> ApiResult<ObjectInfo> {
            self.inner.head_object(path).await
        }
        async fn get_object(&self, path: &str, range: Option<ByteRange>) -> ApiResult<ByteStream> {
            self.inner.get_object(path, range).await
        }
        async fn put_object_from_file(
            &self,
            path: &str,
            source: &Path,
            size: u64,
            options: &UploadOptions,
        ) -> ApiResult<String> {
            self.inner
                .put_object_from_file(path, source, size, options)
                .await
        }
        async fn put_object(
            &self,
            path: &str,
            content: bytes::Bytes,
            options: &UploadOptions,
        ) -> ApiResult<String> {
            self.inner.put_object(path, content, options).await
        }
        async fn create_multipart(&self, path: &str, options: &UploadOptions) -> ApiResult<String> {
            self.inner.create_multipart(path, options).await
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
            self.inner
                .upload_part(path, upload_id, number, source, offset, len)
                .await
        }
        async fn complete_multipart(
            &self,
            path: &str,
            upload_id: &str,
            parts: &[(u64, String)],
        ) -> ApiResult<String> {
            self.inner.complete_multipart(path, upload_id, parts).await
        }
        async fn abort_multipart(&self, path: &str, upload_id: &str) -> ApiResult<()> {
            self.inner.abort_multipart(path, upload_id).await
        }
        async fn copy_object(&self, source: &str, target: &str) -> ApiResult<()> {
            self.inner.copy_object(source, target).await
        }
        async fn delete_object(&self, path: &str) -> ApiResult<()> {
            self.inner.delete_object(path).await
        }
    }
}

/// The names `readdir` gives for the folder `ino`.
async fn readdir_names(fs: &cec::fs::CellsFs, ino: u64) -> Vec<String> {
    let fh = fs.opendir(ino, 0).await.unwrap();
    let mut names = Vec::new();
    fs.readdir(ino, fh, 0, false, |e| {
        names.push(e.name.to_string_lossy().into_owned());
        false
    })
    .await
    .expect("the folder lists");
    fs.releasedir(ino, fh).await.unwrap();
    names
}

#[tokio::test]
async fn the_mount_lists_only_valid_names_and_the_rest_of_the_folder() {
    // SEMANTICS: "A name from the server that is not a valid file name (empty, `.`, `..`,
    // containing `/` or NUL, over 255 bytes) is not shown, with one warning per folder
    // listing; the rest of the folder lists."
    use cec::api::memory::{MemoryCellsApi, MemoryWorkspace};
    use cec::api::{ObjectInfo, S3Entry};
    use cec::fs::{CellsFs, FsOptions, ROOT_INO};
    let inner = MemoryCellsApi::new(vec![MemoryWorkspace::new("personal-files", true)]);
    inner.put_file("personal-files/dir/good.txt", b"good");
    inner.put_file("personal-files/dir/.hidden", b"dot");
    let d = "personal-files/dir";
    let object = |p: &str| {
        S3Entry::Object(ObjectInfo {
            path: p.to_string(),
            size: 1,
            etag: "e".into(),
            mtime: 1_700_000_000,
            content_type: None,
        })
    };
    let api = Arc::new(injecting::Injecting {
        inner,
        folder: d.to_string(),
        rest: vec![
            format!("{d}/."),
            format!("{d}/.."),
            format!("{d}/a/b"),
            format!("{d}/x\0y"),
            format!("{d}/{}", "n".repeat(LONG)),
        ],
        s3: vec![
            object(&format!("{d}/..")),
            object(&format!("{d}/z\0")),
            object(&format!("{d}/{}", "s".repeat(LONG))),
            S3Entry::Folder(format!("{d}/.")),
        ],
    });
    // The mount's warnings, captured (the test's runtime runs on this thread).
    let logs = Capture::default();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish(),
    );
    let cache = tempfile::tempdir().unwrap();
    let fs = CellsFs::new(api, FsOptions::new(cache.path()))
        .await
        .unwrap();

    let root = readdir_names(&fs, ROOT_INO).await;
    assert_eq!(root, vec![".", "..", "personal-files"], "root: {root:?}");
    assert_eq!(logs.count("not shown"), 1, "{}", logs.text());

    let ws = fs
        .lookup(ROOT_INO, OsStr::new("personal-files"))
        .await
        .unwrap()
        .attr
        .ino;
    let dir = fs.lookup(ws, OsStr::new("dir")).await.unwrap().attr.ino;
    let names = readdir_names(&fs, dir).await;
    assert_eq!(
        names,
        vec![".", "..", ".hidden", "good.txt"],
        "one `.` and one `..`, no invalid name, the valid ones all there"
    );
    let good = fs.lookup(dir, OsStr::new("good.txt")).await.unwrap();
    assert_eq!(good.attr.size, 4);
    // One warning for the folder's listing, not one per name.
    assert_eq!(logs.count("not shown"), 2, "{}", logs.text());
    assert!(
        logs.text().contains("9 entries not shown"),
        "{}",
        logs.text()
    );
}

/// A log writer that keeps what it is given.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

// ----- cec ls -----

#[tokio::test]
async fn ls_never_prints_control_characters_raw() {
    // Issue 23: "quote control characters on a terminal, as GNU ls does".
    let server = HostileServer::start(|req| {
        if req.stat_path() == Some("ws/dir") {
            return Some(stat_reply(tree_node("ws/dir", "COLLECTION", 0)));
        }
        if req.bulk_pattern().as_deref() == Some("ws/dir/*") {
            return Some(bulk_reply(vec![
                tree_node("ws/dir/a\nb", "LEAF", 1),
                tree_node("ws/dir/\u{1b}[31mred", "LEAF", 1),
                tree_node("ws/dir/x\0y", "LEAF", 1),
                tree_node("ws/dir/plain.txt", "LEAF", 1),
            ]));
        }
        None
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        let mut c = cec_cmd(home.path());
        c.env("CEC_URL", &server.url)
            .env("CEC_TOKEN", "any-token")
            .args(args);
        c
    };
    let raw = |r: &Run| r.stdout.contains('\u{1b}') || r.stdout.contains('\0');

    // Not a terminal: names as they are, control characters as `?` (as ls -q).
    for args in [&["ls", "ws/dir"][..], &["ls", "--raw", "ws/dir"][..]] {
        let r = run(cmd(args)).await;
        assert_eq!(r.code(), 0, "{}", r.all());
        assert!(!raw(&r), "{args:?}: {:?}", r.stdout);
        for name in ["a?b", "?[31mred", "x?y", "plain.txt"] {
            assert!(r.stdout.contains(name), "{args:?}: {name}: {:?}", r.stdout);
        }
    }

    // A terminal (script(1) gives a pty): GNU ls's default, shell-escape quoting.
    let c = cmd(&[]);
    let line = format!("{} ls ws/dir", cec_bin().display());
    let mut script = std::process::Command::new("script");
    script
        .args(["-qec", &line, "/dev/null"])
        .env_clear()
        .envs(
            c.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null());
    let r = run(script).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(!raw(&r), "{:?}", r.stdout);
    for name in [
        "'a'$'\\n''b'",
        "$'\\E''[31mred'",
        "'x'$'\\000''y'",
        "plain.txt",
    ] {
        assert!(r.stdout.contains(name), "{name}: {:?}", r.stdout);
    }
}
