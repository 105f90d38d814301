//! The download pipeline, three stages on their own threads with bounded queues between them:
//!
//! ```text
//! poll (this thread: rdkafka, offsets) ─► verify workers (decode, validate, SHA-512 of data)
//!     ▲                                         │
//!     └── offsets to commit ◄── writer (in order: stage, flush = fsync + publish) ◄┘
//! ```
//!
//! The writer handles messages in the order they were polled (a small reorder buffer undoes
//! the parallel verification), so "everything up to offset N of partition P is durable" is
//! simply the last offset it handled before a flush. Only then are offsets stored and committed,
//! and never past the first chunk of a file that is not yet whole (see [`super::offsets`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use regex::Regex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::completed::MessagePosition;
use super::offsets::{ChunkFile, CommitTracker};
use super::partial::FileVersion;
use super::reassembler::{is_out_of_space, Accepted, Reassembler, VerifiedChunk};
use super::rejects::{MessageRef, RejectStore};
use super::stats::DownloadStats;
use super::validate::validate;
use crate::chunk::decode_value;
use crate::chunk::hash::{sha512, to_hex};
use crate::kafka::ConsumerLogContext;

/// Messages between stages. 32 chunks of 512 KiB is 16 MiB per queue: enough to keep both
/// cores busy, small enough that memory does not depend on the data.
const QUEUE_DEPTH: usize = 32;
/// Flush at least this often while data flows (bounds how much is re-read after a crash)...
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// ...or after this many bytes (bounds fsync cost per byte)...
const FLUSH_BYTES: u64 = 256 << 20;
/// ...or as soon as the stream pauses this long, so files appear promptly.
const FLUSH_WHEN_IDLE: Duration = Duration::from_millis(50);
/// How often the idle-exit condition looks at the assignment.
const IDLE_CHECK_EVERY: Duration = Duration::from_millis(250);

/// A message as polled.
struct Incoming {
    seq: u64,
    at: MessageRef,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// What verification decided.
enum Verdict {
    Chunk(Box<VerifiedChunk>),
    /// Valid, but not wanted (--download-regex).
    Skip,
    /// Not a valid chunk: kept aside with the reason.
    Reject {
        reason: String,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    },
}

struct Verified {
    seq: u64,
    at: MessageRef,
    verdict: Verdict,
}

/// Run-time options of the pipeline.
pub struct PipelineOptions {
    pub topic: String,
    pub download_regex: Option<Regex>,
    pub verify_threads: usize,
    pub exit_when_idle: Option<Duration>,
}

/// Why the pipeline stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum StopReason {
    /// quit, Ctrl-C or SIGTERM.
    Requested,
    /// --exit-when-idle fired.
    Idle,
}

/// Runs until cancelled, idle (when asked), or a fatal local error (disk full, permissions).
pub fn run(
    consumer: &BaseConsumer<ConsumerLogContext>,
    reassembler: Reassembler,
    rejects: RejectStore,
    options: &PipelineOptions,
    stats: &Arc<DownloadStats>,
    cancel: &CancellationToken,
) -> anyhow::Result<StopReason> {
    let in_flight = Arc::new(AtomicU64::new(0));
    let writer_done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let (in_tx, in_rx) = mpsc::sync_channel::<Incoming>(QUEUE_DEPTH);
        let (out_tx, out_rx) = mpsc::sync_channel::<Verified>(QUEUE_DEPTH);
        let (commit_tx, commit_rx) = mpsc::channel::<HashMap<i32, i64>>();
        let in_rx = Arc::new(Mutex::new(in_rx));
        for _ in 0..options.verify_threads.max(1) {
            let (in_rx, out_tx) = (Arc::clone(&in_rx), out_tx.clone());
            let regex = options.download_regex.clone();
            scope.spawn(move || verify_worker(&in_rx, &out_tx, regex.as_ref()));
        }
        drop(out_tx);
        // Only the workers may keep the receiver alive: when they all exit (the writer
        // failed), the poll loop's blocked `send` must fail instead of waiting forever.
        drop(in_rx);
        let writer = {
            let (stats, in_flight, writer_done) = (
                Arc::clone(stats),
                Arc::clone(&in_flight),
                Arc::clone(&writer_done),
            );
            scope.spawn(move || {
                let result =
                    write_loop(out_rx, reassembler, rejects, &commit_tx, &stats, &in_flight);
                writer_done.store(true, Ordering::Release);
                result
            })
        };

        let stop = poll_loop(
            consumer,
            options,
            in_tx,
            &commit_rx,
            stats,
            &in_flight,
            &writer_done,
            cancel,
        );
        // The writer drains what was polled, flushes, and sends the final offsets.
        for offsets in commit_rx.iter() {
            store_offsets(consumer, &options.topic, &offsets);
        }
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("internal error: the writer thread panicked"))?;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(error = %e, "final offset commit failed; some chunks will be read again (and skipped as duplicates) next time")
            }
        }
        written.map_err(|e| {
            anyhow::anyhow!(
                "stopped: could not write to the output folder: {e}. Nothing after the last durable chunk was committed; fix the problem{} and start again with the same --group-id to resume",
                if is_out_of_space(&e) { " (free some space)" } else { "" }
            )
        })?;
        Ok(stop)
    })
}

