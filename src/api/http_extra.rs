//! Extra REST calls of [`HttpCellsApi`] used by the admin commands (`cec idm`, `cec storage`):
//! a plain authenticated JSON request to any `/a` endpoint of the official swagger.
//!
//! Invariants: the bearer header is marked sensitive and never formatted into an error; a
//! 401 triggers one token refresh and one retry; statuses map to [`ApiError`] as elsewhere
//! (403 Forbidden, 404 NotFound), keeping the server's `restError` title.

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use super::http::{HttpCellsApi, describe_reqwest_error};
use super::{ApiError, ApiResult};

impl HttpCellsApi {
    /// `method /a<path>` with an optional JSON body; returns the JSON answer (`{}` if empty).
    pub async fn rest_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiResult<Value> {
        let url = format!("{}/a{}", self.base_url(), path);
        let mut token = self.tokens().token().await?;
        let mut refreshed = false;
        loop {
            let mut bearer = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ApiError::Auth("the token is not a valid header value".into()))?;
            bearer.set_sensitive(true);
            let mut req = self
                .http_client()
                .request(method.clone(), &url)
                .header(AUTHORIZATION, bearer)
                .timeout(std::time::Duration::from_secs(60));
            if let Some(b) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| ApiError::Network(describe_reqwest_error(&e)))?;
            let status = resp.status().as_u16();
            let text = resp
                .text()
                .await
                .map_err(|e| ApiError::Network(describe_reqwest_error(&e)))?;
            if status == 401 && !refreshed {
                refreshed = true;
                token = self.tokens().refresh_after_unauthorized(&token).await?;
                continue;
            }
            if (200..300).contains(&status) {
                if text.trim().is_empty() {
                    return Ok(Value::Object(Default::default()));
                }
                return serde_json::from_str(&text)
                    .map_err(|_| ApiError::InvalidResponse(format!("{path} did not answer JSON")));
            }
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("Title").and_then(|t| t.as_str()).map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            let what = format!("{path}: {message}");
            return Err(match status {
                401 => ApiError::Unauthorized(what),
                403 => ApiError::Forbidden(what),
                404 => ApiError::NotFound(what),
                _ => ApiError::Server {
                    status,
                    message: what,
                },
            });
        }
    }
}
