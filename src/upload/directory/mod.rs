//! `openmsi upload-directory`: a drop box. Every file that appears or changes under the
//! folder, recursively, is uploaded once it has settled (size and mtime unchanged for the
//! settle time), through the same upload path as `upload-file`, several files at once.
//!
//! One loop thread owns all decisions: it takes filesystem events ([`watch`]) and periodic full
//! scans ([`scan`], the source of truth), applies the settle rule ([`settle`]), hands settled
//! files to a few upload workers through a bounded queue ([`worker`]), and records each file
//! version the broker fully acknowledged in the registry ([`registry`]), which a restart reads
//! so nothing complete is sent twice and nothing unacknowledged is lost. The acknowledged
//! chunks of unfinished files are saved about once a second ([`resume`]), so a restart after
//! a crash sends only the chunks the broker does not have.

pub mod migrate;
pub mod open_files;
pub mod registry;
pub mod resume;
pub mod scan;
pub mod settle;
pub mod watch;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use regex::Regex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::chunk::{ChunkSize, WireFields};
use crate::config::LoadedConfig;
use crate::kafka::client::client_config;
use crate::kafka::producer_defaults;
use crate::kafka::telemetry::{self, TelemetrySettings};
use crate::kafka::ChunkProducer;
use crate::progress::mb_per_s;
use crate::state::StateDir;
use crate::upload::send::{max_message_bytes, SendOptions};
use registry::{Entry, EntryState, Registry};
use resume::ResumeState;
use scan::{Filter, Seen};
use settle::{Ready, Settler};
use worker::{Done, Outcome, WorkerContext};

/// Room for events between loop iterations; when it is full the watcher asks for a full scan
/// instead of blocking (see `watch`).
const EVENT_QUEUE: usize = 8192;

/// Longest wait for a message before the loop does its periodic work.
const TICK: Duration = Duration::from_millis(100);

/// How often the acknowledged chunks of unfinished files are saved: what a crash can cost is
/// re-sending about this long's worth of chunks; one small fsynced rewrite per period.
const SAVE_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A file that could not be sent is tried again after this long (or as soon as it changes).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(60);

/// Scan period in `--poll` mode when `--rescan-seconds` is not given: scans are then the only
/// way to see new files, so they must be frequent.
const POLL_RESCAN: Duration = Duration::from_secs(2);

/// Scan period with events when `--rescan-seconds` is not given: only a safety net.
const EVENT_RESCAN: Duration = Duration::from_secs(30);

/// Validated settings.
#[derive(Debug, Clone)]
pub struct UploadDirectorySettings {
    /// The folder to watch.
    pub dir: PathBuf,
    /// Destination topic.
    pub topic: String,
    /// Bytes per chunk.
    pub chunk_size: ChunkSize,
    /// 9 or 10 fields per message.
    pub wire_fields: WireFields,
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
            last_sample: Mutex::new((Instant::now(), 0)),
        }
    }
}

impl DirectoryStats {
    /// One status line; the rate is over the time since the previous status line.
    pub fn status_line(&self) -> String {
        let bytes = self.acked_bytes.load(Ordering::Acquire);
        let (rate, window) = {
            let mut last = self
                .last_sample
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
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
}

/// Messages to the loop.
#[derive(Debug)]
pub enum Msg {
    /// Paths the filesystem says changed.
    Paths(Vec<PathBuf>),
    /// Events were lost: scan everything.
    Rescan,
    /// Events no longer cover the folder (an inotify limit was reached): poll instead.
    EventsIncomplete,
    /// A worker finished a file.
    Done(Box<Done>),
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
    let state_dir = StateDir::create(&root).context("creating the state folder")?;
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

    let cfg = client_config(
        &config.producer_properties(),
        &producer_defaults(max_message_bytes(settings.chunk_size.get(), None)),
        &[],
    );
    let (producer, topic) =
        ChunkProducer::connect(&cfg, config, &settings.topic, settings.connect_timeout)?;
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
            hash_threads: 1,
        },
        delivery_timeout: settings.delivery_timeout,
        resume: Arc::clone(&progress),
    };
    let workers = settings.concurrent_uploads.max(1);
    // Two ready files per worker: enough that a worker never waits for the loop, few enough
    // that a burst of thousands stays in the (cheap) settle map rather than in queues.
    let (job_tx, job_rx) = mpsc::sync_channel::<Ready>(workers * 2);
    let job_rx = Mutex::new(job_rx);

