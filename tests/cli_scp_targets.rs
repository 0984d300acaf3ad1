//! `cec scp` target naming as scp(1) and cp (a single source onto a new name is a copy under
//! that name; onto an existing folder, into it; a trailing `/` means a folder; an existing
//! file is replaced only with `--force`), both directions, the official client's example
//! `cec scp cells//path/to/file path/to/local/file`; and uploads that do not overwrite a
//! server file changed (or created) after scp planned the transfer, unless `--force`.

mod common;

use std::path::Path;
use std::time::Duration;

use cec::api::CellsApi;
use cells_emu::faults::RequestMatch;
use common::*;

impl CliCtx {
    async fn server_text(&self, path: &str) -> Option<String> {
        let api = self.api();
        let node = api.stat(path).await.unwrap()?;
        if node.is_folder() {
            return Some("<folder>".into());
        }
        let mut stream = api.get_object(path, None).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn slash(p: &Path) -> String {
    format!("{}/", p.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_named_as_scp_and_cp_name_them() {
    let ctx = CliCtx::new().await;
    let a = ctx.dir("a.txt");
    std::fs::write(&a, "alpha").unwrap();

    // A new name: the copy is named so (no folder).
    let r = ctx
        .ok(&["scp", "-n", s(&a), "cells://personal-files/renamed.txt"])
        .await;
    assert!(r.stderr.contains("0 folders created"), "{}", r.stderr);
    assert_eq!(
        ctx.server_text("personal-files/renamed.txt")
            .await
            .as_deref(),
        Some("alpha")
    );
    // An existing file: refused, naming --force; replaced with it.
    std::fs::write(&a, "alpha 2").unwrap();
    let r = ctx
        .cec(&["scp", "-n", s(&a), "cells://personal-files/renamed.txt"])
        .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    ctx.ok(&[
        "scp",
        "-n",
        "-f",
        s(&a),
        "cells://personal-files/renamed.txt",
    ])
    .await;
    assert_eq!(
        ctx.server_text("personal-files/renamed.txt")
            .await
            .as_deref(),
        Some("alpha 2")
    );
    // A trailing slash is a folder: created, the file lands inside.
    ctx.ok(&["scp", "-n", s(&a), "cells://personal-files/box/"])
        .await;
    assert_eq!(
        ctx.server_text("personal-files/box/a.txt").await.as_deref(),
        Some("alpha 2")
    );
    // An existing folder without the slash: into it.
    let b = ctx.dir("b.txt");
    std::fs::write(&b, "beta").unwrap();
    ctx.ok(&["scp", "-n", s(&b), "cells://personal-files/box"])
        .await;
    assert_eq!(
        ctx.server_text("personal-files/box/b.txt").await.as_deref(),
        Some("beta")
    );
    // A file with a trailing slash is not a folder.
    let r = ctx
        .cec(&["scp", "-n", s(&b), "cells://personal-files/renamed.txt/"])
        .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("not a folder"), "{}", r.stderr);
    // A folder onto a new name: the copy of the folder is named so.
    let tree = ctx.dir("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/c.txt"), "gamma").unwrap();
    ctx.ok(&["scp", "-n", s(&tree), "cells://personal-files/copy"])
        .await;
    assert_eq!(
        ctx.server_text("personal-files/copy/sub/c.txt")
            .await
            .as_deref(),
        Some("gamma")
    );
    assert!(ctx.server_text("personal-files/copy/tree").await.is_none());
    // The parent of a new name must exist.
    let r = ctx
        .cec(&["scp", "-n", s(&a), "cells://personal-files/no/such.txt"])
        .await;
    assert_eq!(r.code(), 3, "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_are_named_as_scp_and_cp_name_them() {
    let ctx = CliCtx::new().await;
    ctx.put("personal-files/path/to/file", "remote text").await;
    ctx.put("personal-files/tree/sub/c.txt", "gamma").await;
    let dl = ctx.dir("path/to/local");
    std::fs::create_dir_all(&dl).unwrap();
    let file = dl.join("file");

    // The official client's example: `cec scp cells//path/to/file path/to/local/file`.
    let r = ctx
        .ok(&["scp", "-n", "cells//personal-files/path/to/file", s(&file)])
        .await;
    assert!(r.stderr.contains("0 folders created"), "{}", r.stderr);
    assert!(file.is_file(), "not a file: {file:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "remote text");
    // Onto an existing file: refused, naming --force; replaced with it.
    std::fs::write(&file, "local edit").unwrap();
    let r = ctx
        .cec(&["scp", "-n", "cells//personal-files/path/to/file", s(&file)])
        .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "local edit");
    ctx.ok(&[
        "scp",
        "-n",
        "--force",
        "cells//personal-files/path/to/file",
        s(&file),
    ])
    .await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "remote text");
    // A relative new name in the current folder.
    let mut c = ctx.cmd(&[
        "scp",
        "-n",
        "cells://personal-files/path/to/file",
        "here.txt",
    ]);
    c.current_dir(&dl);
    let r = run(c).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert_eq!(
        std::fs::read_to_string(dl.join("here.txt")).unwrap(),
        "remote text"
    );
    // A trailing slash: a folder, created; an existing folder: into it.
    let sub = dl.join("sub");
    ctx.ok(&[
        "scp",
        "-n",
        "cells://personal-files/path/to/file",
        &slash(&sub),
    ])
    .await;
    assert_eq!(
        std::fs::read_to_string(sub.join("file")).unwrap(),
        "remote text"
    );
    let other = ctx.dir("other");
    std::fs::create_dir(&other).unwrap();
    ctx.ok(&[
        "scp",
        "-n",
        "cells://personal-files/path/to/file",
        s(&other),
    ])
    .await;
    assert!(other.join("file").is_file());
    // A file with a trailing slash is not a folder.
    let r = ctx
        .cec(&["scp", "-n", "cells://personal-files/tree", &slash(&file)])
        .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("not a folder"), "{}", r.stderr);
    // A folder onto a new name.
    let copy = ctx.dir("copy");
    ctx.ok(&["scp", "-n", "cells://personal-files/tree", s(&copy)])
        .await;
    assert_eq!(
        std::fs::read_to_string(copy.join("sub/c.txt")).unwrap(),
        "gamma"
    );
    assert!(!copy.join("tree").exists());
    // The parent of a new name must exist.
    let r = ctx
        .cec(&[
            "scp",
            "-n",
            "cells://personal-files/path/to/file",
            s(&ctx.dir("no/such/name")),
        ])
        .await;
    assert_eq!(r.code(), 3, "{}", r.all());
}

/// Start `cec` with the first PUT matching `held` delayed by 1.5 s, wait until that PUT
/// arrived (so the transfer was planned), run `meanwhile`, and wait for `cec` to end.
async fn with_change_during_upload<F, Fut, T>(
    ctx: &CliCtx,
    args: &[&str],
    held: &str,
    meanwhile: F,
) -> std::process::Output
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let faults = &ctx.server.state().faults;
    faults.add_latency(
        RequestMatch::new(Some("PUT"), held),
        Duration::from_millis(1500),
        Some(1),
    );
    let child = ctx
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cec");
    let mut arrived = false;
    for _ in 0..200 {
        if faults.rules().is_empty() {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(arrived, "the held upload never started");
    meanwhile().await;
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_does_not_overwrite_a_file_changed_since_it_was_listed() {
    let ctx = CliCtx::new().await;
    let src = ctx.dir("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), "a v1").unwrap();
    std::fs::write(src.join("b.txt"), "b v1").unwrap();
    ctx.ok(&["scp", "-n", s(&src), "cells://personal-files"])
        .await;
    // Both change here; while a.txt is being sent, someone saves b.txt on the server.
    std::fs::write(src.join("a.txt"), "a v2 local").unwrap();
    std::fs::write(src.join("b.txt"), "b v2 local").unwrap();
    let out = with_change_during_upload(
        &ctx,
        &[
            "scp",
            "-n",
            "--update",
            "--files-concurrency",
            "1",
            s(&src),
            "cells://personal-files",
        ],
        "/io/personal-files/src/a.txt",
        || ctx.put("personal-files/src/b.txt", "b: someone else's edit"),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("changed on the server"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        ctx.server_text("personal-files/src/b.txt").await.as_deref(),
        Some("b: someone else's edit"),
        "the other edit was overwritten"
    );
    assert_eq!(
        ctx.server_text("personal-files/src/a.txt").await.as_deref(),
        Some("a v2 local")
    );
    // --force means overwrite.
    ctx.ok(&["scp", "-n", "--force", s(&src), "cells://personal-files"])
        .await;
    assert_eq!(
        ctx.server_text("personal-files/src/b.txt").await.as_deref(),
        Some("b v2 local")
    );

    // A file created on the server during a fresh upload is not replaced either.
    let fresh = ctx.dir("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("x.txt"), "x").unwrap();
    std::fs::write(fresh.join("y.txt"), "y local").unwrap();
    let out = with_change_during_upload(
        &ctx,
        &[
            "scp",
            "-n",
            "--files-concurrency",
            "1",
            s(&fresh),
            "cells://personal-files",
        ],
        "/io/personal-files/fresh/x.txt",
        || ctx.put("personal-files/fresh/y.txt", "y: created meanwhile"),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("created there"), "{stderr}");
    assert_eq!(
        ctx.server_text("personal-files/fresh/y.txt")
            .await
            .as_deref(),
        Some("y: created meanwhile")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_upload_is_not_completed_over_a_change() {
    let ctx = CliCtx::new().await;
    let big = ctx.dir("big.bin");
    std::fs::write(&big, vec![1u8; 12 * 1024 * 1024]).unwrap();
    ctx.put("personal-files/big.bin", "the server's version")
        .await;
    // Planned against "the server's version"; changed while the parts are being sent.
    let args = [
        "scp",
        "-n",
        "--update",
        "--multipart-threshold",
        "1",
        "--part-size",
        "10",
        "--parts-concurrency",
        "1",
        s(&big),
        "cells://personal-files",
    ];
    let out = with_change_during_upload(&ctx, &args, "/io/personal-files/big.bin", || {
        ctx.put("personal-files/big.bin", "someone else's edit")
    })
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("changed on the server"), "{stderr}");
    assert_eq!(
        ctx.server_text("personal-files/big.bin").await.as_deref(),
        Some("someone else's edit")
    );
    // --force completes it.
    let mut force = args.to_vec();
    force.insert(2, "--force");
    ctx.ok(&force).await;
    let node = ctx
        .api()
        .stat("personal-files/big.bin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node.size, 12 * 1024 * 1024);
}
