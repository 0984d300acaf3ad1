//! Placeholder: the S3 gateway under `/io`.
use axum::Router;
use crate::SharedState;
pub fn router() -> Router<SharedState> {
    Router::new()
}
