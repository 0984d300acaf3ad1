//! Shared helpers for the emulator's integration tests: start an emulator on loopback in a
//! temporary data directory, mint tokens, call REST with JSON bodies, and validate every JSON
//! response against the schema of its operation in the official swagger.
//!
//! The swagger is read from `$CELLS_SWAGGER`, else from `shared/cells-openapi/` next to the
//! repository; a test that needs it FAILS when it is missing (it never skips).
#![allow(dead_code)]

pub mod swagger;

use std::time::Duration;

use cells_emu::auth::PatExpiry;
use cells_emu::{EmuConfig, RunningEmulator};
use serde_json::Value;

pub use swagger::Swagger;

/// A running emulator with its temp dir and an HTTP client that does not follow redirects.
pub struct TestEmu {
    pub emu: Option<RunningEmulator>,
    pub dir: tempfile::TempDir,
    pub config: EmuConfig,
    pub http: reqwest::Client,
    pub url: String,
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

impl TestEmu {
    /// Start with [`EmuConfig::for_tests`], tweaked by `f`.
    pub async fn start_with(f: impl FnOnce(&mut EmuConfig)) -> TestEmu {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = EmuConfig::for_tests(dir.path().join("data"));
        f(&mut config);
        let emu = cells_emu::start(config.clone())
            .await
            .expect("start emulator");
        let url = emu.url.clone();
        TestEmu {
            emu: Some(emu),
            dir,
            config,
            http: http_client(),
            url,
        }
    }

    pub async fn start() -> TestEmu {
        TestEmu::start_with(|_| {}).await
    }

    pub fn state(&self) -> &cells_emu::SharedState {
        &self.emu.as_ref().expect("running").state
    }

    /// Stop and start again on the same data directory (a new port).
    pub async fn restart(&mut self) {
        if let Some(emu) = self.emu.take() {
            emu.stop().await;
        }
        let emu = cells_emu::start(self.config.clone())
            .await
            .expect("restart emulator");
        self.url = emu.url.clone();
        self.emu = Some(emu);
    }

    /// A PAT valid for a day.
    pub fn pat(&self, login: &str) -> String {
        self.state()
            .auth
            .mint_pat(login, PatExpiry::Fixed(Duration::from_secs(86400)))
            .expect("mint pat")
    }

    /// POST/PUT/GET a REST path under `/a` with a bearer token; returns (status, body text).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String) {
        let mut req = self.http.request(method, format!("{}/a{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// Call a REST operation and validate the JSON body against the swagger schema of the
    /// response (`definition` for 200, `restError` otherwise). Returns (status, JSON).
    pub async fn rest(
        &self,
        swagger: &Swagger,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        definition: &str,
    ) -> (u16, Value) {
        let (status, text) = self.call(method, path, token, body).await;
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: response is not JSON ({e}): {text}"));
        let def = if status == 200 {
            definition
        } else {
            "restError"
        };
        swagger.validate(def, &json);
        (status, json)
    }

    /// Wait until none of `job_ids` is listed any more (AutoClean) or one ends in Error;
    /// returns every status observed (in order, deduplicated) per job.
    pub async fn wait_jobs(
        &self,
        swagger: &Swagger,
        token: &str,
        job_ids: &[String],
    ) -> Vec<Vec<String>> {
        let mut seen: Vec<Vec<String>> = vec![Vec::new(); job_ids.len()];
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self
                .rest(
                    swagger,
                    reqwest::Method::POST,
                    "/jobs/user",
                    Some(token),
                    Some(&serde_json::json!({"JobIDs": job_ids, "LoadTasks": "Any"})),
                    "restUserJobsCollection",
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let jobs = body["Jobs"].as_array().cloned().unwrap_or_default();
            let mut pending = false;
            for (i, id) in job_ids.iter().enumerate() {
                if let Some(j) = jobs.iter().find(|j| j["ID"] == *id) {
                    let st = j["Tasks"][0]["Status"].as_str().unwrap_or("").to_string();
                    if seen[i].last() != Some(&st) {
                        seen[i].push(st.clone());
                    }
                    if st == "Error" || st == "Interrupted" {
                        continue;
                    }
                    pending = true;
                }
            }
            if !pending {
                return seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "jobs never finished: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestEmu {
    fn drop(&mut self) {
        // The server task dies with the test's runtime; nothing else to clean.
        let _ = self.emu.take();
    }
}

/// Paths of the nodes of a `restBulkMetaResponse`.
pub fn node_paths(body: &Value) -> Vec<String> {
    body["Nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| n["Path"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A MetaStore value decoded from its JSON string.
pub fn meta(node: &Value, key: &str) -> Option<Value> {
    node["MetaStore"][key]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Drive the OAuth authorization-code flow over plain HTTP, as a browser would: GET the
/// authorization URL, follow to the login form, post the credentials, and return the
/// `code` from the final redirect to `redirect_uri` (after checking `state`).
/// `code_challenge` is an S256 challenge when PKCE is used.
pub async fn authorize_code(
    base_url: &str,
    login: &str,
    password: &str,
    redirect_uri: &str,
    code_challenge: Option<&str>,
) -> Result<String, String> {
    let http = http_client();
    let state = "abcdefghijklmnop";
    let mut auth = url::Url::parse(&format!("{base_url}/oidc/oauth2/auth")).unwrap();
    auth.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "cells-client")
        .append_pair("scope", "openid email profile pydio offline")
        .append_pair("state", state)
        .append_pair("redirect_uri", redirect_uri);
    if let Some(c) = code_challenge {
        auth.query_pairs_mut()
            .append_pair("code_challenge", c)
            .append_pair("code_challenge_method", "S256");
    }
    let resp = http.get(auth).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_redirection() {
        return Err(format!("auth: status {}", resp.status()));
    }
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let login_url = url::Url::parse(base_url).unwrap().join(&location).unwrap();
    let form_page = http
        .get(login_url.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if form_page.status() != 200 {
        return Err(format!("login form: status {}", form_page.status()));
    }
    let html = form_page.text().await.unwrap();
    let challenge = html
        .split("name=\"login_challenge\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or("no login_challenge in the form")?
        .to_string();
    let resp = http
        .post(login_url)
        .form(&[
            ("login_challenge", challenge.as_str()),
            ("login", login),
            ("password", password),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_redirection() {
        return Err(format!("login: status {}", resp.status()));
    }
    let back = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let pairs: std::collections::HashMap<String, String> =
        back.query_pairs().into_owned().collect();
    if !back.as_str().starts_with(redirect_uri) {
        return Err(format!("redirected elsewhere: {back}"));
    }
    if pairs.get("state").map(String::as_str) != Some(state) {
        return Err("state mismatch".into());
    }
    pairs
        .get("code")
        .cloned()
        .ok_or_else(|| format!("no code: {back}"))
}
