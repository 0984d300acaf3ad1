//! REST listing and stat: workspaces at the root, folder listings (folder first, dotfiles
//! filtered, Limit/Offset/Pagination), 404 vs silent omission, HeadNode with catch-all
//! percent-decoded paths, NFC names, and per-user visibility.

mod common;

use common::{Swagger, TestEmu, meta, node_paths};
use reqwest::Method;
use serde_json::{Value, json};

async fn bulk(emu: &TestEmu, sw: &Swagger, token: &str, body: Value) -> (u16, Value) {
    emu.rest(
        sw,
        Method::POST,
        "/meta/bulk/get",
        Some(token),
        Some(&body),
        "restBulkMetaResponse",
    )
    .await
}

fn put(emu: &TestEmu, login: &str, path: &str, content: &[u8]) {
    emu.state()
        .store
        .put_bytes(login, path, content, None)
        .unwrap_or_else(|e| panic!("put {path}: {e}"));
}

#[tokio::test]
async fn root_listing_returns_workspaces_with_ws_meta() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let token = emu.pat("alice");
    let (status, body) = bulk(&emu, &sw, &token, json!({"NodePaths": ["", "/*"]})).await;
    assert_eq!(status, 200);
    let nodes = body["Nodes"].as_array().unwrap();
    // The root node first, then the workspaces.
    assert!(nodes[0].get("Path").is_none(), "{}", nodes[0]);
    let paths = node_paths(&body);
    for slug in ["personal-files", "common-files", "team-docs", "scratch"] {
        assert!(paths.contains(&slug.to_string()), "{paths:?}");
    }
    let team = nodes.iter().find(|n| n["Path"] == "team-docs").unwrap();
    assert_eq!(team["Type"], "COLLECTION");
    assert_eq!(meta(team, "ws_scope"), Some(json!("ADMIN")));
    assert_eq!(meta(team, "ws_permissions"), Some(json!("r")));
    assert_eq!(meta(team, "ws_slug"), Some(json!("team-docs")));
    assert!(meta(team, "ws_uuid").unwrap().as_str().unwrap().len() == 36);
    assert!(
        team["MetaStore"]["ws_scope"]
            .as_str()
            .unwrap()
            .starts_with('"'),
        "MetaStore values are JSON-encoded"
    );
    let mine = nodes
        .iter()
        .find(|n| n["Path"] == "personal-files")
        .unwrap();
    assert_eq!(meta(mine, "ws_permissions"), Some(json!("rw")));
    let scratch = nodes.iter().find(|n| n["Path"] == "scratch").unwrap();
    assert_eq!(meta(scratch, "ws_skip_recycle"), Some(json!(true)));

    // An admin writes to team-docs.
    let admin = emu.pat("admin");
    let (_, body) = bulk(&emu, &sw, &admin, json!({"NodePaths": ["", "/*"]})).await;
    let team = body["Nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Path"] == "team-docs")
        .unwrap()
        .clone();
    assert_eq!(meta(&team, "ws_permissions"), Some(json!("rw")));
}

