//! A full cache disk never replaces a server file with a truncated copy (issue 22), through a
//! real mount whose `--cache-dir` is a 4 MiB tmpfs, by default and with `--write-back`.
//! docs/SEMANTICS.md: "a file whose staged content is incomplete (a write to the cache
//! directory failed, for a full disk say) is never stored: that write fails with `ENOSPC`, so
//! does every later write and `close` of it (with `--write-back` too, where nothing is
//! journaled), the server keeps its version (a new file is gone once closed), and `cec mount
//! --status` lists the file with the error."

mod mount_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mount_common::*;

/// A tmpfs of `size` mounted on the harness's cache directory; unmounted when dropped, even
/// when the test panics (declare it after the harness and before the mount, so that it is
/// dropped after the mount and before the harness's temporary folder).
struct CacheTmpfs(PathBuf);

impl CacheTmpfs {
    fn mount(h: &Harness, size: &str) -> CacheTmpfs {
        let cache = h.dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&cache)
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        CacheTmpfs(cache)
    }
}

impl Drop for CacheTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

const SIZE: u64 = 8 * 1024 * 1024;

/// `cp src dst`: its exit status and stderr.
fn cp(src: &Path, dst: &Path) -> (bool, String) {
    let out = Command::new("cp").arg(src).arg(dst).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_text(h: &Harness, m: &Mounted) -> String {
    let out = h.mount_status(&m.path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn full_cache_disk(args: &[&str]) {
    let h = Harness::start();
    // The server's 8 MiB file, and the 8 MiB the user copies over it and into a new file.
    let original = h.new_dir("src").join("original.bin");
    write_pattern(&original, SIZE, 1);
    let original_sha = file_sha256(&original);
    h.block_on(h.api.put_object(
        "personal-files/big.bin",
        bytes::Bytes::from(std::fs::read(&original).unwrap()),
        &Default::default(),
    ))
    .unwrap();
    let update = h.new_dir("src").join("update.bin");
    write_pattern(&update, SIZE, 2);

    let _tmpfs = CacheTmpfs::mount(&h, "4m");
    let mut m = h.mount("mnt", args);
    let ws = h.personal(&m);

    let (copied, err) = cp(&update, &ws.join("big.bin"));
    assert!(!copied, "cp of 8 MiB over a 4 MiB cache disk succeeded");
    assert!(
        err.contains("No space left on device") || err.contains("Input/output error"),
        "{err}"
    );
    let (copied, err) = cp(&update, &ws.join("new.bin"));
    assert!(
        !copied,
        "cp of a new 8 MiB file over a 4 MiB cache disk succeeded"
    );
    assert!(
        err.contains("No space left on device") || err.contains("Input/output error"),
        "{err}"
    );

    // The server keeps its version; the new file is not there, nor in the mount.
    // (once the kernel has released cp's descriptor, which it does after close returns).
    eventually(
        Duration::from_secs(5),
        "new.bin gone from the mount",
        || !ws.join("new.bin").exists(),
    );
    assert_eq!(server_sha256(&h, "personal-files/big.bin"), original_sha);
    assert!(
        h.block_on(h.api.stat("personal-files/new.bin"))
            .unwrap()
            .is_none(),
        "new.bin reached the server"
    );
    // The status says which files were not stored, and why; nothing is pending.
    let status = status_text(&h, &m);
    for name in ["big.bin", "new.bin"] {
        assert!(
            status
                .lines()
                .any(|l| l.contains(name) && l.contains("not stored")),
            "the status does not list {name}:\n{status}"
        );
    }
    assert!(status.contains("pending uploads: 0"), "{status}");

    // The disk is usable again: a file that fits is stored.
    std::fs::write(ws.join("small.txt"), b"fits").unwrap();

    // The unmount stores nothing truncated, and its log says what was not stored.
    m.unmount();
    assert_eq!(server_sha256(&h, "personal-files/big.bin"), original_sha);
    assert!(
        h.block_on(h.api.stat("personal-files/new.bin"))
            .unwrap()
            .is_none(),
        "new.bin reached the server at unmount"
    );
    let node = h
        .block_on(h.api.stat("personal-files/small.txt"))
        .unwrap()
        .expect("small.txt stored");
    assert_eq!(node.size, 4);
    let log = m.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("big.bin") && l.contains("not stored")),
        "the log does not say big.bin was not stored:\n{log}"
    );

    // Nor does the next mount on the same cache (no journal record was left).
    let mut m2 = h.mount("mnt", &[]);
    m2.unmount();
    assert_eq!(server_sha256(&h, "personal-files/big.bin"), original_sha);
    assert!(
        h.block_on(h.api.stat("personal-files/new.bin"))
            .unwrap()
            .is_none(),
        "new.bin reached the server from the journal"
    );
}

#[test]
fn a_full_cache_disk_never_stores_a_truncated_copy() {
    full_cache_disk(&[]);
}

#[test]
fn a_full_cache_disk_never_stores_a_truncated_copy_with_write_back() {
    full_cache_disk(&["--write-back", "600"]);
}
