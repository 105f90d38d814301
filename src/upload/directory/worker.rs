//! Upload workers: each takes a settled file from the bounded ready queue and queues its chunks
//! on the shared producer (the same path as `upload-file`), then hands it to the one
//! acknowledgement waiter ([`wait_for_acks`]) and takes the next file. The waiter reports each
//! file's outcome to the loop, which alone writes the registry, once the broker acknowledged
//! every chunk (or one failed). So a worker never sits idle while the broker answers, and
//! many small files are in flight at once (at most [`MAX_FILES_IN_FLIGHT`]; librdkafka's byte
//! cap bounds the data).

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::message::{Done, Msg, Outcome};
use super::resume::{self, ResumeState};
use super::settle::Ready;
use crate::chunk::hash::to_hex;
use crate::chunk::RangeSet;
use crate::kafka::{ChunkProducer, FileDelivery};
use crate::progress::{Activity, TaskProgress, Ticket};
use crate::sync::lock;
use crate::sync::SharedReceiver;
use crate::upload::error::UploadError;
use crate::upload::hashing::chunk_count;
use crate::upload::send::{queue_file, QueuedFile, SendOptions, Target};
use crate::upload::source::{SourceError, SourceFile};

/// Files whose chunks are all queued and whose acknowledgements are awaited, at most. Each holds
/// its file open, so this also bounds the descriptors used (far below the usual limit of 1024).
pub const MAX_FILES_IN_FLIGHT: usize = 256;

/// The waiter looks at every file in flight at least this often, even when no delivery report
/// came (for timeouts).
const LOOK_ANYWAY: Duration = Duration::from_millis(100);

/// A file whose chunks are all queued, waiting for the broker's acknowledgements.
pub struct InFlight {
    /// The job.
    job: Ready,
    /// The open file (to tell whether it changed while it was sent).
    source: SourceFile,
    /// Its acknowledgements.
    delivery: Arc<FileDelivery>,
    /// What was queued.
    queued: QueuedFile,
    /// When its last chunk was queued.
    since: Instant,
    /// Its place in the progress display, until it is done.
    _shown: Ticket,
}

/// What every worker shares.
pub struct WorkerContext {
    /// The shared producer.
    pub producer: Arc<ChunkProducer>,
    /// Partitions of the topic.
    pub partitions: i32,
    /// The watched folder (subdirs are sent relative to it).
    pub root: std::path::PathBuf,
    /// Chunking options.
    pub options: SendOptions,
    /// Bound on waiting for one file's acknowledgements.
    pub delivery_timeout: Duration,
    /// Acknowledged chunks of unfinished files (shared with the loop, which saves it).
    pub resume: Arc<Mutex<ResumeState>>,
    /// Hosts every file is addressed to (None: every host).
    pub envelopes: crate::upload::envelopes::Envelopes,
    /// The files being sent, for the progress display.
    pub activity: Arc<Activity>,
}

/// A file's progress as the broker acknowledges it.
struct Acknowledged {
    delivery: Arc<FileDelivery>,
    size: u64,
}

impl TaskProgress for Acknowledged {
    fn done(&self) -> u64 {
        self.delivery.acked_bytes()
    }
    fn total(&self) -> u64 {
        self.size
    }
}

/// A worker thread's loop: runs until the ready queue is closed. Files that were queued go to
/// `acks`; files that ended before that (unreadable, changed, failed) go straight to `results`.
pub fn run(
    ctx: &WorkerContext,
    jobs: &SharedReceiver<Ready>,
    acks: &SyncSender<InFlight>,
    results: &SyncSender<Msg>,
    cancel: &CancellationToken,
) {
    while let Some(job) = jobs.next() {
        let started = if cancel.is_cancelled() {
            Err(Outcome::Interrupted)
        } else {
            start_upload(ctx, job.clone(), cancel)
        };
        let sent = match started {
            // Blocks while the waiter has MAX_FILES_IN_FLIGHT files: the back-pressure.
            Ok(in_flight) => acks.send(in_flight).is_ok(),
            Err(outcome) => results
                .send(Msg::Done(Box::new(Done { file: job, outcome })))
                .is_ok(),
        };
        if !sent {
            return;
        }
    }
}

