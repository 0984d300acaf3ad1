//! Kernel-free tests of what the filesystem core keeps on the local disk, each quoting
//! docs/SEMANTICS.md: the cache directory is private whatever the umask, the write-back
//! journal is checked before anything in it is acted on, the recovery folder holds a file
//! whatever its path's length, and paths the server cannot store are refused.

mod fs_common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use cec::api::ApiError;
use cec::api::memory::MemoryCellsApi;
use cec::fs::{CellsFs, FsOptions, SetAttr, TimeOrNow};
use fs_common::*;

const WS: &str = "personal-files";

fn options(cache: &Path) -> FsOptions {
    let mut options = FsOptions::new(cache);
    options.upload_retry_delay = Duration::from_millis(1);
    options.upload_attempts = 2;
    options
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8 ^ seed).collect()
}

/// Every folder and file under `root` (itself included), with its permission bits; links
/// are not followed.
fn walk(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let meta = std::fs::symlink_metadata(root).unwrap();
    let mut out = vec![(
        root.to_path_buf(),
        meta.is_dir(),
        meta.permissions().mode() & 0o7777,
    )];
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            out.extend(walk(&entry.unwrap().path()));
        }
    }
    out
}

/// Assert every folder under `root` is 0700 and every file 0600; returns the files' paths
/// relative to `root`.
fn assert_private(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut wrong = Vec::new();
    for (path, is_dir, mode) in walk(root) {
        let want = if is_dir { 0o700 } else { 0o600 };
        if mode != want {
            wrong.push(format!("{} is {mode:o}, not {want:o}", path.display()));
        }
        if !is_dir {
            files.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
    assert!(wrong.is_empty(), "not private: {wrong:#?}");
    files
}

fn set_umask(mask: libc::mode_t) {
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(mask) };
}

/// SEMANTICS: "Everything the mount creates there [the cache directory] is private to the
/// user who mounts: folders 0700, files 0600, whatever the umask".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_in_the_cache_dir_is_private_whatever_the_umask() {
    set_umask(0);
    let api = Arc::new(MemoryCellsApi::default());
    let top = tempfile::tempdir().unwrap();
    let cache = top.path().join("cache");
    let served = pattern(300_000, 1);
    api.put_file(&format!("{WS}/served.bin"), &served);

    // Default mode: a file being written (staging file), a file read (data cache), times set
    // (times.json), an upload that failed for good (recovery copy).
    let fs = mount(&api, options(&cache)).await;
    let ino = resolve(&fs, &format!("{WS}/served.bin")).await.unwrap();
    let open = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let got = fs.read(ino, open.fh, 0, 128 * 1024).await.unwrap();
    assert_eq!(&got[..], &served[..128 * 1024]);
    fs.release(ino, open.fh).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs.status().cache_bytes == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fs.status().cache_bytes > 0, "a block was cached");
    let dated = write_new(&fs, WS, "dated", b"v1").await.unwrap();
    fs.setattr(
        dated,
        SetAttr {
            mtime: Some(TimeOrNow::At(UNIX_EPOCH + Duration::from_secs(978_307_200))),
            ..SetAttr::default()
        },
    )
    .await
    .unwrap();
    api.fail_next(
        100,
        Some("put_object_from_file"),
        ApiError::Network("connection reset".into()),
    );
    let doomed = write_new(&fs, WS, "doomed", &pattern(50_000, 2)).await;
    api.clear_faults();
    assert_eq!(doomed, Err(libc::EIO));
    let parent = resolve(&fs, WS).await.unwrap();
    let (entry, writing) = fs
        .create(parent, OsStr::new("open.bin"), 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    fs.write(entry.attr.ino, writing.fh, 0, &pattern(200_000, 3))
        .await
        .unwrap();
    let files = assert_private(&cache);
    for expected in ["times.json", "recovery/", "staging/", "data/"] {
        assert!(
            files.iter().any(|f| f.starts_with(expected)),
            "{expected} in {files:?}"
        );
    }
    fs.release(entry.attr.ino, writing.fh).await.unwrap();
    fs.sync_all().await.unwrap();
    drop(fs);

    // Write-back: a small file (its record carries its bytes), a larger one (its staging file
    // synced and named by its record), and a record set aside.
    std::fs::OpenOptions::new()
        .append(true)
        .open(cache.join("journal/log"))
        .and_then(|mut log| {
            use std::io::Write;
            log.write_all(
                b"{\"put\":{\"id\":\"planted\",\"record\":{\"path\":\"personal-files/x\",\"staging\":\"../x\"}}}\n",
            )
        })
        .unwrap();
    let mut opts = options(&cache);
    opts.write_back = Some(Duration::from_secs(3600));
    let fs = mount(&api, opts).await;
    write_new(&fs, WS, "small", b"small").await.unwrap();
    write_new(&fs, WS, "large", &pattern(300_000, 4))
        .await
        .unwrap();
    assert_eq!(fs.status().pending_uploads.len(), 2);
    let files = assert_private(&cache);
    for expected in ["journal/log", "journal/rejected", "staging/"] {
        assert!(
            files.iter().any(|f| f.starts_with(expected)),
            "{expected} in {files:?}"
        );
    }
    fs.sync_all().await.unwrap();
    assert_eq!(
        api.read_file(&format!("{WS}/large")),
        Some(pattern(300_000, 4))
    );
}