/// The consumer thread: polls, hands messages to the workers, commits durable offsets, and
/// decides when to stop.
#[allow(clippy::too_many_arguments)]
fn poll_loop(
    consumer: &BaseConsumer<ConsumerLogContext>,
    options: &PipelineOptions,
    in_tx: SyncSender<Incoming>,
    commit_rx: &Receiver<HashMap<i32, i64>>,
    stats: &DownloadStats,
    in_flight: &AtomicU64,
    writer_done: &AtomicBool,
    cancel: &CancellationToken,
) -> StopReason {
    let mut seq = 0u64;
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut last_message = Instant::now();
    let mut last_idle_check = Instant::now();
    loop {
        while let Ok(offsets) = commit_rx.try_recv() {
            store_offsets(consumer, &options.topic, &offsets);
        }
        if cancel.is_cancelled() || writer_done.load(Ordering::Acquire) {
            return StopReason::Requested;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                last_message = Instant::now();
                let key = message.key().map(<[u8]>::to_vec);
                let value = message.payload().map(<[u8]>::to_vec);
                DownloadStats::add(&stats.messages_read, 1);
                DownloadStats::add(
                    &stats.bytes_read,
                    (key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len)) as u64,
                );
                let incoming = Incoming {
                    seq,
                    at: MessageRef {
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        offset: message.offset(),
                    },
                    key,
                    value,
                };
                seq += 1;
                in_flight.fetch_add(1, Ordering::AcqRel);
                if in_tx.send(incoming).is_err() {
                    // The writer stopped (its error is reported by the caller).
                    return StopReason::Requested;
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(e)) => warn!(error = %e, "Kafka consumer error"),
        }
        if let Some(idle) = options.exit_when_idle {
            if last_idle_check.elapsed() >= IDLE_CHECK_EVERY {
                last_idle_check = Instant::now();
                if last_message.elapsed() >= idle
                    && in_flight.load(Ordering::Acquire) == 0
                    && all_assigned_at_end(consumer, &at_end)
                {
                    info!(
                        idle_secs = idle.as_secs_f64(),
                        "every partition read to its end and idle; exiting"
                    );
                    return StopReason::Idle;
                }
            }
        }
    }
}

fn all_assigned_at_end(consumer: &BaseConsumer<ConsumerLogContext>, at_end: &HashSet<i32>) -> bool {
    match consumer.assignment() {
        Ok(list) => {
            let elements = list.elements();
            !elements.is_empty() && elements.iter().all(|e| at_end.contains(&e.partition()))
        }
        Err(_) => false,
    }
}

/// Stores the next offset to read for each partition and commits asynchronously. A partition
/// that was revoked meanwhile refuses the store; its new owner re-reads those chunks, which is
/// harmless (they are duplicates).
fn store_offsets(
    consumer: &BaseConsumer<ConsumerLogContext>,
    topic: &str,
    offsets: &HashMap<i32, i64>,
) {
    if offsets.is_empty() {
        return;
    }
    for (&partition, &next) in offsets {
        if let Err(e) = consumer.store_offset(topic, partition, next - 1) {
            debug!(partition, error = %e, "offset not stored (partition no longer assigned?)");
        }
    }
    match consumer.commit_consumer_state(CommitMode::Async) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => warn!(error = %e, "offset commit failed; will retry at the next flush"),
    }
}

/// A verification worker: CPU-heavy and stateless.
fn verify_worker(
    in_rx: &Mutex<Receiver<Incoming>>,
    out_tx: &SyncSender<Verified>,
    regex: Option<&Regex>,
) {
    loop {
        let incoming = {
            let rx = in_rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            }
        };
        let message = MessagePosition {
            partition: incoming.at.partition,
            offset: incoming.at.offset,
        };
        let verdict = verify(incoming.key, incoming.value, message, regex);
        let verified = Verified {
            seq: incoming.seq,
            at: incoming.at,
            verdict,
        };
        if out_tx.send(verified).is_err() {
            return;
        }
    }
}

