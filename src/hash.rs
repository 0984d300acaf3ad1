//! The Cells block hash (`x-cells-hash`, cells-api.md §6.8): MD5 over the concatenation of the
//! raw MD5 digests of consecutive 10 MiB blocks of the content. `cec tools hash` and
//! `cec scp --update` compute it locally to compare with what the server reports.
//!
//! Invariants: the result is lowercase hex; an empty input hashes as `md5(md5(""))` (one
//! empty block), as the server does; the hash is the same whatever the read sizes.

use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};

/// Size of the blocks hashed separately.
pub const BLOCK_SIZE: u64 = 10 * 1024 * 1024;

/// Incremental block hasher.
#[derive(Clone, Default)]
pub struct BlockHasher {
    block: Md5,
    in_block: u64,
    digests: Vec<u8>,
}

impl BlockHasher {
    pub fn new() -> BlockHasher {
        BlockHasher::default()
    }

    /// Feed more content.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (BLOCK_SIZE - self.in_block) as usize;
            let take = room.min(data.len());
            self.block.update(&data[..take]);
            self.in_block += take as u64;
            data = &data[take..];
            if self.in_block == BLOCK_SIZE {
                let digest = std::mem::take(&mut self.block).finalize();
                self.digests.extend_from_slice(&digest);
                self.in_block = 0;
            }
        }
    }

    /// The hex hash of everything fed.
    pub fn finish(mut self) -> String {
        if self.in_block > 0 || self.digests.is_empty() {
            let digest = std::mem::take(&mut self.block).finalize();
            self.digests.extend_from_slice(&digest);
        }
        hex::encode(Md5::digest(&self.digests))
    }
}

/// The block hash of a byte slice.
pub fn block_hash(data: &[u8]) -> String {
    let mut h = BlockHasher::new();
    h.update(data);
    h.finish()
}

/// The block hash of a local file, read in 1 MiB chunks.
pub fn block_hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut h = BlockHasher::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_hex(d: &[u8]) -> String {
        hex::encode(Md5::digest(d))
    }

    #[test]
    fn small_and_empty_inputs_are_md5_of_md5() {
        assert_eq!(block_hash(b""), md5_hex(&Md5::digest(b"")));
        assert_eq!(block_hash(b"hello"), md5_hex(&Md5::digest(b"hello")));
        assert_ne!(block_hash(b"hello"), md5_hex(b"hello"));
    }

    #[test]
    fn blocks_are_ten_mib_and_chunking_does_not_matter() {
        let data: Vec<u8> = (0..(BLOCK_SIZE as usize + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut expected = Vec::new();
        expected.extend_from_slice(&Md5::digest(&data[..BLOCK_SIZE as usize]));
        expected.extend_from_slice(&Md5::digest(&data[BLOCK_SIZE as usize..]));
        let expected = md5_hex(&expected);
        assert_eq!(block_hash(&data), expected);
        let mut h = BlockHasher::new();
        for chunk in data.chunks(777_777) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), expected);
        // Exactly one block: no trailing empty block.
        let one = &data[..BLOCK_SIZE as usize];
        assert_eq!(block_hash(one), md5_hex(&Md5::digest(one)));
    }
}
