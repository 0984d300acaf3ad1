//! Multipart uploads (create, upload a part, complete, abort, list parts and uploads), kept
//! on disk under `<data_dir>/s3-multipart/<upload id>/` (a manifest and one file per part) so
//! that they survive a restart like the real gateway's.
//!
//! Invariants:
//! - An upload belongs to the login and key that created it; anyone else gets
//!   `NoSuchUpload`.
//! - Every part but the last is at least 5 MiB (MinIO's rule); manifests and part records are
//!   written atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use md5::Digest as _;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use crate::store::{CELLS_HASH_BLOCK, CellsHasher, Store, TempBlob};

use super::MIN_PART_SIZE;
use super::body::{copy_into, drain_body};
use super::common::{
    blocking, caller, check_bucket, etag_value, internal, key_path, store_error, strong_etag,
    timestamp,
};

/// What an upload in flight records about itself (`manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadManifest {
    upload_id: String,
    bucket: String,
    /// Object key (`<workspace>/<path>`).
    key: String,
    login: String,
    /// Unix seconds.
    initiated: i64,
    content_type: Option<String>,
}

/// What one stored part records (`part-NNNNN.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartRecord {
    part_number: i32,
    etag: String,
    size: u64,
    last_modified: i64,
    /// Hex MD5 of each 10 MiB block of the part, the last (partial) one included, computed as
    /// the part arrived; absent in records written before they were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    block_md5s: Option<Vec<String>>,
}

impl PartRecord {
    /// The raw block digests, if recorded and well-formed.
    fn block_digests(&self) -> Option<Vec<[u8; 16]>> {
        self.block_md5s
            .as_ref()?
            .iter()
            .map(|h| {
                let mut d = [0u8; 16];
                hex::decode_to_slice(h, &mut d).ok()?;
                Some(d)
            })
            .collect()
    }
}

fn uploads_dir(store: &Store) -> PathBuf {
    store.data_dir().join("s3-multipart")
}

fn upload_dir(store: &Store, upload_id: &str) -> S3Result<PathBuf> {
    // Upload ids are our own UUIDs: anything else is unknown (and never a path).
    if upload_id.is_empty() || !upload_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(no_such_upload());
    }
    Ok(uploads_dir(store).join(upload_id))
}

fn no_such_upload() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchUpload,
        "The specified multipart upload does not exist.",
    )
}

fn read_manifest(dir: &Path) -> Option<UploadManifest> {
    let text = std::fs::read(dir.join("manifest.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The manifest of `upload_id` if it belongs to this caller and key.
fn owned_upload(
    store: &Store,
    upload_id: &str,
    login: &str,
    key: &str,
) -> S3Result<(PathBuf, UploadManifest)> {
    let dir = upload_dir(store, upload_id)?;
    let manifest = read_manifest(&dir).ok_or_else(no_such_upload)?;
    if manifest.login != login || manifest.key != key {
        return Err(no_such_upload());
    }
    Ok((dir, manifest))
}

fn part_file(dir: &Path, n: i32) -> PathBuf {
    dir.join(format!("part-{n:05}"))
}

fn part_record_file(dir: &Path, n: i32) -> PathBuf {
    dir.join(format!("part-{n:05}.json"))
}

fn list_part_records(dir: &Path) -> Vec<PartRecord> {
    let mut parts: Vec<PartRecord> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("part-") && name.ends_with(".json")
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<PartRecord>(&b).ok())
        .collect();
    parts.sort_by_key(|p| p.part_number);
    parts
}

/// Write `bytes` to `path` atomically (temp + rename).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A part being received: written to a temp file while its MD5 and the MD5s of its 10 MiB
/// blocks (from which the object's `x-cells-hash` is built at completion) are computed.
struct PartWriter {
    file: std::fs::File,
    md5: md5::Md5,
    blocks: CellsHasher,
    size: u64,
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.md5.update(&buf[..n]);
        self.blocks.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Removes a temp file unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(super) async fn create_multipart_upload(
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let who = caller(&req)?;
    let input = req.input;
    check_bucket(&input.bucket)?;
    let key = key_path(&input.key);
    let clear_size = input
        .metadata
        .as_ref()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("pydio-clear-size"))
                .map(|(_, v)| v.trim().parse::<u64>().unwrap_or(0))
        })
        .unwrap_or(0);
    let upload_id = uuid::Uuid::new_v4().to_string();
    let manifest = UploadManifest {
        upload_id: upload_id.clone(),
        bucket: input.bucket.clone(),
        key: key.clone(),
        login: who.login.clone(),
        initiated: time::OffsetDateTime::now_utc().unix_timestamp(),
        content_type: input.content_type.clone(),
    };
    let store = who.state.store.clone();
    let login = who.login.clone();
    let id = upload_id.clone();
    blocking(move || {
        store
            .create_placeholder(&login, &manifest.key, clear_size)
            .map_err(store_error)?;
        let dir = upload_dir(&store, &id)?;
        std::fs::create_dir_all(&dir).map_err(internal)?;
        let json = serde_json::to_vec(&manifest).map_err(internal)?;
        write_atomically(&dir.join("manifest.json"), &json).map_err(internal)
    })
    .await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        ..Default::default()
    }))
}

