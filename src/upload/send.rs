//! The one upload path both commands share: hash an already-opened file in one read pass (or
//! take the hash recorded by an interrupted upload), then queue its chunks on a shared
//! producer, every chunk tagged with the file's own delivery tracker so the caller can tell
//! when exactly this file is acknowledged.
//!
//! Every chunk message passes through one place, [`emit`], where an optional [`Envelope`]
//! (encryption, extra headers) transforms it before the producer sees it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::chunk::hash::sha512;
use crate::chunk::RangeSet;
use crate::chunk::{
    finish_value, message_key, value_data_slot, ChunkHeader, ChunkSize, Sha512Digest, WireFields,
};
use crate::chunk::{knot, MessageFormat};
use crate::config::LoadedConfig;
use crate::contract::{ChunkMessage, Envelope};
use crate::kafka::client::client_config;
use crate::kafka::producer::ProduceError;
use crate::kafka::{
    partition_for_path, producer_defaults, ChunkProducer, ChunkTag, FileDelivery, TopicInfo,
};
use crate::upload::error::UploadError;
use crate::upload::hashing::{chunk_count, hash_file, FileHashes};
use crate::upload::source::SourceFile;

/// Message size allowance beyond a chunk's data: the key and the header carry the subdir and
/// file name twice (each at most a few KiB on any filesystem) plus two hashes.
const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// How chunks are cut and encoded.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    /// Bytes per chunk.
    pub chunk_size: ChunkSize,
    /// 9 or 10 fields per message (openmsi's format).
    pub wire_fields: WireFields,
    /// Message layout.
    pub format: MessageFormat,
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

/// The largest message a chunk of `chunk_size` bytes can become, envelope included: what the
/// producer must accept.
pub fn max_message_bytes(chunk_size: usize, envelope: Option<&dyn Envelope>) -> usize {
    chunk_size + MESSAGE_OVERHEAD + envelope.map_or(0, Envelope::overhead)
}

/// The chunk producer of an upload command, with openmsi's producer defaults sized for the
/// largest message a chunk of `chunk_size` becomes (envelope included), connected and with
/// `topic` checked.
pub fn connect_producer(
    config: &LoadedConfig,
    topic: &str,
    chunk_size: ChunkSize,
    envelope: Option<&dyn Envelope>,
    timeout: std::time::Duration,
) -> Result<(ChunkProducer, TopicInfo), ProduceError> {
    let cfg = client_config(
        &config.producer_properties(),
        &producer_defaults(max_message_bytes(chunk_size.get(), envelope)),
        &[],
    );
    ChunkProducer::connect(&cfg, config, topic, timeout)
}

/// Where chunks go: the producer, the topic's partition count, the file's own delivery
/// tracker, and the envelope every message passes through.
pub struct Target<'a> {
    /// The shared producer.
    pub producer: &'a ChunkProducer,
    /// Partitions of the topic (the file's partition is chosen among them by its path).
    pub partitions: i32,
    /// Acknowledgements of this file are credited here.
    pub delivery: &'a Arc<FileDelivery>,
    /// Applied to every message before it is produced.
    pub envelope: Option<&'a dyn Envelope>,
}

/// Where an interrupted upload of an unchanged file starts again.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The whole-file hash recorded when the version started (the file is not hashed again).
    pub file_hash: Sha512Digest,
    /// Chunks (0-based) the broker already acknowledged.
    pub acked: RangeSet,
}

