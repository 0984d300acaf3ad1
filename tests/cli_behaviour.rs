//! The CLI as people expect it: `cec info` shows the profile even when its token expired,
//! a command whose stdout reader went away ends quietly (no panic), and the official
//! client's v4.1 spellings of the global flags are accepted (hidden).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn info_shows_the_profile_whose_token_expired() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let pat = mint_pat_with(
        &server,
        "alice",
        cells_emu::auth::PatExpiry::Fixed(Duration::from_millis(300)),
    );
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let id = format!("alice@127.0.0.1:{port}");
    let config = json!({
        "ActiveConfigID": id,
        "Configs": { id.clone(): {
            "authType": "Personal Access Token",
            "url": server.url,
            "user": "alice",
            "idToken": pat,
            "skipKeyring": true,
        }}
    });
    let path = config_path(home.path());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;

    let r = run({
        let mut c = cec_cmd(home.path());
        c.arg("info");
        c
    })
    .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stdout.contains(&id), "which profile: {}", r.all());
    assert!(r.stdout.contains(&server.url), "{}", r.all());
    assert!(r.stdout.contains("alice"), "{}", r.all());
    assert!(r.stderr.contains(&id), "{}", r.stderr);
    assert!(r.stderr.contains("expired"), "{}", r.stderr);
    // The advice fits: the profile exists, relog replaces its token.
    assert!(
        r.stderr.contains(&format!("cec config relog {id}")),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("config add token"), "{}", r.stderr);
    assert!(!r.all().contains(&pat), "secret leaked");
    // `config ls` shows the ids the messages use.
    let ls = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "ls"]);
        c
    })
    .await;
    assert!(ls.stdout.contains(&id), "{}", ls.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn advice_fits_the_situation() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    // No profile at all: the advice names a real command.
    let r = run({
        let mut c = cec_cmd(home.path());
        c.args(["ls"]);
        c
    })
    .await;
    assert_ne!(r.code(), 0, "{}", r.all());
    assert!(r.stderr.contains("cec config add oauth"), "{}", r.stderr);
    // A wrong password while adding a profile: no relog (there is nothing to relog yet).
    let r = run({
        let mut c = cec_cmd(home.path());
        c.args(["config", "add", "client-auth", "--skip-keyring"])
            .args(["--url", &server.url, "--login", "alice"])
            .env("CEC_PASSWORD", "wrong-password");
        c
    })
    .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
    assert!(!r.stderr.contains("relog"), "{}", r.stderr);
    assert!(!r.all().contains("wrong-password"));
    // A revoked token read from --token-file: the advice names the file, not --token.
    let revoked = mint_pat(&server, "alice");
    server.state().auth.revoke(&revoked);
    let file = home.path().join("token.txt");
    std::fs::write(&file, &revoked).unwrap();
    let r = run({
        let mut c = cec_cmd(home.path());
        c.args(["ls", "--url", &server.url, "--token-file"])
            .arg(&file);
        c
    })
    .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("token.txt"), "{}", r.stderr);
    assert!(!r.stderr.contains("--token /"), "{}", r.stderr);
    assert!(!r.all().contains(&revoked));
}

