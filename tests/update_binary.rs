//! `cec update` against a release manifest served on loopback: it replaces a copy of the
//! binary with the verified release, `--check` only reports, a bad checksum, a release that
//! does not run and a downgrade are refused with the old binary left byte for byte as it was
//! (and still working), and no temporary file is left beside it.
//!
//! Signatures (docs/SECURITY.md, "Updates"): each server signs its releases with a minisign
//! TEST key generated here (never the release key), which the debug build under test is told
//! to trust through `CEC_UPDATE_TEST_PUBLIC_KEY`, a variable release builds do not read; the
//! same goes for `CEC_UPDATE_TEST_LOOPBACK_HTTP`, which lets it fetch from this plain-http
//! loopback server. A tampered binary, a signature from another key, a missing signature and
//! a binary signed for another version are refused without ever being run (the "binary" would
//! touch a marker file), and plain http is refused when the test opt-in is absent, as it
//! always is in release builds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::Digest;

/// A minimal HTTP/1.1 file server on 127.0.0.1 (one request per connection), stopped on drop,
/// that signs what it publishes with its own test key.
struct ReleaseServer {
    base: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<Mutex<Vec<String>>>,
    key: minisign::KeyPair,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

impl ReleaseServer {
    fn start() -> ReleaseServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (files, requests, stop) = (files.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        continue;
                    }
                    loop {
                        let mut header = String::new();
                        match reader.read_line(&mut header) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if header.trim().is_empty() => break,
                            Ok(_) => {}
                        }
                    }
                    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
                    requests.lock().unwrap().push(path.clone());
                    let body = files.lock().unwrap().get(&path).cloned();
                    let (status, body) = match body {
                        Some(b) => ("200 OK", b),
                        None => ("404 Not Found", b"not found".to_vec()),
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                }
            })
        };
        ReleaseServer {
            base: format!("http://{addr}"),
            files,
            requests,
            key: test_key(),
            stop,
            thread: Some(thread),
            addr,
        }
    }

    fn put(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_string(), body.into());
    }

    /// Publish a manifest at /manifest.json offering `version` with `binary` (at a relative
    /// URL), the given checksum, and a signature of `binary` for `version` by the server's key.
    fn publish(&self, version: &str, binary: &[u8], sha256: &str) -> String {
        let signature = sign(&self.key, binary, version);
        self.publish_signed(version, binary, sha256, Some(&signature))
    }

    /// Publish as [`publish`], with `signature` (or none) beside the binary.
    fn publish_signed(
        &self,
        version: &str,
        binary: &[u8],
        sha256: &str,
        signature: Option<&str>,
    ) -> String {
        let name = format!("releases/{version}/cec");
        self.put(&format!("/{name}"), binary.to_vec());
        match signature {
            Some(signature) => self.put(&format!("/{name}.minisig"), signature),
            None => {
                self.files
                    .lock()
                    .unwrap()
                    .remove(&format!("/{name}.minisig"));
            }
        }
        let manifest = serde_json::json!({
            "version": version,
            "platforms": {
                cec::cli::update::platform_key(): { "url": name, "sha256": sha256 },
                "plan9-mips": { "url": "elsewhere", "sha256": "00".repeat(32) },
            }
        });
        self.put("/manifest.json", serde_json::to_vec(&manifest).unwrap());
        format!("{}/manifest.json", self.base)
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A fresh minisign TEST keypair (generated for each test; never a release key).
fn test_key() -> minisign::KeyPair {
    minisign::KeyPair::generate_unencrypted_keypair().unwrap()
}

/// A minisign signature of `binary` as a release of `version` for this platform, made with
/// `key` as `minisign -S -t "cec VERSION PLATFORM"` would (docs/SECURITY.md).
fn sign(key: &minisign::KeyPair, binary: &[u8], version: &str) -> String {
    sign_for(key, binary, version, &cec::cli::update::platform_key())
}

fn sign_for(key: &minisign::KeyPair, binary: &[u8], version: &str, platform: &str) -> String {
    let comment = cec::cli::update::expected_trusted_comment(version, platform);
    minisign::sign(
        Some(&key.pk),
        &key.sk,
        std::io::Cursor::new(binary),
        Some(&comment),
        Some("signature from a cec TEST key"),
    )
    .unwrap()
    .into_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A "release": a script that answers `--version` like cec would.
fn fake_release(version: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho \"cec {version}\"\n").into_bytes()
}

/// A copy of the test build of cec in its own directory (the binary that gets updated).
fn installed_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let target = bin.join("cec");
    std::fs::copy(env!("CARGO_BIN_EXE_cec"), &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    target
}

/// `binary ARGS` without any CEC_ variable of the test's environment.
fn command(binary: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary);
    for (k, _) in std::env::vars() {
        if k.starts_with("CEC_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args);
    cmd
}

fn run(binary: &Path, args: &[&str]) -> Output {
    command(binary, args).output().unwrap()
}

/// `cec update ...` told to trust `server`'s test key and to fetch from it over loopback http
/// (both debug-build-only test switches).
fn update_cmd(server: &ReleaseServer, binary: &Path, args: &[&str]) -> Command {
    let mut cmd = command(binary, args);
    cmd.env("CEC_UPDATE_TEST_PUBLIC_KEY", server.key.pk.to_base64())
        .env("CEC_UPDATE_TEST_LOOPBACK_HTTP", "1");
    cmd
}

fn run_update(server: &ReleaseServer, binary: &Path, args: &[&str]) -> Output {
    update_cmd(server, binary, args).output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn file_sha(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// Nothing but the binary in its directory (no staged leftovers).
fn assert_alone(binary: &Path) {
    let names: Vec<String> = std::fs::read_dir(binary.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["cec"], "leftovers beside the binary");
}

/// The old binary is untouched and still works.
fn assert_old_binary_intact(binary: &Path, original_sha: &str) {
    assert_eq!(file_sha(binary), original_sha, "the binary was modified");
    let out = run(binary, &["--version"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        show(&out)
    );
    assert_alone(binary);
}

#[test]
fn update_replaces_the_binary_after_checking_it_and_refuses_a_bad_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let binary = installed_copy(dir.path());
    let original = file_sha(&binary);
    let server = ReleaseServer::start();
    let release = fake_release("9.9.9");

    // A checksum that does not match: refused, nothing changed.
    let url = server.publish("9.9.9", &release, &sha256_hex(b"something else"));
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("checksum mismatch"), "{}", show(&out));
    assert_old_binary_intact(&binary, &original);

    // Right checksum: --check only reports.
    let url = server.publish("9.9.9", &release, &sha256_hex(&release));
    let out = run_update(
        &server,
        &binary,
        &["update", "--check", "--manifest-url", &url],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("9.9.9 is available"),
        "{}",
        show(&out)
    );
    assert_old_binary_intact(&binary, &original);

    // The update itself (manifest URL from the environment this time).
    let out = update_cmd(&server, &binary, &["update"])
        .env("CEC_UPDATE_MANIFEST_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("updated from"),
        "{}",
        show(&out)
    );
    assert_eq!(file_sha(&binary), sha256_hex(&release));
    let mode = std::fs::metadata(&binary).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "permissions not kept: {mode:o}");
    let out = run(&binary, &["--version"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cec 9.9.9");
    assert_alone(&binary);
}

#[test]
fn a_release_that_does_not_run_or_reports_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let binary = installed_copy(dir.path());
    let original = file_sha(&binary);
    let server = ReleaseServer::start();

    // Checksum right, but not a program for this machine.
    let garbage = b"\x7fELF but not really a program".to_vec();
    let url = server.publish("9.9.9", &garbage, &sha256_hex(&garbage));
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("was not replaced"), "{}", show(&out));
    assert_old_binary_intact(&binary, &original);

    // Runs, but is not the announced version.
    let wrong = fake_release("9.9.8");
    let url = server.publish("9.9.9", &wrong, &sha256_hex(&wrong));
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("not version 9.9.9"), "{}", show(&out));
    assert_old_binary_intact(&binary, &original);

    // No binary for this platform.
    server.put(
        "/manifest.json",
        serde_json::to_vec(&serde_json::json!({
            "version": "9.9.9",
            "platforms": { "plan9-mips": { "url": "x", "sha256": "00".repeat(32) } }
        }))
        .unwrap(),
    );
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).contains("no binary for this platform"),
        "{}",
        show(&out)
    );
    assert_old_binary_intact(&binary, &original);

    // A manifest URL that serves nothing.
    let out = run_update(
        &server,
        &binary,
        &[
            "update",
            "--manifest-url",
            &format!("{}/missing.json", server.base),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("404"), "{}", show(&out));
    assert_old_binary_intact(&binary, &original);
}

