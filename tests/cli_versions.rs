//! `cec versions`, `cec scp --version` and `cec restore --version` against cells-emu, through
//! the real binary: the listing (newest first, each field, `--json`), the download of one
//! version, and the restore of a version that keeps the replaced content as a version (and
//! leaves `restore` without `--version` to the recycle bin); and a hostile server's endless
//! or oversized version list, or one with ids that are no ids, refused or filtered.

mod common;
mod hostile;

use std::time::Duration;

use cec::api::CellsApi;
use cec::api::versions::FileVersion;
use common::*;
use futures::StreamExt;
use serde_json::Value;

const FILE: &str = "personal-files/docs/report.txt";

impl CliCtx {
    /// Wait until `path` has `n` versions (the server records them asynchronously).
    async fn versions(&self, path: &str, n: usize) -> Vec<FileVersion> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.api().list_versions(path).await.expect("versions");
            if v.len() >= n {
                assert_eq!(v.len(), n, "{v:?}");
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "{path}: {v:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn content(&self, path: &str) -> Vec<u8> {
        let mut s = self.api().get_object(path, None).await.expect("get");
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    /// Three versions of FILE ("one", "two!", "three"); their ETags, oldest first.
    async fn three_versions(&self) -> Vec<String> {
        let mut etags = Vec::new();
        for (i, c) in [&b"one"[..], b"two!", b"three"].iter().enumerate() {
            etags.push(self.put(FILE, c).await);
            self.versions(FILE, i + 1).await;
        }
        etags
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_are_listed_newest_first_with_their_fields_and_as_json() {
    let ctx = CliCtx::new().await;
    let etags = ctx.three_versions().await;
    let listed = ctx.versions(FILE, 3).await;

    let r = ctx.ok(&["versions", &format!("cells://{FILE}")]).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("AUTHOR"),
        "{}",
        lines[0]
    );
    for (line, v) in lines[1..].iter().zip(&listed) {
        assert!(line.starts_with(&v.id), "{line}");
        assert!(line.contains(&format!("{} B", v.size)), "{line}");
        assert!(line.contains("N/A"), "{line}");
        assert!(line.contains('T') && line.contains('Z'), "a date: {line}");
    }

    let r = ctx.ok(&["versions", "--json", FILE]).await;
    let json: Value = serde_json::from_str(&r.stdout).expect("JSON");
    let list = json.as_array().expect("an array");
    let sizes: Vec<u64> = list.iter().map(|v| v["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [5, 4, 3], "newest first: {json}");
    let json_etags: Vec<&str> = list.iter().map(|v| v["etag"].as_str().unwrap()).collect();
    assert_eq!(json_etags, [&etags[2], &etags[1], &etags[0]]);
    for (v, l) in list.iter().zip(&listed) {
        assert_eq!(v["id"], l.id.as_str());
        assert_eq!(v["mtime"], l.mtime);
        assert!(v["date"].as_str().unwrap().ends_with('Z'), "{v}");
        assert_eq!(v["description"], "N/A");
        assert!(v.get("author").is_some(), "{v}");
    }

    // A missing file: exit 3; a folder: a usage error; an unversioned file: none.
    let r = ctx
        .cec(&["versions", "personal-files/docs/missing.txt"])
        .await;
    assert_eq!(r.code(), 3, "{}", r.all());
    let r = ctx.cec(&["versions", "personal-files/docs"]).await;
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(r.stderr.contains("folder"), "{}", r.stderr);
    ctx.put("scratch/s.txt", b"s").await;
    let r = ctx.ok(&["versions", "--json", "scratch/s.txt"]).await;
    assert_eq!(r.stdout.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread")]
async fn scp_version_downloads_one_version() {
    let ctx = CliCtx::new().await;
    ctx.three_versions().await;
    let listed = ctx.versions(FILE, 3).await;
    let oldest = &listed[2].id;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();

    // Into a folder, under the file's name.
    ctx.ok(&["scp", "--version", oldest, &format!("cells://{FILE}"), dir])
        .await;
    assert_eq!(
        std::fs::read(out.path().join("report.txt")).unwrap(),
        b"one"
    );
    // Under a new name; an existing file is kept unless --force.
    let named = out.path().join("old.txt");
    let named_s = named.to_str().unwrap();
    let middle = &listed[1].id;
    ctx.ok(&[
        "scp",
        "--version",
        middle,
        &format!("cells://{FILE}"),
        named_s,
    ])
    .await;
    assert_eq!(std::fs::read(&named).unwrap(), b"two!");
    let r = ctx
        .cec(&[
            "scp",
            "--version",
            oldest,
            &format!("cells://{FILE}"),
            named_s,
        ])
        .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert_eq!(std::fs::read(&named).unwrap(), b"two!");
    ctx.ok(&[
        "scp",
        "--force",
        "--version",
        oldest,
        &format!("cells://{FILE}"),
        named_s,
    ])
    .await;
    assert_eq!(std::fs::read(&named).unwrap(), b"one");
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // An unknown version: exit 3 and nothing written; a version id with a slash: usage.
    let r = ctx
        .cec(&[
            "scp",
            "--version",
            "00000000-0000-0000-0000-000000000000",
            &format!("cells://{FILE}"),
            &format!("{dir}/x.txt"),
        ])
        .await;
    assert_eq!(r.code(), 3, "{}", r.all());
    assert!(!out.path().join("x.txt").exists());
    let r = ctx
        .cec(&["scp", "--version", "../x", &format!("cells://{FILE}"), dir])
        .await;
    assert_eq!(r.code(), 2, "{}", r.all());
    // --version is for downloads only.
    let r = ctx
        .cec(&[
            "scp",
            "--version",
            oldest,
            named_s,
            "cells://personal-files/",
        ])
        .await;
    assert_eq!(r.code(), 2, "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_version_makes_it_current_and_keeps_the_replaced_content() {
    let ctx = CliCtx::new().await;
    let etags = ctx.three_versions().await;
    let listed = ctx.versions(FILE, 3).await;
    let uuid = ctx.api().stat(FILE).await.unwrap().unwrap().uuid;

    let r = ctx
        .ok(&[
            "restore",
            "--version",
            &listed[2].id,
            &format!("cells://{FILE}"),
        ])
        .await;
    assert!(r.stderr.contains("Restored version"), "{}", r.stderr);
    assert_eq!(ctx.content(FILE).await, b"one");
    // The same node, and one more version: the restored content is the newest, and every
    // earlier content (the replaced "three" included) is still there.
    assert_eq!(ctx.api().stat(FILE).await.unwrap().unwrap().uuid, uuid);
    let after = ctx.versions(FILE, 4).await;
    assert_eq!(after[0].etag, etags[0]);
    let kept: Vec<&str> = after[1..].iter().map(|v| v.etag.as_str()).collect();
    assert_eq!(kept, [&etags[2], &etags[1], &etags[0]]);

    // One file only; an unknown version changes nothing.
    let r = ctx
        .cec(&["restore", "--version", &listed[1].id, FILE, FILE])
        .await;
    assert_eq!(r.code(), 2, "{}", r.all());
    let r = ctx.cec(&["restore", "--version", "nope", FILE]).await;
    assert_eq!(r.code(), 3, "{}", r.all());
    assert_eq!(ctx.content(FILE).await, b"one");

    // Without --version, restore is still the recycle bin's.
    ctx.ok(&["rm", "-f", FILE]).await;
    assert!(ctx.api().stat(FILE).await.unwrap().is_none());
    ctx.ok(&["restore", FILE]).await;
    assert_eq!(ctx.content(FILE).await, b"one");
}

/// A hostile server: the file exists, and its version list is `versions`.
async fn hostile_versions(
    versions: impl Fn() -> hostile::Response + Send + Sync + 'static,
) -> hostile::HostileServer {
    hostile::HostileServer::start(move |req| {
        if req.stat_path() == Some("ws/f.txt") {
            return Some(hostile::stat_reply(hostile::tree_node(
                "ws/f.txt", "LEAF", 3,
            )));
        }
        if req.bulk_pattern().as_deref() == Some("ws/f.txt") && req.json()["Versions"] == true {
            return Some(versions());
        }
        None
    })
    .await
}

fn hostile_cec(
    home: &std::path::Path,
    server: &hostile::HostileServer,
    args: &[&str],
) -> std::process::Command {
    let mut cmd = cec_cmd(home);
    cmd.env("CEC_URL", &server.url)
        .env("CEC_TOKEN", "any-token")
        .args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_version_list_is_bounded_and_filtered() {
    let home = tempfile::tempdir().unwrap();
    // A body that never ends (announced as 10 GiB): refused at the cap, in bounded time.
    let endless = hostile_versions(|| {
        hostile::Response::writer(200, Some(10 << 30), |mut socket| {
            Box::pin(async move {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(b"{\"Nodes\":[").await;
                let spaces = vec![b' '; 1 << 20];
                while socket.write_all(&spaces).await.is_ok() {}
            })
        })
    })
    .await;
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        run(hostile_cec(
            home.path(),
            &endless,
            &["versions", "ws/f.txt"],
        )),
    )
    .await
    .expect("bounded in time");
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("version list"), "{}", r.stderr);
    eprintln!("endless list refused in {:?}", started.elapsed());

    // Too many versions: an error, not a silent cut.
    let many = hostile_versions(|| {
        let node = serde_json::json!({"Etag": "e", "MTime": "1", "Size": "1",
            "MetaStore": {"versionId": "\"x\""}});
        hostile::Response::json(200, serde_json::json!({"Nodes": vec![node; 10_001]}))
    })
    .await;
    let r = run(hostile_cec(home.path(), &many, &["versions", "ws/f.txt"])).await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("10001 versions"), "{}", r.stderr);

    // Ids that are no plain tokens are dropped; control characters never reach the output.
    let odd = hostile_versions(|| {
        hostile::Response::json(
            200,
            serde_json::json!({"Nodes": [
                {"Etag": "a", "MTime": "20", "Size": "1", "MetaStore": {"versionId": "\"../../x\""}},
                {"Etag": "b", "MTime": "10", "Size": "2", "MetaStore": {"versionId": "\"good-1\"",
                    "versionDescription": "\"evil\\u001b[2J by [x](user://bob)\""}},
                {"Etag": "c", "MTime": "30", "Size": "3", "MetaStore": {}}
            ]}),
        )
    })
    .await;
    let r = run(hostile_cec(home.path(), &odd, &["versions", "ws/f.txt"])).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(
        lines[1].starts_with("good-1") && lines[1].contains("bob"),
        "{}",
        lines[1]
    );
    assert!(!r.stdout.contains('\u{1b}'), "{:?}", r.stdout);
    let r = run(hostile_cec(
        home.path(),
        &odd,
        &["versions", "--json", "ws/f.txt"],
    ))
    .await;
    let json: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["author"], "bob");
}
