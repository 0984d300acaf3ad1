//! `cec scp` against cells-emu through the real binary: round trips of trees with unicode
//! names, empty files and folders and a multipart-sized file (SHA-256 compared), the target
//! rules (`--force`), `--update` skipping identical files, downloads cut by an emulator fault
//! resumed without corrupt output (and, when retries are exhausted, nothing left under the
//! final name), progress bars on a pseudo-terminal and none without one, `--preserve-mtime`.

mod common;

use std::path::Path;

use cec::api::CellsApi;
use cells_emu::faults::RequestMatch;
use common::*;
use sha2::{Digest, Sha256};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ seed as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 7) as u8
        })
        .collect()
}

fn sha(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// Every file under `root` (relative path -> sha256) and every folder.
fn tree(root: &Path) -> (Vec<(String, String)>, Vec<String>) {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                dirs.push(rel);
                stack.push(p);
            } else {
                files.push((rel, sha(&p)));
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

fn no_temp_files(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.contains(".cec-part-"), "temporary file left: {p:?}");
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
}

const BIG: usize = 12 * 1024 * 1024 + 7;

fn make_tree(root: &Path) {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("naïve café")).unwrap();
    std::fs::create_dir_all(src.join("empty-folder")).unwrap();
    std::fs::write(src.join("naïve café").join("日本語.txt"), "konnichiwa").unwrap();
    std::fs::write(src.join("naïve café").join("empty.txt"), b"").unwrap();
    std::fs::write(src.join("big.bin"), pattern(BIG, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tree_round_trip_with_unicode_empty_and_multipart() {
    let ctx = CliCtx::new().await;
    make_tree(ctx.home.path());
    let src = ctx.dir("src");
    // Upload into a folder that does not exist yet (its parent does): created.
    let r = ctx
        .ok(&[
            "scp",
            "--no-progress",
            "--multipart-threshold",
            "1",
            "--part-size",
            "10",
            "--parts-concurrency",
            "2",
            s(&src),
            "cells://personal-files/up/",
        ])
        .await;
    assert!(r.stderr.contains("3 files transferred"), "{}", r.stderr);
    let api = ctx.api();
    let big = api
        .stat("personal-files/up/src/big.bin")
        .await
        .unwrap()
        .expect("big uploaded");
    assert_eq!(big.size, BIG as u64);
    assert_eq!(
        big.cells_hash(),
        Some(cec::hash::block_hash(&pattern(BIG, 1)).as_str())
    );
    let empty_dir = api
        .stat("personal-files/up/src/empty-folder")
        .await
        .unwrap()
        .expect("empty folder uploaded");
    assert!(empty_dir.is_folder());
    let empty = api
        .stat("personal-files/up/src/naïve café/empty.txt")
        .await
        .unwrap()
        .expect("empty file uploaded");
    assert_eq!(empty.size, 0);

    // Download with the completion prefix into a new local folder.
    let out = ctx.dir("out");
    let r = ctx
        .ok(&[
            "scp",
            "--no-progress",
            "cells//personal-files/up/src",
            &format!("{}/", s(&out)),
        ])
        .await;
    assert!(r.stderr.contains("3 files transferred"), "{}", r.stderr);
    assert_eq!(tree(&src), tree(&out.join("src")));
    no_temp_files(&out);

    // Same again with parallel ranged downloads of 1 MiB chunks.
    let out2 = ctx.dir("out2");
    ctx.ok(&[
        "scp",
        "--no-progress",
        "--ranged-threshold",
        "1",
        "--download-chunk-size",
        "1",
        "--download-concurrency",
        "4",
        "cells://personal-files/up/src/big.bin",
        &format!("{}/", s(&out2)),
    ])
    .await;
    assert_eq!(sha(&out2.join("big.bin")), sha(&src.join("big.bin")));

    // The item exists at the target: refused without --force, replaced with it.
    let r = ctx
        .cec(&["scp", "--no-progress", s(&src), "cells://personal-files/up"])
        .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let r = ctx
        .cec(&[
            "scp",
            "--no-progress",
            "cells://personal-files/up/src",
            s(&out),
        ])
        .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    std::fs::write(src.join("naïve café").join("日本語.txt"), "changed").unwrap();
    ctx.ok(&["scp", "-n", "--force", s(&src), "cells://personal-files/up"])
        .await;
    ctx.ok(&["scp", "-n", "-f", "cells://personal-files/up/src", s(&out)])
        .await;
    assert_eq!(
        std::fs::read_to_string(out.join("src/naïve café/日本語.txt")).unwrap(),
        "changed"
    );

    // Usage errors and missing sources.
    let r = ctx.cec(&["scp", s(&src), s(&out)]).await;
    assert_eq!(r.code(), 2);
    let r = ctx
        .cec(&[
            "scp",
            "cells://personal-files/a",
            "cells://personal-files/b",
        ])
        .await;
    assert_eq!(r.code(), 2);
    let r = ctx
        .cec(&["scp", "-n", "cells://personal-files/missing", s(&out)])
        .await;
    assert_eq!(r.code(), 3, "{}", r.all());
    let r = ctx
        .cec(&["scp", "-n", "/no/such/local", "cells://personal-files"])
        .await;
    assert_eq!(r.code(), 3, "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn update_skips_identical_files_both_ways() {
    let ctx = CliCtx::new().await;
    make_tree(ctx.home.path());
    let src = ctx.dir("src");
    ctx.ok(&["scp", "-n", s(&src), "cells://personal-files"])
        .await;
    let r = ctx
        .ok(&["scp", "-n", "--update", s(&src), "cells://personal-files"])
        .await;
    assert!(r.stderr.contains("0 files transferred"), "{}", r.stderr);
    assert!(r.stderr.contains("3 skipped"), "{}", r.stderr);
    // One changed file (same size, other content) and one new file.
    std::fs::write(src.join("naïve café").join("日本語.txt"), "KONNICHIWA").unwrap();
    std::fs::write(src.join("new.txt"), "new").unwrap();
    let r = ctx
        .ok(&["scp", "-n", "--update", s(&src), "cells://personal-files"])
        .await;
    assert!(r.stderr.contains("2 files transferred"), "{}", r.stderr);
    assert!(r.stderr.contains("2 skipped"), "{}", r.stderr);
    let node = ctx
        .api()
        .stat("personal-files/src/naïve café/日本語.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        node.cells_hash(),
        Some(cec::hash::block_hash(b"KONNICHIWA").as_str())
    );

    // Download side.
    let out = ctx.dir("out");
    std::fs::create_dir(&out).unwrap();
    ctx.ok(&["scp", "-n", "cells://personal-files/src", s(&out)])
        .await;
    let r = ctx
        .ok(&[
            "scp",
            "-n",
            "--update",
            "cells://personal-files/src",
            s(&out),
        ])
        .await;
    assert!(r.stderr.contains("0 files transferred"), "{}", r.stderr);
    assert!(r.stderr.contains("4 skipped"), "{}", r.stderr);
    std::fs::write(out.join("src/new.txt"), "old").unwrap();
    let r = ctx
        .ok(&[
            "scp",
            "-n",
            "--update",
            "cells://personal-files/src",
            s(&out),
        ])
        .await;
    assert!(r.stderr.contains("1 file transferred"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(out.join("src/new.txt")).unwrap(),
        "new"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_downloads_are_resumed_or_leave_nothing_behind() {
    let ctx = CliCtx::new().await;
    let data = pattern(3 * 1024 * 1024 + 11, 2);
    let local = ctx.dir("cut.bin");
    std::fs::write(&local, &data).unwrap();
    // An upload whose first PUT fails with 503 is retried.
    ctx.server
        .state()
        .faults
        .fail_next(RequestMatch::new(Some("PUT"), "/io/"), 503, 1);
    ctx.ok(&["scp", "-n", s(&local), "cells://personal-files"])
        .await;
    assert!(
        ctx.server.state().faults.rules().is_empty(),
        "the fault was not hit"
    );

    // Single-stream download cut twice: resumed from where it stopped.
    let out = ctx.dir("out");
    std::fs::create_dir(&out).unwrap();
    ctx.server.state().faults.cut_body_after(
        RequestMatch::new(Some("GET"), "/io/"),
        1024 * 1024,
        2,
    );
    ctx.ok(&["scp", "-n", "cells://personal-files/cut.bin", s(&out)])
        .await;
    assert!(
        ctx.server.state().faults.rules().is_empty(),
        "the cut was not hit"
    );
    assert_eq!(sha(&out.join("cut.bin")), sha(&local));
    no_temp_files(&out);

    // Ranged download with cuts.
    let out2 = ctx.dir("out2");
    ctx.server
        .state()
        .faults
        .cut_body_after(RequestMatch::new(Some("GET"), "/io/"), 300_000, 3);
    ctx.ok(&[
        "scp",
        "-n",
        "--ranged-threshold",
        "1",
        "--download-chunk-size",
        "1",
        "cells://personal-files/cut.bin",
        &format!("{}/", s(&out2)),
    ])
    .await;
    assert!(
        ctx.server.state().faults.rules().is_empty(),
        "the cuts were not hit"
    );
    assert_eq!(sha(&out2.join("cut.bin")), sha(&local));
    no_temp_files(&out2);

    // Retries exhausted: failure, and no file under its final name, no temporary file.
    let out3 = ctx.dir("out3");
    std::fs::create_dir(&out3).unwrap();
    ctx.server
        .state()
        .faults
        .cut_body_after(RequestMatch::new(Some("GET"), "/io/"), 1000, 50);
    let r = ctx
        .cec(&[
            "scp",
            "-n",
            "--retry-max-attempts",
            "2",
            "cells://personal-files/cut.bin",
            s(&out3),
        ])
        .await;
    ctx.server.state().faults.clear();
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("1 failed"), "{}", r.stderr);
    assert!(
        !out3.join("cut.bin").exists(),
        "a partial file has the final name"
    );
    no_temp_files(&out3);
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_bars_only_on_a_terminal_and_mtime_preserved() {
    let ctx = CliCtx::new().await;
    let local = ctx.dir("p.bin");
    std::fs::write(&local, pattern(4 * 1024 * 1024, 3)).unwrap();
    // No terminal: no bar, no control characters, just the summary.
    let r = ctx
        .ok(&["scp", s(&local), "cells://personal-files/p/"])
        .await;
    assert!(!r.stderr.contains("total:"), "{}", r.stderr);
    assert!(
        !r.stderr.contains('\r') && !r.stderr.contains('\u{1b}'),
        "{:?}",
        r.stderr
    );
    assert!(r.stderr.contains("1 file transferred"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);

    // A pseudo-terminal (script(1)): bars are drawn. Wait so that the download's own write
    // time differs from the server's mtime.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = ctx.dir("out");
    let line = format!(
        "{} scp --preserve-mtime cells://personal-files/p/p.bin {}/",
        cec_bin().display(),
        out.display()
    );
    let mut c = ctx.cmd(&[]);
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
    let _ = &mut c;
    let r = run(script).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(
        r.stdout.contains("total:"),
        "no progress bar on a pty: {:?}",
        r.stdout
    );
    assert_eq!(sha(&out.join("p.bin")), sha(&local));
    let node = ctx
        .api()
        .stat("personal-files/p/p.bin")
        .await
        .unwrap()
        .unwrap();
    let mtime = std::fs::metadata(out.join("p.bin"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(mtime, node.mtime);

    // --verbose: one line per file, no bars even on a terminal.
    let r = ctx
        .ok(&["scp", "-v", "-f", s(&local), "cells://personal-files/p"])
        .await;
    assert!(r.stderr.contains("p.bin: done"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_multipart_upload_is_resumed() {
    use cec::api::http::raw::{S3Body, xml_values};
    use reqwest::Method;
    use reqwest::header::HeaderName;

    let ctx = CliCtx::new().await;
    const MIB: usize = 1024 * 1024;
    let data = pattern(25 * MIB + 3, 4);
    let local = ctx.dir("resume.bin");
    std::fs::write(&local, &data).unwrap();
    let key = "personal-files/resume.bin";
    let api = ctx.api();
    // A previous run sent part 1 correctly and part 2 with other bytes, then stopped.
    let resp = api
        .s3_call(
            Method::POST,
            key,
            &[("uploads", "")],
            &[(
                HeaderName::from_static("x-amz-meta-pydio-clear-size"),
                data.len().to_string(),
            )],
            S3Body::Empty,
            false,
        )
        .await
        .expect("initiate");
    let id = xml_values(&resp.text().await.unwrap(), "UploadId")
        .pop()
        .expect("upload id");
    for (n, bytes) in [(1, data[..10 * MIB].to_vec()), (2, vec![0u8; 10 * MIB])] {
        let number = n.to_string();
        api.s3_call(
            Method::PUT,
            key,
            &[("partNumber", &number), ("uploadId", &id)],
            &[],
            S3Body::Bytes(bytes.into()),
            true,
        )
        .await
        .expect("part");
    }
    // Not visible as a finished file yet: at most an upload placeholder.
    assert!(
        ctx.api()
            .stat(key)
            .await
            .unwrap()
            .is_none_or(|n| n.is_temporary())
    );

    // Count the part uploads of the resumed run with a counted no-op latency rule.
    let faults = &ctx.server.state().faults;
    faults.add_latency(
        RequestMatch::new(Some("PUT"), "/io/personal-files/resume.bin"),
        std::time::Duration::ZERO,
        Some(100),
    );
    ctx.ok(&[
        "scp",
        "-n",
        "--multipart-threshold",
        "1",
        "--part-size",
        "10",
        s(&local),
        "cells://personal-files",
    ])
    .await;
    let remaining = faults
        .rules()
        .first()
        .and_then(|r| r.remaining)
        .unwrap_or(100);
    faults.clear();
    assert_eq!(
        100 - remaining,
        2,
        "parts 2 (different bytes) and 3 (missing) only"
    );
    let node = api.stat(key).await.unwrap().expect("uploaded");
    assert_eq!(node.size, data.len() as u64);
    assert_eq!(
        node.cells_hash(),
        Some(cec::hash::block_hash(&data).as_str())
    );
    // Nothing pending any more.
    let resp = api
        .s3_call(
            Method::GET,
            "",
            &[("uploads", ""), ("prefix", key)],
            &[],
            S3Body::Empty,
            true,
        )
        .await
        .unwrap();
    assert!(xml_values(&resp.text().await.unwrap(), "UploadId").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_leaves_no_partial_file() {
    let ctx = CliCtx::new().await;
    let data = pattern(3 * 1024 * 1024, 5);
    let local = ctx.dir("slow.bin");
    std::fs::write(&local, &data).unwrap();
    ctx.ok(&["scp", "-n", s(&local), "cells://personal-files"])
        .await;
    // Every GET waits 400 ms: a 1 MiB-chunk download takes over a second.
    ctx.server.state().faults.add_latency(
        RequestMatch::new(Some("GET"), "/io/"),
        std::time::Duration::from_millis(400),
        None,
    );
    let out = ctx.dir("out");
    std::fs::create_dir(&out).unwrap();
    let child = ctx
        .cmd(&[
            "scp",
            "-n",
            "--ranged-threshold",
            "1",
            "--download-chunk-size",
            "1",
            "--download-concurrency",
            "1",
            "cells://personal-files/slow.bin",
            s(&out),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cec");
    // Wait for the temporary file, then interrupt.
    let mut seen = false;
    for _ in 0..100 {
        if std::fs::read_dir(&out).unwrap().next().is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "the download never started");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    ctx.server.state().faults.clear();
    assert_eq!(
        status.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("interrupted"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "files left after Ctrl-C: {left:?}");
}

/// The unfinished multipart uploads of `key`: (upload id, number of parts on the server).
async fn pending_parts(api: &cec::api::http::HttpCellsApi, key: &str) -> Vec<(String, usize)> {
    use cec::api::http::raw::{S3Body, xml_values};
    use reqwest::Method;
    let resp = api
        .s3_call(
            Method::GET,
            "",
            &[("uploads", ""), ("prefix", key)],
            &[],
            S3Body::Empty,
            true,
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for id in xml_values(&resp.text().await.unwrap(), "UploadId") {
        let resp = api
            .s3_call(
                Method::GET,
                key,
                &[("uploadId", id.as_str())],
                &[],
                S3Body::Empty,
                true,
            )
            .await
            .unwrap();
        let parts = xml_values(&resp.text().await.unwrap(), "PartNumber").len();
        out.push((id, parts));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_an_upload_says_what_is_left_and_the_rerun_resumes() {
    let ctx = CliCtx::new().await;
    const MIB: usize = 1024 * 1024;
    let data = pattern(25 * MIB + 5, 6);
    let local = ctx.dir("big.bin");
    std::fs::write(&local, &data).unwrap();
    let key = "personal-files/big.bin";
    let args = [
        "scp",
        "-n",
        "--multipart-threshold",
        "1",
        "--part-size",
        "10",
        "--parts-concurrency",
        "1",
        s(&local),
        "cells://personal-files",
    ];
    // Each part waits 1 s at the server: interrupted once part 1 is stored, part 2 is in
    // flight.
    ctx.server.state().faults.add_latency(
        RequestMatch::new(Some("PUT"), "/io/personal-files/big.bin"),
        std::time::Duration::from_millis(1000),
        None,
    );
    let child = ctx
        .cmd(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cec");
    let api = ctx.api();
    let mut stored = false;
    for _ in 0..300 {
        if pending_parts(&api, key).await.iter().any(|p| p.1 >= 1) {
            stored = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert!(stored, "part 1 never reached the server");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    ctx.server.state().faults.clear();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // What is true: the parts stay on the server, a re-run resumes; nothing was "removed".
    assert!(!stderr.contains("removed"), "{stderr}");
    assert!(
        stderr.contains("cells://personal-files/big.bin"),
        "{stderr}"
    );
    assert!(stderr.contains("stay on the server"), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    let pending = pending_parts(&api, key).await;
    assert!(pending.iter().any(|p| p.1 >= 1), "{pending:?}");

    // The re-run says it resumes, and counts only what it sent.
    let r = ctx.ok(&args).await;
    assert!(
        r.stderr
            .contains("Resuming the upload of cells://personal-files/big.bin"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("resumed from an earlier run"),
        "{}",
        r.stderr
    );
    let node = api.stat(key).await.unwrap().expect("uploaded");
    assert_eq!(
        node.cells_hash(),
        Some(cec::hash::block_hash(&data).as_str())
    );
    assert!(pending_parts(&api, key).await.is_empty());
}
