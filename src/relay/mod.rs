//! `openmsi relay`: consume a topic and produce the selected files' messages, unchanged, to
//! other topics, on the same cluster or another one (`--to-config`).
//!
//! It is the download pipeline (poll, open, verify, keep poll order, commit) with another sink
//! ([`sink::RelaySink`]): each chunk is opened (host selection, decryption), decoded and its
//! SHA-512 checked like a download's, so a corrupt or forged chunk is kept aside in the state
//! folder instead of being redistributed; then it is produced to every destination its file is
//! routed to ([`routes`]), to the partition an upload would choose (all chunks of a file in
//! one), and a source offset is committed only after every selected message before it is
//! acknowledged there.
//!
//! Encrypted topics: the relay is a consumer node of the source and a producer node of the
//! destination (`[kafkacrypto]` in each side's config): it decrypts, verifies, and encrypts
//! again for the destination's key exchange. A source read through `[kafkacrypto]` is never
//! relayed in the clear (refused at start); ciphertext is never relayed as it is, because a
//! relay that cannot read a message cannot select, route or verify it.

pub mod routes;
pub mod sink;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use regex::Regex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::LoadedConfig;
use crate::contract::{Envelope, Opener};
use crate::download::pipeline::{self, PipelineError, PipelineOptions, StopReason};
use crate::download::rejects::{KeptAside, RejectStore};
use crate::download::verify::{Formats, Selection};
use crate::download::{join_group, DownloadStats};
use crate::kafka::client_config;
use crate::kafka::producer::{producer_defaults, ChunkProducer, ProduceError};
use crate::kafka::topic::TopicError;
use crate::state::StateDir;
use routes::Routes;
use sink::{Destination, RelaySink};

/// The largest message relayed: a 16 MiB chunk with its fields (the producer must accept what
/// it is given; a larger message is refused with a line saying so).
const MAX_RELAYED_CHUNK: usize = 16 << 20;

/// Validated settings of a relay run.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Source topic.
    pub topic: String,
    /// Consumer group; None: the config file's (resolved so that it is never a fresh one
    /// unless asked for, see [`relay_group`]).
    pub group_id: Option<String>,
    /// Read every partition at once, without the group's rebalance.
    pub sole_reader: bool,
    /// Where each selected file goes.
    pub routes: Routes,
    /// `--match`: only files whose relative path matches are relayed.
    pub match_regex: Option<Regex>,
    /// `--to-host` given: relayed messages lose their `hostname` headers and get these.
    pub readdress: bool,
    /// Message formats read.
    pub formats: Formats,
    /// Exit after reading everything and this much quiet.
    pub exit_when_idle: Option<Duration>,
    /// Chunk verification threads.
    pub verify_threads: usize,
    /// Bound on waiting for each cluster's first answer.
    pub connect_timeout: Duration,
    /// Lock, rejected and deferred messages.
    pub state_dir: PathBuf,
}

/// What a run did.
#[derive(Debug)]
pub struct RelaySummary {
    /// Messages read, skipped, rejected (the pipeline's counters).
    pub read: crate::download::StatsSnapshot,
    /// Per destination topic: messages and file bytes acknowledged.
    pub relayed: Vec<(String, u64, u64)>,
    /// Wall time.
    pub elapsed: Duration,
    /// The consumer group (pass it as --group-id to resume).
    pub group_id: String,
    /// True when it stopped because the source was idle.
    pub stopped_idle: bool,
    /// A stop was asked for while messages were still unacknowledged: they were not
    /// committed and are relayed again at the next start.
    pub interrupted: Option<String>,
}

/// The relay's group: `given`, else the config file's, else `openmsi-relay-<topic>`. Never a
/// fresh group by default: a relay started again with one would relay the whole topic again.
pub fn relay_group(config: &LoadedConfig, given: Option<String>, topic: &str) -> Option<String> {
    given.or_else(|| {
        config
            .consumer_group_is_fresh()
            .then(|| format!("openmsi-relay-{topic}"))
    })
}

/// The default state folder: the user's cache ([`crate::state::user_cache_dir`])
/// `/openmsi/relay/<topic>`.
pub fn default_state_dir(topic: &str) -> Option<PathBuf> {
    Some(
        crate::state::user_cache_dir()?
            .join("openmsi")
            .join("relay")
            .join(topic),
    )
}

