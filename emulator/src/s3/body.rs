//! Bodies stream: a GET reads the immutable blob in large chunks from a blocking reader, a PUT
//! or a part is written to a temp file as it arrives, and blobs are copied on disk in large
//! buffers.
//!
//! Invariants:
//! - No whole object is ever held in memory.
//! - A body that fails mid-way is an S3 error, and nothing partial is committed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::StatusCode;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3ErrorCode};

use super::common::{custom_error, internal};
use super::{COPY_BUFFER, READ_CHUNK};

/// A file's content as a stream of large chunks, read by a blocking task.
pub(crate) struct FileChunks {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
}

impl Stream for FileChunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

pub(crate) fn stream_file(mut file: std::fs::File, start: u64, len: u64) -> FileChunks {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
            let mut buf = vec![0u8; n];
            if let Err(e) = file.read_exact(&mut buf) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            left -= n as u64;
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
    });
    FileChunks { rx }
}

/// Why a request body could not be stored.
pub(super) enum BodyError {
    /// The client's body failed (hash mismatch, length mismatch, disconnect).
    Client(String),
    /// Writing it failed on our side.
    Io(std::io::Error),
}

impl From<BodyError> for S3Error {
    fn from(e: BodyError) -> S3Error {
        match e {
            BodyError::Client(msg) if msg.contains("Sha256Mismatch") => custom_error(
                "XAmzContentSHA256Mismatch",
                StatusCode::BAD_REQUEST,
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ),
            BodyError::Client(msg)
                if msg.contains("LengthMismatch") || msg.contains("Incomplete") =>
            {
                S3Error::with_message(
                    S3ErrorCode::IncompleteBody,
                    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
                )
            }
            BodyError::Client(msg) => S3Error::with_message(S3ErrorCode::IncompleteBody, msg),
            BodyError::Io(e) => internal(e),
        }
    }
}

/// Stream a request body into `sink` on a blocking thread, chunk by chunk, as it arrives.
pub(super) async fn drain_body<W: Write + Send + 'static>(
    body: Option<StreamingBlob>,
    sink: W,
) -> Result<W, BodyError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        while let Some(chunk) = rx.blocking_recv() {
            sink.write_all(&chunk)?;
        }
        sink.flush()?;
        Ok::<W, std::io::Error>(sink)
    });
    let mut client_error = None;
    if let Some(mut body) = body {
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed: its error is reported below
                    }
                }
                Err(e) => {
                    client_error = Some(e.to_string());
                    break;
                }
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| BodyError::Io(std::io::Error::other(e)))?;
    if let Some(msg) = client_error {
        return Err(BodyError::Client(msg));
    }
    written.map_err(BodyError::Io)
}

/// Copy a whole file into a writer with a large buffer.
pub(super) fn copy_into(mut from: impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}
