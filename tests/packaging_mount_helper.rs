//! The `mount.cec` helper for real (FUSE, root), called as `mount(8)` calls it from an
//! `/etc/fstab` line: `mount.cec SOURCE DIR -o OPTIONS`. It must return only once the mount
//! answers, honour the options (ownership, cache directory, token file or systemd
//! credential), ignore the options that belong to mount(8)/systemd, and the mount must end
//! cleanly with a plain `umount`. Also: the `cec-token` systemd credential
//! (`$CREDENTIALS_DIRECTORY`) is the token a non-persistent command uses.

mod mount_common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mount_common::*;

/// A `mount.cec` link to the test build of cec, as the Debian package installs it.
fn helper_link(h: &Harness) -> PathBuf {
    let sbin = h.new_dir("sbin");
    let link = sbin.join("mount.cec");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cec"), &link).unwrap();
    }
    link
}

/// The helper command with the environment mount(8) gives it: none of the test's CEC_*
/// variables (no token in the environment), only a private runtime dir and config dir.
fn helper_cmd(h: &Harness) -> Command {
    let mut cmd = Command::new(helper_link(h));
    for (k, _) in std::env::vars() {
        if k.starts_with("CEC_") || k == "CREDENTIALS_DIRECTORY" || k == "NOTIFY_SOCKET" {
            cmd.env_remove(k);
        }
    }
    cmd.env("XDG_RUNTIME_DIR", h.dir.path().join("run"))
        .env("CEC_CONFIG", h.dir.path().join("config"));
    std::fs::create_dir_all(h.dir.path().join("run")).unwrap();
    cmd
}

fn write_secret(path: &Path, content: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{content}").unwrap();
}

/// The detached mount daemon a helper started; on drop (test failure included) it is
/// stopped and the mountpoint detached.
struct HelperMount {
    path: PathBuf,
    pid: Option<i32>,
}

impl HelperMount {
    fn daemon_alive(&self) -> bool {
        self.pid
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid))
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

impl Drop for HelperMount {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.filter(|_| self.daemon_alive()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..200 {
                if !self.daemon_alive() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        force_detach(&self.path);
    }
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The daemon's pid, from `cec mount --status`.
fn daemon_pid(h: &Harness, mountpoint: &Path) -> i32 {
    let out = h
        .cec()
        .args(["mount", "--status"])
        .arg(mountpoint)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("pid:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in the status:\n{text}"))
}

#[test]
fn fstab_style_mount_through_the_helper_then_umount() {
    let h = Harness::start();
    let mountpoint = h.new_dir("mnt");
    let token_file = h.dir.path().join("etc/cec/alice.token");
    write_secret(&token_file, &h.token);
    let cache = h.dir.path().join("helper-cache");
    let options = format!(
        "rw,_netdev,nofail,noatime,x-systemd.automount,uid=4321,gid=1234,file_mode=640,cache_dir={},token_file={}",
        cache.display(),
        token_file.display()
    );
    let started = std::time::Instant::now();
    let out = helper_cmd(&h)
        .arg(&h.url)
        .arg(&mountpoint)
        .args(["-o", &options])
        .output()
        .unwrap();
    let mut guard = HelperMount {
        path: mountpoint.clone(),
        pid: None,
    };
    assert!(out.status.success(), "mount.cec failed: {}", show(&out));
    // A helper returns once the mount answers, and no token appears in what it printed.
    assert!(is_fuse(&mountpoint), "not mounted when mount.cec returned");
    assert!(
        !show(&out).contains(&h.token),
        "the token leaked: {}",
        show(&out)
    );
    eprintln!("mount.cec returned after {:?}", started.elapsed());
    guard.pid = Some(daemon_pid(&h, &mountpoint));
    assert!(guard.daemon_alive(), "the mount daemon is not running");

    // The options reached the mount.
    let personal = mountpoint.join("personal-files");
    let meta = std::fs::metadata(&personal).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 1234));
    std::fs::write(personal.join("from-fstab.txt"), b"mounted by mount.cec\n").unwrap();
    let meta = std::fs::metadata(personal.join("from-fstab.txt")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    let node = h
        .block_on(h.api.stat("personal-files/from-fstab.txt"))
        .unwrap()
        .expect("the file written through the helper's mount is on the server");
    assert_eq!(node.size, 21);
    assert!(cache.is_dir(), "cache_dir= was not used");

    // `umount DIR`, as systemd or a user stops an fstab mount: the daemon notices and exits.
    let out = Command::new("umount").arg(&mountpoint).output().unwrap();
    assert!(out.status.success(), "umount failed: {}", show(&out));
    eventually(
        Duration::from_secs(30),
        "the daemon exits after umount",
        || !guard.daemon_alive(),
    );
    assert!(
        !in_mountinfo(&mountpoint),
        "still in mountinfo after umount"
    );
}

