//! Round trips the filesystem core avoids (issue 30), counted against the memory API, each
//! quoting docs/SEMANTICS.md: a dot-folder revalidated with one request.

mod fs_common;

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use cec::api::memory::MemoryCellsApi;
use cec::fs::{CellsFs, FsOptions, ROOT_INO};
use fs_common::*;

const WS: &str = "personal-files";

/// Every metadata request: stats, listings (REST, gateway, recursive gateway) and HEADs.
fn metadata_requests(api: &MemoryCellsApi) -> u64 {
    api.calls("stat")
        + api.calls("list_folder")
        + api.calls("list_folder_s3")
        + api.calls("list_tree_s3")
        + api.calls("head_object")
}

/// The files of a small repository's `.git`, in 7 folders.
const GIT_FILES: &[&str] = &[
    "HEAD",
    "config",
    "index",
    "info/exclude",
    "refs/heads/main",
    "objects/ab/c123",
    "objects/ab/c456",
    "objects/cd/e789",
];

/// SEMANTICS: "a dot-folder whose entries expired is revalidated with one request: the
/// gateway's recursive listing of the topmost dot-folder answers every folder below it"
/// (issue 30: a second `git status` re-listed each folder of `.git`, two requests each).
#[tokio::test]
async fn a_dot_folder_is_revalidated_with_one_request() {
    let api = Arc::new(MemoryCellsApi::default());
    for f in GIT_FILES {
        api.put_file(&format!("{WS}/repo/.git/{f}"), f.as_bytes());
    }
    let cache = tempfile::tempdir().unwrap();
    let mut options = FsOptions::new(cache.path());
    options.attr_timeout = Duration::from_millis(300);
    let fs = mount(&api, options).await;
    let git = resolve_from(&fs, ROOT_INO, &format!("{WS}/repo/.git"))
        .await
        .unwrap();
    for f in GIT_FILES {
        resolve_from(&fs, git, f).await.unwrap();
    }
    // Everything under .git expired: a second walk, as a second `git status` does.
    tokio::time::sleep(Duration::from_millis(400)).await;
    api.reset_calls();
    for f in GIT_FILES {
        resolve_from(&fs, git, f).await.unwrap();
    }
    for missing in ["packed-refs", "refs/heads/nope", "objects/info/alternates"] {
        assert_eq!(resolve_from(&fs, git, missing).await, Err(libc::ENOENT));
    }
    let sent = metadata_requests(&api);
    assert!(
        sent <= 1,
        "7 expired folders of .git: {sent} requests (list {}, s3 list {}, tree {}, stat {})",
        api.calls("list_folder"),
        api.calls("list_folder_s3"),
        api.calls("list_tree_s3"),
        api.calls("stat")
    );

    // Someone else's change shows once the tree expired.
    api.put_file(&format!("{WS}/repo/.git/refs/heads/other"), b"x");
    tokio::time::sleep(Duration::from_millis(400)).await;
    resolve_from(&fs, git, "refs/heads/other").await.unwrap();
    let heads = resolve_from(&fs, git, "refs/heads").await.unwrap();

    // This mount's own change is never hidden by a tree fetched before it.
    let (entry, open) = fs
        .create(heads, OsStr::new("feature"), 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    fs.write(entry.attr.ino, open.fh, 0, b"abc").await.unwrap();
    fs.flush(entry.attr.ino, open.fh).await.unwrap();
    fs.release(entry.attr.ino, open.fh).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let listed = list_names(&fs, heads).await;
    for name in ["main", "other", "feature"] {
        assert!(listed.contains(&name.to_string()), "{name} in {listed:?}");
    }
    resolve_from(&fs, git, "refs/heads/feature").await.unwrap();
}

/// Create `name` in folder `dir` (an inode) with `data`, closed: the upload is done.
async fn write_in(fs: &CellsFs, dir: u64, name: &str, data: &[u8]) {
    let (entry, open) = fs
        .create(dir, OsStr::new(name), 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    fs.write(entry.attr.ino, open.fh, 0, data).await.unwrap();
    fs.flush(entry.attr.ino, open.fh).await.unwrap();
    fs.release(entry.attr.ino, open.fh).await.unwrap();
}

/// SEMANTICS: "a write never waits for the workspace list: once it is older than
/// `--dir-cache-time` the list it has is used and a fresh one is fetched in the background"
/// (issue 30: every write after 5 s of quiet paid one more round trip first).
#[tokio::test]
async fn a_write_never_waits_for_the_workspace_list() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/dir/seed"), b"x");
    let cache = tempfile::tempdir().unwrap();
    let mut options = FsOptions::new(cache.path());
    options.dir_cache_time = Duration::from_millis(200);
    let fs = mount(&api, options).await;
    let dir = resolve_from(&fs, ROOT_INO, &format!("{WS}/dir"))
        .await
        .unwrap();
    write_in(&fs, dir, "first", b"1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The list is stale now, and the server takes its time to send it again.
    api.set_operation_delay("list_workspaces", Duration::from_secs(3600));
    api.reset_calls();
    let write =
        tokio::time::timeout(Duration::from_secs(20), write_in(&fs, dir, "second", b"2")).await;
    assert!(
        write.is_ok(),
        "the write waited for the workspace list ({} asked)",
        api.calls("list_workspaces")
    );
    assert_eq!(api.calls("put_object"), 1, "the write went through");
    tokio::time::sleep(Duration::from_millis(100)).await; // the refresh task starts
    assert_eq!(
        api.calls("list_workspaces"),
        1,
        "a refresh runs in the background"
    );
}

/// SEMANTICS: "while the change events are live, an event about the user's workspaces
/// flushes the list, so writes use it for a minute without asking" (issue 30: a second `git
/// status` sent a workspace listing for its `index.lock`).
#[tokio::test]
async fn while_events_are_live_writes_trust_the_workspace_list() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/dir/seed"), b"x");
    let cache = tempfile::tempdir().unwrap();
    let mut options = FsOptions::new(cache.path());
    options.dir_cache_time = Duration::from_millis(200);
    let fs = mount(&api, options).await;
    fs.set_events_live(true);
    let dir = resolve_from(&fs, ROOT_INO, &format!("{WS}/dir"))
        .await
        .unwrap();
    write_in(&fs, dir, "first", b"1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.reset_calls();
    write_in(&fs, dir, "second", b"2").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        api.calls("list_workspaces"),
        0,
        "no refresh while the events are live"
    );
    // An event about the user's workspaces: the next write asks for the list again.
    fs.workspaces_changed();
    write_in(&fs, dir, "third", b"3").await;
    assert_eq!(
        api.calls("list_workspaces"),
        1,
        "a fresh list after the event"
    );
}
