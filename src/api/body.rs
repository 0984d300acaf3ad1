//! Bounded reading of the server's answers: every body read whole into memory goes through
//! [`read_capped`] with a [`Cap`] saying what it is and how large it may be, so that a
//! server sending a multi-GB JSON page, token reply or XML listing costs a clear error, not
//! the machine's memory. (Object downloads are streams and are not read whole.)
//!
//! Invariants:
//! - No body is held past its cap: a `Content-Length` over it is refused before reading, and
//!   reading stops at the first chunk that would cross it.
//! - The error names what was too large and the cap ([`BodyError::TooLarge`]).
//! - Time is not bounded here: the request's own deadline (reqwest's per-request timeout,
//!   which covers the body) does that.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::ApiError;

/// What a body is, and the most bytes accepted for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// What the body is, for the error ("a folder listing page").
    pub what: &'static str,
    pub bytes: u64,
}

const MIB: u64 = 1024 * 1024;

/// One page of a REST folder listing (`LIST_PAGE` nodes; a node with its metadata is a few
/// KB at most).
pub const LISTING_PAGE: Cap = Cap {
    what: "a folder listing page",
    bytes: 64 * MIB,
};
/// The workspaces listing (one request, no paging).
pub const WORKSPACES: Cap = Cap {
    what: "the workspace list",
    bytes: 64 * MIB,
};
/// Any other REST answer (a stat, a job, created folders).
pub const REST_ANSWER: Cap = Cap {
    what: "a REST answer",
    bytes: 16 * MIB,
};
/// The answer of an admin endpoint (`cec admin`: lists of users, roles, ...).
pub const ADMIN_ANSWER: Cap = Cap {
    what: "an admin API answer",
    bytes: 64 * MIB,
};
/// `GET /a/frontend/bootconf`.
pub const BOOTCONF: Cap = Cap {
    what: "the server's bootconf",
    bytes: 4 * MIB,
};
/// `GET /a/frontend/state` (XML).
pub const STATE: Cap = Cap {
    what: "the server's frontend state",
    bytes: 16 * MIB,
};
/// The OAuth token endpoint's reply, and the legacy session login's.
pub const TOKEN: Cap = Cap {
    what: "the token endpoint's reply",
    bytes: MIB,
};
/// A gateway folder listing (ListObjectsV2 XML, up to `GATEWAY_LIST_MAX` entries of a few
/// hundred bytes each).
pub const S3_LISTING: Cap = Cap {
    what: "an S3 folder listing",
    bytes: 256 * MIB,
};
/// The other S3 XML answers (multipart uploads, parts, completion).
pub const S3_ANSWER: Cap = Cap {
    what: "an S3 answer",
    bytes: 16 * MIB,
};
/// The release manifest of `cec update`.
pub const MANIFEST: Cap = Cap {
    what: "the release manifest",
    bytes: MIB,
};
/// The minisign signature of a release (about 300 bytes).
pub const SIGNATURE: Cap = Cap {
    what: "the release signature",
    bytes: 16 * 1024,
};

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body is larger than its cap.
    TooLarge(Cap),
    /// The connection broke or ran out of time while reading.
    Broken(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge(cap) => write!(
                f,
                "{} is larger than {} bytes (the most cec reads); refusing it",
                cap.what, cap.bytes
            ),
            BodyError::Broken(e) => write!(
                f,
                "reading the answer broke: {}",
                super::http::describe_reqwest_error(e)
            ),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match &e {
            BodyError::TooLarge(_) => ApiError::InvalidResponse(e.to_string()),
            BodyError::Broken(inner) if inner.is_timeout() => ApiError::Timeout(e.to_string()),
            BodyError::Broken(_) => ApiError::Network(e.to_string()),
        }
    }
}

/// The whole body of `resp`, refused once over `cap.bytes`.
pub async fn read_capped(resp: reqwest::Response, cap: Cap) -> Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > cap.bytes) {
        return Err(BodyError::TooLarge(cap));
    }
    let mut body = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Broken)?;
        if (body.len() + chunk.len()) as u64 > cap.bytes {
            return Err(BodyError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// [`read_capped`] as text (invalid UTF-8 replaced).
pub async fn read_capped_text(resp: reqwest::Response, cap: Cap) -> Result<String, BodyError> {
    let bytes = read_capped(resp, cap).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// At most the first `max` bytes of an error body (the rest is not read), as text; empty if
/// it breaks.
pub async fn read_prefix(resp: reqwest::Response, max: usize) -> String {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        out.extend_from_slice(&chunk);
        if out.len() >= max {
            out.truncate(max);
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
