//! The change-event websocket client (`/ws/event`, `shared/cells-events.md`): connect,
//! subscribe with the current token, turn each frame into a [`TreeEvent`] and hand it to an
//! [`EventSink`] (the mount's cache), reconnect with backoff when anything goes wrong.
//!
//! Invariants:
//! - Events are hints, never state: the server merges, reorders and drops them, echoes our
//!   own changes and replays nothing. So every (re)connection and every loss of the socket is
//!   reported to the sink as [`EventSink::connection_changed`], on which the cache must treat
//!   everything it knows as stale (bump its generation).
//! - The server never acknowledges a subscribe, and may silently drop a subscription while
//!   keeping the socket open: subscribe is re-sent after every token refresh, after every
//!   `idm` frame and every [`EventsConfig::resubscribe_every`].
//! - A socket that closes within [`AUTH_FAILURE_WINDOW`] of a subscribe is taken as a refused
//!   token: the token source is asked for a fresh one before the next attempt.
//! - Liveness: if nothing at all (frame or ping) arrives for [`EventsConfig::watchdog`], the
//!   socket is presumed dead and replaced.
//! - The token travels only inside the subscribe frame; it is never logged.
//! - Certificates are verified as by the HTTP client: not with [`EventsConfig::skip_verify`]
//!   (`--skip-verify`). Frames are bounded by tungstenite's defaults (16 MiB a frame, 64 MiB
//!   a message).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::token::TokenSource;
use crate::api::NodeKind;

/// A socket closing sooner than this after a subscribe means the token was refused.
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(2);

/// What happened to a node (`tree.NodeChangeEvent.Type`; a missing `Type` is `Create`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    UpdatePath,
    UpdateContent,
    UpdateMeta,
    UpdateUserMeta,
    Delete,
}

/// A node as a tree event carries it. Paths are user-space paths `<ws-slug>/<path>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventNode {
    pub uuid: String,
    pub path: String,
    /// `None` when the server left `Type` out (UNKNOWN).
    pub kind: Option<NodeKind>,
    pub size: u64,
    /// Unix seconds; 0 when absent.
    pub mtime: i64,
    pub etag: String,
    /// Uuid of the workspace this copy of the event was written for (`EventWorkspaceId`).
    pub workspace_id: String,
}

/// One tree event: "these paths may have changed".
#[derive(Debug, Clone, PartialEq)]
pub struct TreeEvent {
    pub kind: ChangeKind,
    /// The old location (moves) or the deleted node.
    pub source: Option<EventNode>,
    /// The new or re-read node.
    pub target: Option<EventNode>,
}

/// One server frame, classified as cells-events.md §3.1 says.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The bare string `"dump"` that ends one broadcast.
    Dump,
    Tree(Box<TreeEvent>),
    /// `@type: idm`: ACLs, roles or workspaces changed.
    Idm,
    /// A job's task changed (`TaskUpdated` + `Job`).
    Task,
    /// `@type: activity` and anything else we do not use.
    Ignored,
}

/// Parse one text frame. Errors only when the frame is not JSON at all.
pub fn parse_frame(text: &str) -> Result<Frame, serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    Ok(match &value {
        Value::String(s) if s == "dump" => Frame::Dump,
        Value::Object(map) => match map.get("@type").and_then(Value::as_str) {
            Some("idm") => Frame::Idm,
            Some(_) => Frame::Ignored,
            None if map.contains_key("TaskUpdated") => Frame::Task,
            None if map.contains_key("Target") || map.contains_key("Source") => {
                let kind = match map.get("Type").and_then(Value::as_str) {
                    None | Some("CREATE") => ChangeKind::Create,
                    Some("UPDATE_PATH") => ChangeKind::UpdatePath,
                    Some("UPDATE_CONTENT") => ChangeKind::UpdateContent,
                    Some("UPDATE_META") => ChangeKind::UpdateMeta,
                    Some("UPDATE_USER_META") => ChangeKind::UpdateUserMeta,
                    Some("DELETE") => ChangeKind::Delete,
                    Some(_) => return Ok(Frame::Ignored),
                };
                Frame::Tree(Box::new(TreeEvent {
                    kind,
                    source: map.get("Source").and_then(parse_node),
                    target: map.get("Target").and_then(parse_node),
                }))
            }
            None => Frame::Ignored,
        },
        _ => Frame::Ignored,
    })
}

