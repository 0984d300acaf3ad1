//! `/ws/event` over real websockets on loopback: subscribe, per-workspace tree-event frames
//! and their encoding, UPDATE_PATH rewrites across workspaces, dotfiles, rights, unsubscribe,
//! auth failures closing the socket, the frame size limit, pings, and task frames.

#[path = "common/s3_client.rs"]
mod s3_client;

use std::time::Duration;

use cells_emu::auth::PatExpiry;
use cells_emu::{EmuConfig, RunningEmulator};
use futures::{SinkExt, StreamExt};
use s3_client::S3Client;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

async fn start() -> (RunningEmulator, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = cells_emu::start(EmuConfig::for_tests(dir.path()))
        .await
        .expect("start emulator");
    (emu, dir)
}

fn pat(emu: &RunningEmulator, login: &str) -> String {
    emu.state
        .auth
        .mint_pat(login, PatExpiry::Fixed(Duration::from_secs(3600)))
        .expect("mint PAT")
}

async fn connect(emu: &RunningEmulator) -> Socket {
    let url = format!("ws://{}/ws/event", emu.addr);
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    socket
}

async fn subscribe(emu: &RunningEmulator, token: &str) -> Socket {
    let mut socket = connect(emu).await;
    socket
        .send(Message::Text(
            json!({"@type": "subscribe", "jwt": token})
                .to_string()
                .into(),
        ))
        .await
        .expect("send subscribe");
    // The server answers nothing; wait until it registered the subscription.
    let deadline = tokio::time::Instant::now() + WAIT;
    while emu.state.events.subscribed_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscription never registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    socket
}

/// The next text frame as JSON (pings skipped). Panics on timeout or close.
async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("socket ended")
            .expect("socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// The event frames of the next broadcast (everything up to the next `"dump"`).
async fn next_event(socket: &mut Socket) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(socket).await;
        if frame == json!("dump") {
            assert!(!frames.is_empty(), "a dump with no event before it");
            return frames;
        }
        frames.push(frame);
    }
}

/// Broadcasts until one has a frame about `path` (as Target or Source); returns its frames.
async fn event_about(socket: &mut Socket, path: &str) -> Vec<Value> {
    loop {
        let frames = next_event(socket).await;
        let about = |f: &Value| {
            f.pointer("/Target/Path").and_then(Value::as_str) == Some(path)
                || f.pointer("/Source/Path").and_then(Value::as_str) == Some(path)
        };
        if frames.iter().any(about) {
            return frames;
        }
    }
}

fn ws_uuid(emu: &RunningEmulator, login: &str, slug: &str) -> String {
    emu.state
        .store
        .workspaces(login)
        .into_iter()
        .find(|w| w.slug == slug)
        .expect("workspace")
        .uuid
}

fn event_ws(frame: &Value, node: &str) -> String {
    let raw = frame
        .pointer(&format!("/{node}/MetaStore/EventWorkspaceId"))
        .and_then(Value::as_str)
        .expect("EventWorkspaceId");
    serde_json::from_str::<String>(raw).expect("EventWorkspaceId is JSON-encoded")
}

async fn assert_closed(socket: &mut Socket) {
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("expected the socket to close, got {other:?}"),
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the socket was not closed");
}

