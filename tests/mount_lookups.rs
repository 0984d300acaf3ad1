//! Lookups through a real mount: the kernel keeps "no such name" (a negative entry) for
//! `--attr-timeout` instead of asking the mount again for every `stat`, and forgets it when
//! the name appears, through this mount or elsewhere (an event).

mod mount_common;

use std::time::Duration;

use cec::api::{CellsApi, UploadOptions};
use mount_common::*;

/// Lookups of `name` that reached the mount and were answered "no such name" (its log at
/// debug level has one line per answer).
fn absent_answers(m: &Mounted, name: &str) -> usize {
    m.log_text()
        .lines()
        .filter(|l| l.contains("lookup") && l.contains(name))
        .count()
}

/// SEMANTICS: "The kernel itself keeps a "no such name" for `--attr-timeout`; events and this
/// mount's own creates make it forget it".
#[test]
fn the_kernel_keeps_absent_names_until_they_appear() {
    let h = Harness::start();
    h.block_on(h.api.create_folders(&["personal-files/neg".to_string()]))
        .unwrap();
    let mountpoint = h.dir.path().join("mnt");
    std::fs::create_dir_all(&mountpoint).unwrap();
    let m = h.mount_with_env(
        &mountpoint,
        &["--attr-timeout", "60s", "--dir-cache-time", "60s"],
        &[("CEC_LOG", "debug")],
    );
    let dir = h.personal(&m).join("neg");
    assert!(dir.is_dir());

    // 20 `stat`s of a missing name: the mount is asked once.
    for _ in 0..20 {
        assert!(!dir.join("absent-name").exists());
    }
    let asked = absent_answers(&m, "absent-name");
    assert_eq!(asked, 1, "lookups of a missing name that reached the mount");

    // Created elsewhere: the event makes the kernel forget its negative entry.
    let src = h.dir.path().join("upload");
    std::fs::write(&src, b"made elsewhere").unwrap();
    h.block_on(h.api.put_object_from_file(
        "personal-files/neg/absent-name",
        &src,
        14,
        &UploadOptions::default(),
    ))
    .unwrap();
    eventually(Duration::from_secs(5), "a remote creation seen", || {
        std::fs::read(dir.join("absent-name")).ok().as_deref() == Some(&b"made elsewhere"[..])
    });

    // Created through this mount: seen at once.
    assert!(!dir.join("own-name").exists());
    std::fs::write(dir.join("own-name"), b"mine").unwrap();
    assert_eq!(std::fs::read(dir.join("own-name")).unwrap(), b"mine");
    assert!(!dir.join("own-dir").exists());
    std::fs::create_dir(dir.join("own-dir")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    assert!(dir.join("own-dir").is_dir());
}