/// Decodes, validates and hash-checks one message.
fn verify(
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    message: MessagePosition,
    regex: Option<&Regex>,
) -> Verdict {
    let reject = |reason: String, key, value| Verdict::Reject { reason, key, value };
    let Some(payload) = value else {
        return reject("message has no value".into(), key, None);
    };
    let decoded = match decode_value(&payload) {
        Ok(d) => d,
        Err(e) => {
            return reject(
                format!("not an OpenMSIStream file chunk: {e}"),
                key,
                Some(payload),
            )
        }
    };
    let destination = match validate(&decoded) {
        Ok(d) => d,
        Err(e) => return reject(format!("invalid chunk: {e}"), key, Some(payload)),
    };
    if regex.is_some_and(|re| !re.is_match(&destination.relative)) {
        return Verdict::Skip;
    }
    if sha512(decoded.data) != decoded.chunk_hash {
        return reject(
            format!(
                "chunk {} of {} of {} fails its SHA-512 check (corrupted in transit or by the producer)",
                decoded.chunk_i, decoded.n_total_chunks, destination.relative
            ),
            key,
            Some(payload),
        );
    }
    let start = decoded.data.as_ptr() as usize - payload.as_ptr() as usize;
    let data = start..start + decoded.data.len();
    let version = FileVersion {
        relative: destination.relative,
        file_hash: to_hex(&decoded.file_hash),
        n_total_chunks: decoded.n_total_chunks,
        file_mtime: decoded.file_mtime,
    };
    let (chunk_i, offset) = (decoded.chunk_i, decoded.offset);
    Verdict::Chunk(Box::new(VerifiedChunk {
        id: version.id(),
        version,
        path: destination.path,
        chunk_i,
        offset,
        payload,
        data,
        message,
    }))
}

/// The writer: handles verified messages in poll order, flushes, reports durable offsets.
fn write_loop(
    out_rx: Receiver<Verified>,
    mut reassembler: Reassembler,
    mut rejects: RejectStore,
    commit_tx: &Sender<HashMap<i32, i64>>,
    stats: &DownloadStats,
    in_flight: &AtomicU64,
) -> std::io::Result<()> {
    let mut reorder: BTreeMap<u64, Verified> = BTreeMap::new();
    let mut next_seq = 0u64;
    let mut offsets = CommitTracker::default();
    let mut oldest_unflushed: Option<Instant> = None;
    loop {
        let received = match out_rx.recv_timeout(FLUSH_WHEN_IDLE) {
            Ok(v) => Some(v),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let idle = received.is_none();
        if let Some(v) = received {
            reorder.insert(v.seq, v);
        }
        while let Some(v) = reorder.remove(&next_seq) {
            next_seq += 1;
            let (partition, offset) = (v.at.partition, v.at.offset);
            offsets.handled(partition, offset);
            if let Some(file) = handle(v.verdict, &v.at, &mut reassembler, &mut rejects, stats)? {
                if reassembler.is_in_progress(&file.id) {
                    offsets.unfinished(&file, partition, offset);
                } else {
                    offsets.finished(&file.id);
                }
            }
            oldest_unflushed.get_or_insert_with(Instant::now);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        let due = oldest_unflushed.is_some_and(|t| idle || t.elapsed() >= FLUSH_INTERVAL)
            || reassembler.unflushed_bytes() >= FLUSH_BYTES;
        if due {
            flush(&mut reassembler, &mut offsets, commit_tx)?;
            oldest_unflushed = None;
        }
    }
    flush(&mut reassembler, &mut offsets, commit_tx)
}

/// Makes everything handled durable, then hands the offsets that may now be committed to the
/// poll thread.
fn flush(
    reassembler: &mut Reassembler,
    offsets: &mut CommitTracker,
    commit_tx: &Sender<HashMap<i32, i64>>,
) -> std::io::Result<()> {
    for path in reassembler.flush()? {
        info!(path = %path, "file rebuilt and verified");
    }
    let committable = offsets.committable();
    if !committable.is_empty() {
        let _ = commit_tx.send(committable);
    }
    Ok(())
}

/// Writes, skips or keeps aside one message; returns the file it is a chunk of.
fn handle(
    verdict: Verdict,
    at: &MessageRef,
    reassembler: &mut Reassembler,
    rejects: &mut RejectStore,
    stats: &DownloadStats,
) -> std::io::Result<Option<ChunkFile>> {
    match verdict {
        Verdict::Chunk(chunk) => {
            match reassembler.accept(&chunk)? {
                Accepted::Written | Accepted::Completed => {}
                Accepted::Duplicate | Accepted::AlreadyComplete | Accepted::Superseded => {
                    DownloadStats::add(&stats.duplicate_chunks, 1)
                }
                Accepted::HashMismatch => {
                    error!(topic = %at.topic, partition = at.partition, offset = at.offset, path = %chunk.version.relative, "file failed whole-file verification")
                }
            }
            let VerifiedChunk { id, version, .. } = *chunk;
            return Ok(Some(ChunkFile {
                id,
                relative: version.relative,
            }));
        }
        Verdict::Skip => DownloadStats::add(&stats.skipped_messages, 1),
        Verdict::Reject { .. } if rejects.already_kept(at) => {
            debug!(topic = %at.topic, partition = at.partition, offset = at.offset, "bad message read again (an unfinished file held the committed offset before it); already kept aside");
            DownloadStats::add(&stats.skipped_messages, 1)
        }
        Verdict::Reject { reason, key, value } => {
            DownloadStats::add(&stats.rejected_messages, 1);
            warn!(topic = %at.topic, partition = at.partition, offset = at.offset, %reason, "bad message skipped and kept in .openmsi/rejected");
            rejects.keep(at, key.as_deref(), value.as_deref(), &reason);
        }
    }
    Ok(None)
}
