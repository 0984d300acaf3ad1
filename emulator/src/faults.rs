//! Fault injection: rules that make the emulator slow, failing or cut short, so the client's
//! retry, timeout and reconnect paths can be tested over real HTTP.
//!
//! Owns the rule table ([`Faults`]), the middleware that applies it to every request
//! ([`layer`]), the JSON control endpoint under `/_faults` ([`control_router`]) and the Rust
//! helpers tests call instead of writing JSON ([`Faults`] methods, [`AppState::expire_all_tokens`],
//! [`AppState::drop_websockets`], [`AppState::unsubscribe_websockets`]).
//!
//! Invariants:
//! - Nothing here exists unless the server runs with `config.faults`: the middleware is not
//!   installed and the control routes are not mounted otherwise.
//! - The control endpoint is outside `/a`, `/io`, `/oidc`, `/ws`, and rules never apply to it,
//!   so a test can always clear what it injected.
//! - A "fail" or "cut" rule with a count is consumed by matching requests only, one per
//!   request, and disappears once spent; "latency" rules last until cleared unless counted.
//! - A cut response keeps its announced `Content-Length` and ends with a transport error, so
//!   the client sees a dropped connection, never a clean short body.
//! - A "stall" rule is a paused server (SIGSTOP): the connection is accepted, then no byte of
//!   the answer goes out (a request body is left unread), or none once `after_bytes` bytes of
//!   response bodies went out to the requests it matched (all together: the moment the
//!   server was paused), and connections stay open until the rules are cleared (SIGCONT):
//!   stalled requests then go on as if nothing happened. A client that gives up in between
//!   just closes its connection.
//!
//! Control API (JSON bodies; `method` is optional and matches any method when absent,
//! `path_prefix` defaults to `/`, `count` is optional):
//! - `POST /_faults/latency` `{"method","path_prefix","millis","count"}`
//! - `POST /_faults/fail` `{"method","path_prefix","status","count"}` (count defaults to 1)
//! - `POST /_faults/cut` `{"method","path_prefix","after_bytes","count"}` (count defaults to 1)
//! - `POST /_faults/stall` `{"method","path_prefix","after_bytes","count"}` (`after_bytes`
//!   absent: not even the headers are sent; count absent: until cleared)
//! - `POST /_faults/expire-tokens`, `POST /_faults/drop-websockets`,
//!   `POST /_faults/unsubscribe-websockets`, `POST /_faults/drop-events` `{"count"}` (the next
//!   N tree events reach nobody), `POST /_faults/clear`, `GET /_faults` (list).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::{AppState, SharedState};

/// Path prefix of the control endpoint (never subject to rules).
pub const CONTROL_PREFIX: &str = "/_faults";

/// Which requests a rule applies to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestMatch {
    /// HTTP method (case-insensitive); `None` matches every method.
    #[serde(default)]
    pub method: Option<String>,
    /// Prefix of the request path (before percent-decoding), e.g. `/io/` or `/a/tree/`.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
}

fn default_prefix() -> String {
    "/".into()
}

impl RequestMatch {
    /// Matches `method` (or any method when `None`) on paths starting with `path_prefix`.
    pub fn new(method: Option<&str>, path_prefix: &str) -> RequestMatch {
        RequestMatch {
            method: method.map(str::to_owned),
            path_prefix: path_prefix.to_owned(),
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && path.starts_with(&self.path_prefix)
    }
}

/// What a rule does to a matching request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Wait this long before handling the request.
    Latency { millis: u64 },
    /// Answer with this status instead of handling the request.
    Fail { status: u16 },
    /// Handle the request, but drop the connection after this many body bytes.
    Cut { after_bytes: u64 },
    /// Answer nothing (`after_bytes: None`), or nothing once this many body bytes went out to
    /// the requests it matched (all together), keeping connections open, until the rules are
    /// cleared.
    Stall { after_bytes: Option<u64> },
}

/// One installed rule, as `GET /_faults` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRule {
    pub id: u64,
    #[serde(flatten)]
    pub matcher: RequestMatch,
    pub action: FaultAction,
    /// Requests still to affect; `None` = until cleared.
    pub remaining: Option<u64>,
    /// A stall rule's bytes still to send (shared by the requests it matched).
    #[serde(skip)]
    stall_budget: Option<Arc<AtomicU64>>,
}

