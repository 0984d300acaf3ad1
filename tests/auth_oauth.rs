//! OAuth end to end against cells-emu: `cec config add oauth` through the loopback callback
//! (the test plays the browser: it follows the authorize URL, submits the login form and
//! lets the redirect reach `localhost:3000`) and through the OOB copy/paste; 2-second tokens
//! refreshed transparently through a long operation; two `cec` processes refreshing at once;
//! a revoked refresh token telling the user to run `cec config relog`.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cec::api::CellsApi;
use cec::api::http::HttpCellsApi;
use cec::auth::token_source_for_profile;
use cells_emu::faults::RequestMatch;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn read_config(home: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(config_path(home)).expect("config file")).unwrap()
}

/// Spawn `cec` with piped stdio; return the child and the first `http` line of its stderr.
async fn spawn_until_url(
    mut cmd: std::process::Command,
) -> (
    tokio::process::Child,
    String,
    tokio::task::JoinHandle<String>,
) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cec");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("http") {
                return line;
            }
        }
        panic!("cec ended without printing the authorization URL");
    })
    .await
    .expect("authorization URL printed");
    let rest = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (child, url, rest)
}

fn check_authorize_url(url: &str, redirect: &str) -> url::Url {
    let u = url::Url::parse(url).unwrap();
    let q: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], "cells-client");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["redirect_uri"], redirect);
    assert_eq!(q["code_challenge_method"], "S256", "PKCE S256");
    assert!(q["code_challenge"].len() >= 43);
    assert!(q["state"].len() >= 16);
    assert!(q["scope"].split(' ').any(|s| s == "offline"));
    u
}

