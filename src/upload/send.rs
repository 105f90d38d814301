//! The one upload path both commands share: hash an already-opened file in one read pass, then
//! queue its chunks on a shared producer, every chunk tagged with the file's own delivery
//! tracker so the caller can tell when exactly this file is acknowledged.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::chunk::hash::sha512;
use crate::chunk::RangeSet;
use crate::chunk::{
    encoded_len, finish_value, message_key, value_data_slot, ChunkHeader, ChunkSize, Sha512Digest,
    WireFields,
};
use crate::kafka::{partition_for_path, ChunkOf, ChunkProducer, FileDelivery};
use crate::upload::hashing::{chunk_count, hash_file, FileHashes};
use crate::upload::source::SourceFile;

/// librdkafka's queue is capped at this many KiB: it is the back-pressure that keeps memory
/// flat however large the file (or however many files), and 32 MiB (64 chunks of 512 KiB)
/// keeps the broker busy.
pub const QUEUE_MAX_KBYTES: u64 = 32 * 1024;

/// How chunks are cut and encoded.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    /// Bytes per chunk.
    pub chunk_size: ChunkSize,
    /// 9 or 10 fields per message.
    pub wire_fields: WireFields,
    /// Chunk-hashing worker threads for the hashing pass.
    pub hash_threads: usize,
}

/// What was queued for one file.
#[derive(Debug, Clone)]
pub struct QueuedFile {
    /// SHA-512 of the whole file, as sent in every chunk.
    pub file_hash: Sha512Digest,
    /// Chunks the file has.
    pub n_chunks: u64,
    /// Chunks queued this time (fewer than `n_chunks` when resuming).
    pub n_queued: u64,
    /// Partition all chunks went to.
    pub partition: i32,
}

/// Producer settings openmsi picks when the config file is silent, and why.
pub fn producer_defaults(max_message_bytes: usize) -> Vec<(&'static str, String)> {
    vec![
        // A chunk is only "sent" when every in-sync replica has it.
        ("acks", "all".into()),
        // No duplicates or reordering from librdkafka's own retries.
        ("enable.idempotence", "true".into()),
        ("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES.to_string()),
        // Chunks bigger than librdkafka's 1 MB default must still be accepted client-side;
        // the broker's own limit is reported clearly if it is lower.
        (
            "message.max.bytes",
            max_message_bytes.max(1_000_000).to_string(),
        ),
        ("batch.size", max_message_bytes.max(1_000_000).to_string()),
    ]
}

/// Hashes `source` and queues all its chunks on `producer` (to the partition chosen by its
/// relative path among `partitions`), crediting acknowledgements to `delivery`. Returns once
/// every chunk is queued, not acknowledged: the caller waits on `delivery`. `on_progress` gets
/// the acknowledged byte count after each chunk. On error, chunks already queued stay queued.
pub fn queue_file(
    producer: &ChunkProducer,
    partitions: i32,
    source: &SourceFile,
    options: &SendOptions,
    delivery: &Arc<FileDelivery>,
    on_progress: &mut dyn FnMut(u64),
    cancel: &CancellationToken,
) -> anyhow::Result<QueuedFile> {
    let target = Target {
        producer,
        partitions,
        delivery,
    };
    if chunk_count(source.size, options.chunk_size.get()) == 1 {
        let queued = queue_single_chunk(&target, source, options.wire_fields, cancel)?;
        on_progress(delivery.acked_bytes());
        return Ok(queued);
    }
    let hashes = hash_source(source, options, cancel)?;
    queue_chunks(
        &target,
        source,
        options,
        &hashes,
        &RangeSet::new(),
        on_progress,
        cancel,
    )
}

/// The hashing pass: the whole file's SHA-512 (needed in every chunk) and, for files of at
/// most [`crate::upload::hashing::MAX_KEPT_CHUNK_HASHES`] chunks, every chunk's.
pub fn hash_source(
    source: &SourceFile,
    options: &SendOptions,
    cancel: &CancellationToken,
) -> anyhow::Result<FileHashes> {
    let mut file: &File = &source.file;
    file.seek(SeekFrom::Start(0))?;
    hash_file(
        &source.file,
        source.size,
        options.chunk_size.get(),
        options.hash_threads,
        cancel,
    )
    .with_context(|| format!("reading {}", source.path.display()))
}

/// Where chunks go: the producer, the topic's partition count, and the file's own
/// delivery tracker.
pub struct Target<'a> {
    /// The shared producer.
    pub producer: &'a ChunkProducer,
    /// Partitions of the topic (the file's partition is chosen among them by its path).
    pub partitions: i32,
    /// Acknowledgements of this file are credited here.
    pub delivery: &'a Arc<FileDelivery>,
}

