//! What a hostile server cannot make the client do (issue 23): `cec scp` never writes or
//! removes anything outside its target whatever names the server sends (`..` as the node
//! downloaded, `.`, `..`, `a/b`, NUL, over 255 bytes, duplicates among children); `scp`
//! upload does not follow symbolic links inside a tree unless `-L`.
//!
//! The hostile server is `tests/hostile/mod.rs`; the upload test runs against cells-emu.

mod common;
mod hostile;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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
        BTreeSet::from(["dup".to_string(), "good".to_string()])
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
    let r = scp(&[src.to_str().unwrap(), "cells://personal-files/plain"]).await;
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
        "cells://personal-files/followed",
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
        "cells://personal-files/top",
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
