//! User metadata (cells-share-versions.md §3): a bookmark on and off the web UI's way, the
//! bookmarks listing, tags on a node and their vocabulary, the namespace list, rights; every
//! body validated against the official swagger.

mod common;

use common::{Swagger, TestEmu, meta};
use reqwest::Method;
use serde_json::{Value, json};

async fn uuid_of(emu: &TestEmu, token: &str, path: &str) -> String {
    let (_, text) = emu
        .call(
            Method::GET,
            &format!("/tree/stat/{path}"),
            Some(token),
            None,
        )
        .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    v["Node"]["Uuid"].as_str().expect("node").to_string()
}

async fn node(emu: &TestEmu, token: &str, path: &str) -> Value {
    let (_, text) = emu
        .call(
            Method::GET,
            &format!("/tree/stat/{path}"),
            Some(token),
            None,
        )
        .await;
    serde_json::from_str::<Value>(&text).unwrap()["Node"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn bookmarks_and_tags() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let alice = emu.pat("alice");
    let bob = emu.pat("bob");
    let store = &emu.state().store;
    store
        .put_bytes("alice", "common-files/plan.txt", b"p", None)
        .unwrap();
    store
        .put_bytes("alice", "personal-files/mine.txt", b"m", None)
        .unwrap();
    let plan = uuid_of(&emu, &alice, "common-files/plan.txt").await;
    let mine = uuid_of(&emu, &alice, "personal-files/mine.txt").await;

    // Bookmark on, as the web UI does it.
    let body = json!({"Operation": "PUT", "MetaDatas": [{"NodeUuid": plan, "Namespace": "bookmark", "JsonValue": "\"true\"",
        "Policies": [{"Resource": plan, "Action": "OWNER", "Subject": "user:alice", "Effect": "allow"},
                     {"Resource": plan, "Action": "READ", "Subject": "user:alice", "Effect": "allow"},
                     {"Resource": plan, "Action": "WRITE", "Subject": "user:alice", "Effect": "allow"}]}]});
    let (st, v) = emu
        .rest(
            &sw,
            Method::PUT,
            "/user-meta/update",
            Some(&alice),
            Some(&body),
            "idmUpdateUserMetaResponse",
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["MetaDatas"][0]["Namespace"], "bookmark");
    assert_eq!(
        meta(
            &node(&emu, &alice, "common-files/plan.txt").await,
            "bookmark"
        ),
        Some(json!("true"))
    );
    assert_eq!(
        meta(&node(&emu, &bob, "common-files/plan.txt").await, "bookmark"),
        None,
        "bob's view"
    );
    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/user-meta/bookmarks",
            Some(&alice),
            Some(&json!({})),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["Nodes"][0]["Path"], "common-files/plan.txt");
    assert_eq!(v["Nodes"][0]["AppearsIn"][0]["WsSlug"], "common-files");
    let (_, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/user-meta/bookmarks",
            Some(&bob),
            Some(&json!({"All": true})),
            "restBulkMetaResponse",
        )
        .await;
    assert!(v.get("Nodes").is_none());

    // Bookmark off: search, then DELETE what was found.
    let (st, found) = emu
        .rest(
            &sw,
            Method::POST,
            "/user-meta/search",
            Some(&alice),
            Some(&json!({"NodeUuids": [plan], "Namespace": "bookmark"})),
            "restUserMetaCollection",
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(found["Metadatas"].as_array().unwrap().len(), 1);
    let (st, _) = emu
        .rest(
            &sw,
            Method::PUT,
            "/user-meta/update",
            Some(&alice),
            Some(&json!({"Operation": "DELETE", "MetaDatas": found["Metadatas"]})),
            "idmUpdateUserMetaResponse",
        )
        .await;
    assert_eq!(st, 200);
    let (_, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/user-meta/bookmarks",
            Some(&alice),
            Some(&json!({})),
            "restBulkMetaResponse",
        )
        .await;
    assert!(v.get("Nodes").is_none(), "{v}");

    // Tags: a value every reader sees; needs write access; unreadable node 404.
    let tags = json!({"Operation": "PUT", "MetaDatas": [{"NodeUuid": plan, "Namespace": "usermeta-tags", "JsonValue": "\"urgent,q3\""}]});
    let (st, _) = emu
        .rest(
            &sw,
            Method::PUT,
            "/user-meta/update",
            Some(&alice),
            Some(&tags),
            "idmUpdateUserMetaResponse",
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        meta(
            &node(&emu, &bob, "common-files/plan.txt").await,
            "usermeta-tags"
        ),
        Some(json!("urgent,q3"))
    );
    let on_mine = json!({"Operation": "PUT", "MetaDatas": [{"NodeUuid": mine, "Namespace": "usermeta-tags", "JsonValue": "\"x\""}]});
    let (st, _) = emu
        .rest(
            &sw,
            Method::PUT,
            "/user-meta/update",
            Some(&bob),
            Some(&on_mine),
            "idmUpdateUserMetaResponse",
        )
        .await;
    assert_eq!(st, 404);
    let admin = emu.pat("admin");
    store
        .put_bytes("admin", "team-docs/ro.txt", b"r", None)
        .unwrap();
    let ro = uuid_of(&emu, &admin, "team-docs/ro.txt").await;
    let on_ro = json!({"Operation": "PUT", "MetaDatas": [{"NodeUuid": ro, "Namespace": "usermeta-tags", "JsonValue": "\"x\""}]});
    let (st, _) = emu
        .rest(
            &sw,
            Method::PUT,
            "/user-meta/update",
            Some(&alice),
            Some(&on_ro),
            "idmUpdateUserMetaResponse",
        )
        .await;
    assert_eq!(st, 403);
    let bm_ro = json!({"Operation": "PUT", "MetaDatas": [{"NodeUuid": ro, "Namespace": "bookmark", "JsonValue": "\"true\""}]});
    let (st, _) = emu
        .rest(
            &sw,
            Method::PUT,
            "/user-meta/update",
            Some(&alice),
            Some(&bm_ro),
            "idmUpdateUserMetaResponse",
        )
        .await;
    assert_eq!(st, 200, "a bookmark needs only read access");

    // Namespaces and the tag vocabulary.
    let (st, v) = emu
        .rest(
            &sw,
            Method::GET,
            "/user-meta/namespace",
            Some(&alice),
            None,
            "restUserMetaNamespaceCollection",
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["Namespaces"][0]["Namespace"], "usermeta-tags");
    assert_eq!(
        v["Namespaces"].as_array().unwrap().len(),
        1,
        "bookmark is hidden"
    );
    let (st, _) = emu
        .rest(
            &sw,
            Method::POST,
            "/user-meta/tags/usermeta-tags",
            Some(&alice),
            Some(&json!({"Tag": "urgent"})),
            "restPutUserMetaTagResponse",
        )
        .await;
    assert_eq!(st, 200);
    let (st, v) = emu
        .rest(
            &sw,
            Method::GET,
            "/user-meta/tags/usermeta-tags",
            Some(&alice),
            None,
            "restListUserMetaTagsResponse",
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["Tags"], json!(["urgent"]));
    let (st, _) = emu
        .rest(
            &sw,
            Method::GET,
            "/user-meta/tags/nope",
            Some(&alice),
            None,
            "restListUserMetaTagsResponse",
        )
        .await;
    assert_eq!(st, 404);
    let (st, v) = emu
        .rest(
            &sw,
            Method::DELETE,
            "/user-meta/tags/usermeta-tags/*",
            Some(&alice),
            None,
            "restDeleteUserMetaTagsResponse",
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["Success"], true);
    let (_, v) = emu
        .rest(
            &sw,
            Method::GET,
            "/user-meta/tags/usermeta-tags",
            Some(&alice),
            None,
            "restListUserMetaTagsResponse",
        )
        .await;
    assert!(v.get("Tags").is_none());
}