/// Queues the chunks of `source` that are not in `skip` (0-based indices already acknowledged
/// in an earlier, interrupted run), with `hashes.file_hash` as the whole-file hash. Chunk
/// hashes not in `hashes` are computed as the chunks are read, so a resumed file is read once,
/// and only where chunks are missing.
pub fn queue_chunks(
    target: &Target<'_>,
    source: &SourceFile,
    options: &SendOptions,
    hashes: &FileHashes,
    skip: &RangeSet,
    on_progress: &mut dyn FnMut(u64),
    cancel: &CancellationToken,
) -> anyhow::Result<QueuedFile> {
    let chunk_size = options.chunk_size.get();
    let n_chunks = chunk_count(source.size, chunk_size);
    let partition = partition_for_path(&source.relative_path(), target.partitions);
    let plan = ChunkPlan {
        source,
        hashes,
        chunk_size,
        n_chunks,
        fields: options.wire_fields,
        partition,
    };
    let n_queued = produce_chunks(&plan, target, &skip.missing(n_chunks), on_progress, cancel)?;
    Ok(QueuedFile {
        file_hash: hashes.file_hash,
        n_chunks,
        n_queued,
        partition,
    })
}

/// A file of one chunk (most files in a drop box): its chunk's hash is the file's hash, so it
/// is read once, straight into its message, and hashed once, instead of a hashing pass (with
/// its worker thread), a second read and a second hash. Nothing is sent when the file changed
/// while it was read (a torn read would otherwise hash consistently and be accepted by the
/// receivers); the caller reports the error and the file is sent again once it settles.
pub fn queue_single_chunk(
    target: &Target<'_>,
    source: &SourceFile,
    fields: WireFields,
    cancel: &CancellationToken,
) -> anyhow::Result<QueuedFile> {
    if cancel.is_cancelled() {
        bail!("interrupted before queueing the file's only chunk; nothing is recorded as uploaded");
    }
    let len = usize::try_from(source.size).context("file too large for one chunk")?;
    let partition = partition_for_path(&source.relative_path(), target.partitions);
    let placeholder = [0u8; 64];
    let mut header = ChunkHeader {
        filename: &source.filename,
        file_hash: &placeholder,
        chunk_hash: &placeholder,
        offset: 0,
        chunk_i: 1,
        n_total_chunks: 1,
        subdir: &source.subdir,
        filename_append: "",
        file_mtime: source.mtime,
    };
    let mut value = Vec::new();
    let data = value_data_slot(&header, len, fields, &mut value);
    let mut file: &File = &source.file;
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(data)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => anyhow::anyhow!(
                "the file became shorter while it was being read; upload it again once it is \
                 completely written"
            ),
            _ => anyhow::Error::new(e),
        })
        .with_context(|| format!("reading {}", source.path.display()))?;
    if !source
        .unchanged()
        .with_context(|| format!("checking {}", source.path.display()))?
    {
        bail!(
            "{} changed while it was being read; nothing was sent. Upload it again once it is \
             completely written",
            source.path.display()
        );
    }
    let hash = sha512(data);
    header.file_hash = &hash;
    header.chunk_hash = &hash;
    finish_value(&header, len, fields, &mut value);
    let key = message_key(&source.subdir, &source.filename, 1, 1);
    let chunk = ChunkOf {
        file: target.delivery,
        index: 0,
        bytes: len,
    };
    target
        .producer
        .send(partition, &key, &value, chunk, cancel)?;
    Ok(QueuedFile {
        file_hash: hash,
        n_chunks: 1,
        n_queued: 1,
        partition,
    })
}