/// Decode a protojson `tree.Node` (int64 as strings, zero values omitted).
fn parse_node(value: &Value) -> Option<EventNode> {
    let map = value.as_object()?;
    let text = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let number = |key: &str| -> i64 {
        match map.get(key) {
            Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
            _ => 0,
        }
    };
    let kind = match map.get("Type").and_then(Value::as_str) {
        Some("LEAF") => Some(NodeKind::File),
        Some("COLLECTION") => Some(NodeKind::Folder),
        _ => None,
    };
    // MetaStore values are JSON-encoded strings: "\"uuid\"".
    let workspace_id = map
        .get("MetaStore")
        .and_then(|m| m.get("EventWorkspaceId"))
        .and_then(Value::as_str)
        .map(|raw| {
            serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.trim_matches('"').into())
        })
        .unwrap_or_default();
    let path = text("Path").trim_matches('/').to_string();
    Some(EventNode {
        uuid: text("Uuid"),
        path,
        kind,
        size: number("Size").max(0) as u64,
        mtime: number("MTime"),
        etag: text("Etag"),
        workspace_id,
    })
}

/// Where the events go: the mount's cache.
pub trait EventSink: Send + Sync + 'static {
    /// A tree event arrived (idempotent invalidation; echoes of our own changes included).
    fn tree_event(&self, event: &TreeEvent);
    /// The socket was (re)connected or lost: anything cached may be stale.
    fn connection_changed(&self, connected: bool);
    /// An `idm` frame: workspaces or rights may have changed.
    fn workspaces_changed(&self) {}
}

/// Tunables; [`EventsConfig::new`] gives cells-events.md §7's values.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// `ws://` or `wss://` URL of the event endpoint.
    pub url: String,
    pub resubscribe_every: Duration,
    pub watchdog: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// Accept any TLS certificate (`--skip-verify`, as the HTTP client does).
    pub skip_verify: bool,
}

impl EventsConfig {
    pub fn new(url: String) -> EventsConfig {
        EventsConfig {
            url,
            resubscribe_every: Duration::from_secs(300),
            watchdog: Duration::from_secs(120),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            skip_verify: false,
        }
    }
}

/// The websocket URL for a server base URL (`http`→`ws`, `https`→`wss`) and the
/// bootconf's `ENDPOINT_WEBSOCKET` (default `/ws/event`).
pub fn websocket_url(base_url: &str, endpoint: Option<&str>) -> String {
    let base = base_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    let endpoint = endpoint.filter(|e| !e.is_empty()).unwrap_or("/ws/event");
    if endpoint.starts_with('/') {
        format!("{base}{endpoint}")
    } else {
        format!("{base}/{endpoint}")
    }
}

/// Counters for `cec mount --status` and tests.
#[derive(Debug, Default)]
pub struct EventsStats {
    pub connected: AtomicBool,
    /// Successful connections so far (the first one included).
    pub connections: AtomicU64,
    pub tree_events: AtomicU64,
    pub subscribes: AtomicU64,
    /// Unix seconds of the last frame or ping; 0 before any.
    pub last_frame_unix: AtomicU64,
}

