//! Symbolic links in a `--links` mount, stored as rclone's `NAME.rclonelink` files: a Python
//! venv runs, `tar` and `git` round-trip trees holding links, rclone's own `--links` reads
//! and writes the same convention, and the rules of `src/fs/links.rs` (plain file wins, no
//! link out of a big or NUL-holding file, rename/unlink/events on the stored file). Without
//! `--links`, links are refused and the log says which option stores them.

mod mount_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cec::api::{CellsApi, UploadOptions};
use mount_common::*;

fn put(h: &Harness, path: &str, body: &[u8]) {
    h.block_on(h.api.put_object(
        path,
        bytes::Bytes::copy_from_slice(body),
        &UploadOptions::default(),
    ))
    .unwrap();
}

fn on_server(h: &Harness, path: &str) -> bool {
    h.block_on(h.api.head_object(path)).is_ok()
}

fn link_of(path: &Path) -> Option<PathBuf> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_symlink())
        .and_then(|_| std::fs::read_link(path).ok())
}

/// rclone on the emulator's S3 gateway (as bench/run.sh configures it), `--links` on.
fn rclone(h: &Harness, args: &[&str]) -> String {
    let out = std::process::Command::new("rclone")
        .args(args)
        .arg("--links")
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_EMU_TYPE", "s3")
        .env("RCLONE_CONFIG_EMU_PROVIDER", "Other")
        .env("RCLONE_CONFIG_EMU_ENDPOINT", &h.url)
        .env("RCLONE_CONFIG_EMU_ACCESS_KEY_ID", &h.token)
        .env("RCLONE_CONFIG_EMU_SECRET_ACCESS_KEY", "gatewaysecret")
        .env("RCLONE_CONFIG_EMU_REGION", "us-east-1")
        .env("RCLONE_S3_FORCE_PATH_STYLE", "true")
        .env("RCLONE_S3_NO_CHECK_BUCKET", "true")
        .output()
        .expect("rclone is installed");
    assert!(
        out.status.success(),
        "rclone {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A local tree with the kinds of links archives hold: relative, absolute, dangling, to a
/// folder, and chained.
fn tree_with_links(root: &Path) {
    sh(
        root,
        "mkdir -p t/sub && cd t && echo hello > a.txt && echo deep > sub/b.txt \
         && chmod 644 a.txt sub/b.txt && ln -s a.txt rel && ln -s /etc/hostname abs \
         && ln -s nowhere/at/all dangling && ln -s sub dirlink && ln -s ../a.txt sub/up \
         && ln -s rel chain",
    );
}

#[test]
fn python_venv_runs_in_a_links_mount() {
    let h = Harness::start();
    let m = h.mount("mnt", &["--links"]);
    let dir = h.personal(&m);
    sh(&dir, "python3 -m venv venv");
    assert_eq!(sh(&dir, "venv/bin/python -c 'print(1)'").trim(), "1");
    // The venv's links are links in the mount and `.rclonelink` files on the server.
    let python = link_of(&dir.join("venv/bin/python")).expect("bin/python is a link");
    assert!(!python.as_os_str().is_empty());
    assert!(on_server(&h, "personal-files/venv/bin/python.rclonelink"));
    assert!(!on_server(&h, "personal-files/venv/bin/python"));
    if dir.join("venv/lib64").symlink_metadata().is_ok() {
        assert_eq!(link_of(&dir.join("venv/lib64")), Some(PathBuf::from("lib")));
    }
}

#[test]
fn tar_of_a_tree_with_links_round_trips_through_the_mount() {
    let h = Harness::start();
    let local = h.new_dir("local");
    tree_with_links(&local);
    sh(&local, "tar -cf ../in.tar -C t .");
    let m = h.mount("mnt", &["--links"]);
    let inside = h.personal(&m).join("x");
    std::fs::create_dir(&inside).unwrap();
    sh(
        &inside,
        &format!("tar -xf {}/in.tar", h.dir.path().display()),
    );
    sh(
        &inside,
        &format!("tar -cf {}/out.tar .", h.dir.path().display()),
    );
    // Type, size and name (with the target of a link), in order: the same listing.
    let listing = |tar: &str| {
        sh(
            h.dir.path(),
            &format!(
                "tar -tvf {tar} | awk '{{t=substr($1,1,1); s=(t==\"-\")?$3:\"\"; $1=$2=$3=$4=$5=\"\"; print t, s, $0}}' | sort"
            ),
        )
    };
    let before = listing("in.tar");
    assert!(before.contains("rel -> a.txt"), "{before}");
    assert_eq!(before, listing("out.tar"));
    // The links, byte for byte, and the files through them.
    sh(
        h.dir.path(),
        &format!(
            "diff -r --no-dereference {} {}",
            local.join("t").display(),
            inside.display()
        ),
    );
    assert_eq!(
        std::fs::read_to_string(inside.join("chain")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(inside.join("dirlink/up")).unwrap(),
        "hello\n"
    );
    // lstat: a link whose size is its target's length.
    let meta = std::fs::symlink_metadata(inside.join("dangling")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(meta.len(), "nowhere/at/all".len() as u64);
    // The stored name is not a second entry.
    let names = sh(&inside, "ls -A | sort");
    assert!(!names.contains(".rclonelink"), "{names}");
    assert!(on_server(&h, "personal-files/x/rel.rclonelink"));
}

#[test]
fn git_clone_of_a_repository_tracking_a_link_is_clean() {
    let h = Harness::start();
    let local = h.new_dir("local");
    sh(
        &local,
        "git init -q -b main repo && cd repo && echo '# hi' > README.md \
         && ln -s README.md link.md && git add . \
         && git -c user.name=t -c user.email=t@e commit -qm one",
    );
    let m = h.mount("mnt", &["--links"]);
    let dir = h.personal(&m);
    sh(
        &dir,
        &format!("git clone -q {} clone", local.join("repo").display()),
    );
    assert_eq!(
        link_of(&dir.join("clone/link.md")),
        Some(PathBuf::from("README.md"))
    );
    assert_eq!(sh(&dir.join("clone"), "git status --porcelain"), "");
    assert_eq!(
        sh(&dir.join("clone"), "git ls-files -s link.md")
            .split_whitespace()
            .next(),
        Some("120000"),
        "git sees a link, not a file"
    );
}

#[test]
fn rclone_links_read_as_links_and_links_made_here_read_back_in_rclone() {
    let h = Harness::start();
    let local = h.new_dir("local");
    tree_with_links(&local);
    rclone(
        &h,
        &[
            "copy",
            &local.join("t").to_string_lossy(),
            "emu:io/personal-files/r",
        ],
    );
    assert!(on_server(&h, "personal-files/r/rel.rclonelink"));
    let m = h.mount("mnt", &["--links"]);
    let dir = h.personal(&m);
    for (name, target) in [
        ("r/rel", "a.txt"),
        ("r/abs", "/etc/hostname"),
        ("r/dangling", "nowhere/at/all"),
        ("r/dirlink", "sub"),
        ("r/sub/up", "../a.txt"),
    ] {
        assert_eq!(
            link_of(&dir.join(name)),
            Some(PathBuf::from(target)),
            "{name}"
        );
    }
    // Made in the mount, read back by rclone as links.
    std::fs::create_dir(dir.join("made")).unwrap();
    std::fs::write(dir.join("made/f"), "x").unwrap();
    std::os::unix::fs::symlink("f", dir.join("made/l")).unwrap();
    std::os::unix::fs::symlink("/no/such/place", dir.join("made/far")).unwrap();
    let back = h.new_dir("back");
    rclone(
        &h,
        &[
            "copy",
            "emu:io/personal-files/made",
            &back.to_string_lossy(),
        ],
    );
    assert_eq!(link_of(&back.join("l")), Some(PathBuf::from("f")));
    assert_eq!(
        link_of(&back.join("far")),
        Some(PathBuf::from("/no/such/place"))
    );
    assert_eq!(std::fs::read_to_string(back.join("f")).unwrap(), "x");
}

#[test]
fn plain_file_wins_and_what_cannot_be_a_path_stays_a_file() {
    let h = Harness::start();
    put(&h, "personal-files/w/both", b"data");
    put(&h, "personal-files/w/both.rclonelink", b"elsewhere");
    put(&h, "personal-files/w/nul.rclonelink", b"a\0b");
    put(&h, "personal-files/w/big.rclonelink", &[b'a'; 4096]);
    put(&h, "personal-files/w/max.rclonelink", &[b'a'; 4095]);
    put(&h, "personal-files/w/empty.rclonelink", b"");
    put(&h, "personal-files/w/ok.rclonelink", b"both");
    let m = h.mount("mnt", &["--links"]);
    let w = h.personal(&m).join("w");
    let names: std::collections::BTreeSet<String> = std::fs::read_dir(&w)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected = [
        "both",
        "both.rclonelink",
        "big.rclonelink",
        "empty.rclonelink",
        "max",
        "nul.rclonelink",
        "ok",
    ];
    assert_eq!(names, expected.iter().map(|s| s.to_string()).collect());
    assert_eq!(std::fs::read_to_string(w.join("both")).unwrap(), "data");
    assert_eq!(
        std::fs::read_to_string(w.join("both.rclonelink")).unwrap(),
        "elsewhere"
    );
    for file in ["nul.rclonelink", "big.rclonelink", "empty.rclonelink"] {
        assert!(
            std::fs::symlink_metadata(w.join(file)).unwrap().is_file(),
            "{file}"
        );
    }
    assert_eq!(
        std::fs::read_link(w.join("max")).unwrap().as_os_str().len(),
        4095
    );
    assert_eq!(link_of(&w.join("ok")), Some(PathBuf::from("both")));
    // A link's stored name is no second entry, and does not resolve either.
    assert!(std::fs::symlink_metadata(w.join("ok.rclonelink")).is_err());
    assert!(std::fs::symlink_metadata(w.join("nul")).is_err());
}

#[test]
fn rename_unlink_and_events_act_on_the_stored_file() {
    let h = Harness::start();
    let m = h.mount("mnt", &["--links"]);
    let dir = h.personal(&m);
    std::os::unix::fs::symlink("target", dir.join("l")).unwrap();
    assert!(on_server(&h, "personal-files/l.rclonelink"));
    // A second link of the same name is refused, as on any filesystem.
    assert_eq!(
        std::os::unix::fs::symlink("other", dir.join("l"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EEXIST)
    );
    std::fs::create_dir(dir.join("d")).unwrap();
    std::fs::rename(dir.join("l"), dir.join("d/l2")).unwrap();
    assert!(on_server(&h, "personal-files/d/l2.rclonelink"));
    assert!(!on_server(&h, "personal-files/l.rclonelink"));
    assert_eq!(link_of(&dir.join("d/l2")), Some(PathBuf::from("target")));
    std::fs::remove_file(dir.join("d/l2")).unwrap();
    assert!(!on_server(&h, "personal-files/d/l2.rclonelink"));
    assert!(std::fs::symlink_metadata(dir.join("d/l2")).is_err());
    // `ln -sf` over a file: the link replaces it (the plain file would otherwise win).
    std::fs::write(dir.join("d/y"), "plain").unwrap();
    sh(&dir.join("d"), "ln -sf target2 y");
    assert_eq!(link_of(&dir.join("d/y")), Some(PathBuf::from("target2")));
    assert!(on_server(&h, "personal-files/d/y.rclonelink"));
    assert!(!on_server(&h, "personal-files/d/y"));
    // A file renamed over a link replaces it.
    std::fs::write(dir.join("d/z"), "plain").unwrap();
    std::fs::rename(dir.join("d/z"), dir.join("d/y")).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("d/y")).unwrap(), "plain");
    assert!(on_server(&h, "personal-files/d/y"));
    assert!(!on_server(&h, "personal-files/d/y.rclonelink"));
    // Made elsewhere: the change event shows the link here.
    let _ = std::fs::read_dir(dir.join("d")).unwrap().count();
    put(&h, "personal-files/d/remote.rclonelink", b"../far");
    eventually(Duration::from_secs(20), "the remote link appears", || {
        link_of(&dir.join("d/remote")) == Some(PathBuf::from("../far"))
    });
}

#[test]
fn without_links_a_link_is_refused_and_the_log_names_the_option() {
    let h = Harness::start();
    put(&h, "personal-files/ok.rclonelink", b"target");
    let m = h.mount("mnt", &[]);
    let dir = h.personal(&m);
    for name in ["a", "b"] {
        let err = std::os::unix::fs::symlink("x", dir.join(name)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }
    // Without --links, a .rclonelink file is the file it is.
    assert_eq!(
        std::fs::read_to_string(dir.join("ok.rclonelink")).unwrap(),
        "target"
    );
    let log = m.log_text();
    assert_eq!(log.matches("mount with --links").count(), 1, "{log}");
}
