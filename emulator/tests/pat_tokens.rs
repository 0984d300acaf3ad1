//! Personal Access Tokens and persistence: the token format, hard and sliding expiry, the
//! `cells-emu admin user token` command against a live server's data directory, `serve`
//! printing its URL, and a restart keeping files, Uuids, PATs and refresh tokens.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cells_emu::auth::PatExpiry;
use common::{Swagger, TestEmu, authorize_code};
use reqwest::Method;

fn is_pat_shaped(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            p.len() == 43
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

async fn stat_status(emu: &TestEmu, sw: &Swagger, token: &str) -> u16 {
    emu.rest(
        sw,
        Method::GET,
        "/tree/stat/personal-files",
        Some(token),
        None,
        "restHeadNodeResponse",
    )
    .await
    .0
}

#[tokio::test]
async fn pat_format_and_hard_expiry() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let auth = &emu.state().auth;
    let pat = auth
        .mint_pat("alice", PatExpiry::Fixed(Duration::from_secs(1)))
        .unwrap();
    assert!(is_pat_shaped(&pat), "{pat}");
    assert_eq!(auth.verify(&pat).unwrap().login, "alice");
    assert_eq!(stat_status(&emu, &sw, &pat).await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, err) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files",
            Some(&pat),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 401);
    assert!(err["Title"].as_str().unwrap().contains("expired"));
    assert!(
        auth.mint_pat("nobody", PatExpiry::Fixed(Duration::from_secs(60)))
            .is_err()
    );
    // A PAT with one character changed is refused.
    let mut bad = pat.clone().into_bytes();
    bad[5] = if bad[5] == b'A' { b'B' } else { b'A' };
    assert!(auth.verify(std::str::from_utf8(&bad).unwrap()).is_err());
}

#[tokio::test]
async fn sliding_window_pat_is_renewed_by_use() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let pat = emu
        .state()
        .auth
        .mint_pat("bob", PatExpiry::AutoRefresh(Duration::from_secs(2)))
        .unwrap();
    // Used every 1.2 s for 3.6 s: stays valid beyond its initial 2 s window.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(stat_status(&emu, &sw, &pat).await, 200);
    }
    // Left alone for longer than the window: expired.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(stat_status(&emu, &sw, &pat).await, 401);
}

#[tokio::test]
async fn restart_keeps_files_uuids_pats_and_refresh_tokens() {
    let sw = Swagger::load();
    let mut emu = TestEmu::start().await;
    let pat = emu.pat("alice");
    let node = emu
        .state()
        .store
        .put_bytes("alice", "personal-files/keep/me.txt", b"persist", None)
        .unwrap();
    let code = authorize_code(
        &emu.url,
        "alice",
        "secret-alice",
        "http://localhost:3000/servers/callback",
        None,
    )
    .await
    .unwrap();
    let grant: serde_json::Value = emu
        .http
        .post(format!("{}/oidc/oauth2/token", emu.url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://localhost:3000/servers/callback"),
            ("client_id", "cells-client"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rt = grant["refresh_token"].as_str().unwrap().to_string();
    let at = grant["access_token"].as_str().unwrap().to_string();

    emu.restart().await;

    let (status, body) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files/keep/me.txt",
            Some(&pat),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["Node"]["Uuid"], node.uuid.as_str());
    assert_eq!(body["Node"]["Size"], "7");
    let (_, blob) = emu
        .state()
        .store
        .open_content("alice", "personal-files/keep/me.txt")
        .unwrap();
    assert_eq!(std::fs::read(blob).unwrap(), b"persist");
    assert_eq!(
        stat_status(&emu, &sw, &at).await,
        200,
        "access tokens survive too"
    );
    let resp = emu
        .http
        .post(format!("{}/oidc/oauth2/token", emu.url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "cells-client"),
            ("refresh_token", rt.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn no_torn_files_and_no_tmp_leftovers_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let config = cells_emu::EmuConfig::for_tests(dir.path().join("data"));
    {
        let store = cells_emu::store::Store::open(&config).unwrap();
        store
            .put_bytes("alice", "personal-files/a.txt", b"committed", None)
            .unwrap();
        // An upload in flight when the process dies: written to tmp/, never committed.
        let mut blob = store.tmp_file().unwrap();
        std::io::Write::write_all(&mut blob, b"half a file").unwrap();
        std::mem::forget(blob);
    }
    // A blob written but never indexed (crash between the two steps) is collected.
    let orphan = dir.path().join("data/blobs/ff/ff00orphan");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();
    let store = cells_emu::store::Store::open(&config).unwrap();
    assert!(!orphan.exists());
    let (n, path) = store.open_content("alice", "personal-files/a.txt").unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"committed");
    assert_eq!(n.size, 9);
    assert_eq!(
        std::fs::read_dir(dir.path().join("data/tmp"))
            .unwrap()
            .count(),
        0
    );
    assert!(store.stat("alice", "personal-files/half").is_err());
    // Password hashes and tokens live here: not world-readable.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "data dir mode {mode:o}");
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_and_mints_pats_for_the_running_server() {
    let sw = Swagger::load();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let exe = env!("CARGO_BIN_EXE_cells-emu");
    let mut child = Child(
        Command::new(exe)
            .args(["serve", "--data"])
            .arg(&data)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--user",
                "carol:pw-carol",
                "--user",
                "root:pw-root",
                "--admin",
                "root",
                "--sample",
                "--job-delay",
                "10ms",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cells-emu"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("cells-emu listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let out = Command::new(exe)
        .args([
            "admin", "user", "token", "-u", "carol", "-e", "24h", "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pat = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(is_pat_shaped(&pat), "{pat}");
    let out = Command::new(exe)
        .args([
            "admin", "user", "token", "-u", "carol", "-a", "600", "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let sliding = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = Command::new(exe)
        .args([
            "admin", "user", "token", "-u", "nobody", "-e", "1h", "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success(), "unknown users get no token");

    // The running server accepts tokens minted by another process; the sample is there.
    let http = common::http_client();
    for token in [&pat, &sliding] {
        let resp = http
            .post(format!("{url}/a/meta/bulk/get"))
            .bearer_auth(token)
            .json(&serde_json::json!({"NodePaths": ["personal-files/*"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        sw.validate("restBulkMetaResponse", &body);
        let paths = common::node_paths(&body);
        assert!(
            paths.contains(&"personal-files/Welcome.txt".to_string()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"personal-files/Photos".to_string()),
            "{paths:?}"
        );
        assert!(!paths.iter().any(|p| p.contains(".hidden")), "{paths:?}");
    }
}
