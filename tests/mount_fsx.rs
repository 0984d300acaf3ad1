//! `fsx` (the classic file-system exerciser, Rust port from crates.io) with fixed seeds on a
//! file inside the mount: 20,000 random reads, writes, mmaps, truncates, fsyncs,
//! close/reopen and cache invalidations each, every read checked against fsx's own model.
//! Then the final file on the server must equal what fsx left in the mount.

mod mount_common;

use std::process::Command;

use mount_common::*;

const FSX_CONFIG: &str = r#"
flen = 262144
[opsize]
max = 65536
min = 0
align = 1
[weights]
close_open = 2
read = 10
write = 10
mapread = 5
mapwrite = 5
invalidate = 1
truncate = 3
fsync = 1
fdatasync = 1
"#;

fn fsx_binary() -> std::path::PathBuf {
    if let Ok(out) = Command::new("which").arg("fsx").output()
        && out.status.success()
    {
        return std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo")
        });
    let candidate = home.join("bin/fsx");
    assert!(
        candidate.exists(),
        "fsx is not installed (cargo install fsx --locked; .ci/run does it)"
    );
    candidate
}

fn run_fsx(seed: u64) {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let config = h.dir.path().join("fsx.toml");
    std::fs::write(&config, FSX_CONFIG).unwrap();
    let artifacts = h.new_dir("fsx-artifacts");
    let file = h.personal(&m).join(format!("fsx-{seed}.bin"));
    let out = Command::new(fsx_binary())
        .arg("-N")
        .arg("20000")
        .arg("-S")
        .arg(seed.to_string())
        .arg("-f")
        .arg(&config)
        .arg("-P")
        .arg(&artifacts)
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fsx seed {seed} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // After fsx closed the file, the server holds exactly what the mount shows.
    let local = file_sha256(&file);
    let remote = server_sha256(&h, &format!("personal-files/fsx-{seed}.bin"));
    assert_eq!(local, remote, "server copy differs from the mount's");
}

#[test]
fn fsx_seed_1_20000_ops() {
    run_fsx(1);
}

#[test]
fn fsx_seed_20260101_20000_ops() {
    run_fsx(20_260_101);
}
