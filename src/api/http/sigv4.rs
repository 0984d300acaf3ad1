//! The signature of S3 gateway requests: AWS SigV4 with the bearer token as access key, the
//! fixed secret [`S3_SECRET`] (the gateway re-signs requests; any secret works), region
//! [`S3_REGION`], service `s3`, path-style URLs and `UNSIGNED-PAYLOAD` (never aws-chunked,
//! never flexible checksums). Used by the transport for every `/io` request and by the raw
//! requests of `raw`.
//!
//! Invariants: only the `x-amz-*`, `content-type` and `range` headers are signed (with the
//! host); the headers the signature adds, `Authorization` above all, are marked sensitive so
//! that they are never logged; a token that cannot be a header value is an
//! [`ApiError::Auth`], never a panic and never shown.

use std::time::SystemTime;

use reqwest::header::{HeaderName, HeaderValue};

use crate::api::ApiError;

/// The S3 gateway's fixed secret (the server re-signs requests; any secret works).
pub const S3_SECRET: &str = "gatewaysecret";
pub const S3_REGION: &str = "us-east-1";

/// Sign an S3 gateway request with SigV4: the token as access key, `gatewaysecret` as secret,
/// `UNSIGNED-PAYLOAD`. The signed headers are marked sensitive so they are never logged.
pub(crate) fn sign_s3(req: &mut reqwest::Request, token: &str) -> Result<(), ApiError> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign,
    };
    use aws_sigv4::sign::v4;
    let identity =
        aws_credential_types::Credentials::new(token, S3_SECRET, None, None, "cec").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(S3_REGION)
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| ApiError::Local(format!("cannot sign the S3 request: {e}")))?
        .into();
    let signed_headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            n.starts_with("x-amz-") || n == "content-type" || n == "range"
        })
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_string(), v.to_string()))
        })
        .collect();
    let url = req.url().to_string();
    let method = req.method().as_str().to_string();
    let signable = SignableRequest::new(
        &method,
        url.as_str(),
        signed_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::UnsignedPayload,
    )
    .map_err(|e| ApiError::Local(format!("cannot sign the S3 request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| ApiError::Local(format!("cannot sign the S3 request: {e}")))?
        .into_parts();
    let (headers, _params) = instructions.into_parts();
    for h in headers {
        let name = HeaderName::from_bytes(h.name().as_bytes())
            .map_err(|e| ApiError::Local(e.to_string()))?;
        let mut value = HeaderValue::from_str(h.value()).map_err(|_| {
            ApiError::Auth("the token contains characters not allowed in a header".into())
        })?;
        if h.sensitive() || name == reqwest::header::AUTHORIZATION {
            value.set_sensitive(true);
        }
        req.headers_mut().insert(name, value);
    }
    Ok(())
}
