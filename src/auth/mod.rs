//! Tokens: the one [`TokenSource`] that REST, the S3 gateway and the event websocket all ask
//! for a bearer token, and its three implementations: a static token (PAT or `--token`), OAuth2
//! (refresh-token grant with rotation) and the legacy login/password session.
//!
//! Invariants:
//! - `token()` returns a token with more than [`REFRESH_MARGIN`] left (or half its lifetime
//!   for very short-lived tokens), refreshing first when needed.
//! - An OAuth refresh holds the profile store's cross-process lock, re-reads the stored tokens
//!   first (another process may have rotated them already), and persists the new pair (keyring
//!   and file, atomically) BEFORE the new access token is handed out: a rotated refresh token
//!   is never lost and never used twice.
//! - Every refresh bumps the [`TokenSource::changes`] counter.
//! - No token, refresh token or password ever appears in an error or a log line.

pub mod oauth;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{Mutex, watch};

use crate::api::ApiError;
pub use crate::api::token::TokenSource;
use crate::config::{ConfigStore, Profile};

/// Refresh when fewer than this remain (the official client's rule).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How long before expiry a token of `lifetime` seconds (when known) is refreshed.
fn margin_for(lifetime: Option<i64>) -> i64 {
    let m = REFRESH_MARGIN.as_secs() as i64;
    match lifetime {
        Some(l) if l > 0 => m.min(l / 2),
        _ => m,
    }
}

/// A token that cannot be refreshed: a Personal Access Token or `--token`.
pub struct StaticToken {
    token: String,
    changes: watch::Sender<u64>,
    hint: String,
}