    let mut state = LoopState {
        filter: Filter {
            root: root.clone(),
            regex: settings.upload_regex.clone(),
            // OpenMSIStream's own state folder, when a lab switched from it.
            skip_top: migrate::has_reference_state(&root)
                .then(|| migrate::REFERENCE_LOG_DIR.to_string()),
        },
        registry,
        progress,
        settler: Settler::default(),
        open_for_writing: HashSet::new(),
        writers_checked: None,
        in_flight: HashSet::new(),
        failed: HashMap::new(),
        unreadable_reported: HashSet::new(),
        rescan,
        last_scan: Instant::now(),
        upload_existing: settings.upload_existing,
        stats: Arc::clone(&stats),
        files_sent: 0,
    };

    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (ctx, job_rx, results) = (&ctx, &job_rx, tx.clone());
                scope.spawn(move || worker::run(ctx, job_rx, &results, cancel))
            })
            .collect();
        drop(tx);
        let events = watcher.is_some();
        let result = state
            .import_reference(&settings.topic)
            .and_then(|()| state.run(&rx, &job_tx, settings, rescan, events, cancel));
        // Stop: no new files; in-flight ones finish or are interrupted by the workers.
        drop(job_tx);
        drop(watcher);
        while !handles.iter().all(|h| h.is_finished()) {
            match rx.recv_timeout(TICK) {
                Ok(msg) => state.handle_batch(vec![msg])?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let rest: Vec<Msg> = rx.try_iter().collect();
        state.handle_batch(rest)?;
        state.save_progress()?;
        result
    })?;
    // Every file was waited for individually; this only settles librdkafka's bookkeeping.
    let _ = producer.wait_for_deliveries(
        Duration::from_secs(10),
        &CancellationToken::new(),
        &mut |_| {},
    );
    state.publish_counts();
    telemetry_stop.cancel();
    if let Some(handle) = telemetry {
        let _ = handle.join();
    }
    Ok(UploadDirectorySummary {
        files_sent: state.files_sent,
        files_failed: state.failed.len() as u64,
        bytes: producer.tracker().delivered_bytes(),
        elapsed: started.elapsed(),
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

/// Everything the loop decides with.
struct LoopState {
    filter: Filter,
    registry: Registry,
    /// Acknowledged chunks of unfinished files (shared with the workers).
    progress: Arc<Mutex<ResumeState>>,
    settler: Settler,
    /// Files some process held open for writing at the last check (not ready while open).
    open_for_writing: HashSet<open_files::FileId>,
    /// When `open_for_writing` was listed.
    writers_checked: Option<Instant>,
    /// Files handed to workers and not yet reported back.
    in_flight: HashSet<String>,
    /// Failing files: the (size, mtime) that failed and when to try again.
    failed: HashMap<String, (u64, f64, Instant)>,
    /// Unreadable files already warned about (warned once, not at every scan).
    unreadable_reported: HashSet<String>,
    /// Full-scan period.
    rescan: Duration,
    /// When the last full scan started.
    last_scan: Instant,
    upload_existing: bool,
    stats: Arc<DirectoryStats>,
    files_sent: u64,
}

impl LoopState {
    fn run(
        &mut self,
        rx: &Receiver<Msg>,
        jobs: &SyncSender<Ready>,
        settings: &UploadDirectorySettings,
        rescan: Duration,
        events: bool,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        self.initial_scan()?;
        // Logged after the first scan: from here on, every new file counts as new.
        info!(folder = %self.filter.root.display(), topic = %settings.topic, events, rescan_s = rescan.as_secs_f64(), settle_s = settings.settle.as_secs_f64(), registry_entries = self.registry.len(), "watching");
        let settle_check = settle_round(settings.settle);
        self.last_scan = Instant::now();
        self.rescan = rescan;
        let poll_rescan = settings.rescan.unwrap_or(POLL_RESCAN);
        let mut last_settle_check = Instant::now() - settle_check;
        let mut last_alive = Instant::now();
        let mut last_save = Instant::now();
        let mut rescan_requested = false;
        while !cancel.is_cancelled() {
            let mut batch = Vec::new();
            match rx.recv_timeout(TICK) {
                Ok(msg) => batch.push(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            batch.extend(rx.try_iter().take(EVENT_QUEUE));
            for msg in &batch {
                match msg {
                    Msg::Rescan => rescan_requested = true,
                    Msg::EventsIncomplete if self.rescan > poll_rescan => {
                        self.rescan = poll_rescan;
                        rescan_requested = true;
                        warn!(rescan_s = poll_rescan.as_secs_f64(), "file events no longer cover the whole folder: polling with full scans from now on");
                    }
                    _ => {}
                }
            }
            self.handle_batch(batch)?;
            if rescan_requested || Instant::now() >= self.next_scan() {
                rescan_requested = false;
                self.last_scan = Instant::now();
                let now = Instant::now();
                for seen in self.filter.scan(&self.filter.root.clone()) {
                    self.consider(seen, now);
                }
            }
            if last_settle_check.elapsed() >= settle_check {
                last_settle_check = Instant::now();
                self.recheck_waiting();
            }
            // Every iteration, not only after a settle check: a worker that just finished
            // (a message woke us) should get the next settled file at once.
            self.dispatch(jobs, settings.settle);
            self.publish_counts();
            if last_save.elapsed() >= SAVE_PROGRESS_EVERY {
                last_save = Instant::now();
                self.save_progress()?;
            }
            if let Some(every) = settings.update_every {
                if last_alive.elapsed() >= every {
                    last_alive = Instant::now();
                    info!(status = %self.stats.status_line(), "upload-directory is running");
                }
            }
        }
        Ok(())
    }

    /// On a first start, files OpenMSIStream recorded as uploaded to this topic count as sent
    /// (at their current size and mtime: the reference keeps neither).
    fn import_reference(&mut self, topic: &str) -> anyhow::Result<()> {
        if self.registry.existed() {
            return Ok(());
        }
        let completed = migrate::reference_completed(&self.filter.root, topic)
            .context("reading OpenMSIStream's upload registry in LOGS/")?;
        if completed.is_empty() {
            return Ok(());
        }
        let at = unix_now();
        let entries: Vec<Entry> = completed
            .iter()
            .filter_map(|rel| {
                let path = self.filter.root.join(rel);
                let meta = std::fs::symlink_metadata(&path).ok()?;
                let seen = self.filter.inspect(&path, &meta)?;
                Some(Entry {
                    path: seen.relative,
                    size: seen.size,
                    mtime: seen.mtime,
                    sha512: None,
                    state: EntryState::Sent,
                    at,
                })
            })
            .collect();
        info!(
            listed = completed.len(),
            present = entries.len(),
            "imported OpenMSIStream's registry: these files count as uploaded"
        );
        self.registry
            .append(entries)
            .context("writing the upload registry")
    }

    /// The first scan. On a first start without `--upload-existing`, what is already there is
    /// recorded as existing (so a later restart can tell "there before" from "arrived while
    /// stopped").
    fn initial_scan(&mut self) -> anyhow::Result<()> {
        let seen = self.filter.scan(&self.filter.root.clone());
        if !self.registry.existed() && !self.upload_existing {
            let at = unix_now();
            let entries = seen
                .iter()
                .map(|s| Entry {
                    path: s.relative.clone(),
                    size: s.size,
                    mtime: s.mtime,
                    sha512: None,
                    state: EntryState::Existing,
                    at,
                })
                .collect();
            self.registry
                .append(entries)
                .context("writing the upload registry")?;
            info!(
                files = seen.len(),
                "first start: files already present are left alone (use --upload-existing to send them)"
            );
        }
        let now = Instant::now();
        for s in seen {
            self.consider(s, now);
        }
        Ok(())
    }

    /// Takes a file observation into account.
    fn consider(&mut self, seen: Seen, now: Instant) {
        if self.in_flight.contains(&seen.relative) {
            // Looked at again when its worker reports.
            return;
        }
        if let Some(entry) = self.registry.get(&seen.relative) {
            let same = entry.size == seen.size && entry.mtime == seen.mtime;
            let counts = entry.state == EntryState::Sent || !self.upload_existing;
            if same && counts {
                self.settler.remove(&seen.relative);
                return;
            }
        }
        if let Some(&(size, mtime, retry_at)) = self.failed.get(&seen.relative) {
            if size == seen.size && mtime == seen.mtime && now < retry_at {
                return;
            }
            self.failed.remove(&seen.relative);
        }
        self.settler.observe(seen, now);
    }

    /// Looks at one path again (after an event or a finished upload).
    fn look_at(&mut self, path: &std::path::Path, now: Instant) {
        let Some(relative) = self.filter.relative(path) else {
            return;
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                // A new or moved-in folder: its files may predate the watch on it.
                for seen in self.filter.scan(path) {
                    self.consider(seen, now);
                }
            }
            Ok(meta) => match self.filter.inspect(path, &meta) {
                Some(seen) => self.consider(seen, now),
                None => self.settler.remove(&relative),
            },
            // Deleted: nothing is sent.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.settler.remove(&relative),
            Err(_) => {}
        }
    }

    fn handle_batch(&mut self, batch: Vec<Msg>) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut done = Vec::new();
        let mut paths = Vec::new();
        for msg in batch {
            match msg {
                Msg::Paths(p) => paths.extend(p),
                Msg::Rescan | Msg::EventsIncomplete => {}
                Msg::Done(d) => done.push(*d),
            }
        }
        // Record acknowledged files first (one fsync for the batch), so looking at their
        // paths again sees them as sent.
        let at = unix_now();
        let entries: Vec<Entry> = done
            .iter()
            .filter_map(|d| match &d.outcome {
                Outcome::Sent { sha512 } => Some(Entry {
                    path: d.file.relative.clone(),
                    size: d.file.size,
                    mtime: d.file.mtime,
                    sha512: Some(sha512.clone()),
                    state: EntryState::Sent,
                    at,
                }),
                _ => None,
            })
            .collect();
        self.registry
            .append(entries)
            .context("recording uploaded files in the registry")?;
        for d in &done {
            let mut progress = self.lock_progress();
            match d.outcome {
                // Recorded above, or useless (the file changed).
                Outcome::Sent { .. } | Outcome::Changed => progress.forget(&d.file.relative),
                Outcome::Interrupted | Outcome::Failed(_) | Outcome::PermissionDenied => {
                    progress.end(&d.file.relative)
                }
            }
        }
        for d in done {
            self.in_flight.remove(&d.file.relative);
            match d.outcome {
                Outcome::Sent { .. } => {
                    if self.unreadable_reported.remove(&d.file.relative) {
                        info!(path = %d.file.relative, "readable again");
                    }
                    self.files_sent += 1;
                    self.stats.done.fetch_add(1, Ordering::AcqRel);
                    self.stats
                        .acked_bytes
                        .fetch_add(d.file.size, Ordering::AcqRel);
                    info!(path = %d.file.relative, bytes = d.file.size, "uploaded");
                }
                Outcome::Changed | Outcome::Interrupted => {}
                Outcome::PermissionDenied => {
                    let retry_in = self.next_scan().saturating_duration_since(now);
                    let first = self.unreadable_reported.insert(d.file.relative.clone());
                    if first {
                        warn!(path = %d.file.path.display(), retry_in_s = retry_in.as_secs(), "permission denied: this user cannot read the file, so it is skipped (other files are not held up). Give the user running openmsi read access (e.g. `chmod o+r FILE`, or add the user to the file's group); it is tried again at every scan");
                    } else {
                        debug!(path = %d.file.relative, "still not readable");
                    }
                    self.failed.insert(
                        d.file.relative.clone(),
                        (d.file.size, d.file.mtime, now + retry_in),
                    );
                }
                Outcome::Failed(reason) => {
                    warn!(path = %d.file.relative, %reason, retry_in_s = RETRY_FAILED_AFTER.as_secs(), "upload failed; skipped for now");
                    self.failed.insert(
                        d.file.relative.clone(),
                        (d.file.size, d.file.mtime, now + RETRY_FAILED_AFTER),
                    );
                }
            }
            self.look_at(&d.file.path, now);
        }
        for path in paths {
            self.look_at(&path, now);
        }
        Ok(())
    }

    /// Stats every waiting file again, so its settle clock sees changes events may not report.
    fn recheck_waiting(&mut self) {
        let now = Instant::now();
        for (_, path) in self.settler.waiting() {
            self.look_at(&path, now);
        }
    }

    /// Hands settled files to the workers while the bounded queue has room.
    fn dispatch(&mut self, jobs: &SyncSender<Ready>, settle: Duration) {
        let ready = self.settler.settled(settle, Instant::now());
        if ready.is_empty() {
            return;
        }
        // One pass over /proc per settle round, however many files are ready.
        if self
            .writers_checked
            .is_none_or(|at| at.elapsed() >= settle_round(settle))
        {
            self.open_for_writing = open_files::open_for_writing(&self.filter.root);
            self.writers_checked = Some(Instant::now());
        }
        for ready in ready {
            if self.open_for_writing.contains(&ready.id) {
                if self.settler.note_open(&ready.relative) {
                    info!(path = %ready.relative, "unchanged, but another process holds it open for writing: uploaded once it is closed");
                }
                continue;
            }
            let relative = ready.relative.clone();
            match jobs.try_send(ready) {
                Ok(()) => {
                    self.settler.remove(&relative);
                    self.in_flight.insert(relative);
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => break,
            }
        }
    }

    /// When the next periodic full scan is due.
    fn next_scan(&self) -> Instant {
        self.last_scan + self.rescan
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, ResumeState> {
        resume::lock(&self.progress)
    }

    /// Saves the acknowledged chunks of unfinished files (when they changed).
    fn save_progress(&self) -> anyhow::Result<()> {
        self.lock_progress()
            .save()
            .context("saving the progress of unfinished uploads")
    }

    fn publish_counts(&self) {
        let s = &self.stats;
        s.waiting
            .store(self.settler.len() as u64, Ordering::Release);
        s.in_progress
            .store(self.in_flight.len() as u64, Ordering::Release);
        s.failed.store(self.failed.len() as u64, Ordering::Release);
    }
}

/// How often waiting files are looked at again (and, when some are ready, open files listed).
fn settle_round(settle: Duration) -> Duration {
    (settle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Throughput helper for the summary line.
pub fn summary_rate(summary: &UploadDirectorySummary) -> f64 {
    mb_per_s(summary.bytes, summary.elapsed)
}