#[tokio::test]
async fn create_update_and_delete_frames() {
    let (emu, _dir) = start().await;
    let token = pat(&emu, "alice");
    let mut socket = subscribe(&emu, &token).await;
    let personal = ws_uuid(&emu, "alice", "personal-files");

    let store = emu.state.store.clone();
    tokio::task::spawn_blocking(move || store.create_folders("alice", "personal-files/ev"))
        .await
        .unwrap()
        .expect("mkdir");
    let frames = event_about(&mut socket, "personal-files/ev").await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    let f = &frames[0];
    assert!(f.get("Type").is_none(), "CREATE has no Type: {f}");
    assert!(f.get("Source").is_none());
    assert_eq!(f["Target"]["Type"], "COLLECTION");
    assert_eq!(event_ws(f, "Target"), personal);
    assert!(f["Target"]["Uuid"].as_str().is_some_and(|u| !u.is_empty()));

    // An upload: CREATE (possibly still "temporary"), then the content.
    let s3 = S3Client::new(&emu.url, &token);
    assert_eq!(
        s3.put("personal-files/ev/a.txt", b"twelve bytes")
            .await
            .status(),
        200
    );
    let created = event_about(&mut socket, "personal-files/ev/a.txt").await;
    assert!(created[0].get("Type").is_none(), "{created:?}");
    assert_eq!(created[0]["Target"]["Type"], "LEAF");
    let mut last = created[0].clone();
    while last["Target"]["Etag"] != json!(md5_of(b"twelve bytes")) {
        let frames = event_about(&mut socket, "personal-files/ev/a.txt").await;
        last = frames[0].clone();
        assert_eq!(last["Type"], "UPDATE_CONTENT", "{last}");
    }
    let target = &last["Target"];
    assert_eq!(target["Size"], "12", "int64 as a string");
    assert!(
        target["MTime"]
            .as_str()
            .is_some_and(|m| m.parse::<i64>().is_ok())
    );
    assert_eq!(target["MetaStore"]["name"], "\"a.txt\"");
    let meta = target["MetaStore"].as_object().unwrap();
    assert!(meta.keys().all(|k| !k.starts_with("pydio:")), "{meta:?}");

    // Overwrite: UPDATE_CONTENT.
    assert_eq!(s3.put("personal-files/ev/a.txt", b"v2").await.status(), 200);
    let frames = event_about(&mut socket, "personal-files/ev/a.txt").await;
    assert_eq!(frames[0]["Type"], "UPDATE_CONTENT");
    assert_eq!(frames[0]["Target"]["Size"], "2");

    // Move within the workspace: UPDATE_PATH with both sides.
    let store = emu.state.store.clone();
    tokio::task::spawn_blocking(move || {
        store.move_node(
            "alice",
            "personal-files/ev/a.txt",
            "personal-files/ev/b.txt",
        )
    })
    .await
    .unwrap()
    .expect("move");
    let frames = event_about(&mut socket, "personal-files/ev/b.txt").await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["Type"], "UPDATE_PATH");
    assert_eq!(frames[0]["Source"]["Path"], "personal-files/ev/a.txt");
    assert_eq!(frames[0]["Target"]["Path"], "personal-files/ev/b.txt");
    assert_eq!(frames[0]["Source"]["Uuid"], frames[0]["Target"]["Uuid"]);

    // Delete to the recycle bin: UPDATE_PATH into recycle_bin.
    let store = emu.state.store.clone();
    tokio::task::spawn_blocking(move || {
        store.delete_node("alice", "personal-files/ev/b.txt", false)
    })
    .await
    .unwrap()
    .expect("delete");
    let frames = event_about(&mut socket, "personal-files/ev/b.txt").await;
    assert_eq!(frames[0]["Type"], "UPDATE_PATH");
    assert!(
        frames[0]["Target"]["Path"]
            .as_str()
            .unwrap()
            .starts_with("personal-files/recycle_bin/"),
        "{frames:?}"
    );

    // Permanent delete through S3: DELETE with the Source only.
    assert_eq!(s3.put("personal-files/ev/c.txt", b"c").await.status(), 200);
    event_about(&mut socket, "personal-files/ev/c.txt").await;
    assert_eq!(s3.delete("personal-files/ev/c.txt").await.status(), 204);
    let frames = loop {
        let frames = event_about(&mut socket, "personal-files/ev/c.txt").await;
        if frames[0]["Type"] == "DELETE" {
            break frames;
        }
    };
    assert_eq!(frames[0]["Source"]["Path"], "personal-files/ev/c.txt");
    assert!(frames[0].get("Target").is_none());
    emu.stop().await;
}

fn md5_of(data: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(data))
}

