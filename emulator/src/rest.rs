//! REST v1 under `/a` (cells-api.md §1-§5, §10): discovery (bootconf, config/discovery, the
//! XML frontend/state), legacy session login, bulk metadata listing/stat, HeadNode, node
//! creation, and the job-based move/copy/delete/restore with the user job list.
//!
//! Invariants:
//! - Every JSON body is protobuf-JSON shaped: PascalCase names as in the swagger, int64 as
//!   strings, zero values omitted, MetaStore values JSON-encoded, enums as names; reserved
//!   `pydio:` metadata never leaves the server.
//! - Every error is a `restError` body with the status codes of §1.5; request bodies with a
//!   field the swagger does not define are refused with HTTP 500
//!   `unknown field "X" in rest.Y` (as older servers did), so client bugs show up here.
//! - Every call except bootconf and discovery needs a valid bearer token (401 otherwise).
//!
//! The rooms: `wire` the REST vocabulary every endpoint module shares (errors, JSON replies,
//! authentication, strict request bodies); `discovery` bootconf, discovery, the frontend
//! state and session login; `nodes` the node JSON, bulk metadata, HeadNode and node
//! creation; `jobs` the job-based move/copy/delete/restore and the user job list.

mod discovery;
mod jobs;
mod nodes;
pub mod wire;

pub(crate) use nodes::node_json;
pub use wire::RestError;
pub(crate) use wire::not_found;

use axum::Router;
use axum::routing::{get, post, put};

use crate::SharedState;

use discovery::{bootconf, discovery, frontend_session, frontend_state};
use jobs::{control_job, create_user_job, delete_nodes, list_jobs, restore_nodes};
use nodes::{bulk_meta, create_nodes, head_node};

/// The Cells version the emulator claims to be.
pub const EMULATED_VERSION: &str = "4.4.15";
/// Build stamp reported to authenticated callers (`2006-01-02T15:04:05` layout).
pub const EMULATED_BUILD_STAMP: &str = "2025-06-05T09:30:00";
const BUILD_REVISION: &str = "cells-emu";

/// The routes of this module's endpoint families, relative to `/a`. The whole REST API is
/// composed in [`crate::router`], with the admin, share and user-metadata routes and
/// [`not_found`] as the fallback.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/frontend/bootconf", get(bootconf))
        .route("/config/discovery", get(discovery))
        .route("/frontend/state", get(frontend_state))
        .route("/frontend/session", post(frontend_session))
        .route("/meta/bulk/get", post(bulk_meta))
        .route("/tree/stats", post(bulk_meta))
        .route("/tree/stat/{*node}", get(head_node))
        .route("/tree/create", post(create_nodes))
        .route("/tree/delete", post(delete_nodes))
        .route("/tree/restore", post(restore_nodes))
        .route("/jobs/user", post(list_jobs).put(control_job))
        .route("/jobs/user/{job_name}", put(create_user_job))
}
