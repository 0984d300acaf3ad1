//! Placeholder: OIDC under `/oidc` and the `/oauth2/*` pages.
use axum::Router;
use crate::SharedState;
pub fn router() -> Router<SharedState> {
    Router::new()
}