pub(super) async fn upload_part(
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let who = caller(&req)?;
    let input = req.input;
    check_bucket(&input.bucket)?;
    let part_number = input.part_number;
    if !(1..=10_000).contains(&part_number) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive",
        ));
    }
    let key = key_path(&input.key);
    let store = who.state.store.clone();
    let login = who.login.clone();
    let upload_id = input.upload_id.clone();
    let (dir, tmp_path, file) = blocking(move || {
        let (dir, _) = owned_upload(&store, &upload_id, &login, &key)?;
        let tmp_path = dir.join(format!("incoming-{}", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&tmp_path).map_err(internal)?;
        Ok((dir, tmp_path, file))
    })
    .await?;
    let mut guard = RemoveOnDrop(Some(tmp_path.clone()));
    let writer = PartWriter {
        file,
        md5: md5::Md5::new(),
        blocks: CellsHasher::new(),
        size: 0,
    };
    let written = drain_body(input.body, writer).await?;
    let etag = hex::encode(written.md5.finalize());
    let block_md5s = written
        .blocks
        .finish_blocks()
        .iter()
        .map(hex::encode)
        .collect();
    let record = PartRecord {
        part_number,
        etag: etag.clone(),
        size: written.size,
        last_modified: time::OffsetDateTime::now_utc().unix_timestamp(),
        block_md5s: Some(block_md5s),
    };
    drop(written.file);
    blocking(move || {
        std::fs::rename(&tmp_path, part_file(&dir, part_number)).map_err(internal)?;
        let json = serde_json::to_vec(&record).map_err(internal)?;
        write_atomically(&part_record_file(&dir, part_number), &json).map_err(internal)
    })
    .await?;
    guard.0 = None;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(strong_etag(&etag)),
        ..Default::default()
    }))
}

pub(super) async fn complete_multipart_upload(
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let who = caller(&req)?;
    let input = req.input;
    check_bucket(&input.bucket)?;
    let key = key_path(&input.key);
    let requested: Vec<(i32, String)> = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            (
                p.part_number.unwrap_or(0),
                p.e_tag.as_ref().map(etag_value).unwrap_or("").to_owned(),
            )
        })
        .collect();
    if requested.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "You must specify at least one part",
        ));
    }
    let store = who.state.store.clone();
    let login = who.login.clone();
    let upload_id = input.upload_id.clone();
    let record = blocking(move || {
        let (dir, manifest) = owned_upload(&store, &upload_id, &login, &key)?;
        let stored = list_part_records(&dir);
        if requested.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidPartOrder,
                "The list of parts was not in ascending order.",
            ));
        }
        let mut chosen = Vec::with_capacity(requested.len());
        for (i, (n, etag)) in requested.iter().enumerate() {
            let part = stored
                .iter()
                .find(|p| p.part_number == *n && p.etag == *etag)
                .ok_or_else(|| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidPart,
                        "One or more of the specified parts could not be found.",
                    )
                })?;
            if i + 1 < requested.len() && part.size < MIN_PART_SIZE {
                return Err(S3Error::with_message(
                    S3ErrorCode::EntityTooSmall,
                    "Your proposed upload is smaller than the minimum allowed object size.",
                ));
            }
            chosen.push(part.clone());
        }
        let mut blob: TempBlob = store.tmp_file().map_err(store_error)?;
        let mut digests = Vec::with_capacity(chosen.len() * 16);
        // The object's block boundaries are the parts' when every part but the last is a
        // whole number of blocks: its x-cells-hash then follows from the parts' block
        // digests, and the parts are concatenated without reading them through here.
        let part_blocks: Option<Vec<Vec<[u8; 16]>>> = chosen
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let aligned = i + 1 == chosen.len() || p.size.is_multiple_of(CELLS_HASH_BLOCK);
                if aligned { p.block_digests() } else { None }
            })
            .collect();
        for (i, part) in chosen.iter().enumerate() {
            let mut file =
                std::fs::File::open(part_file(&dir, part.part_number)).map_err(internal)?;
            match &part_blocks {
                Some(blocks) => {
                    blob.append_file_with_blocks(&mut file, part.size, &blocks[i])
                        .map_err(internal)?;
                }
                None => {
                    copy_into(file, &mut blob).map_err(internal)?;
                }
            }
            digests.extend_from_slice(&hex::decode(&part.etag).map_err(internal)?);
        }
        blob.flush().map_err(internal)?;
        blob.set_etag(format!(
            "{}-{}",
            hex::encode(md5::Md5::digest(&digests)),
            chosen.len()
        ));
        let record = store
            .commit_file(
                &login,
                &manifest.key,
                blob,
                manifest.content_type.clone(),
                BTreeMap::new(),
            )
            .map_err(store_error)?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(record)
    })
    .await?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        e_tag: Some(strong_etag(&record.etag)),
        ..Default::default()
    }))
}

