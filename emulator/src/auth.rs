//! Tokens: verification of every bearer credential the server accepts, and their issuance.
//!
//! Kinds (cells-api.md §3):
//! - OAuth access tokens (`ory_at_…`, opaque, lifetime `config.access_token_ttl`);
//! - OAuth refresh tokens (`ory_rt_…`, single use: each refresh rotates it, and reusing an
//!   old one is refused and revokes the whole chain);
//! - OAuth authorization codes (`ory_ac_…`, 10 minutes, single use, optional PKCE S256);
//! - Personal Access Tokens, `<43 b64url>.<43 b64url>` (fosite HMAC shape), with a hard
//!   expiry or a sliding window renewed on each use;
//! - legacy session JWTs from `POST /a/frontend/session` (HS256, `ExpireTime`).
//!
//! Invariants:
//! - Every token is `<random>.<HMAC(secret, random)>`: forged tokens fail before any lookup.
//! - Only SHA-256 digests of tokens are stored (`auth.sqlite` in the data dir, with the HMAC
//!   secret in a 0600 file); nothing here logs or formats a token (errors never include it).
//! - Access tokens, refresh tokens and PATs survive a restart; codes do not need to.
//! - [`Auth::expire_all`] makes every access token, PAT and session issued so far expired
//!   (refresh tokens stay valid, so an OAuth client can recover by refreshing).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::{EmuConfig, store::Store};

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub login: String,
    pub admin: bool,
}

/// Why a token was refused. Displays without the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("token is expired")]
    Expired,
    #[error("token was revoked")]
    Revoked,
}

/// Expiry of a Personal Access Token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatExpiry {
    /// Hard expiry after this duration (`-e 24h`).
    Fixed(Duration),
    /// Sliding window: valid while used at least once per window (`-a 600`).
    AutoRefresh(Duration),
}

/// An OAuth token response (`/oidc/oauth2/token`).
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// Why an OAuth grant failed: the OAuth `error` code and a description (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct GrantError {
    /// `invalid_grant`, `invalid_request`, `invalid_client`, `unsupported_grant_type`…
    pub code: &'static str,
    pub description: String,
}

/// A pending authorization (what `/oidc/oauth2/auth` validated), stored with the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    /// PKCE S256 challenge, if the client sent one.
    pub code_challenge: Option<String>,
}

/// A session login (`POST /a/frontend/session`).
#[derive(Debug, Clone)]
pub struct SessionToken {
    pub jwt: String,
    /// Unix seconds.
    pub expire_time: i64,
}

/// The token authority. Shared as `Arc<Auth>`.
pub struct Auth {
    _private: (),
}

impl Auth {
    /// Open the token database under `config.data_dir`.
    pub fn new(config: &EmuConfig, store: Arc<Store>) -> anyhow::Result<Auth> {
        let _ = (config, store);
        todo!()
    }

    /// Open the token database of a data directory without a running server (admin CLI).
    /// `access_token_ttl` only matters for OAuth grants.
    pub fn open_data_dir(data_dir: &Path) -> anyhow::Result<Auth> {
        let _ = data_dir;
        todo!()
    }

    /// Check a bearer token (access token, PAT or session JWT). A PAT with a sliding window
    /// is renewed.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let _ = token;
        todo!()
    }

    /// Check an `Authorization` header value (`Bearer <token>`); `None` → Missing.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let _ = header;
        todo!()
    }

    /// Mint a Personal Access Token for an existing user.
    pub fn mint_pat(&self, login: &str, expiry: PatExpiry) -> anyhow::Result<String> {
        let _ = (login, expiry);
        todo!()
    }

    /// Expire every access token, PAT and session token issued so far.
    pub fn expire_all(&self) {
        todo!()
    }

    /// Issue an authorization code for `login` (10 minutes, single use).
    pub fn issue_code(&self, login: &str, request: AuthorizationRequest) -> String {
        let _ = (login, request);
        todo!()
    }

    /// `grant_type=authorization_code`.
    pub fn exchange_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
    ) -> Result<TokenGrant, GrantError> {
        let _ = (code, client_id, redirect_uri, code_verifier);
        todo!()
    }

    /// `grant_type=refresh_token` (rotation: the old refresh token is consumed).
    pub fn refresh(&self, refresh_token: &str, client_id: &str) -> Result<TokenGrant, GrantError> {
        let _ = (refresh_token, client_id);
        todo!()
    }

    /// Revoke an access or refresh token (RFC 7009: unknown tokens are not an error).
    pub fn revoke(&self, token: &str) {
        let _ = token;
        todo!()
    }

    /// Login/password session (legacy `POST /a/frontend/session`); None on bad credentials.
    pub fn login_session(&self, login: &str, password: &str) -> Option<SessionToken> {
        let _ = (login, password);
        todo!()
    }

    /// Check a login/password pair (the OAuth login form).
    pub fn check_password(&self, login: &str, password: &str) -> Option<Principal> {
        let _ = (login, password);
        todo!()
    }

    /// Access-token lifetime in seconds (`expires_in`).
    pub fn access_token_ttl(&self) -> Duration {
        todo!()
    }
}
