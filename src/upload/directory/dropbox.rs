//! upload-directory's loop: the one thread that decides. It takes filesystem events and
//! worker reports ([`Msg`]), runs the periodic full scans, applies the settle rule and the
//! "closed" check, hands settled files to the workers, records acknowledged files in the
//! registry and saves the resume state.
//!
//! Time and the open-files check come in through [`Clock`] and [`WriterCheck`], so the
//! decisions (settle, wait while open, retry after failure, keep or drop resume state) are
//! unit-tested below with a manual clock and no sleeps; [`Dropbox::step`] is one iteration.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::message::Outcome;
use super::message::{Msg, EVENT_QUEUE};
use super::migrate;
use super::open_files::{self, FileId};
use super::registry::{Entry, EntryState, Registry};
use super::resume::ResumeState;
use super::scan::{Filter, Seen};
use super::settle::{Ready, Settler};
use super::DirectoryStats;

/// Longest wait for a message before the loop does its periodic work.
const TICK: Duration = Duration::from_millis(100);

/// Ready files are handed out in pages of this many (a page is copied out of the settler; the
/// ready queue usually has room for less than one).
const DISPATCH_PAGE: usize = 32;

/// How often the acknowledged chunks of unfinished files are saved: what a crash can cost is
/// re-sending about this long's worth of chunks; one small fsynced rewrite per period.
const SAVE_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Registry lines are written as files are acknowledged and fsynced at most this often: a
/// burst of small files shares one fsync instead of paying one each. What a power loss can
/// cost is this long's worth of files sent again (a process crash costs nothing: the kernel
/// has the lines).
const SYNC_REGISTRY_EVERY: Duration = Duration::from_millis(200);

/// A file that could not be sent is tried again after this long (or as soon as it changes).
pub const RETRY_FAILED_AFTER: Duration = Duration::from_secs(60);

/// ...except after its first failures in a row: tried again after this long, doubling with each
/// failure up to [`RETRY_FAILED_AFTER`] (5, 10, 20, 40, 60 s). A broker that went away mid-file
/// (the client has moved to another broker, or replaced itself after a fatal error) costs
/// seconds, not a minute; a broker that stays down costs a few more failed attempts.
pub const RETRY_FIRST_FAILURE_AFTER: Duration = Duration::from_secs(5);

/// How long to wait after the `in_a_row`-th failure in a row of one file (1-based).
fn retry_delay(in_a_row: u32) -> Duration {
    RETRY_FIRST_FAILURE_AFTER
        .saturating_mul(1 << in_a_row.saturating_sub(1).min(5))
        .min(RETRY_FAILED_AFTER)
}

/// Scan period in `--poll` mode when `--rescan-seconds` is not given: scans are then the only
/// way to see new files, so they must be frequent.
pub const POLL_RESCAN: Duration = Duration::from_secs(2);

/// Scan period with events when `--rescan-seconds` is not given: only a safety net.
pub const EVENT_RESCAN: Duration = Duration::from_secs(30);

/// Where the loop's "now" comes from.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Which files some process holds open for writing (see [`open_files`]).
pub trait WriterCheck {
    /// Files under `root` open for writing now (one pass for every waiting file), or None
    /// where that cannot be listed (then [`WriterCheck::is_open_for_writing`] is asked).
    fn open_for_writing(&self, root: &Path) -> Option<HashSet<FileId>>;
    /// True when the one file at `path` (identity `id`) is open for writing now.
    fn is_open_for_writing(&self, path: &Path, id: FileId) -> bool;
}

/// The real check: one pass over `/proc` on Linux, nothing elsewhere.
pub struct ProcScan;

impl WriterCheck for ProcScan {
    fn open_for_writing(&self, root: &Path) -> Option<HashSet<FileId>> {
        open_files::open_for_writing(root)
    }
    fn is_open_for_writing(&self, path: &Path, id: FileId) -> bool {
        open_files::is_open_for_writing(path, id)
    }
}

