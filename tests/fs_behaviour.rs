//! Kernel-free tests of the filesystem core's mechanisms, each quoting the contract in
//! docs/SEMANTICS.md: read-ahead, listing cost, the data cache cap, write-back journal replay
//! after a crash, the mtime overlay, upload retries and the recovery folder, dotfiles,
//! read-only places, unlink of an open file, and concurrency.

mod fs_common;

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cec::api::memory::{MemoryCellsApi, MemoryWorkspace};
use cec::api::{ApiError, ByteRange, CellsApi};
use cec::fs::{CellsFs, FsOptions, ROOT_INO, RemoteChange, SetAttr, TimeOrNow};
use fs_common::*;

const WS: &str = "personal-files";

fn options(cache: &std::path::Path) -> FsOptions {
    let mut options = FsOptions::new(cache);
    options.upload_retry_delay = Duration::from_millis(1);
    options
}

async fn read_all(fs: &CellsFs, path: &str, chunk: u32) -> Vec<u8> {
    let ino = resolve(fs, path).await.unwrap();
    let open = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        let data = fs
            .read(ino, open.fh, out.len() as u64, chunk)
            .await
            .unwrap();
        if data.is_empty() {
            break;
        }
        out.extend_from_slice(&data);
    }
    fs.release(ino, open.fh).await.unwrap();
    out
}

/// A kernel notifier that records what it is asked (`"inode N"`, `"PARENT/name"`), each
/// after `delay` (the kernel may block a notification while a request is pending).
struct RecordingNotifier(std::sync::Mutex<Vec<String>>, Duration);

impl RecordingNotifier {
    fn new(delay: Duration) -> Arc<RecordingNotifier> {
        Arc::new(RecordingNotifier(std::sync::Mutex::new(Vec::new()), delay))
    }
}

