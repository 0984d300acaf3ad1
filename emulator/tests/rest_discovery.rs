//! REST discovery and identity: bootconf, config/discovery, frontend/state (XML), the legacy
//! session login, 401s, and the swagger validator itself.

mod common;

use common::{Swagger, TestEmu};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn swagger_validator_rejects_wrong_shapes() {
    let sw = Swagger::load();
    sw.validate(
        "restHeadNodeResponse",
        &json!({"Node": {"Path": "a", "Size": "12", "Type": "LEAF"}}),
    );
    assert!(
        !sw.is_valid("restHeadNodeResponse", &json!({"Node": {"Size": 12}})),
        "int64 must be a string"
    );
    assert!(
        !sw.is_valid("restHeadNodeResponse", &json!({"Node": {"Type": "FILE"}})),
        "enum names only"
    );
    assert!(
        !sw.is_valid("restHeadNodeResponse", &json!({"Node": {"Mtime": "1"}})),
        "unknown field"
    );
    assert!(
        !sw.is_valid("treeNode", &json!({"MetaStore": {"name": 3}})),
        "MetaStore values are strings"
    );
}

#[tokio::test]
async fn bootconf_hides_version_from_anonymous_callers() {
    let emu = TestEmu::start().await;
    let (status, text) = emu
        .call(Method::GET, "/frontend/bootconf", None, None)
        .await;
    assert_eq!(status, 200);
    let anon: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(anon["ENDPOINT_REST_API"], "/a");
    assert_eq!(anon["ENDPOINT_S3_GATEWAY"], "/io");
    assert_eq!(anon["ENDPOINT_WEBSOCKET"], "/ws/event");
    assert!(anon["PUBLIC_BASEURI"].is_string());
    let v = anon["backend"]["Version"].as_str().unwrap();
    assert_eq!(v.len(), 32, "anonymous callers see a hash, got {v}");
    assert_ne!(v, cells_emu::rest::EMULATED_VERSION);

    let token = emu.pat("alice");
    let (status, text) = emu
        .call(Method::GET, "/frontend/bootconf", Some(&token), None)
        .await;
    assert_eq!(status, 200);
    let authed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        authed["backend"]["Version"],
        cells_emu::rest::EMULATED_VERSION
    );
    let stamp = authed["backend"]["BuildStamp"].as_str().unwrap();
    assert!(
        time::PrimitiveDateTime::parse(
            stamp,
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]")
        )
        .is_ok(),
        "{stamp}"
    );
}

#[tokio::test]
async fn discovery_matches_swagger_and_hides_version() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let (status, anon) = emu
        .rest(
            &sw,
            Method::GET,
            "/config/discovery",
            None,
            None,
            "restDiscoveryResponse",
        )
        .await;
    assert_eq!(status, 200);
    assert!(anon.get("Version").is_none());
    assert!(anon["Endpoints"]["rest"].as_str().unwrap().ends_with("/a"));
    let token = emu.pat("bob");
    let (status, authed) = emu
        .rest(
            &sw,
            Method::GET,
            "/config/discovery",
            Some(&token),
            None,
            "restDiscoveryResponse",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(authed["Version"], cells_emu::rest::EMULATED_VERSION);
}

