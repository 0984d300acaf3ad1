//! The change-event websocket `/ws/event` (cells-events.md §1-§4, §8).
//!
//! Owns the websocket sessions and the pump that turns the store's [`TreeChange`]s into
//! frames. Protocol, as the real server speaks it:
//! - No auth at the handshake. The client sends `{"@type":"subscribe","jwt":...}`; the token
//!   is verified like a REST bearer token and the session keeps the user and a snapshot of
//!   their workspaces; nothing is sent back. An empty jwt, a refused token or invalid JSON
//!   closes the socket (close code 1008, the JSON error as reason). `unsubscribe` clears the
//!   subscription and keeps the socket. Binary frames and unknown `@type`s are ignored.
//!   Client frames over 2048 bytes end the session.
//! - For each change and each subscribed session, one frame per workspace of the session's
//!   snapshot that can see the node, in protobuf JSON (PascalCase, int64 as strings, zero
//!   values and a CREATE `Type` omitted, `MetaStore.EventWorkspaceId` JSON-encoded, reserved
//!   `pydio:` metadata stripped), then the JSON string `"dump"`. UPDATE_PATH is rewritten per
//!   workspace to CREATE (source invisible) or DELETE (target invisible). Nodes whose base
//!   name starts with `.` never produce frames.
//! - UPDATE_USER_META (tags, bookmarks) goes at once, with the node re-read and its user
//!   metadata as the reader sees it, only to the sessions the metadata's policies let read
//!   it (a bookmark: its owner's).
//! - CREATE / UPDATE_CONTENT / UPDATE_META of one node are merged until the node has been
//!   quiet for [`DEFAULT_MERGE_WINDOW`] (configurable), so an upload usually yields one CREATE
//!   with its final Etag; UPDATE_PATH and DELETE go at once (ordering is not preserved).
//! - A websocket ping every [`DEFAULT_PING_INTERVAL`]; a socket silent (no pong) for
//!   [`DEFAULT_PONG_WAIT`] is dropped. Both configurable for tests.
//! - Each session's outgoing queue holds [`QUEUE_LENGTH`] frames; when it is full the session
//!   is silently unsubscribed (socket left open), as the real server does.
//!
//! Invariants: tokens are never logged; a session is in the table exactly while its socket
//! task runs; [`EventHub::drop_all`] ends sockets without a close frame.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::SharedState;
use crate::store::{ChangeKind, NodeRecord, Store, TreeChange};

/// How often the server pings each socket (the real one: every ~54-57 s).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(55);
/// Per-session outgoing queue (melody's `MessageBufferSize`).
pub const QUEUE_LENGTH: usize = 256;
/// A socket that sent nothing (not even a pong) for this long is dropped (`PongWait`).
pub const DEFAULT_PONG_WAIT: Duration = Duration::from_secs(60);
/// Quiet time after which the merged events of one node are sent (`events-batch.go`).
pub const DEFAULT_MERGE_WINDOW: Duration = Duration::from_secs(1);
/// Largest client frame accepted (`MaxMessageSize`).
pub const MAX_CLIENT_FRAME: usize = 2048;

/// What a subscribed session remembers (snapshot taken at subscribe time).
#[derive(Debug, Clone)]
struct Subscription {
    login: String,
    /// `(slug, uuid)` of the workspaces the user had when subscribing.
    workspaces: Vec<(String, String)>,
}

struct Session {
    subscription: Option<Subscription>,
    out: mpsc::Sender<String>,
    kill: Option<oneshot::Sender<()>>,
}

/// The websocket sessions and the change pump. Shared as `Arc<EventHub>`.
pub struct EventHub {
    store: Arc<Store>,
    sessions: Mutex<HashMap<u64, Session>>,
    next_id: AtomicU64,
    ping_interval_ms: AtomicU64,
    pump_started: AtomicBool,
    dropped_events: AtomicU64,
    merge_window_ms: AtomicU64,
    drop_next: AtomicU64,
    pong_wait_ms: AtomicU64,
}