/// SEMANTICS: "what an earlier version left wider is tightened when the mount opens the
/// cache".
#[tokio::test]
async fn modes_left_wider_by_an_earlier_version_are_tightened() {
    set_umask(0o022);
    let api = Arc::new(MemoryCellsApi::default());
    let top = tempfile::tempdir().unwrap();
    let cache = top.path().join("cache");
    for dir in ["", "staging", "journal", "recovery", "data"] {
        std::fs::create_dir_all(cache.join(dir)).unwrap();
        std::fs::set_permissions(cache.join(dir), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for file in ["times.json", "recovery/1700000000-personal-files_old"] {
        std::fs::write(cache.join(file), b"{}").unwrap();
        std::fs::set_permissions(cache.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let _fs = mount(&api, options(&cache)).await;
    let files = assert_private(&cache);
    assert!(files.contains(&"recovery/1700000000-personal-files_old".to_string()));
}

/// A journal line of an upload record.
fn put_line(id: &str, path: &str, staging: &str, data: Option<&[u8]>) -> String {
    use base64::Engine;
    let mut record =
        serde_json::json!({"put": {"id": id, "record": {"path": path, "staging": staging}}});
    if let Some(data) = data {
        record["put"]["data"] = base64::engine::general_purpose::STANDARD
            .encode(data)
            .into();
    }
    format!("{record}\n")
}

/// SEMANTICS: "The journal is checked before anything in it is acted on: a record whose
/// staging file is not a plain name in the cache directory, or whose destination is not a
/// path the server can store, is set aside ... reported in the status, never replayed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_journal_records_are_set_aside_never_acted_on() {
    let api = Arc::new(MemoryCellsApi::default());
    let top = tempfile::tempdir().unwrap();
    let cache = top.path().join("cache");
    let secret = top.path().join("secret");
    std::fs::write(&secret, b"the daemon can read this").unwrap();
    std::fs::create_dir_all(cache.join("journal")).unwrap();
    std::fs::create_dir_all(cache.join("staging")).unwrap();
    let good = "0b6c3e2a-2f1d-4c1e-9d55-8f0f2a1b3c4d";
    std::fs::write(cache.join("staging").join(good), b"good bytes").unwrap();
    let valid_staging = "5d0d7c2e-1111-4a1e-9d55-8f0f2a1b3c4d";
    std::fs::write(cache.join("staging").join(valid_staging), b"kept aside").unwrap();
    // A link planted in the staging folder is not followed either.
    let linked = "7e1e8d3f-2222-4b2f-8e66-9a1a3b2c4d5e";
    std::os::unix::fs::symlink(&secret, cache.join("staging").join(linked)).unwrap();
    let planted = top.path().join("planted");
    let journal = [
        put_line(
            "abs",
            &format!("{WS}/stolen"),
            secret.to_str().unwrap(),
            None,
        ),
        put_line(
            "up",
            &format!("{WS}/written"),
            "../../planted",
            Some(b"written as the user"),
        ),
        put_line("dots", &format!("{WS}/../../escape"), valid_staging, None),
        put_line("link", &format!("{WS}/linked"), linked, None),
        // The mount names a record after its staging file.
        put_line(good, &format!("{WS}/good"), good, None),
        "{\"move\":{\"id\":\"m\",\"record\":{\"from\":\"personal-files/good\",\"to\":\"personal-files/../x\"}}}\n"
            .to_string(),
    ]
    .concat();
    std::fs::write(cache.join("journal/log"), journal).unwrap();
    let fs = mount(&api, options(&cache)).await;
    let synced = fs.sync_all().await;
    fs.settle().await;

    assert!(!planted.exists(), "a record wrote outside the cache");
    assert_eq!(
        api.read_file(&format!("{WS}/good")),
        Some(b"good bytes".to_vec()),
        "a valid record is still replayed"
    );
    let paths = api.paths();
    for path in &paths {
        if let Some(content) = api.read_file(path) {
            assert_ne!(content, b"the daemon can read this", "{path} uploaded");
            assert_ne!(content, b"written as the user", "{path} uploaded");
            assert_ne!(content, b"kept aside", "{path} uploaded");
        }
    }
    assert_eq!(
        uploads(&api),
        1,
        "only the valid record was uploaded: {paths:?}"
    );
    assert_eq!(
        api.calls("copy_object") + api.calls("move_nodes") + api.calls("copy_nodes"),
        0
    );
    let status = fs.status();
    let reported = |what: &str| {
        status
            .recent_errors
            .iter()
            .any(|e| e.message.contains("set aside") && e.message.contains(what))
    };
    for what in [
        "upload record abs",
        "upload record up",
        "upload record dots",
        "rename record m",
    ] {
        assert!(reported(what), "{what} not in {:#?}", status.recent_errors);
    }
    // The link is not followed: that record fails like a missing staging file, reported.
    assert!(
        status
            .recent_errors
            .iter()
            .any(|e| e.message.contains("linked")),
        "{:#?}",
        status.recent_errors
    );
    // What was set aside is kept: the lines, and the data of a record whose staging file is
    // the mount's own.
    let rejected = std::fs::read_to_string(cache.join("journal/rejected")).unwrap();
    for id in ["\"abs\"", "\"up\"", "\"dots\"", "\"m\""] {
        assert!(rejected.contains(id), "{id} in {rejected}");
    }
    let kept: Vec<Vec<u8>> = status
        .recovered_files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert_eq!(kept, vec![b"kept aside".to_vec()]);
    synced.unwrap();
    drop(fs);
    // Nothing set aside comes back at the next mount.
    let fs = mount(&api, options(&cache)).await;
    fs.sync_all().await.unwrap();
    assert!(
        !fs.status()
            .recent_errors
            .iter()
            .any(|e| e.message.contains("set aside")),
        "{:#?}",
        fs.status().recent_errors
    );
    assert_eq!(uploads(&api), 1);
}

/// Folders `parts` long names deep in the workspace, made through the mount; returns the
/// deepest folder's mount path.
async fn deep_folders(fs: &CellsFs, parts: usize, len: usize) -> String {
    let mut path = WS.to_string();
    for i in 0..parts {
        let name = format!("{i}{}", "d".repeat(len - 1));
        let parent = resolve(fs, &path).await.unwrap();
        fs.mkdir(parent, OsStr::new(&name), 0o755).await.unwrap();
        path = format!("{path}/{name}");
    }
    path
}

/// SEMANTICS: "Each copy has its own flat name ... (under 255 bytes whatever the path's
/// length), and the server path it was meant for is in the file of the same name plus
/// `.path` beside it".
#[tokio::test]
async fn the_recovery_folder_holds_a_file_whatever_its_path_length() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let folder = deep_folders(&fs, 4, 200).await;
    for (operation, first, content) in [
        ("put_object", 'f', b"small precious bytes".to_vec()),
        ("put_object_from_file", 'g', pattern(100_000, 5)),
    ] {
        let name = format!("{first}{}.txt", "f".repeat(184));
        let path = format!("{folder}/{name}");
        assert!(path.len() > 1000 && path.len() <= 1024, "{}", path.len());
        api.fail_next(100, Some(operation), ApiError::Network("reset".into()));
        let result = write_new(&fs, &folder, &name, &content).await;
        api.clear_faults();
        assert_eq!(result, Err(libc::EIO), "{operation}");
        let status = fs.status();
        let kept = status
            .recovered_files
            .iter()
            .find(|f| std::fs::read(f).is_ok_and(|c| c == content))
            .unwrap_or_else(|| panic!("{operation}: not kept: {status:#?}"));
        let file_name = kept.file_name().unwrap().len();
        assert!(file_name < 255, "{file_name} bytes");
        let mut beside = kept.clone().into_os_string();
        beside.push(".path");
        assert_eq!(
            std::fs::read_to_string(&beside).unwrap(),
            format!("{path}\n"),
            "{operation}"
        );
        assert!(
            status
                .recent_errors
                .iter()
                .any(|e| e.message.contains(&path) && e.message.contains(&*kept.to_string_lossy())),
            "{operation}: {:#?}",
            status.recent_errors
        );
    }
    assert_eq!(fs.status().recovered_files.len(), 2);
    let names = std::fs::read_dir(cache.path().join("recovery"))
        .unwrap()
        .count();
    assert_eq!(names, 4, "two copies, each with its path beside it");
}

/// SEMANTICS: "`ENAMETOOLONG` (... a new name, by `create`, `mknod`, `mkdir` or `rename`,
/// whose path in the mount, workspace slug included, is over 1,024 bytes".
#[tokio::test]
async fn paths_the_server_cannot_store_are_refused() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let folder = deep_folders(&fs, 4, 200).await;
    let parent = resolve(&fs, &folder).await.unwrap();
    // The longest path stored: exactly 1,024 bytes.
    let fits = "a".repeat(1024 - folder.len() - 1);
    let over = "b".repeat(fits.len() + 1);
    write_new(&fs, &folder, &fits, b"fits").await.unwrap();
    assert_eq!(
        api.read_file(&format!("{folder}/{fits}")),
        Some(b"fits".to_vec())
    );
    let name = OsStr::new(&over);
    assert_eq!(
        fs.create(parent, name, 0o644, libc::O_WRONLY)
            .await
            .map(|_| ())
            .map_err(|e| e.errno()),
        Err(libc::ENAMETOOLONG)
    );
    assert_eq!(
        fs.mknod(parent, name, libc::S_IFREG | 0o644)
            .await
            .map(|_| ())
            .map_err(|e| e.errno()),
        Err(libc::ENAMETOOLONG)
    );
    assert_eq!(
        fs.mkdir(parent, name, 0o755)
            .await
            .map(|_| ())
            .map_err(|e| e.errno()),
        Err(libc::ENAMETOOLONG)
    );
    assert_eq!(
        fs.rename(parent, OsStr::new(&fits), parent, name, 0)
            .await
            .map_err(|e| e.errno()),
        Err(libc::ENAMETOOLONG)
    );
    // Nothing was made, nothing was lost.
    assert_eq!(
        fs.lookup(parent, name)
            .await
            .map(|_| ())
            .map_err(|e| e.errno()),
        Err(libc::ENOENT)
    );
    assert!(api.paths().iter().all(|p| !p.ends_with(&over)));
    assert_eq!(
        api.read_file(&format!("{folder}/{fits}")),
        Some(b"fits".to_vec())
    );
    assert!(fs.status().recent_errors.is_empty(), "{:#?}", fs.status());
}