impl cec::fs::KernelNotifier for RecordingNotifier {
    fn invalidate_entry(&self, parent: u64, name: &OsStr) {
        std::thread::sleep(self.1);
        self.0
            .lock()
            .unwrap()
            .push(format!("{parent}/{}", name.to_string_lossy()));
    }
    fn invalidate_inode(&self, ino: u64) {
        std::thread::sleep(self.1);
        self.0.lock().unwrap().push(format!("inode {ino}"));
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// SEMANTICS: "a sequential reader is followed by a background stream ...; a seek elsewhere
/// stops it, and a random read fetches only the 128 KiB blocks it needs".
#[tokio::test]
async fn read_ahead_doubles_while_sequential_and_resets_on_seek() {
    let api = Arc::new(MemoryCellsApi::default());
    let content = pattern(8 * 1024 * 1024);
    api.put_file(&format!("{WS}/big.bin"), &content);
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.cache_size = 0;
    let fs = mount(&api, opts).await;
    let got = read_all(&fs, &format!("{WS}/big.bin"), 128 * 1024).await;
    assert_eq!(got, content);
    // Two streamed GETs (the small opening one and the next, 8 MiB long) serve all 64
    // sequential reads.
    let sequential_gets = api.calls("get_object");
    assert_eq!(sequential_gets, 2, "GETs for 64 sequential reads");
    // Random reads: each one fetches only the initial window.
    let ino = resolve(&fs, &format!("{WS}/big.bin")).await.unwrap();
    let open = fs.open(ino, libc::O_RDONLY).await.unwrap();
    api.reset_calls();
    for offset in [5_000_000u64, 1_000_000, 7_000_000, 3_000_000] {
        let data = fs.read(ino, open.fh, offset, 4096).await.unwrap();
        assert_eq!(&data[..], &content[offset as usize..offset as usize + 4096]);
    }
    assert_eq!(api.calls("get_object"), 4);
    fs.release(ino, open.fh).await.unwrap();
    assert_eq!(
        fs.status().read_ahead_bytes,
        0,
        "budget returned at release"
    );
}

/// SEMANTICS: "`ls -l` of a folder costs one listing, no per-file stat".
#[tokio::test]
async fn listing_a_folder_fills_attributes_without_per_file_stats() {
    let api = Arc::new(MemoryCellsApi::default());
    for i in 0..300 {
        api.put_file(&format!("{WS}/many/f{i:03}"), &pattern(i));
    }
    api.put_file(&format!("{WS}/many/.hidden"), b"dot");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let dir = resolve(&fs, &format!("{WS}/many")).await.unwrap();
    api.reset_calls();
    let fh = fs.opendir(dir, 0).await.unwrap();
    let mut entries = Vec::new();
    fs.readdir(dir, fh, 0, false, |e| {
        entries.push((e.name.clone(), e.ino, e.entry.attr.size));
        false
    })
    .await
    .unwrap();
    fs.releasedir(dir, fh).await.unwrap();
    assert_eq!(entries.len(), 2 + 301);
    for (name, _, _) in &entries {
        if name == "." || name == ".." {
            continue;
        }
        let entry = fs.lookup(dir, name).await.unwrap();
        let attr = fs.getattr(entry.attr.ino, None).await.unwrap().attr;
        if let Some(i) = name.to_str().unwrap().strip_prefix('f') {
            assert_eq!(attr.size, i.parse::<u64>().unwrap());
        }
    }
    assert_eq!(api.calls("list_folder"), 1);
    assert_eq!(
        api.calls("list_folder_s3"),
        1,
        "dotfiles come from the gateway listing"
    );
    assert_eq!(api.calls("stat"), 0);
    assert!(entries.iter().any(|(n, _, s)| n == ".hidden" && *s == 3));
}

/// SEMANTICS: "the data cache never exceeds --cache-size, and survives a remount".
#[tokio::test]
async fn data_cache_respects_its_cap_and_survives_remount() {
    let api = Arc::new(MemoryCellsApi::default());
    // Eight files of 200 KiB (each small enough to be cached: a quarter of the cap at
    // most) overflow the 1 MiB cap: the first ones are evicted.
    let small = pattern(200 * 1024);
    for i in 0..8 {
        api.put_file(&format!("{WS}/f{i}"), &pattern(200 * 1024 + i));
    }
    api.put_file(&format!("{WS}/small"), &small);
    let cache = tempfile::tempdir().unwrap();
    let cap = 1024 * 1024;
    let mut opts = options(cache.path());
    opts.cache_size = cap;
    let fs = mount(&api, opts.clone()).await;
    for i in 0..8 {
        assert_eq!(
            read_all(&fs, &format!("{WS}/f{i}"), 64 * 1024).await,
            pattern(200 * 1024 + i)
        );
        fs.sync_all().await.unwrap();
        assert!(fs.status().cache_bytes <= cap, "{:?}", fs.status());
    }
    assert_eq!(
        read_all(&fs, &format!("{WS}/small"), 64 * 1024).await,
        small
    );
    fs.sync_all().await.unwrap();
    let status = fs.status();
    assert!(status.cache_bytes <= cap, "{status:?}");
    assert!(status.cache_bytes >= small.len() as u64);
    let on_disk: u64 = std::fs::read_dir(cache.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk <= cap, "{on_disk} bytes on disk");
    drop(fs);
    let fs = mount(&api, opts).await;
    api.reset_calls();
    assert_eq!(
        read_all(&fs, &format!("{WS}/small"), 64 * 1024).await,
        small
    );
    assert_eq!(
        api.calls("get_object"),
        0,
        "served from the cache after remount"
    );
    // A changed file (new Etag) is never served from the old blocks.
    let changed = pattern(200 * 1024)
        .iter()
        .map(|b| b ^ 0xff)
        .collect::<Vec<_>>();
    api.put_file(&format!("{WS}/small"), &changed);
    fs.invalidate(RemoteChange::ContentChanged {
        path: format!("{WS}/small"),
        etag: None,
    });
    assert_eq!(
        read_all(&fs, &format!("{WS}/small"), 64 * 1024).await,
        changed
    );
}

/// SEMANTICS: "a stream opens with a small GET (the first read-ahead window), so the first
/// bytes of a large file come back as soon as the server answers; the GETs after it are long".
#[tokio::test]
async fn a_stream_opens_with_a_small_get_then_long_ones() {
    let api = Arc::new(MemoryCellsApi::default());
    let size = 3 * 1024 * 1024 + 1000;
    let content = pattern(size);
    api.put_file(&format!("{WS}/big.bin"), &content);
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.cache_size = 0;
    let window = opts.read_ahead_initial;
    let fs = mount(&api, opts).await;
    let ino = resolve(&fs, &format!("{WS}/big.bin")).await.unwrap();
    let range = |offset: u64, len: u64| {
        Some(ByteRange {
            offset,
            len: Some(len),
        })
    };
    // The opening GET, then one long GET for the rest.
    let open = fs.open(ino, libc::O_RDONLY).await.unwrap();
    api.reset_calls();
    let mut offset = 0u64;
    while offset < size as u64 {
        let data = fs.read(ino, open.fh, offset, 128 * 1024).await.unwrap();
        assert!(!data.is_empty());
        assert_eq!(
            &data[..],
            &content[offset as usize..offset as usize + data.len()]
        );
        offset += data.len() as u64;
    }
    fs.release(ino, open.fh).await.unwrap();
    assert_eq!(
        api.get_ranges(),
        [range(0, window), range(window, size as u64 - window)]
    );
}

/// SEMANTICS: "a file larger than a quarter of --cache-size, read from start to end, is not
/// stored in the data cache".
#[tokio::test]
async fn a_large_file_streamed_once_leaves_the_data_cache_alone() {
    let api = Arc::new(MemoryCellsApi::default());
    let big = pattern(3 * 1024 * 1024);
    let small = pattern(200 * 1024);
    api.put_file(&format!("{WS}/big"), &big);
    api.put_file(&format!("{WS}/small"), &small);
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.cache_size = 1024 * 1024;
    let fs = mount(&api, opts.clone()).await;
    assert_eq!(
        read_all(&fs, &format!("{WS}/small"), 64 * 1024).await,
        small
    );
    fs.sync_all().await.unwrap();
    let after_small = fs.status().cache_bytes;
    assert!(after_small >= small.len() as u64, "{:?}", fs.status());
    assert_eq!(read_all(&fs, &format!("{WS}/big"), 128 * 1024).await, big);
    fs.sync_all().await.unwrap();
    assert_eq!(
        fs.status().cache_bytes,
        after_small,
        "the stream of the big file stored nothing and evicted nothing"
    );
    // A random read of the big file is still cached: the blocks it fetched.
    let ino = resolve(&fs, &format!("{WS}/big")).await.unwrap();
    let open = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let at = 2 * 1024 * 1024 + 4096;
    let piece = fs.read(ino, open.fh, at, 4096).await.unwrap();
    assert_eq!(&piece[..], &big[at as usize..at as usize + 4096]);
    fs.release(ino, open.fh).await.unwrap();
    fs.sync_all().await.unwrap();
    assert!(fs.status().cache_bytes > after_small, "{:?}", fs.status());
    drop(fs);
    let fs = mount(&api, opts).await;
    api.reset_calls();
    assert_eq!(
        read_all(&fs, &format!("{WS}/small"), 64 * 1024).await,
        small
    );
    let ino = resolve(&fs, &format!("{WS}/big")).await.unwrap();
    let open = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let piece = fs.read(ino, open.fh, at, 4096).await.unwrap();
    assert_eq!(&piece[..], &big[at as usize..at as usize + 4096]);
    fs.release(ino, open.fh).await.unwrap();
    assert_eq!(
        api.calls("get_object"),
        0,
        "the small file and the random block came from the cache"
    );
}

/// SEMANTICS: "with --write-back, close returns at once; a crash loses nothing: the next
/// mount replays the journal".
#[tokio::test]
async fn write_back_journal_is_replayed_after_a_crash() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.write_back = Some(Duration::from_secs(3600));
    let fs = mount(&api, opts.clone()).await;
    let data = pattern(300_000);
    write_new(&fs, WS, "pending.bin", &data).await.unwrap();
    write_new(&fs, WS, ".dotpending", b"dot").await.unwrap();
    // A new empty file closed (`close` has returned) but not yet released when the crash
    // comes: the kernel sends `release` after `close` returns.
    let parent = resolve(&fs, WS).await.unwrap();
    let (entry, open) = fs
        .create(parent, OsStr::new("empty"), 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    fs.flush(entry.attr.ino, open.fh).await.unwrap();
    assert_eq!(
        api.read_file(&format!("{WS}/pending.bin")),
        None,
        "not uploaded yet"
    );
    assert_eq!(fs.status().pending_uploads.len(), 3);
    // The pending file is visible in the mount meanwhile.
    assert_eq!(
        read_all(&fs, &format!("{WS}/pending.bin"), 65536).await,
        data
    );
    // Crash: no flush, no unmount.
    drop(fs);
    assert_eq!(api.read_file(&format!("{WS}/pending.bin")), None);
    opts.write_back = None;
    let fs = mount(&api, opts).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.read_file(&format!("{WS}/pending.bin")).is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fs.sync_all().await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/pending.bin")), Some(data));
    assert_eq!(
        api.read_file(&format!("{WS}/.dotpending")),
        Some(b"dot".to_vec())
    );
    assert_eq!(api.read_file(&format!("{WS}/empty")), Some(Vec::new()));
    assert!(fs.status().pending_uploads.is_empty());
    // Nothing is left in the journal: the next mount has nothing to replay.
    drop(fs);
    let mut opts = options(cache.path());
    opts.write_back = Some(Duration::from_secs(3600));
    let fs = mount(&api, opts).await;
    assert!(fs.status().pending_uploads.is_empty());
    let calls = uploads(&api);
    fs.sync_all().await.unwrap();
    assert_eq!(uploads(&api), calls);
}

fn staging_files(cache: &std::path::Path) -> usize {
    std::fs::read_dir(cache.join("staging")).unwrap().count()
}

/// Content past what is held in memory (16 KiB): with a distinct first byte, a staging file.
fn sized(first: u8) -> Vec<u8> {
    let mut data = pattern(20_000);
    data[0] = first;
    data
}

/// A staging file released after its upload serves the next file written (no inode created
/// and freed per file); in write-back, only once its journal record is durably forgotten.
#[tokio::test]
async fn staging_files_are_reused_once_no_journal_record_can_name_them() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    for i in 0..20 {
        write_new(&fs, WS, &format!("f{i}"), &sized(i))
            .await
            .unwrap();
    }
    assert_eq!(staging_files(cache.path()), 1, "one file served all twenty");
    assert_eq!(api.read_file(&format!("{WS}/f19")), Some(sized(19)));
    drop(fs);

    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.write_back = Some(Duration::from_millis(20));
    let fs = mount(&api, opts).await;
    write_new(&fs, WS, "a", &sized(b'a')).await.unwrap();
    // Until uploaded and its staging file released.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs.status().pending_uploads.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(api.read_file(&format!("{WS}/a")), Some(sized(b'a')));
    // a's `done` line is not synced yet: a crash now would replay a's record, so b must not
    // take a's staging file.
    write_new(&fs, WS, "b", &sized(b'b')).await.unwrap();
    assert_eq!(staging_files(cache.path()), 2, "b got a new staging file");
    // b's record was synced, and a's `done` line with it: c may take a's file.
    write_new(&fs, WS, "c", &sized(b'c')).await.unwrap();
    assert_eq!(staging_files(cache.path()), 2, "c reused a's staging file");
    fs.sync_all().await.unwrap();
    for name in ["a", "b", "c"] {
        let first = name.as_bytes()[0];
        assert_eq!(api.read_file(&format!("{WS}/{name}")), Some(sized(first)));
    }
}

/// A small file written from empty is held in memory, never in a staging file (no inode
/// allocated and freed per file), in both modes; in write-back its journal record carries it
/// through a crash and the journal's compactions, and a file that grows past 16 KiB moves to
/// a staging file with every byte.
#[tokio::test]
async fn small_files_are_written_without_a_staging_file() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    for i in 0..5 {
        write_new(&fs, WS, &format!("s{i}"), format!("small {i}").as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(staging_files(cache.path()), 0);
    assert_eq!(
        api.read_file(&format!("{WS}/s4")),
        Some(b"small 4".to_vec())
    );
    assert_eq!(api.calls("put_object"), 5, "sent from memory");
    // One that outgrows memory while open: read back through the handle, then uploaded whole.
    let parent = resolve(&fs, WS).await.unwrap();
    let (entry, open) = fs
        .create(parent, OsStr::new("grows"), 0o644, libc::O_RDWR)
        .await
        .unwrap();
    let ino = entry.attr.ino;
    let data = pattern(40_000);
    fs.write(ino, open.fh, 0, &data[..10_000]).await.unwrap();
    assert_eq!(staging_files(cache.path()), 0, "10,000 bytes: in memory");
    fs.write(ino, open.fh, 10_000, &data[10_000..])
        .await
        .unwrap();
    assert_eq!(
        staging_files(cache.path()),
        1,
        "past 16 KiB: a staging file"
    );
    assert_eq!(
        fs.read(ino, open.fh, 9_990, 20).await.unwrap().to_vec(),
        &data[9_990..10_010]
    );
    close(&fs, ino, open.fh).await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/grows")), Some(data));
    drop(fs);

    // Write-back: closed, journaled, then the crash after more than a compaction's worth of
    // other records came and went.
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.write_back = Some(Duration::from_secs(3600));
    let fs = mount(&api, opts.clone()).await;
    write_new(&fs, WS, "pending", b"only in the journal")
        .await
        .unwrap();
    for i in 0..1100 {
        let name = format!("churn{i}");
        write_new(&fs, WS, &name, b"x").await.unwrap();
        let ino = resolve(&fs, &format!("{WS}/{name}")).await.unwrap();
        let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
        fs.fsync(ino, fh, false).await.unwrap();
        fs.release(ino, fh).await.unwrap();
    }
    assert_eq!(staging_files(cache.path()), 0);
    let log = std::fs::read_to_string(cache.path().join("journal/log")).unwrap();
    assert!(
        log.lines().count() < 1000,
        "compacted: {} lines",
        log.lines().count()
    );
    assert_eq!(api.read_file(&format!("{WS}/pending")), None);
    drop(fs);
    opts.write_back = None;
    let fs = mount(&api, opts).await;
    fs.sync_all().await.unwrap();
    assert_eq!(
        api.read_file(&format!("{WS}/pending")),
        Some(b"only in the journal".to_vec())
    );
}

/// SEMANTICS: "A small file's record (up to 16 KiB) carries its bytes".
/// A crash may lose a staging file's unsynced bytes: the next mount uploads them anyway, at
/// the file's latest name.
#[tokio::test]
async fn write_back_small_files_survive_a_crash_that_lost_their_staging_bytes() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.write_back = Some(Duration::from_secs(3600));
    let fs = mount(&api, opts.clone()).await;
    write_new(&fs, WS, "note.txt", b"small and precious")
        .await
        .unwrap();
    write_new(&fs, WS, "moved-before.txt", b"renamed after close")
        .await
        .unwrap();
    let parent = resolve(&fs, WS).await.unwrap();
    fs.rename(
        parent,
        OsStr::new("moved-before.txt"),
        parent,
        OsStr::new("moved-after.txt"),
        0,
    )
    .await
    .unwrap();
    // Crash; the staging files' bytes never reached the disk.
    drop(fs);
    for entry in std::fs::read_dir(cache.path().join("staging")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"").unwrap();
    }
    opts.write_back = None;
    let fs = mount(&api, opts).await;
    fs.sync_all().await.unwrap();
    assert_eq!(
        api.read_file(&format!("{WS}/note.txt")),
        Some(b"small and precious".to_vec())
    );
    assert_eq!(
        api.read_file(&format!("{WS}/moved-after.txt")),
        Some(b"renamed after close".to_vec())
    );
    assert_eq!(api.read_file(&format!("{WS}/moved-before.txt")), None);
}

