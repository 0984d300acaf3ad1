//! cec: a client for Pydio Cells. The library holds everything; `main.rs` only parses the
//! command line and dispatches to [`cli`].
//!
//! Module ownership: `api` talks to the server (REST + S3 gateway + events), `auth` gets and
//! refreshes tokens, `config` keeps profiles and secrets, `fs` is the filesystem core (no
//! fuser types), `fuse` adapts it to the kernel, `mount` owns the mount's lifecycle, `cli`
//! the commands, `transfer` the engine behind `cec scp`. `paths` and `sizes` hold the small
//! helpers the commands and the modules below them share: nothing outside `cli` imports from
//! `cli`, and `api` never imports from `auth` (it asks an [`api::token::TokenSource`]).

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod fs;
pub mod fuse;
pub mod hash;
pub mod interrupts;
pub mod mount;
pub mod paths;
pub mod sizes;
pub mod transfer;