#[tokio::test]
async fn moves_across_workspaces_and_visibility_per_user() {
    let (emu, _dir) = start().await;
    let alice_token = pat(&emu, "alice");
    let bob_token = pat(&emu, "bob");
    let mut alice = subscribe(&emu, &alice_token).await;
    let mut bob = connect(&emu).await;
    bob.send(Message::Text(
        json!({"@type": "subscribe", "jwt": bob_token})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    while emu.state.events.subscribed_count() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let personal = ws_uuid(&emu, "alice", "personal-files");
    let common = ws_uuid(&emu, "alice", "common-files");
    let s3 = S3Client::new(&emu.url, &alice_token);

    // Alice's private file: bob hears nothing (checked below by ordering).
    assert_eq!(
        s3.put("personal-files/private.txt", b"mine").await.status(),
        200
    );
    event_about(&mut alice, "personal-files/private.txt").await;

    // Move it to the shared workspace: alice gets DELETE (personal) + CREATE (common) in one
    // broadcast; bob gets only the CREATE.
    let store = emu.state.store.clone();
    tokio::task::spawn_blocking(move || {
        store.move_node(
            "alice",
            "personal-files/private.txt",
            "common-files/shared.txt",
        )
    })
    .await
    .unwrap()
    .expect("move across workspaces");
    let frames = loop {
        let frames = event_about(&mut alice, "common-files/shared.txt").await;
        if frames.len() == 2 {
            break frames;
        }
    };
    let delete = frames
        .iter()
        .find(|f| f["Type"] == "DELETE")
        .expect("DELETE frame");
    assert_eq!(delete["Source"]["Path"], "personal-files/private.txt");
    assert_eq!(event_ws(delete, "Source"), personal);
    assert!(delete.get("Target").is_none());
    let create = frames
        .iter()
        .find(|f| f.get("Type").is_none())
        .expect("CREATE frame");
    assert_eq!(create["Target"]["Path"], "common-files/shared.txt");
    assert_eq!(event_ws(create, "Target"), common);
    assert!(create.get("Source").is_none());

    let first_for_bob = next_event(&mut bob).await;
    assert_eq!(first_for_bob.len(), 1, "{first_for_bob:?}");
    assert!(first_for_bob[0].get("Type").is_none());
    assert_eq!(
        first_for_bob[0]["Target"]["Path"],
        "common-files/shared.txt"
    );

    // Dotfiles never produce events: the next frame bob sees is about the visible file.
    assert_eq!(
        s3.put("common-files/.hidden-state", b"x").await.status(),
        200
    );
    assert_eq!(s3.put("common-files/visible.txt", b"y").await.status(), 200);
    let frames = next_event(&mut bob).await;
    assert_eq!(
        frames[0]["Target"]["Path"], "common-files/visible.txt",
        "{frames:?}"
    );
    emu.stop().await;
}

#[tokio::test]
async fn unsubscribe_and_resubscribe() {
    let (emu, _dir) = start().await;
    // No merging here: an event held back while unsubscribed would be sent after resubscribe.
    emu.state.events.set_merge_window(Duration::ZERO);
    let token = pat(&emu, "alice");
    let mut socket = subscribe(&emu, &token).await;
    let s3 = S3Client::new(&emu.url, &token);
    socket
        .send(Message::Text(
            json!({"@type": "unsubscribe"}).to_string().into(),
        ))
        .await
        .unwrap();
    while emu.state.events.subscribed_count() != 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s3.put("personal-files/quiet.txt", b"q").await.status(), 200);
    // Unknown types and binary frames are ignored; the socket stays open.
    socket
        .send(Message::Text(
            json!({"@type": "whatever"}).to_string().into(),
        ))
        .await
        .unwrap();
    socket
        .send(Message::Binary(vec![1, 2, 3].into()))
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
    while emu.state.events.subscribed_count() != 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s3.put("personal-files/loud.txt", b"l").await.status(), 200);
    let frames = next_event(&mut socket).await;
    assert_eq!(
        frames[0]["Target"]["Path"], "personal-files/loud.txt",
        "{frames:?}"
    );
    emu.stop().await;
}