#[tokio::test]
async fn frontend_state_is_xml_with_the_user_login() {
    let emu = TestEmu::start().await;
    let token = emu.pat("alice");
    let resp = emu
        .http
        .get(format!("{}/a/frontend/state", emu.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("xml")
    );
    let xml = resp.text().await.unwrap();
    // The first <user> element's id is the login (what `cec` reads).
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut user_id = None;
    let mut slugs = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                for a in e.attributes() {
                    let a = a.unwrap();
                    let key = String::from_utf8(a.key.as_ref().to_vec()).unwrap();
                    let val = a.unescape_value().unwrap().to_string();
                    if name == "user" && key == "id" && user_id.is_none() {
                        user_id = Some(val.clone());
                    }
                    if name == "repo" && key == "repositorySlug" {
                        slugs.push(val);
                    }
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(user_id.as_deref(), Some("alice"));
    assert!(slugs.contains(&"personal-files".to_string()), "{slugs:?}");
    assert!(slugs.contains(&"common-files".to_string()), "{slugs:?}");

    let (status, _) = emu.call(Method::GET, "/frontend/state", None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn missing_invalid_and_expired_tokens_get_401_rest_errors() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let body = json!({"NodePaths": ["", "/*"]});
    let (status, err) = emu
        .rest(
            &sw,
            Method::POST,
            "/meta/bulk/get",
            None,
            Some(&body),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(status, 401);
    assert!(err["Title"].is_string());
    let (status, _) = emu
        .rest(
            &sw,
            Method::POST,
            "/meta/bulk/get",
            Some("not-a-token"),
            Some(&body),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(status, 401);
    // A forged token in the right shape.
    let forged = format!("{}.{}", "A".repeat(43), "B".repeat(43));
    let (status, _) = emu
        .rest(
            &sw,
            Method::POST,
            "/meta/bulk/get",
            Some(&forged),
            Some(&body),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(status, 401);

    let token = emu.pat("alice");
    let (status, _) = emu
        .rest(
            &sw,
            Method::POST,
            "/meta/bulk/get",
            Some(&token),
            Some(&body),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(status, 200);
    emu.state().auth.expire_all();
    let (status, err) = emu
        .rest(
            &sw,
            Method::POST,
            "/meta/bulk/get",
            Some(&token),
            Some(&body),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(status, 401);
    assert!(err["Title"].as_str().unwrap().contains("expired"), "{err}");
    // A token minted after expire_all works.
    let fresh = emu.pat("alice");
    let (status, _) = emu
        .rest(
            &sw,
            Method::POST,
            "/meta/bulk/get",
            Some(&fresh),
            Some(&body),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn session_login_yields_a_usable_jwt() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let login =
        json!({"AuthInfo": {"login": "bob", "password": "secret-bob", "type": "credentials"}});
    let (status, body) = emu
        .rest(
            &sw,
            Method::POST,
            "/frontend/session",
            None,
            Some(&login),
            "restFrontSessionResponse",
        )
        .await;
    assert_eq!(status, 200);
    let jwt = body["JWT"].as_str().unwrap().to_string();
    assert_eq!(jwt.split('.').count(), 3);
    let exp = body["ExpireTime"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(exp > now && exp <= now + 601, "{exp} vs {now}");
    let (status, node) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files",
            Some(&jwt),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 200, "{node}");

    let bad = json!({"AuthInfo": {"login": "bob", "password": "wrong", "type": "credentials"}});
    let (status, err) = emu
        .rest(
            &sw,
            Method::POST,
            "/frontend/session",
            None,
            Some(&bad),
            "restFrontSessionResponse",
        )
        .await;
    assert_eq!(status, 401);
    assert!(!err.to_string().contains("wrong"));
    // Tampered JWT.
    let mut tampered = jwt.clone();
    tampered.pop();
    tampered.push(if jwt.ends_with('A') { 'B' } else { 'A' });
    let (status, _) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files",
            Some(&tampered),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn unknown_request_fields_are_refused_like_old_servers() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let token = emu.pat("alice");
    let body = json!({"NodePaths": ["personal-files/*"], "Bogus": 1});
    let (status, err) = emu
        .rest(
            &sw,
            Method::POST,
            "/meta/bulk/get",
            Some(&token),
            Some(&body),
            "restBulkMetaResponse",
        )
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        err["Title"],
        "unknown field \"Bogus\" in rest.GetBulkMetaRequest"
    );
    let body =
        json!({"Nodes": [{"Path": "personal-files/x", "Type": "COLLECTION", "Colour": "red"}]});
    let (status, err) = emu
        .rest(
            &sw,
            Method::POST,
            "/tree/create",
            Some(&token),
            Some(&body),
            "restNodesCollection",
        )
        .await;
    assert_eq!(status, 500);
    assert!(
        err["Title"]
            .as_str()
            .unwrap()
            .contains("unknown field \"Colour\""),
        "{err}"
    );
}
