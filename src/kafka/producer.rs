//! The chunk producer: a librdkafka producer whose delivery reports are counted, so a command
//! can tell exactly whether every chunk it sent was acknowledged by the broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tokio_util::sync::CancellationToken;

use super::client::{bootstrap_servers, create_client, KafkaSetupError};
use super::context::{log_client_error, log_librdkafka};
use super::topic::{check_topic, TopicError, TopicInfo};
use super::window::Window;
use crate::chunk::RangeSet;
use crate::config::LoadedConfig;
use crate::progress::ActiveTime;
use tracing::warn;

/// librdkafka's queue is capped at this many KiB: it is the back-pressure that keeps memory
/// flat however large the file (or however many files), and 32 MiB (64 chunks of 512 KiB)
/// keeps the broker busy.
pub const QUEUE_MAX_KBYTES: u64 = 32 * 1024;

/// Producer settings openmsi picks when the config file is silent, and why. `max_message_bytes`
/// is the largest message the command will produce.
pub fn producer_defaults(max_message_bytes: usize) -> Vec<(&'static str, String)> {
    vec![
        // A chunk is only "sent" when every in-sync replica has it.
        ("acks", "all".into()),
        // No duplicates or reordering from librdkafka's own retries.
        ("enable.idempotence", "true".into()),
        ("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES.to_string()),
        // Chunks bigger than librdkafka's 1 MB default must still be accepted client-side;
        // the broker's own limit is reported clearly if it is lower.
        (
            "message.max.bytes",
            max_message_bytes.max(1_000_000).to_string(),
        ),
        ("batch.size", max_message_bytes.max(1_000_000).to_string()),
    ]
}

/// After a stop is requested, chunks already queued get this long to be acknowledged (so a
/// stop does not throw away what is nearly delivered), then the wait gives up.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Counts of what was handed to librdkafka and what the broker acknowledged.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    /// Messages accepted into librdkafka's queue.
    sent: AtomicU64,
    /// Messages the broker acknowledged.
    delivered: AtomicU64,
    /// Payload bytes the broker acknowledged (for progress and throughput).
    delivered_bytes: AtomicU64,
    /// Messages that failed for good (after librdkafka's own retries), and the first reason.
    failures: Failures,
    /// Largest payload queued, to say how big a rejected message was.
    largest_payload: AtomicU64,
    /// How long acknowledgements were arriving (for a rate that leaves out idle time).
    active: ActiveTime,
}

impl DeliveryTracker {
    /// Messages handed to librdkafka so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }
    /// Messages acknowledged by the broker so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }
    /// Payload bytes acknowledged so far.
    pub fn delivered_bytes(&self) -> u64 {
        self.delivered_bytes.load(Ordering::Acquire)
    }
    /// How long acknowledgements kept arriving (pauses of more than a few seconds left out).
    pub fn active_time(&self) -> Duration {
        self.active.active()
    }
    /// Messages that failed for good.
    pub fn failed(&self) -> u64 {
        self.failures.count()
    }
    /// The first delivery failure, if any.
    pub fn first_error(&self) -> Option<KafkaError> {
        self.failures.first()
    }
}

/// Failures for good of a set of messages: how many, and the first reason (what the user is
/// told). Shared by the run-wide and the per-file accounting.
#[derive(Debug, Default)]
struct Failures {
    count: AtomicU64,
    first: Mutex<Option<KafkaError>>,
}

impl Failures {
    fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
    fn first(&self) -> Option<KafkaError> {
        crate::sync::lock(&self.first).clone()
    }
    fn record(&self, error: KafkaError) {
        self.count.fetch_add(1, Ordering::AcqRel);
        crate::sync::lock(&self.first).get_or_insert(error);
    }
}

/// Delivery accounting of one file sent through a shared producer: several files can be in
/// flight at once, and each must know on its own whether all its chunks were acknowledged.
#[derive(Debug, Default)]
pub struct FileDelivery {
    /// Chunks of this file handed to librdkafka (this attempt).
    queued: AtomicU64,
    /// Chunks of this file the broker acknowledged.
    acked: AtomicU64,
    /// File bytes of this file the broker acknowledged.
    acked_bytes: AtomicU64,
    /// Chunks of this file that failed for good, and the first reason (why it was not sent).
    failures: Failures,
    /// Indices of the acknowledged chunks (compact ranges), so an interrupted upload can be
    /// resumed with only the chunks the broker does not have.
    acked_chunks: Mutex<RangeSet>,
}