#[tokio::test]
async fn bad_subscriptions_close_the_socket() {
    let (emu, _dir) = start().await;
    for message in [
        json!({"@type": "subscribe", "jwt": "not-a-valid-token"}).to_string(),
        json!({"@type": "subscribe", "jwt": ""}).to_string(),
        "{not json".to_owned(),
    ] {
        let mut socket = connect(&emu).await;
        socket.send(Message::Text(message.into())).await.unwrap();
        assert_closed(&mut socket).await;
    }

    // An expired token.
    let short = emu
        .state
        .auth
        .mint_pat("alice", PatExpiry::Fixed(Duration::from_secs(1)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut socket = connect(&emu).await;
    socket
        .send(Message::Text(
            json!({"@type": "subscribe", "jwt": short})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert_closed(&mut socket).await;

    // A frame over 2048 bytes ends the session.
    let token = pat(&emu, "alice");
    let mut socket = subscribe(&emu, &token).await;
    let huge = json!({"@type": "subscribe", "jwt": "x".repeat(3000)}).to_string();
    let _ = socket.send(Message::Text(huge.into())).await;
    assert_closed(&mut socket).await;
    emu.stop().await;
}

#[tokio::test]
async fn pings_and_task_frames() {
    let (emu, _dir) = start().await;
    emu.state
        .events
        .set_ping_interval(Duration::from_millis(100));
    let token = pat(&emu, "alice");
    let mut socket = subscribe(&emu, &token).await;
    let got_ping = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Ok(Message::Ping(_))) = socket.next().await {
                return;
            }
        }
    })
    .await;
    assert!(got_ping.is_ok(), "no ping received");

    emu.state.events.task_updated(
        "bob",
        json!({"ID": "t-bob", "Status": "Finished"}),
        json!({"ID": "j-bob"}),
    );
    emu.state.events.task_updated(
        "alice",
        json!({"ID": "t1", "JobID": "copy-move-1", "Status": "Finished", "TriggerOwner": "alice"}),
        json!({"ID": "copy-move-1", "Owner": "alice"}),
    );
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        frame["TaskUpdated"]["ID"], "t1",
        "bob's task must not reach alice: {frame}"
    );
    assert_eq!(frame["Job"]["ID"], "copy-move-1");

    emu.state
        .events
        .idm_event("bob", json!({"Type": "UPDATE", "User": {"Login": "bob"}}));
    emu.state.events.idm_event(
        "alice",
        json!({"Type": "UPDATE", "User": {"Login": "alice"}}),
    );
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["@type"], "idm", "{frame}");
    assert_eq!(
        frame["User"]["Login"], "alice",
        "bob's idm event must not reach alice"
    );
    emu.stop().await;
}

#[tokio::test]
async fn events_of_one_node_are_merged_and_may_be_reordered() {
    let (emu, _dir) = start().await;
    let token = pat(&emu, "alice");
    let mut socket = subscribe(&emu, &token).await;
    let s3 = S3Client::new(&emu.url, &token);

    // An upload (temporary node, then content) is one CREATE carrying the final Etag, sent
    // after a second of quiet.
    let t = std::time::Instant::now();
    assert_eq!(
        s3.put("personal-files/merged.txt", b"final").await.status(),
        200
    );
    let frames = next_event(&mut socket).await;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(frames[0].get("Type").is_none(), "{frames:?}");
    assert_eq!(frames[0]["Target"]["Etag"], json!(md5_of(b"final")));

    // Created then renamed within the second: the UPDATE_PATH comes first, then the CREATE
    // that still carries the old path (cells-events.md §3.3).
    assert_eq!(s3.put("personal-files/early.txt", b"e").await.status(), 200);
    let store = emu.state.store.clone();
    tokio::task::spawn_blocking(move || {
        store.move_node(
            "alice",
            "personal-files/early.txt",
            "personal-files/late.txt",
        )
    })
    .await
    .unwrap()
    .expect("move");
    let first = next_event(&mut socket).await;
    assert_eq!(first[0]["Type"], "UPDATE_PATH", "{first:?}");
    assert_eq!(first[0]["Target"]["Path"], "personal-files/late.txt");
    let second = next_event(&mut socket).await;
    assert!(second[0].get("Type").is_none(), "{second:?}");
    assert_eq!(second[0]["Target"]["Path"], "personal-files/early.txt");
    emu.stop().await;
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_pong_wait() {
    let (emu, _dir) = start().await;
    emu.state
        .events
        .set_ping_interval(Duration::from_millis(100));
    emu.state.events.set_pong_wait(Duration::from_millis(400));
    let token = pat(&emu, "alice");

    // A client that reads (so its library answers pings) stays connected.
    let mut live = subscribe(&emu, &token).await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    while tokio::time::Instant::now() < until {
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(50), live.next()).await {
            assert!(matches!(msg, Some(Ok(Message::Ping(_)))), "{msg:?}");
        }
    }
    assert_eq!(emu.state.events.session_count(), 1);

    // A client that never reads never pongs: it is dropped.
    let _silent = connect(&emu).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while emu.state.events.session_count() != 2 {
        let _ = tokio::time::timeout(Duration::from_millis(20), live.next()).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "silent socket never registered"
        );
    }
    loop {
        // Keep the live one answering meanwhile.
        let _ = tokio::time::timeout(Duration::from_millis(50), live.next()).await;
        if emu.state.events.session_count() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "silent socket kept");
    }
    emu.stop().await;
}

