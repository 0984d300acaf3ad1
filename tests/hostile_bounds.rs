//! Bounded, whatever the server sends (issue 23): a listing's announced total, full pages
//! sent again or forever, a multi-GB body (a listing page, an S3 listing, bootconf) and an
//! upload the server takes one trickle at a time all end in a clear error, in bounded time
//! and memory.
//!
//! The `cec` commands run with an address-space limit (so that a client that would read
//! everything fails instead of eating the machine) and a time limit.

mod common;
mod hostile;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use cec::api::CellsApi;
use common::*;
use hostile::*;
use serde_json::json;

/// Address space a `cec` command may use here (its normal need is far below).
const MEMORY_LIMIT: u64 = 4 << 30;
/// Time a `cec` command may take here.
const TIME_LIMIT: Duration = Duration::from_secs(90);

/// Run `cmd` with [`MEMORY_LIMIT`] and [`TIME_LIMIT`] (killed past it: the test fails).
async fn run_bounded(mut cmd: std::process::Command) -> Run {
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn cec");
    let out = tokio::time::timeout(TIME_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("cec ran past {TIME_LIMIT:?}: not bounded in time"))
        .expect("wait");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn cec_at(home: &std::path::Path, server: &HostileServer, args: &[&str]) -> std::process::Command {
    let mut cmd = cec_cmd(home);
    cmd.env("CEC_URL", &server.url)
        .env("CEC_TOKEN", "any-token")
        .args(args);
    cmd
}

/// `n` file nodes under `folder`, named from `first`.
fn nodes(folder: &str, first: usize, n: usize) -> Vec<serde_json::Value> {
    (first..first + n)
        .map(|i| tree_node(&format!("{folder}/f{i:08}"), "LEAF", 1))
        .collect()
}

fn bulk_requests(server: &HostileServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.bulk_pattern().is_some())
        .count()
}

#[tokio::test]
async fn ls_refuses_an_absurd_total_without_building_its_pages() {
    // Issue 23: "Pagination.Total = 1e18 made cec ls build a list of page offsets: 7.2 GB
    // of memory in 30 s."
    let server = HostileServer::start(|req| {
        if req.stat_path() == Some("ws/big") {
            return Some(stat_reply(tree_node("ws/big", "COLLECTION", 0)));
        }
        if req.bulk_pattern().as_deref() == Some("ws/big/*") {
            let offset = req.json()["Offset"].as_u64().unwrap_or(0) as usize;
            return Some(Response::json(
                200,
                json!({
                    "Nodes": nodes("ws/big", offset, 1000),
                    "Pagination": {"Limit": 1000, "Total": 1_000_000_000_000_000_000u64},
                }),
            ));
        }
        None
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let r = run_bounded(cec_at(home.path(), &server, &["ls", "ws/big"])).await;
    assert_ne!(r.code(), 0, "{}", r.all());
    assert!(
        r.stderr
            .contains("announces 1000000000000000000 entries, more than cec lists"),
        "{}",
        r.stderr
    );
    assert!(bulk_requests(&server) <= 2, "{}", bulk_requests(&server));
}

#[tokio::test]
async fn ls_stops_when_the_server_sends_the_same_full_page_again() {
    // Issue 23: "Full pages forever: an endless loop, 5.5 GB in 40 s" (a server that
    // ignores the offset).
    let server = HostileServer::start(|req| {
        if req.stat_path() == Some("ws/loop") {
            return Some(stat_reply(tree_node("ws/loop", "COLLECTION", 0)));
        }
        if req.bulk_pattern().as_deref() == Some("ws/loop/*") {
            return Some(bulk_reply(nodes("ws/loop", 0, 1000)));
        }
        None
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let r = run_bounded(cec_at(home.path(), &server, &["ls", "ws/loop"])).await;
    assert_ne!(r.code(), 0, "{}", r.all());
    assert!(
        r.stderr
            .contains("again a full page of entries already listed"),
        "{}",
        r.stderr
    );
    assert_eq!(bulk_requests(&server), 2);
}

#[tokio::test]
async fn a_listing_of_endless_new_full_pages_stops_at_the_cap() {
    // Full pages of new names forever, with no total: stopped by the entry cap.
    let server = HostileServer::start(|req| {
        if req.bulk_pattern().as_deref() == Some("ws/endless/*") {
            let offset = req.json()["Offset"].as_u64().unwrap_or(0) as usize;
            return Some(bulk_reply(nodes("ws/endless", offset, 1000)));
        }
        None
    })
    .await;
    let tokens = std::sync::Arc::new(cec::auth::StaticToken::new("t", "test token"));
    let api = cec::api::http::HttpCellsApi::new(
        &server.url,
        tokens,
        cec::api::http::HttpOptions {
            max_folder_entries: 5000,
            ..fast_options()
        },
    )
    .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), api.list_folder("ws/endless"))
        .await
        .expect("bounded in time");
    let err = result
        .expect_err("an endless listing is an error")
        .to_string();
    assert!(err.contains("sent over 5000 entries"), "{err}");
    assert!(bulk_requests(&server) <= 7, "{}", bulk_requests(&server));
}

/// A body that never ends: `head`, then spaces until the client leaves; its length
/// announced (`announced`) or not.
fn endless_body(head: &'static str, announced: Option<u64>) -> Response {
    Response::writer(200, announced, move |mut socket| {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let spaces = vec![b' '; 1 << 20];
            while socket.write_all(&spaces).await.is_ok() {}
        })
    })
}

