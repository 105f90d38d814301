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
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::offsets::CommitTracker;
use super::rejects::KeptAside;
use super::replay::Replay;
use super::stats::DownloadStats;
use super::verdicts::{Applied, Verdicts};
use super::verify::{verify_batch, Selection, Verdict};
use crate::contract::ChunkSink;
use crate::contract::MessagePosition;
use crate::contract::{Opener, RawMessage};
use crate::kafka::group::{rejoin_group, store_offsets, Ownership, Rejoin};
use crate::kafka::ConsumerLogContext;
use crate::state::is_out_of_space;
use crate::sync::SharedReceiver;

/// Messages between stages. 32 chunks of 512 KiB is 16 MiB per queue: enough to keep both
/// cores busy, small enough that memory does not depend on the data.
const QUEUE_DEPTH: usize = 32;
/// Messages a verify worker takes at once: the lanes of the batch hash
/// ([`crate::chunk::batch_hash`]).
const VERIFY_BATCH: usize = 4;
/// Flush at least this often while data flows (bounds how much is re-read after a crash)...
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// ...or after this many bytes (bounds fsync cost per byte)...
const FLUSH_BYTES: u64 = 256 << 20;
/// ...or as soon as the stream pauses this long, so files appear promptly.
const FLUSH_WHEN_IDLE: Duration = Duration::from_millis(50);
/// How often the idle-exit condition looks at the assignment.
const IDLE_CHECK_EVERY: Duration = Duration::from_millis(250);
/// How often unfinished files are checked for chunks that will not come.
const STALL_CHECK_EVERY: Duration = Duration::from_millis(500);

/// A message as polled, numbered in poll order.
struct Incoming {
    seq: u64,
    at: MessagePosition,
    message: RawMessage,
}

/// A message after the verify stage, still numbered in poll order.
struct Verified {
    seq: u64,
    at: MessagePosition,
    verdict: Verdict,
}

/// Makes a new consumer subscribed to the same topic in the same group: the old one is closed
/// and its partitions go through a rebalance like any member's (see
/// [`crate::kafka::group::Rejoin`] for why a rejoin is not always enough).
/// The argument bounds the wait for a broker's first answer.
pub type Reconnect =
    Box<dyn Fn(Duration) -> anyhow::Result<BaseConsumer<ConsumerLogContext>> + Send + Sync>;

/// How long a new consumer waits for a broker's answer before the old one is kept: short, since
/// the poll loop (and a `quit`) waits meanwhile, and a failed attempt is simply made again later.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Run-time options of the pipeline.
pub struct PipelineOptions {
    /// The topic read (for logs and the names of messages kept aside).
    pub topic: String,
    /// The formats read and the files wanted.
    pub selection: Selection,
    /// Verify-stage threads.
    pub verify_threads: usize,
    /// Stop after reading everything and this much quiet.
    pub exit_when_idle: Option<Duration>,
    /// The step before decoding ([`crate::contract::Plaintext`] for plaintext topics).
    pub opener: Arc<dyn Opener>,
    /// When nothing was assigned for this long, leave and rejoin the group (see [`crate::kafka::group::Rejoin`]).
    pub rejoin_unassigned_after: Duration,
    /// Instead of rejoining with the same client, replace it with this new one.
    pub reconnect: Option<Reconnect>,
    /// An unfinished file whose partition moved past its last chunk and that got nothing for
    /// this long is reported as missing chunks (see [`CommitTracker::newly_stalled`]).
    pub report_missing_after: Duration,
}

