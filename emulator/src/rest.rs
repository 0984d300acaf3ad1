//! Placeholder: REST v1 under `/a`.
use axum::Router;
use crate::SharedState;
pub fn router() -> Router<SharedState> {
    Router::new()
}
