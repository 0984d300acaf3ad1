//! The hidden `.versions` folders of a real FUSE mount: never listed (so `find` never enters
//! them), reached by name, a file's versions as read-only files named by time with the id
//! in `user.cells.version`, their content right (also streamed through the read-ahead and
//! the data cache, never mixed with the current content after an overwrite), every change
//! refused with EROFS, ENOENT for the versions of a missing file, and a `.versions` the
//! server really holds winning over the view.

mod mount_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cec::api::CellsApi;
use cec::api::versions::FileVersion;
use mount_common::*;

const EROFS: i32 = 30;

fn upload(h: &Harness, path: &str, local: &Path) {
    let len = std::fs::metadata(local).unwrap().len();
    h.block_on(
        h.api
            .put_object_from_file(path, local, len, &Default::default()),
    )
    .unwrap();
}

fn upload_bytes(h: &Harness, path: &str, content: &[u8]) {
    let src = h.dir.path().join("upload.tmp");
    std::fs::write(&src, content).unwrap();
    upload(h, path, &src);
}

/// Wait until the server lists `n` versions of `path`; newest first.
fn versions(h: &Harness, path: &str, n: usize) -> Vec<FileVersion> {
    let mut out = Vec::new();
    eventually(Duration::from_secs(20), "versions recorded", || {
        out = h.block_on(h.api.list_versions(path)).unwrap();
        out.len() >= n
    });
    assert_eq!(out.len(), n, "{out:?}");
    out
}

/// The names in a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn xattr_version(p: &Path) -> String {
    sh(
        Path::new("/"),
        &format!(
            "getfattr --only-values -n user.cells.version '{}'",
            p.display()
        ),
    )
}

fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("must fail").raw_os_error().unwrap_or(-1)
}

#[test]
fn versions_are_hidden_listed_by_name_and_read_back() {
    let h = Harness::start();
    // Each version is waited for before the next upload: the server's versioning job reads
    // the file when it runs, so two uploads before it runs make one version.
    for (i, content) in [&b"one"[..], b"two!", b"three"].iter().enumerate() {
        upload_bytes(&h, "personal-files/docs/report.txt", content);
        versions(&h, "personal-files/docs/report.txt", i + 1);
        std::thread::sleep(Duration::from_millis(1100));
    }
    upload_bytes(&h, "personal-files/docs/sub/other.txt", b"x");
    let listed = versions(&h, "personal-files/docs/report.txt", 3);
    let m = h.mount("mnt", &[]);
    let personal = h.personal(&m);
    let docs = personal.join("docs");

    // Never listed: not by readdir, not by find, not by du.
    assert_eq!(names(&docs), ["report.txt", "sub"]);
    let found = sh(&personal, "find . | sort");
    assert!(!found.contains(".versions"), "{found}");
    assert!(found.contains("./docs/sub/other.txt"), "{found}");

    // Reached by name: the folder's files, each a folder of its versions.
    let view = docs.join(".versions");
    assert!(view.is_dir());
    assert_eq!(names(&view), ["report.txt"]);
    let vdir = view.join("report.txt");
    let vnames = names(&vdir);
    assert_eq!(vnames.len(), 3, "{vnames:?}");
    for n in &vnames {
        assert!(
            n.ends_with("Z.txt") && n.len() == "2026-12-07_19-50-12Z.txt".len(),
            "{n}"
        );
    }
    // Sorted by name = oldest first; ids in the xattr; content and size of each.
    for (name, (v, content)) in
        vnames
            .iter()
            .zip(listed.iter().rev().zip([&b"one"[..], b"two!", b"three"]))
    {
        let p = vdir.join(name);
        assert_eq!(xattr_version(&p), v.id);
        assert_eq!(std::fs::read(&p).unwrap(), content);
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.len(), content.len() as u64);
        assert_eq!(
            md.modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
            v.mtime
        );
    }
    // `cp` out of it recovers a version.
    let out = h.dir.path().join("recovered.txt");
    sh(
        Path::new("/"),
        &format!(
            "cp '{}' '{}'",
            vdir.join(&vnames[0]).display(),
            out.display()
        ),
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"one");

    // Versions of what is not a file: ENOENT.
    for missing in [
        view.join("missing.txt"),
        view.join("sub"),
        vdir.join("1999-01-01_00-00-00Z.txt"),
        docs.join("sub/.versions/nothing.txt"),
    ] {
        let e = std::fs::metadata(&missing).expect_err("must not exist");
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOENT),
            "{}",
            missing.display()
        );
    }
    // None at the mount's root (only workspaces there).
    assert!(!m.path.join(".versions").exists());
}

