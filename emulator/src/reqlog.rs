//! The request log of the REST API (`/a`): one `info` line per request with its method,
//! path, status, duration and authenticated user, and at `debug` the body of every error
//! answer, so a client can be diagnosed against the emulator without a proxy.
//!
//! Invariants:
//! - Never a secret: the query string and the headers are not logged (a token only ever
//!   travels in a header), and the user is the login the token resolved to.
//! - The user is noted by [`note_user`] from wherever a token is verified while the request
//!   runs (a task-local slot scoped to the request); requests without a valid token log `-`.
//! - Error bodies are buffered (bounded) only when `debug` is enabled for this module.

use std::cell::RefCell;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static USER: RefCell<Option<String>>;
}

/// Largest error body logged at debug.
const MAX_LOGGED_BODY: usize = 64 * 1024;

/// Record the authenticated login of the request in flight (no-op outside a logged request).
pub fn note_user(login: &str) {
    let _ = USER.try_with(|u| *u.borrow_mut() = Some(login.to_string()));
}

/// Middleware: log the request once answered.
pub async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // The path the client asked for (nesting strips the `/a` prefix from `uri()`).
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.0.path().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let started = Instant::now();
    let (response, user) = USER
        .scope(RefCell::new(None), async move {
            let r = next.run(req).await;
            (r, USER.with(|u| u.borrow().clone()))
        })
        .await;
    let status = response.status();
    let user = user.as_deref().unwrap_or("-");
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "cells_emu::rest",
        %method, %path, status = status.as_u16(), duration_ms = format_args!("{ms:.1}"), %user,
        "REST request"
    );
    use axum::body::HttpBody as _;
    let small = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_LOGGED_BODY as u64);
    if (status.is_client_error() || status.is_server_error())
        && small
        && tracing::enabled!(target: "cells_emu::rest", tracing::Level::DEBUG)
    {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_LOGGED_BODY)
            .await
            .unwrap_or_default();
        tracing::debug!(
            target: "cells_emu::rest",
            %method, %path, status = status.as_u16(),
            body = %String::from_utf8_lossy(&bytes),
            "REST error body"
        );
        return Response::from_parts(parts, Body::from(bytes));
    }
    response
}
