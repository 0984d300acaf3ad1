//! Limits of what the server can store, seen through a real mount: a path longer than the
//! gateway's 1,024-byte keys is refused at `open(O_CREAT)` and `mkdir` with `ENAMETOOLONG`
//! (and so is a folder move that would make a path below the folder that long)
//! (docs/SEMANTICS.md, "Errors"), in the default mode and with `--write-back`, and nothing
//! is lost: the files that fit are on the server, nothing went to the recovery folder.

mod mount_common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use mount_common::*;

/// Folders `parts` names of `len` bytes deep below `root`; returns the deepest.
fn deep_folders(root: &Path, parts: usize, len: usize) -> std::path::PathBuf {
    let mut dir = root.to_path_buf();
    for i in 0..parts {
        dir = dir.join(format!("{i}{}", "d".repeat(len - 1)));
        std::fs::create_dir(&dir).unwrap();
    }
    dir
}

fn create(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

fn refuses_paths_the_server_cannot_store(args: &[&str], sub: &str) {
    let h = Harness::start();
    let mut m = h.mount("mnt", args);
    let base = h.personal(&m).join(sub);
    std::fs::create_dir(&base).unwrap();
    let folder = deep_folders(&base, 4, 200);
    // The key is the mount path below the mountpoint: `personal-files/<sub>/...`.
    let key_of = |p: &Path| {
        p.strip_prefix(&m.path)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let folder_key = key_of(&folder);
    let fits = "a".repeat(1024 - folder_key.len() - 1);
    let over = "b".repeat(fits.len() + 1);
    assert!(over.len() <= 255, "the name alone is valid: {}", over.len());

    let mut file = create(&folder.join(&fits)).unwrap();
    file.write_all(b"stored whole").unwrap();
    drop(file);
    let refused = create(&folder.join(&over)).unwrap_err();
    assert_eq!(
        refused.raw_os_error(),
        Some(libc::ENAMETOOLONG),
        "{refused}"
    );
    let refused = std::fs::create_dir(folder.join(&over)).unwrap_err();
    assert_eq!(
        refused.raw_os_error(),
        Some(libc::ENAMETOOLONG),
        "{refused}"
    );
    let refused = std::fs::rename(folder.join(&fits), folder.join(&over)).unwrap_err();
    assert_eq!(
        refused.raw_os_error(),
        Some(libc::ENAMETOOLONG),
        "{refused}"
    );
    assert!(!folder.join(&over).exists());
    assert_eq!(std::fs::read(folder.join(&fits)).unwrap(), b"stored whole");

    // Moving a folder lengthens every path below it: a move that would push the file that
    // fits past the limit is refused as well, and one that keeps the length is not.
    let top = base.join(format!("0{}", "d".repeat(199)));
    let longer = base.join(format!("0{}", "d".repeat(200)));
    let refused = std::fs::rename(&top, &longer).unwrap_err();
    assert_eq!(
        refused.raw_os_error(),
        Some(libc::ENAMETOOLONG),
        "{refused}"
    );
    assert!(top.is_dir() && !longer.exists());
    let same_length = base.join(format!("1{}", "d".repeat(199)));
    std::fs::rename(&top, &same_length).unwrap();
    std::fs::rename(&same_length, &top).unwrap();
    assert_eq!(std::fs::read(folder.join(&fits)).unwrap(), b"stored whole");

    // Nothing is lost: after unmount the file that fits is on the server, nothing else was
    // made, and nothing went to the recovery folder.
    m.unmount();
    let stored = format!("{folder_key}/{fits}");
    assert_eq!(stored.len(), 1024);
    let node = h.block_on(h.api.head_object(&stored));
    assert_eq!(node.map(|n| n.size).ok(), Some(12), "{stored}");
    assert!(
        h.block_on(h.api.head_object(&format!("{folder_key}/{over}")))
            .is_err()
    );
    let recovery = h.dir.path().join("cache/recovery");
    let kept: Vec<_> = std::fs::read_dir(&recovery)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "{kept:?}");
    let log = m.log_text();
    assert!(!log.contains("upload of"), "{log}");
}

#[test]
fn a_path_over_1024_bytes_is_refused_with_enametoolong() {
    refuses_paths_the_server_cannot_store(&[], "default");
}

#[test]
fn a_path_over_1024_bytes_is_refused_with_enametoolong_in_write_back() {
    refuses_paths_the_server_cannot_store(&["--write-back", "1"], "write-back");
}
