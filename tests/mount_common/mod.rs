//! Shared helpers of the real-FUSE mount tests: an in-process cells-emu on loopback, a PAT
//! for alice, the `cec mount` binary started as a child process on a temporary mountpoint,
//! and guards that stop the mount (SIGTERM, then SIGKILL and a lazy unmount) and the
//! emulator even when a test panics.
//!
//! These tests need root and /dev/fuse. They FAIL when FUSE is unavailable (never skip):
//! CI sets `CEC_TEST_REQUIRE_FUSE=1`, and the same rule applies without it.

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use cec::api::CellsApi;
use cec::api::http::{HttpCellsApi, HttpOptions};
use cec::auth::{StaticToken, TokenSource};
use cells_emu::{EmuConfig, RunningEmulator};

pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Fail (never skip) when this machine cannot mount.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests need FUSE (CEC_TEST_REQUIRE_FUSE={})",
        std::env::var("CEC_TEST_REQUIRE_FUSE").unwrap_or_default()
    );
    assert!(
        nix::unistd::geteuid().is_root(),
        "the mount tests run as root (mounting is root-only here)"
    );
}

/// An emulator plus what a test needs to talk to it.
pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    emulator: Option<RunningEmulator>,
    pub url: String,
    pub token: String,
    pub dir: tempfile::TempDir,
    pub api: Arc<HttpCellsApi>,
    config: EmuConfig,
    /// FUSE connections of this test's mounts, aborted by the watchdog if the test hangs.
    connections: Arc<std::sync::Mutex<Vec<u64>>>,
}

/// A test still running after this long has its mounts aborted (so a hung FUSE request
/// fails with ENOTCONN instead of hanging the suite). `CEC_TEST_MOUNT_DEADLINE_SECS`.
fn test_deadline() -> Duration {
    Duration::from_secs(
        std::env::var("CEC_TEST_MOUNT_DEADLINE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(900),
    )
}

fn abort_fuse_connection(n: u64) {
    let sys = Path::new("/sys/fs/fuse/connections");
    if !sys.join(n.to_string()).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(sys)
            .status();
    }
    let _ = std::fs::write(sys.join(n.to_string()).join("abort"), b"1");
}

impl Harness {
    pub fn start() -> Harness {
        Harness::start_with(|_| {})
    }

    /// Start with a tuned emulator configuration.
    pub fn start_with(tune: impl FnOnce(&mut EmuConfig)) -> Harness {
        require_fuse();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::Builder::new()
            .prefix("cec-mount-test")
            .tempdir()
            .unwrap();
        let mut config = EmuConfig::for_tests(dir.path().join("server"));
        config.faults = true;
        tune(&mut config);
        let emulator = rt.block_on(cells_emu::start(config.clone())).unwrap();
        let token = emulator
            .state
            .auth
            .mint_pat(
                "alice",
                cells_emu::auth::PatExpiry::Fixed(Duration::from_secs(24 * 3600)),
            )
            .unwrap();
        let url = emulator.url.clone();
        let api = Arc::new(api_for(&url, &token));
        let connections: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
        {
            let connections = Arc::downgrade(&connections);
            std::thread::spawn(move || {
                std::thread::sleep(test_deadline());
                if let Some(list) = connections.upgrade() {
                    eprintln!("test deadline passed: aborting its FUSE mounts");
                    for n in list.lock().unwrap().iter() {
                        abort_fuse_connection(*n);
                    }
                }
            });
        }
        Harness {
            rt,
            emulator: Some(emulator),
            url,
            token,
            dir,
            api,
            config,
            connections,
        }
    }

    pub fn state(&self) -> &cells_emu::SharedState {
        &self.emulator.as_ref().expect("emulator running").state
    }

