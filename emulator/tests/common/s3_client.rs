//! A small S3 client for the gateway tests: requests are signed by the `aws-sigv4` crate
//! (header SigV4 or presigned query string) and sent with reqwest, so the emulator's
//! signature checks are exercised by a signer nobody here wrote.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use sha2::Digest as _;

/// The secret the gateway checks signatures with.
pub const GATEWAY_SECRET: &str = "gatewaysecret";

/// How the body is declared in `x-amz-content-sha256`.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    /// `UNSIGNED-PAYLOAD`.
    Unsigned(&'a [u8]),
    /// The real SHA-256 of the body.
    Signed(&'a [u8]),
    /// A SHA-256 of something else (the signature is right, the hash is not).
    WrongHash(&'a [u8]),
    /// This exact `x-amz-content-sha256` value (e.g. a `STREAMING-...` marker).
    Declared(&'a [u8], &'a str),
}

impl<'a> Payload<'a> {
    fn bytes(self) -> &'a [u8] {
        match self {
            Payload::Unsigned(b)
            | Payload::Signed(b)
            | Payload::WrongHash(b)
            | Payload::Declared(b, _) => b,
        }
    }
}

/// Percent-encode an object key for a URL path (each segment, `/` kept).
pub fn encode_key(key: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    key.split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

pub struct S3Client {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub access_key: String,
    pub secret: String,
    pub http: reqwest::Client,
}

impl S3Client {
    /// A client whose access key is `token` and secret `gatewaysecret`.
    pub fn new(base: &str, token: &str) -> S3Client {
        S3Client {
            base: base.trim_end_matches('/').to_owned(),
            access_key: token.to_owned(),
            secret: GATEWAY_SECRET.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The same client with another secret.
    pub fn with_secret(&self, secret: &str) -> S3Client {
        S3Client {
            base: self.base.clone(),
            access_key: self.access_key.clone(),
            secret: secret.to_owned(),
            http: self.http.clone(),
        }
    }

    fn settings(location: SignatureLocation, expires: Option<Duration>) -> SigningSettings {
        let mut s = SigningSettings::default();
        s.percent_encoding_mode = PercentEncodingMode::Single;
        s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        s.signature_location = location;
        s.expires_in = expires;
        s.payload_checksum_kind = match location {
            SignatureLocation::Headers => PayloadChecksumKind::XAmzSha256,
            _ => PayloadChecksumKind::NoHeader,
        };
        s
    }

    /// Sign and build a request. `path_and_query` is already URL-encoded, e.g.
    /// `/io/personal-files/a.txt?uploads`. `headers` are signed too.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        payload: Payload<'_>,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.base, path_and_query);
        let identity: Identity =
            Credentials::new(&self.access_key, &self.secret, None, None, "tests").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(Self::settings(SignatureLocation::Headers, None))
            .build()
            .expect("signing params")
            .into();
        let body = payload.bytes();
        let signable_body = match payload {
            Payload::Unsigned(_) => SignableBody::UnsignedPayload,
            Payload::Signed(b) => SignableBody::Bytes(b),
            Payload::WrongHash(b) => {
                let mut other = b.to_vec();
                other.push(b'!');
                SignableBody::Precomputed(hex::encode(sha2::Sha256::digest(&other)))
            }
            Payload::Declared(_, value) => SignableBody::Precomputed(value.to_owned()),
        };
        let signable =
            SignableRequest::new(method, url.clone(), headers.iter().copied(), signable_body)
                .expect("signable request");
        let (instructions, _) = sign(signable, &params).expect("sign request").into_parts();
        let mut builder = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            &url,
        );
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        for (name, value) in instructions.headers() {
            builder = builder.header(name, value);
        }
        builder.body(body.to_vec())
    }

    /// A presigned URL (query-string SigV4) valid for `expires`.
    pub fn presigned_url(&self, method: &str, path_and_query: &str, expires: Duration) -> String {
        let url = format!("{}{}", self.base, path_and_query);
        let identity: Identity =
            Credentials::new(&self.access_key, &self.secret, None, None, "tests").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(Self::settings(
                SignatureLocation::QueryParams,
                Some(expires),
            ))
            .build()
            .expect("signing params")
            .into();
        let signable = SignableRequest::new(
            method,
            url.clone(),
            std::iter::empty(),
            SignableBody::UnsignedPayload,
        )
        .expect("signable request");
        let (instructions, _) = sign(signable, &params).expect("sign request").into_parts();
        let mut parsed = url::Url::parse(&url).expect("url");
        {
            let mut pairs = parsed.query_pairs_mut();
            for (name, value) in instructions.params() {
                pairs.append_pair(name, value);
            }
        }
        parsed.to_string()
    }

    pub async fn put(&self, key: &str, body: &[u8]) -> reqwest::Response {
        self.request(
            "PUT",
            &format!("/io/{}", encode_key(key)),
            &[],
            Payload::Unsigned(body),
        )
        .send()
        .await
        .expect("send PUT")
    }

    pub async fn get(&self, key: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        self.request(
            "GET",
            &format!("/io/{}", encode_key(key)),
            headers,
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .expect("send GET")
    }

    pub async fn head(&self, key: &str) -> reqwest::Response {
        self.request(
            "HEAD",
            &format!("/io/{}", encode_key(key)),
            &[],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .expect("send HEAD")
    }

    pub async fn delete(&self, key: &str) -> reqwest::Response {
        self.request(
            "DELETE",
            &format!("/io/{}", encode_key(key)),
            &[],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .expect("send DELETE")
    }

    /// `GET /io?list-type=2&...` with the given query pairs (besides list-type).
    pub async fn list_v2(&self, query: &[(&str, &str)]) -> reqwest::Response {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        pairs.append_pair("list-type", "2");
        for (k, v) in query {
            pairs.append_pair(k, v);
        }
        self.request(
            "GET",
            &format!("/io?{}", pairs.finish().replace('+', "%20")),
            &[],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .expect("send list")
    }
}

/// Every `<tag>...</tag>` text in an XML body, in order.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(
            after[..end]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    out
}

/// The `<Code>` of an S3 XML error body.
pub fn error_code(xml: &str) -> String {
    xml_values(xml, "Code")
        .into_iter()
        .next()
        .unwrap_or_default()
}
