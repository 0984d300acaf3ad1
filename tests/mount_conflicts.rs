//! Two people, one file (issue 32): two mounts of the same account with their own cache
//! directories stand for two machines. A close that would replace a version the mount never
//! saw keeps the server's version and stores ours beside it as a conflict copy (or fails
//! with EBUSY, or overwrites, as `--conflicts` says); nothing of the kind happens when one
//! side alone writes; a new open sees the other side's save (close-to-open).

mod mount_common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cec::api::{CellsApi, UploadOptions};
use mount_common::*;

const ORIGINAL: &str = "original\n";
const B_EDIT: &str = "B's important edit\n";
const A_EDIT: &str = "A's edit based on original";

/// Two mounts of alice's account, each with its own cache directory.
fn two_mounts(h: &Harness, a_args: &[&str], b_args: &[&str]) -> (Mounted, Mounted) {
    let a = h.mount_with_cache_dir(&h.new_dir("a"), &h.dir.path().join("cache-a"), a_args);
    let b = h.mount_with_cache_dir(&h.new_dir("b"), &h.dir.path().join("cache-b"), b_args);
    (a, b)
}

/// `close(2)` of `file`, with its result (dropping a `File` ignores it).
fn close(file: std::fs::File) -> std::io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just released by its owner and is closed once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn server_text(h: &Harness, path: &str) -> String {
    use futures::StreamExt;
    h.block_on(async {
        let mut stream = h.api.get_object(path, None).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(out).unwrap()
    })
}

fn server_put(h: &Harness, path: &str, text: &str) {
    h.block_on(h.api.put_object(
        path,
        bytes::Bytes::from(text.to_string()),
        &UploadOptions::default(),
    ))
    .unwrap();
}

/// Names in the server folder `folder` that are conflict copies.
fn conflict_copies(h: &Harness, folder: &str) -> Vec<String> {
    let mut names: Vec<String> = h
        .block_on(h.api.list_folder(folder))
        .unwrap()
        .iter()
        .filter(|n| !n.is_temporary())
        .map(|n| n.name().to_string())
        .filter(|n| n.contains("(conflict "))
        .collect();
    names.sort();
    names
}

/// This machine's short host name, as the conflict copies carry it.
fn short_host() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    raw.trim().split('.').next().unwrap().to_string()
}

/// `doc (conflict HOST YYYY-MM-DD HHMMSS).txt`
fn assert_conflict_name(name: &str, stem: &str, ext: &str) {
    let prefix = format!("{stem} (conflict {} ", short_host());
    let suffix = format!("){ext}");
    assert!(
        name.starts_with(&prefix) && name.ends_with(&suffix),
        "unexpected conflict copy name {name:?}"
    );
    let stamp = &name[prefix.len()..name.len() - suffix.len()];
    let b = stamp.as_bytes();
    assert!(
        stamp.len() == 17
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b' '
            && stamp
                .bytes()
                .enumerate()
                .all(|(i, c)| [4, 7, 10].contains(&i) || c.is_ascii_digit()),
        "not a `YYYY-MM-DD HHMMSS` stamp: {stamp:?}"
    );
}

/// The mount's status as its control socket serves it (the JSON of `cec mount --status`).
fn status_json(h: &Harness, m: &Mounted) -> serde_json::Value {
    use std::os::unix::net::UnixStream;
    let dir = h.dir.path().join("run/cec");
    let want = std::fs::canonicalize(&m.path).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.path().extension().is_none_or(|e| e != "sock") {
            continue;
        }
        let Ok(mut stream) = UnixStream::connect(entry.path()) else {
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"status\n").unwrap();
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&reply) else {
            continue;
        };
        if value["mountpoint"].as_str().map(PathBuf::from) == Some(want.clone()) {
            return value;
        }
    }
    panic!("no status socket answers for {}", m.path.display());
}

fn status_text(h: &Harness, m: &Mounted) -> String {
    String::from_utf8_lossy(&h.mount_status(&m.path).stdout).into_owned()
}

