//! The server URL of a new profile, checked before anything is stored: it must reach a Cells
//! server's bootconf. When it does not, the error says what was wrong and what to type:
//! a URL without a scheme (the scheme that answers is proposed), `https://` against a server
//! speaking plain HTTP (and the reverse), or a path (Cells answers at the root of its host:
//! the path is dropped, with a note saying so).
//!
//! Invariant: only the cleaned `scheme://host[:port]` that answered as Cells is returned.

use crate::api::ApiError;
use crate::api::http::probe_server;
use crate::config::clean_url;

use super::CliError;

/// Whether `e` is what a TLS handshake with a plain-HTTP server gives.
fn is_tls_to_plain_http(e: &ApiError) -> bool {
    let m = e.to_string();
    m.contains("InvalidContentType")
        || m.contains("corrupt message")
        || m.contains("wrong version number")
}

/// Whether `url` answers as a Cells server.
async fn answers(http: &reqwest::Client, url: &str) -> bool {
    probe_server(http, url).await.is_ok()
}

/// Check `input` (as typed) and return the server's base URL. Errors are usage errors
/// (exit 2) when the input itself is wrong, failures when the server is.
pub async fn check(http: &reqwest::Client, input: &str) -> Result<String, CliError> {
    let typed = input.trim();
    if !typed.contains("://") {
        let host = typed.trim_end_matches('/');
        if clean_url(&format!("https://{host}")).is_err() {
            return Err(CliError::usage(format!(
                "`{typed}` is not a valid server URL: type the full address, e.g. \
                 `https://cells.example.com` or `http://192.168.1.10:8080`"
            )));
        }
        for scheme in ["https", "http"] {
            let candidate = format!("{scheme}://{host}");
            if let Ok(url) = clean_url(&candidate)
                && answers(http, &url).await
            {
                return Err(CliError::usage(format!(
                    "`{typed}` has no scheme: the Cells server answers at {url}: type `{url}`"
                )));
            }
        }
        return Err(CliError::usage(format!(
            "`{typed}` has no scheme: type the full address, e.g. `https://{host}` (or \
             `http://{host}` for a server without TLS)"
        )));
    }
    let url = clean_url(typed).map_err(CliError::usage)?;
    let parsed = url::Url::parse(typed).ok();
    let path = parsed
        .as_ref()
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    match probe_server(http, &url).await {
        Ok(_) => {
            if !path.is_empty() {
                eprintln!(
                    "Note: a Cells server answers at the root of its host: the path {path} of \
                     `{typed}` is not used; the profile points at {url}"
                );
            }
            Ok(url)
        }
        Err(e) if url.starts_with("https://") && is_tls_to_plain_http(&e) => {
            let plain = url.replacen("https://", "http://", 1);
            if answers(http, &plain).await {
                Err(CliError::usage(format!(
                    "{url} speaks plain HTTP, not HTTPS: type `{plain}`"
                )))
            } else {
                Err(CliError::failure(format!(
                    "{url} does not speak HTTPS (the TLS handshake failed: {e}); check the \
                     address and port"
                )))
            }
        }
        Err(e) if url.starts_with("http://") => {
            let tls = url.replacen("http://", "https://", 1);
            if answers(http, &tls).await {
                Err(CliError::usage(format!(
                    "{url} does not answer as Cells over plain HTTP, but {tls} does: type `{tls}`"
                )))
            } else {
                Err(without_path_hint(e, &path, typed))
            }
        }
        Err(e) => Err(without_path_hint(e, &path, typed)),
    }
}

fn without_path_hint(e: ApiError, path: &str, typed: &str) -> CliError {
    let mut err = CliError::from(e);
    if !path.is_empty() {
        err.message.push_str(&format!(
            " (note: the path {path} of `{typed}` is not used: Cells answers at the root of its host)"
        ));
    }
    err
}