impl StaticToken {
    /// `hint` is the sentence appended when the server refuses the token (what to do).
    pub fn new(token: impl Into<String>, hint: impl Into<String>) -> StaticToken {
        StaticToken {
            token: token.into().trim().to_string(),
            changes: watch::channel(0).0,
            hint: hint.into(),
        }
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, ApiError> {
        Ok(self.token.clone())
    }

    async fn refresh_after_unauthorized(&self, _rejected: &str) -> Result<String, ApiError> {
        Err(ApiError::Auth(format!(
            "the server refused the token (expired or revoked): {}",
            self.hint
        )))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// A fresh OAuth token pair.
#[derive(Clone, PartialEq)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds.
    pub expires_in: i64,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

struct OAuthState {
    access: String,
    refresh: String,
    expires_at: i64,
    lifetime: Option<i64>,
}

/// OAuth2 tokens of a stored profile, refreshed with the refresh-token grant.
pub struct OAuthTokenSource {
    http: reqwest::Client,
    base_url: String,
    login: String,
    /// Where the profile is persisted; `None` keeps the tokens in memory only.
    store: Option<(ConfigStore, String)>,
    state: Mutex<OAuthState>,
    changes: watch::Sender<u64>,
}

impl OAuthTokenSource {
    /// Tokens of the stored profile `profile_id` (its secrets already loaded in `profile`).
    pub fn from_profile(
        http: reqwest::Client,
        profile: &Profile,
        store: Option<(ConfigStore, String)>,
    ) -> OAuthTokenSource {
        OAuthTokenSource {
            http,
            base_url: profile.url.trim_end_matches('/').to_string(),
            login: profile.user.clone(),
            store,
            state: Mutex::new(OAuthState {
                access: profile.id_token.clone(),
                refresh: profile.refresh_token.clone(),
                expires_at: profile.token_expires_at,
                lifetime: None,
            }),
            changes: watch::channel(0).0,
        }
    }

    fn relog_error(&self, why: &str) -> ApiError {
        ApiError::Auth(format!(
            "the OAuth session of {} on {} cannot be renewed ({why}): run `cec config relog`",
            self.login, self.base_url
        ))
    }

    fn is_fresh(state: &OAuthState) -> bool {
        !state.access.is_empty()
            && (state.expires_at == 0 || state.expires_at - now_secs() > margin_for(state.lifetime))
    }

    /// Refresh with the state locked. `rejected`: the token the server refused, if any.
    async fn refresh_locked(
        &self,
        state: &mut OAuthState,
        rejected: Option<&str>,
    ) -> Result<String, ApiError> {
        let Some((store, id)) = self.store.clone() else {
            let set = self.grant(&state.refresh).await?;
            self.adopt(state, set);
            return Ok(state.access.clone());
        };
        // Cross-process: lock, then re-read what is stored (another process may have rotated).
        let (lock, stored) = tokio::task::spawn_blocking({
            let store = store.clone();
            let id = id.clone();
            move || -> Result<_, crate::config::ConfigError> {
                let lock = store.lock()?;
                let profile = store.load_profile(Some(&id))?;
                Ok((lock, profile))
            }
        })
        .await
        .map_err(|e| ApiError::Local(e.to_string()))?
        .map_err(|e| self.relog_error(&e.to_string()))?;
        let stored_is_newer = !stored.id_token.is_empty()
            && stored.id_token != state.access
            && Some(stored.id_token.as_str()) != rejected;
        if stored_is_newer {
            let candidate = OAuthState {
                access: stored.id_token.clone(),
                refresh: stored.refresh_token.clone(),
                expires_at: stored.token_expires_at,
                lifetime: state.lifetime,
            };
            if Self::is_fresh(&candidate) {
                tracing::debug!("using the token another process refreshed");
                *state = candidate;
                drop(lock);
                self.changes.send_modify(|v| *v += 1);
                return Ok(state.access.clone());
            }
        }
        let refresh_token = if stored.refresh_token.is_empty() {
            state.refresh.clone()
        } else {
            stored.refresh_token.clone()
        };
        let set = self.grant(&refresh_token).await?;
        // Persist the rotated pair before anyone uses it.
        let mut updated = stored.clone();
        updated.id_token = set.access_token.clone();
        updated.refresh_token = set.refresh_token.clone();
        updated.token_expires_at = now_secs() + set.expires_in;
        let persisted = tokio::task::spawn_blocking({
            let store = store.clone();
            let id = id.clone();
            move || store.store_profile(&updated, false, Some(&id))
        })
        .await
        .map_err(|e| ApiError::Local(e.to_string()))?;
        drop(lock);
        match persisted {
            Ok((_, Some(warning))) => tracing::warn!("{warning}"),
            Ok(_) => {}
            Err(e) => {
                // The new refresh token could not be saved: the next process will have to
                // log in again, but this one can go on with the new pair.
                tracing::error!("could not save the refreshed tokens: {e}");
            }
        }
        self.adopt(state, set);
        Ok(state.access.clone())
    }

    fn adopt(&self, state: &mut OAuthState, set: TokenSet) {
        state.access = set.access_token;
        if !set.refresh_token.is_empty() {
            state.refresh = set.refresh_token;
        }
        state.expires_at = now_secs() + set.expires_in;
        state.lifetime = Some(set.expires_in);
        self.changes.send_modify(|v| *v += 1);
        tracing::debug!("OAuth token refreshed, valid {} s", set.expires_in);
    }

    async fn grant(&self, refresh_token: &str) -> Result<TokenSet, ApiError> {
        if refresh_token.is_empty() {
            return Err(self.relog_error("no refresh token is stored"));
        }
        match oauth::refresh(&self.http, &self.base_url, refresh_token).await {
            Ok(set) => Ok(set),
            Err(oauth::GrantError::Rejected(why)) => Err(self.relog_error(&why)),
            Err(oauth::GrantError::Transport(e)) => Err(e),
        }
    }
}

#[async_trait]
impl TokenSource for OAuthTokenSource {
    async fn token(&self) -> Result<String, ApiError> {
        let mut state = self.state.lock().await;
        if Self::is_fresh(&state) {
            return Ok(state.access.clone());
        }
        self.refresh_locked(&mut state, None).await
    }

    async fn refresh_after_unauthorized(&self, rejected: &str) -> Result<String, ApiError> {
        let mut state = self.state.lock().await;
        if state.access != rejected && Self::is_fresh(&state) {
            return Ok(state.access.clone());
        }
        self.refresh_locked(&mut state, Some(rejected)).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn login(&self) -> Option<String> {
        Some(self.login.clone())
    }
}

/// The legacy login/password session (`POST /a/frontend/session`), logging in again when the
/// JWT nears its expiry.
pub struct SessionTokenSource {
    http: reqwest::Client,
    base_url: String,
    login: String,
    password: String,
    /// The JWT, its expiry (Unix s) and its lifetime (s).
    state: Mutex<(String, i64, i64)>,
    changes: watch::Sender<u64>,
}

impl SessionTokenSource {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        login: &str,
        password: &str,
    ) -> SessionTokenSource {
        SessionTokenSource {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            login: login.to_string(),
            password: password.to_string(),
            state: Mutex::new((String::new(), 0, 0)),
            changes: watch::channel(0).0,
        }
    }

    async fn log_in(&self, state: &mut (String, i64, i64)) -> Result<String, ApiError> {
        let (jwt, expires_at) =
            oauth::session_login(&self.http, &self.base_url, &self.login, &self.password).await?;
        *state = (jwt, expires_at, (expires_at - now_secs()).max(1));
        self.changes.send_modify(|v| *v += 1);
        Ok(state.0.clone())
    }
}

#[async_trait]
impl TokenSource for SessionTokenSource {
    async fn token(&self) -> Result<String, ApiError> {
        let mut state = self.state.lock().await;
        if !state.0.is_empty() && state.1 - now_secs() > margin_for(Some(state.2)) {
            return Ok(state.0.clone());
        }
        self.log_in(&mut state).await
    }

    async fn refresh_after_unauthorized(&self, rejected: &str) -> Result<String, ApiError> {
        let mut state = self.state.lock().await;
        if state.0 != rejected && !state.0.is_empty() {
            return Ok(state.0.clone());
        }
        self.log_in(&mut state).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn login(&self) -> Option<String> {
        Some(self.login.clone())
    }
}

/// Build the token source of a profile (secrets loaded). `store`: where to persist OAuth
/// refreshes (`None` for in-memory).
pub fn token_source_for_profile(
    http: reqwest::Client,
    profile: &Profile,
    store: Option<(ConfigStore, String)>,
) -> Arc<dyn TokenSource> {
    match profile.normalized_auth_type() {
        crate::config::AUTH_TYPE_OAUTH => {
            Arc::new(OAuthTokenSource::from_profile(http, profile, store))
        }
        crate::config::AUTH_TYPE_SESSION => Arc::new(SessionTokenSource::new(
            http,
            &profile.url,
            &profile.user,
            &profile.password,
        )),
        _ => Arc::new(StaticToken::new(
            profile.id_token.clone(),
            format!(
                "create a new Personal Access Token on the server and run `cec config relog {}` (it asks for the new token)",
                profile.id()
            ),
        )),
    }
}