/// Queues every chunk of `source` the broker does not have yet: all of them, or with `resume`
/// only those not acknowledged in an earlier attempt. A file of one chunk is read once and
/// hashed once; a larger one is hashed first (unless resumed), then `on_start(file_hash,
/// already_acked)` is called before its first chunk is queued (upload-directory records the
/// version there, for a later resume). Returns once every chunk is queued, not acknowledged:
/// the caller waits on `target.delivery`. `on_progress` gets the acknowledged byte count after
/// each chunk. On error, chunks already queued stay queued.
pub fn queue_file(
    target: &Target<'_>,
    source: &SourceFile,
    options: &SendOptions,
    resume: Option<Resume>,
    on_start: &mut dyn FnMut(&Sha512Digest, &RangeSet),
    on_progress: &mut dyn FnMut(u64),
    cancel: &CancellationToken,
) -> Result<QueuedFile, UploadError> {
    let n_chunks = chunk_count(source.size, options.chunk_size.get());
    if resume.is_none() && n_chunks == 1 {
        let queued = queue_single_chunk(target, source, options, cancel)?;
        on_progress(target.delivery.acked_bytes());
        return Ok(queued);
    }
    let (hashes, skip) = match resume {
        Some(point) => {
            let hashes = FileHashes {
                file_hash: point.file_hash,
                chunk_hashes: None,
            };
            (hashes, point.acked)
        }
        None => (hash_source(source, options, cancel)?, RangeSet::new()),
    };
    on_start(&hashes.file_hash, &skip);
    queue_chunks(target, source, options, &hashes, &skip, on_progress, cancel)
}

/// The hashing pass: the whole file's SHA-512 (needed in every chunk) and, for files of at
/// most [`crate::upload::hashing::MAX_KEPT_CHUNK_HASHES`] chunks, every chunk's.
fn hash_source(
    source: &SourceFile,
    options: &SendOptions,
    cancel: &CancellationToken,
) -> Result<FileHashes, UploadError> {
    let mut file: &File = &source.file;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| UploadError::read(&source.path, e))?;
    hash_file(
        &source.file,
        source.size,
        options.chunk_size.get(),
        options.hash_threads,
        cancel,
    )
    .map_err(|e| UploadError::read(&source.path, e))
}

