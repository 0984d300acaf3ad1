//! OIDC: discovery, the authorization-code flow through the login form (loopback and OOB
//! redirects), PKCE, refresh-token rotation and reuse detection, revocation, access-token
//! lifetime, and the client/redirect checks.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Swagger, TestEmu, authorize_code};
use reqwest::Method;
use serde_json::Value;
use sha2::Digest;

const LOOPBACK: &str = "http://localhost:3000/servers/callback";

async fn token_call(emu: &TestEmu, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = emu
        .http
        .post(format!("{}/oidc/oauth2/token", emu.url))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn exchange(
    emu: &TestEmu,
    code: &str,
    redirect: &str,
    verifier: Option<&str>,
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("client_id", "cells-client"),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    token_call(emu, &form).await
}

async fn refresh(emu: &TestEmu, rt: &str) -> (u16, Value) {
    token_call(
        emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "cells-client"),
            ("refresh_token", rt),
            ("scope", "openid email profile pydio offline"),
        ],
    )
    .await
}

async fn whoami_status(emu: &TestEmu, sw: &Swagger, token: &str) -> u16 {
    emu.rest(
        sw,
        Method::GET,
        "/tree/stat/personal-files",
        Some(token),
        None,
        "restHeadNodeResponse",
    )
    .await
    .0
}

#[tokio::test]
async fn discovery_document_lists_the_endpoints() {
    let emu = TestEmu::start().await;
    let doc: Value = emu
        .http
        .get(format!("{}/oidc/.well-known/openid-configuration", emu.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], format!("{}/oidc/", emu.url));
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{}/oidc/oauth2/auth", emu.url)
    );
    assert_eq!(
        doc["token_endpoint"],
        format!("{}/oidc/oauth2/token", emu.url)
    );
    assert!(
        doc["code_challenge_methods_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "S256")
    );
}

#[tokio::test]
async fn loopback_code_flow_then_refresh_rotation() {
    let sw = Swagger::load();
    let emu = TestEmu::start().await;
    let code = authorize_code(&emu.url, "alice", "secret-alice", LOOPBACK, None)
        .await
        .unwrap();
    let (status, grant) = exchange(&emu, &code, LOOPBACK, None).await;
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["token_type"], "bearer");
    assert_eq!(grant["expires_in"], 600);
    assert!(grant["id_token"].as_str().unwrap().split('.').count() == 3);
    let at = grant["access_token"].as_str().unwrap().to_string();
    let rt = grant["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(whoami_status(&emu, &sw, &at).await, 200);
    // A code is single use.
    let (status, err) = exchange(&emu, &code, LOOPBACK, None).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_grant");

    // Refresh: new pair; the old access token still works until it expires.
    let (status, g2) = refresh(&emu, &rt).await;
    assert_eq!(status, 200, "{g2}");
    let rt2 = g2["refresh_token"].as_str().unwrap().to_string();
    let at2 = g2["access_token"].as_str().unwrap().to_string();
    assert_ne!(rt2, rt);
    assert_ne!(at2, at);
    assert_eq!(whoami_status(&emu, &sw, &at2).await, 200);
    // Reusing the old refresh token is refused, and revokes the chain.
    let (status, err) = refresh(&emu, &rt).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_grant");
    assert!(!err.to_string().contains(&rt), "no token in errors");
    let (status, _) = refresh(&emu, &rt2).await;
    assert_eq!(status, 400, "the chain was revoked after reuse");
    assert_eq!(whoami_status(&emu, &sw, &at2).await, 401);
}

