//! The one interface every part of the API client asks for a bearer token: REST, the S3
//! gateway and the event websocket hold an `Arc<dyn TokenSource>` and never see how it is
//! obtained. Its implementations (a static token, OAuth2 with rotation, the login/password
//! session) live in `crate::auth`, which depends on the API (its errors, capped bodies); the
//! API depends only on this trait, so the two never import each other.
//!
//! Invariants (kept by every implementation): `token()` hands out a token that is not about
//! to expire; a 401 leads to at most one `refresh_after_unauthorized` per request; every
//! refresh bumps [`TokenSource::changes`]; no token ever appears in an error or a log line.

use async_trait::async_trait;
use tokio::sync::watch;

use super::ApiError;

/// Gives a valid bearer token, refreshing it when needed.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A token valid for a while yet (refreshed first when under the margin).
    async fn token(&self) -> Result<String, ApiError>;

    /// The server refused `rejected`: refresh (once) and return the new token, or the current
    /// one when another task already refreshed it. Errors with [`ApiError::Auth`] (and what to
    /// run) when no new token can be had.
    async fn refresh_after_unauthorized(&self, rejected: &str) -> Result<String, ApiError>;

    /// Bumped after every refresh.
    fn changes(&self) -> watch::Receiver<u64>;

    /// The login the token belongs to, when known.
    fn login(&self) -> Option<String> {
        None
    }
}
