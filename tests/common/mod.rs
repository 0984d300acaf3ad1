//! Shared helpers of the integration tests: start a cells-emu on loopback, mint PATs, run the
//! `cec` binary with an isolated configuration (its own config dir, no inherited `CEC_*`).
//!
//! Use from a test file with `mod common;`. Not every test file uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cells_emu::{EmuConfig, RunningEmulator};

/// A running emulator with its data directory (removed on drop).
pub struct TestServer {
    pub emu: Option<RunningEmulator>,
    pub url: String,
    pub data: tempfile::TempDir,
}

impl TestServer {
    pub fn state(&self) -> &cells_emu::SharedState {
        &self.emu.as_ref().expect("emulator running").state
    }

    /// Stop serving (also done, without waiting, when dropped with the runtime).
    pub async fn stop(mut self) {
        if let Some(emu) = self.emu.take() {
            emu.stop().await;
        }
    }
}

/// An emulator with the test configuration (users alice/bob/admin, password `secret-<login>`).
pub async fn spawn_emulator() -> TestServer {
    spawn_emulator_with(|_| {}).await
}

/// An emulator with the test configuration adjusted by `adjust`.
pub async fn spawn_emulator_with(adjust: impl FnOnce(&mut EmuConfig)) -> TestServer {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = EmuConfig::for_tests(data.path().join("emu"));
    adjust(&mut config);
    let emu = cells_emu::start(config).await.expect("emulator starts");
    TestServer {
        url: emu.url.clone(),
        emu: Some(emu),
        data,
    }
}

/// A PAT for `login`, valid for a day.
pub fn mint_pat(server: &TestServer, login: &str) -> String {
    server
        .state()
        .auth
        .mint_pat(
            login,
            cells_emu::auth::PatExpiry::Fixed(Duration::from_secs(24 * 3600)),
        )
        .expect("mint PAT")
}

/// A PAT with a custom expiry.
pub fn mint_pat_with(
    server: &TestServer,
    login: &str,
    expiry: cells_emu::auth::PatExpiry,
) -> String {
    server
        .state()
        .auth
        .mint_pat(login, expiry)
        .expect("mint PAT")
}

/// Path of the `cec` binary under test.
pub fn cec_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cec"))
}

/// A `cec` command isolated in `home`: `XDG_CONFIG_HOME`/`HOME` inside it, no inherited
/// `CEC_*` variable, a dead browser. The D-Bus session (for the keyring) is inherited.
pub fn cec_cmd(home: &Path) -> Command {
    let mut cmd = Command::new(cec_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("CEC_") && k != "CEC_TEST_REQUIRE_KEYRING" && k != "CEC_TEST_REQUIRE_FUSE"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("BROWSER", "false")
        .stdin(std::process::Stdio::null());
    cmd
}

/// The official client's config file path inside an isolated home.
pub fn config_path(home: &Path) -> PathBuf {
    home.join("config")
        .join("pydio")
        .join("cells-client")
        .join("config.json")
}

/// Output of a finished command, as text.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run a command to completion off the async runtime (the emulator keeps serving).
pub async fn run(mut cmd: Command) -> Run {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("spawn cec");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An `HttpCellsApi` for `server` authenticated with `token`.
pub fn api_with_token(server: &TestServer, token: &str) -> Arc<cec::api::http::HttpCellsApi> {
    let tokens = Arc::new(cec::auth::StaticToken::new(token, "test token"));
    Arc::new(
        cec::api::http::HttpCellsApi::new(&server.url, tokens, fast_options()).expect("client"),
    )
}

/// Client options with short retry delays, for tests.
pub fn fast_options() -> cec::api::http::HttpOptions {
    cec::api::http::HttpOptions {
        retry_base_delay: Duration::from_millis(20),
        ..Default::default()
    }
}

/// Whether the tests must fail (not skip) when the keyring is unusable.
pub fn keyring_required() -> bool {
    std::env::var("CEC_TEST_REQUIRE_KEYRING").is_ok_and(|v| !v.is_empty() && v != "0")
}