/// The acknowledgement waiter: watches every file in flight and reports each to the loop once
/// the broker acknowledged all its chunks, one failed, it timed out, or a stop was requested
/// (after a short grace). Runs until every worker is gone and nothing is in flight.
pub fn wait_for_acks(
    ctx: &WorkerContext,
    acks: &Receiver<InFlight>,
    results: &SyncSender<Msg>,
    cancel: &CancellationToken,
) {
    let mut pending: Vec<InFlight> = Vec::new();
    let mut workers_gone = false;
    let mut cancelled_at: Option<Instant> = None;
    // Small files are acknowledged within a few ms: look often, less so while nothing moves.
    let mut pause = Duration::from_micros(200);
    let (mut last_reports, mut last_look) = (u64::MAX, Instant::now());
    // Files received since the last look (one may have been acknowledged before it got here).
    let mut received = false;
    loop {
        while !workers_gone && pending.len() < MAX_FILES_IN_FLIGHT {
            match acks.try_recv() {
                Ok(file) => {
                    pending.push(file);
                    received = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => workers_gone = true,
            }
        }
        if pending.is_empty() {
            if workers_gone {
                return;
            }
            match acks.recv_timeout(Duration::from_millis(100)) {
                Ok(file) => {
                    pending.push(file);
                    received = true;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => workers_gone = true,
            }
            continue;
        }
        if cancel.is_cancelled() {
            cancelled_at.get_or_insert_with(Instant::now);
        }
        // Nothing new arrived and nothing was acknowledged or failed since the last look: only
        // a timeout or a stop could have changed, and those are checked every LOOK_ANYWAY.
        let reports = ctx.producer.tracker().delivered() + ctx.producer.tracker().failed();
        if !received
            && reports == last_reports
            && last_look.elapsed() < LOOK_ANYWAY
            && cancelled_at.is_none()
        {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
            continue;
        }
        (last_reports, last_look, received) = (reports, Instant::now(), false);
        let before = pending.len();
        let mut finished = Vec::new();
        pending.retain_mut(|file| {
            let status = ctx.producer.file_status(
                &file.delivery,
                file.queued.n_queued,
                file.since.elapsed(),
                ctx.delivery_timeout,
                cancelled_at.map(|at| at.elapsed()),
            );
            match status {
                None => true,
                Some(result) => {
                    finished.push((file.job.clone(), outcome_of(file, result, cancel)));
                    false
                }
            }
        });
        for (file, outcome) in finished {
            if results
                .send(Msg::Done(Box::new(Done { file, outcome })))
                .is_err()
            {
                return;
            }
        }
        pause = if pending.len() < before {
            Duration::from_micros(200)
        } else {
            (pause * 2).min(Duration::from_millis(5))
        };
        std::thread::sleep(pause);
    }
}

/// The outcome of a file whose acknowledgements are in (`result`).
fn outcome_of(
    file: &InFlight,
    result: Result<(), crate::kafka::producer::ProduceError>,
    cancel: &CancellationToken,
) -> Outcome {
    if let Err(e) = result {
        return Outcome::from_error(e.into(), cancel);
    }
    let (job, queued) = (&file.job, &file.queued);
    match file.source.unchanged() {
        Ok(true) => {
            debug!(path = %job.relative, chunks = queued.n_chunks, sent_now = queued.n_queued, partition = queued.partition, "acknowledged");
            Outcome::Sent {
                sha512: to_hex(&queued.file_hash),
            }
        }
        Ok(false) => {
            warn!(path = %job.relative, "changed while it was being uploaded; receivers reject that copy (hash mismatch) and the new version is sent once it settles");
            Outcome::Changed
        }
        // Deleted right after it was sent: what was sent is complete and acknowledged.
        Err(_) => Outcome::Sent {
            sha512: to_hex(&queued.file_hash),
        },
    }
}

/// Queues every chunk of one file; the file then waits for its acknowledgements in
/// [`wait_for_acks`]. Err: the outcome of a file that ended before that.
fn start_upload(
    ctx: &WorkerContext,
    job: Ready,
    cancel: &CancellationToken,
) -> Result<InFlight, Outcome> {
    let source = SourceFile::open(&job.path, Some(&ctx.root)).map_err(open_failure)?;
    // The settle rule was judged on (size, mtime); a file that moved on since is judged again.
    if source.size != job.size || source.mtime != job.mtime {
        return Err(Outcome::Changed);
    }
    let chunk_size = ctx.options.chunk_size.get() as u64;
    let resume =
        lock(&ctx.resume).resume_point(&job.relative, source.size, source.mtime, chunk_size);
    let n_chunks = chunk_count(source.size, chunk_size as usize);
    if let Some(point) = &resume {
        info!(path = %job.relative, acknowledged_before = point.acked.count(), n_chunks, "resuming an interrupted upload: sending only the chunks the broker did not acknowledge");
    }
    let delivery = FileDelivery::new();
    let shown = ctx.activity.begin(
        &job.relative,
        Arc::new(Acknowledged {
            delivery: Arc::clone(&delivery),
            size: source.size,
        }),
    );
    let target = Target {
        producer: &ctx.producer,
        partitions: ctx.partitions,
        delivery: &delivery,
        envelope: ctx.envelopes.get(),
    };
    // Before the first chunk of a multi-chunk file: record its version, so a crash from here
    // on resumes it instead of re-sending it whole.
    let mut record_start = |file_hash: &_, acked: &RangeSet| {
        let version = resume::version(source.size, source.mtime, file_hash, chunk_size, n_chunks);
        lock(&ctx.resume).begin(&job.relative, version, acked.clone(), Arc::clone(&delivery));
    };
    let queued = queue_file(
        &target,
        &source,
        &ctx.options,
        resume,
        &mut record_start,
        &mut |_| {},
        cancel,
    );
    match queued {
        Ok(queued) => Ok(InFlight {
            job,
            source,
            delivery,
            queued,
            since: Instant::now(),
            _shown: shown,
        }),
        Err(e) => Err(Outcome::from_error(e, cancel)),
    }
}

fn open_failure(e: SourceError) -> Outcome {
    match &e {
        SourceError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            // Deleted before we got to it: nothing to send.
            Outcome::Changed
        }
        SourceError::Open { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Outcome::PermissionDenied
        }
        _ => Outcome::Failed(UploadError::Source(e)),
    }
}