#[test]
fn every_change_in_versions_is_refused_with_erofs() {
    let h = Harness::start();
    upload_bytes(&h, "personal-files/ro/a.txt", b"first");
    versions(&h, "personal-files/ro/a.txt", 1);
    upload_bytes(&h, "personal-files/ro/a.txt", b"second");
    versions(&h, "personal-files/ro/a.txt", 2);
    let m = h.mount("mnt", &[]);
    let dir = h.personal(&m).join("ro");
    let vdir = dir.join(".versions/a.txt");
    let first = vdir.join(&names(&vdir)[0]);

    use std::fs::OpenOptions;
    assert_eq!(errno_of(OpenOptions::new().write(true).open(&first)), EROFS);
    assert_eq!(
        errno_of(OpenOptions::new().append(true).open(&first)),
        EROFS
    );
    assert_eq!(errno_of(std::fs::File::create(vdir.join("new.txt"))), EROFS);
    assert_eq!(errno_of(std::fs::remove_file(&first)), EROFS);
    assert_eq!(errno_of(std::fs::rename(&first, vdir.join("b.txt"))), EROFS);
    assert_eq!(
        errno_of(std::fs::rename(&first, dir.join("out.txt"))),
        EROFS
    );
    assert_eq!(errno_of(std::fs::create_dir(vdir.join("d"))), EROFS);
    assert_eq!(errno_of(std::fs::remove_dir(&vdir)), EROFS);
    assert_eq!(
        errno_of(std::fs::create_dir(dir.join(".versions/x"))),
        EROFS
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        errno_of(std::fs::set_permissions(
            &first,
            std::fs::Permissions::from_mode(0o644)
        )),
        EROFS
    );
    let truncated = std::process::Command::new("truncate")
        .args(["-s", "0"])
        .arg(&first)
        .status()
        .unwrap();
    assert!(!truncated.success());
    let set = std::process::Command::new("setfattr")
        .args(["-n", "user.cells.version", "-v", "x"])
        .arg(&first)
        .output()
        .unwrap();
    assert!(!set.status.success());
    assert!(
        String::from_utf8_lossy(&set.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    // Nothing changed anywhere.
    assert_eq!(std::fs::read(&first).unwrap(), b"first");
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"second");
    assert_eq!(names(&dir), ["a.txt"]);
    assert!(
        h.block_on(h.api.stat("personal-files/ro/out.txt"))
            .unwrap()
            .is_none()
    );
    assert!(
        h.block_on(h.api.stat("personal-files/ro/.versions"))
            .unwrap()
            .is_none()
    );
}

/// Same size, different bytes: a data cache keyed by anything but the version would serve
/// one for the other.
#[test]
fn a_version_never_mixes_with_the_current_content() {
    let h = Harness::start();
    const LEN: u64 = 3 * 1024 * 1024 + 12_345;
    let src: Vec<PathBuf> = (1..=3)
        .map(|seed| {
            let p = h.dir.path().join(format!("seed{seed}"));
            write_pattern(&p, LEN, seed);
            p
        })
        .collect();
    upload(&h, "personal-files/big/data.bin", &src[0]);
    versions(&h, "personal-files/big/data.bin", 1);
    std::thread::sleep(Duration::from_millis(1100));
    upload(&h, "personal-files/big/data.bin", &src[1]);
    versions(&h, "personal-files/big/data.bin", 2);
    let m = h.mount("mnt", &[]);
    let file = h.personal(&m).join("big/data.bin");
    let vdir = h.personal(&m).join("big/.versions/data.bin");

    // The current content first (into the data cache), then the old version streamed.
    assert_eq!(file_sha256(&file), file_sha256(&src[1]));
    let old = vdir.join(&names(&vdir)[0]);
    assert_eq!(file_sha256(&old), file_sha256(&src[0]));
    let newest = vdir.join(&names(&vdir)[1]);
    assert_eq!(file_sha256(&newest), file_sha256(&src[1]));
    // A random read in the middle of the old version (a ranged GET, not the stream).
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&old).unwrap();
        let mut got = vec![0u8; 4096];
        f.read_exact_at(&mut got, 2 * 1024 * 1024 + 7).unwrap();
        let want = std::fs::read(&src[0]).unwrap();
        assert_eq!(got, want[2 * 1024 * 1024 + 7..2 * 1024 * 1024 + 7 + 4096]);
    }

    // Overwrite the file through the mount: the versions keep their bytes, the file shows
    // the new ones, and the new content becomes a version of its own.
    sh(
        Path::new("/"),
        &format!("cp '{}' '{}'", src[2].display(), file.display()),
    );
    assert_eq!(file_sha256(&file), file_sha256(&src[2]));
    assert_eq!(file_sha256(&old), file_sha256(&src[0]));
    assert_eq!(file_sha256(&newest), file_sha256(&src[1]));
    versions(&h, "personal-files/big/data.bin", 3);
    eventually(Duration::from_secs(20), "the new version listed", || {
        names(&vdir).len() == 3
    });
    let third = vdir.join(&names(&vdir)[2]);
    assert_eq!(file_sha256(&third), file_sha256(&src[2]));
    assert_eq!(file_sha256(&old), file_sha256(&src[0]));
}

#[test]
fn a_versions_node_the_server_holds_wins() {
    let h = Harness::start();
    // Another client stored a real folder named `.versions` (some tools make them).
    upload_bytes(&h, "personal-files/real/.versions/notes.txt", b"user data");
    upload_bytes(&h, "personal-files/real/f.txt", b"v1");
    versions(&h, "personal-files/real/f.txt", 1);
    upload_bytes(&h, "personal-files/real/f.txt", b"v2");
    versions(&h, "personal-files/real/f.txt", 2);
    let m = h.mount("mnt", &[]);
    let real = h.personal(&m).join("real");

    // It is listed (it is data), read and written as any folder.
    assert_eq!(names(&real), [".versions", "f.txt"]);
    assert_eq!(names(&real.join(".versions")), ["notes.txt"]);
    assert_eq!(
        std::fs::read(real.join(".versions/notes.txt")).unwrap(),
        b"user data"
    );
    std::fs::write(real.join(".versions/more.txt"), b"written").unwrap();
    assert_eq!(
        server_sha256(&h, "personal-files/real/.versions/more.txt"),
        {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(b"written"))
        }
    );
    // So the view is not offered there: f.txt has no folder in it.
    let e = std::fs::metadata(real.join(".versions/f.txt")).expect_err("not the view");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    // Elsewhere the view is there as usual.
    upload_bytes(&h, "personal-files/other/g.txt", b"g");
    versions(&h, "personal-files/other/g.txt", 1);
    let other = h.personal(&m).join("other/.versions/g.txt");
    assert_eq!(names(&other).len(), 1);
}
