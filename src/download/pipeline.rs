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
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::foreign::{Foreign, ForeignReport};
use super::offsets::{ChunkFile, CommitTracker};
use super::rejects::{KeptAside, RejectStore};
use super::replay::Replay;
use super::stats::DownloadStats;
use super::verify::{verify, Formats, Selection, Verdict};
use crate::contract::MessagePosition;
use crate::contract::{Accepted, ChunkSink, VerifiedChunk};
use crate::contract::{Opener, RawMessage};
use crate::kafka::ConsumerLogContext;
use crate::state::is_out_of_space;

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
    /// When nothing was assigned for this long, leave and rejoin the group (see [`Rejoin`]).
    pub rejoin_unassigned_after: Duration,
}

/// A member with no partition for longer than a session leaves and rejoins the group.
///
/// A downloader restarted right after a crash joins while its dead predecessor is still a
/// member; the rebalance hands the partitions to the dead member, and a broker that does not
/// rebalance again when that member's session expires (tansu 0.6.0; measured: nothing assigned
/// for minutes) leaves them unread. The same broker sometimes revokes every partition from the
/// survivor when a killed member expires and never assigns them again (seen once in the
/// killed-member takeover test). The new rebalance a rejoin starts no longer sees the dead
/// member. A member that is idle because the group has more members than partitions would
/// rejoin for nothing, so the wait doubles after each rejoin (up to [`REJOIN_MAX_WAIT`]) and
/// returns to one session once partitions are assigned.
struct Rejoin {
    /// How long to be without partitions before rejoining.
    first_wait: Duration,
    wait: Duration,
    /// Since when no partition is assigned (None: some are).
    unassigned_since: Option<Instant>,
    /// When the assignment was last looked at (it is looked at once a second).
    looked_at: Instant,
}

/// The longest an unassigned member waits between rejoins.
const REJOIN_MAX_WAIT: Duration = Duration::from_secs(600);

impl Rejoin {
    fn after(delay: Duration) -> Self {
        let now = Instant::now();
        Self {
            first_wait: delay,
            wait: delay,
            unassigned_since: Some(now),
            looked_at: now,
        }
    }

    /// Rejoins when no partition has been assigned for the current wait.
    fn check(&mut self, consumer: &BaseConsumer<ConsumerLogContext>, topic: &str) {
        let now = Instant::now();
        if now.duration_since(self.looked_at) < Duration::from_secs(1) {
            return;
        }
        self.looked_at = now;
        let unassigned = consumer
            .assignment()
            .map(|list| list.count() == 0)
            .unwrap_or(false);
        if !unassigned {
            self.unassigned_since = None;
            self.wait = self.first_wait;
            return;
        }
        let since = *self.unassigned_since.get_or_insert(now);
        if now.duration_since(since) < self.wait {
            return;
        }
        info!(topic, waited_s = self.wait.as_secs(), "no partition assigned for longer than a session (a crashed member may still hold them, or the group has more members than partitions); leaving and rejoining the group");
        consumer.unsubscribe();
        if let Err(e) = consumer.subscribe(&[topic]) {
            warn!(topic, error = %e, "rejoining the consumer group failed");
        }
        self.unassigned_since = Some(now);
        self.wait = (self.wait * 2).min(REJOIN_MAX_WAIT);
    }
}

