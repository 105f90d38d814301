//! `openmsi upload-directory`: a drop box. Every file that appears or changes under the
//! folder, recursively, is uploaded once it has settled (size and mtime unchanged for the
//! settle time), through the same upload path as `upload-file`, several files at once.
//!
//! One loop thread ([`dropbox`]) owns all decisions: it takes filesystem events ([`watch`]) and
//! periodic full scans ([`scan`], the source of truth), applies the settle rule ([`settle`]) and
//! the closed check ([`open_files`]), hands settled files to a few upload workers through a
//! bounded queue ([`worker`]; they report back as [`message::Msg`]), and records each file
//! version the broker fully acknowledged in the registry ([`registry`]), which a restart reads
//! so nothing complete is sent twice and nothing unacknowledged is lost. The acknowledged
//! chunks of unfinished files are saved about once a second ([`resume`]), so a restart after
//! a crash sends only the chunks the broker does not have. On a first start, [`migrate`] takes
//! over OpenMSIStream's own registry of uploaded files.

pub mod dropbox;
pub mod message;
pub mod migrate;
pub mod open_files;
pub mod registry;
pub mod resume;
pub mod scan;
pub mod settle;
pub mod watch;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use regex::Regex;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::chunk::{ChunkSize, WireFields};
use crate::config::LoadedConfig;
use crate::kafka::telemetry::{self, TelemetrySettings};
use crate::metrics::{Exposition, Histogram};
use crate::progress::{self, Activity};
use crate::state::StateDir;
use crate::sync::SharedReceiver;
use crate::upload::send::{connect_producer, SendOptions};
use dropbox::{Dropbox, LoopSettings, ProcScan, SystemClock, EVENT_RESCAN, POLL_RESCAN};
use message::{Msg, EVENT_QUEUE};
use registry::{EntryState, Registry};
use resume::ResumeState;
use scan::Filter;
use settle::Ready;
use worker::WorkerContext;

/// Validated settings.
#[derive(Debug, Clone)]
pub struct UploadDirectorySettings {
    /// The folder to watch.
    pub dir: PathBuf,
    /// Where the registry, lock and log live (`--state-dir`); None: `dir/.openmsi`.
    pub state_dir: Option<PathBuf>,
    /// Seconds between progress lines in a log for a file still moving.
    pub progress_every: Duration,
    /// Destination topic.
    pub topic: String,
    /// Bytes per chunk.
    pub chunk_size: ChunkSize,
    /// 9 or 10 fields per message.
    pub wire_fields: WireFields,
    /// Message layout (`--format`).
    pub format: crate::chunk::MessageFormat,
    /// Also upload files present at the first start.
    pub upload_existing: bool,
    /// Only relative paths matching this are uploaded.
    pub upload_regex: Option<Regex>,
    /// How long size and mtime must stay unchanged.
    pub settle: Duration,
    /// Full-scan period (None: the default for the mode).
    pub rescan: Option<Duration>,
    /// No filesystem events: scans only (network shares).
    pub poll: bool,
    /// Files uploaded at once.
    pub concurrent_uploads: usize,
    /// Bound on waiting for the broker at start.
    pub connect_timeout: Duration,
    /// Bound on waiting for one file's acknowledgements.
    pub delivery_timeout: Duration,
    /// Period of the "still alive" log line (None: off).
    pub update_every: Option<Duration>,
    /// Heartbeat and log topics.
    pub telemetry: TelemetrySettings,
    /// Hosts every file is addressed to (None: every host).
    pub envelopes: crate::upload::envelopes::Envelopes,
}

/// Live counters, for `check` and the alive line.
#[derive(Debug)]
pub struct DirectoryStats {
    /// Files seen but not yet settled (or waiting for a free worker).
    pub waiting: AtomicU64,
    /// Files being uploaded.
    pub in_progress: AtomicU64,
    /// Files fully acknowledged this run.
    pub done: AtomicU64,
    /// Files that currently fail (retried later).
    pub failed: AtomicU64,
    /// File bytes acknowledged this run.
    pub acked_bytes: AtomicU64,
    /// Upload attempts that failed this run (each is retried later).
    pub failures: AtomicU64,
    /// Per file sent: from when it was ready (closed, or settled) to its last acknowledgement.
    pub ready_to_acknowledged: Histogram,
    /// The previous status sample (time, bytes), for a current rate rather than a lifetime one.
    last_sample: Mutex<(Instant, u64)>,
}

impl Default for DirectoryStats {
    fn default() -> Self {
        Self {
            waiting: AtomicU64::new(0),
            in_progress: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ready_to_acknowledged: Histogram::default(),
            last_sample: Mutex::new((Instant::now(), 0)),
        }
    }
}

