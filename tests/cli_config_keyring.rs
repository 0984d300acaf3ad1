//! Secrets in the real OS keyring (Secret Service under `scripts/test`'s D-Bus session), in
//! the official client's formats: service `com.pydio.cells-client`, account `<url>::<login>`.
//! These tests need a usable keyring and FAIL (never skip) without one.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

fn secret_tool_lookup(account: &str) -> Option<String> {
    let out = Command::new("secret-tool")
        .args([
            "lookup",
            "service",
            "com.pydio.cells-client",
            "username",
            account,
        ])
        .output()
        .expect("secret-tool (Debian libsecret-tools) is installed");
    if out.status.success() && !out.stdout.is_empty() {
        Some(
            String::from_utf8_lossy(&out.stdout)
                .trim_end_matches('\n')
                .to_string(),
        )
    } else {
        None
    }
}

/// Store an item the way the official client (go-keyring) does: attributes service+username.
fn secret_tool_store(account: &str, secret: &str) {
    let mut child = Command::new("secret-tool")
        .args([
            "store",
            "--label=official cec",
            "service",
            "com.pydio.cells-client",
            "username",
            account,
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("secret-tool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(secret.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_keyring_holds_secrets_in_the_official_formats() {
    let home = tempfile::tempdir().unwrap();
    let check = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "check-keyring"]);
        c
    })
    .await;
    assert_eq!(
        check.code(),
        0,
        "a usable keyring is required (run the suite with scripts/test): {}",
        check.all()
    );
    assert!(check.stdout.contains("working"));

    let server = spawn_emulator().await;
    let pat = mint_pat(&server, "alice");
    let add = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "add", "token", "--url", &server.url])
            .env("CEC_TOKEN", &pat);
        c
    })
    .await;
    assert_eq!(add.code(), 0, "{}", add.all());
    assert!(!add.stderr.contains("clear text"), "{}", add.stderr);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config_path(home.path())).unwrap()).unwrap();
    let id = cfg["ActiveConfigID"].as_str().unwrap().to_string();
    let profile = &cfg["Configs"][&id];
    assert!(
        profile.get("idToken").is_none(),
        "no secret in the file: {profile}"
    );
    assert_eq!(profile["skipKeyring"], json!(false));
    let account = format!("{}::alice", server.url);
    assert_eq!(secret_tool_lookup(&account).as_deref(), Some(pat.as_str()));

    let info = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(info.code(), 0, "{}", info.all());
    assert!(info.stdout.contains("the keyring"));

    // An entry written by the official client (go-keyring attributes) is found.
    let bob_pat = mint_pat(&server, "bob");
    let bob_account = format!("{}::bob", server.url);
    secret_tool_store(&bob_account, &bob_pat);
    let port = server.url.rsplit(':').next().unwrap();
    let bob_id = format!("bob@127.0.0.1:{port}");
    let mut cfg = cfg.clone();
    cfg["Configs"][&bob_id] = json!({
        "authType": "pat", "url": server.url, "user": "bob", "skipVerify": false,
        "useTokenCache": true, "CustomHeaders": null, "label": "bob@127.0.0.1",
        "skipKeyring": false, "createdAtVersion": "4.3.1"
    });
    cfg["ActiveConfigID"] = json!(bob_id);
    std::fs::write(config_path(home.path()), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let info = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(info.code(), 0, "{}", info.all());
    assert!(info.stdout.contains("User:         bob"), "{}", info.stdout);

    // Removing a profile removes its keyring entry.
    let rm = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "rm", &id]);
        c
    })
    .await;
    assert_eq!(rm.code(), 0, "{}", rm.all());
    assert_eq!(secret_tool_lookup(&account), None);
    let _ = run({
        let mut c = cec_cmd(home.path());
        c.args(["clear", "--yes"]);
        c
    })
    .await;
    assert_eq!(secret_tool_lookup(&bob_account), None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_tokens_live_in_the_keyring_and_refreshes_update_it() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let server = spawn_emulator_with(|c| c.access_token_ttl = Duration::from_secs(2)).await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = cec_cmd(home.path());
    cmd.args([
        "config",
        "add",
        "oauth",
        "--no-browser",
        "--url",
        &server.url,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next_line().await.unwrap().expect("authorization URL");
        if line.starts_with("http") {
            break line;
        }
    };
    let location = browser_login(&server.url, &url, "alice", "secret-alice").await;
    let code = oob_code(&location).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let mut rest = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        rest.push_str(&l);
    }
    assert!(child.wait().await.unwrap().success(), "{rest}");
    assert!(
        !rest.contains("clear text"),
        "the keyring must be usable: {rest}"
    );

    let account = format!("{}::alice", server.url);
    let value = secret_tool_lookup(&account).expect("OAuth secrets in the keyring");
    let (access, refresh) = value.split_once("__//__").expect("<access>__//__<refresh>");
    assert!(!access.is_empty() && !refresh.is_empty());
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config_path(home.path())).unwrap()).unwrap();
    let id = cfg["ActiveConfigID"].as_str().unwrap().to_string();
    assert!(cfg["Configs"][&id].get("refreshToken").is_none());
    assert!(cfg["Configs"][&id].get("idToken").is_none());

    // The access token expires; `cec info` refreshes and the rotated pair lands in the keyring.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let info = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(info.code(), 0, "{}", info.all());
    let after = secret_tool_lookup(&account).unwrap();
    let (access2, refresh2) = after.split_once("__//__").unwrap();
    assert_ne!(refresh2, refresh, "rotated refresh token persisted");
    assert_ne!(access2, access);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config_path(home.path())).unwrap()).unwrap();
    assert!(
        cfg["Configs"][&id].get("refreshToken").is_none(),
        "still no secret in the file"
    );
    let _ = run({
        let mut c = cec_cmd(home.path());
        c.args(["clear", "--yes"]);
        c
    })
    .await;
    assert_eq!(secret_tool_lookup(&account), None);
    server.stop().await;
}