impl FileDelivery {
    /// A fresh tracker, shared between the sender and the delivery callback.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Chunks handed to librdkafka so far (this attempt).
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }
    /// Chunks acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }
    /// File bytes acknowledged so far.
    pub fn acked_bytes(&self) -> u64 {
        self.acked_bytes.load(Ordering::Acquire)
    }
    /// Chunks that failed for good.
    pub fn failed(&self) -> u64 {
        self.failures.count()
    }
    /// The first delivery failure of this file, if any.
    pub fn first_error(&self) -> Option<KafkaError> {
        self.failures.first()
    }
    /// Indices (0-based) of the chunks acknowledged so far.
    pub fn acked_chunks(&self) -> RangeSet {
        crate::sync::lock(&self.acked_chunks).clone()
    }
}

/// Which chunk of which file a message is: what its delivery report is credited to.
#[derive(Clone)]
pub struct ChunkTag {
    /// The file's delivery tracker.
    pub file: Arc<FileDelivery>,
    /// The chunk's 0-based index (recorded as acknowledged, for resuming).
    pub index: u64,
    /// File bytes the chunk carries: what its acknowledgement adds to the file's and the global
    /// acknowledged bytes (data, not envelope bytes, so progress and throughput count data).
    pub bytes: usize,
}

/// What a queued message's delivery report carries: the chunk, and the room it takes in the
/// window.
struct Queued {
    tag: ChunkTag,
    message_bytes: u64,
}

/// Producer context: logging plus delivery accounting, globally and per file.
struct DeliveryContext {
    tracker: Arc<DeliveryTracker>,
    /// Room in librdkafka's queue (see [`Window`]).
    window: Arc<Window>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::metrics::kafka::record(&statistics);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Queued>;

    fn delivery(&self, result: &DeliveryResult<'_>, queued: Box<Queued>) {
        self.window.release(queued.message_bytes);
        let tag = queued.tag;
        match result {
            Ok(_) => {
                crate::sync::lock(&tag.file.acked_chunks).insert(tag.index);
                // The file's counters first: the global count reaching `sent` must imply every
                // file's own count is final.
                tag.file
                    .acked_bytes
                    .fetch_add(tag.bytes as u64, Ordering::AcqRel);
                tag.file.acked.fetch_add(1, Ordering::AcqRel);
                self.tracker
                    .delivered_bytes
                    .fetch_add(tag.bytes as u64, Ordering::AcqRel);
                self.tracker.delivered.fetch_add(1, Ordering::AcqRel);
                self.tracker.active.mark();
            }
            Err((error, _message)) => {
                tag.file.failures.record(error.clone());
                self.tracker.failures.record(error.clone());
            }
        }
    }
}

/// Why producing failed, phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("the broker rejected a message of {bytes} bytes as too large. Use a smaller --chunk-size, or raise message.max.bytes on the broker/topic")]
    TooLarge { bytes: usize },
    #[error("{failed} of {sent} messages were not acknowledged by {brokers}: {first}")]
    NotDelivered {
        failed: u64,
        sent: u64,
        brokers: String,
        first: String,
    },
    #[error("{pending} of {sent} messages were still unacknowledged after waiting {secs} s for {brokers}")]
    Timeout {
        pending: u64,
        sent: u64,
        secs: u64,
        brokers: String,
    },
    #[error("interrupted: {pending} of {sent} messages were not acknowledged")]
    Cancelled { pending: u64, sent: u64 },
    #[error("could not hand a message to librdkafka: {0}")]
    Enqueue(KafkaError),
}

/// A producer for one topic with delivery tracking.
pub struct ChunkProducer {
    /// Replaced by a new client after librdkafka's fatal error (see [`Self::replace_if_fatal`]).
    inner: RwLock<ThreadedProducer<DeliveryContext>>,
    /// What the client was made from, to make a new one.
    cfg: ClientConfig,
    source: LoadedConfig,
    tracker: Arc<DeliveryTracker>,
    /// Room in librdkafka's queue, shared with the delivery callback.
    window: Arc<Window>,
    topic: String,
    /// For messages that must name the broker.
    brokers: String,
}

