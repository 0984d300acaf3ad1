//! The `cec` binary's configuration commands against cells-emu over real HTTP: profiles in
//! the official client's format (read and written), `config add token|client-auth`,
//! `config ls|use|rm`, `clear`, `info`, `version`, non-persistent mode, the error sentences
//! (revoked/expired PAT, wrong URL, unreachable port, non-Cells server, bad TLS), and no
//! secret in any output at any log level.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn read_config(home: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(config_path(home)).expect("config file")).unwrap()
}

fn assert_one_clear_error(run: &Run, secrets: &[&str], expect: &[&str]) {
    assert_ne!(run.code(), 0, "must fail: {}", run.all());
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one sentence on stderr, got: {:?}",
        run.stderr
    );
    assert!(lines[0].starts_with("Error: "), "{}", lines[0]);
    let lower = lines[0].to_lowercase();
    assert!(
        expect.iter().any(|e| lower.contains(&e.to_lowercase())),
        "error {:?} should mention one of {expect:?}",
        lines[0]
    );
    for s in secrets {
        assert!(!run.all().contains(s), "secret leaked: {}", run.all());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_official_profile_is_usable_and_ours_keeps_the_official_shape() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let pat = mint_pat(&server, "alice");
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let alice_id = format!("alice@127.0.0.1:{port}");
    // A file exactly as the official client writes it (no keyring: secrets in clear text),
    // with a legacy auth type name and a key we do not know.
    let official = json!({
        "ActiveConfigID": alice_id,
        "Configs": {
            alice_id.clone(): {
                "authType": "Personal Access Token",
                "url": server.url,
                "user": "alice",
                "idToken": pat,
                "skipVerify": false,
                "useTokenCache": true,
                "CustomHeaders": null,
                "label": "alice@127.0.0.1",
                "skipKeyring": true,
                "createdAtVersion": "4.2.1",
                "someFutureKey": {"x": 1}
            }
        }
    });
    let path = config_path(home.path());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&official).unwrap()).unwrap();

    let info = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(info.code(), 0, "{}", info.all());
    assert!(info.stdout.contains("alice"), "{}", info.stdout);
    assert!(info.stdout.contains(&alice_id));
    assert!(!info.all().contains(&pat));

    // Add bob with a PAT from the environment, secrets in the file (--skip-keyring).
    let bob_pat = mint_pat(&server, "bob");
    let add = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "add", "token", "--skip-keyring", "--url"])
            .arg(format!("{}/some/path/", server.url))
            .env("CEC_TOKEN", &bob_pat);
        c
    })
    .await;
    assert_eq!(add.code(), 0, "{}", add.all());
    assert!(add.stderr.contains("clear text"), "warns: {}", add.stderr);
    assert!(!add.all().contains(&bob_pat));

    let written = read_config(home.path());
    let bob_id = format!("bob@127.0.0.1:{port}");
    assert_eq!(written["ActiveConfigID"], json!(bob_id));
    let bob = &written["Configs"][&bob_id];
    assert_eq!(bob["authType"], json!("pat"));
    assert_eq!(
        bob["url"],
        json!(server.url),
        "URL cleaned to scheme://host:port"
    );
    assert_eq!(bob["user"], json!("bob"));
    assert_eq!(bob["idToken"], json!(bob_pat));
    assert_eq!(bob["skipKeyring"], json!(true));
    assert_eq!(bob["label"], json!("bob@127.0.0.1"));
    assert_eq!(bob["useTokenCache"], json!(true));
    // The other profile and the unknown key survived the rewrite.
    assert_eq!(
        written["Configs"][&alice_id]["someFutureKey"],
        json!({"x": 1})
    );
    assert_eq!(written["Configs"][&alice_id]["idToken"], json!(pat));

    // A 0600 file; the folder, made by the official client, is left as it was (issue 23:
    // cec never changes the mode of an existing folder; those it creates are 0700).
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o755);

    // ls shows both, bob active; use switches; rm removes.
    let ls = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "ls"]);
        c
    })
    .await;
    assert_eq!(ls.code(), 0);
    assert!(ls.stdout.contains("alice@127.0.0.1") && ls.stdout.contains("bob@127.0.0.1"));
    let active_line = ls.stdout.lines().find(|l| l.starts_with('*')).unwrap();
    assert!(active_line.contains("bob"), "{}", ls.stdout);
    assert!(!ls.all().contains(&pat) && !ls.all().contains(&bob_pat));

    let use_alice = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "use", &alice_id]);
        c
    })
    .await;
    assert_eq!(use_alice.code(), 0, "{}", use_alice.all());
    assert_eq!(read_config(home.path())["ActiveConfigID"], json!(alice_id));

    let rm = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "rm", &bob_id]);
        c
    })
    .await;
    assert_eq!(rm.code(), 0, "{}", rm.all());
    let after = read_config(home.path());
    assert!(after["Configs"].get(&bob_id).is_none());
    assert_eq!(after["ActiveConfigID"], json!(alice_id));

    let rm_missing = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "rm", "nobody@nowhere:1"]);
        c
    })
    .await;
    assert_eq!(rm_missing.code(), 3, "{}", rm_missing.all());

    let clear = run({
        let mut c = cec_cmd(home.path());
        c.args(["clear", "--yes"]);
        c
    })
    .await;
    assert_eq!(clear.code(), 0, "{}", clear.all());
    assert_eq!(read_config(home.path())["Configs"], json!({}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_auth_profile_logs_in_with_login_and_password() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let add = run({
        let mut c = cec_cmd(home.path());
        c.args([
            "config",
            "add",
            "client-auth",
            "--skip-keyring",
            "--url",
            &server.url,
            "--login",
            "bob",
        ])
        .env("CEC_PASSWORD", "secret-bob");
        c
    })
    .await;
    assert_eq!(add.code(), 0, "{}", add.all());
    let cfg = read_config(home.path());
    let id = cfg["ActiveConfigID"].as_str().unwrap().to_string();
    assert!(id.starts_with("bob@127.0.0.1:"));
    assert_eq!(cfg["Configs"][&id]["authType"], json!("session"));
    let info = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(info.code(), 0, "{}", info.all());
    assert!(info.stdout.contains("Login/Password"));
    assert!(!info.all().contains("secret-bob"));

    let bad = run({
        let mut c = cec_cmd(home.path());
        c.args([
            "config",
            "add",
            "client-auth",
            "--skip-keyring",
            "--url",
            &server.url,
            "--login",
            "bob",
        ])
        .env("CEC_PASSWORD", "wrong-password");
        c
    })
    .await;
    assert_one_clear_error(&bad, &["wrong-password"], &["refused"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_persistent_mode_from_environment_flags_anywhere_and_token_file() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let pat = mint_pat(&server, "alice");

    let env_run = run({
        let mut c = cec_cmd(home.path());
        c.arg("info")
            .env("CEC_URL", &server.url)
            .env("CEC_TOKEN", &pat);
        c
    })
    .await;
    assert_eq!(env_run.code(), 0, "{}", env_run.all());
    assert!(env_run.stdout.contains("alice"));
    assert!(env_run.stdout.contains("non-persistent"));
    assert!(!config_path(home.path()).exists(), "nothing is written");

    // Flags after the subcommand, token from a file (never in argv).
    let token_file = home.path().join("token");
    std::fs::write(&token_file, format!("{pat}\n")).unwrap();
    let file_run = run({
        let mut c = cec_cmd(home.path());
        c.args(["version", "--url", &server.url, "--token-file"])
            .arg(&token_file);
        c
    })
    .await;
    assert_eq!(file_run.code(), 0, "{}", file_run.all());
    assert!(file_run.stdout.contains("cec version"));
    assert!(
        file_run.stdout.contains("Pydio Cells"),
        "{}",
        file_run.stdout
    );

    // Flags beat variables: a bad CEC_TOKEN is overridden by --token-file.
    let both = run({
        let mut c = cec_cmd(home.path());
        c.args(["info", "--token-file"])
            .arg(&token_file)
            .env("CEC_URL", &server.url);
        c
    })
    .await;
    assert_eq!(both.code(), 0, "{}", both.all());

    // --url without any credential is a usage error.
    let usage = run({
        let mut c = cec_cmd(home.path());
        c.args(["info", "--url", &server.url]);
        c
    })
    .await;
    assert_eq!(usage.code(), 2, "{}", usage.all());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_and_expired_tokens_give_one_clear_sentence() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let revoked = mint_pat(&server, "alice");
    server.state().auth.revoke(&revoked);
    let r = run({
        let mut c = cec_cmd(home.path());
        c.arg("info")
            .env("CEC_URL", &server.url)
            .env("CEC_TOKEN", &revoked);
        c
    })
    .await;
    assert_one_clear_error(&r, &[&revoked], &["refused", "expired or revoked"]);

    let short = mint_pat_with(
        &server,
        "alice",
        cells_emu::auth::PatExpiry::Fixed(Duration::from_millis(500)),
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = run({
        let mut c = cec_cmd(home.path());
        c.arg("info")
            .env("CEC_URL", &server.url)
            .env("CEC_TOKEN", &short);
        c
    })
    .await;
    assert_one_clear_error(&e, &[&short], &["refused", "expired"]);
    server.stop().await;
}

/// A server that answers 404 to everything, like any web server that is not Cells.
async fn not_cells_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = "<html><body>It works!</body></html>";
                let _ = sock
                    .write_all(
                        format!(
                            "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, task)
}

/// A TLS server with a self-signed certificate (made with the openssl CLI).
async fn self_signed_tls_server(dir: &std::path::Path) -> (String, tokio::task::JoinHandle<()>) {
    let acceptor = self_signed_acceptor(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(sock).await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_url_unreachable_port_non_cells_server_and_bad_tls_fail_clearly() {
    let home = tempfile::tempdir().unwrap();
    let secret =
        "d-_-x3N8jg9VYegwf5KpKFTlYnQIzCrvbXHzS24uB7k.mibFBN2bGy3TUVzJvcrnUlI9UuM3-kzB1OekrPLLd4U";

    // Not a URL at all.
    let wrong = run({
        let mut c = cec_cmd(home.path());
        c.args([
            "config",
            "add",
            "token",
            "--skip-keyring",
            "--url",
            "files example com",
        ])
        .env("CEC_TOKEN", secret);
        c
    })
    .await;
    assert_one_clear_error(&wrong, &[secret], &["not a valid server url"]);
    assert_eq!(wrong.code(), 2);

    // Nobody listens on that port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let unreachable = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "add", "token", "--skip-keyring", "--url"])
            .arg(format!("http://127.0.0.1:{port}"))
            .env("CEC_TOKEN", secret);
        c
    })
    .await;
    assert_one_clear_error(&unreachable, &[secret], &["cannot reach", "refused"]);

    // A web server that is not Cells.
    let (other, task) = not_cells_server().await;
    let not_cells = run({
        let mut c = cec_cmd(home.path());
        c.args(["info", "--url", &other]).env("CEC_TOKEN", secret);
        c
    })
    .await;
    assert_one_clear_error(
        &not_cells,
        &[secret],
        &["not answer as a pydio cells server"],
    );
    task.abort();

    // A self-signed certificate: refused, with the way out named; accepted with --skip-verify
    // (it then fails as a non-Cells server, which proves TLS passed).
    let (tls_url, tls_task) = self_signed_tls_server(home.path()).await;
    let bad_tls = run({
        let mut c = cec_cmd(home.path());
        c.args(["info", "--url", &tls_url]).env("CEC_TOKEN", secret);
        c
    })
    .await;
    assert_one_clear_error(&bad_tls, &[secret], &["certificate"]);
    assert!(
        bad_tls.stderr.contains("--skip-verify"),
        "{}",
        bad_tls.stderr
    );
    let skip = run({
        let mut c = cec_cmd(home.path());
        c.args(["info", "--skip-verify", "--url", &tls_url])
            .env("CEC_TOKEN", secret);
        c
    })
    .await;
    assert_one_clear_error(&skip, &[secret], &["not answer as a pydio cells server"]);
    tls_task.abort();

    // No profile at all.
    let none = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_one_clear_error(&none, &[], &["cec config add"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_output_at_any_log_level() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let pat = mint_pat(&server, "alice");
    for level in ["error", "warn", "info", "debug", "trace"] {
        let r = run({
            let mut c = cec_cmd(home.path());
            c.args(["--log", level, "info"])
                .env("CEC_URL", &server.url)
                .env("CEC_TOKEN", &pat);
            c
        })
        .await;
        assert_eq!(r.code(), 0, "{}", r.all());
        assert!(
            !r.all().contains(&pat),
            "token in output at {level}: {}",
            r.all()
        );
        // Nor the second half of the token alone (as it would appear in a SigV4 header).
        let tail = &pat[pat.len() - 20..];
        assert!(!r.all().contains(tail));
    }
    // The password of a client-auth profile neither.
    let r = run({
        let mut c = cec_cmd(home.path());
        c.args([
            "--log",
            "trace",
            "config",
            "add",
            "client-auth",
            "--skip-keyring",
            "--url",
            &server.url,
            "--login",
            "alice",
        ])
        .env("CEC_PASSWORD", "secret-alice");
        c
    })
    .await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(!r.all().contains("secret-alice"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn completion_and_doc_are_generated_from_the_cli_definition() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let r = run({
            let mut c = cec_cmd(home.path());
            c.args(["completion", shell]);
            c
        })
        .await;
        assert_eq!(r.code(), 0, "{}", r.all());
        assert!(r.stdout.contains("cec"));
        assert!(
            r.stdout.contains("check-keyring"),
            "{shell} completes subcommands"
        );
    }
    let out = home.path().join("man");
    let r = run({
        let mut c = cec_cmd(home.path());
        c.args(["doc", "--format", "man", "--out"]).arg(&out);
        c
    })
    .await;
    assert_eq!(r.code(), 0, "{}", r.all());
    let page = std::fs::read_to_string(out.join("cec-config-add-oauth.1")).unwrap();
    assert!(
        page.contains(".TH") && page.contains("no\\-browser"),
        "{page}"
    );
    let md = home.path().join("md");
    let r = run({
        let mut c = cec_cmd(home.path());
        c.args(["doc", "--out"]).arg(&md);
        c
    })
    .await;
    assert_eq!(r.code(), 0, "{}", r.all());
    let mut text = String::new();
    std::fs::File::open(md.join("cec.md"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("cec config") && text.contains("--skip-keyring"));
    // Usage errors exit 2.
    let bad = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "frobnicate"]);
        c
    })
    .await;
    assert_eq!(bad.code(), 2);
    let _ = std::io::stdout().flush();
}

#[tokio::test(flavor = "multi_thread")]
async fn relog_replaces_a_revoked_token_of_the_same_profile() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let old = mint_pat(&server, "alice");
    let add = run({
        let mut c = cec_cmd(home.path());
        c.args([
            "config",
            "add",
            "token",
            "--skip-keyring",
            "--url",
            &server.url,
        ])
        .env("CEC_TOKEN", &old);
        c
    })
    .await;
    assert_eq!(add.code(), 0, "{}", add.all());
    let id = read_config(home.path())["ActiveConfigID"]
        .as_str()
        .unwrap()
        .to_string();
    server.state().auth.revoke(&old);
    let info = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_ne!(info.code(), 0);
    let new = mint_pat(&server, "alice");
    let relog = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "relog", &id]).env("CEC_TOKEN", &new);
        c
    })
    .await;
    assert_eq!(relog.code(), 0, "{}", relog.all());
    let cfg = read_config(home.path());
    assert_eq!(cfg["ActiveConfigID"], json!(id));
    assert_eq!(cfg["Configs"][&id]["idToken"], json!(new));
    assert_eq!(cfg["Configs"].as_object().unwrap().len(), 1);
    let info = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(info.code(), 0, "{}", info.all());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_reachable_keyring_secrets_fall_back_to_the_file_with_a_warning() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let no_bus = "unix:path=/nonexistent/cec-test-no-bus";
    let check = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "check-keyring"])
            .env("DBUS_SESSION_BUS_ADDRESS", no_bus);
        c
    })
    .await;
    assert_eq!(check.code(), 1, "{}", check.all());
    assert!(check.stderr.contains("not usable"), "{}", check.stderr);

    let pat = mint_pat(&server, "alice");
    let add = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "add", "token", "--url", &server.url])
            .env("CEC_TOKEN", &pat)
            .env("DBUS_SESSION_BUS_ADDRESS", no_bus);
        c
    })
    .await;
    assert_eq!(add.code(), 0, "{}", add.all());
    assert!(
        add.stderr.contains("Warning") && add.stderr.contains("clear text"),
        "{}",
        add.stderr
    );
    assert!(!add.all().contains(&pat));
    let cfg = read_config(home.path());
    let id = cfg["ActiveConfigID"].as_str().unwrap();
    assert_eq!(cfg["Configs"][id]["skipKeyring"], json!(true));
    assert_eq!(cfg["Configs"][id]["idToken"], json!(pat));
    // And the profile is usable without any keyring.
    let info = run({
        let mut c = cec_cmd(home.path());
        c.arg("info").env("DBUS_SESSION_BUS_ADDRESS", no_bus);
        c
    })
    .await;
    assert_eq!(info.code(), 0, "{}", info.all());
    assert!(info.stdout.contains("clear text"));

    // Non-persistent login/password from the environment.
    let session = run({
        let mut c = cec_cmd(home.path());
        c.args(["info", "--url", &server.url, "--login", "bob"])
            .env("CEC_PASSWORD", "secret-bob");
        c
    })
    .await;
    assert_eq!(session.code(), 0, "{}", session.all());
    assert!(session.stdout.contains("User:         bob"));
    server.stop().await;
}