/// The largest message (value plus key) this file's chunks encode to.
pub fn max_message_len(source: &SourceFile, chunk_size: usize, fields: WireFields) -> usize {
    let zero = [0u8; 64];
    let header = ChunkHeader {
        filename: &source.filename,
        file_hash: &zero,
        chunk_hash: &zero,
        offset: source.size,
        chunk_i: u64::MAX,
        n_total_chunks: u64::MAX,
        subdir: &source.subdir,
        filename_append: "",
        file_mtime: source.mtime,
    };
    encoded_len(&header, chunk_size, fields)
        + message_key(&source.subdir, &source.filename, u64::MAX, u64::MAX).len()
}

/// Everything the producing pass needs.
struct ChunkPlan<'a> {
    source: &'a SourceFile,
    hashes: &'a FileHashes,
    chunk_size: usize,
    n_chunks: u64,
    fields: WireFields,
    partition: i32,
}

/// The producing pass: read each chunk of the `wanted` ranges straight into its message (after
/// room left for the header, which is written once the chunk hash is known), queue it. The one
/// buffer is reused, so memory is one message plus librdkafka's bounded queue, and the data is
/// copied once (by librdkafka) between the read and the socket. Returns the number of chunks
/// queued.
fn produce_chunks(
    plan: &ChunkPlan<'_>,
    target: &Target<'_>,
    wanted: &[(u64, u64)],
    on_progress: &mut dyn FnMut(u64),
    cancel: &CancellationToken,
) -> anyhow::Result<u64> {
    let source = plan.source;
    let mut file: &File = &source.file;
    let mut value = Vec::new();
    let mut queued = 0u64;
    for &(first, end) in wanted {
        file.seek(SeekFrom::Start(first * plan.chunk_size as u64))?;
        for index in first..end {
            if cancel.is_cancelled() {
                bail!(
                    "interrupted after queueing {queued} chunks; nothing more is recorded as uploaded than the broker acknowledged"
                );
            }
            let offset = index * plan.chunk_size as u64;
            let len = (source.size - offset).min(plan.chunk_size as u64) as usize;
            let mut header = ChunkHeader {
                filename: &source.filename,
                file_hash: &plan.hashes.file_hash,
                // A placeholder of the right length until the data is read, when not kept.
                chunk_hash: &plan.hashes.file_hash,
                offset,
                chunk_i: index + 1,
                n_total_chunks: plan.n_chunks,
                subdir: &source.subdir,
                filename_append: "",
                file_mtime: source.mtime,
            };
            let data = value_data_slot(&header, len, plan.fields, &mut value);
            file.read_exact(data)
                .context("the file became shorter while it was being uploaded")?;
            let computed;
            header.chunk_hash = match &plan.hashes.chunk_hashes {
                Some(kept) => &kept[index as usize],
                None => {
                    computed = sha512(data);
                    &computed
                }
            };
            finish_value(&header, len, plan.fields, &mut value);
            let key = message_key(&source.subdir, &source.filename, index + 1, plan.n_chunks);
            let chunk = ChunkOf {
                file: target.delivery,
                index,
                bytes: len,
            };
            target
                .producer
                .send(plan.partition, &key, &value, chunk, cancel)?;
            queued += 1;
            on_progress(target.delivery.acked_bytes());
        }
    }
    Ok(queued)
}