/// The rule table. Cheap to consult when empty.
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    next_id: AtomicU64,
    /// Bumped by [`Faults::clear`]: stalled requests wait for it to change.
    cleared: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rules: Mutex::default(),
            next_id: AtomicU64::default(),
            cleared: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// The effects chosen for one request.
#[derive(Debug, Default)]
struct Verdict {
    latency: Duration,
    fail: Option<u16>,
    cut: Option<u64>,
    /// `Some(None)`: stall before the headers; `Some(Some(budget))`: once the rule's budget
    /// of body bytes is spent (before the headers if it is already).
    stall: Option<Option<Arc<AtomicU64>>>,
}

impl Faults {
    fn add(&self, matcher: RequestMatch, action: FaultAction, remaining: Option<u64>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.rules
            .lock()
            .expect("fault rules lock")
            .push(FaultRule {
                id,
                stall_budget: match action {
                    FaultAction::Stall {
                        after_bytes: Some(n),
                    } => Some(Arc::new(AtomicU64::new(n))),
                    _ => None,
                },
                matcher,
                action,
                remaining,
            });
        id
    }

    /// Delay every matching request by `delay` (the next `count` ones if `Some`). Returns the rule id.
    pub fn add_latency(&self, matcher: RequestMatch, delay: Duration, count: Option<u64>) -> u64 {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.add(matcher, FaultAction::Latency { millis }, count)
    }

    /// Answer the next `count` matching requests with `status` (an S3 XML error under `/io`
    /// and `/data`, a `restError` JSON elsewhere). Returns the rule id.
    pub fn fail_next(&self, matcher: RequestMatch, status: u16, count: u64) -> u64 {
        self.add(matcher, FaultAction::Fail { status }, Some(count))
    }

    /// Cut the response body of the next `count` matching requests after `after_bytes` bytes
    /// (the connection is dropped). Returns the rule id.
    pub fn cut_body_after(&self, matcher: RequestMatch, after_bytes: u64, count: u64) -> u64 {
        self.add(matcher, FaultAction::Cut { after_bytes }, Some(count))
    }

    /// Stall the next `count` matching requests (every one until cleared if `None`), as a
    /// server paused at some point does: `after_bytes: None` sends nothing at all, `Some(n)`
    /// lets `n` body bytes go out to the matching requests in all (their headers too while
    /// some are left), then nothing more. [`Faults::clear`] lets them go on. Returns the rule
    /// id.
    pub fn stall(
        &self,
        matcher: RequestMatch,
        after_bytes: Option<u64>,
        count: Option<u64>,
    ) -> u64 {
        self.add(matcher, FaultAction::Stall { after_bytes }, count)
    }

    /// Remove every rule and let stalled requests go on.
    pub fn clear(&self) {
        self.rules.lock().expect("fault rules lock").clear();
        self.cleared.send_modify(|n| *n += 1);
    }

    /// Wait until the rules are cleared (after this call started).
    fn released(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut cleared = self.cleared.subscribe();
        cleared.mark_unchanged();
        async move {
            // An error means the rule table is gone with the server: nothing to wait for.
            let _ = cleared.changed().await;
        }
    }

    /// The rules currently installed.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.lock().expect("fault rules lock").clone()
    }

    /// Decide what happens to one request, consuming counted rules that fire.
    fn verdict(&self, method: &Method, path: &str) -> Verdict {
        let mut verdict = Verdict::default();
        let mut rules = self.rules.lock().expect("fault rules lock");
        if rules.is_empty() {
            return verdict;
        }
        for rule in rules.iter_mut() {
            if !rule.matcher.matches(method, path) {
                continue;
            }
            let fires = match rule.action {
                FaultAction::Latency { millis } => {
                    verdict.latency += Duration::from_millis(millis);
                    true
                }
                FaultAction::Fail { status } if verdict.fail.is_none() => {
                    verdict.fail = Some(status);
                    true
                }
                FaultAction::Cut { after_bytes } if verdict.cut.is_none() => {
                    verdict.cut = Some(after_bytes);
                    true
                }
                FaultAction::Stall { .. } if verdict.stall.is_none() => {
                    verdict.stall = Some(rule.stall_budget.clone());
                    true
                }
                _ => false,
            };
            if fires && let Some(n) = rule.remaining.as_mut() {
                *n = n.saturating_sub(1);
            }
        }
        rules.retain(|r| r.remaining != Some(0));
        verdict
    }
}