/// Builds the envelope of a destination topic (`--to-host`, encryption), None for none.
pub type EnvelopeFor<'a> = dyn Fn(&str) -> anyhow::Result<Option<Arc<dyn Envelope>>> + 'a;

/// Connects one producer per destination topic (each topic checked within the connect
/// timeout, so a missing one fails in one line before anything is read); `envelope_for` gives
/// each topic's envelope.
pub fn connect_destinations(
    config: &LoadedConfig,
    routes: &Routes,
    connect_timeout: Duration,
    envelope_for: &EnvelopeFor<'_>,
) -> anyhow::Result<Vec<Destination>> {
    let mut out = Vec::new();
    for topic in routes.topics() {
        let envelope = envelope_for(topic)?;
        let max_message =
            crate::upload::send::max_message_bytes(MAX_RELAYED_CHUNK, envelope.as_deref());
        let cfg = client_config(
            &config.producer_properties(),
            &producer_defaults(max_message),
            &[],
        );
        let (producer, info) = match ChunkProducer::connect(&cfg, config, topic, connect_timeout) {
            Ok(connected) => connected,
            // The topic's own error would say "check --topic", the source's flag.
            Err(ProduceError::Topic(TopicError::Missing { brokers, .. })) => anyhow::bail!(
                "destination topic `{topic}` does not exist on {brokers}: create it there \
                 (`openmsi topic create {topic} --config {}`), or check --to-topic/--route",
                config.path().display()
            ),
            Err(e) => return Err(e).with_context(|| format!("destination topic {topic}")),
        };
        out.push(Destination {
            topic: topic.clone(),
            producer,
            partitions: info.partitions,
            envelope,
            relayed: Default::default(),
            relayed_bytes: Default::default(),
        });
    }
    Ok(out)
}

/// The first wait before relaying again after the destination did not acknowledge messages;
/// it doubles after each failure in a row, up to [`RETRY_MAX_WAIT`].
const RETRY_FIRST_WAIT: Duration = Duration::from_secs(5);
const RETRY_MAX_WAIT: Duration = Duration::from_secs(300);

/// Sleeps `wait` unless `cancel` comes first (then true).
fn cancel_or_sleep(cancel: &CancellationToken, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if cancel.is_cancelled() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cancel.is_cancelled()
}