/// Why the pipeline failed. (A requested stop is not a failure: it is
/// [`StopReason::Requested`], after everything read was written, flushed and committed.)
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The sink could not write (disk full, permissions): nothing after the last durable chunk
    /// was committed, so a restart resumes from there.
    #[error(
        "stopped: could not write to the output folder: {source}. Nothing after the last durable \
         chunk was committed; fix the problem{} and start again with the same --group-id to \
         resume",
        if is_out_of_space(source) { " (free some space)" } else { "" }
    )]
    Write {
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
    consumer: &BaseConsumer<ConsumerLogContext>,
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
        let in_rx = Arc::new(Mutex::new(in_rx));
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
                    stats: &stats,
                    formats: options.selection.formats,
                    decrypting: options.opener.decrypts(),
                    foreign: ForeignReport::default(),
                    kept,
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
        written.map_err(|source| PipelineError::Write { source })?;
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
        rejoin.check(consumer, &options.topic);
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

fn all_assigned_at_end(consumer: &BaseConsumer<ConsumerLogContext>, at_end: &HashSet<i32>) -> bool {
    match consumer.assignment() {
        Ok(list) => {
            let elements = list.elements();
            !elements.is_empty() && elements.iter().all(|e| at_end.contains(&e.partition()))
        }
        Err(_) => false,
    }
}

/// Where this member started reading each partition it owns now. With the cooperative
/// assignor a partition can be revoked and later come back, after another member read (and
/// committed) past where we stopped; the offsets our writer computes for it may still reflect
/// pins from before. Committing those would move the group's offset backwards, so a partition's
/// commit never goes below where the current ownership started reading, and a partition no
/// longer owned is not committed at all (its new owner does that).
#[derive(Debug, Default)]
struct Ownership {
    /// Partition → first offset read since it was (last) assigned.
    read_from: HashMap<i32, i64>,
}

impl Ownership {
    /// A message of `partition` at `offset` was read.
    fn reading(&mut self, partition: i32, offset: i64) {
        self.read_from.entry(partition).or_insert(offset);
    }

    /// Forgets the partitions revoked since the last call.
    fn forget_revoked(&mut self, consumer: &BaseConsumer<ConsumerLogContext>) {
        for partition in consumer.context().take_revoked() {
            self.read_from.remove(&partition);
        }
    }

    /// The offsets of `offsets` this member may commit, raised to where its ownership began.
    fn clamp(&self, offsets: &HashMap<i32, i64>) -> HashMap<i32, i64> {
        offsets
            .iter()
            .filter_map(|(p, &next)| Some((*p, next.max(*self.read_from.get(p)?))))
            .collect()
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

/// A verification worker: CPU-heavy and stateless.
fn verify_worker(
    in_rx: &Mutex<Receiver<Incoming>>,
    out_tx: &SyncSender<Verified>,
    opener: &dyn Opener,
    selection: &Selection,
) {
    loop {
        let incoming = {
            let rx = in_rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            }
        };
        let verdict = verify(incoming.message, incoming.at, opener, selection);
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

/// The writer stage: what it needs besides the sink.
struct Writer<'a> {
    /// The topic read, for logs and kept messages.
    topic: &'a str,
    stats: &'a DownloadStats,
    /// The formats read and whether messages are decrypted: to recognise messages of another
    /// format among the rejected ones.
    formats: Formats,
    decrypting: bool,
    /// Which other formats were already explained.
    foreign: ForeignReport,
    /// Where bad and not-yet-openable messages go.
    kept: KeptAside,
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
                // Not openable yet (its key has not come): held by the replay, its offset
                // pinned, and the writer goes on with the next message.
                let verdict = match v.verdict {
                    Verdict::Defer { reason, message }
                        if !self.kept.deferred.already_kept(self.topic, v.at) =>
                    {
                        // Still in flight (an idle exit waits for it) until released.
                        self.replay.hold(self.topic, v.at, message, reason);
                        offsets.unfinished(&Replay::pin(v.at), partition, offset);
                        continue;
                    }
                    other => other,
                };
                if let Some(file) = self.handle(verdict, v.at, &mut sink)? {
                    if sink.is_in_progress(&file.id) {
                        offsets.unfinished(&file, partition, offset);
                    } else {
                        offsets.finished(&file.id);
                    }
                }
                oldest_unflushed.get_or_insert_with(Instant::now);
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            let retried = self
                .replay
                .maybe_retry(&mut self.kept, &mut sink, self.stats)?;
            for (file, at) in &retried.chunks {
                match at {
                    Some(at) if sink.is_in_progress(&file.id) => {
                        offsets.unfinished(file, at.partition, at.offset)
                    }
                    _ if !sink.is_in_progress(&file.id) => offsets.finished(&file.id),
                    _ => {}
                }
                oldest_unflushed.get_or_insert_with(Instant::now);
            }
            for at in &retried.released {
                offsets.finished(&Replay::pin(*at).id);
            }
            in_flight.fetch_sub(retried.released.len() as u64, Ordering::AcqRel);
            let due = oldest_unflushed.is_some_and(|t| idle || t.elapsed() >= FLUSH_INTERVAL)
                || sink.unflushed_bytes() >= FLUSH_BYTES;
            if due {
                flush(&mut sink, &mut offsets, commit_tx)?;
                self.replay.flushed(&mut self.kept);
                oldest_unflushed = None;
            }
        }
        // Held messages go to disk before the end: the topic may not keep them until next time.
        for at in self.replay.keep_all_held(&mut self.kept) {
            offsets.finished(&Replay::pin(at).id);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        flush(&mut sink, &mut offsets, commit_tx)?;
        self.replay.flushed(&mut self.kept);
        Ok(())
    }

    /// Writes, skips or keeps aside one message; returns the file it is a chunk of.
    fn handle(
        &mut self,
        verdict: Verdict,
        at: MessagePosition,
        sink: &mut impl ChunkSink,
    ) -> std::io::Result<Option<ChunkFile>> {
        let (topic, stats) = (self.topic, self.stats);
        match verdict {
            Verdict::Chunk(chunk) => return accept(*chunk, topic, at, sink, stats).map(Some),
            Verdict::Skip => DownloadStats::add(&stats.skipped_messages, 1),
            Verdict::NotForUs => DownloadStats::add(&stats.other_hosts_messages, 1),
            Verdict::Defer { .. } if self.kept.deferred.already_kept(topic, at) => {
                debug!(
                    topic,
                    partition = at.partition,
                    offset = at.offset,
                    "message read again; already kept until it can be opened"
                );
            }
            // Held by the replay before `handle` is called.
            Verdict::Defer { .. } => {}
            Verdict::Reject { .. } if self.kept.rejected.already_kept(topic, at) => {
                debug!(topic, partition = at.partition, offset = at.offset, "bad message read again (an unfinished file held the committed offset before it); already kept aside");
                DownloadStats::add(&stats.skipped_messages, 1)
            }
            Verdict::Reject { reason, message } => {
                DownloadStats::add(&stats.rejected_messages, 1);
                let foreign = Foreign::of(&message, self.formats, self.decrypting);
                self.foreign.rejected(foreign, topic, at, &reason);
                let _ = keep(&mut self.kept.rejected, topic, at, &message, &reason);
            }
        }
        Ok(None)
    }
}

/// Keeps `message` read at `at` in `store`, with `reason`.
fn keep(
    store: &mut RejectStore,
    topic: &str,
    at: MessagePosition,
    message: &RawMessage,
    reason: &str,
) -> bool {
    let (key, value) = (message.key.as_deref(), message.value.as_deref());
    store.keep(topic, at, key, value, reason)
}

/// Hands one verified chunk to the sink; returns the file it is a chunk of.
fn accept(
    mut chunk: VerifiedChunk,
    topic: &str,
    at: MessagePosition,
    sink: &mut impl ChunkSink,
    stats: &DownloadStats,
) -> std::io::Result<ChunkFile> {
    match sink.accept(&mut chunk)? {
        Accepted::Written | Accepted::Completed => {}
        Accepted::Duplicate | Accepted::AlreadyComplete | Accepted::Superseded => {
            DownloadStats::add(&stats.duplicate_chunks, 1)
        }
        Accepted::HashMismatch => {
            error!(topic, partition = at.partition, offset = at.offset, path = %chunk.version.relative, "file failed whole-file verification")
        }
    }
    Ok(ChunkFile {
        id: chunk.id,
        relative: chunk.version.relative,
    })
}

/// Makes everything handled durable, then hands the offsets that may now be committed to the
/// poll thread. This is where a post-publish step belongs: after the files and their log are
/// durable, outside the sink.
fn flush(
    sink: &mut impl ChunkSink,
    offsets: &mut CommitTracker,
    commit_tx: &Sender<HashMap<i32, i64>>,
) -> std::io::Result<()> {
    for file in sink.flush()? {
        info!(path = %file.relative, "file rebuilt and verified");
    }
    let committable = offsets.committable();
    if !committable.is_empty() {
        let _ = commit_tx.send(committable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::PublishedFile;

    /// A sink that must never be reached.
    struct NoSink;

    impl ChunkSink for NoSink {
        fn accept(&mut self, _: &mut VerifiedChunk) -> std::io::Result<Accepted> {
            unreachable!("no chunk in this test")
        }
        fn is_in_progress(&self, _: &str) -> bool {
            false
        }
        fn unflushed_bytes(&self) -> u64 {
            0
        }
        fn flush(&mut self) -> std::io::Result<Vec<PublishedFile>> {
            Ok(Vec::new())
        }
    }

    /// An opener whose key "arrives" when told.
    struct KeyLater(std::sync::atomic::AtomicBool);

    impl Opener for KeyLater {
        fn open(&self, message: RawMessage, _at: MessagePosition) -> crate::contract::Opened {
            if self.0.load(Ordering::Acquire) {
                crate::contract::Opened::Readable(message)
            } else {
                crate::contract::Opened::NotYet {
                    reason: "key 17 not received yet".into(),
                    message,
                }
            }
        }

        fn generation(&self) -> u64 {
            u64::from(self.0.load(Ordering::Acquire))
        }
    }

    fn kept_aside(dir: &std::path::Path) -> KeptAside {
        KeptAside {
            rejected: RejectStore::open(&dir.join("rejected")).unwrap(),
            deferred: RejectStore::open(&dir.join("deferred")).unwrap(),
        }
    }

    fn waiting_message() -> RawMessage {
        RawMessage {
            key: Some(b"k".to_vec()),
            value: Some(b"ciphertext".to_vec()),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_message_held_too_long_is_kept_on_disk_once_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let stats = DownloadStats::default();
        let mut kept = kept_aside(dir.path());
        let opener = Arc::new(KeyLater(Default::default()));
        let mut replay = Replay::new(opener, Selection::default()).holding_for(Duration::ZERO);
        let at = MessagePosition {
            partition: 2,
            offset: 9,
        };
        replay.hold("t", at, waiting_message(), "key 17 not received yet".into());
        let retried = replay.maybe_retry(&mut kept, &mut NoSink, &stats).unwrap();
        assert_eq!(retried.released, vec![at]);
        assert_eq!(replay.held(), 0);
        assert!(kept.deferred.already_kept("t", at));
        let snap = stats.snapshot();
        assert_eq!((snap.deferred_messages, snap.rejected_messages), (1, 0));
        let file = dir.path().join("deferred/t-2-9");
        assert_eq!(
            std::fs::read(file.with_extension("value")).unwrap(),
            b"ciphertext"
        );
        let why = std::fs::read_to_string(file.with_extension("txt")).unwrap();
        assert!(why.contains("key 17 not received yet"), "{why}");
    }

    #[test]
    fn a_held_message_is_retried_from_memory_when_its_key_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let stats = DownloadStats::default();
        let mut kept = kept_aside(dir.path());
        let opener = Arc::new(KeyLater(Default::default()));
        let mut replay = Replay::new(Arc::clone(&opener) as Arc<dyn Opener>, Selection::default());
        let at = MessagePosition {
            partition: 0,
            offset: 4,
        };
        replay.hold("t", at, waiting_message(), "key 17 not received yet".into());
        // Nothing new: it stays held (its offset pinned by the writer), nothing on disk.
        let retried = replay.maybe_retry(&mut kept, &mut NoSink, &stats).unwrap();
        assert!(retried.released.is_empty() && retried.chunks.is_empty());
        assert_eq!((replay.held(), stats.snapshot().deferred_messages), (1, 1));
        assert!(!kept.deferred.already_kept("t", at));
        // The key arrives: the message opens (here into a bad chunk, so it is rejected) and is
        // released.
        opener.0.store(true, Ordering::Release);
        let retried = replay.maybe_retry(&mut kept, &mut NoSink, &stats).unwrap();
        assert_eq!(retried.released, vec![at]);
        assert_eq!(replay.held(), 0);
        let snap = stats.snapshot();
        assert_eq!((snap.deferred_messages, snap.rejected_messages), (0, 1));
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::*;

    #[test]
    fn commits_never_go_below_where_the_current_ownership_started_nor_to_partitions_not_owned() {
        let mut owned = Ownership::default();
        owned.reading(0, 100);
        owned.reading(0, 101);
        owned.reading(1, 7);
        // Partition 0 came back after another member committed 100; a pin from before (40)
        // must not move the group's offset back. Partition 2 is not ours.
        let offsets = HashMap::from([(0, 40), (1, 9), (2, 55)]);
        let clamped = owned.clamp(&offsets);
        assert_eq!(clamped, HashMap::from([(0, 100), (1, 9)]));
        owned.read_from.remove(&1);
        assert_eq!(owned.clamp(&offsets), HashMap::from([(0, 100)]));
    }
}