/// Queues the chunks of `source` that are not in `skip` (0-based indices already acknowledged
/// in an earlier, interrupted run), with `hashes.file_hash` as the whole-file hash. Chunk
/// hashes not in `hashes` are computed as the chunks are read, so a resumed file is read once,
/// and only where chunks are missing.
fn queue_chunks(
    target: &Target<'_>,
    source: &SourceFile,
    options: &SendOptions,
    hashes: &FileHashes,
    skip: &RangeSet,
    on_progress: &mut dyn FnMut(u64),
    cancel: &CancellationToken,
) -> Result<QueuedFile, UploadError> {
    let chunk_size = options.chunk_size.get();
    let n_chunks = chunk_count(source.size, chunk_size);
    let partition = partition_for_path(&source.relative_path(), target.partitions);
    let plan = ChunkPlan {
        source,
        hashes,
        chunk_size,
        n_chunks,
        fields: options.wire_fields,
        format: options.format,
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

/// The one place a chunk message goes to the producer: through the envelope, if any, then
/// queued with its delivery tag.
fn emit(
    target: &Target<'_>,
    message: &mut ChunkMessage,
    tag: &ChunkTag,
    cancel: &CancellationToken,
) -> Result<(), UploadError> {
    if let Some(envelope) = target.envelope {
        envelope.seal(message);
    }
    target.producer.send(
        message.partition,
        Some(&message.key),
        &message.value,
        &message.headers,
        tag,
        cancel,
    )?;
    Ok(())
}

/// A file of one chunk (most files in a drop box): its chunk's hash is the file's hash, so it
/// is read once, straight into its message, and hashed once, instead of a hashing pass (with
/// its worker thread), a second read and a second hash. Nothing is sent when the file changed
/// while it was read (a torn read would otherwise hash consistently and be accepted by the
/// receivers); the caller reports the error and the file is sent again once it settles.
fn queue_single_chunk(
    target: &Target<'_>,
    source: &SourceFile,
    options: &SendOptions,
    cancel: &CancellationToken,
) -> Result<QueuedFile, UploadError> {
    let fields = options.wire_fields;
    if cancel.is_cancelled() {
        return Err(UploadError::Cancelled);
    }
    // One chunk is at most a chunk size, which is a usize.
    let len = source.size as usize;
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
    let data = match options.format {
        MessageFormat::Openmsi => value_data_slot(&header, len, fields, &mut value),
        MessageFormat::Knot => knot_data_slot(len, &mut value),
    };
    let mut file: &File = &source.file;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(data))
        .map_err(|e| UploadError::read(&source.path, e))?;
    let unchanged = source
        .unchanged()
        .map_err(|e| UploadError::read(&source.path, e))?;
    if !unchanged {
        return Err(UploadError::ChangedWhileRead {
            path: source.path.clone(),
        });
    }
    let hash = sha512(data);
    let (key, headers) = match options.format {
        MessageFormat::Openmsi => {
            header.file_hash = &hash;
            header.chunk_hash = &hash;
            finish_value(&header, len, fields, &mut value);
            let key = message_key(&source.subdir, &source.filename, 1, 1);
            (key.into_bytes(), Vec::new())
        }
        MessageFormat::Knot => {
            let relative = source.relative_path();
            let headers = knot::part_headers(&relative, 0, 1, &hash);
            (relative.into_bytes(), headers)
        }
    };
    let mut message = ChunkMessage {
        partition,
        key,
        value,
        headers,
    };
    let tag = ChunkTag {
        file: Arc::clone(target.delivery),
        index: 0,
        bytes: len,
    };
    emit(target, &mut message, &tag, cancel)?;
    Ok(QueuedFile {
        file_hash: hash,
        n_chunks: 1,
        n_queued: 1,
        partition,
    })
}

/// Knot Resolver's value is the part's bytes alone: the whole buffer is the data slot.
fn knot_data_slot(len: usize, value: &mut Vec<u8>) -> &mut [u8] {
    value.clear();
    value.resize(len, 0);
    value.as_mut_slice()
}

/// Everything the producing pass needs.
struct ChunkPlan<'a> {
    source: &'a SourceFile,
    hashes: &'a FileHashes,
    chunk_size: usize,
    n_chunks: u64,
    fields: WireFields,
    format: MessageFormat,
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
) -> Result<u64, UploadError> {
    let source = plan.source;
    let mut file: &File = &source.file;
    // One message, its value buffer reused for every chunk.
    let mut message = ChunkMessage {
        partition: plan.partition,
        ..ChunkMessage::default()
    };
    let mut queued = 0u64;
    for &(first, end) in wanted {
        file.seek(SeekFrom::Start(first * plan.chunk_size as u64))
            .map_err(|e| UploadError::read(&source.path, e))?;
        for index in first..end {
            if cancel.is_cancelled() {
                return Err(UploadError::Cancelled);
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
            message.headers.clear();
            if plan.format == MessageFormat::Knot {
                let data = knot_data_slot(len, &mut message.value);
                file.read_exact(data)
                    .map_err(|e| UploadError::read(&source.path, e))?;
                let relative = source.relative_path();
                message.headers =
                    knot::part_headers(&relative, index, plan.n_chunks, &plan.hashes.file_hash);
                message.key = relative.into_bytes();
            } else {
                let data = value_data_slot(&header, len, plan.fields, &mut message.value);
                file.read_exact(data)
                    .map_err(|e| UploadError::read(&source.path, e))?;
                let computed;
                header.chunk_hash = match &plan.hashes.chunk_hashes {
                    Some(kept) => &kept[index as usize],
                    None => {
                        computed = sha512(data);
                        &computed
                    }
                };
                finish_value(&header, len, plan.fields, &mut message.value);
                message.key =
                    message_key(&source.subdir, &source.filename, index + 1, plan.n_chunks)
                        .into_bytes();
            }
            let tag = ChunkTag {
                file: Arc::clone(target.delivery),
                index,
                bytes: len,
            };
            emit(target, &mut message, &tag, cancel)?;
            queued += 1;
            on_progress(target.delivery.acked_bytes());
        }
    }
    Ok(queued)
}
