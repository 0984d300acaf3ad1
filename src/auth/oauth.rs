//! The OAuth2 authorization-code flow of the `cells-client` public client (PKCE S256 and
//! `state`), the loopback callback on `http://localhost:3000/servers/callback`, the
//! out-of-band redirect to the server's `/oauth2/oob` page, the refresh-token grant, and the
//! legacy login/password session. All HTTP goes through the caller's one `reqwest::Client`.
//!
//! Invariants:
//! - A callback whose `state` differs from the one sent is refused; the PKCE verifier never
//!   leaves this process except in the code exchange.
//! - Errors never carry a code, a token or a password.

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    TokenResponse, TokenUrl,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::TokenSet;
use crate::api::ApiError;

/// The official client's OAuth client id (a public client, no secret).
pub const CLIENT_ID: &str = "cells-client";
/// The scopes `cec` asks for; `offline` yields the refresh token.
pub const SCOPES: [&str; 5] = ["openid", "email", "profile", "pydio", "offline"];
/// The loopback redirect registered for `cells-client` on every Cells server.
pub const LOOPBACK_REDIRECT: &str = "http://localhost:3000/servers/callback";
pub const LOOPBACK_PORT: u16 = 3000;

/// The out-of-band redirect: the server's page that shows the code to paste.
pub fn oob_redirect(base_url: &str) -> String {
    format!("{}/oauth2/oob", base_url.trim_end_matches('/'))
}

/// Why a token grant failed.
#[derive(Debug)]
pub enum GrantError {
    /// The server refused the grant (invalid/expired/reused code or refresh token).
    Rejected(String),
    /// Could not talk to the server, or it answered nonsense.
    Transport(ApiError),
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

fn client(base_url: &str, redirect: Option<&str>) -> Result<Client, ApiError> {
    let base = base_url.trim_end_matches('/');
    let bad = |e: url::ParseError| ApiError::InvalidRequest(format!("bad server URL: {e}"));
    let mut c = BasicClient::new(ClientId::new(CLIENT_ID.into()))
        .set_auth_uri(AuthUrl::new(format!("{base}/oidc/oauth2/auth")).map_err(bad)?)
        .set_token_uri(TokenUrl::new(format!("{base}/oidc/oauth2/token")).map_err(bad)?);
    if let Some(r) = redirect {
        c = c.set_redirect_uri(RedirectUrl::new(r.to_string()).map_err(bad)?);
    }
    Ok(c)
}

/// Send one of oauth2's requests with our reqwest client.
async fn send(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, ApiError> {
    let (parts, body) = request.into_parts();
    let mut builder = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .header("Cache-Control", "no-cache")
        .body(body);
    builder = builder.timeout(Duration::from_secs(60));
    let resp = builder
        .send()
        .await
        .map_err(|e| ApiError::Network(crate::api::http::describe_reqwest_error(&e)))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = crate::api::body::read_capped(resp, crate::api::body::TOKEN)
        .await
        .map_err(ApiError::from)?;
    let mut out = http::Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        *h = headers;
    }
    out.body(bytes.to_vec())
        .map_err(|e| ApiError::InvalidResponse(e.to_string()))
}

fn grant_error<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    e: RequestTokenError<ApiError, T>,
) -> GrantError {
    let _ = std::marker::PhantomData::<RE>;
    match e {
        RequestTokenError::ServerResponse(r) => GrantError::Rejected(
            serde_json::to_value(&r)
                .ok()
                .and_then(|v| v.get("error").and_then(|x| x.as_str()).map(str::to_string))
                .unwrap_or_else(|| "refused".into()),
        ),
        RequestTokenError::Request(api) => GrantError::Transport(api),
        RequestTokenError::Parse(_, _) => GrantError::Transport(ApiError::InvalidResponse(
            "the token endpoint answered something that is not an OAuth token".into(),
        )),
        RequestTokenError::Other(s) => {
            let short: String = s.chars().take(120).collect();
            if short.contains("401") || short.contains("400") || short.contains("403") {
                GrantError::Rejected(short)
            } else {
                GrantError::Transport(ApiError::InvalidResponse(short))
            }
        }
    }
}

fn token_set(t: &oauth2::basic::BasicTokenResponse) -> TokenSet {
    TokenSet {
        access_token: t.access_token().secret().clone(),
        refresh_token: t
            .refresh_token()
            .map(|r| r.secret().clone())
            .unwrap_or_default(),
        expires_in: t.expires_in().map(|d| d.as_secs() as i64).unwrap_or(600),
    }
}

/// An authorization in progress: the URL to visit and what is needed to finish.
pub struct PendingAuthorization {
    pub url: String,
    pub redirect_uri: String,
    state: String,
    verifier: PkceCodeVerifier,
}

impl std::fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("url", &self.url)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl PendingAuthorization {
    /// Start an authorization for `redirect_uri` ([`LOOPBACK_REDIRECT`] or [`oob_redirect`]).
    pub fn new(base_url: &str, redirect_uri: &str) -> Result<PendingAuthorization, ApiError> {
        let c = client(base_url, Some(redirect_uri))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = c.authorize_url(CsrfToken::new_random);
        for s in SCOPES {
            req = req.add_scope(Scope::new(s.into()));
        }
        let (url, state) = req.set_pkce_challenge(challenge).url();
        Ok(PendingAuthorization {
            url: url.to_string(),
            redirect_uri: redirect_uri.to_string(),
            state: state.secret().clone(),
            verifier,
        })
    }

    pub fn state(&self) -> &str {
        &self.state
    }

