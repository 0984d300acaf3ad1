//! The REST request log: one `info` line per request with method, path, status, duration and
//! user, never the token; the bodies of errors at `debug`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::TestEmu;
use reqwest::Method;
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
}

// Current-thread runtime: the subscriber set for this thread sees the server's tasks.
#[tokio::test]
async fn each_rest_request_is_one_info_line_and_error_bodies_are_debug() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,cells_emu::rest=debug",
        ))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let emu = TestEmu::start().await;
    let token = emu.pat("alice");
    let (st, _) = emu
        .call(
            Method::POST,
            "/meta/bulk/get",
            Some(&token),
            Some(&json!({"NodePaths": ["personal-files/*"]})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = emu
        .call(
            Method::GET,
            "/tree/stat/personal-files/missing.txt",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = emu
        .call(Method::GET, "/tree/stat/personal-files", None, None)
        .await;
    assert_eq!(st, 401);

    let lines = logs.lines();
    let requests: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("REST request"))
        .collect();
    assert_eq!(requests.len(), 3, "{lines:#?}");
    let ok = requests[0];
    assert!(ok.contains("INFO"), "{ok}");
    for needle in [
        "method=POST",
        "path=/a/meta/bulk/get",
        "status=200",
        "user=alice",
        "duration_ms=",
    ] {
        assert!(ok.contains(needle), "{needle} in {ok}");
    }
    assert!(requests[1].contains("status=404") && requests[1].contains("user=alice"));
    assert!(requests[2].contains("status=401") && requests[2].contains("user=-"));
    let bodies: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("REST error body"))
        .collect();
    assert_eq!(bodies.len(), 2, "{lines:#?}");
    assert!(
        bodies[0].contains("DEBUG") && bodies[0].contains("missing.txt"),
        "{}",
        bodies[0]
    );
    let all = lines.join("\n");
    assert!(!all.contains(&token), "a token was logged");
}
