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
        eventually(
            Duration::from_secs(60),
            &format!("{path} uploaded"),
            || matches!(h.block_on(h.api.stat(path)), Ok(Some(n)) if !n.is_temporary()),
        );
        assert_eq!(
            &server_sha256(&h, path),
            sha,
            "{path} differs on the server"
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
