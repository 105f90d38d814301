//! Building rdkafka clients from a loaded config file. Every property is passed to librdkafka as
//! the original string; when librdkafka rejects one, the error names the property, its value and
//! the file/section/line it came from, before any connection is attempted.

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use tracing::level_filters::LevelFilter;

use crate::config::LoadedConfig;

/// Failures while turning settings into a live client.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused a property (unknown name or invalid value).
    #[error("librdkafka rejected property `{key} = {value}`{origin}: {reason}. Fix or remove it in the config file")]
    RejectedProperty {
        key: String,
        value: String,
        /// " (from FILE, [section] line N)" or "" when openmsi set it itself.
        origin: String,
        reason: String,
    },
    /// Any other failure creating the client.
    #[error("could not create the Kafka {kind}: {source}")]
    Create {
        kind: &'static str,
        #[source]
        source: KafkaError,
    },
}

/// How long every broker the client knows may be unreachable before it goes back to
/// `bootstrap.servers` for a fresh list (librdkafka's default: 5 minutes). A broker that stops
/// is often not the only one: a cluster whose brokers each advertise only themselves (tansu over
/// shared storage, or brokers behind one load-balanced address) leaves a client knowing one
/// broker at a time, and with the default a downloader whose group coordinator was that broker
/// waited minutes for the survivors (measured: no file in 180 s; with 3 s, back within ~13 s of
/// the stop, the session timeout included). On a cluster whose metadata lists every broker this
/// never fires while any of them is up. A value in the config file wins.
pub const REBOOTSTRAP_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// A `ClientConfig` from the file's properties, plus `defaults` where the file is silent and
/// `overrides` that openmsi needs for correctness whatever the file says.
pub fn client_config(
    properties: &[(String, String)],
    defaults: &[(&str, String)],
    overrides: &[(&str, String)],
) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set(
        "metadata.recovery.rebootstrap.trigger.ms",
        REBOOTSTRAP_AFTER.as_millis().to_string(),
    );
    for (key, value) in defaults {
        cfg.set(*key, value);
    }
    for (key, value) in properties {
        cfg.set(key, value);
    }
    for (key, value) in overrides {
        cfg.set(*key, value);
    }
    // Never create a topic by asking about it. A stock Kafka (and the quick start's broker)
    // creates any topic a metadata request names when the client allows it, and librdkafka
    // allows it for producers by default: a typo in --topic would then upload into a new topic
    // that nobody reads, and `topic describe nosuch` would create `nosuch`. Topics are made with
    // `openmsi topic create`.
    cfg.set("allow.auto.create.topics", "false");
    // With metrics on, librdkafka reports broker connections and consumer lag (see
    // crate::metrics::kafka); a value in the config file wins.
    if crate::metrics::registry().enabled()
        && !properties
            .iter()
            .any(|(k, _)| k == "statistics.interval.ms")
    {
        cfg.set(
            "statistics.interval.ms",
            crate::metrics::kafka::STATISTICS_INTERVAL_MS,
        );
    }
    // librdkafka only emits log lines at or below its own level; follow ours so `--log-level
    // debug` also shows the client's internals.
    let level = match LevelFilter::current() {
        LevelFilter::TRACE | LevelFilter::DEBUG => RDKafkaLogLevel::Debug,
        LevelFilter::INFO => RDKafkaLogLevel::Info,
        _ => RDKafkaLogLevel::Warning,
    };
    cfg.set_log_level(level);
    cfg
}

/// Creates a client, mapping a rejected property back to where the user wrote it.
pub fn create_client<C, T>(
    cfg: &ClientConfig,
    context: C,
    source: &LoadedConfig,
    kind: &'static str,
) -> Result<T, KafkaSetupError>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    cfg.create_with_context(context).map_err(|e| match e {
        KafkaError::ClientConfig(_, reason, key, value) => {
            let origin = match source.property_origin(&key) {
                Some((section, line)) => format!(
                    " (from {}, [{section}] line {line})",
                    source.path().display()
                ),
                None => String::new(),
            };
            KafkaSetupError::RejectedProperty {
                key,
                value,
                origin,
                reason,
            }
        }
        other => KafkaSetupError::Create {
            kind,
            source: other,
        },
    })
}

/// The configured bootstrap servers, for messages that must say which broker failed.
pub fn bootstrap_servers(cfg: &ClientConfig) -> String {
    cfg.get("bootstrap.servers")
        .or_else(|| cfg.get("metadata.broker.list"))
        .unwrap_or("(no bootstrap.servers set)")
        .to_string()
}
