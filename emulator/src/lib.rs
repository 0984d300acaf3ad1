//! cells-emu: an emulator of a Pydio Cells v4.4 server, faithful on the wire to what
//! `shared/cells-api.md` and the official swagger describe: REST v1 under `/a`, the S3
//! gateway under `/io`, OIDC under `/oidc` (plus the `/oauth2/*` pages), the change-event
//! websocket at `/ws/event`, and public links under `/public` (`shared/cells-share-versions.md`,
//! which also describes the file versions). Tests, benchmarks and `cec mount --demo` start it in-process
//! with [`start`]; the `cells-emu` binary serves it for manual use.
//!
//! Invariants:
//! - The emulator never offers a shortcut the real server lacks: a client that works here
//!   must work against a real server.
//! - Everything it stores lives under the data directory; a restart keeps it all, and a
//!   crash mid-write never leaves a torn file visible.
//! - Fault injection exists only when the server was started with `faults: true`.

pub mod admin;
pub mod auth;
pub mod config;
pub mod events;
pub mod faults;
pub mod idm;
pub mod jobs;
pub mod node_meta;
pub mod oidc;
pub mod public;
pub mod reqlog;
pub mod rest;
pub mod s3;
pub mod sample;
pub mod shares;
pub mod store;
pub mod usermeta;
pub mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
pub use config::EmuConfig;

/// Everything the handlers share.
pub struct AppState {
    pub config: EmuConfig,
    pub store: Arc<store::Store>,
    pub auth: Arc<auth::Auth>,
    pub jobs: Arc<jobs::Jobs>,
    pub events: Arc<events::EventHub>,
    pub faults: Arc<faults::Faults>,
}

pub type SharedState = Arc<AppState>;

/// The whole server as one router.
pub fn router(state: SharedState) -> Router {
    let mut app = Router::new()
        .nest(
            "/a",
            rest_api().layer(axum::middleware::from_fn(reqlog::log_request)),
        )
        .merge(oidc::router())
        .merge(events::router())
        .merge(public::router())
        .merge(s3::router());
    if state.config.faults {
        app = app.merge(faults::control_router());
    }
    faults::layer(app, state.clone()).with_state(state)
}

/// The REST API under `/a`: REST v1's own families, the admin, share and user-metadata
/// endpoints, and the `restError` 404 for anything else. Composed here so that `rest`, which
/// they all use for its vocabulary ([`rest::wire`]), imports none of them.
fn rest_api() -> Router<SharedState> {
    rest::router()
        .merge(admin::router())
        .merge(shares::router())
        .merge(usermeta::router())
        .fallback(rest::not_found)
}

/// A running emulator: its base URL (`http://127.0.0.1:PORT`, no trailing slash) and state.
pub struct RunningEmulator {
    pub url: String,
    pub addr: SocketAddr,
    pub state: SharedState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningEmulator {
    /// Stop serving and wait until the listener is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Every accepted connection sends small writes at once (TCP_NODELAY), as Go servers such as
/// Cells do by default: without it a short body written after its headers waits for the
/// client's delayed ACK (about 40 ms on Linux), which made small GETs look slow.
fn with_nodelay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set on an accepted connection: {e}");
        }
    }
    listener.tap_io(set_nodelay as fn(&mut tokio::net::TcpStream))
}

/// Open (or create) the data directory, bind the listener and serve in a background task.
pub async fn start(config: EmuConfig) -> anyhow::Result<RunningEmulator> {
    let state = Arc::new(AppState::open(config)?);
    let listener = tokio::net::TcpListener::bind(state.config.listen).await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let app = router(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Job state changes become task frames on the websocket.
    let mut job_updates = state.jobs.subscribe();
    let events = state.events.clone();
    let forward_jobs = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match job_updates.recv().await {
                Ok(job) => events.task_updated(&job.owner, job.task_json(), job.job_json()),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    });
    let listener = with_nodelay(listener);
    let versioning = versions::spawn_worker(state.store.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        })
        .await;
        forward_jobs.abort();
        versioning.abort();
    });
    Ok(RunningEmulator {
        url,
        addr,
        state,
        shutdown: Some(tx),
        task: Some(task),
    })
}

impl AppState {
    /// Build the state from a configuration, opening the on-disk store.
    pub fn open(config: EmuConfig) -> anyhow::Result<AppState> {
        let store = Arc::new(store::Store::open(&config)?);
        // Before the modules' tables are set up, as when the store seeded itself (each
        // module's `init` is idempotent).
        if config.sample && store.is_fresh() {
            sample::seed(&store)?;
        }
        versions::init(&store)?;
        shares::init(&store)?;
        usermeta::init(&store)?;
        let auth = Arc::new(auth::Auth::new(&config, store.clone())?);
        let jobs = Arc::new(jobs::Jobs::new(&config));
        let events = Arc::new(events::EventHub::new(store.clone()));
        let faults = Arc::new(faults::Faults::default());
        Ok(AppState {
            config,
            store,
            auth,
            jobs,
            events,
            faults,
        })
    }
}

#[cfg(test)]
mod listener_tests {
    use axum::serve::Listener;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = super::with_nodelay(listener);
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (accepted, _) = listener.accept().await;
        assert!(
            accepted.nodelay().unwrap(),
            "the emulator's sockets must set TCP_NODELAY"
        );
        client.await.unwrap().unwrap();
    }
}
