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

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::idm::Idm;
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
    idm: Idm,
    secret: [u8; 32],
    db: Mutex<rusqlite::Connection>,
    ttl: Duration,
    codes: Mutex<HashMap<String, PendingCode>>,
    logins: Mutex<HashMap<String, PendingLogin>>,
    /// Tokens (other than refresh tokens) issued before this instant (Unix ms) are expired.
    expired_before: AtomicI64,
}

struct PendingLogin {
    request: AuthorizationRequest,
    state: String,
    expires_ms: i64,
}

const LOGIN_CHALLENGE_TTL: Duration = Duration::from_secs(1800);

struct PendingCode {
    login: String,
    request: AuthorizationRequest,
    expires_ms: i64,
}

const AUTH_CODE_TTL: Duration = Duration::from_secs(600);
const REFRESH_TTL: Duration = Duration::from_secs(1440 * 3600);
const ID_TOKEN_TTL: Duration = Duration::from_secs(3600);
const ACCESS_PREFIX: &str = "ory_at_";
const REFRESH_PREFIX: &str = "ory_rt_";
const CODE_PREFIX: &str = "ory_ac_";

type HmacSha256 = Hmac<Sha256>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn grant_err(code: &'static str, description: impl Into<String>) -> GrantError {
    GrantError {
        code,
        description: description.into(),
    }
}

/// One stored token row.
struct TokenRow {
    kind: String,
    login: String,
    issued_ms: i64,
    expires_ms: i64,
    window_ms: i64,
    family: String,
    used: bool,
    revoked: bool,
    client_id: String,
    scope: String,
}

impl Auth {
    /// Open the token database under `config.data_dir`.
    pub fn new(config: &EmuConfig, store: Arc<Store>) -> anyhow::Result<Auth> {
        Auth::open_with(
            &config.data_dir,
            store.idm().clone(),
            config.access_token_ttl,
        )
    }

    /// Open the token database of a data directory without a running server (admin CLI).
    /// `access_token_ttl` only matters for OAuth grants.
    pub fn open_data_dir(data_dir: &Path) -> anyhow::Result<Auth> {
        let idm = crate::store::load_idm(data_dir)?;
        Auth::open_with(
            data_dir,
            idm,
            EmuConfig::for_tests(data_dir).access_token_ttl,
        )
    }

