//! Upload workers: each takes a settled file from the bounded ready queue, sends it through the
//! shared producer (the same path as `upload-file`), waits until the broker acknowledged every
//! chunk of it, and reports the outcome to the loop, which alone writes the registry.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::progress::{self, lock, Progress};
use super::settle::Ready;
use super::Msg;
use crate::chunk::hash::to_hex;
use crate::chunk::RangeSet;
use crate::kafka::{ChunkProducer, FileDelivery};
use crate::upload::hashing::{chunk_count, FileHashes};
use crate::upload::send::{hash_source, queue_chunks, queue_single_chunk, SendOptions, Target};
use crate::upload::source::SourceFile;

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
    Failed(String),
    /// This user may not read the file: reported with what to do, retried at the next scan.
    PermissionDenied,
    /// Stopped by `quit`/a signal before every chunk was acknowledged: sent again next run.
    Interrupted,
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
    pub progress: Arc<Mutex<Progress>>,
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
        Err(e) => return open_failure(&job.path, e),
    };
    // The settle rule was judged on (size, mtime); a file that moved on since is judged again.
    if source.size != job.size || source.mtime != job.mtime {
        return Outcome::Changed;
    }
    let chunk_size = ctx.options.chunk_size.get() as u64;
    let resume =
        lock(&ctx.progress).resume_point(&job.relative, source.size, source.mtime, chunk_size);
    let n_chunks = chunk_count(source.size, chunk_size as usize);
    let delivery = FileDelivery::new();
    let target = Target {
        producer: &ctx.producer,
        partitions: ctx.partitions,
        delivery: &delivery,
    };
    let queued = if resume.is_none() && n_chunks == 1 {
        // One chunk: nothing to resume, and its hash (the file's) is computed as it is read.
        queue_single_chunk(&target, &source, ctx.options.wire_fields, cancel)
    } else {
        let (hashes, skip) = match resume {
            Some(point) => {
                info!(path = %job.relative, acknowledged_before = point.acked.count(), n_chunks, "resuming an interrupted upload: sending only the chunks the broker did not acknowledge");
                let hashes = FileHashes {
                    file_hash: point.file_hash,
                    chunk_hashes: None,
                };
                (hashes, point.acked)
            }
            None => match hash_source(&source, &ctx.options, cancel) {
                Ok(h) => (h, RangeSet::new()),
                Err(_) if cancel.is_cancelled() => return Outcome::Interrupted,
                Err(e) => return read_failure(&job.path, e),
            },
        };
        lock(&ctx.progress).begin(
            &job.relative,
            progress::version(
                source.size,
                source.mtime,
                &hashes.file_hash,
                chunk_size,
                n_chunks,
            ),
            skip.clone(),
            Arc::clone(&delivery),
        );
        queue_chunks(
            &target,
            &source,
            &ctx.options,
            &hashes,
            &skip,
            &mut |_| {},
            cancel,
        )
    };
    let queued = match queued {
        Ok(q) => q,
        Err(_) if cancel.is_cancelled() => return Outcome::Interrupted,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    match ctx
        .producer
        .wait_for_file(&delivery, queued.n_queued, ctx.delivery_timeout, cancel)
    {
        Ok(()) => {}
        Err(_) if cancel.is_cancelled() => return Outcome::Interrupted,
        Err(e) => return Outcome::Failed(e.to_string()),
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

fn open_failure(path: &Path, e: crate::upload::source::SourceError) -> Outcome {
    use crate::upload::source::SourceError;
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
        _ => Outcome::Failed(format!("{}: {e}", path.display())),
    }
}

/// A failure of the hashing pass (reading the file).
fn read_failure(path: &Path, e: anyhow::Error) -> Outcome {
    Outcome::Failed(format!("{}: {e:#}", path.display()))
}
