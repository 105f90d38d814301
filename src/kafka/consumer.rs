//! The chunk consumer: a librdkafka consumer built from a loaded config with openmsi's
//! defaults, the same logging context as every client, and the topic check every command does
//! before moving data. download-directory stores and commits offsets itself, only after the
//! data is durable, so auto-commit and auto-store are always off.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{client_config, create_client, KafkaSetupError};
use super::context::ConsumerLogContext;
use super::topic::{check_topic, TopicError};
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
    /// The topic to subscribe to.
    pub topic: &'a str,
    /// Report end-of-partition events (for `--exit-when-idle`).
    pub partition_eof: bool,
    /// Bound on waiting for the broker's first answer.
    pub connect_timeout: Duration,
    /// Read every partition at once instead of joining the group's rebalance (see
    /// [`Membership`]).
    pub membership: Membership,
}

/// How the consumer gets its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Subscribe and let the group's rebalance share the partitions among its members (a group
    /// spread over several machines; a member that dies is replaced).
    Group,
    /// Assign every partition of the topic to itself, starting at the group's committed offsets
    /// (else `auto.offset.reset`): correct only when no other process reads with this group,
    /// which is certain for a fresh group (`create_new`) and the user's word for
    /// `--sole-reader`. It starts reading at once: a new group's first rebalance waits for
    /// other members (3 s by default on a stock Kafka, `group.initial.rebalance.delay.ms`;
    /// ~5 s on the quick start's broker). Offsets are still committed to the group.
    Sole,
}

/// Creates the consumer, checks within the connect timeout that the topic exists, and
/// subscribes (or assigns itself every partition, see [`Membership`]).
pub fn subscribe(
    config: &LoadedConfig,
    spec: &ConsumerSpec<'_>,
) -> Result<BaseConsumer<ConsumerLogContext>, ConsumeError> {
    let cfg = consumer_config(spec);
    let consumer: BaseConsumer<ConsumerLogContext> =
        create_client(&cfg, ConsumerLogContext::default(), config, "consumer")?;
    // Polling before subscribing delivers only log, error and statistics events (no
    // messages): the connection check needs them to explain a failure.
    let serve_events = || {
        for _ in 0..1000 {
            if consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
    };
    let topic = check_topic(
        consumer.client(),
        &cfg,
        spec.topic,
        spec.connect_timeout,
        &serve_events,
    )?;
    let joined = match spec.membership {
        Membership::Group => consumer.subscribe(&[spec.topic]),
        Membership::Sole => {
            let mut all = TopicPartitionList::new();
            for partition in 0..topic.partitions {
                all.add_partition_offset(spec.topic, partition, Offset::Stored)
                    .map_err(|source| ConsumeError::Subscribe {
                        topic: spec.topic.to_string(),
                        source,
                    })?;
            }
            consumer.assign(&all)
        }
    };
    joined.map_err(|source| ConsumeError::Subscribe {
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
    client_config(spec.properties, &consumer_defaults(), &overrides)
}

/// A crashed member keeps its partitions this long (librdkafka: 45 s): 10 s lets a survivor take
/// them over sooner. Brokers accept >= 6 s.
pub const DEFAULT_SESSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Consumer settings openmsi picks when the config file is silent.
///
/// Group membership is dynamic, with the cooperative-sticky assignor: when a member dies, the
/// survivors take its partitions over once its session expires (`session.timeout.ms`), and a
/// rebalance only moves the partitions that change owner, so the others keep flowing. Static
/// membership stays available by setting `group.instance.id` in `[consumer]` (one stable id per
/// machine and output folder); it is not the default because some brokers
/// (tansu 0.6.0) handle it badly: endless rebalances, dead static members never evicted.
pub fn consumer_defaults() -> Vec<(&'static str, String)> {
    vec![
        ("partition.assignment.strategy", "cooperative-sticky".into()),
        // A new group starts at the beginning of the topic, as OpenMSIStream's configs do.
        ("auto.offset.reset", "earliest".into()),
        // Whole 512 KiB chunks per fetch per partition instead of librdkafka's 1 MiB, which
        // caps each fetch at one or two chunks.
        ("max.partition.fetch.bytes", (16u32 << 20).to_string()),
        // Prefetched messages librdkafka may hold (its default is 64 MiB): the pipeline holds
        // 64 more chunks in its own queues, and a consumer slower than the broker (a busy
        // machine) would otherwise fill both and double its memory. 32 MiB is still ~150 ms of
        // data at full speed, far more than a fetch takes.
        ("queued.max.messages.kbytes", (32u32 << 10).to_string()),
        (
            "session.timeout.ms",
            DEFAULT_SESSION_TIMEOUT.as_millis().to_string(),
        ),
    ]
}
