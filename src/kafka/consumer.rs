//! The chunk consumer: a librdkafka consumer built from a loaded config with openmsi's
//! defaults, the same logging context as every client, and the topic check every command does
//! before moving data. download-directory stores and commits offsets itself, only after the
//! data is durable, so auto-commit and auto-store are always off.

use std::path::Path;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use super::client::{bootstrap_servers, client_config, create_client, KafkaSetupError};
use super::context::ConsumerLogContext;
use super::topic::{check_topic, TopicError};
use crate::chunk::hash::{sha512, to_hex};
use crate::config::LoadedConfig;

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// A property was refused or the client could not be created.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// The topic is missing or the broker did not answer.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// Subscribing failed.
    #[error("subscribing to topic {topic}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// What librdkafka said.
        #[source]
        source: KafkaError,
    },
}

/// What the consumer is for.
pub struct ConsumerSpec<'a> {
    /// Properties from the config file (group id already resolved).
    pub properties: &'a [(String, String)],
    /// The output folder (its path names the static group identity).
    pub output_dir: &'a Path,
    /// The topic to subscribe to.
    pub topic: &'a str,
    /// Report end-of-partition events (for `--exit-when-idle`).
    pub partition_eof: bool,
    /// Bound on waiting for the broker's first answer.
    pub connect_timeout: Duration,
}

/// Creates the consumer, checks within the connect timeout that the topic exists, and
/// subscribes.
pub fn subscribe(
    config: &LoadedConfig,
    spec: &ConsumerSpec<'_>,
) -> Result<BaseConsumer<ConsumerLogContext>, ConsumeError> {
    let cfg = consumer_config(spec);
    let consumer: BaseConsumer<ConsumerLogContext> =
        create_client(&cfg, ConsumerLogContext, config, "consumer")?;
    check_topic(
        consumer.client(),
        spec.topic,
        &bootstrap_servers(&cfg),
        spec.connect_timeout,
    )?;
    consumer
        .subscribe(&[spec.topic])
        .map_err(|source| ConsumeError::Subscribe {
            topic: spec.topic.to_string(),
            source,
        })?;
    Ok(consumer)
}

/// The client configuration: openmsi's defaults, the file's properties, and the overrides
/// correctness needs.
fn consumer_config(spec: &ConsumerSpec<'_>) -> ClientConfig {
    let overrides = [
        ("enable.auto.commit", "false".to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        ("enable.partition.eof", spec.partition_eof.to_string()),
    ];
    client_config(
        spec.properties,
        &consumer_defaults(spec.output_dir),
        &overrides,
    )
}

/// Consumer settings openmsi picks when the config file is silent.
pub fn consumer_defaults(output_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        // Static group membership, one identity per machine and output folder: a downloader
        // restarted after a crash takes its partitions back at once instead of waiting for the
        // dead member's session to expire (which tansu never does).
        ("group.instance.id", instance_id(output_dir)),
        // A new group starts at the beginning of the topic, as OpenMSIStream's configs do.
        ("auto.offset.reset", "earliest".into()),
        // Whole 512 KiB chunks per fetch per partition instead of librdkafka's 1 MiB, which
        // caps each fetch at one or two chunks.
        ("max.partition.fetch.bytes", (16u32 << 20).to_string()),
        // A downloader that crashed keeps its partitions until its session times out; 10 s
        // (librdkafka: 45 s) lets a restarted one resume sooner. Brokers accept >= 6 s.
        ("session.timeout.ms", "10000".into()),
    ]
}

/// `openmsi-<host>-<digest of the output folder's absolute path>`: stable across restarts,
/// different for every folder, so two downloaders never share an identity by accident.
fn instance_id(output_dir: &Path) -> String {
    let absolute = output_dir
        .canonicalize()
        .unwrap_or_else(|_| output_dir.to_path_buf());
    let digest = sha512(absolute.to_string_lossy().as_bytes());
    format!(
        "openmsi-{}-{}",
        crate::host::id_safe_name(),
        to_hex(&digest[..8])
    )
}
