//! Placeholder: the `/ws/event` websocket.
use std::sync::Arc;
use axum::Router;
use crate::{store::Store, SharedState};
pub struct EventHub;
impl EventHub {
    pub fn new(_store: Arc<Store>) -> EventHub {
        EventHub
    }
}
pub fn router() -> Router<SharedState> {
    Router::new()
}
