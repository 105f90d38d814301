//! `openmsi upload-file`: hash the file in one read pass, then produce its chunks to the
//! partition chosen for its path, and succeed only when the broker acknowledged every one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::chunk::{ChunkSize, WireFields};
use crate::config::LoadedConfig;
use crate::kafka::client::client_config;
use crate::kafka::{partition_for_path, ChunkProducer, FileDelivery};
use crate::progress::Progress;
use crate::upload::send::{max_message_len, producer_defaults, queue_file, SendOptions};
use crate::upload::source::SourceFile;

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

/// Uploads one file. Returns only when every chunk is acknowledged; any other outcome is an
/// error that says what was not delivered and why.
pub fn upload_file(
    config: &LoadedConfig,
    settings: &UploadFileSettings,
    cancel: &CancellationToken,
) -> anyhow::Result<UploadSummary> {
    let source = SourceFile::open(&settings.file, settings.root_dir.as_deref())?;
    let chunk_size = settings.chunk_size.get();
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
    debug!(path = %relative_path, partition, "uploading");

    let started = Instant::now();
    let mut progress = Progress::new(&relative_path, source.size);
    let options = SendOptions {
        chunk_size: settings.chunk_size,
        wire_fields: settings.wire_fields,
        hash_threads: settings.hash_threads,
    };
    let delivery = FileDelivery::new();
    let queued = queue_file(
        &producer,
        topic.partitions,
        &source,
        &options,
        &delivery,
        &mut |done| progress.set(done),
        cancel,
    );
    if let Err(e) = queued {
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
