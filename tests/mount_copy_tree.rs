//! Copying whole trees into the mount with everyday tools: `cp -a` (nested folders, empty
//! files, unicode names, a 1 GiB file) compared with `diff -r` and checked on the server
//! through the API client; `rsync -a` twice, the second run transferring nothing.

mod mount_common;

use mount_common::*;

/// A tree with nested folders, empty files, unicode names and one file of `big` bytes.
fn make_tree(root: &std::path::Path, big: u64) {
    std::fs::create_dir_all(root.join("a/b/c/d")).unwrap();
    std::fs::create_dir_all(root.join("empty-folder")).unwrap();
    std::fs::create_dir_all(root.join("ünïcødé/日本語")).unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
    std::fs::write(root.join("a/b/c/d/deep.txt"), b"deep down\n").unwrap();
    std::fs::write(root.join("a/b/empty-too"), b"").unwrap();
    std::fs::write(root.join("ünïcødé/日本語/ファイル.txt"), "こんにちは\n").unwrap();
    std::fs::write(root.join("ünïcødé/émoji-😀.md"), "# 😀\n").unwrap();
    for i in 0..20 {
        write_pattern(&root.join(format!("a/small-{i}.bin")), 1000 + i * 3001, i);
    }
    write_pattern(&root.join("big.bin"), big, 42);
}

#[test]
fn cp_a_of_a_tree_with_a_1_gib_file_arrives_intact() {
    let h = Harness::start();
    let source = h.new_dir("source");
    make_tree(&source, 1 << 30);
    let m = h.mount("mnt", &[]);
    let target = h.personal(&m).join("tree");
    sh(
        h.dir.path(),
        &format!("cp -a {} {}", source.display(), target.display()),
    );
    // Same names, same contents, through the mount.
    sh(
        h.dir.path(),
        &format!("diff -r {} {}", source.display(), target.display()),
    );
    // The big file on the server, read back through the API client.
    let expected = file_sha256(&source.join("big.bin"));
    assert_eq!(file_sha256(&target.join("big.bin")), expected);
    assert_eq!(server_sha256(&h, "personal-files/tree/big.bin"), expected);
    let node = h
        .block_on(h.api.stat("personal-files/tree/big.bin"))
        .unwrap()
        .unwrap();
    assert_eq!(node.size, 1 << 30);
    // Unicode names are NFC on the wire and present on the server.
    let listed = h
        .block_on(h.api.list_folder("personal-files/tree/ünïcødé/日本語"))
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name(), "ファイル.txt");
    let empty = h
        .block_on(h.api.stat("personal-files/tree/empty.txt"))
        .unwrap()
        .unwrap();
    assert_eq!(empty.size, 0);
}

#[test]
fn rsync_a_twice_transfers_nothing_the_second_time() {
    let h = Harness::start();
    let source = h.new_dir("source");
    make_tree(&source, 5 << 20);
    let m = h.mount("mnt", &[]);
    let target = h.personal(&m).join("synced");
    let first = sh(
        h.dir.path(),
        &format!(
            "rsync -a --stats {}/ {}/",
            source.display(),
            target.display()
        ),
    );
    assert!(
        first.contains("Number of regular files transferred: 26"),
        "first run:\n{first}"
    );
    sh(
        h.dir.path(),
        &format!("diff -r {} {}", source.display(), target.display()),
    );
    let second = sh(
        h.dir.path(),
        &format!(
            "rsync -ai --stats {}/ {}/",
            source.display(),
            target.display()
        ),
    );
    assert!(
        second.contains("Number of regular files transferred: 0"),
        "second run copied again:\n{second}"
    );
    // mtimes kept (the local overlay) as rsync -a set them.
    let src_meta = std::fs::metadata(source.join("a/small-3.bin")).unwrap();
    let dst_meta = std::fs::metadata(target.join("a/small-3.bin")).unwrap();
    let secs = |m: std::fs::Metadata| {
        m.modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    assert_eq!(secs(src_meta), secs(dst_meta));
}
