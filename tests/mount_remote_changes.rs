//! Another client changes the server (through the API): the mount shows creations, content
//! changes, renames and deletions within 2 s with events on, and within the TTLs with
//! `--no-events`.

mod mount_common;

use std::path::Path;
use std::time::Duration;

use cec::api::{CellsApi, UploadOptions};
use mount_common::*;

fn upload(h: &Harness, path: &str, content: &[u8]) {
    let src = h.dir.path().join(format!("upload-{}", content.len()));
    std::fs::write(&src, content).unwrap();
    h.block_on(h.api.put_object_from_file(
        path,
        &src,
        content.len() as u64,
        &UploadOptions::default(),
    ))
    .unwrap();
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// The four kinds of remote change, each expected within `within`.
fn remote_changes_show_within(h: &Harness, dir: &Path, within: Duration) {
    // Prime the caches: list the folder and read a file, so staleness would show.
    upload(h, "personal-files/remote/existing.txt", b"old content");
    eventually(within, "existing.txt visible", || {
        read(&dir.join("existing.txt")).as_deref() == Some("old content")
    });
    let _ = std::fs::read_dir(dir).unwrap().count();

    upload(h, "personal-files/remote/created.txt", b"made elsewhere");
    let took = eventually(within, "a remote creation", || {
        std::fs::read_dir(dir)
            .unwrap()
            .any(|e| e.unwrap().file_name() == "created.txt")
    });
    eprintln!("creation seen after {took:?}");
    assert_eq!(
        read(&dir.join("created.txt")).as_deref(),
        Some("made elsewhere")
    );

    upload(
        h,
        "personal-files/remote/existing.txt",
        b"new content, longer",
    );
    let took = eventually(within, "a remote content change", || {
        read(&dir.join("existing.txt")).as_deref() == Some("new content, longer")
    });
    eprintln!("content change seen after {took:?}");

    h.block_on(h.api.move_nodes(
        &["personal-files/remote/created.txt".to_string()],
        "personal-files/remote/renamed.txt",
        false,
    ))
    .unwrap();
    // Listed as well as looked up: a folder the kernel keeps the entries of (while events
    // are live) must not keep showing the old name.
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let took = eventually(within, "a remote rename", || {
        let listed = names(dir);
        !dir.join("created.txt").exists()
            && dir.join("renamed.txt").exists()
            && listed.iter().any(|n| n == "renamed.txt")
            && !listed.iter().any(|n| n == "created.txt")
    });
    eprintln!("rename seen after {took:?}");

    h.block_on(
        h.api
            .delete_nodes(&["personal-files/remote/renamed.txt".to_string()], true),
    )
    .unwrap();
    let took = eventually(within, "a remote deletion", || {
        !dir.join("renamed.txt").exists()
            && !std::fs::read_dir(dir)
                .unwrap()
                .any(|e| e.unwrap().file_name() == "renamed.txt")
    });
    eprintln!("deletion seen after {took:?}");
}

#[test]
fn with_events_remote_changes_show_within_2_seconds() {
    let h = Harness::start();
    h.block_on(h.api.create_folders(&["personal-files/remote".to_string()]))
        .unwrap();
    // Long TTLs: only the events can make changes visible this fast.
    let m = h.mount("mnt", &["--attr-timeout", "60s", "--dir-cache-time", "60s"]);
    let dir = h.personal(&m).join("remote");
    assert!(dir.is_dir());
    remote_changes_show_within(&h, &dir, Duration::from_secs(2));
}

#[test]
fn without_events_remote_changes_show_within_the_ttl() {
    let h = Harness::start();
    h.block_on(h.api.create_folders(&["personal-files/remote".to_string()]))
        .unwrap();
    let m = h.mount(
        "mnt",
        &[
            "--no-events",
            "--attr-timeout",
            "1s",
            "--dir-cache-time",
            "2s",
        ],
    );
    let dir = h.personal(&m).join("remote");
    assert!(dir.is_dir());
    // TTL (2 s) plus a margin for the request itself.
    remote_changes_show_within(&h, &dir, Duration::from_secs(4));
}

#[test]
fn events_resume_after_the_websocket_is_dropped() {
    let h = Harness::start();
    h.block_on(h.api.create_folders(&["personal-files/remote".to_string()]))
        .unwrap();
    let m = h.mount("mnt", &["--attr-timeout", "60s", "--dir-cache-time", "60s"]);
    let dir = h.personal(&m).join("remote");
    let _ = std::fs::read_dir(&dir).unwrap().count();
    // Cut every websocket without a close frame; the client reconnects (backoff from 1 s)
    // and, as events were possibly lost, revalidates everything.
    let dropped = h.state().drop_websockets();
    assert!(dropped >= 1, "the mount had no websocket open");
    upload(&h, "personal-files/remote/while-away.txt", b"missed event");
    eventually(
        Duration::from_secs(8),
        "a change made while disconnected",
        || dir.join("while-away.txt").exists(),
    );
}
