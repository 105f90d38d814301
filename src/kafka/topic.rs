//! The check every command makes before moving data: the broker answers within a bounded time
//! and the topic exists. Without it, librdkafka would retry silently for minutes.

use std::time::{Duration, Instant};

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

use super::client::bootstrap_servers;
use super::diagnose::{self, Cause, Probe};

/// What we learned about the topic.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    /// Number of partitions, for choosing a file's partition.
    pub partitions: i32,
}

/// Why a topic could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot connect to Kafka at {brokers}: {cause}")]
    Unreachable { brokers: String, cause: String },
    #[error("topic `{topic}` does not exist on {brokers}. Create it first (`openmsi topic create {topic}`; openmsi does not auto-create topics), or check --topic")]
    Missing { topic: String, brokers: String },
    #[error("topic `{topic}` on {brokers} reported an error: {code}")]
    Broken {
        topic: String,
        brokers: String,
        code: RDKafkaErrorCode,
    },
}

/// How long one metadata request may wait before the watch is consulted again: a certain cause
/// (a rejected certificate, a wrong password) ends the wait early.
const CHECK_SLICE: Duration = Duration::from_millis(500);

/// Waits up to `timeout` for the broker to answer a metadata request, from `client` (built from
/// `cfg`) about `topic` (None: the cluster only). A failure is explained in one line (see
/// [`super::diagnose`]).
///
/// `serve_events` hands librdkafka's queued log and error events to the client's context: a
/// consumer's are only delivered when it is polled, a threaded producer's by its own thread.
pub fn connect<C: ClientContext>(
    client: &Client<C>,
    cfg: &ClientConfig,
    topic: Option<&str>,
    timeout: Duration,
    serve_events: &dyn Fn(),
) -> Result<Metadata, TopicError> {
    let watch = diagnose::watch();
    watch.begin_check();
    let deadline = Instant::now() + timeout;
    // The cause our own TLS handshake found, made once when librdkafka's lines are not enough.
    let mut probed: Option<Option<Cause>> = None;
    // Whether a refused connection was already checked on every bootstrap address (once).
    let mut refusal_checked = false;
    loop {
        let started = Instant::now();
        let slice = deadline.saturating_duration_since(started).min(CHECK_SLICE);
        let error = match client.fetch_metadata(topic, slice) {
            Ok(metadata) => {
                watch.connected();
                return Ok(metadata);
            }
            Err(e) => e,
        };
        serve_events();
        let seen = watch.cause();
        if probed.is_none()
            && matches!(
                seen,
                None | Some(Cause::BrokerCertificate(None) | Cause::ClosedAtFirstRequest)
            )
        {
            let left = deadline.saturating_duration_since(Instant::now());
            probed = Some(probe_cause(cfg, seen.as_ref(), left.min(PROBE_TIMEOUT)));
        }
        // "Connection refused" from every bootstrap address is as certain as a bad password:
        // say so now instead of after the whole timeout (librdkafka's own lines may not have
        // arrived yet, or, for an admin client, never reach this watch in time).
        let refused_everywhere =
            !refusal_checked && matches!(seen, None | Some(Cause::Refused)) && {
                refusal_checked = true;
                diagnose::every_bootstrap_refuses(&bootstrap_servers(cfg), REFUSAL_CHECK_TIMEOUT)
            };
        let cause = if refused_everywhere {
            Some(Cause::Refused)
        } else {
            probed.clone().flatten().or(seen)
        };
        let certain = refused_everywhere || cause.as_ref().is_some_and(Cause::is_certain);
        if certain || Instant::now() >= deadline {
            let cause = match cause {
                Some(cause) => cause.explain(),
                None => format!(
                    "no answer within {} s ({error}). Check that the broker is running and that bootstrap.servers and the security settings in the config are right; --connect-timeout sets the wait",
                    timeout.as_secs_f64()
                ),
            };
            return Err(TopicError::Unreachable {
                brokers: bootstrap_servers(cfg),
                cause,
            });
        }
        // An immediate failure (no broker up yet) must not spin.
        std::thread::sleep(
            slice
                .saturating_sub(started.elapsed())
                .min(Duration::from_millis(100)),
        );
    }
}

/// Bound on each TCP connection of the refusal check (a refusal is immediate; this only bounds
/// an address that does not answer at all).
const REFUSAL_CHECK_TIMEOUT: Duration = Duration::from_millis(300);

/// Bound on our own TLS handshake (a TLS client at a plaintext port only learns by waiting).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a TLS handshake of our own with the first bootstrap server adds to `seen`, the cause
/// librdkafka's lines showed (see [`diagnose::probe`]): why the broker's certificate failed,
/// or that the client and the port disagree about TLS.
fn probe_cause(cfg: &ClientConfig, seen: Option<&Cause>, timeout: Duration) -> Option<Cause> {
    let uses_tls = cfg
        .get("security.protocol")
        .is_some_and(|p| p.to_ascii_lowercase().ends_with("ssl"));
    let servers = bootstrap_servers(cfg);
    let (host, port) = servers.split(',').next()?.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let probe = diagnose::probe(host, port, cfg.get("ssl.ca.location"), timeout);
    match (seen, uses_tls, probe) {
        (Some(Cause::BrokerCertificate(None)), _, Probe::TlsCertificate(why)) => {
            Some(Cause::BrokerCertificate(Some(why)))
        }
        (None, true, Probe::NotTls) => Some(Cause::TlsToPlaintext),
        (
            None | Some(Cause::ClosedAtFirstRequest),
            false,
            Probe::TlsOk | Probe::TlsCertificate(_),
        ) => Some(Cause::PlaintextToTls),
        _ => None,
    }
}

/// Fetches metadata for `topic` with a bounded wait (see [`connect`]) and checks the topic.
pub fn check_topic<C: ClientContext>(
    client: &Client<C>,
    cfg: &ClientConfig,
    topic: &str,
    timeout: Duration,
    serve_events: &dyn Fn(),
) -> Result<TopicInfo, TopicError> {
    let brokers = bootstrap_servers(cfg);
    let brokers = brokers.as_str();
    let metadata = connect(client, cfg, Some(topic), timeout, serve_events)?;
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
