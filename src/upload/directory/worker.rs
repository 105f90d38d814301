//! Upload workers: each takes a settled file from the bounded ready queue, sends it through the
//! shared producer (the same path as `upload-file`), waits until the broker acknowledged every
//! chunk of it, and reports the outcome to the loop, which alone writes the registry.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::message::Msg;
use super::resume::{self, lock, ResumeState};
use super::settle::Ready;
use crate::chunk::hash::to_hex;
use crate::chunk::RangeSet;
use crate::kafka::{ChunkProducer, FileDelivery};
use crate::upload::error::UploadError;
use crate::upload::hashing::chunk_count;
use crate::upload::send::{queue_file, SendOptions, Target};
use crate::upload::source::{SourceError, SourceFile};

/// What happened to one file.
#[derive(Debug)]
pub enum Outcome {
    /// Every chunk acknowledged; the file was unchanged from open to last acknowledgement.
    Sent {
        /// Hex SHA-512 of what was sent.
        sha512: String,
    },
    /// The file changed before or during the upload: it settles again and is sent anew.
    Changed,
    /// Could not be sent (broker refused, read error, ...): reported and retried later.
    Failed(UploadError),
    /// This user may not read the file: reported with what to do, retried at the next scan.
    PermissionDenied,
    /// Stopped by `quit`/a signal before every chunk was acknowledged: sent again next run.
    Interrupted,
}

impl Outcome {
    /// The outcome of an attempt that ended with `e`: interrupted when a stop was requested
    /// (whatever error the stop caused), failed otherwise.
    fn from_error(e: UploadError, cancel: &CancellationToken) -> Self {
        if e.is_cancelled() || cancel.is_cancelled() {
            Self::Interrupted
        } else {
            Self::Failed(e)
        }
    }
}

/// A finished job, reported to the loop.
#[derive(Debug)]
pub struct Done {
    /// The file, as it was when it settled.
    pub file: Ready,
    /// What happened.
    pub outcome: Outcome,
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
}

/// A worker thread's loop: runs until the ready queue is closed.
pub fn run(
    ctx: &WorkerContext,
    jobs: &Mutex<Receiver<Ready>>,
    results: &SyncSender<Msg>,
    cancel: &CancellationToken,
) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let outcome = if cancel.is_cancelled() {
            Outcome::Interrupted
        } else {
            upload_one(ctx, &job, cancel)
        };
        if results
            .send(Msg::Done(Box::new(Done { file: job, outcome })))
            .is_err()
        {
            return;
        }
    }
}

/// Sends one file and waits for its acknowledgements.
fn upload_one(ctx: &WorkerContext, job: &Ready, cancel: &CancellationToken) -> Outcome {
    let source = match SourceFile::open(&job.path, Some(&ctx.root)) {
        Ok(s) => s,
        Err(e) => return open_failure(e),
    };
    // The settle rule was judged on (size, mtime); a file that moved on since is judged again.
    if source.size != job.size || source.mtime != job.mtime {
        return Outcome::Changed;
    }
    let chunk_size = ctx.options.chunk_size.get() as u64;
    let resume =
        lock(&ctx.resume).resume_point(&job.relative, source.size, source.mtime, chunk_size);
    let n_chunks = chunk_count(source.size, chunk_size as usize);
    if let Some(point) = &resume {
        info!(path = %job.relative, acknowledged_before = point.acked.count(), n_chunks, "resuming an interrupted upload: sending only the chunks the broker did not acknowledge");
    }
    let delivery = FileDelivery::new();
    let target = Target {
        producer: &ctx.producer,
        partitions: ctx.partitions,
        delivery: &delivery,
        envelope: None,
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
    let queued = match queued {
        Ok(q) => q,
        Err(e) => return Outcome::from_error(e, cancel),
    };
    if let Err(e) =
        ctx.producer
            .wait_for_file(&delivery, queued.n_queued, ctx.delivery_timeout, cancel)
    {
        return Outcome::from_error(e.into(), cancel);
    }
    match source.unchanged() {
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
