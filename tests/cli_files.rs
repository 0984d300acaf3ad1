//! `cec ls / mkdir / mv / cp / rm / restore / tools hash` against cells-emu, through the real
//! binary with a PAT in `CEC_TOKEN` (never on the command line): outputs, JSON, exit codes
//! (0 ok, 1 error, 2 usage, 3 not found), recycle bin and restore, `%` wildcard deletes,
//! folder copy and move.

mod common;

use std::path::Path;

use cec::api::CellsApi;
use common::*;

fn no_token_in(ctx: &CliCtx, r: &Run) {
    assert!(
        !r.all().contains(&ctx.token),
        "the token leaked in the output"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_lists_workspaces_folders_and_checks_existence() {
    let ctx = CliCtx::new().await;
    ctx.put("personal-files/docs/a.txt", b"hello").await;
    ctx.put("personal-files/docs/été.md", b"").await;

    let r = ctx.ok(&["ls"]).await;
    assert!(r.stdout.contains("personal-files"), "{}", r.stdout);
    assert!(r.stdout.contains("common-files"), "{}", r.stdout);
    assert!(r.stdout.starts_with("Listing "), "{}", r.stdout);
    no_token_in(&ctx, &r);

    let r = ctx.ok(&["ls", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"personal-files") && names.contains(&"scratch"));

    let r = ctx.ok(&["ls", "cells://personal-files/docs"]).await;
    assert!(
        r.stdout.contains("Found 3 nodes at personal-files/docs"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("a.txt") && r.stdout.contains("été.md"));

    let r = ctx.ok(&["ls", "-r", "personal-files"]).await;
    assert_eq!(r.stdout.trim(), "personal-files/docs/");

    let r = ctx.ok(&["ls", "--json", "personal-files/docs"]).await;
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let file = v
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "a.txt")
        .expect("a.txt listed");
    assert_eq!(file["size"], 5);
    assert_eq!(file["type"], "File");
    assert_eq!(
        file["hash"].as_str().unwrap(),
        cec::hash::block_hash(b"hello")
    );
    assert!(!file["uuid"].as_str().unwrap().is_empty());

    let r = ctx.ok(&["ls", "-d", "personal-files/docs/a.txt"]).await;
    assert!(
        r.stdout.contains(&cec::hash::block_hash(b"hello")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("INTERNAL HASH"), "{}", r.stdout);

    let r = ctx
        .ok(&[
            "ls",
            "--format",
            "{{.Name}};{{.SizeBytes}};{{.Type}}",
            "personal-files/docs",
        ])
        .await;
    let mut lines: Vec<&str> = r.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["a.txt;5;File", "été.md;0;File"]);

    let r = ctx.ok(&["ls", "-f", "personal-files/docs/a.txt"]).await;
    assert_eq!(r.stdout.trim(), "true");
    let r = ctx.cec(&["ls", "-f", "personal-files/nope"]).await;
    assert_eq!(r.stdout.trim(), "false");
    assert_eq!(r.code(), 3);
    let r = ctx.cec(&["ls", "personal-files/nope"]).await;
    assert_eq!(r.code(), 3, "{}", r.all());
    let r = ctx.cec(&["ls", "-d", "-r", "personal-files"]).await;
    assert_eq!(r.code(), 2, "{}", r.all());
    let r = ctx.cec(&["ls", "--bogus"]).await;
    assert_eq!(r.code(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn mkdir_creates_folders_and_parents() {
    let ctx = CliCtx::new().await;
    ctx.ok(&["mkdir", "personal-files/one"]).await;
    assert!(ctx.exists("personal-files/one").await);
    // An existing folder is not an error (the official client prints "nothing to do").
    let r = ctx.cec(&["mkdir", "personal-files/one"]).await;
    assert_eq!(r.code(), 0, "existing folder without -p: {}", r.all());
    assert!(r.all().contains("already exists"), "{}", r.all());
    ctx.ok(&["mkdir", "-p", "personal-files/one"]).await;
    // A file in the way still is.
    ctx.put("personal-files/afile", b"x").await;
    let r = ctx.cec(&["mkdir", "personal-files/afile"]).await;
    assert_eq!(r.code(), 1, "a file at the path: {}", r.all());
    let r = ctx.cec(&["mkdir", "personal-files/x/y/z"]).await;
    assert_eq!(r.code(), 3, "missing parent without -p: {}", r.all());
    assert!(!ctx.exists("personal-files/x").await);
    ctx.ok(&[
        "mkdir",
        "-p",
        "cells//personal-files/x/y/z",
        "personal-files/ü/ñ",
    ])
    .await;
    for p in ["personal-files/x/y/z", "personal-files/ü/ñ"] {
        let n = ctx.api().stat(p).await.unwrap().expect("created");
        assert!(n.is_folder());
    }
    let r = ctx.cec(&["mkdir", "nosuchws/a"]).await;
    assert_eq!(r.code(), 3, "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn mv_and_cp_handle_files_and_folders() {
    let ctx = CliCtx::new().await;
    ctx.put("personal-files/src/f1.txt", b"one").await;
    ctx.put("personal-files/src/sub/f2.txt", b"two").await;
    ctx.ok(&["mkdir", "personal-files/dest"]).await;

    // Copy a folder into an existing folder.
    ctx.ok(&["cp", "personal-files/src", "personal-files/dest"])
        .await;
    assert!(ctx.exists("personal-files/dest/src/sub/f2.txt").await);
    assert!(ctx.exists("personal-files/src/sub/f2.txt").await);
    // Copy a file to a new name.
    ctx.ok(&["cp", "personal-files/src/f1.txt", "personal-files/copy.txt"])
        .await;
    assert!(ctx.exists("personal-files/copy.txt").await);
    // Rename a folder.
    ctx.ok(&["mv", "personal-files/src", "personal-files/renamed"])
        .await;
    assert!(!ctx.exists("personal-files/src").await);
    assert!(ctx.exists("personal-files/renamed/sub/f2.txt").await);
    // Move a file into a folder.
    ctx.ok(&["mv", "personal-files/copy.txt", "personal-files/dest"])
        .await;
    assert!(ctx.exists("personal-files/dest/copy.txt").await);
    assert!(!ctx.exists("personal-files/copy.txt").await);
    // Missing source: exit 3; existing file target: exit 1.
    let r = ctx
        .cec(&["mv", "personal-files/ghost", "personal-files/dest"])
        .await;
    assert_eq!(r.code(), 3, "{}", r.all());
    let r = ctx
        .cec(&[
            "cp",
            "personal-files/renamed/f1.txt",
            "personal-files/dest/copy.txt",
        ])
        .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    let r = ctx.cec(&["mv", "personal-files/renamed"]).await;
    assert_eq!(r.code(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_uses_the_recycle_bin_wildcards_and_restore() {
    let ctx = CliCtx::new().await;
    ctx.put("personal-files/trash/keep.txt", b"k").await;
    ctx.put("personal-files/trash/a.txt", b"a").await;
    ctx.put("personal-files/w/1.txt", b"1").await;
    ctx.put("personal-files/w/2.txt", b"2").await;
    ctx.put("personal-files/w/d/3.txt", b"3").await;

    // Default: to the recycle bin, restorable.
    ctx.ok(&["rm", "-f", "personal-files/trash/a.txt"]).await;
    assert!(!ctx.exists("personal-files/trash/a.txt").await);
    assert!(ctx.exists("personal-files/recycle_bin/a.txt").await);
    ctx.ok(&["restore", "personal-files/recycle_bin/a.txt"])
        .await;
    assert!(ctx.exists("personal-files/trash/a.txt").await);
    assert!(!ctx.exists("personal-files/recycle_bin/a.txt").await);

    // Wildcard: every child, the folder itself stays.
    ctx.ok(&["rm", "-f", "personal-files/w/%"]).await;
    assert!(ctx.exists("personal-files/w").await);
    let children = ctx.api().list_folder("personal-files/w").await.unwrap();
    assert!(children.is_empty(), "{children:?}");
    assert!(ctx.exists("personal-files/recycle_bin/d/3.txt").await);
    // Restore by original path.
    ctx.ok(&["restore", "personal-files/w/d"]).await;
    assert!(ctx.exists("personal-files/w/d/3.txt").await);

    // Permanently: not in the bin.
    ctx.ok(&["rm", "-f", "-p", "personal-files/trash/keep.txt"])
        .await;
    assert!(!ctx.exists("personal-files/trash/keep.txt").await);
    assert!(!ctx.exists("personal-files/recycle_bin/keep.txt").await);

    // A wildcard at the workspace root never deletes the recycle bin.
    ctx.ok(&["rm", "-f", "personal-files/%"]).await;
    assert!(ctx.exists("personal-files/recycle_bin").await);
    assert!(!ctx.exists("personal-files/trash").await);

    // Not found: exit 3, nothing else happens.
    let r = ctx.cec(&["rm", "-f", "personal-files/nothing-here"]).await;
    assert_eq!(r.code(), 3, "{}", r.all());
    let r = ctx
        .cec(&["restore", "personal-files/recycle_bin/never"])
        .await;
    assert_eq!(r.code(), 3, "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_hash_matches_the_servers_internal_hash() {
    let ctx = CliCtx::new().await;
    let data: Vec<u8> = (0..(10 * 1024 * 1024 + 4321))
        .map(|i| (i % 253) as u8)
        .collect();
    let local = ctx.home.path().join("big.bin");
    std::fs::write(&local, &data).unwrap();
    ctx.put("personal-files/big.bin", &data).await;
    let r = ctx
        .ok(&["tools", "hash", "--file", local.to_str().unwrap()])
        .await;
    let node = ctx
        .api()
        .stat("personal-files/big.bin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(r.stdout.trim()), node.cells_hash());
    let r = ctx
        .cec(&["tools", "hash", "--file", "/definitely/not/here"])
        .await;
    assert_eq!(r.code(), 3);
    let _ = Path::new("/");
}

/// `PUT /a/share/link` for one node, as `cec share` and the web UI do; returns `LinkUrl`.
async fn make_public_link(url: &str, token: &str, node_uuid: &str) -> String {
    let body = serde_json::json!({"ShareLink": {"Label": "test link", "RootNodes": [{"Uuid": node_uuid}],
        "Permissions": ["Preview", "Download"], "ViewTemplateName": "pydio_unique_strip"}});
    let v: serde_json::Value = reqwest::Client::new()
        .put(format!("{url}/a/share/link"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    v["LinkUrl"].as_str().expect("LinkUrl").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_long_shows_tags_and_a_shared_marker() {
    // Issue 25: "`cec ls --long` can show tags and a shared marker".
    let ctx = CliCtx::new().await;
    ctx.put("personal-files/docs/invoice.pdf", b"pdf").await;
    ctx.put("personal-files/docs/photo.png", b"png").await;
    ctx.put("personal-files/docs/plain.txt", b"txt").await;
    let api = ctx.api();
    let uuid = |p: &'static str| {
        let api = api.clone();
        async move { api.stat(p).await.unwrap().unwrap().uuid }
    };
    let invoice = uuid("personal-files/docs/invoice.pdf").await;
    let photo = uuid("personal-files/docs/photo.png").await;
    api.set_user_meta(
        &invoice,
        "usermeta-tags",
        Some(&serde_json::json!("invoice,2026")),
    )
    .await
    .unwrap();
    make_public_link(&ctx.server.url, &ctx.token, &photo).await;

    let r = ctx.ok(&["ls", "--long", "personal-files/docs"]).await;
    let line = |name: &str| {
        r.stdout
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("no {name} in {}", r.stdout))
            .to_string()
    };
    assert!(r.stdout.contains("TAGS"), "{}", r.stdout);
    assert!(line("invoice.pdf").contains("invoice,2026"), "{}", r.stdout);
    assert!(!line("invoice.pdf").contains("shared"), "{}", r.stdout);
    assert!(line("photo.png").contains("shared"), "{}", r.stdout);
    assert!(!line("plain.txt").contains("shared"), "{}", r.stdout);
    let r2 = ctx.ok(&["ls", "-l", "personal-files/docs"]).await;
    assert_eq!(r2.stdout, r.stdout);

    let r = ctx.ok(&["ls", "--json", "personal-files/docs"]).await;
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let by_name = |n: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {v}"))
            .clone()
    };
    assert_eq!(
        by_name("invoice.pdf")["tags"],
        serde_json::json!(["invoice", "2026"])
    );
    assert_eq!(by_name("invoice.pdf")["shared"], false);
    assert_eq!(by_name("photo.png")["shared"], true);
    assert_eq!(by_name("plain.txt")["tags"], serde_json::json!([]));

    let r = ctx
        .cec(&["ls", "--long", "--json", "personal-files/docs"])
        .await;
    assert_eq!(r.code(), 2, "{}", r.all());
}
