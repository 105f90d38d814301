//! The one rdkafka layer:
//! - [`client`]: client construction from a loaded config (errors that name the property and
//!   where it came from); every client of the program is built here.
//! - [`context`]: logging contexts (librdkafka's lines, rebalances and commits via `tracing`).
//! - [`diagnose`]: one line naming the cause of a connection failure.
//! - [`topic`]: the connection and topic check every command makes before moving data.
//! - [`producer`]: the chunk producer with delivery tracking; [`window`]: how much it queues.
//! - [`consumer`]: the chunk consumer (subscribed, or assigned every partition when alone).
//! - [`group`]: a member's side of its group: rejoining, what it owns, committing offsets.
//! - [`partition`]: the stable file → partition choice.
//! - [`telemetry`]: OpenMSIStream's heartbeat and log topics.

pub mod client;
pub mod consumer;
pub mod context;
pub mod diagnose;
pub mod group;
pub mod partition;
pub mod producer;
pub mod telemetry;
pub mod topic;
pub mod window;

pub use client::{client_config, KafkaSetupError};
pub use context::{ConsumerLogContext, LogContext};
pub use partition::partition_for_path;
pub use producer::{
    producer_defaults, ChunkProducer, ChunkTag, DeliveryTracker, FileDelivery, QUEUE_MAX_KBYTES,
};
pub use topic::{check_topic, TopicInfo};
