//! The check every command makes before moving data: the broker answers within a bounded time
//! and the topic exists. Without it, librdkafka would retry silently for minutes.

use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// What we learned about the topic.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    /// Number of partitions, for choosing a file's partition.
    pub partitions: i32,
}

/// Why a topic could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("could not reach Kafka broker(s) {brokers} within {secs} s ({source}). Check that the broker is running and that bootstrap.servers (and the security settings) in the config are right; --connect-timeout sets the wait")]
    Unreachable {
        brokers: String,
        secs: u64,
        #[source]
        source: KafkaError,
    },
    #[error("topic `{topic}` does not exist on {brokers}. Create it first (openmsi does not auto-create topics), or check --topic")]
    Missing { topic: String, brokers: String },
    #[error("topic `{topic}` on {brokers} reported an error: {code}")]
    Broken {
        topic: String,
        brokers: String,
        code: RDKafkaErrorCode,
    },
}

/// Fetches metadata for `topic` with a bounded wait.
pub fn check_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    brokers: &str,
    timeout: Duration,
) -> Result<TopicInfo, TopicError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| TopicError::Unreachable {
            brokers: brokers.to_string(),
            secs: timeout.as_secs(),
            source,
        })?;
    let Some(entry) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(TopicError::Missing {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
        });
    };
    match entry.error() {
        None => {}
        Some(code) => {
            let code = RDKafkaErrorCode::from(code);
            return Err(match code {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                    TopicError::Missing {
                        topic: topic.to_string(),
                        brokers: brokers.to_string(),
                    }
                }
                code => TopicError::Broken {
                    topic: topic.to_string(),
                    brokers: brokers.to_string(),
                    code,
                },
            });
        }
    }
    if entry.partitions().is_empty() {
        return Err(TopicError::Missing {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
        });
    }
    Ok(TopicInfo {
        partitions: entry.partitions().len() as i32,
    })
}
