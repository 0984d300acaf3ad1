//! OIDC under `/oidc` (what Hydra serves inside Cells) and the `/oauth2/*` pages of the web
//! app: discovery document, authorization endpoint with a plain-HTML login form, token
//! endpoint (authorization_code with optional PKCE S256, refresh_token with rotation),
//! revocation, userinfo, and the `/oauth2/oob` page that shows the code.
//!
//! Invariants:
//! - Only the static public client `cells-client` exists, with exactly its real redirect
//!   URIs: `http://localhost:3000/servers/callback` and `<server url>/oauth2/oob`, where the
//!   server URL is taken from the request's `Host` (as Cells does with its external URLs).
//! - An invalid client or redirect URI is answered with an error page, never a redirect;
//!   other authorization errors are redirected to the client with `error` and `state`.
//! - Token endpoint errors are standard OAuth JSON (`error`, `error_description`);
//!   responses carrying tokens are `Cache-Control: no-store`; nothing logs a secret.
//! - Deviation: URLs in the discovery document use the request's scheme (the emulator
//!   serves plain HTTP) where Cells v4 always advertises `https://`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::SharedState;
use crate::auth::AuthorizationRequest;

/// The CLI's OAuth client id.
pub const CELLS_CLIENT_ID: &str = "cells-client";
/// Its loopback redirect URI.
pub const LOOPBACK_REDIRECT: &str = "http://localhost:3000/servers/callback";
const SCOPES: &str = "openid email profile pydio offline";

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/oidc/.well-known/openid-configuration", get(discovery))
        .route("/oidc/.well-known/jwks.json", get(jwks))
        .route("/oidc/oauth2/auth", get(authorize))
        .route("/oidc/oauth2/token", post(token))
        .route("/oidc/oauth2/revoke", post(revoke))
        .route("/oidc/userinfo", get(userinfo))
        .route("/oauth2/login", get(login_form).post(login_submit))
        .route("/oauth2/oob", get(oob))
}

/// `http://<Host>` of a request.
pub fn server_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn redirect_allowed(headers: &HeaderMap, redirect_uri: &str) -> bool {
    redirect_uri == LOOPBACK_REDIRECT
        || redirect_uri == format!("{}/oauth2/oob", server_url(headers))
}

async fn discovery(headers: HeaderMap) -> Response {
    let base = server_url(&headers);
    let issuer = format!("{base}/oidc/");
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/oidc/oauth2/auth"),
        "token_endpoint": format!("{base}/oidc/oauth2/token"),
        "revocation_endpoint": format!("{base}/oidc/oauth2/revoke"),
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "jwks_uri": format!("{base}/oidc/.well-known/jwks.json"),
        "end_session_endpoint": format!("{base}/oidc/oauth2/sessions/logout"),
        "response_types_supported": ["code", "code id_token", "id_token", "token id_token", "token", "token id_token code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "scopes_supported": ["offline_access", "offline", "openid", "email", "profile", "pydio"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["HS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "none"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "claims_supported": ["sub"],
        "response_modes_supported": ["query", "fragment"],
    }))
    .into_response()
}

async fn jwks() -> Response {
    axum::Json(json!({"keys": []})).into_response()
}

fn error_page(status: StatusCode, error: &str, description: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><title>Error</title></head><body><h1>{}</h1><p id=\"error-description\">{}</p></body></html>",
        html_escape(error),
        html_escape(description)
    );
    (status, Html(body)).into_response()
}

fn html_escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(_) => return uri.to_string(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

async fn authorize(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let client_id = get("client_id");
    if client_id != CELLS_CLIENT_ID {
        return error_page(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method).",
        );
    }
    let redirect_uri = get("redirect_uri");
    if !redirect_allowed(&headers, redirect_uri) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The 'redirect_uri' parameter does not match any of the OAuth 2.0 Client's pre-registered redirect urls.",
        );
    }
    let oauth_state = get("state");
    let fail = |error: &str, description: &str| -> Response {
        Redirect::to(&with_query(
            redirect_uri,
            &[
                ("error", error),
                ("error_description", description),
                ("state", oauth_state),
            ],
        ))
        .into_response()
    };
    if get("response_type") != "code" {
        return fail(
            "unsupported_response_type",
            "The authorization server does not support obtaining a token using this method.",
        );
    }
    if oauth_state.len() < 8 {
        return fail(
            "invalid_state",
            "The state is missing or does not have enough characters and is therefore considered too weak.",
        );
    }
    let scope = if get("scope").is_empty() {
        "openid".to_string()
    } else {
        get("scope").to_string()
    };
    if let Some(bad) = scope
        .split(' ')
        .find(|s| !s.is_empty() && !SCOPES.split(' ').any(|a| a == *s))
    {
        return fail(
            "invalid_scope",
            &format!("The OAuth 2.0 Client is not allowed to request scope '{bad}'."),
        );
    }
    let challenge = get("code_challenge");
    let code_challenge = if challenge.is_empty() {
        None
    } else {
        let method = get("code_challenge_method");
        if method != "S256" {
            return fail(
                "invalid_request",
                "Clients must use code_challenge_method=S256, plain is not allowed.",
            );
        }
        Some(challenge.to_string())
    };
    let login_challenge = state.auth.begin_login(
        AuthorizationRequest {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            scope,
            code_challenge,
        },
        oauth_state,
    );
    Redirect::to(&format!("/oauth2/login?login_challenge={login_challenge}")).into_response()
}