impl EventHub {
    pub fn new(store: Arc<Store>) -> EventHub {
        EventHub {
            store,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            ping_interval_ms: AtomicU64::new(DEFAULT_PING_INTERVAL.as_millis() as u64),
            pump_started: AtomicBool::new(false),
            dropped_events: AtomicU64::new(0),
            merge_window_ms: AtomicU64::new(DEFAULT_MERGE_WINDOW.as_millis() as u64),
            drop_next: AtomicU64::new(0),
            pong_wait_ms: AtomicU64::new(DEFAULT_PONG_WAIT.as_millis() as u64),
        }
    }

    /// Change the ping period of sessions opened from now on.
    pub fn set_ping_interval(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.ping_interval_ms.store(ms, Ordering::Relaxed);
    }

    /// Change how long a socket may stay silent (no pong, no frame) before it is dropped,
    /// for sessions opened from now on.
    pub fn set_pong_wait(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        self.pong_wait_ms.store(ms, Ordering::Relaxed);
    }

    fn pong_wait(&self) -> Duration {
        Duration::from_millis(self.pong_wait_ms.load(Ordering::Relaxed))
    }

    fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.load(Ordering::Relaxed))
    }

    /// Number of open sockets.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().expect("sessions lock").len()
    }

    /// Number of open sockets with an active subscription.
    pub fn subscribed_count(&self) -> usize {
        self.sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.subscription.is_some())
            .count()
    }

    /// Drop every socket without a close frame. Returns how many were dropped.
    pub fn drop_all(&self) -> usize {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let mut n = 0;
        for session in sessions.values_mut() {
            session.subscription = None;
            if let Some(kill) = session.kill.take() {
                let _ = kill.send(());
                n += 1;
            }
        }
        n
    }

    /// Clear every subscription, keeping the sockets open (the real server's silent
    /// unsubscribe). Returns how many sessions were subscribed.
    pub fn unsubscribe_all(&self) -> usize {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let mut n = 0;
        for session in sessions.values_mut() {
            if session.subscription.take().is_some() {
                n += 1;
            }
        }
        n
    }

    /// Send a job progress frame (`{"TaskUpdated":task,"Job":job}`, swagger `jobsTask` and
    /// `jobsJob` in protobuf JSON) to the sessions of `owner` (the task's `TriggerOwner`).
    /// The job scheduler calls this when a user job changes state.
    pub fn task_updated(&self, owner: &str, task: Value, job: Value) {
        let frame = json!({ "TaskUpdated": task, "Job": job }).to_string();
        self.send_to(|sub| sub.login == owner, &[frame]);
    }

    /// Send an `idm` frame (`{"@type":"idm", ...}`) to the sessions of `login`.
    pub fn idm_event(&self, login: &str, mut event: Value) {
        if let Some(obj) = event.as_object_mut() {
            obj.insert("@type".into(), Value::String("idm".into()));
        }
        let frame = event.to_string();
        self.send_to(|sub| sub.login == login, &[frame]);
    }

    fn send_to(&self, wants: impl Fn(&Subscription) -> bool, frames: &[String]) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        for session in sessions.values_mut() {
            let Some(sub) = &session.subscription else {
                continue;
            };
            if wants(sub) {
                queue_frames(session, frames, &self.dropped_events);
            }
        }
    }

    fn register(&self) -> (u64, mpsc::Receiver<String>, oneshot::Receiver<()>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (out, out_rx) = mpsc::channel(QUEUE_LENGTH);
        let (kill, kill_rx) = oneshot::channel();
        self.sessions.lock().expect("sessions lock").insert(
            id,
            Session {
                subscription: None,
                out,
                kill: Some(kill),
            },
        );
        (id, out_rx, kill_rx)
    }

    fn unregister(&self, id: u64) {
        self.sessions.lock().expect("sessions lock").remove(&id);
    }

    fn set_subscription(&self, id: u64, subscription: Option<Subscription>) {
        if let Some(s) = self.sessions.lock().expect("sessions lock").get_mut(&id) {
            s.subscription = subscription;
        }
    }

    /// Start the change pump once (needs a tokio runtime; called from the first socket).
    fn ensure_pump(self: &Arc<Self>) {
        if self.pump_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut changes = self.store.subscribe_changes();
        let hub: Weak<EventHub> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut merger = Merger::default();
            loop {
                let next_flush = merger.next_deadline();
                let received = tokio::select! {
                    r = changes.recv() => Some(r),
                    _ = sleep_until_opt(next_flush) => None,
                };
                let Some(hub) = hub.upgrade() else { return };
                match received {
                    None => {
                        for change in merger.take_due(tokio::time::Instant::now()) {
                            hub.broadcast(&change);
                        }
                    }
                    Some(Ok(change)) => {
                        let window = hub.merge_window();
                        if let Some(change) = merger.offer(change, window) {
                            hub.broadcast(&change);
                        }
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                        tracing::warn!(lost = n, "event pump lagged: some events were dropped");
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                }
            }
        });
    }

    /// Set how long CREATE / UPDATE_CONTENT / UPDATE_META events of one node are merged
    /// before being sent (the real server: 1 s of quiet per node). Zero sends at once.
    pub fn set_merge_window(&self, window: Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.merge_window_ms.store(ms, Ordering::Relaxed);
    }

    fn merge_window(&self) -> Duration {
        Duration::from_millis(self.merge_window_ms.load(Ordering::Relaxed))
    }

    /// Lose the next `n` tree events for every session (a test hook: events are lossy on
    /// the real server too).
    pub fn drop_next_events(&self, n: u64) {
        self.drop_next.store(n, Ordering::Relaxed);
    }

    /// Deliver one change to every subscribed session.
    fn broadcast(&self, change: &TreeChange) {
        if ignored_for_output(change) {
            return;
        }
        if self
            .drop_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            self.dropped_events.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let subscribers: Vec<(u64, Subscription)> = {
            let sessions = self.sessions.lock().expect("sessions lock");
            sessions
                .iter()
                .filter_map(|(id, s)| s.subscription.clone().map(|sub| (*id, sub)))
                .collect()
        };
        // Visibility per user is the same for every session of that user.
        let mut frames_by_login: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (id, sub) in subscribers {
            if change.only_for.as_ref().is_some_and(|l| *l != sub.login) {
                continue;
            }
            let frames = frames_by_login
                .entry(sub.login.clone())
                .or_insert_with(|| self.frames_for(&sub.login, change))
                .iter()
                .filter(|(ws_uuid, _)| sub.workspaces.iter().any(|(_, u)| u == ws_uuid))
                .map(|(_, frame)| frame.clone())
                .collect::<Vec<_>>();
            if frames.is_empty() {
                continue;
            }
            let mut all = frames;
            all.push(Value::String("dump".into()).to_string());
            let mut sessions = self.sessions.lock().expect("sessions lock");
            if let Some(session) = sessions.get_mut(&id) {
                queue_frames(session, &all, &self.dropped_events);
            }
        }
    }

    /// The frames `login` should get for `change`, tagged with the workspace uuid they are for.
    fn frames_for(&self, login: &str, change: &TreeChange) -> Vec<(String, String)> {
        let locate = |node: &Option<NodeRecord>| -> Vec<(String, String)> {
            match node {
                Some(n) => self
                    .store
                    .visible_paths(login, n)
                    .into_iter()
                    .map(|v| (v.ws_uuid, v.path))
                    .collect(),
                None => Vec::new(),
            }
        };
        let sources = locate(&change.source);
        let targets = locate(&change.target);
        let mut ws_order: Vec<String> = Vec::new();
        for (ws, _) in targets.iter().chain(sources.iter()) {
            if !ws_order.contains(ws) {
                ws_order.push(ws.clone());
            }
        }
        let mut frames = Vec::new();
        for ws in ws_order {
            let source_path = sources
                .iter()
                .find(|(w, _)| *w == ws)
                .map(|(_, p)| p.as_str());
            let target_path = targets
                .iter()
                .find(|(w, _)| *w == ws)
                .map(|(_, p)| p.as_str());
            let render = |node: &Option<NodeRecord>, path: Option<&str>| -> Option<Value> {
                let (node, path) = (node.as_ref()?, path?);
                let mut json = event_node(node, path, &ws);
                if change.kind == ChangeKind::UpdateUserMeta {
                    // The re-read node carries the user metadata its reader sees.
                    for (namespace, value) in
                        crate::node_meta::node_meta(&self.store, login, &node.uuid)
                    {
                        json["MetaStore"][namespace] = Value::String(value.to_string());
                    }
                }
                Some(json)
            };
            let source = render(&change.source, source_path);
            let target = render(&change.target, target_path);
            let frame = match change.kind {
                ChangeKind::UpdatePath => match (source, target) {
                    (Some(s), Some(t)) => json!({"Type": "UPDATE_PATH", "Source": s, "Target": t}),
                    (None, Some(t)) => json!({ "Target": t }),
                    (Some(s), None) => {
                        if is_dot_path(source_path.unwrap_or("")) {
                            continue;
                        }
                        json!({"Type": "DELETE", "Source": s})
                    }
                    (None, None) => continue,
                },
                ChangeKind::Create => match target {
                    Some(t) => json!({ "Target": t }),
                    None => continue,
                },
                ChangeKind::UpdateContent | ChangeKind::UpdateMeta => {
                    let Some(t) = target else { continue };
                    let kind = if change.kind == ChangeKind::UpdateContent {
                        "UPDATE_CONTENT"
                    } else {
                        "UPDATE_META"
                    };
                    json!({"Type": kind, "Target": t})
                }
                ChangeKind::UpdateUserMeta => match target {
                    Some(t) => json!({"Type": "UPDATE_USER_META", "Target": t}),
                    None => continue,
                },
                ChangeKind::Delete => match source {
                    Some(s) => json!({"Type": "DELETE", "Source": s}),
                    None => continue,
                },
            };
            frames.push((ws, frame.to_string()));
        }
        frames
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Per-node merging of CREATE / UPDATE_CONTENT / UPDATE_META (cells-events.md §3.3): events
/// of one node are held until the node has been quiet for the merge window; the merged event
/// is a CREATE if any was, else UPDATE_CONTENT if any was, else the last type; it carries the
/// latest node, with a `"temporary"` Etag replaced by the last real one seen. Other kinds
/// (UPDATE_PATH, DELETE) pass at once, so ordering is not preserved, as on the real server.
#[derive(Default)]
struct Merger {
    pending: HashMap<String, PendingNode>,
}

struct PendingNode {
    created: bool,
    content: bool,
    last_kind: ChangeKind,
    target: NodeRecord,
    real_etag: Option<String>,
    deadline: tokio::time::Instant,
}

impl Merger {
    /// Take a change: returns it if it must be sent now, else holds it.
    fn offer(&mut self, change: TreeChange, window: Duration) -> Option<TreeChange> {
        let mergeable = matches!(
            change.kind,
            ChangeKind::Create | ChangeKind::UpdateContent | ChangeKind::UpdateMeta
        );
        let target = match (&change.target, mergeable && !window.is_zero()) {
            (Some(t), true) => t.clone(),
            _ => return Some(change),
        };
        let deadline = tokio::time::Instant::now() + window;
        let real_etag = (target.etag != crate::store::TEMPORARY_ETAG && !target.etag.is_empty())
            .then(|| target.etag.clone());
        let entry = self
            .pending
            .entry(target.uuid.clone())
            .or_insert_with(|| PendingNode {
                created: false,
                content: false,
                last_kind: change.kind,
                target: target.clone(),
                real_etag: None,
                deadline,
            });
        entry.created |= change.kind == ChangeKind::Create;
        entry.content |= change.kind == ChangeKind::UpdateContent;
        entry.last_kind = change.kind;
        entry.target = target;
        if real_etag.is_some() {
            entry.real_etag = real_etag;
        }
        entry.deadline = deadline;
        None
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// The merged events whose node has been quiet long enough.
    fn take_due(&mut self, now: tokio::time::Instant) -> Vec<TreeChange> {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| self.pending.remove(&k))
            .map(|p| {
                let kind = if p.created {
                    ChangeKind::Create
                } else if p.content {
                    ChangeKind::UpdateContent
                } else {
                    p.last_kind
                };
                let mut target = p.target;
                if target.etag == crate::store::TEMPORARY_ETAG
                    && let Some(etag) = p.real_etag
                {
                    target.etag = etag;
                }
                TreeChange {
                    kind,
                    source: None,
                    target: Some(target),
                    only_for: None,
                }
            })
            .collect()
    }
}

/// Queue frames on a session; a full queue silently unsubscribes it.
fn queue_frames(session: &mut Session, frames: &[String], dropped: &AtomicU64) {
    for frame in frames {
        match session.out.try_send(frame.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped.fetch_add(1, Ordering::Relaxed);
                session.subscription = None;
                return;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

fn is_dot_path(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with('.'))
}

/// `tree.IgnoreNodeForOutput`: changes whose node (the target, or the source when there is no
/// target) has a dot base name produce no frame.
fn ignored_for_output(change: &TreeChange) -> bool {
    let node = change.target.as_ref().or(change.source.as_ref());
    node.is_none_or(|n| n.name().starts_with('.'))
}

/// A node as an event carries it: `treeNode` JSON at `path` with `EventWorkspaceId`.
fn event_node(node: &NodeRecord, path: &str, ws_uuid: &str) -> Value {
    let mut extra = std::collections::BTreeMap::new();
    extra.insert(
        "EventWorkspaceId".to_owned(),
        Value::String(ws_uuid.to_owned()),
    );
    node.to_tree_node(path, &extra)
}

/// `GET /ws/event`.
pub fn router() -> Router<SharedState> {
    Router::new().route("/ws/event", get(upgrade))
}

async fn upgrade(State(state): State<SharedState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| run_session(state, socket))
}

/// What a client text frame asks for.
enum ClientAction {
    Nothing,
    Close(String),
}

async fn run_session(state: SharedState, mut socket: WebSocket) {
    let hub = state.events.clone();
    hub.ensure_pump();
    let (id, mut outgoing, mut kill) = hub.register();
    let period = hub.ping_interval();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let pong_wait = hub.pong_wait();
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut kill => {
                // Dropping the socket ends the TCP connection with no close frame.
                hub.unregister(id);
                return;
            }
            frame = outgoing.recv() => {
                let Some(frame) = frame else { break };
                if socket.send(Message::Text(frame.into())).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > pong_wait {
                    // No pong in time: the real server drops the connection.
                    break;
                }
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                last_heard = tokio::time::Instant::now();
                match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(text))) => {
                        match handle_client_text(&state, id, text.as_str()).await {
                            ClientAction::Nothing => {}
                            ClientAction::Close(error) => {
                                hub.set_subscription(id, None);
                                let reason = close_reason(&error);
                                let _ = socket
                                    .send(Message::Close(Some(CloseFrame {
                                        code: 1008,
                                        reason: reason.into(),
                                    })))
                                    .await;
                                break;
                            }
                        }
                    }
                    Some(Ok(_)) => {} // binary, ping, pong: nothing to do
                }
            }
        }
    }
    hub.unregister(id);
}