/// The scenario: both mounts see "original"; an editor on A holds the file open;
/// B saves its edit; A writes its own, truncates and closes. Returns A's close result.
fn two_editors(h: &Harness, a: &Mounted, b: &Mounted) -> std::io::Result<()> {
    let da = h.personal(a).join("shared");
    let db = h.personal(b).join("shared");
    std::fs::create_dir(&da).unwrap();
    std::fs::write(da.join("doc.txt"), ORIGINAL).unwrap();
    eventually(Duration::from_secs(30), "B sees the original", || {
        std::fs::read_to_string(db.join("doc.txt")).is_ok_and(|t| t == ORIGINAL)
    });
    let mut fa = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(da.join("doc.txt"))
        .unwrap();
    let mut seen = String::new();
    fa.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, ORIGINAL);

    std::fs::write(db.join("doc.txt"), B_EDIT).unwrap();
    eventually(Duration::from_secs(30), "B's save on the server", || {
        server_text(h, "personal-files/shared/doc.txt") == B_EDIT
    });
    std::thread::sleep(Duration::from_secs(1));

    fa.seek(SeekFrom::Start(0)).unwrap();
    fa.write_all(A_EDIT.as_bytes()).unwrap();
    fa.set_len(A_EDIT.len() as u64).unwrap();
    close(fa)
}

/// After [`two_editors`]: B's edit on the server, A's in exactly one conflict copy, which
/// the WARN line and the status of A name.
fn assert_both_kept(h: &Harness, a: &Mounted) {
    let copies = conflict_copies(h, "personal-files/shared");
    assert_eq!(copies.len(), 1, "one conflict copy expected: {copies:?}");
    let copy = &copies[0];
    assert_conflict_name(copy, "doc", ".txt");
    let copy_path = format!("personal-files/shared/{copy}");
    assert_eq!(server_text(h, &copy_path), A_EDIT);
    assert_eq!(server_text(h, "personal-files/shared/doc.txt"), B_EDIT);

    // One WARN line names both.
    let log = a.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("personal-files/shared/doc.txt")
            && l.contains(copy.as_str())),
        "no WARN line naming both files:\n{log}"
    );
    // The status lists it, in its JSON and its text.
    let status = status_json(h, a);
    let listed = status["conflict_copies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed.len(), 1, "{status}");
    assert_eq!(listed[0]["path"], "personal-files/shared/doc.txt");
    assert_eq!(listed[0]["copy"], copy_path.as_str());
    let text = status_text(h, a);
    assert!(text.contains(copy.as_str()), "status text:\n{text}");

    // A's mount shows the server's version under the name, and the copy beside it.
    let da = h.personal(a).join("shared");
    eventually(Duration::from_secs(10), "A shows B's version", || {
        std::fs::read_to_string(da.join("doc.txt")).is_ok_and(|t| t == B_EDIT)
    });
    assert_eq!(std::fs::read_to_string(da.join(copy)).unwrap(), A_EDIT);
}

#[test]
fn two_editors_keep_both_versions_by_default() {
    let h = Harness::start();
    let (a, b) = two_mounts(&h, &[], &[]);
    two_editors(&h, &a, &b).expect("close succeeds: the data is safe");
    assert_both_kept(&h, &a);
}

#[test]
fn two_editors_keep_both_versions_in_write_back() {
    let h = Harness::start();
    let (a, b) = two_mounts(&h, &["--write-back", "1"], &["--write-back", "1"]);
    two_editors(&h, &a, &b).expect("close succeeds");
    eventually(Duration::from_secs(60), "the conflict copy stored", || {
        !conflict_copies(&h, "personal-files/shared").is_empty()
    });
    assert_both_kept(&h, &a);
}

#[test]
fn overwrite_mode_keeps_last_writer_wins() {
    let h = Harness::start();
    let (a, b) = two_mounts(&h, &["--conflicts", "overwrite"], &[]);
    two_editors(&h, &a, &b).expect("close succeeds");
    assert_eq!(server_text(&h, "personal-files/shared/doc.txt"), A_EDIT);
    assert!(conflict_copies(&h, "personal-files/shared").is_empty());
}