impl AppState {
    /// Make every token issued so far (OAuth access tokens, PATs, session JWTs) invalid, as
    /// if they had all expired.
    pub fn expire_all_tokens(&self) {
        self.auth.expire_all();
    }

    /// Drop every websocket without a close frame (the TCP connection just ends).
    pub fn drop_websockets(&self) -> usize {
        self.events.drop_all()
    }

    /// Clear every websocket's subscription but keep the sockets open (pings continue, events
    /// stop): the real server's "silent unsubscribe".
    pub fn unsubscribe_websockets(&self) -> usize {
        self.events.unsubscribe_all()
    }
}

/// Wrap the whole application in the fault middleware (only when faults are enabled).
pub fn layer(app: Router<SharedState>, state: SharedState) -> Router<SharedState> {
    if !state.config.faults {
        return app;
    }
    app.layer(axum::middleware::from_fn_with_state(state, apply_faults))
}

async fn apply_faults(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with(CONTROL_PREFIX) {
        return next.run(request).await;
    }
    let verdict = state.faults.verdict(request.method(), path);
    let released = verdict.stall.as_ref().map(|_| state.faults.released());
    if !verdict.latency.is_zero() {
        tokio::time::sleep(verdict.latency).await;
    }
    // Nothing at all: no bytes allowed, or none left.
    let silent = match &verdict.stall {
        Some(None) => true,
        Some(Some(budget)) => budget.load(Ordering::SeqCst) == 0,
        None => false,
    };
    let mut released = match released {
        Some(released) if silent => {
            released.await;
            None
        }
        released => released,
    };
    if let Some(status) = verdict.fail {
        let s3 = path.starts_with("/io") || path.starts_with("/data");
        return injected_failure(status, s3);
    }
    let mut response = next.run(request).await;
    if let (Some(Some(budget)), Some(released)) = (verdict.stall, released.take()) {
        let (parts, body) = response.into_parts();
        let stalled = StallBody {
            inner: body.into_data_stream(),
            budget,
            held: None,
            released: Some(Box::pin(released)),
        };
        response = Response::from_parts(parts, Body::from_stream(stalled));
    }
    match verdict.cut {
        None => response,
        Some(after) => {
            let (parts, body) = response.into_parts();
            let cut = CutBody {
                inner: body.into_data_stream(),
                remaining: after,
                done: false,
                flush_pause: None,
            };
            Response::from_parts(parts, Body::from_stream(cut))
        }
    }
}

fn injected_failure(status: u16, s3: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if s3 {
        let code = match status.as_u16() {
            503 => "ServiceUnavailable",
            500 => "InternalError",
            403 => "AccessDenied",
            404 => "NoSuchKey",
            _ => "InjectedFault",
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected fault</Message></Error>"
        );
        (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
    } else {
        let body = serde_json::json!({"Code": status.as_u16(), "Title": "injected fault"});
        (status, Json(body)).into_response()
    }
}

/// A body stream that passes `remaining` bytes through, then fails (dropping the connection).
struct CutBody {
    inner: axum::body::BodyDataStream,
    remaining: u64,
    done: bool,
    flush_pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream for CutBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.remaining == 0 {
            // Pause first so the bytes already produced are flushed to the client, then fail
            // (hyper drops the connection on a body error).
            let flush_pause = self
                .flush_pause
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(50))));
            if flush_pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.done = true;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "fault injection: response cut",
            ))));
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                // The body ended before the cut point: it still must not end cleanly.
                self.remaining = 0;
                self.poll_next(cx)
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(Some(Ok(mut chunk))) => {
                let keep = usize::try_from(self.remaining).unwrap_or(usize::MAX);
                if chunk.len() > keep {
                    chunk.truncate(keep);
                }
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
        }
    }
}