/// `{"@type":"error","jwt":"","error":...}`, cut to fit a close frame (123 bytes).
fn close_reason(error: &str) -> String {
    let mut text = error.to_owned();
    loop {
        let reason = json!({"@type": "error", "jwt": "", "error": text}).to_string();
        if reason.len() <= 123 || text.is_empty() {
            return reason;
        }
        let mut cut = text.len().saturating_sub(8);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

async fn handle_client_text(state: &SharedState, id: u64, text: &str) -> ClientAction {
    let message: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return ClientAction::Close("invalid message".into()),
    };
    let kind = message.get("@type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "subscribe" => {
            let jwt = message.get("jwt").and_then(Value::as_str).unwrap_or("");
            if jwt.is_empty() {
                return ClientAction::Close("empty jwt".into());
            }
            let principal = match state.auth.verify(jwt) {
                Ok(p) => p,
                Err(_) => return ClientAction::Close("invalid token".into()),
            };
            let store = state.store.clone();
            let login = principal.login.clone();
            let workspaces = tokio::task::spawn_blocking(move || {
                store
                    .workspaces(&login)
                    .into_iter()
                    .map(|w| (w.slug, w.uuid))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            state.events.set_subscription(
                id,
                Some(Subscription {
                    login: principal.login,
                    workspaces,
                }),
            );
            ClientAction::Nothing
        }
        "unsubscribe" => {
            state.events.set_subscription(id, None);
            ClientAction::Nothing
        }
        _ => ClientAction::Nothing,
    }
}