#[tokio::test]
async fn oob_flow_shows_the_code_on_a_page() {
    let emu = TestEmu::start().await;
    let oob = format!("{}/oauth2/oob", emu.url);
    let code = authorize_code(&emu.url, "bob", "secret-bob", &oob, None)
        .await
        .unwrap();
    let page = emu
        .http
        .get(format!("{oob}?code={code}&state=abcdefghijklmnop"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let shown = html
        .split("<code id=\"code\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap();
    assert_eq!(shown, code);
    let (status, grant) = exchange(&emu, shown, &oob, None).await;
    assert_eq!(status, 200, "{grant}");
    // The redirect_uri must match the one of the authorization.
    let code = authorize_code(&emu.url, "bob", "secret-bob", &oob, None)
        .await
        .unwrap();
    let (status, err) = exchange(&emu, &code, LOOPBACK, None).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn pkce_is_checked_when_sent() {
    let emu = TestEmu::start().await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-extra-entropy";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let code = authorize_code(
        &emu.url,
        "alice",
        "secret-alice",
        LOOPBACK,
        Some(&challenge),
    )
    .await
    .unwrap();
    let (status, err) = exchange(
        &emu,
        &code,
        LOOPBACK,
        Some("wrong-verifier-wrong-verifier-wrong-verifier-xx"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_grant");
    // The code was consumed by the failed attempt: start again.
    let code = authorize_code(
        &emu.url,
        "alice",
        "secret-alice",
        LOOPBACK,
        Some(&challenge),
    )
    .await
    .unwrap();
    let (status, err) = exchange(&emu, &code, LOOPBACK, None).await;
    assert_eq!(status, 400, "missing verifier: {err}");
    let code = authorize_code(
        &emu.url,
        "alice",
        "secret-alice",
        LOOPBACK,
        Some(&challenge),
    )
    .await
    .unwrap();
    let (status, grant) = exchange(&emu, &code, LOOPBACK, Some(verifier)).await;
    assert_eq!(status, 200, "{grant}");
}

#[tokio::test]
async fn bad_client_redirect_password_and_grant_are_refused() {
    let emu = TestEmu::start().await;
    // Redirect URI not registered: error page, no redirect.
    let r = authorize_code(
        &emu.url,
        "alice",
        "secret-alice",
        "http://localhost:3636/servers/callback",
        None,
    )
    .await;
    assert!(r.unwrap_err().contains("400"));
    let r = authorize_code(
        &emu.url,
        "alice",
        "secret-alice",
        "http://localhost:3000/other",
        None,
    )
    .await;
    assert!(r.is_err());
    // Unknown client.
    let resp = emu.http.get(format!("{}/oidc/oauth2/auth?response_type=code&client_id=evil&state=abcdefghijk&redirect_uri={LOOPBACK}", emu.url)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // Weak state: redirected back with an error.
    let resp = emu.http.get(format!("{}/oidc/oauth2/auth?response_type=code&client_id=cells-client&state=abc&redirect_uri={LOOPBACK}", emu.url)).send().await.unwrap();
    assert!(resp.status().is_redirection());
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=invalid_state")
    );
    // Wrong password: the form again, 401, no redirect.
    let r = authorize_code(&emu.url, "alice", "nope", LOOPBACK, None).await;
    assert!(r.unwrap_err().contains("401"));
    // Token endpoint errors are OAuth JSON.
    let (status, err) = token_call(
        &emu,
        &[("grant_type", "password"), ("client_id", "cells-client")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "unsupported_grant_type");
    let (status, err) = token_call(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "other"),
            ("refresh_token", "x"),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(err["error"], "invalid_client");
    let (status, err) = refresh(&emu, "ory_rt_garbage.garbage").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn access_tokens_expire_after_the_configured_ttl_and_can_be_revoked() {
    let sw = Swagger::load();
    let emu = TestEmu::start_with(|c| c.access_token_ttl = Duration::from_secs(1)).await;
    let code = authorize_code(&emu.url, "alice", "secret-alice", LOOPBACK, None)
        .await
        .unwrap();
    let (_, grant) = exchange(&emu, &code, LOOPBACK, None).await;
    assert_eq!(grant["expires_in"], 1);
    let at = grant["access_token"].as_str().unwrap().to_string();
    assert_eq!(whoami_status(&emu, &sw, &at).await, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, err) = emu
        .rest(
            &sw,
            Method::GET,
            "/tree/stat/personal-files",
            Some(&at),
            None,
            "restHeadNodeResponse",
        )
        .await;
    assert_eq!(status, 401);
    assert!(err["Title"].as_str().unwrap().contains("expired"));
    // The refresh token still works and gives a fresh access token.
    let (status, g2) = refresh(&emu, grant["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let at2 = g2["access_token"].as_str().unwrap().to_string();
    assert_eq!(whoami_status(&emu, &sw, &at2).await, 200);
    // Revocation.
    let resp = emu
        .http
        .post(format!("{}/oidc/oauth2/revoke", emu.url))
        .form(&[("token", at2.as_str()), ("client_id", "cells-client")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(whoami_status(&emu, &sw, &at2).await, 401);
    // expire_all expires access tokens but refresh tokens survive.
    let (_, g3) = refresh(&emu, g2["refresh_token"].as_str().unwrap()).await;
    let at3 = g3["access_token"].as_str().unwrap().to_string();
    emu.state().auth.expire_all();
    assert_eq!(whoami_status(&emu, &sw, &at3).await, 401);
    let (status, _) = refresh(&emu, g3["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
}
