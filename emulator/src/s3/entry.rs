//! The way into the gateway: every request enters through [`s3_entry`], which finds the
//! caller's token (the SigV4 access key, an `X-Pydio-Bearer` header signed as `gateway`, or a
//! `pydio_jwt` query parameter), verifies it, refuses streaming payloads, and hands the request
//! to s3s, which checks the signature with the gateway's secret and routes it.
//!
//! Invariants:
//! - Token first: a bad or expired token is a 403 `AccessDenied` whatever the signature.
//! - `aws-chunked` / `STREAMING-*` bodies are refused (`SignatureDoesNotMatch`), as the real
//!   gateway effectively does because it re-signs requests.
//! - Only the buckets `io` and `data` are valid names.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Error, S3ErrorCode, S3Result};

use crate::SharedState;

use super::common::{Caller, xml_escape};
use super::copy::CopyObjectRoute;
use super::{GATEWAY_ACCESS_KEY, GATEWAY_SECRET, Gateway};

fn s3s_service() -> &'static S3Service {
    static SERVICE: OnceLock<S3Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let mut builder = S3ServiceBuilder::new(Gateway);
        builder.set_auth(GatewayAuth);
        builder.set_access(GatewayAccess);
        builder.set_validation(CellsBucketNames);
        builder.set_route(CopyObjectRoute);
        builder.build()
    })
}

pub(super) async fn s3_entry(State(state): State<SharedState>, mut request: Request) -> Response {
    let headers = request.headers();
    if let Some(refusal) = refuse_streaming_payload(headers) {
        return refusal;
    }
    let query = request.uri().query().unwrap_or("");
    let token = match find_token(headers, query) {
        TokenSource::Token { token, from_query } => Some((token, from_query)),
        TokenSource::None => None,
    };
    let Some((token, from_query)) = token else {
        return s3_error_response(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Access Denied.",
            request.uri().path(),
        );
    };
    let principal = match state.auth.verify(&token) {
        Ok(p) => p,
        Err(_) => {
            return s3_error_response(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Access Denied.",
                request.uri().path(),
            );
        }
    };
    request.extensions_mut().insert(Caller {
        state,
        login: principal.login,
        force_attachment: from_query,
    });
    let request = request.map(s3s::Body::http_body_unsync);
    match s3s_service().call(request).await {
        Ok(response) => response.map(Body::new),
        Err(err) => {
            tracing::warn!(error = ?err, "s3 service error");
            s3_error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error, please try again.",
                "",
            )
        }
    }
}

/// `aws-chunked` bodies carry chunk signatures the real gateway cannot verify after it
/// re-signs the request: MinIO then answers `SignatureDoesNotMatch`.
fn refuse_streaming_payload(headers: &HeaderMap) -> Option<Response> {
    let sha = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let chunked_encoding = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("aws-chunked"))
        });
    if sha.starts_with("STREAMING-") || chunked_encoding || headers.contains_key("x-amz-trailer") {
        return Some(s3_error_response(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Streaming (aws-chunked) payloads are not supported by this gateway.",
            "",
        ));
    }
    None
}

enum TokenSource {
    Token { token: String, from_query: bool },
    None,
}

/// Find the caller's token: `X-Pydio-Bearer`, then the SigV4 access key (header or
/// presigned query) unless it is the gateway's own key, then `pydio_jwt`.
fn find_token(headers: &HeaderMap, query: &str) -> TokenSource {
    if let Some(bearer) = headers.get("x-pydio-bearer").and_then(|v| v.to_str().ok()) {
        let bearer = bearer.trim();
        if !bearer.is_empty() {
            return TokenSource::Token {
                token: bearer.to_owned(),
                from_query: false,
            };
        }
    }
    let mut access_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(access_key_from_authorization);
    let mut pydio_jwt = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if access_key.is_none() && name.eq_ignore_ascii_case("X-Amz-Credential") {
            access_key = value.split('/').next().map(str::to_owned);
        } else if name == "pydio_jwt" {
            pydio_jwt = Some(value.into_owned());
        }
    }
    if let Some(key) = access_key
        && !key.is_empty()
        && key != GATEWAY_ACCESS_KEY
    {
        return TokenSource::Token {
            token: key,
            from_query: false,
        };
    }
    match pydio_jwt {
        Some(token) if !token.is_empty() => TokenSource::Token {
            token,
            from_query: true,
        },
        _ => TokenSource::None,
    }
}

/// `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/s3/aws4_request, ...` → `<key>`.
fn access_key_from_authorization(value: &str) -> Option<String> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256")?;
    let credential = rest
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("Credential="))?;
    credential.split('/').next().map(str::to_owned)
}

fn s3_error_response(status: StatusCode, code: &str, message: &str, resource: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
        xml_escape(code),
        xml_escape(message),
        xml_escape(resource),
        uuid::Uuid::new_v4().simple()
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

/// Every access key shares the gateway secret: the token itself was checked in [`s3_entry`].
struct GatewayAuth;

#[async_trait::async_trait]
impl s3s::auth::S3Auth for GatewayAuth {
    async fn get_secret_key(&self, _access_key: &str) -> S3Result<s3s::auth::SecretKey> {
        Ok(s3s::auth::SecretKey::from(GATEWAY_SECRET))
    }
}

/// A request may proceed when [`s3_entry`] attached a verified caller.
struct GatewayAccess;

#[async_trait::async_trait]
impl s3s::access::S3Access for GatewayAccess {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        if cx.extensions_mut().get::<Caller>().is_some() {
            Ok(())
        } else {
            Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "Access Denied.",
            ))
        }
    }
}

/// `io` is shorter than S3 allows; the gateway answers exactly `io` and `data`.
struct CellsBucketNames;

impl s3s::validation::NameValidation for CellsBucketNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        !name.is_empty() && !name.contains('/')
    }
}