#[tokio::test]
async fn folder_listing_is_folder_first_and_hides_dotfiles() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    put(&emu, "alice", "personal-files/docs/b.txt", b"bee");
    put(&emu, "alice", "personal-files/docs/a.txt", b"a");
    put(&emu, "alice", "personal-files/docs/.hidden", b"h");
    put(&emu, "alice", "personal-files/docs/sub/c.txt", b"");
    let token = emu.pat("alice");
    let (status, body) = bulk(
        &emu,
        &sw,
        &token,
        json!({"NodePaths": ["personal-files/docs", "personal-files/docs/*"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        node_paths(&body),
        [
            "personal-files/docs",
            "personal-files/docs/a.txt",
            "personal-files/docs/b.txt",
            "personal-files/docs/sub"
        ]
    );
    assert!(body.get("Pagination").is_none());
    let nodes = body["Nodes"].as_array().unwrap();
    // Folder counts on the listed folder (dotfile counted: the index knows it).
    assert_eq!(meta(&nodes[0], "ChildrenCount"), Some(json!(4)));
    let b = &nodes[2];
    assert_eq!(b["Type"], "LEAF");
    assert_eq!(b["Size"], "3");
    assert_eq!(b["Etag"], format!("{:x}", md5_of(b"bee")));
    assert_eq!(meta(b, "name"), Some(json!("b.txt")));
    assert_eq!(meta(b, "mime"), Some(json!("text/plain")));
    assert_eq!(
        meta(b, "x-cells-hash"),
        Some(json!(format!("{:x}", md5_of(&md5_raw(b"bee")))))
    );
    assert!(b["MTime"].as_str().unwrap().parse::<i64>().unwrap() > 1_700_000_000);
    // Empty file: Size omitted.
    let (_, stat) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files/docs/sub/c.txt",
            Some(&token),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert!(stat["Node"].get("Size").is_none(), "{stat}");
    // Without the plain folder path, only the children.
    let (_, body) = bulk(
        &emu,
        &sw,
        &token,
        json!({"NodePaths": ["personal-files/docs/*"]}),
    )
    .await;
    assert_eq!(node_paths(&body)[0], "personal-files/docs/a.txt");
    // Type filter.
    let (_, body) = bulk(
        &emu,
        &sw,
        &token,
        json!({"NodePaths": ["personal-files/docs/*"], "Filters": {"type": "COLLECTION"}}),
    )
    .await;
    assert_eq!(node_paths(&body), ["personal-files/docs/sub"]);
    // The dotfile exists (stat works), it is only hidden from listings.
    let (status, _) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files/docs/.hidden",
            Some(&token),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 200);
}

fn md5_raw(b: &[u8]) -> Vec<u8> {
    use md5::Digest;
    md5::Md5::digest(b).to_vec()
}

struct Hex(Vec<u8>);
impl std::fmt::LowerHex for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
fn md5_of(b: &[u8]) -> Hex {
    Hex(md5_raw(b))
}

#[tokio::test]
async fn pagination_follows_the_real_handler() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    for i in 0..25 {
        put(
            &emu,
            "alice",
            &format!("personal-files/many/f{i:02}.txt"),
            b"x",
        );
    }
    let token = emu.pat("alice");
    let list = |limit: i32, offset: i32| json!({"NodePaths": ["personal-files/many/*"], "Limit": limit, "Offset": offset});
    let (status, body) = bulk(&emu, &sw, &token, list(10, 0)).await;
    assert_eq!(status, 200);
    assert_eq!(node_paths(&body).len(), 10);
    assert_eq!(node_paths(&body)[0], "personal-files/many/f00.txt");
    let pg = &body["Pagination"];
    assert_eq!(pg["Limit"], 10);
    assert_eq!(pg["Total"], 25);
    assert_eq!(pg["CurrentPage"], 1);
    assert_eq!(pg["TotalPages"], 3);
    assert_eq!(pg["NextOffset"], 10);
    assert!(pg.get("PrevOffset").is_none(), "zero values omitted: {pg}");
    assert!(pg.get("CurrentOffset").is_none());
    let (_, body) = bulk(&emu, &sw, &token, list(10, 20)).await;
    assert_eq!(
        node_paths(&body),
        (20..25)
            .map(|i| format!("personal-files/many/f{i:02}.txt"))
            .collect::<Vec<_>>()
    );
    let pg = &body["Pagination"];
    assert_eq!(pg["CurrentPage"], 3);
    assert_eq!(pg["PrevOffset"], 10);
    assert_eq!(pg["CurrentOffset"], 20);
    assert!(pg.get("NextOffset").is_none());
    // Limit covering everything: no Pagination.
    let (_, body) = bulk(&emu, &sw, &token, list(25, 0)).await;
    assert_eq!(node_paths(&body).len(), 25);
    assert!(body.get("Pagination").is_none());
    // Offset past the end: no nodes.
    let (status, body) = bulk(&emu, &sw, &token, list(10, 30)).await;
    assert_eq!(status, 200);
    assert!(body.get("Nodes").is_none(), "{body}");
    // Limit/Offset as strings (protojson accepts both).
    let (status, body) = bulk(
        &emu,
        &sw,
        &token,
        json!({"NodePaths": ["personal-files/many/*"], "Limit": "5", "Offset": "5"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(node_paths(&body)[0], "personal-files/many/f05.txt");
    // A page that hits a dotfile reads on: the real server then returns more than Limit
    // and cannot trust its count (TotalPages -1).
    put(&emu, "alice", "personal-files/many/.dot", b"x");
    let (_, body) = bulk(&emu, &sw, &token, list(10, 0)).await;
    let n = node_paths(&body).len();
    assert_eq!(n, 19, "dotfile skipped, next page appended");
    assert_eq!(body["Pagination"]["Total"], 26);
    assert_eq!(body["Pagination"]["TotalPages"], -1);
}

#[tokio::test]
async fn missing_folder_listing_is_404_missing_plain_path_is_omitted() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    put(&emu, "alice", "personal-files/here.txt", b"1");
    let token = emu.pat("alice");
    let (status, err) = bulk(
        &emu,
        &sw,
        &token,
        json!({"NodePaths": ["personal-files/nope/*"]}),
    )
    .await;
    assert_eq!(status, 404, "{err}");
    let (status, body) = bulk(
        &emu,
        &sw,
        &token,
        json!({"NodePaths": ["personal-files/nope", "personal-files/here.txt"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(node_paths(&body), ["personal-files/here.txt"]);
    let (status, body) = bulk(
        &emu,
        &sw,
        &token,
        json!({"NodePaths": ["personal-files/nope"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({}));
}

#[tokio::test]
async fn head_node_decodes_catch_all_paths_and_404s() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    put(
        &emu,
        "alice",
        "personal-files/Été à Paris/100% café #1?.txt",
        b"ok",
    );
    let token = emu.pat("alice");
    let enc = "personal-files%2F%C3%89t%C3%A9%20%C3%A0%20Paris%2F100%25%20caf%C3%A9%20%231%3F.txt";
    let (status, body) = emu
        .rest(
            &sw,
            Method::GET,
            &format!("/tree/stat/{enc}"),
            Some(&token),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["Node"]["Path"],
        "personal-files/Été à Paris/100% café #1?.txt"
    );
    // Literal slashes work too.
    let lit = "personal-files/%C3%89t%C3%A9%20%C3%A0%20Paris/100%25%20caf%C3%A9%20%231%3F.txt";
    let (status, _) = emu
        .rest(
            &sw,
            Method::GET,
            &format!("/tree/stat/{lit}"),
            Some(&token),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 200);
    // NFD input finds the NFC name.
    let nfd = "personal-files/E\u{301}te\u{301} a\u{300} Paris";
    let enc_nfd: String =
        percent_encoding::utf8_percent_encode(nfd, percent_encoding::NON_ALPHANUMERIC).to_string();
    let (status, body) = emu
        .rest(
            &sw,
            Method::GET,
            &format!("/tree/stat/{enc_nfd}"),
            Some(&token),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["Node"]["Path"], "personal-files/Été à Paris");
    let (status, err) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files/missing.txt",
            Some(&token),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 404);
    assert!(err["Title"].is_string());
    let (status, _) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/no-such-workspace",
            Some(&token),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn users_never_see_each_others_personal_files() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    put(&emu, "alice", "personal-files/diary.txt", b"private");
    put(&emu, "alice", "common-files/shared.txt", b"public");
    let bob = emu.pat("bob");
    let (status, _) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files/diary.txt",
            Some(&bob),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 404);
    let (_, body) = bulk(&emu, &sw, &bob, json!({"NodePaths": ["personal-files/*"]})).await;
    assert!(
        !node_paths(&body).iter().any(|p| p.contains("diary")),
        "{body}"
    );
    let (status, body) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/common-files/shared.txt",
            Some(&bob),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["Node"]["Size"], "6");
    // Bob cannot move or delete alice's file either: it does not exist for him.
    let (status, _) = emu
        .rest(
            &sw,
            Method::POST,
            "/tree/delete",
            Some(&bob),
            Some(&json!({"Nodes": [{"Path": "personal-files/diary.txt"}]})),
            "restDeleteNodesResponse",
        )
        .await;
    assert_eq!(status, 404);
    let alice = emu.pat("alice");
    let (status, _) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files/diary.txt",
            Some(&alice),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tree_stats_is_an_alias_and_unknown_endpoints_are_rest_errors() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    put(&emu, "bob", "personal-files/z/one.txt", b"1");
    let token = emu.pat("bob");
    let body = json!({"NodePaths": ["personal-files/z", "personal-files/z/*"]});
    let (s1, b1) = bulk(&emu, &sw, &token, body.clone()).await;
    let (s2, b2) = emu
        .rest(
            &sw,
            Method::POST,
            "/tree/stats",
            Some(&token),
            Some(&body),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(node_paths(&b1), node_paths(&b2));
    assert_eq!(
        node_paths(&b2),
        ["personal-files/z", "personal-files/z/one.txt"]
    );
    let (status, _) = emu
        .rest(
            &sw,
            Method::GET,
            "/no/such/thing",
            Some(&token),
            None,
            "restError",
        )
        .await;
    assert_eq!(status, 404);
    // A bad enum value in a request is refused.
    let (status, err) = emu
        .rest(
            &sw,
            Method::POST,
            "/tree/create",
            Some(&token),
            Some(&json!({"Nodes": [{"Path": "personal-files/q", "Type": "FOLDER"}]})),
            "restNodesCollection",
        )
        .await;
    assert_eq!(status, 500, "{err}");
}