#[test]
fn a_downgrade_is_refused_unless_asked_and_the_same_version_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let binary = installed_copy(dir.path());
    let original = file_sha(&binary);
    let server = ReleaseServer::start();

    let same = fake_release(env!("CARGO_PKG_VERSION"));
    let url = server.publish(env!("CARGO_PKG_VERSION"), &same, &sha256_hex(&same));
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(show(&out).contains("up to date"), "{}", show(&out));
    assert_old_binary_intact(&binary, &original);

    let old = fake_release("0.0.1");
    let url = server.publish("0.0.1", &old, &sha256_hex(&old));
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).contains("refusing to downgrade"),
        "{}",
        show(&out)
    );
    assert_old_binary_intact(&binary, &original);

    let out = run_update(
        &server,
        &binary,
        &["update", "--allow-downgrade", "--manifest-url", &url],
    );
    assert!(out.status.success(), "{}", show(&out));
    let out = run(&binary, &["--version"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cec 0.0.1");
    assert_alone(&binary);
}

/// A "release" that, if it were ever run, would leave `marker` behind.
fn hostile_release(version: &str, marker: &Path) -> Vec<u8> {
    format!(
        "#!/bin/sh\ntouch '{}'\necho \"cec {version}\"\n",
        marker.display()
    )
    .into_bytes()
}

/// Refused, with `why` in the message; never run; the old binary intact.
fn assert_refused_unrun(out: &Output, why: &str, marker: &Path, binary: &Path, original: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    assert!(show(out).contains(why), "expected {why:?}: {}", show(out));
    assert!(
        !marker.exists(),
        "the unverified binary was run: {}",
        show(out)
    );
    assert_old_binary_intact(binary, original);
}

#[test]
fn a_binary_whose_signature_does_not_hold_is_refused_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let binary = installed_copy(dir.path());
    let original = file_sha(&binary);
    let marker = dir.path().join("the-download-ran");
    let server = ReleaseServer::start();
    let genuine = fake_release("9.9.9");
    let hostile = hostile_release("9.9.9", &marker);

    // Tampered bytes: the genuine release's signature, other bytes (and the manifest's
    // checksum made to match them, as whoever altered them would).
    let url = server.publish_signed(
        "9.9.9",
        &hostile,
        &sha256_hex(&hostile),
        Some(&sign(&server.key, &genuine, "9.9.9")),
    );
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_refused_unrun(
        &out,
        "signature does not match",
        &marker,
        &binary,
        &original,
    );
    assert!(
        show(&out).contains("not installed, nor run"),
        "{}",
        show(&out)
    );

    // Signed, but with another key than the trusted one.
    let other = test_key();
    let url = server.publish_signed(
        "9.9.9",
        &hostile,
        &sha256_hex(&hostile),
        Some(&sign(&other, &hostile, "9.9.9")),
    );
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_refused_unrun(&out, "made with another key", &marker, &binary, &original);

    // No signature at all: refused before the binary is even downloaded.
    let url = server.publish_signed("9.9.9", &hostile, &sha256_hex(&hostile), None);
    server.requests.lock().unwrap().clear();
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_refused_unrun(
        &out,
        "no signature for this release",
        &marker,
        &binary,
        &original,
    );
    assert!(show(&out).contains("404"), "{}", show(&out));
    assert!(
        !server
            .requests
            .lock()
            .unwrap()
            .contains(&"/releases/9.9.9/cec".to_string()),
        "the unsigned binary was downloaded"
    );

    // Something that is not a signature.
    let url = server.publish_signed(
        "9.9.9",
        &hostile,
        &sha256_hex(&hostile),
        Some("untrusted comment: trust me\n"),
    );
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_refused_unrun(
        &out,
        "is not a minisign signature",
        &marker,
        &binary,
        &original,
    );

    // A genuinely signed binary, offered as another version than it was signed for (an old
    // release passed off as the newest), or for another platform.
    let url = server.publish_signed(
        "9.9.9",
        &hostile,
        &sha256_hex(&hostile),
        Some(&sign(&server.key, &hostile, "9.9.8")),
    );
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_refused_unrun(&out, "validly signed, but for", &marker, &binary, &original);
    let url = server.publish_signed(
        "9.9.9",
        &hostile,
        &sha256_hex(&hostile),
        Some(&sign_for(&server.key, &hostile, "9.9.9", "plan9-mips")),
    );
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_refused_unrun(&out, "validly signed, but for", &marker, &binary, &original);

    // Without the test key, the built-in release key is trusted: a test signature is refused.
    let url = server.publish("9.9.9", &hostile, &sha256_hex(&hostile));
    let out = update_cmd(&server, &binary, &["update", "--manifest-url", &url])
        .env_remove("CEC_UPDATE_TEST_PUBLIC_KEY")
        .output()
        .unwrap();
    assert_refused_unrun(&out, "made with another key", &marker, &binary, &original);
    assert!(show(&out).contains("CA50AA6AC7D1D770"), "{}", show(&out));

    // The same release, properly signed: installed, and only then run.
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(file_sha(&binary), sha256_hex(&hostile));
    assert_alone(&binary);
}

