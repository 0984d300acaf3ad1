//! The sample data of `--sample` (and so of `cec mount --demo`) shows what Cells has beyond a
//! bucket, at once (issue 25): a file with several versions, tagged files (one bookmarked) and
//! a file shared by a public link whose public WebDAV view serves it.

mod common;

use common::{Swagger, TestEmu, meta};
use reqwest::Method;
use serde_json::{Value, json};

async fn stat(emu: &TestEmu, token: &str, path: &str) -> Value {
    let (status, text) = emu
        .call(
            Method::GET,
            &format!("/tree/stat/{path}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str::<Value>(&text).unwrap()["Node"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_data_has_versions_tags_and_a_public_link() {
    let emu = TestEmu::start_with(|c| c.sample = true).await;
    let sw = Swagger::load();
    for login in ["alice", "bob"] {
        let token = emu.pat(login);
        // Versions: three, listed as the web UI lists them.
        let (status, body) = emu
            .rest(
                &sw,
                Method::POST,
                "/meta/bulk/get",
                Some(&token),
                Some(&json!({"NodePaths": [cells_emu::sample::VERSIONED_FILE], "Versions": true})),
                "restBulkMetaResponse",
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let versions = body["Nodes"].as_array().cloned().unwrap_or_default();
        assert_eq!(versions.len(), 3, "{login}: {body}");

        // Tags and a bookmark, in the nodes' MetaStore.
        for (path, tags) in cells_emu::sample::TAGGED_FILES {
            let node = stat(&emu, &token, path).await;
            assert_eq!(meta(&node, "usermeta-tags"), Some(json!(tags)), "{path}");
        }
        let node = stat(&emu, &token, cells_emu::sample::BOOKMARKED_FILE).await;
        assert_eq!(meta(&node, "bookmark"), Some(json!("true")));

        // A public link on the shared file, owned by the user, that serves the file.
        let node = stat(&emu, &token, cells_emu::sample::SHARED_FILE).await;
        let shares = meta(&node, "workspaces_shares").expect("shared");
        assert_eq!(shares[0]["Scope"], json!(3), "{shares}");
        let link_uuid = shares[0]["UUID"].as_str().unwrap();
        let (status, link) = emu
            .rest(
                &sw,
                Method::GET,
                &format!("/share/link/{link_uuid}"),
                Some(&token),
                None,
                "restShareLink",
            )
            .await;
        assert_eq!(status, 200, "{link}");
        let url = link["LinkUrl"].as_str().unwrap();
        let png = emu
            .http
            .get(format!("{}{url}/dav/pixel.png", emu.url))
            .send()
            .await
            .unwrap();
        assert_eq!(png.status(), 200, "{url}");
        assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));
    }
}
