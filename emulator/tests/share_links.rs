//! Public links (cells-share-versions.md §1): create with the official client's body (its
//! `null`s), read, update with the reference's traps (whole object sent back, hidden user,
//! download counter reset, the three password transitions, custom hash), delete,
//! `/share/resources`, `workspaces_shares`; the public page's 404s; the public WebDAV view
//! (GET, PROPFIND, Basic auth, expiry, download counting) checked with an XML parser and
//! with rclone's webdav backend. Every JSON body is validated against the official swagger.

mod common;

use std::time::Duration;

use common::{Swagger, TestEmu, meta};
use reqwest::Method;
use serde_json::{Value, json};

async fn stat_uuid(emu: &TestEmu, token: &str, path: &str) -> String {
    let (status, text) = emu
        .call(
            Method::GET,
            &format!("/tree/stat/{path}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["Node"]["Uuid"].as_str().unwrap().to_string()
}

async fn put_link(emu: &TestEmu, sw: &Swagger, token: &str, body: &Value) -> (u16, Value) {
    emu.rest(
        sw,
        Method::PUT,
        "/share/link",
        Some(token),
        Some(body),
        "restShareLink",
    )
    .await
}

/// What `cec share PATH` of the official client sends (Go field order, go-swagger nulls).
fn official_create(label: &str, uuid: &str) -> Value {
    json!({"ShareLink": {"Label": label, "Permissions": ["Download", "Preview"], "Policies": null,
        "PoliciesContextEditable": true,
        "RootNodes": [{"AppearsIn": null, "Commits": null, "Uuid": uuid}],
        "ViewTemplateName": "pydio_shared_folder"}})
}

async fn public_get(emu: &TestEmu, path: &str) -> reqwest::Response {
    emu.http
        .get(format!("{}{path}", emu.url))
        .send()
        .await
        .unwrap()
}

async fn propfind(emu: &TestEmu, path: &str, depth: &str, password: Option<&str>) -> (u16, String) {
    let mut req = emu
        .http
        .request(
            Method::from_bytes(b"PROPFIND").unwrap(),
            format!("{}{path}", emu.url),
        )
        .header("Depth", depth);
    if let Some(pw) = password {
        req = req.basic_auth("anyone", Some(pw));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `(href, is_collection, content length)` of each `D:response`, parsed with an XML parser.
fn dav_entries(xml: &str) -> Vec<(String, bool, Option<u64>)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut cur: Option<(String, bool, Option<u64>)> = None;
    let mut text_of = String::new();
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8(e.local_name().as_ref().to_vec()).unwrap();
                match name.as_str() {
                    "response" => cur = Some((String::new(), false, None)),
                    "collection" => cur.as_mut().unwrap().1 = true,
                    _ => {}
                }
                text_of = name;
            }
            Event::Text(t) => {
                let t = t.decode().unwrap().into_owned();
                if let Some(c) = cur.as_mut() {
                    match text_of.as_str() {
                        "href" => c.0 = t,
                        "getcontentlength" => c.2 = t.parse().ok(),
                        _ => {}
                    }
                }
            }
            Event::End(e) => {
                if e.local_name().as_ref() == b"response" {
                    out.push(cur.take().unwrap());
                }
                text_of.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn create_read_update_delete_a_link_with_the_reference_traps() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let alice = emu.pat("alice");
    let store = &emu.state().store;
    store
        .put_bytes(
            "alice",
            "personal-files/pics/MyPublicImage.jpg",
            b"jpeg!",
            None,
        )
        .unwrap();
    let uuid = stat_uuid(&emu, &alice, "personal-files/pics/MyPublicImage.jpg").await;

    // Create with the official client's body: nulls accepted, permissions recomputed.
    let (st, link) = put_link(
        &emu,
        &sw,
        &alice,
        &official_create("MyPublicImage.jpg", &uuid),
    )
    .await;
    assert_eq!(st, 200, "{link}");
    let hash = link["LinkHash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 12);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(link["LinkUrl"], format!("/public/{hash}"));
    assert_eq!(link["Permissions"], json!(["Preview", "Download"]));
    assert_eq!(link["RootNodes"], json!([{"Uuid": uuid}]));
    assert_eq!(link["UserLogin"].as_str().unwrap().len(), 16);
    assert!(link.get("PasswordRequired").is_none());
    let policies = link["Policies"].as_array().unwrap();
    assert!(
        policies
            .iter()
            .any(|p| p["Action"] == "OWNER" && p["Subject"] == "user:alice")
    );
    let link_uuid = link["Uuid"].as_str().unwrap().to_string();

    // GET by Uuid, the same object; another user cannot see it nor edit it.
    let (st, got) = emu
        .rest(
            &sw,
            Method::GET,
            &format!("/share/link/{link_uuid}"),
            Some(&alice),
            None,
            "restShareLink",
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(got, link);
    let bob = emu.pat("bob");
    let (st, _) = emu
        .rest(
            &sw,
            Method::GET,
            &format!("/share/link/{link_uuid}"),
            Some(&bob),
            None,
            "restShareLink",
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = emu
        .rest(
            &sw,
            Method::GET,
            "/share/link/no-such-link",
            Some(&alice),
            None,
            "restShareLink",
        )
        .await;
    assert_eq!(st, 404);

    // The shared node carries workspaces_shares.
    let (_, text) = emu
        .call(
            Method::GET,
            "/tree/stat/personal-files/pics/MyPublicImage.jpg",
            Some(&alice),
            None,
        )
        .await;
    let node: Value = serde_json::from_str(&text).unwrap();
    let shares = meta(&node["Node"], "workspaces_shares").expect("workspaces_shares");
    assert_eq!(shares[0]["UUID"], link_uuid.as_str());
    assert_eq!(shares[0]["Scope"], 3);

    // Refusals: empty label, unknown root, Upload on a read-only root.
    let (st, _) = put_link(&emu, &sw, &alice, &official_create("", &uuid)).await;
    assert_eq!(st, 400);
    let (st, _) = put_link(&emu, &sw, &alice, &official_create("x", "no-such-node")).await;
    assert_eq!(st, 404);
    let team = {
        let admin = emu.pat("admin");
        emu.state()
            .store
            .put_bytes("admin", "team-docs/handbook.pdf", b"pdf", None)
            .unwrap();
        stat_uuid(&emu, &admin, "team-docs/handbook.pdf").await
    };
    let (st, err) = put_link(&emu, &sw, &alice, &json!({"ShareLink": {"Label": "h", "Permissions": ["Preview", "Upload"], "RootNodes": [{"Uuid": team}]}})).await;
    assert_eq!(st, 403, "{err}");

    // Update, sending the whole object back: label changes, the counter restarts.
    let mut upd = link.clone();
    upd["Label"] = json!("Renamed");
    upd["MaxDownloads"] = json!("5");
    let (st, v) = put_link(&emu, &sw, &alice, &json!({"ShareLink": upd})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["Label"], "Renamed");
    assert_eq!(v["MaxDownloads"], "5");
    assert_eq!(v["UserLogin"], link["UserLogin"], "same hidden user");
    assert_eq!(v["LinkHash"], hash.as_str());
    // Without UserLogin: a new hidden user.
    let mut upd2 = v.clone();
    upd2.as_object_mut().unwrap().remove("UserLogin");
    let (st, v2) = put_link(&emu, &sw, &alice, &json!({"ShareLink": upd2})).await;
    assert_eq!(st, 200);
    assert_ne!(v2["UserLogin"], v["UserLogin"]);
    // Without LinkHash: refused (the server would lose the link's address).
    let mut upd3 = v2.clone();
    upd3.as_object_mut().unwrap().remove("LinkHash");
    let (st, _) = put_link(&emu, &sw, &alice, &json!({"ShareLink": upd3})).await;
    assert_eq!(st, 400);
    // Another user: the roots are checked first (bob cannot read alice's file: 404); on a
    // root he can read, he still may not edit her link (403).
    let (st, _) = put_link(&emu, &sw, &bob, &json!({"ShareLink": v2.clone()})).await;
    assert_eq!(st, 404);
    emu.state()
        .store
        .put_bytes("alice", "common-files/c.txt", b"c", None)
        .unwrap();
    let common = stat_uuid(&emu, &alice, "common-files/c.txt").await;
    let (_, cl) = put_link(&emu, &sw, &alice, &official_create("c.txt", &common)).await;
    let (st, _) = put_link(&emu, &sw, &bob, &json!({"ShareLink": cl.clone()})).await;
    assert_eq!(st, 403);
    let (st, _) = emu
        .rest(
            &sw,
            Method::DELETE,
            &format!("/share/link/{}", cl["Uuid"].as_str().unwrap()),
            Some(&alice),
            None,
            "restDeleteShareLinkResponse",
        )
        .await;
    assert_eq!(st, 200);

    // Password transitions: enable (needs a password), change, disable; each one a new
    // hidden user.
    let (st, _) = put_link(
        &emu,
        &sw,
        &alice,
        &json!({"ShareLink": v2.clone(), "PasswordEnabled": true}),
    )
    .await;
    assert_eq!(st, 400, "enabling without a password");
    let (st, p1) = put_link(
        &emu,
        &sw,
        &alice,
        &json!({"ShareLink": v2.clone(), "PasswordEnabled": true, "CreatePassword": "s3cret"}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(p1["PasswordRequired"], true);
    assert_ne!(p1["UserLogin"], v2["UserLogin"]);
    let (st, same) = put_link(
        &emu,
        &sw,
        &alice,
        &json!({"ShareLink": p1.clone(), "PasswordEnabled": true}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        same["UserLogin"], p1["UserLogin"],
        "no transition, same user"
    );
    let (st, p2) = put_link(
        &emu,
        &sw,
        &alice,
        &json!({"ShareLink": same.clone(), "PasswordEnabled": true, "UpdatePassword": "other"}),
    )
    .await;
    assert_eq!(st, 200);
    assert_ne!(p2["UserLogin"], same["UserLogin"]);
    let dav = format!("/public/{hash}/dav/MyPublicImage.jpg");
    let r = emu
        .http
        .get(format!("{}{dav}", emu.url))
        .basic_auth("x", Some("other"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, p3) = put_link(&emu, &sw, &alice, &json!({"ShareLink": p2.clone()})).await;
    assert_eq!(st, 200);
    assert!(p3.get("PasswordRequired").is_none());

    // Custom hash: too short, then taken, then fine.
    let (st, _) = put_link(
        &emu,
        &sw,
        &alice,
        &json!({"ShareLink": p3.clone(), "UpdateCustomHash": "short"}),
    )
    .await;
    assert_eq!(st, 403);
    let (st, c) = put_link(
        &emu,
        &sw,
        &alice,
        &json!({"ShareLink": p3.clone(), "UpdateCustomHash": "my-holiday-pics"}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(c["LinkUrl"], "/public/my-holiday-pics");
    assert_eq!(
        public_get(&emu, &format!("/public/{hash}")).await.status(),
        404
    );
    assert_eq!(
        public_get(&emu, "/public/my-holiday-pics").await.status(),
        200
    );
    let other = stat_uuid(&emu, &alice, "personal-files/pics").await;
    let (_, l2) = put_link(&emu, &sw, &alice, &official_create("pics", &other)).await;
    let (st, _) = put_link(
        &emu,
        &sw,
        &alice,
        &json!({"ShareLink": l2, "UpdateCustomHash": "my-holiday-pics"}),
    )
    .await;
    assert_eq!(st, 500, "hash in use");

    // /share/resources lists the shared roots, with a slim Link.
    let (st, res) = emu
        .rest(
            &sw,
            Method::POST,
            "/share/resources",
            Some(&alice),
            Some(&json!({"ShareType": "LINKS", "OwnedBySubject": true})),
            "restListSharedResourcesResponse",
        )
        .await;
    assert_eq!(st, 200, "{res}");
    let resources = res["Resources"].as_array().unwrap();
    assert_eq!(resources.len(), 2);
    assert_eq!(resources[0]["Node"]["Uuid"], uuid.as_str());
    assert_eq!(
        resources[0]["Node"]["AppearsIn"][0]["WsSlug"],
        "personal-files"
    );
    assert_eq!(
        resources[0]["Node"]["AppearsIn"][0]["Path"],
        "pics/MyPublicImage.jpg"
    );
    assert!(resources[0]["Link"].get("LinkHash").is_none());
    let (st, _) = emu
        .rest(
            &sw,
            Method::POST,
            "/share/resources",
            Some(&alice),
            Some(&json!({"Subject": "bob"})),
            "restListSharedResourcesResponse",
        )
        .await;
    assert_eq!(st, 403);
    let (st, res) = emu
        .rest(
            &sw,
            Method::POST,
            "/share/resources",
            Some(&bob),
            Some(&json!({})),
            "restListSharedResourcesResponse",
        )
        .await;
    assert_eq!(st, 200);
    assert!(res.get("Resources").is_none());

    // Delete: other users 403, unknown 404, then gone everywhere.
    let (st, _) = emu
        .rest(
            &sw,
            Method::DELETE,
            &format!("/share/link/{link_uuid}"),
            Some(&bob),
            None,
            "restDeleteShareLinkResponse",
        )
        .await;
    assert_eq!(st, 403);
    let (st, v) = emu
        .rest(
            &sw,
            Method::DELETE,
            &format!("/share/link/{link_uuid}"),
            Some(&alice),
            None,
            "restDeleteShareLinkResponse",
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["Success"], true);
    let (st, _) = emu
        .rest(
            &sw,
            Method::DELETE,
            &format!("/share/link/{link_uuid}"),
            Some(&alice),
            None,
            "restDeleteShareLinkResponse",
        )
        .await;
    assert_eq!(st, 404);
    let r = public_get(&emu, "/public/my-holiday-pics").await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("Cannot find this link!"));
    let (_, text) = emu
        .call(
            Method::GET,
            "/tree/stat/personal-files/pics/MyPublicImage.jpg",
            Some(&alice),
            None,
        )
        .await;
    let node: Value = serde_json::from_str(&text).unwrap();
    assert!(meta(&node["Node"], "workspaces_shares").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_page_and_dav_view_apply_expiry_password_and_download_limits() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let alice = emu.pat("alice");
    let store = &emu.state().store;
    store
        .put_bytes("alice", "personal-files/share/a.txt", b"alpha", None)
        .unwrap();
    store
        .put_bytes("alice", "personal-files/share/sub/b.txt", b"bravo!", None)
        .unwrap();
    store
        .put_bytes("alice", "personal-files/one.txt", b"single file", None)
        .unwrap();
    let folder = stat_uuid(&emu, &alice, "personal-files/share").await;
    let file = stat_uuid(&emu, &alice, "personal-files/one.txt").await;

    // A folder link: the page, then the DAV view rooted at the folder.
    let (_, fl) = put_link(&emu, &sw, &alice, &official_create("share", &folder)).await;
    let fh = fl["LinkHash"].as_str().unwrap().to_string();
    let r = public_get(&emu, &format!("/public/{fh}")).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(&format!("\"MINISITE\":\"{fh}\"")) && page.contains("PRELOG_USER"),
        "{page}"
    );
    let (st, xml) = propfind(&emu, &format!("/public/{fh}/dav/"), "1", None).await;
    assert_eq!(st, 207, "{xml}");
    let entries = dav_entries(&xml);
    let hrefs: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        hrefs,
        [
            format!("/public/{fh}/dav/"),
            format!("/public/{fh}/dav/a.txt"),
            format!("/public/{fh}/dav/sub/")
        ]
    );
    assert_eq!(
        entries[1],
        (format!("/public/{fh}/dav/a.txt"), false, Some(5))
    );
    assert!(entries[2].1, "sub is a collection");
    let (st, xml) = propfind(&emu, &format!("/public/{fh}/dav/sub"), "1", None).await;
    assert_eq!(st, 207);
    assert_eq!(
        dav_entries(&xml)[1].0,
        format!("/public/{fh}/dav/sub/b.txt")
    );
    let r = public_get(&emu, &format!("/public/{fh}/dav/sub/b.txt")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"bravo!");
    assert_eq!(
        public_get(&emu, &format!("/public/{fh}/dav/../../etc"))
            .await
            .status(),
        404
    );
    assert_eq!(
        public_get(&emu, &format!("/public/{fh}/dav/nope.txt"))
            .await
            .status(),
        404
    );

    // A file link with a password and a download limit of 2.
    let (_, l) = put_link(&emu, &sw, &alice, &json!({"ShareLink": {"Label": "one.txt", "Permissions": ["Preview", "Download"], "RootNodes": [{"Uuid": file}], "ViewTemplateName": "pydio_unique_strip", "MaxDownloads": "2"}, "PasswordEnabled": true, "CreatePassword": "pw"})).await;
    let h = l["LinkHash"].as_str().unwrap().to_string();
    let page = public_get(&emu, &format!("/public/{h}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("PRESET_LOGIN") && page.contains("PASSWORD_AUTH_ONLY"),
        "{page}"
    );
    let url = format!("{}/public/{h}/dav/one.txt", emu.url);
    let r = emu.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Basic realm=\"Link {h}\"").as_str()
    );
    assert_eq!(r.text().await.unwrap(), "Unauthorized.");
    let r = emu
        .http
        .get(&url)
        .basic_auth("x", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (st, xml) = propfind(&emu, &format!("/public/{h}/dav/"), "1", Some("pw")).await;
    assert_eq!(st, 207);
    assert_eq!(
        dav_entries(&xml)[1],
        (format!("/public/{h}/dav/one.txt"), false, Some(11))
    );
    // A ranged continuation does not count; a GET from 0 does.
    let r = emu
        .http
        .get(&url)
        .basic_auth("x", Some("pw"))
        .header("Range", "bytes=7-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"file");
    for _ in 0..2 {
        let r = emu
            .http
            .get(&url)
            .basic_auth("x", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"single file");
    }
    // Counted asynchronously: wait for the counter, then the limit is reached.
    let link_uuid = l["Uuid"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, v) = emu
            .rest(
                &sw,
                Method::GET,
                &format!("/share/link/{link_uuid}"),
                Some(&alice),
                None,
                "restShareLink",
            )
            .await;
        if v["CurrentDownloads"] == "2" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = emu
        .http
        .get(&url)
        .basic_auth("x", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("number of maximum downloads has been reached")
    );
    assert_eq!(
        public_get(&emu, &format!("/public/{h}")).await.status(),
        404
    );
    // An update resets the counter: the link serves again.
    let (_, v) = emu
        .rest(
            &sw,
            Method::GET,
            &format!("/share/link/{link_uuid}"),
            Some(&alice),
            None,
            "restShareLink",
        )
        .await;
    let (st, v) = put_link(
        &emu,
        &sw,
        &alice,
        &json!({"ShareLink": v, "PasswordEnabled": true}),
    )
    .await;
    assert_eq!(st, 200);
    assert!(v.get("CurrentDownloads").is_none(), "{v}");
    let r = emu
        .http
        .get(&url)
        .basic_auth("x", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Expiry.
    let mut expired = v.clone();
    expired["AccessEnd"] = json!(
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 10)
            .to_string()
    );
    let (st, _) = put_link(
        &emu,
        &sw,
        &alice,
        &json!({"ShareLink": expired, "PasswordEnabled": true}),
    )
    .await;
    assert_eq!(st, 200);
    let r = public_get(&emu, &format!("/public/{h}")).await;
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("This link has expired. Please contact")
    );

    // Data deleted: the root is gone.
    store
        .delete_file("alice", "personal-files/share/a.txt")
        .unwrap();
    let (st, _) = emu
        .rest(
            &sw,
            Method::POST,
            "/tree/delete",
            Some(&alice),
            Some(&json!({"Nodes": [{"Path": "personal-files/share"}], "RemovePermanently": true})),
            "restDeleteNodesResponse",
        )
        .await;
    assert_eq!(st, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = public_get(&emu, &format!("/public/{fh}")).await;
        if r.status() == 404 {
            assert!(
                r.text()
                    .await
                    .unwrap()
                    .contains("the original data may have been deleted")
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Unknown hash.
    let r = public_get(&emu, "/public/000000000000").await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("Cannot find this link!"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rclone_lists_and_copies_a_public_link_over_webdav() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let alice = emu.pat("alice");
    let store = &emu.state().store;
    store
        .put_bytes("alice", "personal-files/pub/x.txt", b"xray", None)
        .unwrap();
    store
        .put_bytes("alice", "personal-files/pub/deep/y.bin", &[7u8; 3000], None)
        .unwrap();
    let folder = stat_uuid(&emu, &alice, "personal-files/pub").await;
    let (_, l) = put_link(&emu, &sw, &alice, &json!({"ShareLink": {"Label": "pub", "Permissions": ["Preview", "Download"], "RootNodes": [{"Uuid": folder}]}, "PasswordEnabled": true, "CreatePassword": "rc-pw"})).await;
    let h = l["LinkHash"].as_str().unwrap().to_string();
    let dav_url = format!("{}/public/{h}/dav/", emu.url);
    let out = tokio::process::Command::new("rclone")
        .args(["obscure", "rc-pw"])
        .output()
        .await
        .expect("rclone must be installed");
    let obscured = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let run = |args: Vec<String>| {
        let obscured = obscured.clone();
        let dav_url = dav_url.clone();
        async move {
            let out = tokio::time::timeout(
                Duration::from_secs(120),
                tokio::process::Command::new("rclone")
                    .args([
                        "--config",
                        "/dev/null",
                        "--webdav-url",
                        &dav_url,
                        "--webdav-user",
                        "guest",
                        "--webdav-pass",
                        &obscured,
                    ])
                    .args(&args)
                    .output(),
            )
            .await
            .expect("rclone timed out")
            .expect("rclone must be installed");
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "rclone {args:?}: {text}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let listing = run(vec!["lsf".into(), "-R".into(), ":webdav:".into()]).await;
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(names, ["deep/", "deep/y.bin", "x.txt"]);
    let dest = emu.dir.path().join("rclone-out");
    run(vec![
        "copy".into(),
        ":webdav:".into(),
        dest.display().to_string(),
    ])
    .await;
    assert_eq!(std::fs::read(dest.join("x.txt")).unwrap(), b"xray");
    assert_eq!(
        std::fs::read(dest.join("deep/y.bin")).unwrap(),
        vec![7u8; 3000]
    );
}
