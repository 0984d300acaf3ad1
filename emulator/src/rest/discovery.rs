//! What a client reads before it logs in, and the legacy login: `/frontend/bootconf`,
//! `/config/discovery`, the XML `/frontend/state` and `/frontend/session`.
//!
//! Invariants:
//! - Bootconf and discovery answer without a token; the version and build stamp are the
//!   emulated server's (`EMULATED_VERSION`), the revision names the emulator.
//! - The URLs it advertises are built from the request's own `Host` header.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;

use super::wire::{RestError, RestResult, authenticate, int32_of, ok, parse_body};
use super::{BUILD_REVISION, EMULATED_BUILD_STAMP, EMULATED_VERSION};

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

pub(super) async fn bootconf(State(state): State<SharedState>, headers: HeaderMap) -> RestResult {
    let authed = authenticate(&state, &headers).is_ok();
    let (version, stamp, revision) = if authed {
        (
            EMULATED_VERSION.to_string(),
            EMULATED_BUILD_STAMP.to_string(),
            BUILD_REVISION.to_string(),
        )
    } else {
        use md5::Digest;
        (
            hex::encode(md5::Md5::digest(EMULATED_VERSION.as_bytes())),
            String::new(),
            String::new(),
        )
    };
    ok(json!({
        "ajxpResourcesFolder": "plug/gui.ajax/res",
        "ENDPOINT_REST_API": "/a",
        "ENDPOINT_S3_GATEWAY": "/io",
        "ENDPOINT_WEBSOCKET": "/ws/event",
        "FRONTEND_URL": base_url(&headers),
        "PUBLIC_BASEURI": "/",
        "zipEnabled": true,
        "multipleFilesDownloadEnabled": true,
        "customWording": {"title": "Pydio Cells (emulator)", "icon": ""},
        "usersEnabled": true,
        "loggedUser": authed,
        "currentLanguage": "en-us",
        "session_timeout": 1440,
        "client_timeout": 1440,
        "client_timeout_warning": 5,
        "availableLanguages": {"en-us": "English"},
        "usersEditable": true,
        "ajxpVersion": version,
        "ajxpVersionDate": stamp,
        "i18nMessages": {},
        "theme": "material",
        "defaultLanguage": "en-us",
        "backend": {
            "PackageType": "PydioHome",
            "PackageLabel": "Pydio Cells Home Edition",
            "Version": version,
            "BuildRevision": revision,
            "BuildStamp": stamp,
            "License": "agplv3",
            "ServerOffset": 0,
            "PackagingInfo": ["cells-emu: an emulator for tests and demos"],
        },
    }))
}

pub(super) async fn discovery(State(state): State<SharedState>, headers: HeaderMap) -> RestResult {
    let authed = authenticate(&state, &headers).is_ok();
    let base = base_url(&headers);
    let mut out = serde_json::Map::new();
    if authed {
        out.insert("BuildRevision".into(), json!(BUILD_REVISION));
        out.insert("BuildStamp".into(), json!(1_749_115_800i64));
        out.insert("PackageLabel".into(), json!("Pydio Cells Home Edition"));
        out.insert("PackageType".into(), json!("PydioHome"));
        out.insert("Version".into(), json!(EMULATED_VERSION));
    }
    out.insert(
        "Endpoints".into(),
        json!({
            "rest": format!("{base}/a"),
            "openapi": format!("{base}/a/config/discovery/openapi"),
            "s3": format!("{base}/io"),
            "websocket": format!("{base}/ws/event"),
            "oidc": format!("{base}/oidc"),
        }),
    );
    ok(Value::Object(out))
}

fn xml_escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

pub(super) async fn frontend_state(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> RestResult {
    let p = authenticate(&state, &headers)?;
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tree>");
    xml.push_str(&format!(
        "<user id=\"{}\"><personal/><repositories>",
        xml_escape(&p.login)
    ));
    for ws in state.store.workspaces(&p.login) {
        xml.push_str(&format!(
            "<repo id=\"{}\" repositorySlug=\"{}\" access_type=\"gateway\" acl=\"{}\" repository_type=\"{}\"><label>{}</label><description>{}</description></repo>",
            xml_escape(&ws.uuid),
            xml_escape(&ws.slug),
            ws.permission.as_str(),
            if ws.scope == "ROOM" { "cell" } else { "workspace" },
            xml_escape(&ws.label),
            xml_escape(&ws.description),
        ));
    }
    xml.push_str("</repositories><preferences/><special_rights is_admin=\"");
    xml.push_str(if p.admin { "1" } else { "0" });
    xml.push_str("\"/></user></tree>\n");
    Ok(([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct FrontSessionRequest {
    #[serde(default)]
    auth_info: Option<HashMap<String, String>>,
    #[serde(default)]
    client_time: Option<Value>,
    #[serde(default)]
    logout: Option<bool>,
}

pub(super) async fn frontend_session(State(state): State<SharedState>, body: Bytes) -> RestResult {
    let req: FrontSessionRequest = parse_body(&body, "rest.FrontSessionRequest")?;
    let _ = int32_of(&req.client_time)?;
    if req.logout == Some(true) {
        return ok(json!({}));
    }
    let info = req.auth_info.unwrap_or_default();
    let login = info.get("login").map(String::as_str).unwrap_or("");
    let password = info.get("password").map(String::as_str).unwrap_or("");
    let session = tokio::task::spawn_blocking({
        let state = state.clone();
        let (login, password) = (login.to_string(), password.to_string());
        move || state.auth.login_session(&login, &password)
    })
    .await
    .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match session {
        Some(s) => ok(json!({"JWT": s.jwt, "ExpireTime": s.expire_time})),
        None => Err(RestError::new(
            StatusCode::UNAUTHORIZED,
            "Login failed: invalid login or password",
        )),
    }
}
