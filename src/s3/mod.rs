//! `openmsi s3-transfer`: the download pipeline with another sink. Files are rebuilt and
//! verified as download-directory does, into an outbox under the state folder, then put into
//! a bucket (one PUT, or a multipart upload streamed part by part), each confirmed by a HEAD
//! before its offsets are committed; the local copy is then removed.
//!
//! - [`settings`]: endpoint and credentials (OpenMSIStream's `[s3]` section, or AWS's
//!   environment variables).
//! - [`client`]: the S3 requests (signed by `rusty-s3`, sent by `ureq`).
//! - [`upload`]: one file into one object: skip when already there, checksums, multipart,
//!   retries, the journal of uploads in flight.
//! - [`stream`]: a large file's parts sent while it is still arriving.
//! - [`sink`]: the `ChunkSink` that completes the objects at each flush, and the outbox left by
//!   a crash.

pub mod client;
pub mod command;
pub mod settings;
pub mod sink;
pub mod stream;
pub mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::LoadedConfig;
use crate::download::hooks::{self, HookSettings};
use crate::download::{
    download_into, DownloadSettings, DownloadStats, DownloadSummary, OpenerFactory, ResultsFactory,
};
use client::{S3Client, S3Error};
use settings::S3Settings;
use sink::{drain_outbox, KeyLayout, S3Sink, S3Stats, Uploader};
use stream::Streams;
use upload::Journal;

/// Where the objects go.
#[derive(Debug, Clone)]
pub struct TransferSettings {
    /// The bucket.
    pub bucket: String,
    /// Endpoint and credentials.
    pub s3: S3Settings,
    /// `--key-prefix` (None: `<topic>/`).
    pub key_prefix: Option<String>,
    /// Bytes per multipart part.
    pub part_size: usize,
    /// The state folder: `outbox/` (files rebuilt, not yet in the bucket), `state/` (the
    /// download side's staging and logs), `multipart/` (uploads in flight), `hooks.jsonl`.
    pub state_root: PathBuf,
    /// `--on-file`, run on the outbox copy once the object is confirmed.
    pub hooks: HookSettings,
}

impl TransferSettings {
    /// Files rebuilt and verified, waiting for their object.
    pub fn outbox(&self) -> PathBuf {
        self.state_root.join("outbox")
    }

    /// The download side's state folder (staging, completed log, kept messages).
    pub fn download_state(&self) -> PathBuf {
        self.state_root.join("state")
    }
}

/// The default state folder: the user's cache, `openmsi/s3-transfer/<bucket>/<topic>`.
pub fn default_state_dir(bucket: &str, topic: &str) -> Option<PathBuf> {
    Some(
        crate::state::user_cache_dir()?
            .join("openmsi")
            .join("s3-transfer")
            .join(bucket)
            .join(topic),
    )
}