    /// Exchange the code for tokens.
    pub async fn exchange(
        self,
        http: &reqwest::Client,
        base_url: &str,
        code: &str,
    ) -> Result<TokenSet, ApiError> {
        let c = client(base_url, Some(&self.redirect_uri))?;
        let owned = http.clone();
        let call = move |req: oauth2::HttpRequest| {
            let http = owned.clone();
            async move { send(&http, req).await }
        };
        let result = c
            .exchange_code(AuthorizationCode::new(code.trim().to_string()))
            .set_pkce_verifier(self.verifier)
            .request_async(&call)
            .await;
        match result {
            Ok(t) => Ok(token_set(&t)),
            Err(e) => match grant_error::<ApiError, _>(e) {
                GrantError::Rejected(why) => Err(ApiError::Auth(format!(
                    "the server refused the authorization code ({why}): start `cec config add oauth` again"
                ))),
                GrantError::Transport(e) => Err(e),
            },
        }
    }
}

/// The refresh-token grant (with the scopes, as the official SDK sends them).
pub async fn refresh(
    http: &reqwest::Client,
    base_url: &str,
    refresh_token: &str,
) -> Result<TokenSet, GrantError> {
    let c = client(base_url, None).map_err(GrantError::Transport)?;
    let owned = http.clone();
    let call = move |req: oauth2::HttpRequest| {
        let http = owned.clone();
        async move { send(&http, req).await }
    };
    let rt = RefreshToken::new(refresh_token.to_string());
    let mut req = c.exchange_refresh_token(&rt);
    for s in SCOPES {
        req = req.add_scope(Scope::new(s.into()));
    }
    match req.request_async(&call).await {
        Ok(t) => Ok(token_set(&t)),
        Err(e) => Err(grant_error::<ApiError, _>(e)),
    }
}

/// Listen for the loopback callback. `Err` when port 3000 is taken.
pub async fn bind_loopback() -> std::io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", LOOPBACK_PORT)).await
}

/// Serve the loopback listener until the callback arrives; return the code. Requests for
/// other paths get a 404 and are ignored; a wrong `state` ends the flow with an error.
pub async fn wait_for_callback(listener: TcpListener, state: &str) -> Result<String, ApiError> {
    loop {
        let (mut sock, _) = listener
            .accept()
            .await
            .map_err(|e| ApiError::Local(format!("loopback listener: {e}")))?;
        let mut buf = Vec::with_capacity(2048);
        let mut chunk = [0u8; 2048];
        loop {
            let n = sock.read(&mut chunk).await.unwrap_or_default();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 16 * 1024 {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/")
            .to_string();
        let parsed = url::Url::parse(&format!("http://localhost{target}"));
        let Ok(parsed) = parsed else { continue };
        if parsed.path() != "/servers/callback" {
            let _ = respond(&mut sock, "404 Not Found", "Not found").await;
            continue;
        }
        let mut code = None;
        let mut got_state = None;
        let mut error = None;
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "code" => code = Some(v.into_owned()),
                "state" => got_state = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                _ => {}
            }
        }
        if let Some(err) = error {
            let _ = respond(&mut sock, "400 Bad Request", "Authorization failed.").await;
            return Err(ApiError::Auth(format!(
                "the server refused the authorization ({err})"
            )));
        }
        if got_state.as_deref() != Some(state) {
            let _ = respond(&mut sock, "400 Bad Request", "Wrong state.").await;
            return Err(ApiError::Auth(
                "the authorization callback carried a wrong state: aborted (retry `cec config add oauth`)"
                    .into(),
            ));
        }
        let Some(code) = code.filter(|c| !c.is_empty()) else {
            let _ = respond(&mut sock, "400 Bad Request", "No code.").await;
            return Err(ApiError::Auth(
                "the authorization callback carried no code".into(),
            ));
        };
        let _ = respond(
            &mut sock,
            "200 OK",
            "cec is now authorized. You can close this window and go back to your shell.",
        )
        .await;
        return Ok(code);
    }
}

async fn respond(
    sock: &mut tokio::net::TcpStream,
    status: &str,
    text: &str,
) -> std::io::Result<()> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>cec</title></head><body><p>{text}</p></body></html>"
    );
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(msg.as_bytes()).await?;
    sock.shutdown().await
}

/// `POST /a/frontend/session` with login and password: the session JWT and its expiry (Unix s).
pub async fn session_login(
    http: &reqwest::Client,
    base_url: &str,
    login: &str,
    password: &str,
) -> Result<(String, i64), ApiError> {
    let body = serde_json::json!({
        "AuthInfo": {"login": login, "password": password, "type": "credentials"}
    });
    let resp = http
        .post(format!(
            "{}/a/frontend/session",
            base_url.trim_end_matches('/')
        ))
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| ApiError::Network(crate::api::http::describe_reqwest_error(&e)))?;
    let status = resp.status();
    if status.as_u16() == 401 || status.as_u16() == 403 {
        return Err(ApiError::Auth(format!(
            "the server refused the login or password of {login}: run `cec config relog` (or check --login/--password)"
        )));
    }
    if !status.is_success() {
        return Err(ApiError::Server {
            status: status.as_u16(),
            message: "the login request failed".into(),
        });
    }
    let bytes = crate::api::body::read_capped(resp, crate::api::body::TOKEN)
        .await
        .map_err(|e| ApiError::from(e).with_context("the login answer"))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::InvalidResponse("the login answer is not JSON".into()))?;
    let jwt = v
        .get("JWT")
        .and_then(|j| j.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::Auth(format!(
                "the server refused the login or password of {login}"
            ))
        })?
        .to_string();
    let expire = v
        .get("ExpireTime")
        .and_then(|e| {
            e.as_i64()
                .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or_else(|| super::now_secs() + 600);
    Ok((jwt, expire))
}