#[test]
fn fail_mode_answers_ebusy_and_keeps_ours_in_the_recovery_folder() {
    let h = Harness::start();
    let (a, b) = two_mounts(&h, &["--conflicts", "fail"], &[]);
    let closed = two_editors(&h, &a, &b);
    assert_eq!(
        closed.as_ref().map_err(|e| e.raw_os_error()),
        Err(Some(libc::EBUSY)),
        "{closed:?}"
    );
    assert_eq!(server_text(&h, "personal-files/shared/doc.txt"), B_EDIT);
    assert!(conflict_copies(&h, "personal-files/shared").is_empty());
    // Ours is in A's recovery folder, with the path it was meant for beside it.
    let recovery = h.dir.path().join("cache-a/recovery");
    let kept: Vec<PathBuf> = std::fs::read_dir(&recovery)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none_or(|e| e != "path"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), A_EDIT);
    let errors = status_json(&h, &a)["recent_errors"].to_string();
    assert!(
        errors.contains("personal-files/shared/doc.txt") && errors.contains("recovery"),
        "{errors}"
    );
}

#[test]
fn a_file_created_on_both_sides_keeps_both() {
    let h = Harness::start();
    let (a, b) = two_mounts(&h, &[], &[]);
    let da = h.personal(&a).join("both");
    std::fs::create_dir(&da).unwrap();
    let db = h.personal(&b).join("both");
    eventually(Duration::from_secs(30), "B sees the folder", || db.is_dir());
    // A creates the file and is still writing it when B's (new) file lands.
    let mut fa = std::fs::File::create(da.join("new.md")).unwrap();
    fa.write_all(b"A's new file\n").unwrap();
    std::fs::write(db.join("new.md"), "B's new file\n").unwrap();
    close(fa).expect("close succeeds");
    assert_eq!(
        server_text(&h, "personal-files/both/new.md"),
        "B's new file\n"
    );
    let copies = conflict_copies(&h, "personal-files/both");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_conflict_name(&copies[0], "new", ".md");
    assert_eq!(
        server_text(&h, &format!("personal-files/both/{}", copies[0])),
        "A's new file\n"
    );
}

#[test]
fn a_replayed_write_back_upload_whose_base_moved_becomes_a_conflict_copy() {
    let h = Harness::start();
    let cache = h.dir.path().join("cache-a");
    let mp = h.new_dir("a");
    server_put(&h, "personal-files/doc.txt", ORIGINAL);
    let mut a = h.mount_with_cache_dir(&mp, &cache, &["--write-back", "600"]);
    let doc = h.personal(&a).join("doc.txt");
    assert_eq!(std::fs::read_to_string(&doc).unwrap(), ORIGINAL);
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&doc).unwrap();
        f.write_all(A_EDIT.as_bytes()).unwrap();
        f.set_len(A_EDIT.len() as u64).unwrap();
        close(f).unwrap();
    }
    assert_eq!(server_text(&h, "personal-files/doc.txt"), ORIGINAL);
    a.kill9();
    // Meanwhile the other machine saves its edit.
    server_put(&h, "personal-files/doc.txt", B_EDIT);

    let a = h.mount_with_cache_dir(&mp, &cache, &[]);
    eventually(Duration::from_secs(60), "the replay stores a copy", || {
        !conflict_copies(&h, "personal-files").is_empty()
    });
    let copies = conflict_copies(&h, "personal-files");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_conflict_name(&copies[0], "doc", ".txt");
    assert_eq!(
        server_text(&h, &format!("personal-files/{}", copies[0])),
        A_EDIT
    );
    assert_eq!(server_text(&h, "personal-files/doc.txt"), B_EDIT);
    assert_eq!(
        status_json(&h, &a)["conflict_copies"][0]["path"],
        "personal-files/doc.txt"
    );
}

/// One round of writes to `path` through one mount: a rewrite, an edit in place, an edit
/// with an fsync in the middle (each based on the mount's own previous upload).
fn write_round(path: &Path, i: usize) -> String {
    match i % 3 {
        0 => {
            let text = format!("version {i}\n");
            std::fs::write(path, &text).unwrap();
            text
        }
        1 => {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let mut old = String::new();
            f.read_to_string(&mut old).unwrap();
            let text = format!("edit {i} of {}", old.len());
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(text.as_bytes()).unwrap();
            f.set_len(text.len() as u64).unwrap();
            close(f).unwrap();
            text
        }
        _ => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .unwrap();
            f.write_all(format!("half {i}").as_bytes()).unwrap();
            f.sync_all().unwrap();
            f.write_all(b" and the rest\n").unwrap();
            close(f).unwrap();
            format!("half {i} and the rest\n")
        }
    }
}