/// SEMANTICS: "write-back: fsync uploads now; sync_all (unmount) uploads everything".
#[tokio::test]
async fn write_back_uploads_on_fsync_and_sync_all() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.write_back = Some(Duration::from_secs(3600));
    let fs = mount(&api, opts).await;
    let parent = resolve(&fs, WS).await.unwrap();
    let (entry, open) = fs
        .create(parent, OsStr::new("synced"), 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    fs.write(entry.attr.ino, open.fh, 0, b"now").await.unwrap();
    fs.fsync(entry.attr.ino, open.fh, false).await.unwrap();
    assert_eq!(
        api.read_file(&format!("{WS}/synced")),
        Some(b"now".to_vec())
    );
    fs.release(entry.attr.ino, open.fh).await.unwrap();
    write_new(&fs, WS, "later", b"later").await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/later")), None);
    fs.sync_all().await.unwrap();
    assert_eq!(
        api.read_file(&format!("{WS}/later")),
        Some(b"later".to_vec())
    );
}

/// SEMANTICS: "times set by the user are kept locally, survive remounts, and are dropped
/// when the content changes on the server".
#[tokio::test]
async fn mtime_overlay_survives_remount_and_yields_to_server_changes() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let ino = write_new(&fs, WS, "dated", b"v1").await.unwrap();
    let when = UNIX_EPOCH + Duration::new(978_307_200, 123_000_000); // 2001-01-01
    let attr = fs
        .setattr(
            ino,
            SetAttr {
                mtime: Some(TimeOrNow::At(when)),
                atime: Some(TimeOrNow::At(when)),
                ..SetAttr::default()
            },
        )
        .await
        .unwrap()
        .attr;
    assert_eq!(attr.mtime, when);
    // A rename keeps the times (rsync: temp file, utimes, rename).
    let root = resolve(&fs, WS).await.unwrap();
    fs.rename(root, OsStr::new("dated"), root, OsStr::new("renamed"), 0)
        .await
        .unwrap();
    drop(fs);
    let fs = mount(&api, options(cache.path())).await;
    let ino = resolve(&fs, &format!("{WS}/renamed")).await.unwrap();
    assert_eq!(fs.getattr(ino, None).await.unwrap().attr.mtime, when);
    api.put_file(&format!("{WS}/renamed"), b"v2 from elsewhere");
    fs.invalidate(RemoteChange::ContentChanged {
        path: format!("{WS}/renamed"),
        etag: None,
    });
    let mtime = fs.getattr(ino, None).await.unwrap().attr.mtime;
    assert!(
        mtime > SystemTime::now() - Duration::from_secs(60),
        "{mtime:?}"
    );
}

/// SEMANTICS: "a failed upload is retried".
#[tokio::test]
async fn transient_upload_failures_are_retried() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    api.fail_next(
        2,
        Some("put_object"),
        ApiError::Server {
            status: 503,
            message: "busy".into(),
        },
    );
    write_new(&fs, WS, "retried", b"content").await.unwrap();
    assert_eq!(api.calls("put_object"), 3);
    assert_eq!(
        api.read_file(&format!("{WS}/retried")),
        Some(b"content".to_vec())
    );
}

/// SEMANTICS: "when an upload fails for good, close fails with EIO and the data is kept in
/// the recovery folder". Both for a small file (its content held in memory, sent from there)
/// and for a larger one (sent from its staging file).
#[tokio::test]
async fn failed_uploads_land_in_the_recovery_folder() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.upload_attempts = 3;
    let fs = mount(&api, opts).await;
    let large = pattern(100_000);
    let cases: [(&str, &str, &[u8]); 2] = [
        ("put_object", "doomed", b"precious bytes"),
        ("put_object_from_file", "doomed-large", &large),
    ];
    for (operation, name, content) in cases {
        api.fail_next(
            100,
            Some(operation),
            ApiError::Network("connection reset".into()),
        );
        let result = write_new(&fs, WS, name, content).await;
        assert_eq!(result, Err(libc::EIO), "{name}");
        assert_eq!(api.calls(operation), 3, "{name}");
        api.clear_faults();
        let status = fs.status();
        let kept = status
            .recovered_files
            .iter()
            .find(|f| f.to_string_lossy().ends_with(&format!("_{name}")))
            .unwrap_or_else(|| panic!("{name} is not in {status:?}"));
        assert_eq!(std::fs::read(kept).unwrap(), content, "{name}");
        assert!(
            status
                .recent_errors
                .iter()
                .any(|e| e.message.contains(name))
        );
    }
    assert_eq!(fs.status().recovered_files.len(), 2);
}

/// SEMANTICS: "dotfiles are listed and found (through the gateway listing)".
#[tokio::test]
async fn dotfiles_are_visible_and_count_for_rmdir() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/repo/.git/config"), b"[core]");
    api.put_file(&format!("{WS}/repo/.gitignore"), b"target");
    api.put_file(&format!("{WS}/only-dot/.keep"), b"");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    assert_eq!(
        read_all(&fs, &format!("{WS}/repo/.git/config"), 4096).await,
        b"[core]"
    );
    assert_eq!(
        read_all(&fs, &format!("{WS}/repo/.gitignore"), 4096).await,
        b"target"
    );
    let ws = resolve(&fs, WS).await.unwrap();
    let err = fs.rmdir(ws, OsStr::new("only-dot")).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
}