#[test]
fn the_helper_reads_the_token_from_a_systemd_credential_and_refuses_bad_input() {
    let h = Harness::start();
    let mountpoint = h.new_dir("mnt-cred");
    let creds = h.dir.path().join("credentials");
    write_secret(&creds.join("cells-pat"), &h.token);
    let out = helper_cmd(&h)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .arg(&h.url)
        .arg(&mountpoint)
        .args(["-o", "_netdev,credential=cells-pat,ro"])
        .output()
        .unwrap();
    let mut guard = HelperMount {
        path: mountpoint.clone(),
        pid: None,
    };
    assert!(out.status.success(), "mount.cec failed: {}", show(&out));
    guard.pid = Some(daemon_pid(&h, &mountpoint));
    assert!(mountpoint.join("personal-files").is_dir());
    // `ro` reached the mount.
    let err = std::fs::write(mountpoint.join("personal-files/nope.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let out = Command::new("umount").arg(&mountpoint).output().unwrap();
    assert!(out.status.success(), "umount failed: {}", show(&out));
    eventually(
        Duration::from_secs(30),
        "the daemon exits after umount",
        || !guard.daemon_alive(),
    );

    // A secret in the options is refused (and not echoed); so is a typo; nothing is mounted.
    let other = h.new_dir("mnt-refused");
    for options in [format!("token={}", h.token), "alow_other".to_string()] {
        let out = helper_cmd(&h)
            .arg(&h.url)
            .arg(&other)
            .args(["-o", &options])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(!show(&out).contains(&h.token), "{}", show(&out));
        assert!(!in_mountinfo(&other));
    }
    // A wrong token fails with the server's refusal, reported by the helper's exit code.
    write_secret(&creds.join("wrong"), "not-a-valid-token");
    let out = helper_cmd(&h)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .arg(&h.url)
        .arg(&other)
        .args(["-o", "credential=wrong"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(!in_mountinfo(&other));
}

#[test]
fn the_cec_token_credential_is_the_token_of_a_non_persistent_command() {
    let h = Harness::start();
    let creds = h.dir.path().join("credentials");
    let cec = |creds_dir: &Path| {
        let mut cmd = h.cec();
        cmd.env_remove("CEC_TOKEN")
            .env("CREDENTIALS_DIRECTORY", creds_dir)
            .args(["ls", "personal-files"]);
        cmd.output().unwrap()
    };
    // No credential file: no token at all.
    std::fs::create_dir_all(&creds).unwrap();
    let out = cec(&creds);
    assert!(!out.status.success(), "{}", show(&out));
    // The right token in `cec-token`: the command works.
    write_secret(&creds.join("cec-token"), &h.token);
    let out = cec(&creds);
    assert!(out.status.success(), "{}", show(&out));
    // A wrong one: refused by the server, and the file's content is never printed.
    write_secret(&creds.join("cec-token"), "wrong-token-value");
    let out = cec(&creds);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(!show(&out).contains("wrong-token-value"), "{}", show(&out));
}

/// `/sbin/mount.cec` for the duration of a test (mount(8) looks for helpers in /sbin only),
/// removed afterwards unless it was there before.
struct SbinHelper {
    created: bool,
}

impl SbinHelper {
    fn install() -> SbinHelper {
        let path = Path::new("/sbin/mount.cec");
        if std::fs::symlink_metadata(path).is_ok() {
            let target = std::fs::read_link(path).unwrap_or_default();
            assert_eq!(
                target,
                Path::new(env!("CARGO_BIN_EXE_cec")),
                "/sbin/mount.cec already exists and is not this build's: remove it to run this test"
            );
            return SbinHelper { created: false };
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cec"), path).unwrap();
        SbinHelper { created: true }
    }
}

impl Drop for SbinHelper {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file("/sbin/mount.cec");
        }
    }
}

#[test]
fn mount_8_reads_an_fstab_line_and_runs_the_helper() {
    let h = Harness::start();
    let mountpoint = h.new_dir("fstab-mnt");
    let token_file = h.dir.path().join("etc/cec/cells.token");
    write_secret(&token_file, &h.token);
    let fstab = h.dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# a Cells mount\n{} {} cec _netdev,nofail,noauto,x-systemd.automount,token_file={},cache_dir={},dir_mode=750 0 0\n",
            h.url,
            mountpoint.display(),
            token_file.display(),
            h.dir.path().join("fstab-cache").display()
        ),
    )
    .unwrap();
    let _sbin = SbinHelper::install();
    let mut mount = Command::new("mount");
    for (k, _) in std::env::vars() {
        if k.starts_with("CEC_") || k == "NOTIFY_SOCKET" {
            mount.env_remove(k);
        }
    }
    let out = mount
        .env("XDG_RUNTIME_DIR", h.dir.path().join("run"))
        .arg("--fstab")
        .arg(&fstab)
        .arg(&mountpoint)
        .output()
        .unwrap();
    let mut guard = HelperMount {
        path: mountpoint.clone(),
        pid: None,
    };
    assert!(out.status.success(), "mount --fstab failed: {}", show(&out));
    assert!(is_fuse(&mountpoint), "not mounted when mount(8) returned");
    guard.pid = Some(daemon_pid(&h, &mountpoint));
    let meta = std::fs::metadata(mountpoint.join("personal-files")).unwrap();
    assert_eq!(
        meta.mode() & 0o777,
        0o750,
        "dir_mode= did not reach the mount"
    );
    // mount(8) lists it with the cec source name.
    let listed = Command::new("findmnt")
        .arg("-n")
        .arg(&mountpoint)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("fuse"),
        "{}",
        show(&listed)
    );
    let out = Command::new("umount").arg(&mountpoint).output().unwrap();
    assert!(out.status.success(), "umount failed: {}", show(&out));
    eventually(
        Duration::from_secs(30),
        "the daemon exits after umount",
        || !guard.daemon_alive(),
    );
    assert!(!in_mountinfo(&mountpoint));
}

