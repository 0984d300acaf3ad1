//! Fault injection over real HTTP: latency, failing the next N matching requests, cutting a
//! response body (a dropped connection, not a clean end), stalling a request (a paused
//! server) until the rules are cleared, expiring every token, dropping and
//! silently unsubscribing websockets, clearing rules, and the control endpoint being absent
//! unless faults are enabled. Both the JSON control API and the Rust helpers are exercised.

#[path = "common/s3_client.rs"]
mod s3_client;

use std::time::{Duration, Instant};

use cells_emu::auth::PatExpiry;
use cells_emu::faults::RequestMatch;
use cells_emu::{EmuConfig, RunningEmulator};
use futures::{SinkExt, StreamExt};
use s3_client::{S3Client, error_code};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn start_with(faults: bool) -> (RunningEmulator, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EmuConfig::for_tests(dir.path());
    config.faults = faults;
    let emu = cells_emu::start(config).await.expect("start emulator");
    let token = emu
        .state
        .auth
        .mint_pat("alice", PatExpiry::Fixed(Duration::from_secs(3600)))
        .expect("mint PAT");
    (emu, dir, token)
}

async fn control(emu: &RunningEmulator, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/_faults/{path}", emu.url))
        .json(&body)
        .send()
        .await
        .expect("control request")
}