/// SEMANTICS: "read-only workspaces and the recycle bin refuse changes with EROFS; symlinks,
/// hard links and devices are refused with EPERM; RENAME_EXCHANGE with EINVAL".
#[tokio::test]
async fn refusals_use_the_documented_errnos() {
    let api = Arc::new(MemoryCellsApi::new(vec![
        MemoryWorkspace::new(WS, true),
        MemoryWorkspace::new("readonly", false),
    ]));
    api.put_file("readonly/doc.txt", b"ro");
    api.put_file(&format!("{WS}/a"), b"a");
    api.put_file(&format!("{WS}/b"), b"b");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let ro = resolve(&fs, "readonly").await.unwrap();
    let err = fs
        .create(ro, OsStr::new("new"), 0o644, libc::O_WRONLY)
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EROFS);
    let doc = resolve(&fs, "readonly/doc.txt").await.unwrap();
    assert_eq!(
        fs.open(doc, libc::O_RDWR).await.unwrap_err().errno(),
        libc::EROFS
    );
    assert_eq!(fs.getattr(doc, None).await.unwrap().attr.perm & 0o222, 0);
    assert_eq!(read_all(&fs, "readonly/doc.txt", 10).await, b"ro");
    let ws = resolve(&fs, WS).await.unwrap();
    fs.unlink(ws, OsStr::new("a")).await.unwrap();
    assert_eq!(
        api.read_file(&format!("{WS}/recycle_bin/a")),
        Some(b"a".to_vec()),
        "unlink goes to the recycle bin"
    );
    let bin = resolve(&fs, &format!("{WS}/recycle_bin")).await.unwrap();
    assert_eq!(
        fs.unlink(bin, OsStr::new("a")).await.unwrap_err().errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.rename(
            ws,
            OsStr::new("b"),
            ws,
            OsStr::new("c"),
            libc::RENAME_EXCHANGE
        )
        .await
        .unwrap_err()
        .errno(),
        libc::EINVAL
    );
    assert_eq!(
        fs.symlink(ws, OsStr::new("l"), OsStr::new("b"))
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    let b = resolve(&fs, &format!("{WS}/b")).await.unwrap();
    assert_eq!(
        fs.link(b, ws, OsStr::new("h")).await.unwrap_err().errno(),
        libc::EPERM
    );
    assert_eq!(
        fs.mknod(ws, OsStr::new("fifo"), libc::S_IFIFO | 0o644)
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    assert_eq!(
        fs.mkdir(ROOT_INO, OsStr::new("newws"), 0o755)
            .await
            .unwrap_err()
            .errno(),
        libc::EACCES
    );
    let mut opts = options(cache.path());
    opts.read_only = true;
    let fs = mount(&api, opts).await;
    let ws = resolve(&fs, WS).await.unwrap();
    assert_eq!(
        fs.mkdir(ws, OsStr::new("d"), 0o755)
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
}

/// SEMANTICS: "an unlinked file stays readable through the handles open on it".
#[tokio::test]
async fn unlinked_open_file_stays_readable() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/open.txt"), b"still here");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let ino = resolve(&fs, &format!("{WS}/open.txt")).await.unwrap();
    let open = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let ws = resolve(&fs, WS).await.unwrap();
    fs.unlink(ws, OsStr::new("open.txt")).await.unwrap();
    assert_eq!(
        fs.lookup(ws, OsStr::new("open.txt"))
            .await
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    let data = fs.read(ino, open.fh, 0, 100).await.unwrap();
    assert_eq!(&data[..], b"still here");
    fs.release(ino, open.fh).await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/open.txt")), None);
}

/// SEMANTICS: "two handles on one file see each other's writes" and "xattrs".
#[tokio::test]
async fn handles_share_writes_and_xattrs_show_uuid_and_etag() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/shared"), b"0123456789");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let ino = resolve(&fs, &format!("{WS}/shared")).await.unwrap();
    let reader = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let writer = fs.open(ino, libc::O_RDWR).await.unwrap();
    fs.write(ino, writer.fh, 2, b"ab").await.unwrap();
    assert_eq!(
        &fs.read(ino, reader.fh, 0, 100).await.unwrap()[..],
        b"01ab456789"
    );
    fs.release(ino, writer.fh).await.unwrap();
    fs.release(ino, reader.fh).await.unwrap();
    let node = api.node(&format!("{WS}/shared")).unwrap();
    assert_eq!(
        fs.getxattr(ino, OsStr::new("user.cells.uuid"))
            .await
            .unwrap(),
        node.uuid.as_bytes()
    );
    assert_eq!(
        fs.getxattr(ino, OsStr::new("user.cells.etag"))
            .await
            .unwrap(),
        node.etag.as_bytes()
    );
    assert_eq!(
        fs.getxattr(ino, OsStr::new("user.other"))
            .await
            .unwrap_err()
            .errno(),
        libc::ENODATA
    );
    // The names the kernel and `ls -l` ask of every file are answered without the inode,
    // the same way; ours never are.
    for name in ["security.selinux", "system.posix_acl_access", "user.other"] {
        assert_eq!(
            CellsFs::getxattr_never(OsStr::new(name)).map(|e| e.errno()),
            Some(libc::ENODATA),
            "{name}"
        );
    }
    for name in ["user.cells.uuid", "user.cells.etag"] {
        assert!(
            CellsFs::getxattr_never(OsStr::new(name)).is_none(),
            "{name}"
        );
    }
    let list = fs.listxattr(ino).await.unwrap();
    assert_eq!(list, b"user.cells.uuid\0user.cells.etag\0");
    // `cp -a` sets POSIX ACLs: "not supported here" lets it carry on; the read-only
    // Cells attributes refuse a change outright.
    assert_eq!(
        fs.setxattr(ino, OsStr::new("system.posix_acl_access"), b"x", 0)
            .await
            .unwrap_err()
            .errno(),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        fs.setxattr(ino, OsStr::new("user.cells.uuid"), b"x", 0)
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
}

/// SEMANTICS: "a slow upload never blocks other operations".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_does_not_block_other_operations() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/other"), b"other");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    api.set_operation_delay("put_object", Duration::from_secs(2));
    let slow = {
        let fs = fs.clone();
        tokio::spawn(async move { write_new(&fs, WS, "slow", b"slow").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(read_all(&fs, &format!("{WS}/other"), 100).await, b"other");
    let ws = resolve(&fs, WS).await.unwrap();
    fs.mkdir(ws, OsStr::new("meanwhile"), 0o755).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "blocked for {:?}",
        started.elapsed()
    );
    assert!(!slow.is_finished());
    slow.await.unwrap().unwrap();
    assert_eq!(api.read_file(&format!("{WS}/slow")), Some(b"slow".to_vec()));
}

/// A kernel notifier that blocks (as the kernel does while a rename in the same directory is
/// pending) must never stall `invalidate` nor the requests the kernel waits for.
#[tokio::test(flavor = "current_thread")]
async fn a_blocking_kernel_notifier_never_stalls_the_core() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/watched"), b"v1");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let notifier = RecordingNotifier::new(Duration::from_millis(300));
    fs.set_notifier(notifier.clone());
    let ws = resolve(&fs, WS).await.unwrap();
    let ino = resolve(&fs, &format!("{WS}/watched")).await.unwrap();
    let started = Instant::now();
    api.put_file(&format!("{WS}/watched"), b"v2");
    fs.invalidate(RemoteChange::ContentChanged {
        path: format!("{WS}/watched"),
        etag: None,
    });
    // A name that appeared: its (maybe negative) kernel entry is invalidated too.
    fs.invalidate(RemoteChange::Created {
        path: format!("{WS}/appeared"),
    });
    assert_eq!(read_all(&fs, &format!("{WS}/watched"), 10).await, b"v2");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while notifier.0.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = notifier.0.lock().unwrap().clone();
    assert!(seen.contains(&format!("inode {ino}")), "{seen:?}");
    assert!(seen.contains(&format!("{ws}/appeared")), "{seen:?}");
    // New content under the same name: the entry still names the same node and stays (so a
    // folder that is a working directory is never unhashed by a remote change).
    assert!(!seen.contains(&format!("{ws}/watched")), "{seen:?}");
}

/// SEMANTICS: "server errors, timeouts and broken connections after retries `EIO`": a
/// transient download failure is retried before the read fails.
#[tokio::test]
async fn transient_download_failures_are_retried() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/flaky"), b"downloaded");
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.cache_size = 0;
    let fs = mount(&api, opts).await;
    api.fail_next(
        2,
        Some("get_object"),
        ApiError::Network("connection reset".into()),
    );
    assert_eq!(
        read_all(&fs, &format!("{WS}/flaky"), 100).await,
        b"downloaded"
    );
    api.fail_next(
        100,
        Some("get_object"),
        ApiError::Network("connection reset".into()),
    );
    let ino = resolve(&fs, &format!("{WS}/flaky")).await.unwrap();
    let open = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let err = fs.read(ino, open.fh, 0, 100).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    api.clear_faults();
}

/// What the shell's `cmd > name` does once `name` is open for writing (as `fh`): the close of
/// the duplicate descriptor stores nothing (the server still has `before`), the write and the
/// last close store `content`, in one upload in all.
async fn redirect(
    fs: &CellsFs,
    api: &MemoryCellsApi,
    ino: u64,
    fh: u64,
    name: &str,
    before: Option<&[u8]>,
    content: &[u8],
) {
    let path = format!("{WS}/{name}");
    fs.flush(ino, fh).await.unwrap();
    assert_eq!(uploads(api), 0, "nothing to store yet");
    assert_eq!(
        api.read_file(&path),
        before.map(<[u8]>::to_vec),
        "no empty version in between"
    );
    fs.write(ino, fh, 0, content).await.unwrap();
    fs.flush(ino, fh).await.unwrap();
    assert_eq!(
        api.read_file(&path),
        Some(content.to_vec()),
        "on the server when close returns"
    );
    fs.release(ino, fh).await.unwrap();
    assert_eq!(uploads(api), 1, "one upload in all");
}

/// SEMANTICS: "A file still empty at a `close`, new or emptied by a truncating open, while
/// another descriptor of it stays open (the shell's `cmd > f` does this) is stored on the
/// server when its last descriptor closes".
#[tokio::test]
async fn shell_redirection_uploads_once_and_touch_still_creates() {
    let api = Arc::new(MemoryCellsApi::default());
    // On the server from the start: the creates below list the folder (their second lookup
    // in it), and a file put on the server behind the mount's back (no events here) would
    // stay unseen while that listing is trusted.
    api.put_file(&format!("{WS}/existing"), b"old content\n");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let parent = resolve(&fs, WS).await.unwrap();
    // `echo hi > f`: open, close of the duplicate (flush), write, last close (flush, release).
    let (entry, open) = fs
        .create(parent, OsStr::new("redirected"), 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    api.reset_calls();
    redirect(
        &fs,
        &api,
        entry.attr.ino,
        open.fh,
        "redirected",
        None,
        b"hi\n",
    )
    .await;
    // `touch g`: the empty file exists on the server once its last descriptor is closed.
    let (entry, open) = fs
        .create(parent, OsStr::new("touched"), 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    fs.flush(entry.attr.ino, open.fh).await.unwrap();
    fs.release(entry.attr.ino, open.fh).await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/touched")), Some(Vec::new()));
    // `echo new > existing`: the truncating open empties it here; the server keeps the old
    // content until the new one goes up, once.
    let ino = resolve(&fs, &format!("{WS}/existing")).await.unwrap();
    let open = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    api.reset_calls();
    let old: &[u8] = b"old content\n";
    redirect(&fs, &api, ino, open.fh, "existing", Some(old), b"new\n").await;
    // `: > existing`: emptied on the server once its last descriptor is closed.
    let open = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    fs.flush(ino, open.fh).await.unwrap();
    fs.release(ino, open.fh).await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/existing")), Some(Vec::new()));
}

/// SEMANTICS: "a file this mount created less than five minutes ago (and at most 64 MiB) is
/// renamed by a server-side copy and a permanent delete of the old name ...; every other
/// rename is the server's move job".
#[tokio::test]
async fn renaming_a_file_created_here_copies_it_and_keeps_the_target_identity() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/dest.txt"), b"old content");
    api.put_file(&format!("{WS}/older.txt"), b"not created here");
    let target_uuid = api.node(&format!("{WS}/dest.txt")).unwrap().uuid;
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let ws = resolve(&fs, WS).await.unwrap();
    // rsync: a temporary file, uploaded at close, then renamed over the real name.
    write_new(&fs, WS, ".dest.txt.Xa1b2", b"new content")
        .await
        .unwrap();
    api.reset_calls();
    fs.rename(
        ws,
        OsStr::new(".dest.txt.Xa1b2"),
        ws,
        OsStr::new("dest.txt"),
        0,
    )
    .await
    .unwrap();
    // The server copies and deletes the temporary name in the background (next tests).
    fs.sync_all().await.unwrap();
    assert_eq!(api.calls("move_nodes"), 0, "no move job");
    assert_eq!(api.calls("copy_object"), 1);
    assert_eq!(
        api.read_file(&format!("{WS}/dest.txt")),
        Some(b"new content".to_vec())
    );
    assert_eq!(api.read_file(&format!("{WS}/.dest.txt.Xa1b2")), None);
    assert_eq!(
        api.node(&format!("{WS}/dest.txt")).unwrap().uuid,
        target_uuid,
        "the target keeps its identity (a new version of it)"
    );
    assert_eq!(
        read_all(&fs, &format!("{WS}/dest.txt"), 4096).await,
        b"new content"
    );
    // A file that was on the server before the mount moves with the job (Uuid kept).
    let older_uuid = api.node(&format!("{WS}/older.txt")).unwrap().uuid;
    api.reset_calls();
    fs.rename(ws, OsStr::new("older.txt"), ws, OsStr::new("moved.txt"), 0)
        .await
        .unwrap();
    assert_eq!(api.calls("move_nodes"), 1);
    assert_eq!(api.calls("copy_object"), 0);
    assert_eq!(
        api.node(&format!("{WS}/moved.txt")).unwrap().uuid,
        older_uuid
    );
}

/// The temporary name of a fresh file's rename is deleted in the background: the rename
/// returns after the copy, the old name is gone from listings and stats at once, and anything
/// done at that name on the server waits for the delete (a new file there is not deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_name_of_a_fresh_rename_is_deleted_in_the_background_and_in_order() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let mut options = options(cache.path());
    // Every listing and stat goes to the server.
    options.attr_timeout = Duration::ZERO;
    options.dir_cache_time = Duration::ZERO;
    let fs = mount(&api, options).await;
    let ws = resolve(&fs, WS).await.unwrap();
    write_new(&fs, WS, ".f.tmp", b"first").await.unwrap();
    api.set_operation_delay("delete_object", Duration::from_millis(600));
    let started = Instant::now();
    fs.rename(ws, OsStr::new(".f.tmp"), ws, OsStr::new("f"), 0)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the rename waited for the delete: {:?}",
        started.elapsed()
    );
    assert_eq!(
        api.read_file(&format!("{WS}/.f.tmp")),
        Some(b"first".to_vec()),
        "still on the server for now"
    );
    // Gone for this mount all the same.
    let names = list_names(&fs, ws).await;
    assert!(names.contains(&"f".to_string()), "{names:?}");
    assert!(!names.contains(&".f.tmp".to_string()), "{names:?}");
    assert_eq!(
        fs.lookup(ws, OsStr::new(".f.tmp"))
            .await
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    // A new file under the old name is uploaded after the delete, so it survives it.
    write_new(&fs, WS, ".f.tmp", b"second").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    fs.sync_all().await.unwrap();
    assert_eq!(
        api.read_file(&format!("{WS}/.f.tmp")),
        Some(b"second".to_vec())
    );
    assert_eq!(api.read_file(&format!("{WS}/f")), Some(b"first".to_vec()));

    // The same for a rename with nothing after it: the unmount's sync waits for the delete.
    write_new(&fs, WS, ".g.tmp", b"g").await.unwrap();
    fs.rename(ws, OsStr::new(".g.tmp"), ws, OsStr::new("g"), 0)
        .await
        .unwrap();
    fs.sync_all().await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/.g.tmp")), None);
    assert_eq!(api.read_file(&format!("{WS}/g")), Some(b"g".to_vec()));
}

/// SEMANTICS: "the rename of a file this mount created returns at once ... until the server's
/// copy is done, reading the new name waits for it; `fsync` of the file or of its folder,
/// `sync` and the unmount wait for the whole rename".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_rename_returns_before_the_server_copy_and_reads_wait_for_it() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let ws = resolve(&fs, WS).await.unwrap();
    write_new(&fs, WS, ".f.tmp", b"content of f").await.unwrap();
    write_new(&fs, WS, ".e.tmp", b"content of e").await.unwrap();
    api.set_operation_delay("copy_object", Duration::from_millis(600));
    let started = Instant::now();
    fs.rename(ws, OsStr::new(".f.tmp"), ws, OsStr::new("f"), 0)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the rename waited for the copy: {:?}",
        started.elapsed()
    );
    assert_eq!(api.read_file(&format!("{WS}/f")), None, "not copied yet");
    // A listing from the server (the cached one dropped by a change elsewhere) waits for
    // the copy: the new name is in it, the old one is not.
    fs.invalidate(RemoteChange::Deleted {
        path: format!("{WS}/elsewhere"),
    });
    let names = list_names(&fs, ws).await;
    assert!(names.contains(&"f".to_string()), "{names:?}");
    assert!(!names.contains(&".f.tmp".to_string()), "{names:?}");
    // Opening the new name waits for its copy and reads the content.
    let started = Instant::now();
    fs.rename(ws, OsStr::new(".e.tmp"), ws, OsStr::new("e"), 0)
        .await
        .unwrap();
    assert_eq!(
        read_all(&fs, &format!("{WS}/e"), 4096).await,
        b"content of e"
    );
    assert!(started.elapsed() >= Duration::from_millis(600));

    // fsync of the folder returns once the server has the new name and not the old one.
    write_new(&fs, WS, ".g.tmp", b"g").await.unwrap();
    api.set_operation_delay("delete_object", Duration::from_millis(300));
    fs.rename(ws, OsStr::new(".g.tmp"), ws, OsStr::new("g"), 0)
        .await
        .unwrap();
    assert_eq!(api.read_file(&format!("{WS}/.g.tmp")), Some(b"g".to_vec()));
    fs.fsyncdir(ws).await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/g")), Some(b"g".to_vec()));
    assert_eq!(api.read_file(&format!("{WS}/.g.tmp")), None);

    // A second rename onto the same name waits for the first one's copy: last one wins.
    api.set_operation_delay("delete_object", Duration::ZERO);
    write_new(&fs, WS, ".h1", b"first").await.unwrap();
    write_new(&fs, WS, ".h2", b"second").await.unwrap();
    fs.rename(ws, OsStr::new(".h1"), ws, OsStr::new("h"), 0)
        .await
        .unwrap();
    fs.rename(ws, OsStr::new(".h2"), ws, OsStr::new("h"), 0)
        .await
        .unwrap();
    fs.sync_all().await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/h")), Some(b"second".to_vec()));
    assert_eq!(api.read_file(&format!("{WS}/.h1")), None);
    assert_eq!(api.read_file(&format!("{WS}/.h2")), None);
}