    /// Stall every request to the server (REST and S3), as a SIGSTOP of the server would
    /// (cells-emu's stall fault: connections accepted, nothing answered); `faults.clear()`
    /// ends it.
    pub fn pause_server(&self) {
        for prefix in ["/a/", "/io/"] {
            self.state().faults.stall(
                cells_emu::faults::RequestMatch::new(None, prefix),
                None,
                None,
            );
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Stop the emulator and start it again on the same port and data (a server restart).
    pub fn restart_emulator(&mut self, down_for: Duration) {
        let old = self.emulator.take().expect("emulator running");
        let addr = old.addr;
        self.rt.block_on(old.stop());
        std::thread::sleep(down_for);
        let mut config = self.config.clone();
        config.listen = addr;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.rt.block_on(cells_emu::start(config.clone())) {
                Ok(emu) => {
                    self.emulator = Some(emu);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart: {e:#}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot restart the emulator: {e:#}"),
            }
        }
    }

    /// A fresh empty directory under the test's temporary folder.
    pub fn new_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// `cec mount --status MOUNTPOINT`, run to its end.
    pub fn mount_status(&self, mountpoint: &Path) -> std::process::Output {
        self.cec()
            .args(["mount", "--status"])
            .arg(mountpoint)
            .output()
            .unwrap()
    }

    /// The `cec` command with the emulator as non-persistent server.
    pub fn cec(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cec"));
        cmd.env("CEC_URL", &self.url)
            .env("CEC_TOKEN", &self.token)
            .env("CEC_SKIP_KEYRING", "true")
            .env("CEC_CONFIG", self.dir.path().join("config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env_remove("NOTIFY_SOCKET");
        cmd
    }

    /// Mount in the foreground (a child process) at `<tmp>/<name>` with `args`, and wait
    /// until the mount answers.
    pub fn mount(&self, name: &str, args: &[&str]) -> Mounted {
        let mountpoint = self.dir.path().join(name);
        if !mountpoint.exists() {
            std::fs::create_dir_all(&mountpoint).unwrap();
        }
        self.mount_at(&mountpoint, args)
    }

    pub fn mount_at(&self, mountpoint: &Path, args: &[&str]) -> Mounted {
        self.mount_with_env(mountpoint, args, &[])
    }

    /// [`Harness::mount_at`] with extra environment variables for the mount process.
    pub fn mount_with_env(
        &self,
        mountpoint: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Mounted {
        std::fs::create_dir_all(self.dir.path().join("run")).unwrap();
        let log = self.dir.path().join(format!("mount-{}.log", rand_suffix()));
        let log_file = std::fs::File::create(&log).unwrap();
        let cache = self.dir.path().join("cache");
        let mut cmd = self.cec();
        cmd.arg("mount").arg(mountpoint);
        // The harness's cache directory, unless the test gives one.
        if !args.contains(&"--cache-dir") {
            cmd.arg("--cache-dir").arg(&cache);
        }
        cmd.args(args)
            .env(
                "CEC_LOG",
                std::env::var("CEC_TEST_MOUNT_LOG").unwrap_or("info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let child = cmd.spawn().expect("starting cec mount");
        let mut mounted = Mounted {
            child: Some(child),
            path: mountpoint.to_path_buf(),
            log,
            connection: None,
        };
        mounted.wait_ready(Duration::from_secs(30));
        if let Some(n) = mounted.connection {
            self.connections.lock().unwrap().push(n);
        }
        mounted
    }

    /// Alice's personal workspace inside a mount.
    pub fn personal(&self, m: &Mounted) -> PathBuf {
        m.path.join("personal-files")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(emu) = self.emulator.take() {
            self.rt.block_on(emu.stop());
        }
    }
}

pub fn api_for(url: &str, token: &str) -> HttpCellsApi {
    let tokens: Arc<dyn TokenSource> = Arc::new(StaticToken::new(token, "test"));
    HttpCellsApi::new(url, tokens, HttpOptions::default()).unwrap()
}

fn rand_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Whether `path` is a FUSE filesystem that answers.
pub fn is_fuse(path: &Path) -> bool {
    matches!(nix::sys::statfs::statfs(path), Ok(s) if s.filesystem_type().0 == FUSE_SUPER_MAGIC)
}

/// Whether `path` appears as a mount point in mountinfo (alive or dead).
pub fn in_mountinfo(path: &Path) -> bool {
    let wanted = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
}

/// A running `cec mount` child process.
pub struct Mounted {
    child: Option<Child>,
    pub path: PathBuf,
    pub log: PathBuf,
    /// The kernel's FUSE connection number (`/sys/fs/fuse/connections/N`), to abort a hung
    /// mount so that a failing test never hangs the suite.
    connection: Option<u64>,
}

impl Mounted {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("cec mount exited early ({status}):\n{}", self.log_text());
            }
            if is_fuse(&self.path) {
                use std::os::unix::fs::MetadataExt;
                self.connection = std::fs::metadata(&self.path)
                    .ok()
                    .map(|m| libc::minor(m.dev()) as u64);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the mount did not answer within {timeout:?}:\n{}",
            self.log_text()
        );
    }

    /// Send `signal` and wait for the process to exit (at most `timeout`).
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.abort_connection();
                let _ = child.kill();
                let status = child.wait().unwrap();
                force_detach(&self.path);
                panic!(
                    "cec mount did not exit within {timeout:?} after {signal:?} ({status}):\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and expect a clean exit with the mountpoint released.
    pub fn unmount(&mut self) {
        let status = self.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(120));
        assert!(
            status.success(),
            "cec mount exited with {status} after SIGTERM:\n{}",
            self.log_text()
        );
        assert!(!is_fuse(&self.path), "still mounted after a clean exit");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        let status = self.stop_with(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10));
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    /// Wait until the process exits by itself (after `cec unmount`, or an external umount).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.child = Some(child);
                panic!(
                    "cec mount still running after {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Abort the kernel side of the mount: every pending and future request fails at once.
    pub fn abort_connection(&self) {
        if let Some(n) = self.connection {
            abort_fuse_connection(n);
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                self.abort_connection();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        force_detach(&self.path);
        if std::thread::panicking() {
            eprintln!(
                "---- cec mount log ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Lazy-unmount whatever is left at `path` (a dead mount after a crash).
pub fn force_detach(path: &Path) {
    if in_mountinfo(path) {
        let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Wait until `check` holds, polling; returns how long it took.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what}: not true within {timeout:?}");
}

/// Run a shell command (in `dir`), panicking with its output on failure.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// SHA-256 of a file on the server, streamed through the API client.
pub fn server_sha256(h: &Harness, path: &str) -> String {
    use futures::StreamExt;
    use sha2::Digest;
    h.block_on(async {
        let mut stream = h.api.get_object(path, None).await.unwrap();
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = stream.next().await {
            hasher.update(chunk.unwrap());
        }
        hex::encode(hasher.finalize())
    })
}

/// SHA-256 of a local file.
pub fn file_sha256(path: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Write `len` pseudo-random bytes (deterministic from `seed`) to `path`.
pub fn write_pattern(path: &Path, len: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

impl Harness {
    /// [`Harness::mount_at`] with a cache directory of the test's choosing (the other helpers
    /// share `<tmp>/cache`, and a cache directory serves one mount at a time).
    pub fn mount_with_cache_dir(&self, mountpoint: &Path, cache: &Path, args: &[&str]) -> Mounted {
        let cache = cache.to_str().expect("a UTF-8 cache path");
        let mut all = vec!["--cache-dir", cache];
        all.extend_from_slice(args);
        self.mount_with_env(mountpoint, &all, &[])
    }
}