/// Runs the relay until `cancel`, idle exit, or a fatal error. `destinations` are connected
/// ([`connect_destinations`]); their counters are what `check` and the metrics read.
pub fn relay(
    source: &LoadedConfig,
    settings: &RelaySettings,
    opener: Arc<dyn Opener>,
    destinations: Arc<Vec<Destination>>,
    stats: Arc<DownloadStats>,
    cancel: &CancellationToken,
) -> anyhow::Result<RelaySummary> {
    let started = Instant::now();
    let state = StateDir::located(&settings.state_dir, Some(&settings.state_dir))
        .ensure()
        .with_context(|| {
            format!(
                "preparing the state folder {}",
                settings.state_dir.display()
            )
        })?;
    let _lock = state.lock(&settings.state_dir, "relay")?;
    let kept_aside = || -> anyhow::Result<KeptAside> {
        Ok(KeptAside {
            rejected: RejectStore::open(&state.rejected())
                .with_context(|| format!("preparing {}", settings.state_dir.display()))?,
            deferred: RejectStore::open(&state.deferred())
                .with_context(|| format!("preparing {}", settings.state_dir.display()))?,
        })
    };
    let join = || {
        join_group(
            source,
            &settings.topic,
            settings.group_id.as_deref(),
            settings.sole_reader,
            settings.exit_when_idle.is_some(),
            settings.connect_timeout,
        )
    };
    let mut joined = join()?;
    let group_id = joined.group_id.clone();
    info!(
        topic = %settings.topic,
        group = %group_id,
        to = %settings.routes.topics().join(","),
        "relaying; type `check` for status or `quit` to stop"
    );
    crate::service::ready();
    let mut backoff = RETRY_FIRST_WAIT;
    let (stopped_idle, interrupted) = loop {
        let sink = RelaySink::new(
            Arc::clone(&destinations),
            settings.routes.clone(),
            settings.readdress,
            cancel.clone(),
        );
        let options = PipelineOptions {
            topic: settings.topic.clone(),
            selection: Selection {
                formats: settings.formats,
                regex: settings.match_regex.clone(),
            },
            verify_threads: settings.verify_threads,
            exit_when_idle: settings.exit_when_idle,
            opener: Arc::clone(&opener),
            rejoin_unassigned_after: joined.rejoin_after,
            reconnect: Some(joined.reconnect),
            // The relay keeps no file in progress (each message is done once acknowledged).
            report_missing_after: Duration::MAX,
        };
        let ran_since = Instant::now();
        let outcome = pipeline::run(
            &mut joined.consumer,
            sink,
            kept_aside()?,
            &options,
            &stats,
            cancel,
        );
        // A failure after a long healthy run starts the back-off again.
        if ran_since.elapsed() > RETRY_MAX_WAIT {
            backoff = RETRY_FIRST_WAIT;
        }
        match outcome {
            Ok(stop) => break (stop == StopReason::Idle, None),
            // Asked to stop while the destination had not acknowledged everything: not a
            // failure (nothing unacknowledged was committed), but worth a line.
            Err(PipelineError::Write { source, .. })
                if cancel.is_cancelled() && source.kind() == std::io::ErrorKind::Interrupted =>
            {
                break (false, Some(source.to_string()));
            }
            // The destination refused or lost messages (a broker that went away mid-send, an
            // idempotence sequence a new broker does not know): nothing after the last
            // acknowledged flush was committed, so reading again from the group's offsets
            // relays them again (duplicates downstream are harmless), with a new consumer (a
            // producer in librdkafka's fatal state replaces its client itself).
            Err(PipelineError::Write { source, .. }) => {
                warn!(
                    error = %source,
                    retry_in_s = backoff.as_secs(),
                    "the destination did not acknowledge everything; relaying again from the last acknowledged offsets"
                );
                drop(joined.consumer);
                if cancel_or_sleep(cancel, backoff) {
                    break (false, None);
                }
                backoff = (backoff * 2).min(RETRY_MAX_WAIT);
                joined = join()?;
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(RelaySummary {
        read: stats.snapshot(),
        relayed: destinations
            .iter()
            .map(|d| {
                (
                    d.topic.clone(),
                    d.relayed.load(Ordering::Relaxed),
                    d.relayed_bytes.load(Ordering::Relaxed),
                )
            })
            .collect(),
        elapsed: started.elapsed(),
        group_id,
        stopped_idle,
        interrupted,
    })
}

/// `check`'s line and the metrics: what each destination acknowledged.
pub fn status_line(destinations: &[Destination], stats: &DownloadStats) -> String {
    let s = stats.snapshot();
    let relayed: Vec<String> = destinations
        .iter()
        .map(|d| {
            format!(
                "{} to {} ({})",
                crate::progress::count(d.relayed.load(Ordering::Relaxed), "message"),
                d.topic,
                crate::progress::size(d.relayed_bytes.load(Ordering::Relaxed))
            )
        })
        .collect();
    format!(
        "relayed {}; {} read, {} skipped (not selected), {} for other hosts, {} rejected",
        relayed.join(", "),
        s.messages_read,
        s.skipped_messages,
        s.other_hosts_messages,
        s.rejected_messages
    )
}

/// Writes the relay's counters in Prometheus' text format.
pub fn write_metrics(destinations: &[Destination], out: &mut crate::metrics::Exposition) {
    use crate::metrics::Kind;
    out.family(
        "openmsi_messages_relayed_total",
        "Messages the destination acknowledged, by destination topic.",
        Kind::Counter,
    );
    for d in destinations {
        out.sample(
            "openmsi_messages_relayed_total",
            &[("topic", &d.topic)],
            d.relayed.load(Ordering::Relaxed) as f64,
        );
    }
    out.family(
        "openmsi_bytes_relayed_total",
        "File bytes (chunk data) in the messages the destination acknowledged, by destination topic.",
        Kind::Counter,
    );
    for d in destinations {
        out.sample(
            "openmsi_bytes_relayed_total",
            &[("topic", &d.topic)],
            d.relayed_bytes.load(Ordering::Relaxed) as f64,
        );
    }
}