/// A running events client; dropping it does not stop it, [`EventsClient::stop`] does.
pub struct EventsClient {
    pub stats: Arc<EventsStats>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl EventsClient {
    /// Start the client on the current tokio runtime.
    pub fn spawn(
        config: EventsConfig,
        tokens: Arc<dyn TokenSource>,
        sink: Arc<dyn EventSink>,
    ) -> EventsClient {
        let stats = Arc::new(EventsStats::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(config, tokens, sink, stats.clone(), cancel.clone()));
        EventsClient {
            stats,
            cancel,
            task,
        }
    }

    /// Close the socket and wait for the task to end.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Why one connection ended.
enum Ended {
    Cancelled,
    /// Closed by the peer or broken; `Instant` of the last subscribe.
    Lost {
        subscribed_at: Instant,
    },
    ConnectFailed,
}

async fn run(
    config: EventsConfig,
    tokens: Arc<dyn TokenSource>,
    sink: Arc<dyn EventSink>,
    stats: Arc<EventsStats>,
    cancel: CancellationToken,
) {
    let mut backoff = config.backoff_min;
    let mut refused_token: Option<String> = None;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        // Get a token; after a suspected refusal, ask for a fresh one.
        let token = match refused_token.take() {
            Some(rejected) => tokens.refresh_after_unauthorized(&rejected).await,
            None => tokens.token().await,
        };
        let started = Instant::now();
        let ended = match token {
            Ok(token) => connection(&config, &tokens, &sink, &stats, &cancel, token.clone()).await,
            Err(err) => {
                tracing::warn!(error = %err, "events: no token available, retrying later");
                Ended::ConnectFailed
            }
        };
        if stats.connected.swap(false, Ordering::SeqCst) {
            sink.connection_changed(false);
        }
        match ended {
            Ended::Cancelled => return,
            Ended::Lost { subscribed_at } => {
                if subscribed_at.elapsed() < AUTH_FAILURE_WINDOW {
                    tracing::warn!("events: socket closed right after subscribe (token refused?)");
                    refused_token = tokens.token().await.ok();
                }
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = config.backoff_min;
                }
            }
            Ended::ConnectFailed => {}
        }
        let jitter = rand::random_range(0.8..1.2);
        let wait = backoff.mul_f64(jitter);
        tracing::debug!(?wait, "events: reconnecting after backoff");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        backoff = backoff.mul_f64(1.6).min(config.backoff_max);
    }
}

fn subscribe_frame(token: &str) -> Message {
    Message::text(serde_json::json!({"@type": "subscribe", "jwt": token}).to_string())
}