/// Rename `from` to `to` in the workspace, then crash the mount while the server's copy is
/// under way (counted) and before it ends.
async fn rename_then_crash(api: &MemoryCellsApi, fs: CellsFs, from: &str, to: &str) {
    let ws = resolve(&fs, WS).await.unwrap();
    api.set_operation_delay("copy_object", Duration::from_secs(30));
    let before = api.calls("copy_object");
    fs.rename(ws, OsStr::new(from), ws, OsStr::new(to), 0)
        .await
        .unwrap();
    assert!(eventually(|| api.calls("copy_object") == before + 1).await);
    // The crash: nothing is dropped, the copy never ends.
    std::mem::forget(fs);
    api.set_operation_delay("copy_object", Duration::ZERO);
}

/// SEMANTICS: "the rename is journaled before it returns: a crash before the server's copy
/// is finished by the next mount".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_a_crash_interrupted_is_finished_by_the_next_mount() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    write_new(&fs, WS, ".kept.tmp", b"acknowledged")
        .await
        .unwrap();
    rename_then_crash(&api, fs, ".kept.tmp", "kept").await;
    let fs = mount(&api, options(cache.path())).await;
    fs.settle().await;
    assert_eq!(
        api.read_file(&format!("{WS}/kept")),
        Some(b"acknowledged".to_vec())
    );
    assert_eq!(api.read_file(&format!("{WS}/.kept.tmp")), None);
    // Done, so forgotten: a third mount copies nothing.
    drop(fs);
    let calls = api.calls("copy_object");
    let fs = mount(&api, options(cache.path())).await;
    fs.settle().await;
    assert_eq!(api.calls("copy_object"), calls);

    // A new name another client wrote since is not overwritten with the older content.
    write_new(&fs, WS, ".y.tmp", b"ours").await.unwrap();
    rename_then_crash(&api, fs, ".y.tmp", "y").await;
    let later = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 60;
    api.set_clock(Some(later));
    api.put_file(&format!("{WS}/y"), b"theirs, written later");
    api.set_clock(None);
    let calls = api.calls("copy_object");
    let fs = mount(&api, options(cache.path())).await;
    fs.settle().await;
    assert_eq!(api.calls("copy_object"), calls, "not copied over");
    assert_eq!(
        api.read_file(&format!("{WS}/y")),
        Some(b"theirs, written later".to_vec())
    );
    assert_eq!(api.read_file(&format!("{WS}/.y.tmp")), None);
}

