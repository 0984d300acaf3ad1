//! Multipart uploads sent while a big file is still being written.
//!
//! A file written from empty by appends only (`cp`, `fio`, a download, `tar` extracting a big
//! member) is sent part by part as soon as it grows past the multipart threshold: each
//! complete part is handed to a background task that starts the upload and sends up to
//! `parts_concurrency` parts at once, reading them back from the staging file. At close the
//! rest is sent and the upload completed, so the upload overlaps the writing instead of
//! following it.
//!
//! Invariants:
//! - Bytes below [`PartStream::sent`] were handed over and must never change. The core stops
//!   the stream (drops it) on any write below that mark, any truncate, and uses it at close
//!   only when the file still has the path the upload was started for; otherwise the file is
//!   uploaded the usual way. The stream never decides what is stored: it only replaces the
//!   upload at close when it completes.
//! - A stream dropped before [`PartStream::finish`] aborts its upload once its task is done,
//!   so no half-made upload or temporary node is left on the server. Every upload opened is
//!   named in the journal until it is completed or aborted: the next mount aborts those a
//!   crash left open ([`abort_left_open`]).

use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::journal::Journal;
use super::status::Retry;
use crate::api::{ApiError, ApiResult, CellsApi, UploadOptions};

/// One part: number (from 1), offset, length.
type Part = (u64, u64, u64);

/// What the background task returns: the upload id and the parts sent, by number.
type Sent = (String, Vec<(u64, String)>);

pub(super) struct PartStream {
    /// The server path the upload is for.
    pub path: String,
    part_size: u64,
    max_parts: u64,
    /// Bytes `[0, sent)` are handed over as parts.
    pub sent: u64,
    next_part: u64,
    parts: Option<mpsc::UnboundedSender<Part>>,
    task: Option<JoinHandle<ApiResult<Sent>>>,
    api: Arc<dyn CellsApi>,
    journal: Arc<Journal>,
    retry: Retry,
    runtime: tokio::runtime::Handle,
}

impl PartStream {
    /// Start streaming the staging file `staging` to `path` (call from the runtime).
    pub fn start(
        api: Arc<dyn CellsApi>,
        journal: Arc<Journal>,
        path: &str,
        staging: PathBuf,
        options: &UploadOptions,
        retry: Retry,
    ) -> PartStream {
        let part_size = crate::api::http::part_size_for(0, options.part_size, options.max_parts);
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(send_parts(
            api.clone(),
            journal.clone(),
            path.to_string(),
            staging,
            options.clone(),
            retry,
            receiver,
        ));
        PartStream {
            path: path.to_string(),
            part_size,
            max_parts: options.max_parts.max(1),
            sent: 0,
            next_part: 1,
            parts: Some(sender),
            task: Some(task),
            api,
            journal,
            retry,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Hand over every complete part below `size`.
    pub fn feed(&mut self, size: u64) {
        while self.sent + self.part_size <= size && self.next_part < self.max_parts {
            self.hand_over(self.part_size);
        }
    }

    fn hand_over(&mut self, len: u64) {
        if let Some(parts) = &self.parts {
            let _ = parts.send((self.next_part, self.sent, len));
        }
        self.next_part += 1;
        self.sent += len;
    }

    /// Send what is left of the `size` bytes and complete the upload: the object's ETag.
    /// On failure the upload is aborted (the caller uploads the file again whole).
    pub async fn finish(mut self, size: u64) -> ApiResult<String> {
        if size < self.sent {
            return Err(ApiError::Local(format!(
                "{}: the file shrank below what was streamed",
                self.path
            )));
        }
        self.feed(size);
        if size - self.sent > self.part_size {
            return Err(ApiError::Local(format!(
                "{}: more than {} parts",
                self.path, self.max_parts
            )));
        }
        if size > self.sent {
            self.hand_over(size - self.sent);
        }
        let expected = self.next_part - 1;
        self.parts = None;
        let task = self.task.take().expect("finish runs once");
        let (upload_id, parts) = task
            .await
            .map_err(|e| ApiError::Local(format!("{}: part upload task: {e}", self.path)))??;
        let (api, path) = (self.api.clone(), self.path.clone());
        if parts.len() as u64 != expected {
            abort(&*api, &self.journal, &path, &upload_id).await;
            return Err(ApiError::Local(format!(
                "{path}: {} of {expected} parts sent",
                parts.len()
            )));
        }
        let completed = self
            .retry
            .run(|| api.complete_multipart(&path, &upload_id, &parts))
            .await;
        match &completed {
            Ok(_) => self.journal.stream_ended(&upload_id),
            Err(_) => abort(&*api, &self.journal, &path, &upload_id).await,
        }
        completed
    }
}

impl Drop for PartStream {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        // Closing the channel lets the task finish the parts in flight; then abort.
        self.parts = None;
        let (api, journal, path) = (self.api.clone(), self.journal.clone(), self.path.clone());
        self.runtime.spawn(async move {
            if let Ok(Ok((upload_id, _))) = task.await {
                abort(&*api, &journal, &path, &upload_id).await;
            }
        });
    }
}

/// The background task: start the upload, then send the parts handed over (some at once)
/// until the channel closes. Aborts the upload itself when a part fails for good.
async fn send_parts(
    api: Arc<dyn CellsApi>,
    journal: Arc<Journal>,
    path: String,
    staging: PathBuf,
    options: UploadOptions,
    retry: Retry,
    receiver: mpsc::UnboundedReceiver<Part>,
) -> ApiResult<Sent> {
    let upload_id = retry.run(|| api.create_multipart(&path, &options)).await?;
    journal.stream_started(&upload_id, &path);
    let parts = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|part| (part, receiver))
    });
    let sent: ApiResult<Vec<(u64, String)>> = parts
        .map(|(number, offset, len)| {
            let (api, path, staging, upload_id) = (&api, &path, &staging, &upload_id);
            let options = &options;
            async move {
                let etag = retry
                    .run(|| api.upload_part(path, upload_id, number, staging, offset, len))
                    .await?;
                if let Some(sent) = &options.sent {
                    sent.add(len);
                }
                Ok((number, etag))
            }
        })
        .buffer_unordered(options.parts_concurrency.max(1))
        .try_collect()
        .await;
    match sent {
        Ok(mut sent) => {
            sent.sort_by_key(|(number, _)| *number);
            Ok((upload_id, sent))
        }
        Err(e) => {
            abort(&*api, &journal, &path, &upload_id).await;
            Err(e)
        }
    }
}

/// Abort an upload; the journal forgets it once the server has (a failure leaves it for the
/// next mount).
async fn abort(api: &dyn CellsApi, journal: &Journal, path: &str, upload_id: &str) {
    match api.abort_multipart(path, upload_id).await {
        Ok(()) | Err(ApiError::NotFound(_)) => journal.stream_ended(upload_id),
        Err(e) => tracing::warn!("could not abort the streamed upload of {path}: {e}"),
    }
}

/// Abort the uploads a previous mount left open (a crash while a big file was written).
pub(super) async fn abort_left_open(api: Arc<dyn CellsApi>, journal: Arc<Journal>) {
    for (upload_id, path) in journal.open_streams() {
        tracing::info!("aborting the upload of {path} left open by a previous mount");
        abort(&*api, &journal, &path, &upload_id).await;
    }
}
