//! `openmsi upload-file`: hash the file in one read pass, then produce its chunks to the
//! partition chosen for its path, and succeed only when the broker acknowledged every one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::chunk::hash::sha512;
use crate::chunk::{encode_value, encoded_len, message_key, ChunkHeader, ChunkSize, WireFields};
use crate::config::LoadedConfig;
use crate::kafka::client::client_config;
use crate::kafka::{partition_for_path, ChunkProducer};
use crate::progress::Progress;
use crate::upload::hashing::{chunk_count, hash_file, FileHashes};
use crate::upload::source::SourceFile;

/// librdkafka's queue is capped at this many KiB: it is the back-pressure that keeps memory
/// flat however large the file, and 32 MiB (64 chunks of 512 KiB) keeps the broker busy.
const QUEUE_MAX_KBYTES: u64 = 32 * 1024;

/// How long an interrupted or failed upload waits to flush chunks already queued.
const FLUSH_ON_ERROR: Duration = Duration::from_secs(10);

/// Validated settings for one upload.
#[derive(Debug, Clone)]
pub struct UploadFileSettings {
    /// The file to send.
    pub file: PathBuf,
    /// Folder the file's subdir is relative to (None: the file's own folder).
    pub root_dir: Option<PathBuf>,
    /// Destination topic.
    pub topic: String,
    /// Bytes per chunk.
    pub chunk_size: ChunkSize,
    /// 9 or 10 fields per message.
    pub wire_fields: WireFields,
    /// Chunk-hashing worker threads.
    pub hash_threads: usize,
    /// Bound on waiting for the broker's first answer.
    pub connect_timeout: Duration,
    /// Bound on waiting for acknowledgements after the last chunk was queued.
    pub delivery_timeout: Duration,
}

/// What an upload did, for the summary line.
#[derive(Debug, Clone)]
pub struct UploadSummary {
    /// The file's path relative to the upload root.
    pub relative_path: String,
    /// File bytes sent.
    pub bytes: u64,
    /// Chunk messages acknowledged.
    pub chunks: u64,
    /// Partition all chunks went to.
    pub partition: i32,
    /// Wall time from the first read to the last acknowledgement.
    pub elapsed: Duration,
}

/// Producer settings openmsi picks when the config file is silent, and why.
fn producer_defaults(max_message_bytes: usize) -> Vec<(&'static str, String)> {
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

/// Uploads one file. Returns only when every chunk is acknowledged; any other outcome is an
/// error that says what was not delivered and why.
pub fn upload_file(
    config: &LoadedConfig,
    settings: &UploadFileSettings,
    cancel: &CancellationToken,
) -> anyhow::Result<UploadSummary> {
    let source = SourceFile::open(&settings.file, settings.root_dir.as_deref())?;
    let chunk_size = settings.chunk_size.get();
    let n_chunks = chunk_count(source.size, chunk_size);
    let relative_path = source.relative_path();

    let max_message = max_message_len(&source, chunk_size, settings.wire_fields);
    let cfg = client_config(
        &config.producer_properties(),
        &producer_defaults(max_message + 1024),
        &[],
    );
    let (producer, topic) =
        ChunkProducer::connect(&cfg, config, &settings.topic, settings.connect_timeout)?;
    let partition = partition_for_path(&relative_path, topic.partitions);
    debug!(path = %relative_path, partition, chunks = n_chunks, "uploading");

    let started = Instant::now();
    let hashes = hash_file(
        &source.file,
        source.size,
        chunk_size,
        settings.hash_threads,
        cancel,
    )
    .with_context(|| format!("reading {}", source.path.display()))?;

    let mut progress = Progress::new(&relative_path, source.size);
    let plan = ChunkPlan {
        source: &source,
        hashes: &hashes,
        chunk_size,
        n_chunks,
        fields: settings.wire_fields,
        partition,
    };
    if let Err(e) = produce_chunks(&plan, &producer, &mut progress, cancel) {
        // Interrupted or failed midway: still hand what is queued to the broker (bounded), so
        // a stop never leaves librdkafka's queue to be dropped unflushed.
        let _ =
            producer.wait_for_deliveries(FLUSH_ON_ERROR, &CancellationToken::new(), &mut |_| {});
        progress.finish();
        return Err(e.context(format!(
            "uploading {} to topic {}",
            source.path.display(),
            settings.topic
        )));
    }
    producer
        .wait_for_deliveries(settings.delivery_timeout, cancel, &mut |done| {
            progress.set(done)
        })
        .with_context(|| {
            format!(
                "uploading {} to topic {}",
                source.path.display(),
                settings.topic
            )
        })?;
    progress.finish();

    if !source
        .unchanged()
        .with_context(|| format!("checking {} after upload", source.path.display()))?
    {
        bail!(
            "{} changed while it was being uploaded; the receivers will reject this copy because \
             its hash will not match. Upload it again once it is completely written",
            source.path.display()
        );
    }
    let summary = UploadSummary {
        relative_path,
        bytes: source.size,
        chunks: producer.tracker().delivered(),
        partition,
        elapsed: started.elapsed(),
    };
    info!(path = %summary.relative_path, bytes = summary.bytes, chunks = summary.chunks, "upload acknowledged");
    Ok(summary)
}

/// The largest value this file's chunks encode to.
fn max_message_len(source: &SourceFile, chunk_size: usize, fields: WireFields) -> usize {
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

/// The producing pass: read each chunk, encode it, queue it. Buffers are reused, so memory is
/// two chunks plus librdkafka's bounded queue.
fn produce_chunks(
    plan: &ChunkPlan<'_>,
    producer: &ChunkProducer,
    progress: &mut Progress,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let source = plan.source;
    let mut file: &File = &source.file;
    file.seek(SeekFrom::Start(0))?;
    let mut data = vec![0u8; plan.chunk_size.min(source.size as usize)];
    let mut value = Vec::new();
    for index in 0..plan.n_chunks {
        if cancel.is_cancelled() {
            bail!(
                "interrupted after queueing {} of {} chunks; nothing is recorded as uploaded",
                index,
                plan.n_chunks
            );
        }
        let offset = index * plan.chunk_size as u64;
        let len = (source.size - offset).min(plan.chunk_size as u64) as usize;
        let data = &mut data[..len];
        file.read_exact(data)
            .context("the file became shorter while it was being uploaded")?;
        let computed;
        let chunk_hash = match &plan.hashes.chunk_hashes {
            Some(kept) => &kept[index as usize],
            None => {
                computed = sha512(data);
                &computed
            }
        };
        let header = ChunkHeader {
            filename: &source.filename,
            file_hash: &plan.hashes.file_hash,
            chunk_hash,
            offset,
            chunk_i: index + 1,
            n_total_chunks: plan.n_chunks,
            subdir: &source.subdir,
            filename_append: "",
            file_mtime: source.mtime,
        };
        encode_value(&header, data, plan.fields, &mut value);
        let key = message_key(&source.subdir, &source.filename, index + 1, plan.n_chunks);
        producer.send(plan.partition, &key, &value, len, cancel)?;
        progress.set(producer.tracker().delivered_bytes());
    }
    Ok(())
}