/// `PUT /a/user-meta/update` with one meta, as `token`'s user.
async fn user_meta(emu: &RunningEmulator, token: &str, op: &str, meta: Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}/a/user-meta/update", emu.url))
        .bearer_auth(token)
        .json(&json!({"Operation": op, "MetaDatas": [meta]}))
        .send()
        .await
        .expect("user-meta/update");
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn user_meta_changes_are_announced_at_once_to_whoever_may_read_them() {
    // cells-events.md §3.3: UPDATE_USER_META is sent immediately (never merged), with the
    // Target re-read (carrying the current user metadata), and only to the sessions the
    // metadata's policies let read it: a bookmark to its owner, tags to all who see the node.
    let (emu, _dir) = start().await;
    let alice_token = pat(&emu, "alice");
    let bob_token = pat(&emu, "bob");
    emu.state
        .store
        .put_bytes("alice", "common-files/plan.txt", b"plan", None)
        .unwrap();
    let uuid = emu
        .state
        .store
        .stat("alice", "common-files/plan.txt")
        .unwrap()
        .uuid;
    let mut alice = subscribe(&emu, &alice_token).await;
    let mut bob = connect(&emu).await;
    bob.send(Message::Text(
        json!({"@type": "subscribe", "jwt": bob_token})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    while emu.state.events.subscribed_count() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let t = std::time::Instant::now();
    user_meta(
        &emu,
        &alice_token,
        "PUT",
        json!({"NodeUuid": uuid, "Namespace": "usermeta-tags", "JsonValue": "\"a,b\""}),
    )
    .await;
    for socket in [&mut alice, &mut bob] {
        let frames = event_about(socket, "common-files/plan.txt").await;
        assert_eq!(frames[0]["Type"], "UPDATE_USER_META", "{frames:?}");
        assert_eq!(frames[0]["Target"]["Uuid"], json!(uuid));
        assert_eq!(
            frames[0]["Target"]["MetaStore"]["usermeta-tags"],
            json!("\"a,b\""),
            "{frames:?}"
        );
    }
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "not merged: {:?}",
        t.elapsed()
    );

    // Alice's bookmark: only her sessions hear of it.
    user_meta(
        &emu,
        &alice_token,
        "PUT",
        json!({"NodeUuid": uuid, "Namespace": "bookmark", "JsonValue": "\"true\""}),
    )
    .await;
    let frames = event_about(&mut alice, "common-files/plan.txt").await;
    assert_eq!(frames[0]["Type"], "UPDATE_USER_META");
    assert_eq!(
        frames[0]["Target"]["MetaStore"]["bookmark"],
        json!("\"true\"")
    );
    // Then the tags go: bob's next event is that one, never the bookmark.
    user_meta(
        &emu,
        &alice_token,
        "DELETE",
        json!({"NodeUuid": uuid, "Namespace": "usermeta-tags"}),
    )
    .await;
    let frames = event_about(&mut bob, "common-files/plan.txt").await;
    assert_eq!(frames[0]["Type"], "UPDATE_USER_META");
    assert!(
        frames[0]["Target"]["MetaStore"]
            .get("usermeta-tags")
            .is_none()
            && frames[0]["Target"]["MetaStore"].get("bookmark").is_none(),
        "{frames:?}"
    );
    let frames = event_about(&mut alice, "common-files/plan.txt").await;
    assert_eq!(
        frames[0]["Target"]["MetaStore"]["bookmark"],
        json!("\"true\""),
        "alice still sees her bookmark"
    );
    emu.stop().await;
}
