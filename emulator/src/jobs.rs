//! Placeholder: user jobs (move, copy, delete, restore).
use crate::EmuConfig;
pub struct Jobs;
impl Jobs {
    pub fn new(_config: &EmuConfig) -> Jobs {
        Jobs
    }
}