/// Why the pipeline failed. (A requested stop is not a failure: it is
/// [`StopReason::Requested`], after everything read was written, flushed and committed.)
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The sink could not write (disk full, permissions, a destination broker that does not
    /// acknowledge): nothing after the last durable chunk was committed, so a restart resumes
    /// from there.
    #[error(
        "stopped: could not write to {destination}: {source}. Nothing after the last durable \
         chunk was committed; fix the problem{} and start again with the same --group-id to \
         resume",
        if is_out_of_space(source) { " (free some space)" } else { "" }
    )]
    Write {
        /// The sink's [`ChunkSink::DESTINATION`].
        destination: &'static str,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A bug: the writer thread panicked.
    #[error("internal error: the writer thread panicked")]
    WriterPanicked,
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
pub fn run<S: ChunkSink + Send>(
    consumer: &mut BaseConsumer<ConsumerLogContext>,
    sink: S,
    kept: KeptAside,
    options: &PipelineOptions,
    stats: &Arc<DownloadStats>,
    cancel: &CancellationToken,
) -> Result<StopReason, PipelineError> {
    let in_flight = Arc::new(AtomicU64::new(0));
    let writer_done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let (in_tx, in_rx) = mpsc::sync_channel::<Incoming>(QUEUE_DEPTH);
        let (out_tx, out_rx) = mpsc::sync_channel::<Verified>(QUEUE_DEPTH);
        let (commit_tx, commit_rx) = mpsc::channel::<HashMap<i32, i64>>();
        let in_rx = Arc::new(SharedReceiver::new(in_rx));
        for _ in 0..options.verify_threads.max(1) {
            let (in_rx, out_tx) = (Arc::clone(&in_rx), out_tx.clone());
            let selection = options.selection.clone();
            let opener = Arc::clone(&options.opener);
            scope.spawn(move || verify_worker(&in_rx, &out_tx, opener.as_ref(), &selection));
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
            let topic = options.topic.as_str();
            scope.spawn(move || {
                let writer = Writer {
                    topic,
                    report_missing_after: options.report_missing_after,
                    stats: &stats,
                    verdicts: Verdicts::new(
                        &stats,
                        kept,
                        options.selection.formats,
                        options.opener.decrypts(),
                    ),
                    replay: Replay::new(Arc::clone(&options.opener), options.selection.clone()),
                };
                let result = writer.run(out_rx, sink, &commit_tx, &in_flight);
                writer_done.store(true, Ordering::Release);
                result
            })
        };

        let mut owned = Ownership::default();
        let stop = poll_loop(
            consumer,
            options,
            in_tx,
            &commit_rx,
            &mut owned,
            stats,
            &in_flight,
            &writer_done,
            cancel,
        );
        // The writer drains what was polled, flushes, and sends the final offsets.
        for offsets in commit_rx.iter() {
            owned.forget_revoked(consumer);
            store_offsets(consumer, &options.topic, &owned.clamp(&offsets));
        }
        let written = writer.join().map_err(|_| PipelineError::WriterPanicked)?;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(error = %e, "final offset commit failed; some chunks will be read again (and skipped as duplicates) next time")
            }
        }
        written.map_err(|source| PipelineError::Write {
            destination: S::DESTINATION,
            source,
        })?;
        Ok(stop)
    })
}

