//! `CliCtx`: what a test of the `cec` command line needs: an emulator, a PAT for `alice`, an
//! isolated home for `cec` (its own configuration, no inherited `CEC_*`), and direct API
//! access to set up and check the server. Test files add their own helpers in an
//! `impl CliCtx` block of their own (the type lives in each test crate).

use std::path::PathBuf;
use std::sync::Arc;

use cec::api::CellsApi;
use futures::StreamExt;

use super::{Run, TestServer, api_with_token, cec_cmd, mint_pat, run, spawn_emulator};

pub struct CliCtx {
    pub server: TestServer,
    pub token: String,
    /// `cec`'s home (and the test's scratch space).
    pub home: tempfile::TempDir,
}

impl CliCtx {
    /// A fresh emulator and `alice`'s token.
    pub async fn new() -> CliCtx {
        let server = spawn_emulator().await;
        let token = mint_pat(&server, "alice");
        CliCtx {
            server,
            token,
            home: tempfile::tempdir().expect("home"),
        }
    }

    /// `cec ARGS` authenticated by `CEC_URL` + `CEC_TOKEN`, not started yet.
    pub fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = cec_cmd(self.home.path());
        c.env("CEC_URL", &self.server.url)
            .env("CEC_TOKEN", &self.token)
            .args(args);
        c
    }

    pub async fn cec(&self, args: &[&str]) -> Run {
        run(self.cmd(args)).await
    }

    /// `cec ARGS`, which must succeed without printing the token.
    pub async fn ok(&self, args: &[&str]) -> Run {
        let r = self.cec(args).await;
        assert_eq!(r.code(), 0, "cec {args:?} failed: {}", r.all());
        assert!(!r.all().contains(&self.token), "token leaked: {}", r.all());
        r
    }

    pub fn api(&self) -> Arc<cec::api::http::HttpCellsApi> {
        api_with_token(&self.server, &self.token)
    }

    /// Store `content` at `path` on the server; its ETag.
    pub async fn put(&self, path: &str, content: impl AsRef<[u8]>) -> String {
        let content = bytes::Bytes::copy_from_slice(content.as_ref());
        self.api()
            .put_object(path, content, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("put {path}: {e}"))
    }

    /// The content of `path` on the server; `None` when it cannot be read.
    pub async fn body(&self, path: &str) -> Option<Vec<u8>> {
        let mut stream = self.api().get_object(path, None).await.ok()?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.expect("body chunk"));
        }
        Some(out)
    }

    pub async fn exists(&self, path: &str) -> bool {
        self.api().stat(path).await.expect("stat").is_some()
    }

    /// `name` inside the home (not created).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }
}