/// librdkafka (2.10 on) drops its bootstrap connection as soon as the first metadata answer
/// names the brokers. An idempotent producer's first InitProducerId request often went out on
/// that connection and is lost with it; librdkafka then asks again only after a fixed 500 ms, and
/// no message goes out before. Every metadata answer also re-runs that request when it is due,
/// so one more metadata request, answered by the named broker, gets the producer id at once.
/// Measured on tansu with 2,000 files waiting (bench/results/2026-11-30-small-files-producer-id.md):
/// first acknowledgement 0.52 s after start in 4 of 10 runs without this, 0.08-0.09 s in all 10
/// with it. A failure here changes nothing (the next produce finds out and says so).
fn ask_for_producer_id_now(producer: &ThreadedProducer<DeliveryContext>, topic: &str) {
    let _ = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(1));
}

impl ChunkProducer {
    /// Creates the producer and checks, within `connect_timeout`, that the topic exists.
    pub fn connect(
        cfg: &ClientConfig,
        source: &LoadedConfig,
        topic: &str,
        connect_timeout: Duration,
    ) -> Result<(Self, TopicInfo), ProduceError> {
        let tracker = Arc::new(DeliveryTracker::default());
        // Sized for the topic's partitions once they are known (nothing is produced before).
        let window = Arc::new(Window::for_config(cfg, 1));
        let context = DeliveryContext {
            tracker: Arc::clone(&tracker),
            window: Arc::clone(&window),
        };
        let inner: ThreadedProducer<DeliveryContext> =
            create_client(cfg, context, source, "producer")?;
        let brokers = bootstrap_servers(cfg);
        // The producer's own thread serves its events.
        let info = check_topic(inner.client(), cfg, topic, connect_timeout, &|| {})?;
        ask_for_producer_id_now(&inner, topic);
        window.set_partitions(info.partitions);
        Ok((
            Self {
                inner: RwLock::new(inner),
                cfg: cfg.clone(),
                source: source.clone(),
                tracker,
                window,
                topic: topic.to_string(),
                brokers,
            },
            info,
        ))
    }

