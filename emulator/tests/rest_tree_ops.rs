//! REST mutations: folder/file creation, move and copy jobs (states, AutoClean, pre-checks),
//! delete to the recycle bin / permanently, restore, read-only workspaces and job control.

mod common;

use std::time::Duration;

use common::{Swagger, TestEmu, meta, node_paths};
use reqwest::Method;
use serde_json::{Value, json};

async fn stat(emu: &TestEmu, sw: &Swagger, token: &str, path: &str) -> (u16, Value) {
    emu.rest(
        sw,
        Method::GET,
        &format!("/tree/stat/{path}"),
        Some(token),
        None,
        "restHeadNodeResponse",
    )
    .await
}

async fn create(emu: &TestEmu, sw: &Swagger, token: &str, nodes: Value) -> (u16, Value) {
    emu.rest(
        sw,
        Method::POST,
        "/tree/create",
        Some(token),
        Some(&json!({"Nodes": nodes})),
        "restNodesCollection",
    )
    .await
}

async fn user_job(
    emu: &TestEmu,
    sw: &Swagger,
    token: &str,
    name: &str,
    params: Value,
) -> (u16, Value) {
    let body = json!({"JsonParameters": params.to_string()});
    emu.rest(
        sw,
        Method::PUT,
        &format!("/jobs/user/{name}"),
        Some(token),
        Some(&body),
        "restUserJobResponse",
    )
    .await
}

async fn delete(
    emu: &TestEmu,
    sw: &Swagger,
    token: &str,
    paths: &[&str],
    permanently: bool,
) -> (u16, Value) {
    let nodes: Vec<Value> = paths.iter().map(|p| json!({"Path": p})).collect();
    emu.rest(
        sw,
        Method::POST,
        "/tree/delete",
        Some(token),
        Some(&json!({"Nodes": nodes, "RemovePermanently": permanently})),
        "restDeleteNodesResponse",
    )
    .await
}

