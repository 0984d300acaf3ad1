//! `HttpCellsApi` against cells-emu over real HTTP: every `CellsApi` call, paging, jobs,
//! the S3 gateway (single and multipart uploads, ranged reads, copy, delete, dotfile
//! listing), retries on injected faults, one refresh on 401, typed errors.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cec::api::http::{HttpCellsApi, HttpOptions};
use cec::api::{ApiError, ByteRange, CellsApi, MIB, S3Entry, UploadOptions};
use cec::auth::TokenSource;
use cells_emu::faults::RequestMatch;
use common::*;
use futures::TryStreamExt;

async fn read_all(api: &HttpCellsApi, path: &str, range: Option<ByteRange>) -> Vec<u8> {
    let stream = api.get_object(path, range).await.expect("get_object");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("body");
    chunks.concat()
}

fn temp_file_with(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    f.flush().unwrap();
    f
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn workspaces_folders_stat_and_paging() {
    let server = spawn_emulator().await;
    let api = api_with_token(&server, &mint_pat(&server, "alice"));

    let workspaces = api.list_workspaces().await.unwrap();
    let personal = workspaces
        .iter()
        .find(|w| w.slug == "personal-files")
        .expect("personal-files is listed");
    assert!(personal.can_read && personal.can_write);
    assert!(personal.root.is_folder());
    assert!(!personal.scope.is_empty());

    let created = api
        .create_folders(&["personal-files/paging".to_string()])
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert!(created[0].is_folder());

    // 1,100 children: two REST pages of 1,000; the gateway listing sees them all (without
    // max-keys it stops at 1,000 nodes).
    let names: Vec<String> = (0..1100)
        .map(|i| format!("personal-files/paging/d{i:04}"))
        .collect();
    for chunk in names.chunks(100) {
        api.create_folders(chunk).await.unwrap();
    }
    let listed = api.list_folder("personal-files/paging").await.unwrap();
    assert_eq!(listed.len(), 1100, "all pages are read");
    let mut got: Vec<String> = listed.iter().map(|n| n.path.clone()).collect();
    got.sort();
    assert_eq!(got, names);
    assert!(listed.iter().all(|n| n.is_folder() && !n.uuid.is_empty()));
    let gateway = api.list_folder_s3("personal-files/paging").await.unwrap();
    let folders = gateway
        .iter()
        .filter(|e| matches!(e, S3Entry::Folder(f) if f.starts_with("personal-files/paging/d")))
        .count();
    assert_eq!(folders, 1100, "the gateway listing is not cut at 1,000");
    // Dotfiles count in the server's paging but are not listed: its first page then reads
    // on and overlaps the second (fetched at once, the count being known). Nothing is listed
    // twice, nothing is missed.
    let dots: Vec<String> = (0..5)
        .map(|i| format!("personal-files/paging/.h{i}"))
        .collect();
    api.create_folders(&dots).await.unwrap();
    let relisted = api.list_folder("personal-files/paging").await.unwrap();
    let mut again: Vec<String> = relisted.iter().map(|n| n.path.clone()).collect();
    again.sort();
    assert_eq!(again, names);

    let st = api
        .stat("personal-files/paging/d0007")
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(st.name(), "d0007");
    assert!(api.stat("personal-files/nope").await.unwrap().is_none());
    match api.list_folder("personal-files/nope").await {
        Err(ApiError::NotFound(m)) => assert!(m.contains("personal-files/nope"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // The virtual root lists the workspaces.
    let root = api.list_folder("").await.unwrap();
    assert!(root.iter().any(|n| n.path == "personal-files"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_single_put_ranged_get_head_copy_delete_and_dotfiles() {
    let server = spawn_emulator().await;
    let api = api_with_token(&server, &mint_pat(&server, "alice"));
    let data = pattern(300_000);
    let src = temp_file_with(&data);
    let etag = api
        .put_object_from_file(
            "personal-files/dir one/é file.bin",
            src.path(),
            data.len() as u64,
            &UploadOptions::default(),
        )
        .await
        .unwrap();
    assert!(!etag.is_empty());

    let head = api
        .head_object("personal-files/dir one/é file.bin")
        .await
        .unwrap();
    assert_eq!(head.size, data.len() as u64);
    assert!(head.mtime > 0);

    assert_eq!(
        read_all(&api, "personal-files/dir one/é file.bin", None).await,
        data
    );
    let part = read_all(
        &api,
        "personal-files/dir one/é file.bin",
        Some(ByteRange {
            offset: 1000,
            len: Some(5000),
        }),
    )
    .await;
    assert_eq!(part, &data[1000..6000]);
    let tail = read_all(
        &api,
        "personal-files/dir one/é file.bin",
        Some(ByteRange {
            offset: 299_990,
            len: None,
        }),
    )
    .await;
    assert_eq!(tail, &data[299_990..]);

    // REST sees the uploaded file and its parent folder was created.
    let node = api
        .stat("personal-files/dir one/é file.bin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node.size, data.len() as u64);
    assert!(!node.is_folder());

    // Empty file.
    let empty = temp_file_with(b"");
    api.put_object_from_file(
        "personal-files/empty.txt",
        empty.path(),
        0,
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        api.head_object("personal-files/empty.txt")
            .await
            .unwrap()
            .size,
        0
    );

    // Server-side copy, then delete through the gateway.
    api.copy_object(
        "personal-files/dir one/é file.bin",
        "personal-files/copy.bin",
    )
    .await
    .unwrap();
    assert_eq!(read_all(&api, "personal-files/copy.bin", None).await, data);
    api.delete_object("personal-files/copy.bin").await.unwrap();
    assert!(api.stat("personal-files/copy.bin").await.unwrap().is_none());
    match api.head_object("personal-files/copy.bin").await {
        Err(ApiError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }

    // Dotfiles: hidden from REST, visible through the S3 listing.
    let dot = temp_file_with(b"secret-ish");
    api.put_object_from_file(
        "personal-files/dir one/.hidden",
        dot.path(),
        10,
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    let rest: Vec<String> = api
        .list_folder("personal-files/dir one")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name().to_string())
        .collect();
    assert!(!rest.contains(&".hidden".to_string()), "{rest:?}");
    let s3 = api.list_folder_s3("personal-files/dir one").await.unwrap();
    assert!(
        s3.iter().any(|e| matches!(e, S3Entry::Object(o) if o.path == "personal-files/dir one/.hidden" && o.size == 10)),
        "{s3:?}"
    );
    assert!(
        api.list_folder_s3("personal-files/missing")
            .await
            .unwrap()
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_upload_whose_file_is_shorter_than_announced_fails_and_creates_nothing() {
    let server = spawn_emulator().await;
    let api = api_with_token(&server, &mint_pat(&server, "alice"));
    let src = temp_file_with(b"only ten b");
    match api
        .put_object_from_file(
            "personal-files/short.txt",
            src.path(),
            20,
            &UploadOptions::default(),
        )
        .await
    {
        Err(ApiError::Local(m)) => assert!(m.contains(&src.path().display().to_string()), "{m}"),
        other => panic!("expected a local error naming the file, got {other:?}"),
    }
    let gone = src.path().with_extension("missing");
    match api
        .put_object_from_file(
            "personal-files/short.txt",
            &gone,
            5,
            &UploadOptions::default(),
        )
        .await
    {
        Err(ApiError::Local(m)) => assert!(m.contains("cannot read"), "{m}"),
        other => panic!("expected a local error, got {other:?}"),
    }
    assert!(
        api.stat("personal-files/short.txt")
            .await
            .unwrap()
            .is_none()
    );
    // Announced as its true size, the same file goes up whole.
    api.put_object_from_file(
        "personal-files/short.txt",
        src.path(),
        10,
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        read_all(&api, "personal-files/short.txt", None).await,
        b"only ten b"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_upload_in_parallel_parts() {
    let server = spawn_emulator().await;
    let api = api_with_token(&server, &mint_pat(&server, "alice"));
    let len = 25 * MIB as usize + 12345;
    let data = pattern(len);
    let src = temp_file_with(&data);
    let options = UploadOptions {
        multipart_threshold: 5 * MIB,
        part_size: 10 * MIB,
        parts_concurrency: 3,
        ..UploadOptions::default()
    };
    api.put_object_from_file("personal-files/big.bin", src.path(), len as u64, &options)
        .await
        .unwrap();
    let head = api.head_object("personal-files/big.bin").await.unwrap();
    assert_eq!(head.size, len as u64);
    let middle = read_all(
        &api,
        "personal-files/big.bin",
        Some(ByteRange {
            offset: 10 * MIB - 10,
            len: Some(20),
        }),
    )
    .await;
    assert_eq!(
        middle,
        &data[(10 * MIB - 10) as usize..(10 * MIB + 10) as usize]
    );
    assert_eq!(read_all(&api, "personal-files/big.bin", None).await, data);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn move_copy_delete_restore_wait_for_their_jobs() {
    let server = spawn_emulator_with(|c| c.job_delay = Duration::from_millis(400)).await;
    let api = api_with_token(&server, &mint_pat(&server, "alice"));
    let f = temp_file_with(b"hello");
    api.create_folders(&["personal-files/a".into(), "personal-files/b".into()])
        .await
        .unwrap();
    api.put_object_from_file(
        "personal-files/a/x.txt",
        f.path(),
        5,
        &UploadOptions::default(),
    )
    .await
    .unwrap();

    // Rename: returns only once the job is done.
    api.move_nodes(
        &["personal-files/a/x.txt".into()],
        "personal-files/a/y.txt",
        false,
    )
    .await
    .unwrap();
    assert!(api.stat("personal-files/a/x.txt").await.unwrap().is_none());
    assert!(api.stat("personal-files/a/y.txt").await.unwrap().is_some());

    // Move into a folder.
    api.move_nodes(&["personal-files/a/y.txt".into()], "personal-files/b", true)
        .await
        .unwrap();
    assert!(api.stat("personal-files/b/y.txt").await.unwrap().is_some());

    // Copy.
    api.copy_nodes(
        &["personal-files/b/y.txt".into()],
        "personal-files/a/z.txt",
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        read_all(&api, "personal-files/a/z.txt", None).await,
        b"hello"
    );

    // Delete to the recycle bin, then restore.
    api.delete_nodes(&["personal-files/a/z.txt".into()], false)
        .await
        .unwrap();
    assert!(api.stat("personal-files/a/z.txt").await.unwrap().is_none());
    let bin = api.list_folder("personal-files/recycle_bin").await.unwrap();
    assert!(bin.iter().any(|n| n.name() == "z.txt"), "{bin:?}");
    api.restore_nodes(&["personal-files/recycle_bin/z.txt".into()])
        .await
        .unwrap();
    assert!(api.stat("personal-files/a/z.txt").await.unwrap().is_some());

    // Permanent delete.
    api.delete_nodes(&["personal-files/a/z.txt".into()], true)
        .await
        .unwrap();
    assert!(api.stat("personal-files/a/z.txt").await.unwrap().is_none());
    let bin = api.list_folder("personal-files/recycle_bin").await.unwrap();
    assert!(!bin.iter().any(|n| n.name() == "z.txt"));

    // Deleting something missing is a typed error.
    match api
        .delete_nodes(&["personal-files/none".into()], false)
        .await
    {
        Err(ApiError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_and_4xx_are_not() {
    let server = spawn_emulator().await;
    let api = api_with_token(&server, &mint_pat(&server, "alice"));
    let faults = server.state().faults.clone();

    // Two 503 then success on the listing; two 502 on a GET of the gateway.
    faults.fail_next(RequestMatch::new(Some("POST"), "/a/meta/bulk/get"), 503, 2);
    assert!(api.list_workspaces().await.is_ok());
    let f = temp_file_with(b"abc");
    api.put_object_from_file(
        "personal-files/r.txt",
        f.path(),
        3,
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    faults.fail_next(RequestMatch::new(Some("GET"), "/io/"), 502, 2);
    assert_eq!(read_all(&api, "personal-files/r.txt", None).await, b"abc");
    faults.fail_next(RequestMatch::new(Some("GET"), "/a/tree/stat"), 429, 1);
    assert!(api.stat("personal-files/r.txt").await.unwrap().is_some());

    // A 403 is not retried: exactly one rule consumed, error typed.
    faults.fail_next(RequestMatch::new(Some("GET"), "/a/tree/stat"), 403, 3);
    match api.stat("personal-files/r.txt").await {
        Err(ApiError::Forbidden(_)) => {}
        other => panic!("expected Forbidden, got {other:?}"),
    }
    let left: u64 = faults
        .rules()
        .iter()
        .map(|r| r.remaining.unwrap_or(0))
        .sum();
    assert_eq!(left, 2, "a 4xx must not be retried");
    faults.clear();

    // Persistent 503: gives up with a Server error after the retries.
    faults.fail_next(RequestMatch::new(Some("GET"), "/a/tree/stat"), 503, 100);
    let options = HttpOptions {
        max_retries: 2,
        ..fast_options()
    };
    let tokens = Arc::new(cec::auth::StaticToken::new(mint_pat(&server, "alice"), "x"));
    let api2 = HttpCellsApi::new(&server.url, tokens, options).unwrap();
    match api2.stat("personal-files/r.txt").await {
        Err(ApiError::Server { status: 503, .. }) => {}
        other => panic!("expected Server 503, got {other:?}"),
    }
    server.stop().await;
}

/// A token source whose first token is refused, counting refreshes.
struct RotatingSource {
    good: String,
    refreshes: AtomicUsize,
    tx: tokio::sync::watch::Sender<u64>,
}

#[async_trait]
impl TokenSource for RotatingSource {
    async fn token(&self) -> Result<String, ApiError> {
        if self.refreshes.load(Ordering::SeqCst) == 0 {
            Ok("not-a-valid-token".into())
        } else {
            Ok(self.good.clone())
        }
    }
    async fn refresh_after_unauthorized(&self, _rejected: &str) -> Result<String, ApiError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        Ok(self.good.clone())
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_refreshes_once_for_rest_and_s3() {
    let server = spawn_emulator().await;
    let pat = mint_pat(&server, "alice");
    let source = Arc::new(RotatingSource {
        good: pat.clone(),
        refreshes: AtomicUsize::new(0),
        tx: tokio::sync::watch::channel(0).0,
    });
    let api = HttpCellsApi::new(&server.url, source.clone(), fast_options()).unwrap();
    assert!(api.list_workspaces().await.is_ok());
    assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);

    // S3: a refused access key also triggers one refresh.
    let source2 = Arc::new(RotatingSource {
        good: pat.clone(),
        refreshes: AtomicUsize::new(0),
        tx: tokio::sync::watch::channel(0).0,
    });
    let api2 = HttpCellsApi::new(&server.url, source2.clone(), fast_options()).unwrap();
    let f = temp_file_with(b"xyz");
    api2.put_object_from_file(
        "personal-files/s3auth.txt",
        f.path(),
        3,
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(source2.refreshes.load(Ordering::SeqCst), 1);

    // A static token refused by the server: one clear Auth error, no loop.
    let bad = api_with_token(
        &server,
        "d-_-x3N8jg9VYegwf5KpKFTlYnQIzCrvbXHzS24uB7k.mibFBN2bGy3TUVzJvcrnUlI9UuM3-kzB1OekrPLLd4U",
    );
    match bad.list_workspaces().await {
        Err(ApiError::Auth(m)) => {
            assert!(m.contains("refused"), "{m}");
            assert!(!m.contains("x3N8jg9V"), "no token in errors: {m}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_server_is_a_network_error_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let tokens = Arc::new(cec::auth::StaticToken::new("t", "x"));
    let api = HttpCellsApi::new(
        &format!("http://127.0.0.1:{port}"),
        tokens,
        HttpOptions {
            max_retries: 2,
            ..fast_options()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    match api.list_workspaces().await {
        Err(ApiError::Network(m)) => assert!(m.to_lowercase().contains("refused"), "{m}"),
        other => panic!("expected Network, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_upload_announces_its_size_while_in_flight() {
    let server = spawn_emulator().await;
    let api = api_with_token(&server, &mint_pat(&server, "alice"));
    let len = 21 * MIB as usize;
    let data = pattern(len);
    let src = temp_file_with(&data);
    // Slow parts, so that the upload is observable while in flight.
    server.state().faults.add_latency(
        RequestMatch::new(Some("PUT"), "/io/"),
        Duration::from_millis(800),
        None,
    );
    let options = UploadOptions {
        multipart_threshold: 5 * MIB,
        part_size: 10 * MIB,
        parts_concurrency: 1,
        ..UploadOptions::default()
    };
    let upload = {
        let api = api.clone();
        let path = src.path().to_path_buf();
        tokio::spawn(async move {
            api.put_object_from_file("personal-files/inflight.bin", &path, len as u64, &options)
                .await
        })
    };
    let mut seen_temporary = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(n) = api.stat("personal-files/inflight.bin").await.unwrap()
            && n.is_temporary()
        {
            assert_eq!(
                n.size, len as u64,
                "X-Amz-Meta-Pydio-Clear-Size announced the size"
            );
            seen_temporary = true;
            break;
        }
    }
    assert!(seen_temporary, "the in-flight node is visible as temporary");
    upload.await.unwrap().expect("upload completes");
    server.state().faults.clear();
    let done = api
        .stat("personal-files/inflight.bin")
        .await
        .unwrap()
        .unwrap();
    assert!(!done.is_temporary());
    assert_eq!(done.size, len as u64);
}

/// The primitives the mount streams with: an upload started before the size is known, parts
/// sent from a local file, then completed (the object is the parts in order) or aborted
/// (nothing stays: no object, no temporary node, no pending upload).
#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_upload_streamed_part_by_part_completes_or_aborts_cleanly() {
    let server = spawn_emulator().await;
    let api = api_with_token(&server, &mint_pat(&server, "alice"));
    let data = pattern(12 * MIB as usize + 777);
    let src = temp_file_with(&data);
    let options = UploadOptions::default();
    let key = "personal-files/streamed.bin";
    let id = api.create_multipart(key, &options).await.unwrap();
    let during = api.stat(key).await.unwrap().expect("a temporary node");
    assert!(during.is_temporary());
    let second = api
        .upload_part(key, &id, 2, src.path(), 6 * MIB, 6 * MIB + 777)
        .await
        .unwrap();
    let first = api
        .upload_part(key, &id, 1, src.path(), 0, 6 * MIB)
        .await
        .unwrap();
    let etag = api
        .complete_multipart(key, &id, &[(1, first), (2, second)])
        .await
        .unwrap();
    assert!(etag.ends_with("-2"), "a multipart ETag: {etag}");
    assert_eq!(read_all(&api, key, None).await, data);
    let done = api.stat(key).await.unwrap().unwrap();
    assert!(!done.is_temporary());
    assert_eq!(done.size, data.len() as u64);

    let dropped = "personal-files/dropped.bin";
    let id = api.create_multipart(dropped, &options).await.unwrap();
    api.upload_part(dropped, &id, 1, src.path(), 0, 6 * MIB)
        .await
        .unwrap();
    api.abort_multipart(dropped, &id).await.unwrap();
    assert!(api.stat(dropped).await.unwrap().is_none());
    assert!(
        api.complete_multipart(dropped, &id, &[(1, "x".into())])
            .await
            .is_err()
    );
    server.stop().await;
}