#[tokio::test]
async fn ls_refuses_a_listing_page_of_many_gigabytes() {
    // Issue 23: "A multi-GB JSON body is read whole (9.6 GB)".
    for announced in [Some(10u64 << 30), None] {
        let server = HostileServer::start(move |req| {
            if req.stat_path() == Some("ws/fat") {
                return Some(stat_reply(tree_node("ws/fat", "COLLECTION", 0)));
            }
            if req.bulk_pattern().as_deref() == Some("ws/fat/*") {
                return Some(endless_body("{\"Nodes\": [", announced));
            }
            None
        })
        .await;
        let home = tempfile::tempdir().unwrap();
        let r = run_bounded(cec_at(home.path(), &server, &["ls", "ws/fat"])).await;
        assert_ne!(r.code(), 0, "{announced:?}: {}", r.all());
        assert!(
            r.stderr
                .contains("a folder listing page is larger than 67108864 bytes"),
            "{announced:?}: {}",
            r.stderr
        );
    }
}

#[tokio::test]
async fn an_s3_listing_and_a_bootconf_of_many_megabytes_are_refused() {
    // The gateway listing the mount reads for dotfiles: 300 MiB of valid XML.
    const BIG: u64 = 300 << 20;
    let server = HostileServer::start(|req| {
        if req.s3_list_prefix().is_some() {
            return Some(Response::writer(200, Some(BIG), |mut socket| {
                Box::pin(async move {
                    use tokio::io::AsyncWriteExt;
                    let head = b"<?xml version=\"1.0\"?><ListBucketResult>";
                    let tail = b"</ListBucketResult>";
                    let mut left = BIG - (head.len() + tail.len()) as u64;
                    if socket.write_all(head).await.is_err() {
                        return;
                    }
                    let spaces = vec![b' '; 1 << 20];
                    while left > 0 {
                        let n = left.min(spaces.len() as u64) as usize;
                        if socket.write_all(&spaces[..n]).await.is_err() {
                            return;
                        }
                        left -= n as u64;
                    }
                    let _ = socket.write_all(tail).await;
                })
            }));
        }
        if req.path == "/a/frontend/bootconf" {
            return Some(endless_body("{\"backend\": {}, \"x\": \"", Some(1 << 30)));
        }
        None
    })
    .await;
    let tokens = std::sync::Arc::new(cec::auth::StaticToken::new("t", "test token"));
    let api = cec::api::http::HttpCellsApi::new(&server.url, tokens, fast_options()).unwrap();
    let err = api
        .list_folder_s3("ws/dir")
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("an S3 folder listing is larger than"), "{err}");

    let http = cec::api::http::build_http_client(false).unwrap();
    let err = cec::api::http::probe_server(&http, &server.url)
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("bootconf is larger than"), "{err}");
}

#[tokio::test]
async fn scp_upload_fails_when_the_server_takes_it_at_a_trickle() {
    // Issue 23: "A transfer that trickles (1 byte every 20 s was accepted as success) fails
    // once its rate stays under a floor for a while (configurable)". The server reads the
    // upload 1 KiB a second; the floor is 1 MiB/s over 2 s.
    let server = HostileServer::start_pacing_uploads(Some((1024, Duration::from_secs(1))), |req| {
        if req.stat_path() == Some("ws") {
            return Some(stat_reply(tree_node("ws", "COLLECTION", 0)));
        }
        if req.stat_path().is_some() {
            return Some(Response::not_found());
        }
        if req.method == "PUT" {
            return Some(Response::bytes(200, "text/plain", ""));
        }
        None
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let source = home.path().join("big.bin");
    std::fs::write(&source, vec![7u8; 48 << 20]).unwrap();
    let started = std::time::Instant::now();
    let r = run_bounded(cec_at(
        home.path(),
        &server,
        &[
            "scp",
            "--no-progress",
            "--retry-max-attempts",
            "1",
            "--transfer-timeout",
            "2s",
            "--min-transfer-rate",
            "1M",
            source.to_str().unwrap(),
            "cells://ws/",
        ],
    ))
    .await;
    assert_ne!(r.code(), 0, "{}", r.all());
    assert!(
        r.stderr.contains("under the floor of 1048576 bytes/s"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