/// The consumer thread: polls, hands messages to the workers, commits durable offsets, and
/// decides when to stop.
#[allow(clippy::too_many_arguments)]
fn poll_loop(
    consumer: &mut BaseConsumer<ConsumerLogContext>,
    options: &PipelineOptions,
    in_tx: SyncSender<Incoming>,
    commit_rx: &Receiver<HashMap<i32, i64>>,
    owned: &mut Ownership,
    stats: &DownloadStats,
    in_flight: &AtomicU64,
    writer_done: &AtomicBool,
    cancel: &CancellationToken,
) -> StopReason {
    let mut seq = 0u64;
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut last_message = Instant::now();
    let mut last_idle_check = Instant::now();
    let mut rejoin = Rejoin::after(options.rejoin_unassigned_after);
    loop {
        crate::service::beat();
        // A session that timed out means the coordinator did not answer for a whole session:
        // when it is gone with its broker, only a new client finds the next one (see
        // `Reconnect`), so do not wait for the unassigned period too.
        let session_lost = consumer.context().take_session_lost();
        if (session_lost && options.reconnect.is_some()) || rejoin.due(consumer) {
            match &options.reconnect {
                Some(reconnect) => replace_consumer(consumer, reconnect, owned, &options.topic),
                None => rejoin_group(consumer, &options.topic),
            }
        }
        owned.forget_revoked(consumer);
        while let Ok(offsets) = commit_rx.try_recv() {
            store_offsets(consumer, &options.topic, &owned.clamp(&offsets));
        }
        if cancel.is_cancelled() || writer_done.load(Ordering::Acquire) {
            return StopReason::Requested;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                owned.reading(message.partition(), message.offset());
                last_message = Instant::now();
                let raw = RawMessage {
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    headers: headers_of(&message),
                };
                DownloadStats::add(&stats.messages_read, 1);
                DownloadStats::add(
                    &stats.bytes_read,
                    (raw.key.as_ref().map_or(0, Vec::len) + raw.value.as_ref().map_or(0, Vec::len))
                        as u64,
                );
                let incoming = Incoming {
                    seq,
                    at: MessagePosition {
                        partition: message.partition(),
                        offset: message.offset(),
                    },
                    message: raw,
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

/// Replaces the consumer with a new one in the same group (see [`Reconnect`]); on failure
/// (every broker down) keeps the old one, to try again after the next wait.
fn replace_consumer(
    consumer: &mut BaseConsumer<ConsumerLogContext>,
    reconnect: &Reconnect,
    owned: &mut Ownership,
    topic: &str,
) {
    info!(topic, "the group's coordinator did not answer for a session, or no partition was assigned for longer than one (the coordinator may be gone with its broker, a crashed member may still hold the partitions, or the group has more members than partitions); joining again with a new connection");
    match reconnect(RECONNECT_TIMEOUT) {
        Ok(fresh) => {
            let old = std::mem::replace(consumer, fresh);
            // Nothing is owned yet: offsets of partitions read before are the next owner's.
            *owned = Ownership::default();
            // Closing tries to leave the group through the old coordinator, which may be
            // unreachable: not on this thread.
            std::thread::spawn(move || drop(old));
        }
        Err(e) => warn!(topic, error = %format!("{e:#}"), "could not connect again; trying later"),
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

/// The headers of a message (empty for most: openmsi's own chunks need none).
fn headers_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    use rdkafka::message::Headers;
    message.headers().map_or_else(Vec::new, |headers| {
        headers
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                )
            })
            .collect()
    })
}

/// A verification worker: CPU-heavy and stateless. It takes the messages already waiting (up
/// to [`VERIFY_BATCH`]) so their chunk hashes are computed side by side; it never waits to fill
/// a batch, so a lone message is not delayed.
fn verify_worker(
    in_rx: &SharedReceiver<Incoming>,
    out_tx: &SyncSender<Verified>,
    opener: &dyn Opener,
    selection: &Selection,
) {
    loop {
        let batch = in_rx.next_batch(VERIFY_BATCH);
        if batch.is_empty() {
            return;
        }
        let order: Vec<(u64, MessagePosition)> = batch.iter().map(|i| (i.seq, i.at)).collect();
        let messages = batch.into_iter().map(|i| (i.message, i.at)).collect();
        let verdicts = verify_batch(messages, opener, selection);
        for ((seq, at), verdict) in order.into_iter().zip(verdicts) {
            if out_tx.send(Verified { seq, at, verdict }).is_err() {
                return;
            }
        }
    }
}

/// The writer stage: what it needs besides the sink.
struct Writer<'a> {
    /// The topic read, for logs and kept messages.
    topic: &'a str,
    /// See [`PipelineOptions::report_missing_after`].
    report_missing_after: Duration,
    /// Where publication times are observed.
    stats: &'a DownloadStats,
    /// What to do with each verdict (counters, kept messages, advice on other formats).
    verdicts: Verdicts<'a>,
    /// Retries the not-yet-openable ones.
    replay: Replay,
}

impl Writer<'_> {
    /// Handles verified messages in poll order, flushes, reports durable offsets.
    fn run<S: ChunkSink>(
        mut self,
        out_rx: Receiver<Verified>,
        mut sink: S,
        commit_tx: &Sender<HashMap<i32, i64>>,
        in_flight: &AtomicU64,
    ) -> std::io::Result<()> {
        let mut reorder: BTreeMap<u64, Verified> = BTreeMap::new();
        let mut next_seq = 0u64;
        let mut offsets = CommitTracker::default();
        let mut oldest_unflushed: Option<Instant> = None;
        let mut last_stall_check = Instant::now();
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
                let MessagePosition { partition, offset } = v.at;
                offsets.handled(partition, offset);
                match self
                    .verdicts
                    .apply(v.verdict, self.topic, v.at, &mut sink)?
                {
                    Applied::Chunk(file) if sink.is_in_progress(&file.id) => {
                        offsets.unfinished(&file, partition, offset)
                    }
                    Applied::Chunk(file) => self.finished(&mut offsets, &file.id, &file.relative),
                    Applied::Done => {}
                    Applied::NotYet { .. }
                        if self.verdicts.kept.deferred.already_kept(self.topic, v.at) =>
                    {
                        debug!(
                            topic = self.topic,
                            partition,
                            offset,
                            "message read again; already kept until it can be opened"
                        );
                    }
                    // Not openable yet (its key has not come): held by the replay, its offset
                    // pinned, and the writer goes on with the next message. Still in flight
                    // (an idle exit waits for it) until released.
                    Applied::NotYet { reason, message } => {
                        self.replay.hold(self.topic, v.at, message, reason);
                        offsets.unfinished(&Replay::pin(v.at), partition, offset);
                        continue;
                    }
                }
                oldest_unflushed.get_or_insert_with(Instant::now);
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            let retried = self.replay.maybe_retry(&mut self.verdicts, &mut sink)?;
            for (file, at) in &retried.chunks {
                match at {
                    Some(at) if sink.is_in_progress(&file.id) => {
                        offsets.unfinished(file, at.partition, at.offset)
                    }
                    _ if !sink.is_in_progress(&file.id) => {
                        self.finished(&mut offsets, &file.id, &file.relative)
                    }
                    _ => {}
                }
                oldest_unflushed.get_or_insert_with(Instant::now);
            }
            for at in &retried.released {
                offsets.finished(&Replay::pin(*at).id);
            }
            if last_stall_check.elapsed() >= STALL_CHECK_EVERY {
                last_stall_check = Instant::now();
                self.report_stalled(&mut offsets, &sink);
            }
            in_flight.fetch_sub(retried.released.len() as u64, Ordering::AcqRel);
            let due = oldest_unflushed.is_some_and(|t| idle || t.elapsed() >= FLUSH_INTERVAL)
                || sink.unflushed_bytes() >= FLUSH_BYTES;
            if due {
                flush(&mut sink, &mut offsets, commit_tx, self.stats)?;
                self.replay.flushed(&mut self.verdicts.kept);
                oldest_unflushed = None;
            }
        }
        // Held messages go to disk before the end: the topic may not keep them until next time.
        for at in self.replay.keep_all_held(&mut self.verdicts.kept) {
            offsets.finished(&Replay::pin(at).id);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        flush(&mut sink, &mut offsets, commit_tx, self.stats)?;
        self.replay.flushed(&mut self.verdicts.kept);
        Ok(())
    }
}