/// The loop's settings.
pub struct LoopSettings {
    /// Topic, for the log.
    pub topic: String,
    /// How long size and mtime must stay unchanged.
    pub settle: Duration,
    /// Full-scan period now (shortened to `poll_rescan` when events stop covering the folder).
    pub rescan: Duration,
    /// Full-scan period when polling.
    pub poll_rescan: Duration,
    /// True when filesystem events are on.
    pub events: bool,
    /// Also upload files present at the first start.
    pub upload_existing: bool,
    /// Period of the "still alive" log line (None: off).
    pub update_every: Option<Duration>,
}

/// When periodic work last ran.
struct Timers {
    /// The last full scan started.
    scan: Instant,
    /// Waiting files were last looked at again.
    settle_check: Instant,
    /// The resume state was last saved.
    save: Instant,
    /// The registry was last fsynced.
    registry_sync: Instant,
    /// The last "still alive" line.
    alive: Instant,
}

/// The loop's own state (the registry of uploaded files, the resume state, OpenMSIStream's
/// registry on a first start) could not be read or written: the loop stops, since a file it
/// cannot record would be sent again at every start.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct StateError {
    /// What was being done.
    pub what: &'static str,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

impl StateError {
    /// Wraps an I/O error of `what` (for `map_err`).
    fn at(what: &'static str) -> impl FnOnce(std::io::Error) -> StateError {
        move |source| StateError { what, source }
    }
}

/// Everything the loop decides with.
pub struct Dropbox {
    settings: LoopSettings,
    clock: Box<dyn Clock>,
    writers: Box<dyn WriterCheck>,
    filter: Filter,
    registry: Registry,
    /// Acknowledged chunks of unfinished files (shared with the workers).
    progress: Arc<Mutex<ResumeState>>,
    settler: Settler,
    /// Files some process held open for writing at the last check (not ready while open);
    /// None where the platform asks file by file.
    open_for_writing: Option<HashSet<FileId>>,
    /// When `open_for_writing` was listed.
    writers_checked: Option<Instant>,
    /// Files handed to workers and not yet reported back.
    in_flight: HashSet<String>,
    /// Failing files: the (size, mtime) that failed and when to try again.
    failed: HashMap<String, (u64, f64, Instant)>,
    /// Failures in a row per file (cleared once it is sent), for the retry delay.
    failures_in_a_row: HashMap<String, u32>,
    /// Unreadable files already warned about (warned once, not at every scan).
    unreadable_reported: HashSet<String>,
    /// A full scan was asked for (events were lost).
    rescan_requested: bool,
    timers: Timers,
    stats: Arc<DirectoryStats>,
    /// Files fully acknowledged this run.
    files_sent: u64,
}