#[test]
fn plain_http_is_refused_without_the_debug_test_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let binary = installed_copy(dir.path());
    let original = file_sha(&binary);
    let marker = dir.path().join("the-download-ran");
    let server = ReleaseServer::start();
    let hostile = hostile_release("9.9.9", &marker);
    let url = server.publish("9.9.9", &hostile, &sha256_hex(&hostile));

    // Release semantics: no loopback exception; nothing is even requested.
    let out = update_cmd(&server, &binary, &["update", "--manifest-url", &url])
        .env_remove("CEC_UPDATE_TEST_LOOPBACK_HTTP")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("https only"), "{}", show(&out));
    assert!(server.requests.lock().unwrap().is_empty());
    assert!(!marker.exists());
    assert_old_binary_intact(&binary, &original);
    let out = update_cmd(
        &server,
        &binary,
        &["update", "--check", "--manifest-url", &url],
    )
    .env_remove("CEC_UPDATE_TEST_LOOPBACK_HTTP")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));

    // Even with the opt-in, a manifest may not send the download to plain http elsewhere.
    server.put(
        "/manifest.json",
        serde_json::to_vec(&serde_json::json!({
            "version": "9.9.9",
            "platforms": { cec::cli::update::platform_key(): {
                "url": "http://example.invalid/cec", "sha256": sha256_hex(&hostile) } }
        }))
        .unwrap(),
    );
    let out = run_update(&server, &binary, &["update", "--manifest-url", &url]);
    assert_refused_unrun(&out, "https only", &marker, &binary, &original);
}

#[test]
fn without_a_manifest_update_says_what_to_configure() {
    let dir = tempfile::tempdir().unwrap();
    let binary = installed_copy(dir.path());
    let out = run(&binary, &["update"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    for needed in [
        "no built-in update source",
        "--manifest-url",
        "CEC_UPDATE_MANIFEST_URL",
        "https URL",
        "docs/RUN-AT-BOOT.md",
    ] {
        assert!(show(&out).contains(needed), "{needed:?}: {}", show(&out));
    }
    let out = run(&binary, &["update", "--help"]);
    assert!(out.status.success(), "{}", show(&out));
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for needed in [
        "no built-in update source",
        "signed with the cec release key",
    ] {
        assert!(help.contains(needed), "{needed:?}: {help}");
    }
}
