//! Unit tests of the store: the `x-cells-hash` computation, content written behind a blob's
//! back, and overwrites (Uuid kept, old blob unlinked, conflicts refused).

use std::io::Write;

use md5::Digest as _;

use crate::EmuConfig;

use super::*;

fn md5_raw(b: &[u8]) -> Vec<u8> {
    md5::Md5::digest(b).to_vec()
}

#[test]
fn cells_hash_is_md5_of_block_md5s() {
    let block = CELLS_HASH_BLOCK as usize;
    let data: Vec<u8> = (0..(2 * block + 12345)).map(|i| (i % 251) as u8).collect();
    let mut expected = Vec::new();
    for chunk in data.chunks(block) {
        expected.extend(md5_raw(chunk));
    }
    let expected = hex::encode(md5_raw(&expected));
    let mut h = CellsHasher::new();
    for piece in data.chunks(777_777) {
        h.update(piece);
    }
    assert_eq!(h.finish(), expected);
    // Small and empty inputs: md5(md5(content)).
    let mut h = CellsHasher::new();
    h.update(b"abc");
    assert_eq!(h.finish(), hex::encode(md5_raw(&md5_raw(b"abc"))));
    assert_eq!(
        CellsHasher::new().finish(),
        hex::encode(md5_raw(&md5_raw(b"")))
    );
    // Exactly one block: one digest, no trailing empty block.
    let one: Vec<u8> = vec![7u8; block];
    let mut h = CellsHasher::new();
    h.update(&one);
    assert_eq!(h.finish(), hex::encode(md5_raw(&md5_raw(&one))));
}

#[test]
fn content_written_behind_the_blob_is_rehashed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&EmuConfig::for_tests(dir.path())).unwrap();
    let blob = store.tmp_file().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(blob.path())
        .unwrap()
        .write_all(b"direct")
        .unwrap();
    let n = store
        .commit_file("alice", "personal-files/d.bin", blob, None, BTreeMap::new())
        .unwrap();
    assert_eq!(n.size, 6);
    assert_eq!(n.etag, hex::encode(md5_raw(b"direct")));
    assert_eq!(
        n.cells_hash.as_deref(),
        Some(hex::encode(md5_raw(&md5_raw(b"direct"))).as_str())
    );
}

#[test]
fn overwrite_keeps_uuid_and_unlinks_old_blob_and_conflicts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&EmuConfig::for_tests(dir.path())).unwrap();
    let mut changes = store.subscribe_changes();
    let a = store
        .put_bytes("alice", "personal-files/x/f.txt", b"one", None)
        .unwrap();
    let (_, old_blob) = store
        .open_content("alice", "personal-files/x/f.txt")
        .unwrap();
    let b = store
        .put_bytes("alice", "personal-files/x/f.txt", b"two!", None)
        .unwrap();
    assert_eq!(a.uuid, b.uuid);
    assert!(!old_blob.exists());
    assert!(matches!(
        store.put_bytes("alice", "personal-files/x", b"no", None),
        Err(StoreError::IsAFolder(_))
    ));
    assert!(matches!(
        store.put_bytes("alice", "personal-files/x/f.txt/y", b"no", None),
        Err(StoreError::NotAFolder(_))
    ));
    assert!(matches!(
        store.put_bytes("alice", "team-docs/y", b"no", None),
        Err(StoreError::Forbidden(_))
    ));
    // Events: folder x CREATE, f.txt CREATE, f.txt UPDATE_CONTENT.
    let kinds: Vec<ChangeKind> = std::iter::from_fn(|| changes.try_recv().ok())
        .map(|c| c.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Create,
            ChangeKind::Create,
            ChangeKind::UpdateContent
        ]
    );
    // Visible paths: alice sees her file; bob does not; common files are seen by both.
    let vp = store.visible_paths("alice", &b);
    assert_eq!(vp.len(), 1);
    assert_eq!(vp[0].path, "personal-files/x/f.txt");
    assert!(store.visible_paths("bob", &b).is_empty());
    let c = store
        .put_bytes("bob", "common-files/c.txt", b"c", None)
        .unwrap();
    assert_eq!(
        store.visible_paths("alice", &c)[0].path,
        "common-files/c.txt"
    );
}