impl Dropbox {
    /// A loop over `filter.root` with its registry and resume state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: LoopSettings,
        clock: Box<dyn Clock>,
        writers: Box<dyn WriterCheck>,
        filter: Filter,
        registry: Registry,
        progress: Arc<Mutex<ResumeState>>,
        stats: Arc<DirectoryStats>,
    ) -> Self {
        let now = clock.now();
        let settler = Settler::new(settings.settle);
        Self {
            settings,
            clock,
            writers,
            filter,
            registry,
            progress,
            settler,
            open_for_writing: None,
            writers_checked: None,
            in_flight: HashSet::new(),
            failed: HashMap::new(),
            failures_in_a_row: HashMap::new(),
            unreadable_reported: HashSet::new(),
            rescan_requested: false,
            timers: Timers {
                scan: now,
                settle_check: now,
                save: now,
                registry_sync: now,
                alive: now,
            },
            stats,
            files_sent: 0,
        }
    }

    /// Files fully acknowledged this run.
    pub fn files_sent(&self) -> u64 {
        self.files_sent
    }

    /// Files failing now (retried later).
    pub fn files_failing(&self) -> u64 {
        self.failed.len() as u64
    }

    /// Imports the reference's registry on a first start, scans, then runs until `cancel`
    /// fires or every sender is gone.
    pub fn run(
        &mut self,
        rx: &Receiver<Msg>,
        jobs: &SyncSender<Ready>,
        cancel: &CancellationToken,
    ) -> Result<(), StateError> {
        self.initial_scan()?;
        let s = &self.settings;
        // Logged after the first scan: from here on, every new file counts as new.
        info!(folder = %self.filter.root.display(), topic = %s.topic, events = s.events, rescan_s = s.rescan.as_secs_f64(), settle_s = s.settle.as_secs_f64(), registry_entries = self.registry.len(), "watching");
        crate::service::ready();
        let now = self.clock.now();
        self.timers = Timers {
            scan: now,
            // Due at once.
            settle_check: now - settle_round(s.settle),
            save: now,
            registry_sync: now,
            alive: now,
        };
        while !cancel.is_cancelled() {
            crate::service::beat();
            let mut batch = Vec::new();
            match rx.recv_timeout(TICK) {
                Ok(msg) => batch.push(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            batch.extend(rx.try_iter().take(EVENT_QUEUE));
            self.step(batch, jobs)?;
        }
        Ok(())
    }

    /// One iteration: takes `batch` into account, does the periodic work that is due, and
    /// hands settled files to `jobs` while it has room.
    pub fn step(&mut self, batch: Vec<Msg>, jobs: &SyncSender<Ready>) -> Result<(), StateError> {
        for msg in &batch {
            match msg {
                Msg::Rescan => self.rescan_requested = true,
                Msg::EventsIncomplete if self.settings.rescan > self.settings.poll_rescan => {
                    self.settings.rescan = self.settings.poll_rescan;
                    self.rescan_requested = true;
                    warn!(rescan_s = self.settings.poll_rescan.as_secs_f64(), "file events no longer cover the whole folder: polling with full scans from now on");
                }
                _ => {}
            }
        }
        self.handle_batch(batch)?;
        let now = self.clock.now();
        if self.rescan_requested || now >= self.next_scan() {
            self.rescan_requested = false;
            self.timers.scan = now;
            for seen in self.filter.scan(&self.filter.root.clone()) {
                self.consider(seen, now);
            }
        }
        self.retry_due_failures(now);
        if now.saturating_duration_since(self.timers.settle_check)
            >= settle_round(self.settings.settle)
        {
            self.timers.settle_check = now;
            self.recheck_waiting();
        }
        // Every iteration, not only after a settle check: a worker that just finished (a
        // message woke us) should get the next settled file at once.
        self.dispatch(jobs);
        self.publish_counts();
        if now.saturating_duration_since(self.timers.registry_sync) >= SYNC_REGISTRY_EVERY {
            self.timers.registry_sync = now;
            self.registry
                .sync()
                .map_err(StateError::at("recording uploaded files in the registry"))?;
        }
        if now.saturating_duration_since(self.timers.save) >= SAVE_PROGRESS_EVERY {
            self.timers.save = now;
            self.save_progress()?;
        }
        if let Some(every) = self.settings.update_every {
            if now.saturating_duration_since(self.timers.alive) >= every {
                self.timers.alive = now;
                info!(status = %self.stats.status_line(), "upload-directory is running");
            }
        }
        Ok(())
    }

    /// After the workers stopped: takes their last reports into account and saves.
    pub fn finish(&mut self, last: Vec<Msg>) -> Result<(), StateError> {
        self.handle_batch(last)?;
        self.registry
            .sync()
            .map_err(StateError::at("recording uploaded files in the registry"))?;
        self.save_progress()?;
        self.publish_counts();
        Ok(())
    }

    /// On a first start, files OpenMSIStream recorded as uploaded to this topic count as sent
    /// (at their current size and mtime: the reference keeps neither).
    pub fn import_reference(&mut self, topic: &str) -> Result<(), StateError> {
        if self.registry.existed() {
            return Ok(());
        }
        let completed = migrate::reference_completed(&self.filter.root, topic).map_err(
            StateError::at("reading OpenMSIStream's upload registry in LOGS/"),
        )?;
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
            .map_err(StateError::at("writing the upload registry"))
    }

    /// The first scan. On a first start without `--upload-existing`, what is already there is
    /// recorded as existing (so a later restart can tell "there before" from "arrived while
    /// stopped").
    fn initial_scan(&mut self) -> Result<(), StateError> {
        let seen = self.filter.scan(&self.filter.root.clone());
        if !self.registry.existed() && !self.settings.upload_existing {
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
                .map_err(StateError::at("writing the upload registry"))?;
            info!(
                files = seen.len(),
                "first start: files already present are left alone (use --upload-existing to send them)"
            );
        }
        let now = self.clock.now();
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
            let counts = entry.state == EntryState::Sent || !self.settings.upload_existing;
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
    /// Failed files whose time to try again has come are looked at now, not at the next full
    /// scan (up to --rescan-seconds later).
    fn retry_due_failures(&mut self, now: Instant) {
        let due: Vec<String> = self
            .failed
            .iter()
            .filter(|(_, (_, _, retry_at))| now >= *retry_at)
            .map(|(relative, _)| relative.clone())
            .collect();
        for relative in due {
            let path = self.filter.root.join(&relative);
            if path.exists() {
                self.look_at(&path, now);
            }
            // Still failing (changed back, unreadable) or gone: the next scan decides.
            self.failed.remove(&relative);
        }
    }

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

    pub fn handle_batch(&mut self, batch: Vec<Msg>) -> Result<(), StateError> {
        let now = self.clock.now();
        let mut done = Vec::new();
        let mut paths = Vec::new();
        let mut closed = Vec::new();
        for msg in batch {
            match msg {
                Msg::Paths(p) => paths.extend(p),
                Msg::Closed(p) => closed.extend(p),
                Msg::Rescan | Msg::EventsIncomplete => {}
                Msg::Done(d) => done.push(*d),
            }
        }
        // Record acknowledged files first (fsynced with the next few, see SYNC_REGISTRY_EVERY),
        // so looking at their paths again sees them as sent.
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
            .append_unsynced(entries)
            .map_err(StateError::at("recording uploaded files in the registry"))?;
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
                    self.failures_in_a_row.remove(&d.file.relative);
                    if self.unreadable_reported.remove(&d.file.relative) {
                        info!(path = %d.file.relative, "readable again");
                    }
                    self.files_sent += 1;
                    self.stats.done.fetch_add(1, Ordering::AcqRel);
                    self.stats
                        .acked_bytes
                        .fetch_add(d.file.size, Ordering::AcqRel);
                    self.stats
                        .ready_to_acknowledged
                        .observe(d.file.ready_at.elapsed());
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
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    let in_a_row = self
                        .failures_in_a_row
                        .entry(d.file.relative.clone())
                        .or_default();
                    *in_a_row += 1;
                    let retry_in = retry_delay(*in_a_row);
                    warn!(path = %d.file.relative, %reason, retry_in_s = retry_in.as_secs(), "upload failed; skipped for now");
                    self.failed.insert(
                        d.file.relative.clone(),
                        (d.file.size, d.file.mtime, now + retry_in),
                    );
                }
            }
            self.look_at(&d.file.path, now);
        }
        for path in paths {
            self.look_at(&path, now);
        }
        for path in closed {
            self.closed(&path, now);
        }
        Ok(())
    }

    /// A writer closed `path`: look at it, and when nobody else holds it open for writing it
    /// is ready at once (not after the settle time).
    fn closed(&mut self, path: &Path, now: Instant) {
        self.look_at(path, now);
        let Some(relative) = self.filter.relative(path) else {
            return;
        };
        if !self.settler.contains(&relative) {
            // Unchanged since it was sent, filtered out, or being sent now.
            return;
        }
        let Some(seen) = std::fs::symlink_metadata(path)
            .ok()
            .and_then(|meta| self.filter.inspect(path, &meta))
        else {
            return;
        };
        if self.writers.is_open_for_writing(path, seen.id) {
            // Another writer still has it: the settle rule and the periodic check decide.
            debug!(path = %relative, "closed by one writer, still open for writing by another");
            return;
        }
        if self.settler.note_closed(&seen, now) {
            debug!(path = %relative, "closed and nobody writes it: ready now");
        }
    }

    /// Stats every waiting file again, so its settle clock sees changes events may not report.
    fn recheck_waiting(&mut self) {
        let now = self.clock.now();
        for (_, path) in self.settler.settling(now) {
            self.look_at(&path, now);
        }
    }

    /// Hands settled files to the workers while the bounded queue has room.
    fn dispatch(&mut self, jobs: &SyncSender<Ready>) {
        let now = self.clock.now();
        // Files held open for writing stay ready and are stepped over.
        let mut held_open = 0;
        loop {
            let page = self.settler.ready(now, held_open, DISPATCH_PAGE);
            if page.is_empty() {
                return;
            }
            self.refresh_writers(&page, now);
            for ready in page {
                let open = !ready.closed
                    && match &self.open_for_writing {
                        Some(open) => open.contains(&ready.id),
                        None => self.writers.is_open_for_writing(&ready.path, ready.id),
                    };
                if open {
                    held_open += 1;
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
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => return,
                }
            }
        }
    }

    /// Lists the files open for writing again when some of `ready` settled by time (files
    /// ready because they were closed were checked one by one at the close) and the last list
    /// is older than a settle round: one pass over /proc per round, however many files.
    fn refresh_writers(&mut self, ready: &[Ready], now: Instant) {
        let round = settle_round(self.settings.settle);
        if ready.iter().any(|r| !r.closed)
            && self
                .writers_checked
                .is_none_or(|at| now.saturating_duration_since(at) >= round)
        {
            self.open_for_writing = self.writers.open_for_writing(&self.filter.root);
            self.writers_checked = Some(now);
        }
    }

    /// When the next periodic full scan is due.
    fn next_scan(&self) -> Instant {
        self.timers.scan + self.settings.rescan
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, ResumeState> {
        crate::sync::lock(&self.progress)
    }

    /// Saves the acknowledged chunks of unfinished files (when they changed).
    fn save_progress(&self) -> Result<(), StateError> {
        self.lock_progress()
            .save()
            .map_err(StateError::at("saving the progress of unfinished uploads"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::sha512;
    use crate::chunk::RangeSet;
    use crate::kafka::FileDelivery;
    use crate::state::StateDir;
    use crate::upload::directory::message::Done;
    use crate::upload::error::UploadError;
    use std::path::PathBuf;
    use std::sync::mpsc;

    const SETTLE: Duration = Duration::from_secs(3);

    /// A clock the test moves by hand.
    struct ManualClock(Arc<Mutex<Instant>>);

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    /// "Open for writing" as the test says.
    struct FakeWriters(Arc<Mutex<HashSet<FileId>>>);

    impl WriterCheck for FakeWriters {
        fn open_for_writing(&self, _root: &Path) -> Option<HashSet<FileId>> {
            Some(self.0.lock().unwrap().clone())
        }
        fn is_open_for_writing(&self, _path: &Path, id: FileId) -> bool {
            self.0.lock().unwrap().contains(&id)
        }
    }

    struct Harness {
        root: tempfile::TempDir,
        dropbox: Dropbox,
        time: Arc<Mutex<Instant>>,
        open: Arc<Mutex<HashSet<FileId>>>,
        progress: Arc<Mutex<ResumeState>>,
        jobs_tx: SyncSender<Ready>,
        jobs_rx: Receiver<Ready>,
    }

    impl Harness {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().canonicalize().unwrap();
            let state = StateDir::create(&dir).unwrap();
            let registry = Registry::open(&state.upload_registry()).unwrap();
            let progress = Arc::new(Mutex::new(
                ResumeState::open(&state.upload_progress()).unwrap(),
            ));
            let time = Arc::new(Mutex::new(Instant::now()));
            let open = Arc::new(Mutex::new(HashSet::new()));
            let settings = LoopSettings {
                topic: "t".into(),
                settle: SETTLE,
                rescan: EVENT_RESCAN,
                poll_rescan: POLL_RESCAN,
                events: true,
                upload_existing: true,
                update_every: None,
            };
            let filter = Filter {
                root: dir,
                regex: None,
                skip_top: None,
            };
            let mut dropbox = Dropbox::new(
                settings,
                Box::new(ManualClock(Arc::clone(&time))),
                Box::new(FakeWriters(Arc::clone(&open))),
                filter,
                registry,
                Arc::clone(&progress),
                Arc::new(DirectoryStats::default()),
            );
            dropbox.initial_scan().unwrap();
            let (jobs_tx, jobs_rx) = mpsc::sync_channel(16);
            Self {
                root,
                dropbox,
                time,
                open,
                progress,
                jobs_tx,
                jobs_rx,
            }
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.dropbox.filter.root.join(relative)
        }

        fn write(&self, relative: &str, content: &[u8]) -> PathBuf {
            let path = self.path(relative);
            std::fs::write(&path, content).unwrap();
            path
        }

        fn advance(&self, by: Duration) {
            *self.time.lock().unwrap() += by;
        }

        fn step(&mut self, batch: Vec<Msg>) -> Vec<Ready> {
            self.dropbox.step(batch, &self.jobs_tx).unwrap();
            self.jobs_rx.try_iter().collect()
        }

        fn event(&mut self, relative: &str) -> Vec<Ready> {
            let path = self.path(relative);
            self.step(vec![Msg::Paths(vec![path])])
        }

        fn close(&mut self, relative: &str) -> Vec<Ready> {
            let path = self.path(relative);
            self.step(vec![Msg::Closed(vec![path])])
        }

        fn report(&mut self, file: Ready, outcome: Outcome) -> Vec<Ready> {
            self.step(vec![Msg::Done(Box::new(Done { file, outcome }))])
        }

        /// Records that the worker sending `file` got the first `acked` of `n` chunks
        /// acknowledged (what a real worker does before its first chunk).
        fn started(&self, file: &Ready, acked: u64, n: u64) {
            let delivery = FileDelivery::new();
            let mut done = RangeSet::new();
            done.insert_range(0, acked);
            let version =
                super::super::resume::version(file.size, file.mtime, &sha512(b"x"), 16, n);
            crate::sync::lock(&self.progress).begin(&file.relative, version, done, delivery);
        }

        fn can_resume(&self, file: &Ready) -> bool {
            crate::sync::lock(&self.progress)
                .resume_point(&file.relative, file.size, file.mtime, 16)
                .is_some()
        }
    }

    fn names(ready: &[Ready]) -> Vec<&str> {
        ready.iter().map(|r| r.relative.as_str()).collect()
    }

    #[test]
    fn a_file_goes_once_unchanged_for_the_settle_time_and_never_while_open_for_writing() {
        let mut h = Harness::new();
        let path = h.write("scan.tif", b"first part");
        assert!(h.event("scan.tif").is_empty());
        h.advance(Duration::from_secs(2));
        // Still growing: the settle clock starts again.
        std::fs::write(&path, b"first part, second part").unwrap();
        assert!(h.event("scan.tif").is_empty());
        h.advance(Duration::from_secs(2));
        assert!(h.step(vec![]).is_empty(), "sent before it settled");
        // Settled, but the instrument still holds it open for writing.
        let id = open_files::file_id(&std::fs::metadata(&path).unwrap());
        h.open.lock().unwrap().insert(id);
        h.advance(Duration::from_secs(2));
        assert!(h.step(vec![]).is_empty(), "sent while open for writing");
        h.advance(Duration::from_secs(5));
        assert!(h.step(vec![]).is_empty(), "sent while open for writing");
        // Closed: sent at the next writer check, once.
        h.open.lock().unwrap().clear();
        h.advance(Duration::from_secs(1));
        let sent = h.step(vec![]);
        assert_eq!(names(&sent), ["scan.tif"]);
        assert_eq!(sent[0].size, 23);
        h.advance(Duration::from_secs(10));
        assert!(h.step(vec![]).is_empty(), "sent twice while in flight");
    }

    #[test]
    fn a_file_its_writer_closed_goes_at_once_unless_another_writer_still_has_it() {
        let mut h = Harness::new();
        h.write("spectrum.csv", b"1,2,3\n");
        h.event("spectrum.csv");
        let sent = h.close("spectrum.csv");
        assert_eq!(
            names(&sent),
            ["spectrum.csv"],
            "no settle wait after the close"
        );
        assert!(sent[0].closed);

        // Closed by one writer while another still holds it: the settle rule decides, and the
        // periodic check keeps it back while it is open.
        let path = h.write("shared.log", b"line\n");
        let id = open_files::file_id(&std::fs::metadata(&path).unwrap());
        h.open.lock().unwrap().insert(id);
        h.event("shared.log");
        assert!(
            h.close("shared.log").is_empty(),
            "sent while open for writing"
        );
        h.advance(SETTLE);
        assert!(h.step(vec![]).is_empty(), "sent while open for writing");
        h.open.lock().unwrap().clear();
        h.advance(Duration::from_secs(1));
        assert_eq!(names(&h.step(vec![])), ["shared.log"]);

        // A close reported for a version that has changed since does not make it ready.
        h.write("late.dat", b"v1");
        h.event("late.dat");
        std::fs::write(h.path("late.dat"), b"v1 and more").unwrap();
        h.event("late.dat");
        h.advance(Duration::from_millis(10));
        let closed_late = h.close("late.dat");
        assert_eq!(names(&closed_late), ["late.dat"]);
        assert_eq!(closed_late[0].size, 11);
    }

    #[test]
    fn failures_in_a_row_wait_longer_each_time_up_to_the_retry_interval() {
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn a_failed_file_is_retried_after_the_retry_interval_resuming_its_acknowledged_chunks() {
        let mut h = Harness::new();
        h.write("big.raw", &[7u8; 100]);
        h.event("big.raw");
        h.advance(SETTLE);
        let file = h.step(vec![]).pop().expect("settled file dispatched");
        h.started(&file, 3, 7);
        let failure = UploadError::Shrunk {
            path: file.path.clone(),
        };
        assert!(h.report(file.clone(), Outcome::Failed(failure)).is_empty());
        assert!(
            h.can_resume(&file),
            "a failure must keep acknowledged chunks"
        );
        // A first failure is tried again soon (without waiting for a full scan)...
        h.advance(RETRY_FIRST_FAILURE_AFTER - Duration::from_millis(500));
        assert!(h.step(vec![]).is_empty(), "retried too early");
        h.advance(Duration::from_millis(500));
        assert!(h.step(vec![]).is_empty(), "not settled yet");
        h.advance(SETTLE);
        let file = h.step(vec![]).pop().expect("retried after a first failure");
        h.started(&file, 3, 7);
        let failure = UploadError::Shrunk {
            path: file.path.clone(),
        };
        assert!(h.report(file.clone(), Outcome::Failed(failure)).is_empty());
        // ...a second one in a row waits twice as long: full scans see it, but it is not
        // retried before...
        h.advance(retry_delay(2) - Duration::from_millis(500));
        assert!(h.step(vec![]).is_empty(), "retried too early");
        // ...then it is considered again, settles, and goes again.
        h.advance(EVENT_RESCAN);
        assert!(h.step(vec![]).is_empty());
        h.advance(SETTLE);
        assert_eq!(names(&h.step(vec![])), ["big.raw"]);
        assert!(h.can_resume(&file));
    }

    #[test]
    fn an_interrupted_file_resumes_while_a_changed_one_starts_over_and_a_sent_one_stays_sent() {
        let mut h = Harness::new();
        h.write("a.dat", b"aaaa");
        h.write("b.dat", b"bbbb");
        h.write("c.dat", b"cccc");
        for name in ["a.dat", "b.dat", "c.dat"] {
            h.event(name);
        }
        h.advance(SETTLE);
        let mut sent = h.step(vec![]);
        sent.sort_by(|x, y| x.relative.cmp(&y.relative));
        assert_eq!(names(&sent), ["a.dat", "b.dat", "c.dat"]);
        for file in &sent {
            h.started(file, 1, 2);
        }
        let [a, b, c] = [sent[0].clone(), sent[1].clone(), sent[2].clone()];
        h.report(a.clone(), Outcome::Interrupted);
        h.report(b.clone(), Outcome::Changed);
        h.report(
            c.clone(),
            Outcome::Sent {
                sha512: "ab".into(),
            },
        );
        assert!(h.can_resume(&a), "an interrupted upload resumes");
        assert!(!h.can_resume(&b), "a changed file's chunks are useless");
        assert!(!h.can_resume(&c), "a sent file needs no resume state");
        assert_eq!(h.dropbox.files_sent(), 1);
        // The registry keeps the sent one from going again, however long we wait...
        h.advance(EVENT_RESCAN * 3);
        let again = h.step(vec![]);
        h.advance(SETTLE);
        let again: Vec<Ready> = again.into_iter().chain(h.step(vec![])).collect();
        assert!(!names(&again).contains(&"c.dat"), "{:?}", names(&again));
        // ...until it changes.
        h.write("c.dat", b"a new, longer version");
        h.event("c.dat");
        h.advance(SETTLE);
        assert_eq!(names(&h.step(vec![])), ["c.dat"]);
        drop(h.root);
    }
}
