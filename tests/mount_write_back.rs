//! Write-back survives a crash: with `--write-back`, `close` returns before the upload;
//! kill -9 the mount while uploads are pending, remount on the same cache directory, and
//! every acknowledged byte reaches the server.

mod mount_common;

use std::time::Duration;

use cec::api::CellsApi;
use mount_common::*;

#[test]
fn kill_9_with_pending_write_back_uploads_then_remount_delivers_every_byte() {
    let h = Harness::start();
    let mut m = h.mount("mnt", &["--write-back", "600"]);
    let dir = h.personal(&m).join("wb");
    std::fs::create_dir(&dir).unwrap();
    let mut expected = Vec::new();
    for i in 0..5u64 {
        let p = dir.join(format!("file-{i}.bin"));
        write_pattern(&p, 100_000 + i * 777_777, i);
        expected.push((format!("personal-files/wb/file-{i}.bin"), file_sha256(&p)));
    }
    // An edit of a file that is already pending, and an empty file.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("file-0.bin"))
            .unwrap();
        f.seek(SeekFrom::Start(10)).unwrap();
        f.write_all(b"EDITED").unwrap();
    }
    expected[0].1 = file_sha256(&dir.join("file-0.bin"));
    std::fs::write(dir.join("empty"), b"").unwrap();

    // Nothing is uploaded yet (600 s delay): the server does not have the files.
    assert!(
        h.block_on(h.api.stat("personal-files/wb/file-3.bin"))
            .unwrap()
            .is_none(),
        "write-back uploaded too early"
    );
    m.kill9();

    // Remount with the same cache directory: the journal is replayed.
    let m2 = h.mount("mnt", &[]);
    for (path, sha) in &expected {
        // file-0.bin's first version is on the server already (it was uploaded before the
        // edit changed its staging file): wait for the replayed edit itself.
        eventually(
            Duration::from_secs(60),
            &format!("{path} uploaded with the acknowledged content"),
            || {
                matches!(h.block_on(h.api.stat(path)), Ok(Some(n)) if !n.is_temporary())
                    && &server_sha256(&h, path) == sha
            },
        );
    }
    eventually(
        Duration::from_secs(60),
        "empty file uploaded",
        || matches!(h.block_on(h.api.stat("personal-files/wb/empty")), Ok(Some(n)) if n.size == 0),
    );
    // And through the new mount.
    assert_eq!(
        file_sha256(&h.personal(&m2).join("wb/file-0.bin")),
        expected[0].1
    );
}

/// A file closed (acknowledged, its record naming the staging file), then opened again and
/// changed, and the mount killed before that second close: the next mount must deliver the
/// acknowledged version, never the half-done change (found by scripts/crash-trials).
#[test]
fn a_change_left_unclosed_by_a_crash_never_replaces_the_acknowledged_version() {
    use std::io::{Seek, SeekFrom, Write};
    let h = Harness::start();
    let mut m = h.mount("mnt", &["--write-back", "600"]);
    let dir = h.personal(&m).join("wb2");
    std::fs::create_dir(&dir).unwrap();
    let truncated = dir.join("truncated.bin");
    let patched = dir.join("patched.bin");
    // Over 16 KiB: their records name the staging files instead of carrying the bytes.
    std::fs::write(&truncated, vec![b'1'; 34_460]).unwrap();
    std::fs::write(&patched, vec![b'a'; 50_000]).unwrap();
    let mut t = std::fs::File::create(&truncated).unwrap();
    t.write_all(&[b'2'; 65_536]).unwrap();
    let mut p = std::fs::OpenOptions::new()
        .write(true)
        .open(&patched)
        .unwrap();
    p.seek(SeekFrom::Start(100)).unwrap();
    p.write_all(&[b'b'; 1000]).unwrap();
    // The crash, with both changes written but not closed.
    m.kill9();
    drop((t, p));
    let _m2 = h.mount("mnt", &[]);
    for (path, want) in [
        ("personal-files/wb2/truncated.bin", vec![b'1'; 34_460]),
        ("personal-files/wb2/patched.bin", vec![b'a'; 50_000]),
    ] {
        eventually(
            Duration::from_secs(60),
            &format!("{path} on the server"),
            || matches!(h.block_on(h.api.stat(path)), Ok(Some(n)) if !n.is_temporary()),
        );
        std::thread::sleep(Duration::from_millis(500));
        let want_sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&want))
        };
        assert_eq!(
            server_sha256(&h, path),
            want_sha,
            "{path}: not the acknowledged version"
        );
    }
}
