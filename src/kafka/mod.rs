//! The one rdkafka layer: client construction from a loaded config (with errors that name the
//! property and where it came from), logging contexts, the topic check every command does before
//! moving data, both clients with their defaults (the chunk producer with delivery tracking,
//! the chunk consumer), heartbeats, and the stable file→partition choice.

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
