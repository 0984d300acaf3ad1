//! `cec update` against a release manifest served on loopback: it replaces a copy of the
//! binary with the verified release, `--check` only reports, a bad checksum, a release that
//! does not run and a downgrade are refused with the old binary left byte for byte as it was
//! (and still working), and no temporary file is left beside it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::Digest;

/// A minimal HTTP/1.1 file server on 127.0.0.1 (one request per connection), stopped on drop.
struct ReleaseServer {
    base: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

impl ReleaseServer {
    fn start() -> ReleaseServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (files, stop) = (files.clone(), stop.clone());
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
    /// URL) and the given checksum.
    fn publish(&self, version: &str, binary: &[u8], sha256: &str) -> String {
        let name = format!("releases/{version}/cec");
        self.put(&format!("/{name}"), binary.to_vec());
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

fn run(binary: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(binary);
    for (k, _) in std::env::vars() {
        if k.starts_with("CEC_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().unwrap()
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
    let out = run(&binary, &["update", "--manifest-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("checksum mismatch"), "{}", show(&out));
    assert_old_binary_intact(&binary, &original);

    // Right checksum: --check only reports.
    let url = server.publish("9.9.9", &release, &sha256_hex(&release));
    let out = run(&binary, &["update", "--check", "--manifest-url", &url]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("9.9.9 is available"),
        "{}",
        show(&out)
    );
    assert_old_binary_intact(&binary, &original);

    // The update itself (manifest URL from the environment this time).
    let out = Command::new(&binary)
        .arg("update")
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
    let out = run(&binary, &["update", "--manifest-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("was not replaced"), "{}", show(&out));
    assert_old_binary_intact(&binary, &original);

    // Runs, but is not the announced version.
    let wrong = fake_release("9.9.8");
    let url = server.publish("9.9.9", &wrong, &sha256_hex(&wrong));
    let out = run(&binary, &["update", "--manifest-url", &url]);
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
    let out = run(&binary, &["update", "--manifest-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).contains("no binary for this platform"),
        "{}",
        show(&out)
    );
    assert_old_binary_intact(&binary, &original);

    // A manifest URL that serves nothing.
    let out = run(
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
    let out = run(&binary, &["update", "--manifest-url", &url]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(show(&out).contains("up to date"), "{}", show(&out));
    assert_old_binary_intact(&binary, &original);

    let old = fake_release("0.0.1");
    let url = server.publish("0.0.1", &old, &sha256_hex(&old));
    let out = run(&binary, &["update", "--manifest-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).contains("refusing to downgrade"),
        "{}",
        show(&out)
    );
    assert_old_binary_intact(&binary, &original);

    let out = run(
        &binary,
        &["update", "--allow-downgrade", "--manifest-url", &url],
    );
    assert!(out.status.success(), "{}", show(&out));
    let out = run(&binary, &["--version"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cec 0.0.1");
    assert_alone(&binary);
}