/// A copy the server refuses falls back to its move job; when that fails too, the failure is
/// reported and the file shows again under the name the server keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_rename_the_server_refuses_falls_back_then_reports() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let ws = resolve(&fs, WS).await.unwrap();
    let refused = || ApiError::Server {
        status: 500,
        message: "refused".into(),
    };
    write_new(&fs, WS, ".a.tmp", b"a").await.unwrap();
    api.fail_next(100, Some("copy_object"), refused());
    fs.rename(ws, OsStr::new(".a.tmp"), ws, OsStr::new("a"), 0)
        .await
        .unwrap();
    fs.settle().await;
    assert_eq!(api.calls("move_nodes"), 1, "the move job stood in");
    assert_eq!(api.read_file(&format!("{WS}/a")), Some(b"a".to_vec()));
    assert_eq!(api.read_file(&format!("{WS}/.a.tmp")), None);

    write_new(&fs, WS, ".b.tmp", b"b").await.unwrap();
    api.fail_next(100, Some("move_nodes"), refused());
    fs.rename(ws, OsStr::new(".b.tmp"), ws, OsStr::new("b"), 0)
        .await
        .unwrap();
    fs.settle().await;
    api.clear_faults();
    assert_eq!(api.read_file(&format!("{WS}/.b.tmp")), Some(b"b".to_vec()));
    assert!(
        fs.status()
            .recent_errors
            .iter()
            .any(|e| e.message.contains("could not finish the rename")),
        "reported"
    );
    assert_eq!(
        fs.lookup(ws, OsStr::new("b"))
            .await
            .err()
            .map(|e| e.errno()),
        Some(libc::ENOENT)
    );
    assert_eq!(read_all(&fs, &format!("{WS}/.b.tmp"), 4096).await, b"b");
}

/// Options for the streaming tests: 10 MiB parts above a 10 MiB threshold.
fn streaming_options(cache: &std::path::Path) -> FsOptions {
    let mut options = options(cache);
    options.upload_options.multipart_threshold = 10 * MIB;
    options.upload_options.part_size = 10 * MIB;
    options
}

const MIB: u64 = 1024 * 1024;

/// Create `name` in the workspace and append `data` in 1 MiB writes; the handle stays open.
async fn append_new(fs: &CellsFs, name: &str, data: &[u8]) -> (u64, u64) {
    let parent = resolve(fs, WS).await.unwrap();
    let (entry, open) = fs
        .create(parent, OsStr::new(name), 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    for (i, chunk) in data.chunks(MIB as usize).enumerate() {
        fs.write(entry.attr.ino, open.fh, i as u64 * MIB, chunk)
            .await
            .unwrap();
    }
    (entry.attr.ino, open.fh)
}

async fn close(fs: &CellsFs, ino: u64, fh: u64) -> Result<(), i32> {
    fs.flush(ino, fh).await.map_err(|e| e.errno())?;
    fs.release(ino, fh).await.map_err(|e| e.errno())
}

/// Poll `done` for up to 5 s.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// SEMANTICS: a big new file written by appends is sent in parts while it is written; close
/// sends the rest and completes the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_new_file_is_sent_in_parts_while_it_is_written() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, streaming_options(cache.path())).await;
    let data = pattern(25 * MIB as usize + 12345);
    let (ino, fh) = append_new(&fs, "big.bin", &data).await;
    assert!(
        eventually(|| api.calls("upload_part") == 2).await,
        "the two complete parts go while the file is open: {} sent",
        api.calls("upload_part")
    );
    assert_eq!(
        api.read_file(&format!("{WS}/big.bin")),
        None,
        "not complete yet"
    );
    close(&fs, ino, fh).await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/big.bin")), Some(data.clone()));
    assert_eq!(api.calls("upload_part"), 3, "the short tail at close");
    assert_eq!(api.calls("complete_multipart"), 1);
    assert_eq!(api.calls("put_object_from_file"), 0, "never sent whole");
    assert_eq!(api.unfinished_multipart_uploads(), 0);
    assert_eq!(read_all(&fs, &format!("{WS}/big.bin"), 1 << 20).await, data);
}

/// In write-back too: the parts go while the file is written, the (later) upload sends the
/// tail; a crash before it loses nothing (the journal uploads the file whole, the open upload
/// is aborted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_streams_big_files_too_and_a_crash_loses_nothing() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let mut opts = streaming_options(cache.path());
    opts.write_back = Some(Duration::from_secs(3600));
    let fs = mount(&api, opts.clone()).await;
    let data = pattern(22 * MIB as usize);
    let (ino, fh) = append_new(&fs, "wb.bin", &data).await;
    assert!(eventually(|| api.calls("upload_part") == 2).await);
    close(&fs, ino, fh).await.unwrap();
    assert_eq!(
        api.read_file(&format!("{WS}/wb.bin")),
        None,
        "not yet: write-back"
    );
    fs.sync_all().await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/wb.bin")), Some(data));
    assert_eq!(api.calls("put_object_from_file"), 0);
    assert_eq!(api.calls("upload_part"), 3);

    // Closed (journaled), parts sent, then the crash.
    let data = pattern(21 * MIB as usize + 5);
    let (ino, fh) = append_new(&fs, "wb-crash.bin", &data).await;
    assert!(eventually(|| api.unfinished_multipart_uploads() == 1).await);
    close(&fs, ino, fh).await.unwrap();
    std::mem::forget(fs);
    opts.write_back = None;
    let fs = mount(&api, opts).await;
    fs.sync_all().await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/wb-crash.bin")), Some(data));
    assert!(eventually(|| api.unfinished_multipart_uploads() == 0).await);
}

/// Whatever breaks the stream (a write below what was sent, a rename, a failed part), the
/// file is uploaded whole at close, right, and no unfinished upload stays on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_falls_back_to_a_whole_upload_and_leaves_nothing_behind() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, streaming_options(cache.path())).await;
    let ws = resolve(&fs, WS).await.unwrap();

    // An overwrite of bytes already sent.
    let mut data = pattern(22 * MIB as usize);
    let (ino, fh) = append_new(&fs, "rewritten.bin", &data).await;
    assert!(eventually(|| api.calls("upload_part") == 2).await);
    fs.write(ino, fh, 100, b"CHANGED").await.unwrap();
    data[100..107].copy_from_slice(b"CHANGED");
    close(&fs, ino, fh).await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/rewritten.bin")), Some(data));
    assert_eq!(api.calls("put_object_from_file"), 1);
    assert!(eventually(|| api.unfinished_multipart_uploads() == 0).await);

    // A rename while it is written.
    api.reset_calls();
    let data = pattern(21 * MIB as usize);
    let (ino, fh) = append_new(&fs, "moving.bin", &data).await;
    assert!(eventually(|| api.calls("upload_part") == 2).await);
    fs.rename(ws, OsStr::new("moving.bin"), ws, OsStr::new("moved.bin"), 0)
        .await
        .unwrap();
    close(&fs, ino, fh).await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/moved.bin")), Some(data));
    assert_eq!(api.read_file(&format!("{WS}/moving.bin")), None);
    assert!(eventually(|| api.unfinished_multipart_uploads() == 0).await);

    // A part refused by the server.
    api.reset_calls();
    api.fail_next(
        1,
        Some("upload_part"),
        ApiError::Server {
            status: 400,
            message: "InvalidPart".into(),
        },
    );
    let data = pattern(23 * MIB as usize);
    let (ino, fh) = append_new(&fs, "refused.bin", &data).await;
    close(&fs, ino, fh).await.unwrap();
    assert_eq!(api.read_file(&format!("{WS}/refused.bin")), Some(data));
    assert_eq!(api.calls("put_object_from_file"), 1);
    assert!(eventually(|| api.unfinished_multipart_uploads() == 0).await);
}

/// The answers the FUSE adapter gives without waiting are the async methods' own, and only
/// while memory is trusted; otherwise the server is asked.
#[tokio::test]
async fn lookups_and_attributes_answered_from_memory_match_and_expire() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/known"), b"12345");
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.attr_timeout = Duration::from_millis(300);
    opts.dir_cache_time = Duration::from_millis(300);
    let fs = mount(&api, opts).await;
    let ws = resolve(&fs, WS).await.unwrap();
    let entry = fs.lookup(ws, OsStr::new("known")).await.unwrap();
    let cached = fs
        .lookup_cached(ws, OsStr::new("known"))
        .expect("just looked up")
        .unwrap();
    assert_eq!(cached.attr.ino, entry.attr.ino);
    assert_eq!(cached.attr.size, 5);
    let attr = fs.getattr_cached(entry.attr.ino).expect("fresh").unwrap();
    assert_eq!(attr.attr.size, 5);
    assert_eq!(
        fs.lookup_cached(ws, OsStr::new("absent"))
            .map(|r| r.unwrap_err().errno()),
        None,
        "never asked: the server must be"
    );
    assert_eq!(
        fs.lookup(ws, OsStr::new("absent"))
            .await
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    assert_eq!(
        fs.lookup_cached(ws, OsStr::new("absent"))
            .map(|r| r.unwrap_err().errno()),
        Some(libc::ENOENT),
        "a fresh negative answer"
    );
    // Changed on the server; once the trust expires, memory no longer answers.
    api.put_file(&format!("{WS}/known"), b"1234567");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(fs.lookup_cached(ws, OsStr::new("known")).is_none());
    assert!(fs.getattr_cached(entry.attr.ino).is_none());
    assert_eq!(fs.getattr(entry.attr.ino, None).await.unwrap().attr.size, 7);
    assert_eq!(
        fs.getattr_cached(entry.attr.ino)
            .expect("fresh again")
            .unwrap()
            .attr
            .size,
        7
    );
}

