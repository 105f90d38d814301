//! `openmsi upload-file`: hash the file in one read pass, then produce its chunks to the
//! partition chosen for its path, and succeed only when the broker acknowledged every one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::chunk::{ChunkSize, WireFields};
use crate::config::LoadedConfig;
use crate::kafka::producer::ProduceError;
use crate::kafka::{partition_for_path, FileDelivery};
use crate::progress::ByteProgress;
use crate::upload::error::UploadError;
use crate::upload::send::{connect_producer, queue_file, SendOptions, Target};
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
    /// Message layout (`--format`).
    pub format: crate::chunk::MessageFormat,
    /// Chunk-hashing worker threads.
    pub hash_threads: usize,
    /// Bound on waiting for the broker's first answer.
    pub connect_timeout: Duration,
    /// Bound on waiting for acknowledgements after the last chunk was queued.
    pub delivery_timeout: Duration,
    /// Hosts the file is addressed to (None: every host).
    pub envelopes: crate::upload::envelopes::Envelopes,
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

/// Why upload-file failed: before any chunk was queued (the producer or the topic), or while
/// the file was sent.
#[derive(Debug, thiserror::Error)]
pub enum UploadFileError {
    /// The file could not be opened, or the producer could not be set up.
    #[error(transparent)]
    Setup(Box<UploadError>),
    /// Sending failed; says which file and topic.
    #[error("uploading {path} to topic {topic}: {source}")]
    Send {
        /// The file, as given.
        path: PathBuf,
        /// The topic.
        topic: String,
        /// What failed.
        #[source]
        source: Box<UploadError>,
    },
}

impl From<UploadError> for UploadFileError {
    fn from(e: UploadError) -> Self {
        Self::Setup(Box::new(e))
    }
}

impl UploadFileError {
    /// True when the upload stopped because a stop was requested.
    pub fn is_cancelled(&self) -> bool {
        match self {
            Self::Setup(e) | Self::Send { source: e, .. } => e.is_cancelled(),
        }
    }
}

/// Uploads one file. Returns only when every chunk is acknowledged; any other outcome is an
/// error that says what was not delivered and why.
pub fn upload_file(
    config: &LoadedConfig,
    settings: &UploadFileSettings,
    cancel: &CancellationToken,
) -> Result<UploadSummary, UploadFileError> {
    let source = SourceFile::open(&settings.file, settings.root_dir.as_deref())
        .map_err(UploadError::from)?;
    let relative_path = source.relative_path();

    let (producer, topic) = connect_producer(
        config,
        &settings.topic,
        settings.chunk_size,
        settings.envelopes.get(),
        settings.connect_timeout,
    )
    .map_err(UploadError::Produce)?;
    let partition = partition_for_path(&relative_path, topic.partitions);
    debug!(path = %relative_path, partition, "uploading");

    let started = Instant::now();
    let mut progress = ByteProgress::new(&relative_path, source.size);
    let options = SendOptions {
        chunk_size: settings.chunk_size,
        wire_fields: settings.wire_fields,
        format: settings.format,
        hash_threads: settings.hash_threads,
    };
    let delivery = FileDelivery::new();
    let target = Target {
        producer: &producer,
        partitions: topic.partitions,
        delivery: &delivery,
        envelope: settings.envelopes.get(),
    };
    let send_error = |source: UploadError| UploadFileError::Send {
        path: settings.file.clone(),
        topic: settings.topic.clone(),
        source: Box::new(source),
    };
    let queued = queue_file(
        &target,
        &source,
        &options,
        None,
        &mut |_, _| {},
        &mut |done| progress.set(done),
        cancel,
    );
    if let Err(e) = queued {
        // Interrupted or failed midway: still hand what is queued to the broker (bounded), so
        // a stop never leaves librdkafka's queue to be dropped unflushed.
        let _ =
            producer.wait_for_deliveries(FLUSH_ON_ERROR, &CancellationToken::new(), &mut |_| {});
        progress.finish();
        return Err(send_error(e));
    }
    producer
        .wait_for_deliveries(settings.delivery_timeout, cancel, &mut |done| {
            progress.set(done)
        })
        .map_err(|e: ProduceError| send_error(e.into()))?;
    progress.finish();

    let unchanged = source
        .unchanged()
        .map_err(|e| send_error(UploadError::read(&source.path, e)))?;
    if !unchanged {
        return Err(send_error(UploadError::ChangedWhileSent {
            path: source.path.clone(),
        }));
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
