//! Placeholder: fault injection.
use axum::Router;
use crate::SharedState;
#[derive(Default)]
pub struct Faults;
pub fn control_router() -> Router<SharedState> {
    Router::new()
}
pub fn layer(app: Router<SharedState>, _state: SharedState) -> Router<SharedState> {
    app
}
