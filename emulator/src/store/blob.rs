//! Content on its way in: [`TempBlob`] (an upload in flight in `tmp/`, hashed as it is
//! written) and [`CellsHasher`] (the incremental `x-cells-hash`: MD5 of the 10 MiB blocks'
//! MD5s, cells-api.md §6.8), and the hashes of a file read back from disk.
//!
//! Invariants:
//! - A temp blob dropped without being committed removes its file; a sealed one has been
//!   renamed into `blobs/` and leaves nothing behind.
//! - Hashes are trusted only while they describe every byte: content appended without its
//!   digests, or written behind the blob's back, is re-hashed from disk at seal.

use std::path::{Path, PathBuf};

use super::{CELLS_HASH_BLOCK, StoreError};

/// An upload in flight: a file in the store's `tmp/` directory. Write the content with
/// [`std::io::Write`] (MD5 and `x-cells-hash` are computed as the bytes go through), or append
/// whole files whose 10 MiB block digests are already known with
/// [`TempBlob::append_file_with_blocks`], then hand it to [`Store::commit_file`]. Whatever the
/// hashes kept here cannot vouch for is re-hashed from disk when the blob is sealed. Dropped
/// without commit, the temp file is removed.
pub struct TempBlob {
    pub(super) path: PathBuf,
    pub(super) file: Option<std::fs::File>,
    /// MD5 of everything written; `None` once content was appended without it (the Etag must
    /// then be set with [`TempBlob::set_etag`], or the content is re-hashed at seal).
    pub(super) md5: Option<md5::Md5>,
    pub(super) block: CellsHasher,
    pub(super) written: u64,
    pub(super) etag_override: Option<String>,
    /// Renamed into `blobs/` by [`Store::seal`]: nothing is left at `path` to remove.
    pub(super) sealed: bool,
}

/// Incremental `x-cells-hash`: MD5 over the raw MD5 digests of consecutive 10 MiB blocks.
/// Digests of whole blocks hashed elsewhere can be pushed with
/// [`CellsHasher::push_block_digests`] at a block boundary.
#[derive(Clone, Default)]
pub struct CellsHasher {
    current: md5::Md5,
    in_block: u64,
    digests: Vec<u8>,
    /// The last pushed digest was of a partial block: the content must end there.
    ended_by_partial_block: bool,
    /// The digests no longer describe the content (bytes came after a partial block).
    invalid: bool,
}

use md5::Digest as _;

impl CellsHasher {
    pub fn new() -> CellsHasher {
        CellsHasher::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if self.ended_by_partial_block && !data.is_empty() {
            self.invalid = true;
        }
        while !data.is_empty() {
            let room = (CELLS_HASH_BLOCK - self.in_block) as usize;
            let take = room.min(data.len());
            self.current.update(&data[..take]);
            self.in_block += take as u64;
            data = &data[take..];
            if self.in_block == CELLS_HASH_BLOCK {
                let d = std::mem::take(&mut self.current).finalize();
                self.digests.extend_from_slice(&d);
                self.in_block = 0;
            }
        }
    }

    /// Append the raw MD5 digests of consecutive blocks hashed elsewhere: every block
    /// [`CELLS_HASH_BLOCK`] bytes long except possibly the last (`last_is_partial`), which
    /// then ends the content. Returns false (and changes nothing) unless the hasher stands at
    /// a block boundary, after whole blocks only.
    pub fn push_block_digests(&mut self, digests: &[[u8; 16]], last_is_partial: bool) -> bool {
        if self.in_block != 0 || self.ended_by_partial_block || self.invalid {
            return false;
        }
        for d in digests {
            self.digests.extend_from_slice(d);
        }
        self.ended_by_partial_block = last_is_partial && !digests.is_empty();
        true
    }

    /// Whether the digests still describe every byte given to this hasher.
    pub fn is_valid(&self) -> bool {
        !self.invalid
    }

    /// The raw MD5 digest of each block so far, the last (partial) block included; no digest
    /// at all for an empty input.
    pub fn finish_blocks(mut self) -> Vec<[u8; 16]> {
        if self.in_block > 0 {
            let d = std::mem::take(&mut self.current).finalize();
            self.digests.extend_from_slice(&d);
        }
        self.digests
            .chunks_exact(16)
            .map(|c| {
                let mut d = [0u8; 16];
                d.copy_from_slice(c);
                d
            })
            .collect()
    }

    /// The hex hash. An empty input hashes as `md5(md5(""))`.
    pub fn finish(mut self) -> String {
        if self.in_block > 0 || self.digests.is_empty() {
            let d = std::mem::take(&mut self.current).finalize();
            self.digests.extend_from_slice(&d);
        }
        hex::encode(md5::Md5::digest(&self.digests))
    }
}

impl TempBlob {
    /// Where the temp file lives (e.g. to reopen it for reading).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far through [`std::io::Write`].
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Use this Etag instead of the MD5 of the content (e.g. `<md5-of-md5s>-<n>` for a
    /// multipart upload).
    pub fn set_etag(&mut self, etag: impl Into<String>) {
        self.etag_override = Some(etag.into());
    }

    /// MD5 hex of what was written so far (`None` once a file was appended without it).
    pub fn md5_hex(&self) -> Option<String> {
        self.md5.as_ref().map(|m| hex::encode(m.clone().finalize()))
    }

    /// Append the whole of `from` (`expected_len` bytes) by a file-to-file copy (kernel-side
    /// on Linux: `copy_file_range`), without reading it through user space. `block_digests`
    /// are the raw MD5 digests of its consecutive 10 MiB blocks (the last may be partial);
    /// they extend the `x-cells-hash` when the blob so far ends on a block boundary,
    /// otherwise (or when the copied length differs) the content is re-hashed at seal. The
    /// whole-content MD5 is not kept afterwards: set the Etag with [`TempBlob::set_etag`].
    pub fn append_file_with_blocks(
        &mut self,
        from: &mut std::fs::File,
        expected_len: u64,
        block_digests: &[[u8; 16]],
    ) -> std::io::Result<u64> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("temp blob already closed"))?;
        let copied = std::io::copy(from, file)?;
        self.md5 = None;
        self.written += copied;
        let expected_blocks = expected_len.div_ceil(CELLS_HASH_BLOCK);
        let consistent = copied == expected_len && block_digests.len() as u64 == expected_blocks;
        let last_is_partial = !expected_len.is_multiple_of(CELLS_HASH_BLOCK);
        if !(consistent
            && self
                .block
                .push_block_digests(block_digests, last_is_partial))
        {
            self.block.invalid = true;
        }
        Ok(copied)
    }
}

impl std::io::Write for TempBlob {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("temp blob already closed"))?;
        let n = file.write(buf)?;
        if let Some(md5) = self.md5.as_mut() {
            md5.update(&buf[..n]);
        }
        self.block.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        self.file.take();
        if !self.sealed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// MD5 hex and `x-cells-hash` of a file, read from disk.
pub(super) fn hash_file(path: &Path) -> Result<(String, String), StoreError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut md5 = md5::Md5::default();
    let mut cells = CellsHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        cells.update(&buf[..n]);
    }
    Ok((hex::encode(md5.finalize()), cells.finish()))
}
