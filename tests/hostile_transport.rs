//! Transport (issue 23): the events websocket honours `--skip-verify` as the HTTP client
//! does: against a server with a self-signed certificate it completes the TLS handshake and
//! asks for the websocket when told to skip verification, and never otherwise.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cec::api::events::{EventSink, EventsClient, EventsConfig, TreeEvent};
use common::self_signed_acceptor;

struct Quiet;

impl EventSink for Quiet {
    fn tree_event(&self, _event: &TreeEvent) {}
    fn connection_changed(&self, _connected: bool) {}
}

/// A TLS server with a self-signed certificate (openssl CLI) that counts the HTTP requests
/// it receives after a handshake, and answers none.
async fn self_signed_server(dir: &std::path::Path) -> (String, Arc<AtomicUsize>) {
    let acceptor = self_signed_acceptor(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "wss://localhost:{}/ws/event",
        listener.local_addr().unwrap().port()
    );
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(sock).await {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 4096];
                    if let Ok(n) = tls.read(&mut buf).await
                        && buf[..n].starts_with(b"GET /ws/event")
                    {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (url, requests)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_events_websocket_honours_skip_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (url, requests) = self_signed_server(dir.path()).await;
    let tokens: Arc<dyn cec::auth::TokenSource> =
        Arc::new(cec::auth::StaticToken::new("t", "test token"));
    let config = |skip_verify| EventsConfig {
        skip_verify,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        ..EventsConfig::new(url.clone())
    };

    // Verified (the default): the self-signed certificate is refused, nothing is asked.
    let client = EventsClient::spawn(config(false), tokens.clone(), Arc::new(Quiet));
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.stop().await;
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "a self-signed certificate was accepted"
    );

    // --skip-verify: the handshake completes and the websocket is asked for.
    let client = EventsClient::spawn(config(true), tokens, Arc::new(Quiet));
    let started = std::time::Instant::now();
    while requests.load(Ordering::SeqCst) == 0 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.stop().await;
    assert!(
        requests.load(Ordering::SeqCst) > 0,
        "the websocket ignored --skip-verify"
    );
}