/// Reads the read-ahead already holds are served without waiting (`read_ready`), with the
/// same bytes; anything else is left to `read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_already_read_ahead_are_served_at_once_and_right() {
    let api = Arc::new(MemoryCellsApi::default());
    let data = pattern(3 << 20);
    api.put_file(&format!("{WS}/seq.bin"), &data);
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let ino = resolve(&fs, &format!("{WS}/seq.bin")).await.unwrap();
    let open = fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(
        fs.read_ready(ino, open.fh, 0, 65536).is_none(),
        "nothing read ahead yet"
    );
    let first = fs.read(ino, open.fh, 0, 65536).await.unwrap();
    assert_eq!(&first[..], &data[..65536]);
    let mut offset = 65536u64;
    let mut ready = 0;
    for _ in 0..200 {
        if let Some(bytes) = fs.read_ready(ino, open.fh, offset, 65536) {
            assert_eq!(
                &bytes[..],
                &data[offset as usize..offset as usize + bytes.len()]
            );
            offset += bytes.len() as u64;
            ready += 1;
            if offset >= (2 << 20) {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(ready > 0, "the read-ahead served reads without waiting");
    // Far ahead of the stream: not for the fast path.
    assert!(fs.read_ready(ino, open.fh, 40 << 20, 65536).is_none());
    // The rest through `read`, which carries on from where the fast path left.
    let mut rest = Vec::new();
    loop {
        let bytes = fs
            .read(ino, open.fh, offset + rest.len() as u64, 1 << 20)
            .await
            .unwrap();
        if bytes.is_empty() {
            break;
        }
        rest.extend_from_slice(&bytes);
    }
    assert_eq!(&rest[..], &data[offset as usize..]);
    fs.release(ino, open.fh).await.unwrap();
}

/// A crash while a big file is streamed leaves its multipart upload open on the server: the
/// next mount on the same cache aborts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_a_crash_left_open_is_aborted_by_the_next_mount() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, streaming_options(cache.path())).await;
    let data = pattern(21 * MIB as usize);
    let (_ino, _fh) = append_new(&fs, "crashed.bin", &data).await;
    // Both parts received (none in flight to fail later and abort on its own).
    assert!(eventually(|| api.multipart_parts_received() == 2).await);
    assert_eq!(api.unfinished_multipart_uploads(), 1);
    // The crash: nothing is closed, dropped or aborted.
    std::mem::forget(fs);
    let fs = mount(&api, streaming_options(cache.path())).await;
    assert!(
        eventually(|| api.unfinished_multipart_uploads() == 0).await,
        "the open upload was aborted"
    );
    // The journal forgets it once the server has answered the abort (a moment later).
    let log = cache.path().join("journal/log");
    assert!(
        eventually(|| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"ended\""))).await,
        "the journal recorded the abort"
    );
    assert_eq!(api.read_file(&format!("{WS}/crashed.bin")), None);
    // Once aborted, it is forgotten: a third mount has nothing to abort.
    drop(fs);
    let calls = api.calls("abort_multipart");
    let _fs = mount(&api, streaming_options(cache.path())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(api.calls("abort_multipart"), calls);
}