/// Run `cec` with a stdout whose reader is already gone.
fn with_closed_stdout(mut cmd: std::process::Command) -> std::process::Output {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    cmd.stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped());
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_commands_quietly() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let token = mint_pat(&server, "alice");
    let commands: [&[&str]; 5] = [
        &["completion", "zsh"],
        &["ls", "personal-files"],
        &["info"],
        &["version"],
        &["tools", "hash", "--file", "/etc/hostname"],
    ];
    for args in commands {
        let mut c = cec_cmd(home.path());
        c.args(args)
            .env("CEC_URL", &server.url)
            .env("CEC_TOKEN", &token);
        let out = tokio::task::spawn_blocking(move || with_closed_stdout(c))
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() != Some(101) && !stderr.contains("panicked"),
            "cec {args:?} panicked: {stderr}"
        );
        assert!(
            out.status.signal() == Some(libc::SIGPIPE) || out.status.code() == Some(0),
            "cec {args:?}: {:?} {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "cec {args:?} said: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_v4_1_flag_spellings_are_accepted_and_hidden() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let token = mint_pat(&server, "alice");
    let r = run({
        let mut c = cec_cmd(home.path());
        c.args(["--no_cache", "--skip_keyring", "--skip_verify", "ls"])
            .env("CEC_URL", &server.url)
            .env("CEC_TOKEN", &token);
        c
    })
    .await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(r.stdout.contains("personal-files"), "{}", r.stdout);
    let help = run({
        let mut c = cec_cmd(home.path());
        c.arg("--help");
        c
    })
    .await;
    assert!(help.stdout.contains("--skip-verify"), "{}", help.stdout);
    assert!(!help.stdout.contains("skip_verify"), "{}", help.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn help_puts_global_flags_apart_and_env_values_do_not_look_required() {
    let home = tempfile::tempdir().unwrap();
    let help = run({
        let mut c = cec_cmd(home.path());
        c.args(["ls", "--help"]);
        c
    })
    .await;
    let out = &help.stdout;
    let global = out.find("Global options:").expect(out);
    let own = out.find("--details").expect(out);
    let url = out.find("--url").expect(out);
    assert!(own < global && global < url, "{out}");
    // A usage error with CEC_URL/CEC_TOKEN set: the usage line is the command's own.
    let r = run({
        let mut c = cec_cmd(home.path());
        c.args(["scp", "only-one"])
            .env("CEC_URL", "http://127.0.0.1:9")
            .env("CEC_TOKEN", "not-a-real-token");
        c
    })
    .await;
    assert_eq!(r.code(), 2, "{}", r.all());
    let usage = r
        .stderr
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .expect(&r.stderr);
    assert!(
        !usage.contains("--url") && !usage.contains("--token"),
        "{usage}"
    );
    assert!(!r.all().contains("not-a-real-token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_profile_url_is_checked_and_the_error_says_what_to_type() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let token = mint_pat(&server, "alice");
    let hostport = server.url.trim_start_matches("http://").to_string();
    let add = |url: String| {
        let mut c = cec_cmd(home.path());
        c.args(["config", "add", "token", "--skip-keyring", "--url", &url])
            .env("CEC_TOKEN", &token);
        run(c)
    };
    // No scheme: the scheme that answers is proposed.
    let r = add(hostport.clone()).await;
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(r.stderr.contains("no scheme"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("`{}`", server.url)),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("relative URL"), "{}", r.stderr);
    // https:// against a plain HTTP server.
    let r = add(format!("https://{hostport}")).await;
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(r.stderr.contains("plain HTTP"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("`{}`", server.url)),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("InvalidContentType"), "{}", r.stderr);
    // A path is not silently accepted: said, and the profile points at the root.
    let r = add(format!("{}/wrong", server.url)).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(r.stderr.contains("/wrong"), "{}", r.stderr);
    assert!(!r.all().contains(&token), "secret leaked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_url_at_the_prompt_is_asked_again() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let token = mint_pat(&server, "alice");
    // A terminal (script(1)): the URL is prompted; the first answer has no scheme.
    let hostport = server.url.trim_start_matches("http://").to_string();
    let line = format!("{} config add token --skip-keyring", cec_bin().display());
    let c = cec_cmd(home.path());
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
        .env("CEC_TOKEN", &token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = script.spawn().expect("script");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{hostport}").unwrap();
        stdin.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        writeln!(stdin, "{}", server.url).unwrap();
        stdin.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("no scheme"), "{all}");
    assert!(all.contains("try again"), "{all}");
    assert_eq!(all.matches("Server URL:").count(), 2, "{all}");
    let config = std::fs::read_to_string(config_path(home.path())).unwrap();
    assert!(config.contains(&server.url), "{config}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_path_is_named_as_such() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let token = mint_pat(&server, "alice");
    let r = run({
        let mut c = cec_cmd(home.path());
        c.args(["mkdir", ""])
            .env("CEC_URL", &server.url)
            .env("CEC_TOKEN", &token);
        c
    })
    .await;
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(!r.stderr.contains("Error: :"), "{}", r.stderr);
    assert!(r.stderr.contains("give a path"), "{}", r.stderr);
}