fn assert_oauth_profile(home: &std::path::Path, login: &str) {
    let cfg = read_config(home);
    let id = cfg["ActiveConfigID"].as_str().unwrap();
    assert!(id.starts_with(&format!("{login}@127.0.0.1:")), "{id}");
    let p = &cfg["Configs"][id];
    assert_eq!(p["authType"], "oauth2");
    assert_eq!(p["user"], login);
    assert!(!p["idToken"].as_str().unwrap().is_empty());
    assert!(!p["refreshToken"].as_str().unwrap().is_empty());
    assert!(p["tokenExpiresAt"].as_i64().unwrap() > 1_700_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_through_the_loopback_callback() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = cec_cmd(home.path());
    cmd.args([
        "config",
        "add",
        "oauth",
        "--skip-keyring",
        "--url",
        &server.url,
    ])
    .env("BROWSER", "true");
    let (mut child, url, rest) = spawn_until_url(cmd).await;
    check_authorize_url(&url, "http://localhost:3000/servers/callback");
    let location = browser_login(&server.url, &url, "alice", "secret-alice").await;
    assert!(
        location.starts_with("http://localhost:3000/servers/callback?"),
        "{location}"
    );

    // A forged callback with a wrong state is refused... by a second listener? No: the first
    // request ends the flow, so only check the real one here; the state check is below.
    let page = reqwest::get(&location)
        .await
        .expect("callback reaches cec")
        .text()
        .await
        .unwrap();
    assert!(page.contains("close this window"), "{page}");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let stderr = rest.await.unwrap();
    assert!(status.success(), "{stderr}");
    assert_oauth_profile(home.path(), "alice");

    // The profile works: `cec info` as alice.
    let info = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(info.code(), 0, "{}", info.all());
    assert!(info.stdout.contains("OAuth2"));

    // A callback with a forged state is refused and nothing is saved.
    let home2 = tempfile::tempdir().unwrap();
    let mut cmd = cec_cmd(home2.path());
    cmd.args([
        "config",
        "add",
        "oauth",
        "--skip-keyring",
        "--url",
        &server.url,
    ])
    .env("BROWSER", "true");
    let (mut child, url, rest) = spawn_until_url(cmd).await;
    let location = browser_login(&server.url, &url, "alice", "secret-alice").await;
    let mut forged = url::Url::parse(&location).unwrap();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "state" {
                (k, "forgedforgedforged".into())
            } else {
                (k, v)
            }
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let _ = reqwest::get(forged.as_str()).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let stderr = rest.await.unwrap();
    assert!(!status.success());
    assert!(stderr.contains("wrong state"), "{stderr}");
    assert!(!config_path(home2.path()).exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_through_the_oob_copy_paste() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = cec_cmd(home.path());
    cmd.args([
        "configure",
        "oauth",
        "--no-browser",
        "--skip-keyring",
        "--url",
        &server.url,
    ]);
    let (mut child, url, rest) = spawn_until_url(cmd).await;
    check_authorize_url(&url, &format!("{}/oauth2/oob", server.url));
    let location = browser_login(&server.url, &url, "bob", "secret-bob").await;
    let code = oob_code(&location).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let stderr = rest.await.unwrap();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(&code), "the pasted code is not echoed");
    assert_oauth_profile(home.path(), "bob");

    // The code is single use: pasting it again fails with one sentence.
    let mut cmd = cec_cmd(home.path());
    cmd.args([
        "config",
        "add",
        "oauth",
        "--no-browser",
        "--skip-keyring",
        "--url",
        &server.url,
    ]);
    let (mut child, _url, rest) = spawn_until_url(cmd).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let status = child.wait().await.unwrap();
    let stderr = rest.await.unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("refused the authorization code"),
        "{stderr}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn short_tokens_are_refreshed_through_a_long_operation_and_persisted() {
    let server = spawn_emulator_with(|c| c.access_token_ttl = Duration::from_secs(2)).await;
    let home = tempfile::tempdir().unwrap();
    let (store, id) = oauth_profile(&server, home.path(), "alice").await;
    let first = tokio::task::spawn_blocking({
        let store = store.clone();
        let id = id.clone();
        move || store.load_profile(Some(&id)).unwrap()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let persist = cec::config::ConfigStore::new(store.path().to_path_buf(), false);
    let tokens = token_source_for_profile(http.clone(), &first, Some((persist, id.clone())));
    let mut changes = tokens.changes();
    let api = Arc::new(HttpCellsApi::new(&server.url, tokens.clone(), fast_options()).unwrap());

    // A multipart upload whose parts are slowed down: it outlives several tokens.
    server.state().faults.add_latency(
        RequestMatch::new(Some("PUT"), "/io/"),
        Duration::from_millis(700),
        None,
    );
    let len = 45 * cec::api::MIB as usize;
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, &data).unwrap();
    let options = cec::api::UploadOptions {
        multipart_threshold: 10 * cec::api::MIB,
        part_size: 10 * cec::api::MIB,
        parts_concurrency: 1,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    api.put_object_from_file("personal-files/long.bin", f.path(), len as u64, &options)
        .await
        .expect("upload survives token expiry");
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the operation is long"
    );
    server.state().faults.clear();
    // And a stream of REST calls over several lifetimes.
    for _ in 0..12 {
        api.list_workspaces()
            .await
            .expect("listing with refreshed tokens");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(*changes.borrow_and_update() >= 2, "refreshed several times");
    assert_eq!(
        api.head_object("personal-files/long.bin")
            .await
            .unwrap()
            .size,
        len as u64
    );

    // The rotated pair was persisted: the stored refresh token changed and still works.
    let stored = read_config(home.path());
    let stored_rt = stored["Configs"][&id]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(stored_rt, first.refresh_token);
    let run = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(run.code(), 0, "{}", run.all());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_refreshing_at_once_both_end_with_a_valid_token() {
    let server = spawn_emulator_with(|c| c.access_token_ttl = Duration::from_secs(2)).await;
    let home = tempfile::tempdir().unwrap();
    let (_store, id) = oauth_profile(&server, home.path(), "alice").await;
    for round in 0..3 {
        // Let the access token expire so that both processes must refresh.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let a = run({
            let mut c = cec_cmd(home.path());
            c.arg("info");
            c
        });
        let b = run({
            let mut c = cec_cmd(home.path());
            c.arg("info");
            c
        });
        let (a, b) = tokio::join!(a, b);
        assert_eq!(a.code(), 0, "round {round}, first process: {}", a.all());
        assert_eq!(b.code(), 0, "round {round}, second process: {}", b.all());
    }
    // The stored pair is still good for a later process.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let last = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(last.code(), 0, "{}", last.all());
    assert!(read_config(home.path())["Configs"][&id]["refreshToken"].is_string());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_refresh_token_says_to_run_relog() {
    let server = spawn_emulator_with(|c| c.access_token_ttl = Duration::from_secs(2)).await;
    let home = tempfile::tempdir().unwrap();
    let (_store, id) = oauth_profile(&server, home.path(), "alice").await;
    let rt = read_config(home.path())["Configs"][&id]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    server.state().auth.revoke(&rt);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_ne!(r.code(), 0);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(lines[0].contains("cec config relog"), "{}", lines[0]);
    assert!(!r.all().contains(&rt));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn id_token_configures_non_interactively_from_the_environment() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let (_store, id) = oauth_profile(&server, home.path(), "bob").await;
    let token = read_config(home.path())["Configs"][&id]["idToken"]
        .as_str()
        .unwrap()
        .to_string();
    let home2 = tempfile::tempdir().unwrap();
    let r = run({
        let mut c = cec_cmd(home2.path());
        c.args([
            "config",
            "add",
            "oauth",
            "--skip-keyring",
            "--url",
            &server.url,
        ])
        .env("CEC_ID_TOKEN", &token);
        c
    })
    .await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(!r.all().contains(&token));
    let cfg = read_config(home2.path());
    let id2 = cfg["ActiveConfigID"].as_str().unwrap();
    assert!(id2.starts_with("bob@"));
    assert_eq!(
        cfg["Configs"][id2]["idToken"].as_str(),
        Some(token.as_str())
    );
    server.stop().await;
}