#[test]
fn under_systemd_the_log_goes_to_the_journal_with_priorities_and_no_secret() {
    let h = Harness::start();
    let mountpoint = h.new_dir("journal-mnt");
    std::fs::create_dir_all(h.dir.path().join("run")).unwrap();
    // The "journal": a file whose device and inode JOURNAL_STREAM names, as systemd does.
    let journal = h.dir.path().join("journal.log");
    let file = std::fs::File::create(&journal).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = h
        .cec()
        .arg("mount")
        .arg(&mountpoint)
        .arg("--cache-dir")
        .arg(h.dir.path().join("journal-cache"))
        .env("CEC_LOG", "info")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _guard = HelperMount {
        path: mountpoint.clone(),
        pid: Some(pid.as_raw()),
    };
    eventually(Duration::from_secs(30), "the mount answers", || {
        is_fuse(&mountpoint)
    });
    std::fs::read_dir(mountpoint.join("personal-files"))
        .unwrap()
        .count();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&journal).unwrap();
    let logged: Vec<&str> = text.lines().filter(|l| l.starts_with('<')).collect();
    assert!(
        logged.iter().any(|l| l.starts_with("<6>mounted")),
        "no info line with the journal prefix:\n{text}"
    );
    // No timestamps (the journal adds its own) and never the token.
    assert!(
        !logged
            .iter()
            .any(|l| l.contains(" INFO ") || l.contains("Z ")),
        "{text}"
    );
    assert!(!text.contains(&h.token), "the token reached the log");
}

/// The system unit's ExecStart= and Environment= as systemd would run them for instance
/// `work` (variables from /etc/cec/work.conf substituted).
fn system_unit_command(mountpoint: &Path, cache: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/system/cec-mount@.service"),
    )
    .unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_string()
    };
    let argv: Vec<String> = value("ExecStart")
        .split_whitespace()
        .filter(|w| *w != "$CEC_MOUNT_OPTIONS")
        .map(|w| {
            w.replace("/usr/bin/cec", env!("CARGO_BIN_EXE_cec"))
                .replace("${CEC_MOUNTPOINT}", &mountpoint.display().to_string())
                .replace("/var/cache/cec/%i", &cache.display().to_string())
        })
        .collect();
    assert!(
        !argv.iter().any(|w| w.contains('$') || w.contains('%')),
        "unexpanded: {argv:?}"
    );
    let env = value("Environment")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (argv, env)
}

#[test]
fn the_system_unit_command_reports_ready_to_systemd_and_stops_cleanly_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let h = Harness::start();
    // (ExecStartPre= would create it; systemd is not here to run it.)
    let mountpoint = h.dir.path().join("unit-mnt");
    std::fs::create_dir_all(&mountpoint).unwrap();
    let creds = h.dir.path().join("credentials/cec-mount@work.service");
    write_secret(&creds.join("cec-token"), &h.token);
    let notify_path = h.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (argv, unit_env) = system_unit_command(&mountpoint, &h.dir.path().join("unit-cache"));
    let mut cmd = Command::new(&argv[0]);
    for (k, _) in std::env::vars() {
        if k.starts_with("CEC_") {
            cmd.env_remove(k);
        }
    }
    let log = h.dir.path().join("unit.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .args(&argv[1..])
        .envs(unit_env)
        .env("CEC_URL", &h.url)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("XDG_RUNTIME_DIR", h.dir.path().join("run"))
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _guard = HelperMount {
        path: mountpoint.clone(),
        pid: Some(pid.as_raw()),
    };
    let receive = |what: &str| -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = notify.recv(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "no {what} from cec ({e}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.lines().any(|l| l == what) {
                return message;
            }
        }
    };
    let ready = receive("READY=1");
    assert!(is_fuse(&mountpoint), "READY=1 before the mount answers");
    assert!(ready.contains("STATUS=mounted at"), "{ready}");
    assert!(mountpoint.join("personal-files").is_dir());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    receive("STOPPING=1");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!in_mountinfo(&mountpoint), "still mounted after the stop");
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains(&h.token),
        "the token reached the log"
    );
}
