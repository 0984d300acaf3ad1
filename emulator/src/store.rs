//! Placeholder: the on-disk tree store (owned by the emulator-core work).
use crate::EmuConfig;
pub struct Store;
impl Store {
    pub fn open(_config: &EmuConfig) -> anyhow::Result<Store> {
        Ok(Store)
    }
}
