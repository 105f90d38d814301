//! The relay's [`ChunkSink`]: each verified chunk message is produced, as it was read, to every
//! destination topic its file is routed to. *Durable* means acknowledged by the destination
//! (`acks=all`): a flush waits for every message produced since the last one, so the pipeline
//! commits a source offset only once everything selected before it is on the other side.
//!
//! Nothing is rebuilt here: the relay holds no file, only the messages in flight (bounded by the
//! producers' windows), and a file is never "in progress" for the commit tracking, because
//! each of its messages is complete once acknowledged. A crash re-relays from the last commit:
//! the far side's readers skip the repeated chunks as duplicates.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::routes::Routes;
use crate::contract::{Accepted, ChunkMessage, ChunkSink, Envelope, PublishedFile, VerifiedChunk};
use crate::kafka::partition::partition_for_path;
use crate::kafka::producer::{ChunkProducer, ChunkTag, FileDelivery, ProduceError};
use crate::targeting::HOSTNAME_HEADER;

/// How long a flush waits for acknowledgements before giving up: a little over librdkafka's
/// default `message.timeout.ms` (300 s), after which librdkafka itself fails the messages and
/// says why (a broker down for seconds only delays the flush).
const ACK_TIMEOUT: Duration = Duration::from_secs(330);

/// One destination topic: its producer (on the destination cluster), its partition count and
/// the envelope its messages pass through (`--to-host`, encryption for the destination).
pub struct Destination {
    /// The topic.
    pub topic: String,
    /// Connected, topic checked.
    pub producer: ChunkProducer,
    /// Partitions of the topic: a file's partition is chosen among them by its path, as an
    /// upload chooses it.
    pub partitions: i32,
    /// Applied to every message (None: relayed exactly as read).
    pub envelope: Option<Arc<dyn Envelope>>,
    /// Messages acknowledged (for `check`, the summary and metrics).
    pub relayed: AtomicU64,
    /// File bytes (chunk data) in the acknowledged messages.
    pub relayed_bytes: AtomicU64,
}

/// What one flush period has sent to one destination (its acknowledgements are counted here).
struct Period {
    delivery: Arc<FileDelivery>,
    data_bytes: u64,
}

impl Period {
    fn new() -> Self {
        Period {
            delivery: FileDelivery::new(),
            data_bytes: 0,
        }
    }
}

/// The relay's sink (see the module docs).
pub struct RelaySink {
    destinations: Arc<Vec<Destination>>,
    routes: Routes,
    /// `--to-host` given: the `hostname` headers read are replaced by the destination's
    /// envelope, not kept beside them.
    readdress: bool,
    periods: Vec<Period>,
    unflushed: u64,
    cancel: CancellationToken,
}

impl RelaySink {
    /// A sink producing to `destinations` (in the order of `routes.topics()`).
    pub fn new(
        destinations: Arc<Vec<Destination>>,
        routes: Routes,
        readdress: bool,
        cancel: CancellationToken,
    ) -> Self {
        let periods = destinations.iter().map(|_| Period::new()).collect();
        RelaySink {
            destinations,
            routes,
            readdress,
            periods,
            unflushed: 0,
            cancel,
        }
    }

    fn produce(&mut self, d: usize, chunk: &VerifiedChunk) -> Result<(), ProduceError> {
        let destination = &self.destinations[d];
        let period = &mut self.periods[d];
        let partition = partition_for_path(&chunk.version.relative, destination.partitions);
        let tag = ChunkTag {
            file: Arc::clone(&period.delivery),
            index: period.delivery.queued(),
            bytes: chunk.data.len(),
        };
        period.data_bytes += chunk.data.len() as u64;
        let keep_header =
            |(name, _): &&(String, Vec<u8>)| !(self.readdress && name == HOSTNAME_HEADER);
        match &destination.envelope {
            // The common case: the message as read, without a copy of its own.
            None if !self.readdress => destination.producer.send(
                partition,
                chunk.key.as_deref(),
                &chunk.payload,
                &chunk.headers,
                &tag,
                &self.cancel,
            ),
            envelope => {
                let mut message = ChunkMessage {
                    partition,
                    key: chunk.key.clone().unwrap_or_default(),
                    value: chunk.payload.clone(),
                    headers: chunk.headers.iter().filter(keep_header).cloned().collect(),
                };
                if let Some(envelope) = envelope {
                    envelope.seal(&mut message);
                }
                destination.producer.send(
                    partition,
                    Some(&message.key),
                    &message.value,
                    &message.headers,
                    &tag,
                    &self.cancel,
                )
            }
        }
    }
}

/// A producer's failure as the pipeline's write error. A stop requested while messages were in
/// flight is `Interrupted`: nothing after the last acknowledged flush was committed.
fn io_error(e: ProduceError) -> io::Error {
    let kind = match e {
        ProduceError::Cancelled { .. } => io::ErrorKind::Interrupted,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

impl ChunkSink for RelaySink {
    const DESTINATION: &'static str = "the destination topic";

    fn accept(&mut self, chunk: &mut VerifiedChunk) -> io::Result<Accepted> {
        let targets = self.routes.destinations(&chunk.version.relative);
        if targets.is_empty() {
            return Ok(Accepted::NotWanted);
        }
        for d in targets {
            self.produce(d, chunk).map_err(io_error)?;
        }
        self.unflushed += chunk.data.len() as u64;
        Ok(Accepted::Written)
    }

    fn is_in_progress(&self, _id: &str) -> bool {
        // A message is complete on its own once acknowledged (see the module docs).
        false
    }

    fn unflushed_bytes(&self) -> u64 {
        self.unflushed
    }

    fn flush(&mut self) -> io::Result<Vec<PublishedFile>> {
        let started = Instant::now();
        let mut cancelled_at: Option<Instant> = None;
        for (d, destination) in self.destinations.iter().enumerate() {
            let period = &self.periods[d];
            loop {
                if self.cancel.is_cancelled() {
                    cancelled_at.get_or_insert_with(Instant::now);
                }
                let status = destination.producer.file_status(
                    &period.delivery,
                    period.delivery.queued(),
                    started.elapsed(),
                    ACK_TIMEOUT,
                    cancelled_at.map(|t| t.elapsed()),
                );
                match status {
                    Some(Ok(())) => break,
                    Some(Err(e)) => return Err(io_error(e)),
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            let acked = period.delivery.acked();
            destination.relayed.fetch_add(acked, Ordering::Relaxed);
            destination
                .relayed_bytes
                .fetch_add(period.data_bytes, Ordering::Relaxed);
        }
        for period in &mut self.periods {
            *period = Period::new();
        }
        self.unflushed = 0;
        Ok(Vec::new())
    }
}