impl DirectoryStats {
    /// The families of a metrics scrape (see [`crate::metrics`]).
    pub fn write_metrics(&self, out: &mut Exposition) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.counter(
            "openmsi_files_uploaded_total",
            "Files whose every chunk the broker acknowledged.",
            get(&self.done),
        );
        out.counter(
            "openmsi_bytes_uploaded_total",
            "File bytes acknowledged.",
            get(&self.acked_bytes),
        );
        out.counter(
            "openmsi_upload_failures_total",
            "Upload attempts that failed (each file is tried again later).",
            get(&self.failures),
        );
        crate::metrics::write_failures(out, &[("upload", get(&self.failures))]);
        out.gauge(
            "openmsi_files_waiting",
            "Files seen but not yet complete (settling, or waiting for a free worker).",
            get(&self.waiting) as f64,
        );
        out.gauge(
            "openmsi_files_uploading",
            "Files being uploaded.",
            get(&self.in_progress) as f64,
        );
        out.gauge(
            "openmsi_files_failing",
            "Files whose last attempt failed, waiting to be tried again.",
            get(&self.failed) as f64,
        );
        self.ready_to_acknowledged.write(
            out,
            "openmsi_upload_close_to_acknowledged_seconds",
            "Per file: seconds from when it was complete (closed, or settled) to its last \
             acknowledgement.",
        );
    }

    /// One status line; the rate is over the time since the previous status line.
    pub fn status_line(&self) -> String {
        let bytes = self.acked_bytes.load(Ordering::Acquire);
        let (rate, window) = {
            let mut last = crate::sync::lock(&self.last_sample);
            let window = last.0.elapsed();
            let rate = (bytes.saturating_sub(last.1)) as f64 / window.as_secs_f64().max(1e-3);
            *last = (Instant::now(), bytes);
            (rate, window)
        };
        format!(
            "files: {} waiting, {} in progress, {} done, {} failed; {:.0} bytes/s ({:.1} MB/s) over the last {:.1} s; {} bytes sent since start",
            self.waiting.load(Ordering::Acquire),
            self.in_progress.load(Ordering::Acquire),
            self.done.load(Ordering::Acquire),
            self.failed.load(Ordering::Acquire),
            rate,
            rate / 1e6,
            window.as_secs_f64(),
            bytes,
        )
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct UploadDirectorySummary {
    /// Files fully acknowledged this run.
    pub files_sent: u64,
    /// Files failing when it stopped.
    pub files_failed: u64,
    /// File bytes acknowledged.
    pub bytes: u64,
    /// Run time.
    pub elapsed: Duration,
    /// Time acknowledgements were arriving (the run time less its idle pauses).
    pub active: Duration,
}

/// Runs until `cancel` fires, then lets in-flight files finish (bounded), flushes and returns.
pub fn upload_directory(
    config: &LoadedConfig,
    settings: &UploadDirectorySettings,
    stats: Arc<DirectoryStats>,
    cancel: &CancellationToken,
) -> anyhow::Result<UploadDirectorySummary> {
    let started = Instant::now();
    let root = open_root(&settings.dir)?;
    let state_dir = state_folder(&root, settings.state_dir.as_deref())?;
    // Held until return: a second upload-directory on this folder would share the registry.
    let _lock = state_dir.lock(&settings.dir, "upload-directory")?;
    let registry =
        Registry::open(&state_dir.upload_registry()).context("opening the upload registry")?;
    let mut progress =
        ResumeState::open(&state_dir.upload_progress()).context("opening the progress file")?;
    // Entries the registry already covers (a crash between the two writes) or whose file is
    // gone are of no use.
    progress.retain(|relative, size, mtime| {
        let done = registry
            .get(relative)
            .is_some_and(|e| e.state == EntryState::Sent && e.size == size && e.mtime == mtime);
        !done && root.join(relative).exists()
    });
    if !progress.is_empty() {
        info!(files = progress.len(), "unfinished uploads from the previous run: chunks the broker acknowledged are not sent again");
    }
    let progress = Arc::new(Mutex::new(progress));

    let (producer, topic) = connect_producer(
        config,
        &settings.topic,
        settings.chunk_size,
        settings.envelopes.get(),
        settings.connect_timeout,
    )?;
    let producer = Arc::new(producer);
    // Stopped only after the last flush, so the final heartbeat counts everything.
    let telemetry_stop = CancellationToken::new();
    let totals_producer = Arc::clone(&producer);
    let telemetry = telemetry::spawn(
        config,
        settings.telemetry.clone(),
        Arc::new(move || {
            let t = totals_producer.tracker();
            vec![
                ("n_messages_produced", t.delivered()),
                ("n_bytes_produced", t.delivered_bytes()),
            ]
        }),
        telemetry_stop.clone(),
    )?;

    let (tx, rx) = mpsc::sync_channel::<Msg>(EVENT_QUEUE);
    let watcher = if settings.poll {
        None
    } else {
        watch::start(&root, tx.clone())
    };
    let rescan = settings.rescan.unwrap_or(if watcher.is_some() {
        EVENT_RESCAN
    } else {
        POLL_RESCAN
    });

    let ctx = WorkerContext {
        producer: Arc::clone(&producer),
        partitions: topic.partitions,
        root: root.clone(),
        options: SendOptions {
            chunk_size: settings.chunk_size,
            wire_fields: settings.wire_fields,
            format: settings.format,
            hash_threads: 1,
        },
        delivery_timeout: settings.delivery_timeout,
        resume: Arc::clone(&progress),
        envelopes: settings.envelopes.clone(),
        activity: Arc::new(Activity::default()),
    };
    // Files that take more than a moment show with their bytes and rate until they are done.
    let _display = progress::spawn_display(Arc::clone(&ctx.activity), settings.progress_every);
    let workers = settings.concurrent_uploads.max(1);
    // Sixteen ready files per worker: a worker queues a small file in well under a millisecond
    // and does not wait for its acknowledgement, so the queue must hold what they take between
    // two wake-ups of the loop; few enough that a burst of thousands stays in the (cheap)
    // settle map rather than in queues.
    let (job_tx, job_rx) = mpsc::sync_channel::<Ready>(workers * 16);
    let job_rx = SharedReceiver::new(job_rx);
    // Queued files on their way to the acknowledgement waiter (which holds the rest).
    let (ack_tx, ack_rx) = mpsc::sync_channel::<worker::InFlight>(workers);

    let loop_settings = LoopSettings {
        topic: settings.topic.clone(),
        settle: settings.settle,
        rescan,
        poll_rescan: settings.rescan.unwrap_or(POLL_RESCAN),
        events: watcher.is_some(),
        upload_existing: settings.upload_existing,
        update_every: settings.update_every,
    };
    let filter = Filter {
        root: root.clone(),
        regex: settings.upload_regex.clone(),
        // OpenMSIStream's own state folder, when a lab switched from it.
        skip_top: migrate::has_reference_state(&root)
            .then(|| migrate::REFERENCE_LOG_DIR.to_string()),
    };
    let mut dropbox = Dropbox::new(
        loop_settings,
        Box::new(SystemClock),
        Box::new(ProcScan),
        filter,
        registry,
        progress,
        Arc::clone(&stats),
    );

    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles: Vec<_> = (0..workers)
            .map(|_| {
                let (ctx, job_rx, acks, results) = (&ctx, &job_rx, ack_tx.clone(), tx.clone());
                scope.spawn(move || worker::run(ctx, job_rx, &acks, &results, cancel))
            })
            .collect();
        drop(ack_tx);
        let (ctx_ref, results) = (&ctx, tx.clone());
        handles
            .push(scope.spawn(move || worker::wait_for_acks(ctx_ref, &ack_rx, &results, cancel)));
        drop(tx);
        let result = dropbox
            .import_reference(&settings.topic)
            .and_then(|()| dropbox.run(&rx, &job_tx, cancel));
        // Stop: no new files; in-flight ones finish or are interrupted by the workers.
        drop(job_tx);
        drop(watcher);
        while !handles.iter().all(|h| h.is_finished()) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(msg) => dropbox.handle_batch(vec![msg])?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        dropbox.finish(rx.try_iter().collect())?;
        Ok(result?)
    })?;
    // Every file was waited for individually; this only settles librdkafka's bookkeeping.
    let _ = producer.wait_for_deliveries(
        Duration::from_secs(10),
        &CancellationToken::new(),
        &mut |_| {},
    );
    telemetry_stop.cancel();
    if let Some(handle) = telemetry {
        let _ = handle.join();
    }
    Ok(UploadDirectorySummary {
        files_sent: dropbox.files_sent(),
        files_failed: dropbox.files_failing(),
        bytes: producer.tracker().delivered_bytes(),
        elapsed: started.elapsed(),
        active: producer.tracker().active_time(),
    })
}

/// The watched folder, canonical, with a clear error when it is missing or unreadable.
fn open_root(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let root = dir.canonicalize().with_context(|| {
        format!(
            "the folder to watch, {}, does not exist or cannot be reached",
            dir.display()
        )
    })?;
    if !root.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    std::fs::read_dir(&root).with_context(|| {
        format!(
            "cannot read the folder {} (check its permissions for this user)",
            dir.display()
        )
    })?;
    Ok(root)
}

/// The state folder of the watched folder `root`: `--state-dir` (outside the folder, or its
/// files would be uploaded) or `root/.openmsi`, created when missing.
fn state_folder(root: &Path, chosen: Option<&Path>) -> anyhow::Result<StateDir> {
    if let Some(chosen) = chosen {
        crate::state::refuse_inside(chosen, root, "the watched folder")?;
    }
    StateDir::located(root, chosen).ensure().map_err(|e| {
        let hint = if chosen.is_none() && crate::state::is_unwritable(&e) {
            " (for a folder this user may only read, keep openmsi's state elsewhere with --state-dir DIR)"
        } else {
            ""
        };
        anyhow::anyhow!("creating the state folder: {e}{hint}")
    })
}
