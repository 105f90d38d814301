//! Flag values turned into settings, and the pieces every long-running command's runner shares
//! (`app.rs` and `s3/command.rs`): seconds from a flag, the heartbeat settings, the opener of a
//! downloader, and how a reader of a topic runs its work ([`run_reporting`]: console, service
//! manager, heartbeats).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::TelemetryArgs;
use crate::config::LoadedConfig;
use crate::console;
use crate::contract::{Envelope, Opener, Plaintext};
use crate::crypto::session::Encryption;
use crate::download::results::{ResultProducer, ResultSink};
use crate::kafka::telemetry::{self, TelemetrySettings};
use crate::targeting::ForHost;

/// The step before decoding for a downloader: selection by `--host`, then decryption when the
/// config names a node. Built when the downloader asks (after its output folder is ready, so a
/// bad folder fails before anything touches Kafka).
pub fn opener_factory(
    encryption: Option<Encryption>,
    topic: String,
    host: String,
) -> crate::download::OpenerFactory {
    Box::new(move || {
        Ok(match encryption {
            Some(e) => Arc::new(ForHost::new(host, e.decryptor(&topic)?)) as Arc<dyn Opener>,
            None => Arc::new(ForHost::new(host, Plaintext)),
        })
    })
}

/// The heartbeat/log topic settings from their flags.
pub fn telemetry_settings(
    args: &TelemetryArgs,
    encryption: Option<&Encryption>,
) -> anyhow::Result<TelemetrySettings> {
    let interval = seconds("--heartbeat-interval", args.heartbeat_interval)?;
    if interval.is_zero() {
        anyhow::bail!("--heartbeat-interval must be greater than 0");
    }
    // Heartbeats and log lines name files: encrypted like the data, as OpenMSIStream does.
    let mut sealers = telemetry::Sealers::new();
    if let Some(encryption) = encryption {
        for topic in args.heartbeat_topic.iter().chain(args.log_topic.iter()) {
            let encryptor = encryption.encryptor(topic).with_context(|| {
                format!("heartbeat/log topic {topic} (encrypted like the data)")
            })?;
            sealers.insert(topic.clone(), encryptor as Arc<dyn Envelope>);
        }
    }
    Ok(TelemetrySettings {
        sealers,
        heartbeat_topic: args.heartbeat_topic.clone(),
        log_topic: args.log_topic.clone(),
        interval,
        program_id: args
            .program_id
            .clone()
            .unwrap_or_else(|| format!("openmsi_{}", crate::host::name())),
    })
}

/// Seconds from a flag that must be more than zero.
pub fn positive_seconds(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    let duration = seconds(flag, secs)?;
    if duration.is_zero() {
        anyhow::bail!("{flag} must be greater than 0");
    }
    Ok(duration)
}

/// Seconds from a flag, with an error naming the flag when negative or not finite.
pub fn seconds(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| anyhow::anyhow!("{flag} must be a non-negative number of seconds, got {secs}"))
}

/// After a requested stop, waits (a quarter second at most) for the service-manager thread to
/// report `STOPPING=1`; an idle exit leaves it to end with the process.
pub fn finish_service(service: Option<std::thread::JoinHandle<()>>, cancel: &CancellationToken) {
    if cancel.is_cancelled() {
        if let Some(handle) = service {
            let _ = handle.join();
        }
    }
}

/// Runs a long-running reader's `work` on a blocking thread, with what it reports around it:
/// `status` for `check` and the service manager, `quit`/Ctrl-C/SIGTERM/a service stop as the
/// token handed to `work`, heartbeats counting `totals` until `work` returns. `what` names the
/// work in the error if its thread panics.
pub async fn run_reporting<T: Send + 'static>(
    config: &LoadedConfig,
    telemetry_settings: TelemetrySettings,
    status: console::StatusFn,
    totals: telemetry::Totals,
    what: &str,
    work: impl FnOnce(CancellationToken) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let cancel = console::spawn(Arc::clone(&status));
    let service = crate::service::spawn(status, cancel.clone());
    let stop_requested = cancel.clone();
    let telemetry_stop = CancellationToken::new();
    let telemetry = telemetry::spawn(config, telemetry_settings, totals, telemetry_stop.clone())?;
    let outcome = tokio::task::spawn_blocking(move || work(cancel)).await;
    telemetry_stop.cancel();
    if let Some(handle) = telemetry {
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
    let result =
        outcome.with_context(|| format!("internal error: the {what} thread panicked"))??;
    finish_service(service, &stop_requested);
    Ok(result)
}

/// `--result-topic`: how a reader connects its result producer (after its output folder is
/// ready), results encrypted like the data when the config names a node.
pub fn results_factory(
    config: &LoadedConfig,
    encryption: Option<&Encryption>,
    result_topic: Option<&str>,
    connect_timeout: Duration,
) -> anyhow::Result<Option<crate::download::ResultsFactory>> {
    let Some(topic) = result_topic else {
        return Ok(None);
    };
    // Results name files: encrypted like the data, as heartbeats are.
    let envelope = match encryption {
        Some(e) => Some(
            e.encryptor(topic)
                .with_context(|| format!("--result-topic {topic} (encrypted like the data)"))?
                as Arc<dyn Envelope>,
        ),
        None => None,
    };
    let (config, topic) = (config.clone(), topic.to_string());
    Ok(Some(Box::new(move || {
        let producer = ResultProducer::connect(&config, &topic, envelope, connect_timeout)
            .with_context(|| format!("--result-topic {topic}"))?;
        Ok(Box::new(producer) as Box<dyn ResultSink>)
    })))
}
