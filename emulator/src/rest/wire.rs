//! The REST vocabulary every endpoint module shares (this one's families, and the admin,
//! share and user-metadata endpoints): the `restError` body ([`RestError`]), JSON replies,
//! bearer authentication, strict request bodies and the `treeNode` input.
//!
//! Invariants:
//! - Every error is a `restError` body with the status codes of cells-api.md §1.5; a store
//!   or token error maps to one status here, nowhere else.
//! - A request body with a field the swagger does not define is refused with HTTP 500
//!   `unknown field "X" in rest.Y` (as older servers did), so client bugs show up here.
//! - This module imports no endpoint module: all of them may use it.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::SharedState;
use crate::auth::{AuthError, Principal};
use crate::store::StoreError;

/// A `restError` response.
#[derive(Debug)]
pub struct RestError {
    pub status: StatusCode,
    pub title: String,
    pub detail: Option<String>,
}

impl RestError {
    pub fn new(status: StatusCode, title: impl Into<String>) -> RestError {
        RestError {
            status,
            title: title.into(),
            detail: None,
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("Code".into(), json!(self.status.as_u16().to_string()));
        body.insert("Title".into(), json!(self.title));
        if let Some(d) = self.detail {
            body.insert("Detail".into(), json!(d));
        }
        (self.status, json_response(&Value::Object(body))).into_response()
    }
}

impl From<StoreError> for RestError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Forbidden(_) => StatusCode::FORBIDDEN,
            StoreError::Locked(_) => StatusCode::LOCKED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        RestError::new(status, e.to_string())
    }
}

impl From<AuthError> for RestError {
    fn from(e: AuthError) -> Self {
        RestError::new(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

pub(crate) type RestResult = Result<Response, RestError>;

pub(crate) fn json_response(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

pub(crate) fn ok(v: Value) -> RestResult {
    Ok(json_response(&v))
}

pub(crate) async fn not_found() -> RestError {
    RestError::new(StatusCode::NOT_FOUND, "no such API endpoint")
}

pub(crate) fn authenticate(
    state: &SharedState,
    headers: &HeaderMap,
) -> Result<Principal, RestError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(state.auth.verify_header(h)?)
}

/// Decode a request body strictly (unknown fields → 500 `unknown field "X" in rest.Y`).
pub(crate) fn parse_body<T: DeserializeOwned>(
    body: &Bytes,
    type_name: &str,
) -> Result<T, RestError> {
    let text = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(text).map_err(|e| {
        let msg = e.to_string();
        let title = match msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
        {
            Some((field, _)) => format!("unknown field \"{field}\" in {type_name}"),
            None => format!("cannot decode {type_name}: {msg}"),
        };
        RestError::new(StatusCode::INTERNAL_SERVER_ERROR, title)
    })
}

/// An int32 sent as a JSON number or a string (protojson accepts both).
pub(crate) fn int32_of(v: &Option<Value>) -> Result<i32, RestError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "bad int32 value")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "bad int32 value")),
        Some(_) => Err(RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad int32 value",
        )),
    }
}

/// `treeNode` as a request input.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct TreeNodeIn {
    #[serde(default)]
    pub(super) uuid: Option<String>,
    #[serde(default)]
    pub(super) path: Option<String>,
    #[serde(default, rename = "Type")]
    pub(super) kind: Option<Value>,
    #[serde(default)]
    pub(super) size: Option<Value>,
    #[serde(default, rename = "MTime")]
    pub(super) mtime: Option<Value>,
    #[serde(default)]
    pub(super) etag: Option<String>,
    #[serde(default)]
    pub(super) mode: Option<Value>,
    #[serde(default)]
    pub(super) meta_store: Option<HashMap<String, String>>,
    #[serde(default)]
    pub(super) commits: Option<Value>,
    #[serde(default)]
    pub(super) appears_in: Option<Value>,
}

impl TreeNodeIn {
    /// The `treeNodeType` must be a known enum name or number (jsonpb refuses others).
    pub(super) fn check_type(&self) -> Result<(), RestError> {
        let ok = match &self.kind {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => matches!(s.as_str(), "UNKNOWN" | "LEAF" | "COLLECTION"),
            Some(Value::Number(n)) => matches!(n.as_i64(), Some(0..=2)),
            Some(_) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "unknown value {} for enum tree.NodeType",
                    self.kind.as_ref().unwrap_or(&Value::Null)
                ),
            ))
        }
    }

    pub(super) fn is_leaf(&self) -> bool {
        matches!(&self.kind, Some(Value::String(s)) if s == "LEAF")
            || matches!(&self.kind, Some(Value::Number(n)) if n.as_i64() == Some(1))
    }

    pub(super) fn path(&self) -> String {
        self.path
            .as_deref()
            .unwrap_or("")
            .trim_matches('/')
            .to_string()
    }
}
