//! The hashing pass of an upload. Every chunk message carries the whole file's SHA-512, so it
//! must be known before the first chunk is sent: one read pass computes it, and, on other
//! threads from the same buffers, every chunk's SHA-512, so the producing pass only reads and
//! sends (the reference reads the file twice and hashes every chunk twice).

use std::fs::File;
use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::chunk::batch_hash::sha512_each;
use crate::chunk::hash::{sha512, Sha512Stream};
use crate::chunk::Sha512Digest;
use crate::sync::SharedReceiver;

/// Chunk hashes are kept in memory (64 bytes each) only up to this many chunks (4 MiB), so
/// memory stays bounded for any file; above it they are computed while producing instead.
pub const MAX_KEPT_CHUNK_HASHES: u64 = 1 << 16;

/// Reads are done in blocks of at least this size: small chunk sizes would otherwise mean
/// one syscall and one channel message per few KiB.
const MIN_BLOCK_BYTES: usize = 4 << 20;

/// Hashes of one file.
#[derive(Debug)]
pub struct FileHashes {
    /// SHA-512 of the whole file.
    pub file_hash: Sha512Digest,
    /// SHA-512 of each chunk, in order, when the file has at most [`MAX_KEPT_CHUNK_HASHES`] chunks.
    pub chunk_hashes: Option<Vec<Sha512Digest>>,
}

/// Number of chunks for a file: at least one, so empty files travel too.
pub fn chunk_count(size: u64, chunk_size: usize) -> u64 {
    size.div_ceil(chunk_size as u64).max(1)
}

/// A block read from the file: index of its first chunk and the bytes.
struct Block {
    first_chunk: u64,
    bytes: Vec<u8>,
}

/// Reads `file` from its current position to the end (exactly `size` bytes) once.
/// `workers` threads hash chunks while this thread hashes the whole file.
pub fn hash_file(
    file: &File,
    size: u64,
    chunk_size: usize,
    workers: usize,
    cancel: &CancellationToken,
) -> io::Result<FileHashes> {
    let n_chunks = chunk_count(size, chunk_size);
    if size == 0 {
        let empty = sha512(&[]);
        return Ok(FileHashes {
            file_hash: empty,
            chunk_hashes: Some(vec![empty]),
        });
    }
    let keep_chunks = n_chunks <= MAX_KEPT_CHUNK_HASHES;
    let block_len = chunk_size * MIN_BLOCK_BYTES.div_ceil(chunk_size).max(1);
    let workers = workers.max(1);
    let chunk_hashes = Mutex::new(vec![
        [0u8; 64];
        if keep_chunks { n_chunks as usize } else { 0 }
    ]);

    let file_hash = std::thread::scope(|scope| -> io::Result<Sha512Digest> {
        // Two blocks per worker in flight: enough to keep them busy, and memory stays at a few
        // blocks whatever the file size.
        let (work_tx, work_rx) = mpsc::sync_channel::<Block>(workers * 2);
        let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
        if keep_chunks {
            let work_rx = Arc::new(SharedReceiver::new(work_rx));
            for _ in 0..workers {
                let work_rx = Arc::clone(&work_rx);
                let recycle_tx = recycle_tx.clone();
                let chunk_hashes = &chunk_hashes;
                scope.spawn(move || hash_chunks(&work_rx, &recycle_tx, chunk_hashes, chunk_size));
            }
        }
        drop(recycle_tx);
        read_and_hash(
            file,
            size,
            block_len,
            chunk_size,
            keep_chunks.then_some(work_tx),
            &recycle_rx,
            cancel,
        )
    })?;
    let chunk_hashes = chunk_hashes
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Ok(FileHashes {
        file_hash,
        chunk_hashes: keep_chunks.then_some(chunk_hashes),
    })
}

/// The reading thread: fills blocks, hashes the whole file, hands blocks to chunk workers.
fn read_and_hash(
    mut file: &File,
    size: u64,
    block_len: usize,
    chunk_size: usize,
    work_tx: Option<SyncSender<Block>>,
    recycle_rx: &Receiver<Vec<u8>>,
    cancel: &CancellationToken,
) -> io::Result<Sha512Digest> {
    let mut hasher = Sha512Stream::new();
    let mut done: u64 = 0;
    while done < size {
        if cancel.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let want = (size - done).min(block_len as u64) as usize;
        let mut bytes = recycle_rx.try_recv().unwrap_or_default();
        bytes.resize(want, 0);
        file.read_exact(&mut bytes).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file became shorter while it was being read; upload it again once it is completely written",
                )
            } else {
                e
            }
        })?;
        hasher.update(&bytes);
        let first_chunk = done / chunk_size as u64;
        done += want as u64;
        if let Some(tx) = &work_tx {
            // A send error means a worker died; its panic surfaces when the scope joins.
            if tx.send(Block { first_chunk, bytes }).is_err() {
                break;
            }
        }
    }
    Ok(hasher.finalize())
}

/// A chunk-hashing worker.
fn hash_chunks(
    work_rx: &SharedReceiver<Block>,
    recycle_tx: &mpsc::Sender<Vec<u8>>,
    out: &Mutex<Vec<Sha512Digest>>,
    chunk_size: usize,
) {
    while let Some(block) = work_rx.next() {
        // A block holds several chunks: hashed side by side (see `batch_hash`).
        let chunks: Vec<&[u8]> = block.bytes.chunks(chunk_size).collect();
        let digests = sha512_each(&chunks);
        {
            let mut out = crate::sync::lock(out);
            let start = block.first_chunk as usize;
            out[start..start + digests.len()].copy_from_slice(&digests);
        }
        let _ = recycle_tx.send(block.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn hashes_of(content: &[u8], chunk_size: usize, workers: usize) -> FileHashes {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        hash_file(
            &f,
            content.len() as u64,
            chunk_size,
            workers,
            &CancellationToken::new(),
        )
        .unwrap()
    }

    #[test]
    fn matches_direct_hashing_for_edge_sizes() {
        let data: Vec<u8> = (0..(3 * 4096 + 17) as u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for len in [0usize, 1, 4095, 4096, 4097, 3 * 4096 + 17] {
            for workers in [1, 3] {
                let content = &data[..len];
                let h = hashes_of(content, 4096, workers);
                assert_eq!(h.file_hash, sha512(content), "len {len}");
                let chunks = h.chunk_hashes.unwrap();
                assert_eq!(chunks.len() as u64, chunk_count(len as u64, 4096));
                if len == 0 {
                    assert_eq!(chunks, vec![sha512(&[])]);
                } else {
                    let expected: Vec<_> = content.chunks(4096).map(sha512).collect();
                    assert_eq!(chunks, expected, "len {len}");
                }
            }
        }
    }

    #[test]
    fn blocks_span_many_chunks_with_small_chunk_size() {
        // 5 MiB with 1 KiB chunks: blocks of 4 MiB hold 4096 chunks each.
        let data: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        let h = hashes_of(&data, 1024, 2);
        let expected: Vec<_> = data.chunks(1024).map(sha512).collect();
        assert_eq!(h.chunk_hashes.unwrap(), expected);
        assert_eq!(h.file_hash, sha512(&data));
    }

    #[test]
    fn shrunk_file_is_an_error() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"short").unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        let err = hash_file(&f, 100, 4096, 1, &CancellationToken::new()).unwrap_err();
        assert!(err.to_string().contains("became shorter"), "{err}");
    }
}