#[tokio::test]
async fn latency_applies_to_matching_requests_until_cleared() {
    let (emu, _dir, token) = start_with(true).await;
    let s3 = S3Client::new(&emu.url, &token);
    assert_eq!(s3.put("personal-files/slow.txt", b"s").await.status(), 200);

    let r = control(
        &emu,
        "latency",
        json!({"method": "GET", "path_prefix": "/io/", "millis": 400}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    assert_eq!(s3.get("personal-files/slow.txt", &[]).await.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // Not matching: another method.
    let t = Instant::now();
    assert_eq!(s3.head("personal-files/slow.txt").await.status(), 200);
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );

    let rules: Value = reqwest::get(format!("{}/_faults", emu.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules.as_array().map(Vec::len), Some(1), "{rules}");
    assert_eq!(control(&emu, "clear", json!({})).await.status(), 204);
    let t = Instant::now();
    assert_eq!(s3.get("personal-files/slow.txt", &[]).await.status(), 200);
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    emu.stop().await;
}

#[tokio::test]
async fn fail_next_n_requests() {
    let (emu, _dir, token) = start_with(true).await;
    let s3 = S3Client::new(&emu.url, &token);
    assert_eq!(s3.put("personal-files/f.txt", b"f").await.status(), 200);

    // Rust helper: the next two S3 GETs fail with 503 (an S3 XML error).
    emu.state
        .faults
        .fail_next(RequestMatch::new(Some("GET"), "/io/"), 503, 2);
    for _ in 0..2 {
        let r = s3.get("personal-files/f.txt", &[]).await;
        assert_eq!(r.status(), 503);
        assert_eq!(error_code(&r.text().await.unwrap()), "ServiceUnavailable");
    }
    assert_eq!(s3.get("personal-files/f.txt", &[]).await.status(), 200);
    assert!(emu.state.faults.rules().is_empty(), "spent rules disappear");

    // JSON API on REST: one 500 with a restError body, then normal service.
    let r = control(
        &emu,
        "fail",
        json!({"path_prefix": "/a/frontend/bootconf", "status": 500, "count": 1}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{}/a/frontend/bootconf", emu.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert!(body.get("Title").is_some(), "{body}");
    let r = reqwest::get(format!("{}/a/frontend/bootconf", emu.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Non-matching requests were never affected.
    emu.state
        .faults
        .fail_next(RequestMatch::new(Some("PUT"), "/io/"), 500, 1);
    assert_eq!(s3.get("personal-files/f.txt", &[]).await.status(), 200);
    assert_eq!(s3.put("personal-files/f.txt", b"g").await.status(), 500);
    assert_eq!(s3.put("personal-files/f.txt", b"g").await.status(), 200);
    emu.stop().await;
}

#[tokio::test]
async fn cut_body_drops_the_connection() {
    let (emu, _dir, token) = start_with(true).await;
    let s3 = S3Client::new(&emu.url, &token);
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(s3.put("personal-files/cut.bin", &body).await.status(), 200);

    emu.state.faults.cut_body_after(
        RequestMatch::new(Some("GET"), "/io/personal-files/cut"),
        1000,
        1,
    );
    let r = s3.get("personal-files/cut.bin", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "200000");
    let mut received = 0usize;
    let mut stream = r.bytes_stream();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => received += c.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must end with an error, not cleanly");
    assert_eq!(received, 1000);

    // Spent: the next read is whole. Same through the JSON API on a ranged read.
    let r = s3.get("personal-files/cut.bin", &[]).await;
    assert_eq!(r.bytes().await.unwrap().len(), body.len());
    let r = control(
        &emu,
        "cut",
        json!({"method": "GET", "path_prefix": "/io/", "after_bytes": 10}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = s3
        .get("personal-files/cut.bin", &[("range", "bytes=0-99")])
        .await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.is_err());
    emu.stop().await;
}

#[tokio::test]
async fn expire_tokens_and_websocket_faults() {
    let (emu, _dir, token) = start_with(true).await;
    emu.state
        .events
        .set_ping_interval(Duration::from_millis(100));
    let s3 = S3Client::new(&emu.url, &token);
    let url = format!("ws://{}/ws/event", emu.addr);

    // Silent unsubscribe: the socket stays open (pings flow), events stop.
    let (mut quiet, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    quiet
        .send(Message::Text(
            json!({"@type": "subscribe", "jwt": token})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    while emu.state.events.subscribed_count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = control(&emu, "unsubscribe-websockets", json!({})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["unsubscribed"], 1);
    assert_eq!(
        s3.put("personal-files/unheard.txt", b"u").await.status(),
        200
    );
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_millis(700);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), quiet.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(other))) => panic!("no event expected after unsubscribe: {other:?}"),
            Ok(other) => panic!("socket should stay open: {other:?}"),
            Err(_) => {}
        }
    }
    assert!(pings >= 2, "pings keep flowing ({pings})");

    // Drop: the connection ends with no close frame.
    let (mut dropped, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    dropped
        .send(Message::Text(
            json!({"@type": "subscribe", "jwt": token})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    while emu.state.events.subscribed_count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n = emu.state.drop_websockets();
    assert_eq!(n, 2, "both sockets dropped");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match dropped.next().await {
                Some(Ok(Message::Ping(_))) => continue,
                Some(Ok(Message::Close(frame))) => panic!("a close frame was sent: {frame:?}"),
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                None | Some(Err(_)) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "socket not dropped");
    while emu.state.events.session_count() != 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Expire every token: S3 refuses, a new subscription is closed.
    assert_eq!(
        control(&emu, "expire-tokens", json!({})).await.status(),
        204
    );
    let r = s3.get("personal-files/unheard.txt", &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&r.text().await.unwrap()), "AccessDenied");
    let (mut again, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    again
        .send(Message::Text(
            json!({"@type": "subscribe", "jwt": token})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match again.next().await {
                Some(Ok(Message::Ping(_))) => continue,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(other)) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "subscribe with an expired token must close the socket"
    );
    emu.stop().await;
}

#[tokio::test]
async fn stall_answers_nothing_until_cleared() {
    let (emu, _dir, token) = start_with(true).await;
    let s3 = S3Client::new(&emu.url, &token);
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        s3.put("personal-files/stall.bin", &body).await.status(),
        200
    );

    // Before the headers: nothing comes back while the rule is installed.
    emu.state.faults.stall(
        RequestMatch::new(Some("HEAD"), "/io/personal-files/stall"),
        None,
        None,
    );
    let waiting = tokio::time::timeout(
        Duration::from_millis(500),
        s3.head("personal-files/stall.bin"),
    )
    .await;
    assert!(waiting.is_err(), "a stalled request must not be answered");
    // Cleared: a stalled request goes on and is answered as usual.
    let pending = tokio::spawn({
        let s3 = S3Client::new(&emu.url, &token);
        async move { s3.head("personal-files/stall.bin").await.status() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    emu.state.faults.clear();
    let status = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("released after clear")
        .unwrap();
    assert_eq!(status, 200);

    // Mid-body, through the JSON API: the headers and 1,000 bytes in all, then silence.
    let r = control(
        &emu,
        "stall",
        json!({"method": "GET", "path_prefix": "/io/", "after_bytes": 1000}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = s3.get("personal-files/stall.bin", &[]).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk.unwrap()),
            Ok(None) => panic!("the stalled body ended"),
            Err(_) => break,
        }
    }
    assert_eq!(received.len(), 1000);
    // The rule's 1,000 bytes are spent: another request gets nothing at all.
    let other = tokio::time::timeout(
        Duration::from_millis(500),
        s3.get("personal-files/stall.bin", &[("range", "bytes=0-9")]),
    )
    .await;
    assert!(other.is_err(), "a paused server sends no headers either");
    assert_eq!(control(&emu, "clear", json!({})).await.status(), 204);
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("released after clear")
    {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received, body, "the whole body once released, in order");
    emu.stop().await;
}

#[tokio::test]
async fn no_control_endpoint_without_faults() {
    let (emu, _dir, token) = start_with(false).await;
    let r = control(&emu, "fail", json!({"status": 500, "count": 5})).await;
    assert_eq!(r.status(), 404);
    // Rules installed through the Rust API are not honoured either.
    emu.state
        .faults
        .fail_next(RequestMatch::new(None, "/io/"), 500, 5);
    let s3 = S3Client::new(&emu.url, &token);
    assert_eq!(s3.put("personal-files/n.txt", b"n").await.status(), 200);
    emu.stop().await;
}

#[tokio::test]
async fn drop_next_events() {
    let (emu, _dir, token) = start_with(true).await;
    emu.state.events.set_merge_window(Duration::ZERO);
    let s3 = S3Client::new(&emu.url, &token);
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/event", emu.addr))
        .await
        .unwrap();
    socket
        .send(Message::Text(
            json!({"@type": "subscribe", "jwt": token})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    while emu.state.events.subscribed_count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An upload makes two events here (temporary node, then content): lose both.
    assert_eq!(
        control(&emu, "drop-events", json!({"count": 2}))
            .await
            .status(),
        204
    );
    assert_eq!(s3.put("personal-files/lost.txt", b"l").await.status(), 200);
    assert_eq!(s3.put("personal-files/kept.txt", b"k").await.status(), 200);
    let frame = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an event")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = msg {
            break serde_json::from_str::<Value>(t.as_str()).unwrap();
        }
    };
    assert_eq!(
        frame["Target"]["Path"], "personal-files/kept.txt",
        "{frame}"
    );
    emu.stop().await;
}
