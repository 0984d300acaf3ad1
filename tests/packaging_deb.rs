//! The Debian package: `packaging/gen.sh` then `cargo deb --no-build` on the test build
//! (stripped, fast compression: the same metadata a release uses, without a release build),
//! and `dpkg -c` / `dpkg -I` list what it must install: the binary, the `/sbin/mount.cec`
//! link, both systemd units, the completions, the man pages, and a dependency on fuse3.
//!
//! Needs `cargo-deb` (installed by `.ci/run`) and `dpkg-deb`; fails without them.

use std::path::PathBuf;
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

#[test]
fn the_deb_installs_binary_helper_units_completions_and_man_pages() {
    // The generated files go where the package metadata takes them (git-ignored).
    let out = Command::new(repo().join("packaging/gen.sh"))
        .env("CEC_BIN", env!("CARGO_BIN_EXE_cec"))
        .output()
        .unwrap();
    assert!(out.status.success(), "gen.sh: {}", show(&out));

    let dir = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--strip",
            "--fast",
            "--quiet",
            "-p",
            "cec",
            "-o",
        ])
        .arg(dir.path())
        .output()
        .expect("running cargo deb");
    assert!(
        out.status.success(),
        "cargo deb failed (install it with `cargo install cargo-deb`): {}",
        show(&out)
    );
    let deb = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("no .deb written");

    let out = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let entries: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let has = |path: &str| entries.contains(&path);
    for path in [
        "./usr/bin/cec",
        "./sbin/mount.cec",
        "./lib/systemd/system/cec-mount@.service",
        "./usr/lib/systemd/user/cec-mount.service",
        "./usr/share/bash-completion/completions/cec",
        "./usr/share/zsh/vendor-completions/_cec",
        "./usr/share/fish/vendor_completions.d/cec.fish",
        "./usr/share/doc/cec/RUN-AT-BOOT.md",
    ] {
        assert!(has(path), "{path} missing from the package:\n{listing}");
    }
    for page in ["cec", "cec-mount", "cec-unmount", "cec-update"] {
        assert!(
            has(&format!("./usr/share/man/man1/{page}.1.gz"))
                || has(&format!("./usr/share/man/man1/{page}.1")),
            "man page {page} missing:\n{listing}"
        );
    }
    assert!(
        has("./usr/share/man/man8/mount.cec.8.gz") || has("./usr/share/man/man8/mount.cec.8"),
        "mount.cec(8) missing:\n{listing}"
    );
    // mount.cec is a link to the binary, and the binary is executable.
    let helper = listing
        .lines()
        .find(|l| l.contains("./sbin/mount.cec"))
        .unwrap();
    assert!(helper.starts_with('l'), "{helper}");
    assert!(helper.ends_with("-> /usr/bin/cec"), "{helper}");
    let binary = listing
        .lines()
        .find(|l| l.ends_with("./usr/bin/cec"))
        .unwrap();
    assert!(binary.starts_with("-rwxr-xr-x"), "{binary}");

    let out = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(
        info.lines()
            .any(|l| l.trim().starts_with("Depends:") && l.contains("fuse3")),
        "{info}"
    );
    assert!(info.contains("Package: cec"), "{info}");
}
