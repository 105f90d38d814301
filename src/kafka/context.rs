//! rdkafka contexts that send librdkafka's own log lines, errors, rebalances and commit results
//! through `tracing`, so a user sees one consistent log.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::TopicPartitionList;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{debug, error, info, warn};

use super::diagnose::{self, Loudness};

/// Client context for producers and admin-style clients: logging only.
#[derive(Clone, Default)]
pub struct LogContext;

/// Maps a librdkafka syslog-style level onto `tracing`. librdkafka logs routine connection
/// churn at Notice/Info; those go to debug so a normal run stays quiet. Connection problems are
/// quiet too until the command has connected (its connection check reports them in one line)
/// and when repeated (see [`super::diagnose`]).
pub(crate) fn log_librdkafka(level: RDKafkaLogLevel, facility: &str, message: &str) {
    let quiet = diagnose::watch().observe(message) == Loudness::Quiet;
    match level {
        _ if quiet => debug!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => error!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
            debug!(target: "librdkafka", facility, "{message}")
        }
    }
}

/// librdkafka reports transient errors (a broker connection dropped and being retried) through
/// the same callback as fatal ones; only the fatal ones deserve `error`.
pub(crate) fn log_client_error(error: &KafkaError, reason: &str) {
    // End of partition is reported here too when enable.partition.eof is on; it is news, not
    // a problem (the consumer loop handles it).
    if matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
    {
        debug!(target: "librdkafka", "{reason}");
        return;
    }
    let fatal = matches!(
        error.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::Fatal)
    );
    if fatal {
        error!(target: "librdkafka", %error, "fatal Kafka client error: {reason}");
    } else if diagnose::watch().observe(reason) == Loudness::Quiet {
        debug!(target: "librdkafka", %error, "{reason}");
    } else {
        warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl ClientContext for LogContext {
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

/// Producers that need no delivery accounting (heartbeats, logs) log through the same context.
impl rdkafka::producer::ProducerContext for LogContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Consumer context: logging, plus rebalances and commit results, which are the events a user
/// needs to understand who reads which partition and whether progress is being saved. It also
/// remembers the partitions revoked, for the poll loop ([`ConsumerLogContext::take_revoked`]).
#[derive(Clone, Default)]
pub struct ConsumerLogContext {
    /// Partitions revoked since the poll loop last looked (with the cooperative assignor a
    /// rebalance revokes only some, so the loop must know which).
    revoked: Arc<Mutex<Vec<i32>>>,
    /// The group's coordinator did not answer for a whole session (librdkafka's `SESSTMOUT`
    /// log line): set here, taken by the poll loop.
    session_lost: Arc<AtomicBool>,
}

impl ConsumerLogContext {
    /// The partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *crate::sync::lock(&self.revoked))
    }

    /// Whether the session timed out since the last call.
    pub fn take_session_lost(&self) -> bool {
        self.session_lost.swap(false, Ordering::AcqRel)
    }
}

/// The facility of librdkafka's log line saying the member's session timed out without an
/// answer from the group coordinator (it then revokes everything and rejoins).
const SESSION_TIMEOUT_FACILITY: &str = "SESSTMOUT";

impl ClientContext for ConsumerLogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == SESSION_TIMEOUT_FACILITY {
            self.session_lost.store(true, Ordering::Release);
        }
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::metrics::kafka::record(&statistics);
    }
}

fn describe_partitions(list: &TopicPartitionList) -> String {
    let parts: Vec<String> = list
        .elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect();
    parts.join(", ")
}

impl ConsumerContext for ConsumerLogContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                info!(partitions = %describe_partitions(list), "partitions assigned")
            }
            Rebalance::Revoke(list) => {
                info!(partitions = %describe_partitions(list), "partitions revoked");
                crate::sync::lock(&self.revoked)
                    .extend(list.elements().iter().map(|e| e.partition()));
            }
            Rebalance::Error(e) => warn!(error = %e, "consumer group rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(offsets = ?offsets, "offsets committed"),
            // Nothing to commit is routine when a flush found no new offsets.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(error = %e, "offset commit failed; the chunks will be read again after a restart")
            }
        }
    }
}