    fn client(&self) -> std::sync::RwLockReadGuard<'_, ThreadedProducer<DeliveryContext>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// After librdkafka's fatal error the client refuses every message for good (seen when an
    /// idempotent producer moved to another broker that did not know its sequence numbers:
    /// OutOfOrderSequenceNumber). The messages it held fail (their files are sent again by the
    /// caller, as after any failure) and a new client with the same settings and counters takes
    /// its place.
    fn replace_if_fatal(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have replaced it already.
        let Some((code, reason)) = inner.client().fatal_error() else {
            return;
        };
        let context = DeliveryContext {
            tracker: Arc::clone(&self.tracker),
            window: Arc::clone(&self.window),
        };
        match create_client::<_, ThreadedProducer<DeliveryContext>>(
            &self.cfg,
            context,
            &self.source,
            "producer",
        ) {
            Ok(fresh) => {
                warn!(error = %reason, code = ?code, "the Kafka producer hit a fatal error; its unacknowledged messages are sent again with a new one");
                // Dropping the old one purges what it held: those deliveries are reported as
                // failed, so their files are retried and their room in the window is freed.
                let old = std::mem::replace(&mut *inner, fresh);
                drop(inner);
                drop(old);
            }
            Err(e) => {
                warn!(error = %e, "the Kafka producer hit a fatal error and a new one could not be made; trying again with the next message")
            }
        }
    }

    /// Delivery counters.
    pub fn tracker(&self) -> &DeliveryTracker {
        &self.tracker
    }

    /// Queues one message, chunk `chunk` of its file, for `partition`, with `headers` (none for
    /// openmsi's own plaintext chunks; a relay passes on what it read, a missing key included). Waits while librdkafka's queue is full (that is the
    /// back-pressure that bounds memory), and stops early once an earlier chunk of the same
    /// file has failed for good, since that file can no longer arrive whole (other files are
    /// not affected).
    pub fn send(
        &self,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(String, Vec<u8>)],
        chunk: &ChunkTag,
        cancel: &CancellationToken,
    ) -> Result<(), ProduceError> {
        let file = &chunk.file;
        let message_bytes = (key.map_or(0, <[u8]>::len) + value.len()) as u64;
        if !self.window.acquire(message_bytes, cancel) {
            return Err(self.cancelled());
        }
        loop {
            if file.failed() > 0 {
                self.window.release(message_bytes);
                return Err(self.file_failure(file));
            }
            let queued = Box::new(Queued {
                tag: chunk.clone(),
                message_bytes,
            });
            let mut record = BaseRecord::with_opaque_to(&self.topic, queued)
                .partition(partition)
                .payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            if !headers.is_empty() {
                let owned = headers
                    .iter()
                    .fold(OwnedHeaders::new(), |h, (name, value)| {
                        h.insert(Header {
                            key: name,
                            value: Some(value),
                        })
                    });
                record = record.headers(owned);
            }
            let sent = self.client().send(record);
            match sent {
                Ok(()) => {
                    file.queued.fetch_add(1, Ordering::AcqRel);
                    self.tracker.sent.fetch_add(1, Ordering::AcqRel);
                    self.tracker
                        .largest_payload
                        .fetch_max(value.len() as u64, Ordering::AcqRel);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if cancel.is_cancelled() {
                        self.window.release(message_bytes);
                        return Err(self.cancelled());
                    }
                    // The producer's own thread is polling; just give it room.
                    thread::sleep(Duration::from_millis(2));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    self.window.release(message_bytes);
                    return Err(ProduceError::TooLarge { bytes: value.len() });
                }
                Err((e, _)) => {
                    self.window.release(message_bytes);
                    if matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::Fatal)) {
                        self.replace_if_fatal();
                    }
                    return Err(ProduceError::Enqueue(e));
                }
            }
        }
    }

    /// Waits until every queued message is acknowledged or failed, `timeout` passes, or
    /// `cancel` fires (then waits a short grace period to flush what is in flight).
    /// `on_tick` runs every ~100 ms with the acknowledged byte count, for progress.
    pub fn wait_for_deliveries(
        &self,
        timeout: Duration,
        cancel: &CancellationToken,
        on_tick: &mut dyn FnMut(u64),
    ) -> Result<(), ProduceError> {
        let started = Instant::now();
        let mut cancelled_at: Option<Instant> = None;
        loop {
            let t = &self.tracker;
            if t.delivered() + t.failed() >= t.sent() {
                break;
            }
            if cancel.is_cancelled() && cancelled_at.is_none() {
                cancelled_at = Some(Instant::now());
            }
            if let Some(at) = cancelled_at {
                if at.elapsed() > CANCEL_GRACE {
                    return Err(self.cancelled());
                }
            }
            if started.elapsed() > timeout {
                return Err(ProduceError::Timeout {
                    pending: t.sent() - t.delivered() - t.failed(),
                    sent: t.sent(),
                    secs: timeout.as_secs(),
                    brokers: self.brokers.clone(),
                });
            }
            // flush() returns early once the queue is empty; the short slice keeps us
            // responsive to cancellation.
            let _ = self.client().flush(Duration::from_millis(100));
            on_tick(t.delivered_bytes());
        }
        if self.tracker.failed() > 0 {
            return Err(self.failure());
        }
        if cancelled_at.is_some() {
            // Everything in flight was delivered, but the caller stopped early.
            return Err(self.cancelled());
        }
        Ok(())
    }

    /// Where one file's acknowledgements stand: None while chunks are still in flight,
    /// Some(Ok) once all `n_chunks` are acknowledged, Some(Err) once one failed for good, the
    /// file has waited longer than `timeout`, or a stop was requested `cancelled_for` ago and
    /// the grace period to flush what is in flight is over. The producer's own thread serves
    /// delivery reports; this only reads the file's counters.
    pub fn file_status(
        &self,
        file: &FileDelivery,
        n_chunks: u64,
        waited: Duration,
        timeout: Duration,
        cancelled_for: Option<Duration>,
    ) -> Option<Result<(), ProduceError>> {
        if file.failed() > 0 {
            return Some(Err(self.file_failure(file)));
        }
        if file.acked() >= n_chunks {
            return Some(Ok(()));
        }
        if cancelled_for.is_some_and(|d| d > CANCEL_GRACE) {
            return Some(Err(ProduceError::Cancelled {
                pending: n_chunks - file.acked(),
                sent: n_chunks,
            }));
        }
        if waited > timeout {
            return Some(Err(ProduceError::Timeout {
                pending: n_chunks - file.acked(),
                sent: n_chunks,
                secs: timeout.as_secs(),
                brokers: self.brokers.clone(),
            }));
        }
        None
    }

    /// The error for a file with a failed chunk.
    fn file_failure(&self, file: &FileDelivery) -> ProduceError {
        match file.first_error() {
            Some(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                ProduceError::TooLarge {
                    bytes: self.tracker.largest_payload.load(Ordering::Acquire) as usize,
                }
            }
            // This file's own counts: other files share the producer.
            first => ProduceError::NotDelivered {
                failed: file.failed(),
                sent: file.queued(),
                brokers: self.brokers.clone(),
                first: first.map_or_else(|| "unknown error".to_string(), |e| e.to_string()),
            },
        }
    }

    fn cancelled(&self) -> ProduceError {
        let t = &self.tracker;
        ProduceError::Cancelled {
            pending: t.sent().saturating_sub(t.delivered()),
            sent: t.sent(),
        }
    }

    fn failure(&self) -> ProduceError {
        let t = &self.tracker;
        match t.first_error() {
            Some(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                ProduceError::TooLarge {
                    bytes: t.largest_payload.load(Ordering::Acquire) as usize,
                }
            }
            first => ProduceError::NotDelivered {
                failed: t.failed(),
                sent: t.sent(),
                brokers: self.brokers.clone(),
                first: first.map_or_else(|| "unknown error".to_string(), |e| e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use std::path::Path;

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < until, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn tag(file: &Arc<FileDelivery>, index: u64) -> ChunkTag {
        ChunkTag {
            file: Arc::clone(file),
            index,
            bytes: 5,
        }
    }

    /// The failover path a tansu cluster takes (OutOfOrderSequenceNumber after a producer moved
    /// brokers), made on demand: librdkafka's test hook puts the client in its fatal state.
    #[test]
    fn a_client_in_librdkafkas_fatal_state_is_replaced_and_the_next_attempt_is_delivered() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("fatal", 1, 1).unwrap();
        let text = format!(
            "[broker]\nbootstrap.servers = {}\n",
            cluster.bootstrap_servers()
        );
        let config =
            LoadedConfig::from_reader(Path::new("mock.config"), text.as_bytes(), &|_| None)
                .unwrap();
        // openmsi's defaults: an idempotent producer (librdkafka raises fatal errors only there).
        let defaults = producer_defaults(1024);
        let cfg =
            super::super::client::client_config(&config.producer_properties(), &defaults, &[]);
        let (producer, _) =
            ChunkProducer::connect(&cfg, &config, "fatal", Duration::from_secs(10)).unwrap();
        let never = CancellationToken::new();

        let before = FileDelivery::new();
        producer
            .send(0, None, b"hello", &[], &tag(&before, 0), &never)
            .unwrap();
        wait_until("the first chunk is acknowledged", || before.acked() == 1);

        let err = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.client().client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                c"made for the test".as_ptr(),
            )
        };
        assert_eq!(
            err,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
        );

        // The attempt that meets the fatal state fails (its file is retried by the caller)...
        let during = FileDelivery::new();
        let refused = producer.send(0, None, b"world", &[], &tag(&during, 0), &never);
        assert!(
            matches!(
                refused,
                Err(ProduceError::Enqueue(KafkaError::MessageProduction(
                    RDKafkaErrorCode::Fatal
                )))
            ),
            "{:?}",
            refused.err()
        );
        assert!(
            producer.client().client().fatal_error().is_none(),
            "not replaced"
        );
        // ...and the retry goes out through the new client.
        let after = FileDelivery::new();
        producer
            .send(0, None, b"world", &[], &tag(&after, 0), &never)
            .unwrap();
        wait_until("the retried chunk is acknowledged", || after.acked() == 1);
        producer
            .wait_for_deliveries(Duration::from_secs(10), &never, &mut |_| {})
            .unwrap();
        assert_eq!(producer.tracker().delivered(), 2);
    }
}
