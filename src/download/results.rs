//! `--result-topic`: the standard output of a successful `--on-file` command, produced as one
//! message per file version, as OpenMSIStream's `DataFileStreamReproducer` produces its
//! processing results: key `<subdir with / → _>_<filename>_chunk_processing_result`
//! ([`crate::chunk::key::result_key`]), value the output exactly as the command printed it (a
//! JSON document for OpenMSIStream's metadata reproducers). Encrypted like the data when the
//! downloader's config names a node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chunk::key::result_key;
use crate::config::LoadedConfig;
use crate::contract::{ChunkMessage, Envelope};
use crate::kafka::client_config;
use crate::kafka::partition::partition_for_path;
use crate::kafka::producer::{
    producer_defaults, ChunkProducer, ChunkTag, FileDelivery, ProduceError,
};

/// The largest result: what a broker takes in one message by default (1 MB, less room for the
/// key and an envelope). A longer output is not sent; the hook counts as failed and says why.
pub const MAX_RESULT_BYTES: usize = 900_000;

/// How long one result may wait for its acknowledgement; one not acknowledged stays due and
/// is sent again at the next start.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where results go.
pub trait ResultSink: Send {
    /// Sends the result of the file at `relative` and waits until it is acknowledged.
    fn send(&self, relative: &str, value: &[u8]) -> Result<(), String>;
}

/// The result topic's producer.
pub struct ResultProducer {
    producer: ChunkProducer,
    partitions: i32,
    envelope: Option<Arc<dyn Envelope>>,
    cancel: tokio_util::sync::CancellationToken,
}

impl ResultProducer {
    /// Connects to `topic` (checked within `timeout`: a missing topic fails at start).
    pub fn connect(
        config: &LoadedConfig,
        topic: &str,
        envelope: Option<Arc<dyn Envelope>>,
        timeout: Duration,
    ) -> Result<Self, ProduceError> {
        let cfg = client_config(
            &config.producer_properties(),
            &producer_defaults(
                MAX_RESULT_BYTES + 64 * 1024 + envelope.as_ref().map_or(0, |e| e.overhead()),
            ),
            &[],
        );
        let (producer, info) = ChunkProducer::connect(&cfg, config, topic, timeout)?;
        Ok(ResultProducer {
            producer,
            partitions: info.partitions,
            envelope,
            // Never cancelled: a result in flight at a stop gets its acknowledgement wait.
            cancel: tokio_util::sync::CancellationToken::new(),
        })
    }
}

impl ResultSink for ResultProducer {
    fn send(&self, relative: &str, value: &[u8]) -> Result<(), String> {
        let mut message = ChunkMessage {
            // The file's partition rule: results of one file stay in order.
            partition: partition_for_path(relative, self.partitions),
            key: result_key(relative).into_bytes(),
            value: value.to_vec(),
            headers: Vec::new(),
        };
        if let Some(envelope) = &self.envelope {
            envelope.seal(&mut message);
        }
        let delivery = FileDelivery::new();
        let tag = ChunkTag {
            file: Arc::clone(&delivery),
            index: 0,
            bytes: value.len(),
        };
        self.producer
            .send(
                message.partition,
                Some(&message.key),
                &message.value,
                &message.headers,
                &tag,
                &self.cancel,
            )
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        loop {
            match self
                .producer
                .file_status(&delivery, 1, started.elapsed(), ACK_TIMEOUT, None)
            {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}
