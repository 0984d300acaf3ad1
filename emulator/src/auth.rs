//! Placeholder: token verification, OAuth codes and refresh tokens, PATs, sessions.
use std::sync::Arc;
use crate::{store::Store, EmuConfig};
pub struct Auth;
impl Auth {
    pub fn new(_config: &EmuConfig, _store: Arc<Store>) -> anyhow::Result<Auth> {
        Ok(Auth)
    }
}