impl Writer<'_> {
    /// A file is whole here (or set aside): its partitions are no longer held back, and if it
    /// had been reported as missing chunks, it is not any more.
    fn finished(&self, offsets: &mut CommitTracker, id: &str, relative: &str) {
        if offsets.finished(id) {
            self.stats
                .files_missing_chunks
                .fetch_sub(1, Ordering::Relaxed);
            info!(path = %relative, "the chunks reported missing arrived after all");
        }
    }

    /// Reports the unfinished files whose missing chunks are behind messages already read.
    fn report_stalled(&self, offsets: &mut CommitTracker, sink: &impl ChunkSink) {
        for stalled in offsets.newly_stalled(self.report_missing_after) {
            DownloadStats::add(&self.stats.files_missing_chunks, 1);
            let missing = sink
                .missing_chunks(&stalled.id)
                .unwrap_or_else(|| "some chunks".into());
            warn!(
                topic = self.topic,
                path = %stalled.relative,
                missing = %missing,
                idle_s = stalled.idle.as_secs(),
                "file incomplete: its partition moved past these chunks and they never came, so \
                 the broker lost them (acknowledged, then gone: a broker crash) or the uploader \
                 gave up; upload the file again. Its staged part is kept (see \
                 --discard-partials-after-days)"
            );
        }
    }
}

/// Makes everything handled durable, then hands the offsets that may now be committed to the
/// poll thread. This is where a post-publish step belongs: after the files and their log are
/// durable, outside the sink.
fn flush(
    sink: &mut impl ChunkSink,
    offsets: &mut CommitTracker,
    commit_tx: &Sender<HashMap<i32, i64>>,
    stats: &DownloadStats,
) -> std::io::Result<()> {
    for file in sink.flush()? {
        stats
            .first_chunk_to_published
            .observe(file.since_first_chunk);
        info!(path = %file.relative, "file rebuilt and verified");
    }
    let committable = offsets.committable();
    if !committable.is_empty() {
        let _ = commit_tx.send(committable);
    }
    Ok(())
}
