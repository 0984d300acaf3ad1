//! The service files under `packaging/`: `systemd-analyze verify` accepts the systemd units
//! (and rejects a broken copy, so the check can fail), the units keep the properties the
//! issue asks for (notify, clean stop, restart, credential, no mount namespace), the launchd
//! plist is a valid property list (python3's plistlib) that runs `cec mount` in the foreground
//! at login, restarted on failure, logging to ~/Library/Logs, and `packaging/gen.sh` generates
//! completions and man pages from the command definitions.
//!
//! Needs `systemd-analyze` (Debian `systemd`) and `python3`, both installed by `.ci/run`; fails
//! without them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run gen.sh with the test build into `out`.
fn generate(out: &Path) -> Output {
    Command::new(repo().join("packaging/gen.sh"))
        .arg(out)
        .env("CEC_BIN", env!("CARGO_BIN_EXE_cec"))
        .output()
        .expect("running packaging/gen.sh")
}

/// A scratch copy of a unit under `name`, pointing at the test build instead of
/// /usr/bin/cec (verify checks that ExecStart's program exists).
fn staged_unit(dir: &Path, source: &str, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(source)).unwrap();
    let text = edit(text.replace("/usr/bin/cec", env!("CARGO_BIN_EXE_cec")));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `systemd-analyze [--user] verify UNITS...`, with the generated man pages on MANPATH (the
/// units' Documentation= is checked) and a private runtime dir (for --user).
fn verify(dir: &Path, user: bool, units: &[PathBuf]) -> Output {
    let runtime = dir.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let mut cmd = Command::new("systemd-analyze");
    if user {
        cmd.arg("--user");
    }
    cmd.arg("verify")
        .args(units)
        .current_dir(dir)
        .env("MANPATH", dir.join("gen/man-root"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("SYSTEMD_LOG_LEVEL", "notice");
    cmd.output()
        .expect("systemd-analyze is missing (Debian: apt install systemd)")
}

/// A scratch dir with the generated man pages laid out as a man tree.
fn scratch_with_man_pages() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(&dir.path().join("gen"));
    assert!(out.status.success(), "gen.sh failed: {}", show(&out));
    let man1 = dir.path().join("gen/man-root/man1");
    std::fs::create_dir_all(&man1).unwrap();
    for entry in std::fs::read_dir(dir.path().join("gen/man")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), man1.join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn systemd_analyze_verify_accepts_the_units_and_rejects_a_broken_one() {
    let dir = scratch_with_man_pages();
    let d = dir.path();
    let system = staged_unit(
        d,
        "packaging/systemd/system/cec-mount@.service",
        "cec-mount@work.service",
        |t| t,
    );
    let out = verify(d, false, std::slice::from_ref(&system));
    assert!(out.status.success(), "system unit: {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "verify warned: {stderr}");

    let mount = staged_unit(
        d,
        "packaging/systemd/examples/mnt-cells.mount",
        "mnt-cells.mount",
        |t| t,
    );
    let automount = staged_unit(
        d,
        "packaging/systemd/examples/mnt-cells.automount",
        "mnt-cells.automount",
        |t| t,
    );
    let out = verify(d, false, &[mount, automount]);
    assert!(out.status.success(), "mount units: {}", show(&out));

    let user = staged_unit(
        d,
        "packaging/systemd/user/cec-mount.service",
        "cec-mount.service",
        |t| t,
    );
    let out = verify(d, true, &[user]);
    assert!(out.status.success(), "user unit: {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "verify warned: {stderr}");

    // The same check on a broken copy fails: the verification is real.
    let broken = staged_unit(
        d,
        "packaging/systemd/system/cec-mount@.service",
        "cec-mount@broken.service",
        |t| t.replace("Type=notify", "Type=notifyy"),
    );
    let out = verify(d, false, &[broken]);
    let text = show(&out);
    assert!(
        !out.status.success() || text.contains("notifyy"),
        "a broken unit passed verification: {text}"
    );
    let missing_binary = staged_unit(
        d,
        "packaging/systemd/system/cec-mount@.service",
        "cec-mount@nobin.service",
        |t| t.replace(env!("CARGO_BIN_EXE_cec"), "/nonexistent/cec"),
    );
    let out = verify(d, false, &[missing_binary]);
    assert!(
        !out.status.success(),
        "a missing ExecStart binary passed: {}",
        show(&out)
    );
}

/// `Key=value` lines of a unit (comments skipped).
fn directives(path: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(repo().join(path))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn value<'a>(d: &'a [(String, String)], key: &str) -> Option<&'a str> {
    d.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn the_units_notify_stop_cleanly_restart_and_keep_the_mount_visible() {
    for path in [
        "packaging/systemd/system/cec-mount@.service",
        "packaging/systemd/user/cec-mount.service",
    ] {
        let d = directives(path);
        assert_eq!(value(&d, "Type"), Some("notify"), "{path}");
        assert_eq!(value(&d, "Restart"), Some("on-failure"), "{path}");
        assert_eq!(value(&d, "KillMode"), Some("mixed"), "{path}");
        assert_eq!(value(&d, "KillSignal"), Some("SIGTERM"), "{path}");
        let exec = value(&d, "ExecStart").unwrap();
        assert!(exec.starts_with("/usr/bin/cec mount "), "{path}: {exec}");
        assert!(
            !exec.contains("--daemon"),
            "systemd supervises the foreground process"
        );
        assert!(
            !exec.contains("token"),
            "no secret on the command line: {exec}"
        );
        // Options that create a private mount namespace would hide the FUSE mount.
        for hiding in [
            "ProtectSystem",
            "ProtectHome",
            "PrivateTmp",
            "PrivateDevices",
            "PrivateMounts",
            "ReadWritePaths",
            "ReadOnlyPaths",
            "InaccessiblePaths",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "ProtectControlGroups",
            "ProtectClock",
            "TemporaryFileSystem",
            "BindPaths",
        ] {
            assert!(value(&d, hiding).is_none(), "{path} sets {hiding}");
        }
    }
    let system = directives("packaging/systemd/system/cec-mount@.service");
    assert_eq!(
        value(&system, "LoadCredential"),
        Some("cec-token:/etc/cec/%i.token")
    );
    assert_eq!(value(&system, "DeviceAllow"), Some("/dev/fuse rw"));
    assert!(
        value(&system, "SystemCallFilter").is_some_and(|v| v.contains("@mount")),
        "mount(2) must stay allowed"
    );
    // In a user manager, sandboxing implies NoNewPrivileges, which breaks fusermount3.
    let user = directives("packaging/systemd/user/cec-mount.service");
    for implies_nnp in [
        "NoNewPrivileges",
        "SystemCallFilter",
        "RestrictNamespaces",
        "MemoryDenyWriteExecute",
        "LockPersonality",
    ] {
        assert!(
            value(&user, implies_nnp).is_none(),
            "user unit sets {implies_nnp}"
        );
    }
}

#[test]
fn the_launchd_plist_is_well_formed_and_runs_cec_mount_in_the_foreground() {
    let text =
        std::fs::read_to_string(repo().join("packaging/macos/com.pydio.cec.mount.plist")).unwrap();
    // Well-formed XML, and the strings of ProgramArguments in order.
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut path: Vec<String> = Vec::new();
    let mut last_key = String::new();
    let mut in_program_arguments = false;
    let mut program: Vec<String> = Vec::new();
    let mut label = String::new();
    loop {
        match reader
            .read_event()
            .expect("the plist is not well-formed XML")
        {
            quick_xml::events::Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if name == "array" && last_key == "ProgramArguments" {
                    in_program_arguments = true;
                }
                path.push(name);
            }
            quick_xml::events::Event::End(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                assert_eq!(path.pop().as_deref(), Some(name.as_str()));
                if name == "array" {
                    in_program_arguments = false;
                }
            }
            quick_xml::events::Event::Text(t) => {
                let s = String::from_utf8_lossy(t.as_ref()).trim().to_string();
                match path.last().map(String::as_str) {
                    Some("key") => last_key = s,
                    Some("string") if in_program_arguments => program.push(s),
                    Some("string") if last_key == "Label" => label = s,
                    _ => {}
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert!(path.is_empty(), "unclosed elements: {path:?}");
    assert_eq!(label, "com.pydio.cec.mount");
    assert_eq!(
        program.get(1).map(String::as_str),
        Some("mount"),
        "{program:?}"
    );
    assert!(program[0].ends_with("/cec"), "{program:?}");
    assert!(
        !program
            .iter()
            .any(|a| a == "--daemon" || a.contains("token")),
        "{program:?}"
    );
    assert!(text.contains("<key>RunAtLoad</key>"));
}

/// Load a property list with python3's `plistlib` (the reference reader here: no plist crate
/// in the tree) and hand it back as JSON, or plistlib's error.
fn load_plist(path: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; json.dump(plistlib.load(open(sys.argv[1], 'rb')), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("python3 is needed to parse the launchd plist");
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    } else {
        Err(show(&out))
    }
}

#[test]
fn the_launchd_plist_is_a_valid_property_list_with_the_agent_keys() {
    let path = repo().join("packaging/macos/com.pydio.cec.mount.plist");
    let plist = load_plist(&path).unwrap_or_else(|e| panic!("plistlib rejects the plist: {e}"));
    assert_eq!(plist["Label"], "com.pydio.cec.mount");
    // `cec mount MOUNTPOINT` in the foreground: launchd supervises the process itself.
    let program: Vec<&str> = plist["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments is an array")
        .iter()
        .map(|a| a.as_str().expect("ProgramArguments holds strings"))
        .collect();
    assert!(program.len() >= 3, "{program:?}");
    assert!(program[0].ends_with("/cec"), "{program:?}");
    assert_eq!(program[1], "mount", "{program:?}");
    assert!(
        program[2..]
            .iter()
            .all(|a| *a != "--daemon" && *a != "-d" && !a.contains("token")),
        "{program:?}"
    );
    assert_eq!(plist["RunAtLoad"], true);
    // Restarted when it fails, not after a clean exit (an unmount).
    assert_eq!(
        plist["KeepAlive"],
        serde_json::json!({ "SuccessfulExit": false })
    );
    for key in ["StandardOutPath", "StandardErrorPath"] {
        let log = plist[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is missing"));
        assert!(
            log.starts_with("/Users/USERNAME/Library/Logs/"),
            "{key} = {log}"
        );
    }
    // The check can fail: the same reader rejects a truncated copy.
    let text = std::fs::read_to_string(&path).unwrap();
    let broken_dir = tempfile::tempdir().unwrap();
    let broken = broken_dir.path().join("broken.plist");
    std::fs::write(&broken, &text[..text.len() / 2]).unwrap();
    assert!(
        load_plist(&broken).is_err(),
        "a truncated plist was accepted"
    );
}

#[test]
fn gen_sh_writes_completions_and_man_pages_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(dir.path());
    assert!(out.status.success(), "gen.sh failed: {}", show(&out));
    for (file, needle) in [
        ("completions/cec.bash", "mount"),
        ("completions/_cec", "#compdef cec"),
        ("completions/cec.fish", "complete -c cec"),
    ] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(text.contains(needle), "{file} lacks {needle:?}");
        assert!(text.contains("update"), "{file} lacks the update command");
    }
    for page in ["cec.1", "cec-mount.1", "cec-update.1", "cec-unmount.1"] {
        let text = std::fs::read_to_string(dir.path().join("man").join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not a man page"
        );
    }
    // Without a binary it says so instead of writing empty files.
    let out = Command::new(repo().join("packaging/gen.sh"))
        .arg(dir.path().join("other"))
        .env("CEC_BIN", dir.path().join("no-such-cec"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not built"));
}