#[test]
fn a_thousand_writes_from_one_mount_make_no_conflict_copy() {
    let h = Harness::start();
    let cache = h.dir.path().join("cache-a");
    let mp = h.new_dir("a");
    let b = h.mount_with_cache_dir(&h.new_dir("b"), &h.dir.path().join("cache-b"), &[]);
    let mut last = String::new();
    // 500 closes that upload, then 500 in write-back (uploads start at once, so many run
    // while the file is written again).
    for (args, range) in [(&[][..], 0..500), (&["--write-back", "0"][..], 500..1000)] {
        let mut a = h.mount_with_cache_dir(&mp, &cache, args);
        let doc = h.personal(&a).join("doc.txt");
        for i in range {
            last = write_round(&doc, i);
        }
        eventually(Duration::from_secs(60), "nothing pending", || {
            status_json(&h, &a)["pending_uploads"] == serde_json::json!([])
        });
        assert_eq!(server_text(&h, "personal-files/doc.txt"), last);
        assert_eq!(
            status_json(&h, &a)["conflict_copies"],
            serde_json::json!([]),
            "the status reports no conflict copy"
        );
        a.unmount();
    }
    assert!(conflict_copies(&h, "personal-files").is_empty());
    // B, which only read, sees the last version.
    eventually(Duration::from_secs(30), "B sees the last version", || {
        std::fs::read_to_string(h.personal(&b).join("doc.txt")).is_ok_and(|t| t == last)
    });
    assert_eq!(
        status_json(&h, &b)["conflict_copies"],
        serde_json::json!([])
    );
}

#[test]
fn a_write_back_replay_based_on_the_mounts_own_upload_is_no_conflict() {
    let h = Harness::start();
    let cache = h.dir.path().join("cache-a");
    let mp = h.new_dir("a");
    let mut a = h.mount_with_cache_dir(&mp, &cache, &["--write-back", "600"]);
    let doc = h.personal(&a).join("doc.txt");
    // v1 reaches the server by fsync; v2 is based on it and only journaled.
    {
        let mut f = std::fs::File::create(&doc).unwrap();
        f.write_all(b"v1\n").unwrap();
        f.sync_all().unwrap();
        f.write_all(b"v2\n").unwrap();
        close(f).unwrap();
    }
    assert_eq!(server_text(&h, "personal-files/doc.txt"), "v1\n");
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&doc).unwrap();
        f.write_all(b"v3\n").unwrap();
        close(f).unwrap();
    }
    a.kill9();
    let a = h.mount_with_cache_dir(&mp, &cache, &[]);
    eventually(Duration::from_secs(60), "the replay uploads v3", || {
        server_text(&h, "personal-files/doc.txt") == "v1\nv2\nv3\n"
    });
    assert!(conflict_copies(&h, "personal-files").is_empty());
    assert_eq!(
        status_json(&h, &a)["conflict_copies"],
        serde_json::json!([]),
        "the status reports no conflict copy"
    );
}

#[test]
fn a_new_open_sees_the_other_mounts_save() {
    let h = Harness::start();
    let (a, b) = two_mounts(&h, &[], &[]);
    let da = h.personal(&a).join("c2o");
    std::fs::create_dir(&da).unwrap();
    std::fs::write(da.join("doc.txt"), ORIGINAL).unwrap();
    let db = h.personal(&b).join("c2o");
    eventually(Duration::from_secs(30), "B sees the original", || {
        std::fs::read_to_string(db.join("doc.txt")).is_ok_and(|t| t == ORIGINAL)
    });
    // An editor on A holds the file open, unchanged.
    let mut fa = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(da.join("doc.txt"))
        .unwrap();
    let mut seen = String::new();
    fa.read_to_string(&mut seen).unwrap();
    std::fs::write(db.join("doc.txt"), B_EDIT).unwrap();
    let took = eventually(
        Duration::from_secs(10),
        "A's next open reads B's save",
        || {
            let seen = std::fs::read_to_string(da.join("doc.txt"));
            eprintln!("A reads {seen:?}");
            seen.is_ok_and(|t| t == B_EDIT)
        },
    );
    eprintln!("B's save visible on A after {took:?}");
    close(fa).unwrap();
    // Nothing was written through the editor's handle: nothing to keep beside.
    assert!(conflict_copies(&h, "personal-files/c2o").is_empty());
    assert_eq!(server_text(&h, "personal-files/c2o/doc.txt"), B_EDIT);
}