pub(super) async fn abort_multipart_upload(
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let who = caller(&req)?;
    let input = req.input;
    check_bucket(&input.bucket)?;
    let key = key_path(&input.key);
    let store = who.state.store.clone();
    let login = who.login.clone();
    blocking(move || {
        let (dir, manifest) = owned_upload(&store, &input.upload_id, &login, &key)?;
        std::fs::remove_dir_all(&dir).map_err(internal)?;
        // The temporary index node goes with the upload (if it still is one).
        let _ = store.drop_placeholder(&login, &manifest.key);
        Ok(())
    })
    .await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let who = caller(&req)?;
    let input = req.input;
    check_bucket(&input.bucket)?;
    let key = key_path(&input.key);
    let store = who.state.store.clone();
    let login = who.login.clone();
    let upload_id = input.upload_id.clone();
    let marker = input.part_number_marker.unwrap_or(0);
    let max_parts = input.max_parts.unwrap_or(1000).max(1);
    let (parts, truncated) = blocking(move || {
        let (dir, _) = owned_upload(&store, &upload_id, &login, &key)?;
        let mut parts: Vec<PartRecord> = list_part_records(&dir)
            .into_iter()
            .filter(|p| p.part_number > marker)
            .collect();
        let max = usize::try_from(max_parts).unwrap_or(1000);
        let truncated = parts.len() > max;
        parts.truncate(max);
        Ok((parts, truncated))
    })
    .await?;
    let next = parts.last().map(|p| p.part_number);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next,
        max_parts: Some(max_parts),
        is_truncated: Some(truncated),
        parts: Some(
            parts
                .into_iter()
                .map(|p| Part {
                    part_number: Some(p.part_number),
                    e_tag: Some(strong_etag(&p.etag)),
                    size: Some(i64::try_from(p.size).unwrap_or(i64::MAX)),
                    last_modified: Some(timestamp(p.last_modified)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

pub(super) async fn list_multipart_uploads(
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let who = caller(&req)?;
    let input = req.input;
    check_bucket(&input.bucket)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let store = who.state.store.clone();
    let login = who.login.clone();
    let p = prefix.trim_start_matches('/').to_owned();
    let mut uploads = blocking(move || {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(uploads_dir(&store))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(m) = read_manifest(&entry.path())
                && m.login == login
                && m.key.starts_with(&p)
            {
                found.push(m);
            }
        }
        Ok(found)
    })
    .await?;
    uploads.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: Some(prefix),
        max_uploads: Some(input.max_uploads.unwrap_or(1000)),
        is_truncated: Some(false),
        uploads: Some(
            uploads
                .into_iter()
                .map(|m| MultipartUpload {
                    key: Some(m.key),
                    upload_id: Some(m.upload_id),
                    initiated: Some(timestamp(m.initiated)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}