/// Runs until `cancel`, an idle exit or a fatal error. `download` must name the outbox as
/// its output folder and `download_state()` as its state folder, and no hooks (s3-transfer's
/// are `transfer.hooks`, started here: they wait for the object, not for the outbox).
#[allow(clippy::too_many_arguments)]
pub fn s3_transfer(
    config: &LoadedConfig,
    download: &DownloadSettings,
    transfer: &TransferSettings,
    opener: OpenerFactory,
    results: Option<ResultsFactory>,
    stats: Arc<DownloadStats>,
    s3_stats: Arc<S3Stats>,
    cancel: &CancellationToken,
) -> anyhow::Result<DownloadSummary> {
    let client = Arc::new(S3Client::new(
        &transfer.s3,
        &transfer.bucket,
        download.connect_timeout,
    )?);
    let outbox = transfer.outbox();
    let sink_cancel = cancel.clone();
    let hook_stats = Arc::clone(&stats);
    let mut hook_runner = None;
    let summary = download_into(
        config,
        download,
        opener,
        None,
        stats,
        cancel,
        |mut reassembler| {
            // Files leave the outbox once their object is confirmed (or their hook ran).
            reassembler.treat_output_as_transient();
            // The bucket before Kafka: a wrong bucket or secret fails in one line at start.
            check_bucket(&client, &transfer.s3, download.connect_timeout)?;
            let journal = Arc::new(Journal::open(&transfer.state_root.join("multipart"))?);
            journal.abort_leftovers(&client)?;
            // Started after download_into took the state folder's lock.
            let results = results.map(|connect| connect()).transpose()?;
            let (hooks, runner) = hooks::start(
                &transfer.state_root.join("hooks.jsonl"),
                &transfer.hooks,
                &outbox,
                &download.topic,
                &hook_stats,
                results,
            )?;
            hook_runner = runner;
            let streams = Streams::new(
                Arc::clone(&client),
                Arc::clone(&journal),
                transfer.part_size,
                sink_cancel.clone(),
            );
            let uploader = Uploader {
                client: Arc::clone(&client),
                journal,
                keys: KeyLayout::new(&download.topic, transfer.key_prefix.as_deref()),
                part_size: transfer.part_size,
                stats: s3_stats,
                failed_dir: transfer.state_root.join("failed-uploads"),
                cancel: sink_cancel,
                hooks: hooks.map(std::cell::RefCell::new),
            };
            let left = drain_outbox(&outbox, &uploader)?;
            if left > 0 {
                info!(
                    files = left,
                    "files the previous run had rebuilt are in the bucket now"
                );
            }
            Ok(S3Sink {
                inner: reassembler,
                outbox,
                uploader,
                streams,
            })
        },
    );
    // The sink (and with it the hook log's sender) is gone: the runner finishes the commands
    // due, then ends.
    if let Some(handle) = hook_runner {
        if handle.join().is_err() {
            tracing::warn!("the hook thread panicked; commands still due run at the next start");
        }
    }
    summary
}

/// What `manage-service install` checks before installing an s3-transfer service: the bucket
/// of `settings` answers, as [`check_bucket`] (the same line as at the command's start).
pub fn check_bucket_answers(
    settings: &S3Settings,
    bucket: &str,
    connect_timeout: Duration,
) -> anyhow::Result<()> {
    let client = S3Client::new(settings, bucket, connect_timeout)?;
    check_bucket(&client, settings, connect_timeout)
}

/// Lists the bucket once: a missing bucket, a refused key or secret, or a server that does
/// not answer within the connect timeout is one line naming what to fix.
fn check_bucket(
    client: &S3Client,
    settings: &S3Settings,
    connect_timeout: Duration,
) -> anyhow::Result<()> {
    let endpoint = settings.endpoint.as_str().trim_end_matches('/');
    let bucket = client.bucket();
    match client.check_bucket() {
        Ok(()) => Ok(()),
        Err(S3Error::Transport { reason, .. }) => Err(anyhow::anyhow!(
            "the S3 server at {endpoint} did not answer within --connect-timeout {} s ({reason}): check endpoint_url in the config's [s3] section and that the server is running",
            connect_timeout.as_secs()
        )),
        Err(e) => {
            let refusal = match e.code() {
                Some("NoSuchBucket") | Some("NoSuchKey") => format!(
                    "bucket {bucket:?} does not exist on {endpoint}: create it, or check the BUCKET argument"
                ),
                Some("SignatureDoesNotMatch") => format!(
                    "the S3 server at {endpoint} refused the request signature: the secret key is wrong; check {}",
                    settings.secret_origin
                ),
                Some("InvalidAccessKeyId") => format!(
                    "the S3 server at {endpoint} does not know access key {:?}: check access_key_id in the config's [s3] section",
                    settings.access_key_id
                ),
                Some("AccessDenied") => format!(
                    "access to bucket {bucket:?} on {endpoint} is denied for access key {:?}: give it access to the bucket",
                    settings.access_key_id
                ),
                _ if e.status() == Some(404) => format!(
                    "bucket {bucket:?} does not exist on {endpoint}: create it, or check the BUCKET argument"
                ),
                _ => format!("the S3 server at {endpoint} refused to list bucket {bucket:?}: {e}"),
            };
            Err(anyhow::anyhow!(refusal))
        }
    }
}
