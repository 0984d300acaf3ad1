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

mod cli_ctx;
#[allow(unused_imports)] // not every test crate drives the command line
pub use cli_ctx::CliCtx;

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

/// Play the browser's part of an OAuth login: follow the authorize URL to the login form,
/// submit `login`/`password`, and return where the server redirects (the client's
/// `redirect_uri` with `code` and `state`).
pub async fn browser_login(
    server_url: &str,
    authorize_url: &str,
    login: &str,
    password: &str,
) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let absolute = |loc: &str| {
        if loc.starts_with("http") {
            loc.to_string()
        } else {
            format!("{server_url}{loc}")
        }
    };
    let r = http.get(authorize_url).send().await.expect("authorize");
    assert!(
        r.status().is_redirection(),
        "authorize answered {}",
        r.status()
    );
    let form_url = absolute(r.headers()["location"].to_str().unwrap());
    let page = http
        .get(&form_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"login_challenge\" value=\"";
    let start = page.find(marker).expect("login form with a challenge") + marker.len();
    let challenge = &page[start..start + page[start..].find('"').unwrap()];
    let r = http
        .post(format!("{server_url}/oauth2/login"))
        .form(&[
            ("login_challenge", challenge),
            ("login", login),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "login answered {}", r.status());
    absolute(r.headers()["location"].to_str().unwrap())
}

/// Read the code the server's `/oauth2/oob` page shows.
pub async fn oob_code(oob_url: &str) -> String {
    let page = reqwest::get(oob_url).await.unwrap().text().await.unwrap();
    let marker = "<code id=\"code\">";
    let start = page.find(marker).expect("OOB page shows a code") + marker.len();
    page[start..start + page[start..].find("</code>").unwrap()].to_string()
}

/// A stored OAuth profile (secrets in the file) for `login`, obtained through the real OOB
/// flow. Returns the config store and the profile id.
pub async fn oauth_profile(
    server: &TestServer,
    home: &Path,
    login: &str,
) -> (cec::config::ConfigStore, String) {
    use cec::auth::oauth::{PendingAuthorization, oob_redirect};
    let pending = PendingAuthorization::new(&server.url, &oob_redirect(&server.url)).unwrap();
    let location =
        browser_login(&server.url, &pending.url, login, &format!("secret-{login}")).await;
    let code = oob_code(&location).await;
    let http = reqwest::Client::new();
    let set = pending
        .exchange(&http, &server.url, &code)
        .await
        .expect("code exchange");
    let store = cec::config::ConfigStore::new(config_path(home), true);
    let profile = cec::config::Profile {
        auth_type: "oauth2".into(),
        url: server.url.clone(),
        user: login.into(),
        id_token: set.access_token,
        refresh_token: set.refresh_token,
        token_expires_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + set.expires_in,
        use_token_cache: true,
        skip_keyring: true,
        label: format!("{login}@127.0.0.1"),
        ..Default::default()
    };
    let (id, _) = tokio::task::spawn_blocking({
        let store = store.clone();
        move || store.store_profile(&profile, true, None)
    })
    .await
    .unwrap()
    .unwrap();
    (store, id)
}

/// A TLS acceptor with a fresh self-signed certificate for `localhost` (made with the openssl
/// CLI in `dir`), for tests of certificate verification.
pub fn self_signed_acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    let (cert, key, pem_key) = (dir.join("c.der"), dir.join("k.der"), dir.join("k.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-outform", "DER", "-keyout"])
        .arg(&pem_key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(&pem_key)
        .arg("-out")
        .arg(&key)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use tokio_rustls::rustls;
    let certs = vec![rustls::pki_types::CertificateDer::from(
        std::fs::read(&cert).unwrap(),
    )];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(std::fs::read(&key).unwrap().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