/// A body stream that passes bytes through while its rule's `budget` lasts, then waits for
/// `released` before passing the rest (a paused server, resumed when the rules are cleared).
struct StallBody {
    inner: axum::body::BodyDataStream,
    budget: Arc<AtomicU64>,
    /// Bytes of a chunk past the stall point, sent once released.
    held: Option<Bytes>,
    released: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Stream for StallBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.held.is_some() || self.released.is_none() {
            if let Some(released) = self.released.as_mut() {
                if released.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.released = None;
            }
            if let Some(held) = self.held.take() {
                return Poll::Ready(Some(Ok(held)));
            }
            return Pin::new(&mut self.inner).poll_next(cx);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(mut chunk))) => {
                let wanted = chunk.len() as u64;
                let granted = self
                    .budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        Some(left - left.min(wanted))
                    })
                    .map_or(0, |left| left.min(wanted));
                if granted < wanted {
                    self.held = Some(chunk.split_off(granted as usize));
                    if granted == 0 {
                        // Nothing of it may go: wait (the held bytes go once released).
                        return self.poll_next(cx);
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}

#[derive(Deserialize)]
struct LatencyRequest {
    #[serde(flatten)]
    matcher: RequestMatch,
    millis: u64,
    #[serde(default)]
    count: Option<u64>,
}

#[derive(Deserialize)]
struct FailRequest {
    #[serde(flatten)]
    matcher: RequestMatch,
    status: u16,
    #[serde(default)]
    count: Option<u64>,
}

#[derive(Deserialize)]
struct StallRequest {
    #[serde(flatten)]
    matcher: RequestMatch,
    #[serde(default)]
    after_bytes: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
}

#[derive(Deserialize)]
struct CutRequest {
    #[serde(flatten)]
    matcher: RequestMatch,
    after_bytes: u64,
    #[serde(default)]
    count: Option<u64>,
}

/// The `/_faults` control routes (mounted only when faults are enabled).
pub fn control_router() -> Router<SharedState> {
    Router::new()
        .route("/_faults", get(list_rules))
        .route("/_faults/latency", post(add_latency))
        .route("/_faults/fail", post(add_fail))
        .route("/_faults/cut", post(add_cut))
        .route("/_faults/stall", post(add_stall))
        .route("/_faults/clear", post(clear_rules))
        .route("/_faults/expire-tokens", post(expire_tokens))
        .route("/_faults/drop-websockets", post(drop_websockets))
        .route("/_faults/drop-events", post(drop_events))
        .route(
            "/_faults/unsubscribe-websockets",
            post(unsubscribe_websockets),
        )
}

async fn list_rules(State(state): State<SharedState>) -> Json<Vec<FaultRule>> {
    Json(state.faults.rules())
}

async fn add_latency(
    State(state): State<SharedState>,
    Json(req): Json<LatencyRequest>,
) -> Json<serde_json::Value> {
    let id = state
        .faults
        .add_latency(req.matcher, Duration::from_millis(req.millis), req.count);
    Json(serde_json::json!({ "id": id }))
}

async fn add_fail(State(state): State<SharedState>, Json(req): Json<FailRequest>) -> Response {
    if StatusCode::from_u16(req.status).is_err() {
        return (StatusCode::BAD_REQUEST, "invalid status").into_response();
    }
    let id = state
        .faults
        .fail_next(req.matcher, req.status, req.count.unwrap_or(1));
    Json(serde_json::json!({ "id": id })).into_response()
}

async fn add_cut(
    State(state): State<SharedState>,
    Json(req): Json<CutRequest>,
) -> Json<serde_json::Value> {
    let id = state
        .faults
        .cut_body_after(req.matcher, req.after_bytes, req.count.unwrap_or(1));
    Json(serde_json::json!({ "id": id }))
}

async fn add_stall(
    State(state): State<SharedState>,
    Json(req): Json<StallRequest>,
) -> Json<serde_json::Value> {
    let id = state.faults.stall(req.matcher, req.after_bytes, req.count);
    Json(serde_json::json!({ "id": id }))
}

async fn clear_rules(State(state): State<SharedState>) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}

async fn expire_tokens(State(state): State<SharedState>) -> StatusCode {
    state.expire_all_tokens();
    StatusCode::NO_CONTENT
}

async fn drop_websockets(State(state): State<SharedState>) -> Json<serde_json::Value> {
    let n = state.drop_websockets();
    Json(serde_json::json!({ "dropped": n }))
}

#[derive(Deserialize)]
struct DropEventsRequest {
    count: u64,
}

async fn drop_events(
    State(state): State<SharedState>,
    Json(req): Json<DropEventsRequest>,
) -> StatusCode {
    state.events.drop_next_events(req.count);
    StatusCode::NO_CONTENT
}

async fn unsubscribe_websockets(State(state): State<SharedState>) -> Json<serde_json::Value> {
    let n = state.unsubscribe_websockets();
    Json(serde_json::json!({ "unsubscribed": n }))
}