    fn open_with(data_dir: &Path, idm: Idm, ttl: Duration) -> anyhow::Result<Auth> {
        use anyhow::Context;
        std::fs::create_dir_all(data_dir)?;
        let secret_path = data_dir.join("auth.secret");
        let secret: [u8; 32] = match std::fs::read(&secret_path) {
            Ok(b) if b.len() == 32 => b.try_into().expect("32 bytes"),
            _ => {
                let s: [u8; 32] = rand::random();
                let tmp = data_dir.join("auth.secret.tmp");
                {
                    use std::io::Write;
                    let mut opts = std::fs::OpenOptions::new();
                    opts.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::OpenOptionsExt;
                        opts.mode(0o600);
                    }
                    let mut f = opts.open(&tmp).context("writing the auth secret")?;
                    f.write_all(&s)?;
                    f.sync_all()?;
                }
                std::fs::rename(&tmp, &secret_path)?;
                s
            }
        };
        let db = rusqlite::Connection::open(data_dir.join("auth.sqlite"))
            .context("opening the token database")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                data_dir.join("auth.sqlite"),
                std::fs::Permissions::from_mode(0o600),
            );
        }
        db.busy_timeout(Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS tokens (
                digest TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                login TEXT NOT NULL,
                issued_ms INTEGER NOT NULL,
                expires_ms INTEGER NOT NULL,
                window_ms INTEGER NOT NULL DEFAULT 0,
                family TEXT NOT NULL DEFAULT '',
                used INTEGER NOT NULL DEFAULT 0,
                revoked INTEGER NOT NULL DEFAULT 0,
                client_id TEXT NOT NULL DEFAULT '',
                scope TEXT NOT NULL DEFAULT ''
            );
            CREATE INDEX IF NOT EXISTS tokens_family ON tokens(family);
            CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL);",
        )?;
        let expired_before: i64 = {
            use rusqlite::OptionalExtension;
            db.query_row("SELECT v FROM kv WHERE k = 'expired_before'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
        };
        Ok(Auth {
            idm,
            secret,
            db: Mutex::new(db),
            ttl,
            codes: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
            expired_before: AtomicI64::new(expired_before),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("any key length");
        m.update(data);
        m
    }

    /// `<random>.<HMAC(random)>`, 43 + 1 + 43 characters.
    fn new_raw_token(&self) -> String {
        let body = b64(&rand::random::<[u8; 32]>());
        let sig = b64(&self.mac(body.as_bytes()).finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// Check the HMAC of a raw `<random>.<sig>` token.
    fn raw_token_ok(&self, raw: &str) -> bool {
        let Some((body, sig)) = raw.split_once('.') else {
            return false;
        };
        if body.len() != 43 || sig.contains('.') {
            return false;
        }
        let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        self.mac(body.as_bytes()).verify_slice(&sig).is_ok()
    }

    fn load(&self, token: &str) -> Option<TokenRow> {
        use rusqlite::OptionalExtension;
        let db = self.lock();
        db.query_row(
            "SELECT kind, login, issued_ms, expires_ms, window_ms, family, used, revoked, client_id, scope
             FROM tokens WHERE digest = ?1",
            [digest(token)],
            |r| {
                Ok(TokenRow {
                    kind: r.get(0)?,
                    login: r.get(1)?,
                    issued_ms: r.get(2)?,
                    expires_ms: r.get(3)?,
                    window_ms: r.get(4)?,
                    family: r.get(5)?,
                    used: r.get::<_, i64>(6)? != 0,
                    revoked: r.get::<_, i64>(7)? != 0,
                    client_id: r.get(8)?,
                    scope: r.get(9)?,
                })
            },
        )
        .optional()
        .ok()
        .flatten()
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        token: &str,
        kind: &str,
        login: &str,
        expires_ms: i64,
        window_ms: i64,
        family: &str,
        client_id: &str,
        scope: &str,
    ) -> anyhow::Result<()> {
        self.lock().execute(
            "INSERT INTO tokens (digest, kind, login, issued_ms, expires_ms, window_ms, family, client_id, scope)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                digest(token),
                kind,
                login,
                self.issue_instant_ms(),
                expires_ms,
                window_ms,
                family,
                client_id,
                scope
            ],
        )?;
        Ok(())
    }

    fn principal(&self, login: &str) -> Result<Principal, AuthError> {
        let user = self.idm.user(login).ok_or(AuthError::Invalid)?;
        Ok(Principal {
            login: user.login.clone(),
            admin: user.admin,
        })
    }

    /// Check a bearer token (access token, PAT or session JWT). A PAT with a sliding window
    /// is renewed.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.split('.').count() == 3 {
            return self.verify_jwt(token);
        }
        let (raw, kind) = match token.strip_prefix(ACCESS_PREFIX) {
            Some(raw) => (raw, "at"),
            None => (token, "pat"),
        };
        if !self.raw_token_ok(raw) {
            return Err(AuthError::Invalid);
        }
        let row = self.load(token).ok_or(AuthError::Invalid)?;
        if row.kind != kind {
            return Err(AuthError::Invalid);
        }
        if row.revoked {
            return Err(AuthError::Revoked);
        }
        let now = now_ms();
        if row.issued_ms < self.expired_before.load(Ordering::SeqCst) || now >= row.expires_ms {
            return Err(AuthError::Expired);
        }
        if row.window_ms > 0 {
            let new_expiry = now + row.window_ms;
            if new_expiry - row.expires_ms >= 1000 {
                let _ = self.lock().execute(
                    "UPDATE tokens SET expires_ms = ?2 WHERE digest = ?1",
                    rusqlite::params![digest(token), new_expiry],
                );
            }
        }
        self.principal(&row.login)
    }

    fn sign_jwt(&self, claims: &serde_json::Value) -> String {
        let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = b64(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{payload}");
        let sig = b64(&self.mac(signing_input.as_bytes()).finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    fn verify_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let (signing_input, sig) = token.rsplit_once('.').ok_or(AuthError::Invalid)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Invalid)?;
        self.mac(signing_input.as_bytes())
            .verify_slice(&sig)
            .map_err(|_| AuthError::Invalid)?;
        let payload = signing_input.split('.').nth(1).ok_or(AuthError::Invalid)?;
        let claims: serde_json::Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::Invalid)?;
        if claims["typ"] != "session" {
            return Err(AuthError::Invalid);
        }
        let exp = claims["exp"].as_i64().ok_or(AuthError::Invalid)?;
        let iat_ms = claims["iat_ms"].as_i64().ok_or(AuthError::Invalid)?;
        if exp * 1000 <= now_ms() || iat_ms < self.expired_before.load(Ordering::SeqCst) {
            return Err(AuthError::Expired);
        }
        self.principal(claims["sub"].as_str().ok_or(AuthError::Invalid)?)
    }

    /// Check an `Authorization` header value (`Bearer <token>`); `None` → Missing.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?.trim();
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::Invalid)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Invalid);
        }
        let p = self.verify(token)?;
        crate::reqlog::note_user(&p.login);
        Ok(p)
    }

    /// Mint a Personal Access Token for an existing user.
    pub fn mint_pat(&self, login: &str, expiry: PatExpiry) -> anyhow::Result<String> {
        anyhow::ensure!(self.idm.user(login).is_some(), "no such user: {login}");
        let token = self.new_raw_token();
        let (expires, window) = match expiry {
            PatExpiry::Fixed(d) => (now_ms() + d.as_millis() as i64, 0),
            PatExpiry::AutoRefresh(w) => {
                let w = w.as_millis() as i64;
                (now_ms() + w, w)
            }
        };
        self.insert(&token, "pat", login, expires, window, "", "", "")?;
        Ok(token)
    }

    /// The instant (Unix ms) a token issued now carries: never before the last
    /// [`Auth::expire_all`] cutoff, so a token minted after `expire_all` returned is valid even
    /// within the same millisecond.
    fn issue_instant_ms(&self) -> i64 {
        now_ms().max(self.expired_before.load(Ordering::SeqCst))
    }

    /// Expire every access token, PAT and session token issued so far.
    pub fn expire_all(&self) {
        let now = now_ms() + 1;
        self.expired_before.store(now, Ordering::SeqCst);
        let _ = self.lock().execute(
            "INSERT OR REPLACE INTO kv (k, v) VALUES ('expired_before', ?1)",
            [now.to_string()],
        );
    }

    /// Issue an authorization code for `login` (10 minutes, single use).
    pub fn issue_code(&self, login: &str, request: AuthorizationRequest) -> String {
        let code = format!("{CODE_PREFIX}{}", self.new_raw_token());
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        codes.retain(|_, c| c.expires_ms > now);
        codes.insert(
            digest(&code),
            PendingCode {
                login: login.to_string(),
                request,
                expires_ms: now + AUTH_CODE_TTL.as_millis() as i64,
            },
        );
        code
    }

    /// Issue an access token (+ refresh token if `offline` is in scope) in `family`.
    fn issue_tokens(
        &self,
        login: &str,
        client_id: &str,
        scope: &str,
        family: &str,
    ) -> Result<TokenGrant, GrantError> {
        let server_err = |e: anyhow::Error| grant_err("server_error", e.to_string());
        let access = format!("{ACCESS_PREFIX}{}", self.new_raw_token());
        let ttl_ms = self.ttl.as_millis() as i64;
        self.insert(
            &access,
            "at",
            login,
            now_ms() + ttl_ms,
            0,
            family,
            client_id,
            scope,
        )
        .map_err(server_err)?;
        let refresh = if scope.split(' ').any(|s| s == "offline") {
            let rt = format!("{REFRESH_PREFIX}{}", self.new_raw_token());
            self.insert(
                &rt,
                "rt",
                login,
                now_ms() + REFRESH_TTL.as_millis() as i64,
                0,
                family,
                client_id,
                scope,
            )
            .map_err(server_err)?;
            Some(rt)
        } else {
            None
        };
        let now = now_ms() / 1000;
        let id_token = self.sign_jwt(&serde_json::json!({
            "typ": "id",
            "sub": login,
            "name": login,
            "aud": [client_id],
            "iat": now,
            "exp": now + ID_TOKEN_TTL.as_secs() as i64,
        }));
        Ok(TokenGrant {
            access_token: access,
            refresh_token: refresh,
            id_token,
            expires_in: self.ttl.as_secs(),
            scope: scope.to_string(),
        })
    }

    /// `grant_type=authorization_code`.
    pub fn exchange_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
    ) -> Result<TokenGrant, GrantError> {
        let pending = {
            let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
            codes.remove(&digest(code))
        };
        let pending = pending.ok_or_else(|| {
            grant_err(
                "invalid_grant",
                "The authorization code is invalid, expired or was already used",
            )
        })?;
        if pending.expires_ms <= now_ms() {
            return Err(grant_err("invalid_grant", "The authorization code expired"));
        }
        if pending.request.client_id != client_id {
            return Err(grant_err(
                "invalid_grant",
                "The authorization code was issued to another client",
            ));
        }
        if pending.request.redirect_uri != redirect_uri {
            return Err(grant_err(
                "invalid_grant",
                "The redirect_uri does not match the authorization request",
            ));
        }
        match (&pending.request.code_challenge, code_verifier) {
            (Some(challenge), Some(verifier)) => {
                if verifier.len() < 43 || verifier.len() > 128 {
                    return Err(grant_err(
                        "invalid_grant",
                        "The PKCE code verifier must be 43 to 128 characters",
                    ));
                }
                if b64(&Sha256::digest(verifier.as_bytes())) != *challenge {
                    return Err(grant_err(
                        "invalid_grant",
                        "The PKCE code challenge did not match the code verifier",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(grant_err(
                    "invalid_grant",
                    "The PKCE code verifier is missing",
                ));
            }
            (None, Some(_)) => {
                return Err(grant_err(
                    "invalid_grant",
                    "A PKCE code verifier was sent but no code challenge was requested",
                ));
            }
            (None, None) => {}
        }
        let family = uuid::Uuid::new_v4().to_string();
        self.issue_tokens(&pending.login, client_id, &pending.request.scope, &family)
    }

    /// `grant_type=refresh_token` (rotation: the old refresh token is consumed).
    pub fn refresh(&self, refresh_token: &str, client_id: &str) -> Result<TokenGrant, GrantError> {
        let invalid = || {
            grant_err(
                "invalid_grant",
                "The refresh token is invalid, expired or was revoked",
            )
        };
        let raw = refresh_token
            .strip_prefix(REFRESH_PREFIX)
            .ok_or_else(invalid)?;
        if !self.raw_token_ok(raw) {
            return Err(invalid());
        }
        let row = self.load(refresh_token).ok_or_else(invalid)?;
        if row.kind != "rt" || row.revoked || row.expires_ms <= now_ms() {
            return Err(invalid());
        }
        if row.used {
            // Reuse of a rotated token: revoke the whole chain (RFC 6819 §5.2.2.3).
            let _ = self.lock().execute(
                "UPDATE tokens SET revoked = 1 WHERE family = ?1",
                [&row.family],
            );
            return Err(grant_err(
                "invalid_grant",
                "The refresh token was already used; the token chain was revoked",
            ));
        }
        if row.client_id != client_id {
            return Err(grant_err(
                "invalid_grant",
                "The refresh token was issued to another client",
            ));
        }
        {
            let db = self.lock();
            let changed = db
                .execute(
                    "UPDATE tokens SET used = 1 WHERE digest = ?1 AND used = 0",
                    [digest(refresh_token)],
                )
                .map_err(|e| grant_err("server_error", e.to_string()))?;
            if changed == 0 {
                return Err(invalid());
            }
        }
        if self.idm.user(&row.login).is_none() {
            return Err(invalid());
        }
        let _ = row.issued_ms;
        self.issue_tokens(&row.login, client_id, &row.scope, &row.family)
    }

    /// Revoke an access or refresh token (RFC 7009: unknown tokens are not an error).
    pub fn revoke(&self, token: &str) {
        let Some(row) = self.load(token) else {
            return;
        };
        let db = self.lock();
        if row.kind == "rt" {
            let _ = db.execute(
                "UPDATE tokens SET revoked = 1 WHERE family = ?1",
                [&row.family],
            );
        } else {
            let _ = db.execute(
                "UPDATE tokens SET revoked = 1 WHERE digest = ?1",
                [digest(token)],
            );
        }
    }

    /// Login/password session (legacy `POST /a/frontend/session`); None on bad credentials.
    pub fn login_session(&self, login: &str, password: &str) -> Option<SessionToken> {
        let p = self.check_password(login, password)?;
        let now = self.issue_instant_ms();
        let exp = now / 1000 + self.ttl.as_secs() as i64;
        let jwt = self.sign_jwt(&serde_json::json!({
            "typ": "session",
            "sub": p.login,
            "iat": now / 1000,
            "iat_ms": now,
            "exp": exp,
            "jti": uuid::Uuid::new_v4().to_string(),
        }));
        Some(SessionToken {
            jwt,
            expire_time: exp,
        })
    }

    /// Remember a validated authorization request while the user logs in; returns the
    /// login challenge (30 minutes).
    pub fn begin_login(&self, request: AuthorizationRequest, state: &str) -> String {
        let challenge = hex::encode(rand::random::<[u8; 16]>());
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        logins.retain(|_, l| l.expires_ms > now);
        logins.insert(
            challenge.clone(),
            PendingLogin {
                request,
                state: state.to_string(),
                expires_ms: now + LOGIN_CHALLENGE_TTL.as_millis() as i64,
            },
        );
        challenge
    }

    /// The pending authorization request and OAuth `state` of a login challenge.
    pub fn login_request(&self, challenge: &str) -> Option<(AuthorizationRequest, String)> {
        let logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        logins
            .get(challenge)
            .filter(|l| l.expires_ms > now_ms())
            .map(|l| (l.request.clone(), l.state.clone()))
    }

    /// Consume a login challenge (after a successful login).
    pub fn finish_login(&self, challenge: &str) -> Option<(AuthorizationRequest, String)> {
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        logins
            .remove(challenge)
            .filter(|l| l.expires_ms > now_ms())
            .map(|l| (l.request, l.state))
    }

    /// Check a login/password pair (the OAuth login form).
    pub fn check_password(&self, login: &str, password: &str) -> Option<Principal> {
        let u = self.idm.authenticate(login, password)?;
        Some(Principal {
            login: u.login.clone(),
            admin: u.admin,
        })
    }

    /// Access-token lifetime (`expires_in`).
    pub fn access_token_ttl(&self) -> Duration {
        self.ttl
    }
}