fn job_ids(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["Uuid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn create_folders_with_implicit_parents_and_leaf_files() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let token = emu.pat("alice");
    let (status, body) = create(&emu, &sw, &token, json!([{"Path": "personal-files/a/b/c", "Type": "COLLECTION"}, {"Path": "personal-files/a/b/c", "Type": "COLLECTION"}])).await;
    assert_eq!(status, 200, "{body}");
    let children = body["Children"].as_array().unwrap();
    assert_eq!(children.len(), 1, "duplicates are de-duplicated");
    assert_eq!(children[0]["Path"], "personal-files/a/b/c");
    assert_eq!(children[0]["Uuid"].as_str().unwrap().len(), 36);
    let (status, a) = stat(&emu, &sw, &token, "personal-files/a").await;
    assert_eq!(status, 200);
    assert_eq!(a["Node"]["Type"], "COLLECTION");
    assert!(a["Node"]["MTime"].is_string());

    // LEAF: the 1-byte " " file; or MetaStore.Contents.
    let (status, body) = create(
        &emu,
        &sw,
        &token,
        json!([{"Path": "personal-files/a/empty.txt", "Type": "LEAF"}]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["Children"][0]["Path"], "personal-files/a/empty.txt");
    assert!(
        body["Children"][0].get("Uuid").is_none(),
        "the input node is echoed"
    );
    let (_, f) = stat(&emu, &sw, &token, "personal-files/a/empty.txt").await;
    assert_eq!(f["Node"]["Size"], "1");
    assert_eq!(
        f["Node"]["Etag"], "7215ee9c7d9dc229d2921a40e899ec5f",
        "md5 of a space"
    );
    let (_, path) = emu
        .state()
        .store
        .open_content("alice", "personal-files/a/empty.txt")
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b" ");
    let (status, _) = create(&emu, &sw, &token, json!([{"Path": "personal-files/a/hello.txt", "Type": "LEAF", "MetaStore": {"Contents": "\"hello\""}}])).await;
    assert_eq!(status, 200);
    let (_, f) = stat(&emu, &sw, &token, "personal-files/a/hello.txt").await;
    assert_eq!(f["Node"]["Size"], "5");

    // Errors: empty Nodes, folder over a file, file in the way, read-only workspace.
    let (status, _) = create(&emu, &sw, &token, json!([])).await;
    assert_eq!(status, 500);
    let (status, err) = create(
        &emu,
        &sw,
        &token,
        json!([{"Path": "personal-files/a/hello.txt", "Type": "COLLECTION"}]),
    )
    .await;
    assert_eq!(status, 500, "a folder over a file: {err}");
    let (status, _) = create(
        &emu,
        &sw,
        &token,
        json!([{"Path": "personal-files/a/hello.txt/sub", "Type": "COLLECTION"}]),
    )
    .await;
    assert_eq!(status, 500);
    let (status, err) = create(
        &emu,
        &sw,
        &token,
        json!([{"Path": "team-docs/new", "Type": "COLLECTION"}]),
    )
    .await;
    assert_eq!(status, 403, "{err}");
    let (status, _) = create(
        &emu,
        &sw,
        &token,
        json!([{"Path": "team-docs/new.txt", "Type": "LEAF"}]),
    )
    .await;
    assert_eq!(status, 403);
    let admin = emu.pat("admin");
    let (status, _) = create(
        &emu,
        &sw,
        &admin,
        json!([{"Path": "team-docs/new", "Type": "COLLECTION"}]),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn creating_an_existing_folder_returns_it_and_a_mixed_batch_creates_the_new_ones() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let token = emu.pat("alice");
    let (status, body) = create(
        &emu,
        &sw,
        &token,
        json!([{"Path": "personal-files/target", "Type": "COLLECTION"}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let uuid = body["Children"][0]["Uuid"].as_str().unwrap().to_string();
    emu.state()
        .store
        .put_bytes("alice", "personal-files/target/keep.txt", b"kept", None)
        .unwrap();

    // The existing folder comes back as a success, the same node, its content untouched.
    let (status, body) = create(
        &emu,
        &sw,
        &token,
        json!([{"Path": "personal-files/target", "Type": "COLLECTION"}]),
    )
    .await;
    assert_eq!(status, 200, "existing folder: {body}");
    assert_eq!(body["Children"][0]["Path"], "personal-files/target");
    assert_eq!(body["Children"][0]["Uuid"], uuid.as_str());
    assert_eq!(body["Children"][0]["Type"], "COLLECTION");

    // What the official client sends uploading a folder into an existing target: the
    // target again, with the new sub-folders.
    let (status, body) = create(
        &emu,
        &sw,
        &token,
        json!([
            {"Path": "personal-files/target", "Type": "COLLECTION"},
            {"Path": "personal-files/target/new1", "Type": "COLLECTION"},
            {"Path": "personal-files/target/new1/deep", "Type": "COLLECTION"},
            {"Path": "personal-files/target/new2", "Type": "COLLECTION"},
        ]),
    )
    .await;
    assert_eq!(status, 200, "mixed batch: {body}");
    assert_eq!(
        node_paths(&json!({"Nodes": body["Children"]})),
        [
            "personal-files/target",
            "personal-files/target/new1",
            "personal-files/target/new1/deep",
            "personal-files/target/new2"
        ]
    );
    for p in [
        "personal-files/target/new1/deep",
        "personal-files/target/new2",
        "personal-files/target/keep.txt",
    ] {
        let (status, _) = stat(&emu, &sw, &token, p).await;
        assert_eq!(status, 200, "{p}");
    }
    let (_, t) = stat(&emu, &sw, &token, "personal-files/target").await;
    assert_eq!(t["Node"]["Uuid"], uuid.as_str());

    // A workspace root exists too; a read-only workspace still refuses.
    let (status, _) = create(
        &emu,
        &sw,
        &token,
        json!([{"Path": "personal-files", "Type": "COLLECTION"}]),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = create(
        &emu,
        &sw,
        &token,
        json!([{"Path": "team-docs", "Type": "COLLECTION"}]),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn move_job_goes_queued_running_then_vanishes_and_keeps_uuid() {
    let sw = Swagger::load();
    let emu = TestEmu::start_with(|c| c.job_delay = Duration::from_millis(400)).await;
    let token = emu.pat("alice");
    emu.state()
        .store
        .put_bytes("alice", "personal-files/src/a.txt", b"aaa", None)
        .unwrap();
    let (_, before) = stat(&emu, &sw, &token, "personal-files/src/a.txt").await;
    let (status, body) = user_job(&emu, &sw, &token, "move", json!({"nodes": ["personal-files/src/a.txt"], "target": "personal-files/dst/renamed.txt", "targetParent": false})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["JobUuid"].as_str().unwrap().to_string();
    assert!(id.starts_with("copy-move-"), "{id}");
    // Not done yet: clients must wait.
    let (status, _) = stat(&emu, &sw, &token, "personal-files/dst/renamed.txt").await;
    assert_eq!(status, 404);
    let seen = emu.wait_jobs(&sw, &token, std::slice::from_ref(&id)).await;
    assert_eq!(seen[0], ["Queued", "Running"], "{seen:?}");
    let (status, after) = stat(&emu, &sw, &token, "personal-files/dst/renamed.txt").await;
    assert_eq!(status, 200);
    assert_eq!(after["Node"]["Uuid"], before["Node"]["Uuid"]);
    assert_eq!(after["Node"]["Etag"], before["Node"]["Etag"]);
    let (status, _) = stat(&emu, &sw, &token, "personal-files/src/a.txt").await;
    assert_eq!(status, 404);

    // targetParent: move a folder into another, across workspaces.
    emu.state()
        .store
        .put_bytes("alice", "personal-files/tree/x/y.txt", b"y", None)
        .unwrap();
    let (_, tree) = stat(&emu, &sw, &token, "personal-files/tree").await;
    let (status, body) = user_job(
        &emu,
        &sw,
        &token,
        "move",
        json!({"nodes": ["personal-files/tree"], "target": "common-files", "targetParent": true}),
    )
    .await;
    assert_eq!(status, 200);
    emu.wait_jobs(
        &sw,
        &token,
        &[body["JobUuid"].as_str().unwrap().to_string()],
    )
    .await;
    let (status, moved) = stat(&emu, &sw, &token, "common-files/tree").await;
    assert_eq!(status, 200);
    assert_eq!(moved["Node"]["Uuid"], tree["Node"]["Uuid"]);
    let (status, _) = stat(&emu, &sw, &token, "common-files/tree/x/y.txt").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn move_and_copy_prechecks_and_job_errors() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let token = emu.pat("alice");
    emu.state()
        .store
        .put_bytes("alice", "personal-files/f.txt", b"f", None)
        .unwrap();
    emu.state()
        .store
        .put_bytes("alice", "personal-files/g.txt", b"g", None)
        .unwrap();
    // Missing source: 404 at once.
    let (status, _) = user_job(&emu, &sw, &token, "move", json!({"nodes": ["personal-files/nope"], "target": "personal-files/x", "targetParent": false})).await;
    assert_eq!(status, 404);
    // Missing nodes parameter: 500.
    let (status, _) = user_job(
        &emu,
        &sw,
        &token,
        "move",
        json!({"target": "personal-files/x"}),
    )
    .await;
    assert_eq!(status, 500);
    // Read-only target: 403.
    let (status, _) = user_job(
        &emu,
        &sw,
        &token,
        "copy",
        json!({"nodes": ["personal-files/f.txt"], "target": "team-docs", "targetParent": true}),
    )
    .await;
    assert_eq!(status, 403);
    // Moving out of a read-only workspace: 403.
    let admin = emu.pat("admin");
    emu.state()
        .store
        .put_bytes("admin", "team-docs/doc.txt", b"d", None)
        .unwrap();
    let (status, _) = user_job(&emu, &sw, &token, "move", json!({"nodes": ["team-docs/doc.txt"], "target": "personal-files/doc.txt", "targetParent": false})).await;
    assert_eq!(status, 403);
    // ...but copying out of it is fine.
    let (status, body) = user_job(&emu, &sw, &token, "copy", json!({"nodes": ["team-docs/doc.txt"], "target": "personal-files/doc.txt", "targetParent": false})).await;
    assert_eq!(status, 200);
    emu.wait_jobs(
        &sw,
        &token,
        &[body["JobUuid"].as_str().unwrap().to_string()],
    )
    .await;
    let (_, copy) = stat(&emu, &sw, &token, "personal-files/doc.txt").await;
    let (_, orig) = stat(&emu, &sw, &admin, "team-docs/doc.txt").await;
    assert_ne!(
        copy["Node"]["Uuid"], orig["Node"]["Uuid"],
        "a copy has a new Uuid"
    );
    assert_eq!(copy["Node"]["Etag"], orig["Node"]["Etag"]);
    // Target exists: the job ends in Error, with a message, and stays listed.
    let (status, body) = user_job(&emu, &sw, &token, "move", json!({"nodes": ["personal-files/f.txt"], "target": "personal-files/g.txt", "targetParent": false})).await;
    assert_eq!(status, 200);
    let id = body["JobUuid"].as_str().unwrap().to_string();
    let seen = emu.wait_jobs(&sw, &token, std::slice::from_ref(&id)).await;
    assert_eq!(
        seen[0].last().map(String::as_str),
        Some("Error"),
        "{seen:?}"
    );
    let (_, jobs) = emu
        .rest(
            &sw,
            Method::POST,
            "/jobs/user",
            Some(&token),
            Some(&json!({"JobIDs": [id]})),
            "restUserJobsCollection",
        )
        .await;
    assert!(
        jobs["Jobs"][0]["Tasks"][0]["StatusMessage"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{jobs}"
    );
    // Other users do not see alice's jobs.
    let bob = emu.pat("bob");
    let (_, jobs) = emu
        .rest(
            &sw,
            Method::POST,
            "/jobs/user",
            Some(&bob),
            Some(&json!({})),
            "restUserJobsCollection",
        )
        .await;
    assert_eq!(jobs, json!({}));
    // Unknown job name.
    let (status, _) = user_job(
        &emu,
        &sw,
        &token,
        "explode",
        json!({"nodes": ["personal-files/f.txt"], "target": "x"}),
    )
    .await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn delete_to_recycle_bin_then_restore() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let token = emu.pat("alice");
    emu.state()
        .store
        .put_bytes("alice", "personal-files/docs/old.txt", b"old", None)
        .unwrap();
    let (_, orig) = stat(&emu, &sw, &token, "personal-files/docs/old.txt").await;
    let (status, body) = delete(&emu, &sw, &token, &["personal-files/docs/old.txt"], false).await;
    assert_eq!(status, 200, "{body}");
    let ids = job_ids(&body, "DeleteJobs");
    assert_eq!(ids.len(), 1);
    assert!(ids[0].starts_with("copy-move-"));
    emu.wait_jobs(&sw, &token, &ids).await;
    let (status, _) = stat(&emu, &sw, &token, "personal-files/docs/old.txt").await;
    assert_eq!(status, 404);
    let (status, binned) = stat(&emu, &sw, &token, "personal-files/recycle_bin/old.txt").await;
    assert_eq!(status, 200);
    assert_eq!(binned["Node"]["Uuid"], orig["Node"]["Uuid"]);
    assert!(
        binned["Node"]["MetaStore"]
            .get("pydio:recycle_restore")
            .is_none(),
        "reserved meta stripped"
    );
    let (_, bin) = stat(&emu, &sw, &token, "personal-files/recycle_bin").await;
    assert_eq!(meta(&bin["Node"], "recycle_bin"), Some(json!(true)));
    // A second file with the same name gets a free name in the bin.
    emu.state()
        .store
        .put_bytes("alice", "personal-files/old.txt", b"again", None)
        .unwrap();
    let (_, body) = delete(&emu, &sw, &token, &["personal-files/old.txt"], false).await;
    emu.wait_jobs(&sw, &token, &job_ids(&body, "DeleteJobs"))
        .await;
    let (_, listing) = emu
        .rest(
            &sw,
            Method::POST,
            "/meta/bulk/get",
            Some(&token),
            Some(&json!({"NodePaths": ["personal-files/recycle_bin/*"]})),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(node_paths(&listing).len(), 2, "{listing}");

    // Restore puts it back where it was (parents recreated).
    emu.state()
        .store
        .delete_node("alice", "personal-files/docs", true)
        .unwrap();
    let (status, body) = emu
        .rest(
            &sw,
            Method::POST,
            "/tree/restore",
            Some(&token),
            Some(&json!({"Nodes": [{"Path": "personal-files/recycle_bin/old.txt"}]})),
            "restRestoreNodesResponse",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["RestoreJobs"][0]["NodeUuid"], orig["Node"]["Uuid"]);
    emu.wait_jobs(&sw, &token, &job_ids(&body, "RestoreJobs"))
        .await;
    let (status, back) = stat(&emu, &sw, &token, "personal-files/docs/old.txt").await;
    assert_eq!(status, 200);
    assert_eq!(back["Node"]["Uuid"], orig["Node"]["Uuid"]);
    // Restoring something that is not in a bin fails synchronously.
    let (status, _) = emu
        .rest(
            &sw,
            Method::POST,
            "/tree/restore",
            Some(&token),
            Some(&json!({"Nodes": [{"Path": "personal-files/docs/old.txt"}]})),
            "restRestoreNodesResponse",
        )
        .await;
    assert_eq!(status, 500);

    // Deleting from the bin is permanent.
    let (status, body) = delete(
        &emu,
        &sw,
        &token,
        &["personal-files/recycle_bin/old-1.txt"],
        false,
    )
    .await;
    assert_eq!(status, 200);
    let ids = job_ids(&body, "DeleteJobs");
    assert!(ids[0].starts_with("delete-"), "{ids:?}");
    emu.wait_jobs(&sw, &token, &ids).await;
    let (status, _) = stat(&emu, &sw, &token, "personal-files/recycle_bin/old-1.txt").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn permanent_delete_rules_and_refusals() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let token = emu.pat("alice");
    let store = &emu.state().store;
    store
        .put_bytes("alice", "personal-files/p.txt", b"p", None)
        .unwrap();
    store
        .put_bytes("alice", "personal-files/q.txt", b"q", None)
        .unwrap();
    store
        .put_bytes("alice", "scratch/s.txt", b"s", None)
        .unwrap();
    // RemovePermanently.
    let (status, body) = delete(&emu, &sw, &token, &["personal-files/p.txt"], true).await;
    assert_eq!(status, 200);
    emu.wait_jobs(&sw, &token, &job_ids(&body, "DeleteJobs"))
        .await;
    let (status, _) = stat(&emu, &sw, &token, "personal-files/recycle_bin/p.txt").await;
    assert_eq!(status, 404);
    // ws_skip_recycle: permanent even without the flag.
    let (_, body) = delete(&emu, &sw, &token, &["scratch/s.txt"], false).await;
    assert!(job_ids(&body, "DeleteJobs")[0].starts_with("delete-"));
    emu.wait_jobs(&sw, &token, &job_ids(&body, "DeleteJobs"))
        .await;
    let (status, _) = stat(&emu, &sw, &token, "scratch/s.txt").await;
    assert_eq!(status, 404);
    let (status, _) = stat(&emu, &sw, &token, "scratch/recycle_bin").await;
    assert_eq!(status, 404);
    // A missing node among others: 404 and nothing is deleted.
    let (status, _) = delete(
        &emu,
        &sw,
        &token,
        &["personal-files/q.txt", "personal-files/missing"],
        false,
    )
    .await;
    assert_eq!(status, 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = stat(&emu, &sw, &token, "personal-files/q.txt").await;
    assert_eq!(status, 200);
    // Workspace roots and read-only workspaces are refused.
    let (status, _) = delete(&emu, &sw, &token, &["personal-files"], false).await;
    assert_eq!(status, 403);
    emu.state()
        .store
        .put_bytes("admin", "team-docs/t.txt", b"t", None)
        .unwrap();
    let (status, _) = delete(&emu, &sw, &token, &["team-docs/t.txt"], true).await;
    assert_eq!(status, 403);
    let (status, _) = delete(&emu, &sw, &token, &[], false).await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn a_queued_job_can_be_stopped() {
    let sw = Swagger::load();
    let emu = TestEmu::start_with(|c| c.job_delay = Duration::from_millis(600)).await;
    let token = emu.pat("alice");
    emu.state()
        .store
        .put_bytes("alice", "personal-files/keep.txt", b"k", None)
        .unwrap();
    let (_, body) = user_job(&emu, &sw, &token, "move", json!({"nodes": ["personal-files/keep.txt"], "target": "personal-files/moved.txt", "targetParent": false})).await;
    let id = body["JobUuid"].as_str().unwrap().to_string();
    let (status, resp) = emu
        .rest(
            &sw,
            Method::PUT,
            "/jobs/user",
            Some(&token),
            Some(&json!({"Cmd": "Stop", "JobId": id})),
            "jobsCtrlCommandResponse",
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let seen = emu.wait_jobs(&sw, &token, std::slice::from_ref(&id)).await;
    assert_eq!(
        seen[0].last().map(String::as_str),
        Some("Interrupted"),
        "{seen:?}"
    );
    let (status, _) = stat(&emu, &sw, &token, "personal-files/keep.txt").await;
    assert_eq!(status, 200);
    // Bob cannot stop alice's jobs.
    let bob = emu.pat("bob");
    let (status, _) = emu
        .rest(
            &sw,
            Method::PUT,
            "/jobs/user",
            Some(&bob),
            Some(&json!({"Cmd": "Stop", "JobId": id})),
            "jobsCtrlCommandResponse",
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn job_state_changes_reach_the_owner_websocket_as_task_frames() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let sw = Swagger::load();
    let emu = TestEmu::start_with(|c| c.job_delay = Duration::from_millis(300)).await;
    let token = emu.pat("alice");
    emu.state()
        .store
        .put_bytes("alice", "personal-files/ws.txt", b"w", None)
        .unwrap();
    let ws_url = format!("{}/ws/event", emu.url.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    socket
        .send(Message::text(
            json!({"@type": "subscribe", "jwt": token}).to_string(),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = user_job(
        &emu,
        &sw,
        &token,
        "move",
        json!({"nodes": ["personal-files/ws.txt"], "target": "personal-files/ws2.txt", "targetParent": false}),
    )
    .await;
    assert_eq!(status, 200);
    let id = body["JobUuid"].as_str().unwrap().to_string();
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !statuses.iter().any(|s| s == "Finished") {
        let msg = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("task frames before the deadline")
            .expect("socket open")
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        if v.get("TaskUpdated").is_some() && v["Job"]["ID"] == id.as_str() {
            sw.validate("jobsTask", &v["TaskUpdated"]);
            sw.validate("jobsJob", &v["Job"]);
            assert_eq!(v["TaskUpdated"]["TriggerOwner"], "alice");
            statuses.push(v["TaskUpdated"]["Status"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(statuses, ["Queued", "Running", "Finished"]);
}

#[tokio::test]
async fn concurrent_writes_moves_and_listings_all_land() {
    let sw = std::sync::Arc::new(Swagger::load());
    let emu = std::sync::Arc::new(TestEmu::start().await);
    let token = emu.pat("alice");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (emu, sw, token) = (emu.clone(), sw.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let store = emu.state().store.clone();
            let path = format!("common-files/c/{i}/f.txt");
            tokio::task::spawn_blocking(move || store.put_bytes("alice", &path, b"data", None))
                .await
                .unwrap()
                .unwrap();
            let (status, body) = user_job(
                &emu,
                &sw,
                &token,
                "move",
                json!({"nodes": [format!("common-files/c/{i}")], "target": format!("common-files/moved/{i}"), "targetParent": false}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let (status, _) = emu
                .rest(
                    &sw,
                    Method::POST,
                    "/meta/bulk/get",
                    Some(&token),
                    Some(&json!({"NodePaths": ["common-files/*"]})),
                    "restBulkMetaResponse",
                )
                .await;
            assert_eq!(status, 200);
            body["JobUuid"].as_str().unwrap().to_string()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    emu.wait_jobs(&sw, &token, &ids).await;
    let (_, listing) = emu
        .rest(
            &sw,
            Method::POST,
            "/meta/bulk/get",
            Some(&token),
            Some(&json!({"NodePaths": ["common-files/moved/*"]})),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(node_paths(&listing).len(), 16, "{listing}");
    for i in 0..16 {
        let (status, _) = stat(&emu, &sw, &token, &format!("common-files/moved/{i}/f.txt")).await;
        assert_eq!(status, 200);
    }
}