async fn connection(
    config: &EventsConfig,
    tokens: &Arc<dyn TokenSource>,
    sink: &Arc<dyn EventSink>,
    stats: &Arc<EventsStats>,
    cancel: &CancellationToken,
    token: String,
) -> Ended {
    let connector = config
        .skip_verify
        .then(|| tokio_tungstenite::Connector::Rustls(super::tls::skip_verify_config()));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        config.url.as_str(),
        None,
        false,
        connector,
    );
    let ws = tokio::select! {
        _ = cancel.cancelled() => return Ended::Cancelled,
        r = tokio::time::timeout(config.connect_timeout, connect) => r,
    };
    let mut ws = match ws {
        Ok(Ok((ws, _response))) => ws,
        Ok(Err(err)) => {
            tracing::debug!(url = %config.url, error = %err, "events: connect failed");
            return Ended::ConnectFailed;
        }
        Err(_) => {
            tracing::debug!(url = %config.url, "events: connect timed out");
            return Ended::ConnectFailed;
        }
    };
    let mut token_changes = tokens.changes();
    token_changes.borrow_and_update();
    if ws.send(subscribe_frame(&token)).await.is_err() {
        return Ended::Lost {
            subscribed_at: Instant::now(),
        };
    }
    let mut subscribed_at = Instant::now();
    stats.subscribes.fetch_add(1, Ordering::Relaxed);
    stats.connections.fetch_add(1, Ordering::Relaxed);
    stats.connected.store(true, Ordering::SeqCst);
    tracing::info!(url = %config.url, "events: subscribed");
    // Whatever happened while we were away is unknown: the cache must revalidate.
    sink.connection_changed(true);

    let mut resubscribe = tokio::time::interval(config.resubscribe_every);
    resubscribe.tick().await;
    loop {
        let mut resubscribe_now = false;
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ws.close(None).await;
                return Ended::Cancelled;
            }
            _ = resubscribe.tick() => resubscribe_now = true,
            changed = token_changes.changed() => {
                if changed.is_ok() {
                    resubscribe_now = true;
                }
            }
            next = tokio::time::timeout(config.watchdog, ws.next()) => {
                let message = match next {
                    Err(_) => {
                        tracing::warn!("events: nothing received for {:?}, reconnecting", config.watchdog);
                        return Ended::Lost { subscribed_at };
                    }
                    Ok(None) => return Ended::Lost { subscribed_at },
                    Ok(Some(Err(err))) => {
                        tracing::debug!(error = %err, "events: socket error");
                        return Ended::Lost { subscribed_at };
                    }
                    Ok(Some(Ok(message))) => message,
                };
                stats.last_frame_unix.store(unix_now(), Ordering::Relaxed);
                match message {
                    Message::Text(text) => match parse_frame(text.as_str()) {
                        Ok(Frame::Tree(event)) => {
                            stats.tree_events.fetch_add(1, Ordering::Relaxed);
                            sink.tree_event(&event);
                        }
                        Ok(Frame::Idm) => {
                            sink.workspaces_changed();
                            resubscribe_now = true;
                        }
                        Ok(Frame::Dump | Frame::Task | Frame::Ignored) => {}
                        Err(err) => tracing::debug!(error = %err, "events: unreadable frame"),
                    },
                    Message::Close(_) => return Ended::Lost { subscribed_at },
                    // Pings are answered by tungstenite itself; they only feed the watchdog.
                    _ => {}
                }
            }
        }
        if resubscribe_now {
            let token = match tokens.token().await {
                Ok(token) => token,
                Err(err) => {
                    tracing::warn!(error = %err, "events: cannot refresh the token for re-subscribe");
                    continue;
                }
            };
            if ws.send(subscribe_frame(&token)).await.is_err() {
                return Ended::Lost { subscribed_at };
            }
            subscribed_at = Instant::now();
            stats.subscribes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_frame_kinds() {
        assert_eq!(parse_frame("\"dump\"").unwrap(), Frame::Dump);
        assert_eq!(
            parse_frame(r#"{"@type":"idm","Type":"UPDATE"}"#).unwrap(),
            Frame::Idm
        );
        assert_eq!(
            parse_frame(r#"{"@type":"activity"}"#).unwrap(),
            Frame::Ignored
        );
        assert_eq!(
            parse_frame(r#"{"TaskUpdated":{},"Job":{}}"#).unwrap(),
            Frame::Task
        );
        assert!(parse_frame("not json").is_err());
    }

    #[test]
    fn a_missing_type_is_a_create_and_fields_decode() {
        let frame = r#"{"Target":{"Uuid":"u1","Path":"personal-files/docs/a.txt","Type":"LEAF",
            "Size":"12","MTime":"1718000000","Etag":"abc",
            "MetaStore":{"name":"\"a.txt\"","EventWorkspaceId":"\"ws-1\""}}}"#;
        let Frame::Tree(event) = parse_frame(frame).unwrap() else {
            panic!("not a tree event")
        };
        assert_eq!(event.kind, ChangeKind::Create);
        assert!(event.source.is_none());
        let target = event.target.unwrap();
        assert_eq!(target.path, "personal-files/docs/a.txt");
        assert_eq!(target.kind, Some(NodeKind::File));
        assert_eq!(target.size, 12);
        assert_eq!(target.mtime, 1_718_000_000);
        assert_eq!(target.workspace_id, "ws-1");
    }

    #[test]
    fn moves_and_deletes_keep_source_and_target() {
        let frame = r#"{"Type":"UPDATE_PATH","Source":{"Uuid":"u","Path":"a/x"},
            "Target":{"Uuid":"u","Path":"a/y","Type":"COLLECTION"}}"#;
        let Frame::Tree(event) = parse_frame(frame).unwrap() else {
            panic!()
        };
        assert_eq!(event.kind, ChangeKind::UpdatePath);
        assert_eq!(event.source.unwrap().path, "a/x");
        assert_eq!(event.target.unwrap().kind, Some(NodeKind::Folder));
        let Frame::Tree(event) =
            parse_frame(r#"{"Type":"DELETE","Source":{"Path":"w/b"}}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(event.kind, ChangeKind::Delete);
        assert!(event.target.is_none());
    }

    #[test]
    fn websocket_urls_follow_the_scheme() {
        assert_eq!(
            websocket_url("http://127.0.0.1:8080/", None),
            "ws://127.0.0.1:8080/ws/event"
        );
        assert_eq!(
            websocket_url("https://cells.example.com", Some("/ws/event")),
            "wss://cells.example.com/ws/event"
        );
    }
}