/// A folder listing the server answered while this mount renamed a file in it (the git
/// `index.lock` -> `index` dance) must not bring the old name back.
#[tokio::test]
async fn a_listing_that_raced_with_a_local_rename_is_not_kept() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/race/a.txt"), b"a");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let dir = resolve(&fs, &format!("{WS}/race")).await.unwrap();
    resolve(&fs, &format!("{WS}/race/a.txt")).await.unwrap();
    // The REST half of the listing is read at once (old state), the gateway half after the
    // rename: without care, the merged listing shows both names.
    api.set_operation_delay("list_folder_s3", Duration::from_millis(300));
    let lister = {
        let fs = fs.clone();
        tokio::spawn(async move { list_names(&fs, dir).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    fs.rename(dir, OsStr::new("a.txt"), dir, OsStr::new("b.txt"), 0)
        .await
        .unwrap();
    lister.await.unwrap();
    api.set_operation_delay("list_folder_s3", Duration::ZERO);
    assert_eq!(
        fs.lookup(dir, OsStr::new("a.txt"))
            .await
            .err()
            .map(|e| e.errno()),
        Some(libc::ENOENT),
        "the old name is gone"
    );
    fs.lookup(dir, OsStr::new("b.txt")).await.unwrap();
}

/// SEMANTICS: "while the event stream is connected, after `--events-cache-time` ...; while it
/// is not, after `--attr-timeout` ... Cells announces no change to dotfiles ..., so those keep
/// the short TTLs whatever the events".
#[tokio::test]
async fn live_events_let_the_cache_be_trusted_longer_except_for_dotfiles() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/dir/plain"), b"one");
    api.put_file(&format!("{WS}/dir/.dot"), b"one");
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.attr_timeout = Duration::from_millis(50);
    opts.dir_cache_time = Duration::from_millis(50);
    opts.events_cache_time = Duration::from_secs(60);
    let fs = mount(&api, opts).await;
    fs.set_events_live(true);
    let dir = resolve(&fs, &format!("{WS}/dir")).await.unwrap();
    let plain = fs.lookup(dir, OsStr::new("plain")).await.unwrap().attr.ino;
    let dot = fs.lookup(dir, OsStr::new(".dot")).await.unwrap().attr.ino;
    // Another client rewrites both; no event has arrived yet.
    api.put_file(&format!("{WS}/dir/plain"), b"two, longer");
    api.put_file(&format!("{WS}/dir/.dot"), b"two, longer");
    tokio::time::sleep(Duration::from_millis(120)).await;
    api.reset_calls();
    assert_eq!(fs.getattr(plain, None).await.unwrap().attr.size, 3);
    assert_eq!(
        api.calls("stat") + api.calls("list_folder") + api.calls("list_folder_s3"),
        0,
        "answered from the cache while events are live"
    );
    assert_eq!(
        fs.getattr(dot, None).await.unwrap().attr.size,
        11,
        "dotfiles are never announced: short TTL"
    );
    // The event arrives: the change shows at once.
    fs.invalidate(RemoteChange::ContentChanged {
        path: format!("{WS}/dir/plain"),
        etag: None,
    });
    assert_eq!(fs.getattr(plain, None).await.unwrap().attr.size, 11);
    // The stream drops: everything is revalidated, then short TTLs apply again.
    api.put_file(&format!("{WS}/dir/plain"), b"3");
    fs.set_events_live(false);
    assert_eq!(fs.getattr(plain, None).await.unwrap().attr.size, 1);
    api.put_file(&format!("{WS}/dir/plain"), b"four");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(fs.getattr(plain, None).await.unwrap().attr.size, 4);
}

/// SEMANTICS: "the kernel is given the same trust: while the event stream is connected it keeps
/// names and attributes for what is left of `--events-cache-time` ...; when the stream drops,
/// the mount asks it to forget them all".
#[tokio::test]
async fn the_kernel_keeps_names_longer_while_events_are_live_and_forgets_them_when_they_stop() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/dir/plain"), b"one");
    api.put_file(&format!("{WS}/dir/.dot"), b"one");
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.attr_timeout = Duration::from_secs(1);
    opts.events_cache_time = Duration::from_secs(60);
    let fs = mount(&api, opts).await;
    let notifier = RecordingNotifier::new(Duration::ZERO);
    fs.set_notifier(notifier.clone());
    let dir = resolve(&fs, &format!("{WS}/dir")).await.unwrap();
    // Without events: the attribute timeout.
    let entry = fs.lookup(dir, OsStr::new("plain")).await.unwrap();
    assert_eq!(entry.ttl, Duration::from_secs(1));
    let plain = entry.attr.ino;
    fs.set_events_live(true);
    let entry = fs.lookup(dir, OsStr::new("plain")).await.unwrap();
    assert!(
        entry.ttl > Duration::from_secs(50) && entry.ttl <= Duration::from_secs(60),
        "{:?}",
        entry.ttl
    );
    assert!(fs.getattr(plain, None).await.unwrap().ttl > Duration::from_secs(50));
    let listed = {
        let fh = fs.opendir(dir, 0).await.unwrap();
        let mut ttls = Vec::new();
        fs.readdir(dir, fh, 0, true, |e| {
            ttls.push((e.name.to_string_lossy().into_owned(), e.entry.ttl));
            false
        })
        .await
        .unwrap();
        fs.releasedir(dir, fh).await.unwrap();
        ttls
    };
    let ttl_of = |name: &str| listed.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(ttl_of("plain") > Duration::from_secs(50));
    assert_eq!(
        ttl_of(".dot"),
        Duration::from_secs(1),
        "dotfiles are never announced"
    );
    let dot = fs.lookup(dir, OsStr::new(".dot")).await.unwrap();
    assert_eq!(dot.ttl, Duration::from_secs(1));
    // Workspaces changed (an access taken away): the kernel forgets the workspaces only.
    notifier.0.lock().unwrap().clear();
    fs.workspaces_changed();
    let ws = resolve(&fs, WS).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while notifier.0.lock().unwrap().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut seen = notifier.0.lock().unwrap().clone();
    seen.sort();
    let mut expected = vec![
        format!("inode {ROOT_INO}"),
        format!("inode {ws}"),
        format!("{ROOT_INO}/{WS}"),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    // The stream drops: the kernel is told to forget the names and attributes it holds.
    notifier.0.lock().unwrap().clear();
    fs.set_events_live(false);
    let expected = [
        format!("inode {plain}"),
        format!("{dir}/plain"),
        format!("inode {dir}"),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = notifier.0.lock().unwrap().clone();
        if expected.iter().all(|e| seen.contains(e)) {
            break;
        }
        assert!(Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fs.lookup(dir, OsStr::new("plain")).await.unwrap().ttl,
        Duration::from_secs(1)
    );
}

/// SEMANTICS: "... and a folder's entries, which it reuses only while the listing they came
/// from is still the one the mount trusts".
#[tokio::test]
async fn the_kernel_reuses_a_folder_s_entries_only_while_their_listing_is_trusted() {
    use cec::fs::DirCaching;
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/dir/a"), b"a");
    api.put_file(&format!("{WS}/.dotdir/a"), b"a");
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.events_cache_time = Duration::from_secs(60);
    let fs = mount(&api, opts).await;
    let dir = resolve(&fs, &format!("{WS}/dir")).await.unwrap();
    let dot = resolve(&fs, &format!("{WS}/.dotdir")).await.unwrap();
    list_names(&fs, dir).await;
    assert_eq!(
        fs.dir_caching(dir),
        DirCaching::None,
        "no events: ask every time"
    );
    fs.set_events_live(true);
    assert_eq!(
        fs.dir_caching(dir),
        DirCaching::Fill,
        "nothing given under events yet"
    );
    list_names(&fs, dir).await;
    assert_eq!(fs.dir_caching(dir), DirCaching::Keep);
    list_names(&fs, dot).await;
    assert_eq!(
        fs.dir_caching(dot),
        DirCaching::None,
        "dot-folders are never announced"
    );
    // A change elsewhere: the kernel's copy must not be reused.
    api.put_file(&format!("{WS}/dir/b"), b"b");
    fs.invalidate(RemoteChange::Created {
        path: format!("{WS}/dir/b"),
    });
    assert_eq!(fs.dir_caching(dir), DirCaching::Fill);
    // The mount lists the folder again without the kernel reading it (a dotfile is looked up
    // in the folder's listing): still not reusable, until the kernel reads the new entries.
    api.reset_calls();
    assert!(fs.lookup(dir, OsStr::new(".missing")).await.is_err());
    assert_eq!(
        api.calls("list_folder_s3"),
        1,
        "the folder was listed again"
    );
    assert_eq!(fs.dir_caching(dir), DirCaching::Fill);
    assert!(list_names(&fs, dir).await.contains(&"b".to_string()));
    assert_eq!(fs.dir_caching(dir), DirCaching::Keep);
    fs.set_events_live(false);
    assert_eq!(fs.dir_caching(dir), DirCaching::None);
}

/// SEMANTICS: "a small file costs one upload request: its Uuid is learnt when asked for".
#[tokio::test]
async fn a_small_upload_costs_one_request_and_the_uuid_comes_when_asked() {
    let api = Arc::new(MemoryCellsApi::default());
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let parent = resolve(&fs, WS).await.unwrap();
    let (entry, open) = fs
        .create(parent, OsStr::new("small"), 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    let ino = entry.attr.ino;
    api.reset_calls();
    fs.write(ino, open.fh, 0, b"hello").await.unwrap();
    fs.flush(ino, open.fh).await.unwrap();
    fs.release(ino, open.fh).await.unwrap();
    assert_eq!(api.calls("put_object"), 1);
    assert_eq!(api.calls("stat"), 0, "no stat after a single-part upload");
    let node = api.node(&format!("{WS}/small")).unwrap();
    let attr = fs.getattr(ino, None).await.unwrap().attr;
    assert_eq!(attr.size, 5);
    assert_eq!(
        fs.getxattr(ino, OsStr::new("user.cells.etag"))
            .await
            .unwrap(),
        node.etag.as_bytes()
    );
    assert_eq!(
        fs.getxattr(ino, OsStr::new("user.cells.uuid"))
            .await
            .unwrap(),
        node.uuid.as_bytes()
    );
}

/// SEMANTICS: "`unlink`/`rmdir` move the node to the workspace recycle bin (recoverable), or
/// delete it permanently with `--permanent-delete` (and always in workspaces configured
/// without a bin)"; a file deleted for good costs one synchronous request, no job.
#[tokio::test]
async fn unlink_uses_the_recycle_job_or_one_permanent_delete() {
    let mut scratch = MemoryWorkspace::new("scratch", true);
    scratch.skip_recycle = true;
    let api = Arc::new(MemoryCellsApi::new(vec![
        MemoryWorkspace::new(WS, true),
        scratch,
    ]));
    api.put_file(&format!("{WS}/kept"), b"x");
    api.put_file("scratch/gone", b"x");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let home = resolve(&fs, WS).await.unwrap();
    let scratch = resolve(&fs, "scratch").await.unwrap();
    resolve(&fs, &format!("{WS}/kept")).await.unwrap();
    resolve(&fs, "scratch/gone").await.unwrap();
    api.reset_calls();
    fs.unlink(home, OsStr::new("kept")).await.unwrap();
    assert_eq!(api.calls("delete_nodes"), 1, "to the recycle bin, by job");
    assert_eq!(api.calls("delete_object"), 0);
    assert!(
        api.paths()
            .iter()
            .any(|p| p.starts_with(&format!("{WS}/recycle_bin/kept")))
    );
    api.reset_calls();
    fs.unlink(scratch, OsStr::new("gone")).await.unwrap();
    assert_eq!(api.calls("delete_object"), 1, "no bin here: one DELETE");
    assert_eq!(api.calls("delete_nodes"), 0);
    assert_eq!(api.node("scratch/gone"), None);
    assert_eq!(
        resolve(&fs, "scratch/gone").await.unwrap_err(),
        libc::ENOENT
    );
}

/// SEMANTICS: "`mkdir` of a name that exists fails with `EEXIST`, even if another client made
/// it a moment before": the server (like Cells v4) accepts creating an existing folder, so the
/// mount cannot count on a refusal; its listing, fresh in the cache, does not know the folder.
#[tokio::test]
async fn mkdir_of_a_folder_made_elsewhere_meanwhile_is_eexist() {
    let api = Arc::new(MemoryCellsApi::default());
    api.put_file(&format!("{WS}/known"), b"k");
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let ws = resolve(&fs, WS).await.unwrap();
    assert!(!list_names(&fs, ws).await.contains(&"elsewhere".to_string()));
    api.create_folders(&[format!("{WS}/elsewhere")])
        .await
        .unwrap();
    assert_eq!(
        fs.mkdir(ws, OsStr::new("elsewhere"), 0o755)
            .await
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    // A name the mount knows, file or folder, without asking.
    fs.mkdir(ws, OsStr::new("mine"), 0o755).await.unwrap();
    for name in ["mine", "known"] {
        assert_eq!(
            fs.mkdir(ws, OsStr::new(name), 0o755)
                .await
                .unwrap_err()
                .errno(),
            libc::EEXIST,
            "{name}"
        );
    }
}

/// Requests the metadata paths sent: stats and listings (REST and gateway) and HEADs.
fn metadata_requests(api: &MemoryCellsApi) -> u64 {
    api.calls("stat")
        + api.calls("list_folder")
        + api.calls("list_folder_s3")
        + api.calls("head_object")
}

/// SEMANTICS: "a second lookup in a folder not listed yet lists it: one listing answers
/// every sibling and every absent name" (issue 30: 100 missing names cost 100 stats).
#[tokio::test]
async fn missing_names_in_a_folder_not_listed_cost_one_listing() {
    let api = Arc::new(MemoryCellsApi::default());
    for i in 0..10 {
        api.put_file(&format!("{WS}/dir/f{i}"), b"x");
    }
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    let dir = resolve(&fs, &format!("{WS}/dir")).await.unwrap();
    api.reset_calls();
    for i in 0..100 {
        let err = fs.lookup(dir, OsStr::new(&format!("missing{i}"))).await;
        assert_eq!(err.map(|_| ()).map_err(|e| e.errno()), Err(libc::ENOENT));
    }
    // Dot-names too: the gateway's listing, fetched with the REST one, shows dotfiles.
    for i in 0..20 {
        let err = fs.lookup(dir, OsStr::new(&format!(".missing{i}"))).await;
        assert_eq!(err.map(|_| ()).map_err(|e| e.errno()), Err(libc::ENOENT));
    }
    let sent = metadata_requests(&api);
    assert!(
        sent <= 3,
        "120 absent names in a folder not listed yet: {sent} requests (stat {}, list {}, s3 list {})",
        api.calls("stat"),
        api.calls("list_folder"),
        api.calls("list_folder_s3")
    );
    // A lone lookup in another folder asks about its one name only.
    api.put_file(&format!("{WS}/other/big"), b"y");
    let other = resolve(&fs, &format!("{WS}/other")).await.unwrap();
    api.reset_calls();
    fs.lookup(other, OsStr::new("big")).await.unwrap();
    assert_eq!(api.calls("list_folder"), 0, "one name: no listing");
    assert!(api.calls("stat") <= 1);
}

/// SEMANTICS: reading files by name in a folder not listed yet costs about one GET each: the
/// listing fetched at the second lookup answers the other names (issue 30: 200 `cat`s cost
/// 200 stats and 200 GETs).
#[tokio::test]
async fn reading_files_by_name_costs_about_one_get_each() {
    let api = Arc::new(MemoryCellsApi::default());
    for i in 0..200 {
        api.put_file(&format!("{WS}/small/f{i:03}"), &pattern(1024));
    }
    let cache = tempfile::tempdir().unwrap();
    let fs = mount(&api, options(cache.path())).await;
    resolve(&fs, &format!("{WS}/small")).await.unwrap();
    api.reset_calls();
    for i in 0..200 {
        let got = read_all(&fs, &format!("{WS}/small/f{i:03}"), 128 * 1024).await;
        assert_eq!(got.len(), 1024);
    }
    let gets = api.calls("get_object");
    let meta = metadata_requests(&api);
    assert!(gets <= 200, "{gets} GETs for 200 files");
    assert!(
        meta <= 3,
        "200 files read by name: {meta} metadata requests (stat {}, list {}, head {})",
        api.calls("stat"),
        api.calls("list_folder"),
        api.calls("head_object")
    );
}