fn login_page(challenge: &str, message: Option<&str>) -> String {
    format!(
        "<!doctype html><html><head><title>Pydio Cells - Login</title></head><body>\
<h1>Sign in to Pydio Cells</h1>{}\
<form id=\"login-form\" method=\"post\" action=\"/oauth2/login\">\
<input type=\"hidden\" name=\"login_challenge\" value=\"{}\">\
<label>Login <input type=\"text\" name=\"login\" autocomplete=\"username\"></label>\
<label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\"></label>\
<button type=\"submit\">Enter</button></form></body></html>",
        message
            .map(|m| format!("<p id=\"login-error\">{}</p>", html_escape(m)))
            .unwrap_or_default(),
        html_escape(challenge)
    )
}

async fn login_form(
    State(state): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let challenge = q.get("login_challenge").map(String::as_str).unwrap_or("");
    if state.auth.login_request(challenge).is_none() {
        return error_page(
            StatusCode::NOT_FOUND,
            "login_challenge_not_found",
            "The login request is unknown or expired; start again from the client.",
        );
    }
    Html(login_page(challenge, None)).into_response()
}

async fn login_submit(
    State(state): State<SharedState>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let challenge = get("login_challenge");
    if state.auth.login_request(challenge).is_none() {
        return error_page(
            StatusCode::NOT_FOUND,
            "login_challenge_not_found",
            "The login request is unknown or expired; start again from the client.",
        );
    }
    let auth = state.auth.clone();
    let (login, password) = (get("login").to_string(), get("password").to_string());
    let principal = tokio::task::spawn_blocking(move || auth.check_password(&login, &password))
        .await
        .ok()
        .flatten();
    let Some(principal) = principal else {
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_page(
                challenge,
                Some("Login failed: invalid login or password"),
            )),
        )
            .into_response();
    };
    let Some((request, oauth_state)) = state.auth.finish_login(challenge) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "login_challenge_not_found",
            "The login request is unknown or expired.",
        );
    };
    let redirect_uri = request.redirect_uri.clone();
    let scope = request.scope.clone();
    let code = state.auth.issue_code(&principal.login, request);
    Redirect::to(&with_query(
        &redirect_uri,
        &[("code", &code), ("scope", &scope), ("state", &oauth_state)],
    ))
    .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The client id from the form, or from a Basic `Authorization` header (public clients).
fn client_id_of(form: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(c) = form.get("client_id").filter(|c| !c.is_empty()) {
        return c.clone();
    }
    use base64::Engine;
    headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split(':').next().map(|u| u.to_string()))
        .unwrap_or_default()
}

async fn token(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let client_id = client_id_of(&form, &headers);
    if client_id != CELLS_CLIENT_ID {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method).",
        );
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let auth = state.auth.clone();
    let grant_type = get("grant_type");
    let result = match grant_type.as_str() {
        "authorization_code" => {
            let (code, redirect_uri, verifier) = (
                get("code"),
                get("redirect_uri"),
                form.get("code_verifier").cloned(),
            );
            tokio::task::spawn_blocking(move || {
                auth.exchange_code(&code, &client_id, &redirect_uri, verifier.as_deref())
            })
            .await
        }
        "refresh_token" => {
            let rt = get("refresh_token");
            tokio::task::spawn_blocking(move || auth.refresh(&rt, &client_id)).await
        }
        "" => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request is missing a required parameter: grant_type.",
            );
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            );
        }
    };
    match result {
        Ok(Ok(grant)) => {
            let mut body = json!({
                "access_token": grant.access_token,
                "expires_in": grant.expires_in,
                "id_token": grant.id_token,
                "scope": grant.scope,
                "token_type": "bearer",
            });
            if let Some(rt) = grant.refresh_token {
                body["refresh_token"] = json!(rt);
            }
            (
                StatusCode::OK,
                [
                    (header::CACHE_CONTROL, "no-store"),
                    (header::PRAGMA, "no-cache"),
                ],
                axum::Json(body),
            )
                .into_response()
        }
        Ok(Err(e)) => oauth_error(StatusCode::BAD_REQUEST, e.code, &e.description),
        Err(_) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        ),
    }
}

async fn revoke(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if client_id_of(&form, &headers) != CELLS_CLIENT_ID {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
        );
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let auth = state.auth.clone();
    let _ = tokio::task::spawn_blocking(move || auth.revoke(&token)).await;
    StatusCode::OK.into_response()
}

async fn userinfo(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth.verify_header(h) {
        Ok(p) => axum::Json(json!({"sub": p.login, "name": p.login})).into_response(),
        Err(e) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "request_unauthorized",
            &e.to_string(),
        ),
    }
}

async fn oob(Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(err) = q.get("error") {
        let desc = q.get("error_description").cloned().unwrap_or_default();
        return error_page(StatusCode::BAD_REQUEST, err, &desc);
    }
    let code = q.get("code").cloned().unwrap_or_default();
    Html(format!(
        "<!doctype html><html><head><title>Pydio Cells - Authorization code</title></head><body>\
<h1>Authorization code</h1><p>Copy this code and paste it into your client:</p>\
<pre><code id=\"code\">{}</code></pre></body></html>",
        html_escape(&code)
    ))
    .into_response()
}
