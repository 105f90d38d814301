//! Runs a parsed command line: resolves the raw arguments into validated settings (the only
//! thing the rest of the program sees), wires up the console and signals, runs the command on
//! a blocking thread, and turns the outcome into a summary line and an exit code.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use regex::Regex;

use crate::cli::{
    Cli, Command, DownloadDirectoryArgs, RelayArgs, UploadDirectoryArgs, UploadFileArgs,
};
use crate::command_args::{
    finish_service, opener_factory, positive_seconds, results_factory, run_reporting, seconds,
    telemetry_settings,
};
use crate::config::LoadedConfig;
use crate::console;
use crate::contract::{Envelope, Opener, Plaintext};
use crate::crypto::session::Encryption;
use crate::download::command::UserCommand;
use crate::download::hooks::HookSettings;
use crate::download::publish::Validation;
use crate::download::{download_directory, DownloadSettings, DownloadStats};
use crate::kafka::telemetry;
use crate::progress::{count, rate_note, size, timed_rate};
use crate::relay::routes::{parse_route, Route, Routes};
use crate::relay::{default_state_dir, relay_group, RelaySettings};
use crate::targeting::ForHost;
use crate::targeting::HostTargets;
use crate::upload::directory::{upload_directory, DirectoryStats, UploadDirectorySettings};
use crate::upload::{upload_file, UploadFileSettings};

async fn run_serve_keys(args: crate::cli::ServeKeysArgs) -> anyhow::Result<ExitCode> {
    let config = LoadedConfig::load(&args.config)?;
    crate::metrics::start(args.metrics.metrics_addr.as_ref(), &config)?;
    let encryption = Encryption::of(&config, Duration::from_secs(args.connect_timeout))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no [kafkacrypto] section naming the node whose keys to serve",
                config.path().display()
            )
        })?;
    let keys = Arc::new(encryption.key_server(&args.topics)?);
    let metric_keys = Arc::clone(&keys);
    crate::metrics::registry().add(Box::new(move |out| {
        out.counter(
            "openmsi_key_requests_answered_total",
            "Key requests this node answered with a key reply.",
            metric_keys.replies_sent(),
        );
    }));
    let status_keys = Arc::clone(&keys);
    let status: console::StatusFn =
        Arc::new(move || format!("{} key replies sent", status_keys.replies_sent()));
    let cancel = console::spawn(Arc::clone(&status));
    let service = crate::service::spawn(status, cancel.clone());
    crate::service::ready();
    println!(
        "serving keys of node {} for {}; type `check` for status or `quit` to stop",
        keys.node_id(),
        args.topics.join(", ")
    );
    // The key exchange runs on its own thread; this loop only keeps the watchdog fed.
    while !cancel.is_cancelled() {
        crate::service::beat();
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    keys.stop();
    if let Some(handle) = service {
        let _ = handle.join();
    }
    println!("stopped; {} key replies sent", keys.replies_sent());
    Ok(ExitCode::SUCCESS)
}

/// The envelopes of an upload: `--to-host` addressing, and encryption when the config has a
/// `[kafkacrypto]` section (the node's key exchange starts here, so a missing exchange topic
/// fails before anything is read).
fn envelopes(
    encryption: Option<&Encryption>,
    topic: &str,
    to_hosts: &[String],
) -> anyhow::Result<crate::upload::envelopes::Envelopes> {
    let targets = HostTargets::new(to_hosts)?;
    let encryption = match encryption {
        Some(e) => Some(e.encryptor(topic)? as Arc<dyn Envelope>),
        None => None,
    };
    Ok(crate::upload::envelopes::Envelopes {
        targets,
        encryption,
    })
}

/// The error and its causes in one line, each cause once: a message that already quotes its
/// cause (`cannot open x: No such file or directory (os error 2)`) is not followed by the same
/// cause again, as anyhow's `{:#}` would.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Runs the command. Errors are returned for `main` to print; per-item failures (a file that
/// failed verification, a rejected message) are counted and give exit code 1.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Two tokio threads are plenty: tokio only runs the console and signal handlers; the data
    // path runs on dedicated threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = match cli.command {
        Command::UploadFile(args) => runtime.block_on(run_upload_file(args)),
        Command::UploadDirectory(args) => runtime.block_on(run_upload_directory(args)),
        Command::DownloadDirectory(args) => runtime.block_on(run_download_directory(args)),
        Command::Topic(args) => runtime.block_on(crate::admin::run::run_topic(args.command)),
        Command::User(args) => runtime.block_on(crate::admin::run::run_user(args.command)),
        Command::ManageService(args) => crate::manage::run(args.command, run),
        Command::ProvisionNode(args) => crate::provision_node::run(args),
        Command::ServeKeys(args) => runtime.block_on(run_serve_keys(args)),
        Command::Relay(args) => runtime.block_on(run_relay(args)),
        Command::S3Transfer(args) => runtime.block_on(crate::s3::command::run(args)),
        Command::Status(args) => crate::status::run(args),
    };
    // The stdin reader may be parked in a blocking read of a pipe that never closes; waiting
    // for it would hang the exit after a clean shutdown.
    runtime.shutdown_background();
    outcome
}

/// What every upload command starts from: its config, the node when the config names one,
/// and the envelopes its messages pass through.
fn upload_setup(
    args: &crate::cli::UploadArgs,
    metrics: Option<&crate::cli::MetricsArgs>,
) -> anyhow::Result<(
    LoadedConfig,
    Option<Encryption>,
    crate::upload::envelopes::Envelopes,
)> {
    let config = LoadedConfig::load(&args.kafka.config)?;
    if let Some(metrics) = metrics {
        crate::metrics::start(metrics.metrics_addr.as_ref(), &config)?;
    }
    let timeout = Duration::from_secs(args.kafka.connect_timeout);
    let encryption = Encryption::of(&config, timeout)?;
    let envelopes = envelopes(encryption.as_ref(), &args.kafka.topic, &args.to_hosts)?;
    Ok((config, encryption, envelopes))
}

async fn run_upload_file(args: UploadFileArgs) -> anyhow::Result<ExitCode> {
    let (config, _, envelopes) = upload_setup(&args.upload, None)?;
    let settings = UploadFileSettings {
        file: args.file,
        root_dir: args.root_dir,
        topic: args.upload.kafka.topic,
        chunk_size: args.upload.chunk_size,
        wire_fields: args.upload.wire_fields,
        format: args.upload.format,
        hash_threads: usize::from(args.hash_threads),
        connect_timeout: Duration::from_secs(args.upload.kafka.connect_timeout),
        delivery_timeout: Duration::from_secs(args.delivery_timeout),
        envelopes,
    };
    // A one-shot upload reacts to signals but leaves stdin alone (scripts may pipe into it).
    let cancel = console::spawn_signal_handlers();
    let summary = tokio::task::spawn_blocking(move || upload_file(&config, &settings, &cancel))
        .await
        .context("internal error: the upload thread panicked")??;
    println!(
        "uploaded {}: {} bytes in {} to partition {} in {:.2} s{}",
        summary.relative_path,
        summary.bytes,
        count(summary.chunks, "chunk"),
        summary.partition,
        summary.elapsed.as_secs_f64(),
        rate_note(summary.bytes, summary.elapsed),
    );
    Ok(ExitCode::SUCCESS)
}

/// The `--validate-glob` patterns as one set (None: no pattern, every file).
fn validate_globs(patterns: &[String]) -> anyhow::Result<Option<globset::GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        set.add(globset::Glob::new(p).with_context(|| format!("invalid --validate-glob `{p}`"))?);
    }
    Ok(Some(set.build()?))
}

async fn run_upload_directory(args: UploadDirectoryArgs) -> anyhow::Result<ExitCode> {
    let (config, encryption, envelopes) = upload_setup(&args.upload, Some(&args.metrics))?;
    let upload_regex = args
        .upload_regex
        .as_deref()
        .map(|r| Regex::new(r).with_context(|| format!("invalid --upload-regex `{r}`")))
        .transpose()?;
    let rescan = args
        .rescan_seconds
        .map(|s| seconds("--rescan-seconds", s))
        .transpose()?;
    if rescan.is_some_and(|d| d.is_zero()) {
        anyhow::bail!("--rescan-seconds must be greater than 0");
    }
    let settings = UploadDirectorySettings {
        dir: args.dir,
        state_dir: args.state_dir,
        progress_every: positive_seconds("--progress-seconds", args.progress_seconds)?,
        topic: args.upload.kafka.topic,
        chunk_size: args.upload.chunk_size,
        wire_fields: args.upload.wire_fields,
        format: args.upload.format,
        upload_existing: args.upload_existing,
        upload_regex,
        settle: seconds("--settle-seconds", args.settle_seconds)?,
        rescan,
        poll: args.poll,
        concurrent_uploads: usize::from(args.files_at_once),
        connect_timeout: Duration::from_secs(args.upload.kafka.connect_timeout),
        delivery_timeout: Duration::from_secs(args.delivery_timeout),
        update_every: u64::try_from(args.update_seconds)
            .ok()
            .filter(|&s| s > 0)
            .map(Duration::from_secs),
        telemetry: telemetry_settings(&args.telemetry, encryption.as_ref())?,
        envelopes,
    };
    let stats = Arc::new(DirectoryStats::default());
    let metric_stats = Arc::clone(&stats);
    crate::metrics::registry().add(Box::new(move |out| metric_stats.write_metrics(out)));
    let status_stats = Arc::clone(&stats);
    let status: console::StatusFn = Arc::new(move || status_stats.status_line());
    let cancel = console::spawn(Arc::clone(&status));
    let service = crate::service::spawn(status, cancel.clone());
    let stop_requested = cancel.clone();
    let summary =
        tokio::task::spawn_blocking(move || upload_directory(&config, &settings, stats, &cancel))
            .await
            .context("internal error: the upload thread panicked")??;
    println!(
        "upload-directory stopped: {} uploaded ({}{}) in {:.2} s, {} failing",
        count(summary.files_sent, "file"),
        size(summary.bytes),
        while_moving(summary.bytes, summary.active, "sending"),
        summary.elapsed.as_secs_f64(),
        summary.files_failed,
    );
    finish_service(service, &stop_requested);
    Ok(ExitCode::SUCCESS)
}

/// `", 105.3 MB/s while sending"`: the rate over the time data was moving (a long-running
/// command may have been idle for hours), or nothing when too little moved to time.
/// The relay's routes: `--to-topic` (every file; `--match` selects) or `--route` lines.
fn relay_routes(args: &RelayArgs) -> anyhow::Result<Routes> {
    let routes = match &args.to_topic {
        Some(topic) => vec![Route {
            regex: None,
            topic: topic.clone(),
        }],
        None => args
            .routes
            .iter()
            .map(|r| parse_route(r))
            .collect::<Result<_, _>>()?,
    };
    Ok(Routes::new(routes))
}

async fn run_relay(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let source = LoadedConfig::load(&args.kafka.config)?;
    let destination_config = args
        .to_config
        .as_deref()
        .map(LoadedConfig::load)
        .transpose()?;
    let destination = destination_config.as_ref().unwrap_or(&source);
    crate::metrics::start(args.metrics.metrics_addr.as_ref(), &source)?;
    let routes = relay_routes(&args)?;
    let match_regex = args
        .match_regex
        .as_deref()
        .map(|r| Regex::new(r).with_context(|| format!("invalid --match `{r}`")))
        .transpose()?;
    let connect_timeout = Duration::from_secs(args.kafka.connect_timeout);
    let targets = HostTargets::new(&args.to_hosts)?;
    if let Some(host) = &args.host {
        crate::targeting::validate_host_name(host)
            .map_err(|e| anyhow::anyhow!("--host {host:?}: {e}"))?;
    }
    let state_dir = match args
        .state_dir
        .clone()
        .or_else(|| default_state_dir(&args.kafka.topic))
    {
        Some(dir) => dir,
        None => anyhow::bail!(
            "no cache folder to keep the relay's state in (HOME is not set): give --state-dir"
        ),
    };
    // A consumer node of the source, a producer node of the destination (the module docs of
    // `relay` say why ciphertext is never passed on as it is).
    let source_encryption = Encryption::of(&source, connect_timeout)?;
    let destination_encryption = match &destination_config {
        Some(config) => Encryption::of(config, connect_timeout)?,
        None => Encryption::of(&source, connect_timeout)?,
    };
    if source_encryption.is_some() && destination_encryption.is_none() {
        anyhow::bail!(
            "{} has a [kafkacrypto] section (the source topic is encrypted) and {} has none: the relay would publish its files in the clear. Add a [kafkacrypto] section naming a producer node of the destination to {}",
            source.path().display(),
            destination.path().display(),
            destination.path().display()
        );
    }
    let envelope_for = |topic: &str| -> anyhow::Result<Option<Arc<dyn Envelope>>> {
        let envelopes = envelopes(destination_encryption.as_ref(), topic, &args.to_hosts)?;
        Ok(envelopes
            .get()
            .is_some()
            .then(|| Arc::new(envelopes) as Arc<dyn Envelope>))
    };
    let destinations = Arc::new(crate::relay::connect_destinations(
        destination,
        &routes,
        connect_timeout,
        &envelope_for,
    )?);
    let decryptor: Arc<dyn Opener> = match &source_encryption {
        Some(e) => match &args.host {
            Some(host) => Arc::new(ForHost::new(host.clone(), e.decryptor(&args.kafka.topic)?)),
            None => Arc::new(e.decryptor(&args.kafka.topic)?),
        },
        None => match &args.host {
            Some(host) => Arc::new(ForHost::new(host.clone(), Plaintext)),
            None => Arc::new(Plaintext),
        },
    };
    let settings = RelaySettings {
        group_id: relay_group(&source, args.group_id.clone(), &args.kafka.topic),
        topic: args.kafka.topic.clone(),
        sole_reader: args.sole_reader,
        routes,
        match_regex,
        readdress: targets.is_some(),
        formats: args.format,
        exit_when_idle: args
            .exit_when_idle
            .map(|secs| seconds("--exit-when-idle", secs))
            .transpose()?,
        verify_threads: usize::from(args.verify_threads),
        connect_timeout,
        state_dir,
    };
    let telemetry_settings = telemetry_settings(&args.telemetry, source_encryption.as_ref())?;
    let stats = Arc::new(DownloadStats::default());
    let (metric_stats, metric_destinations) = (Arc::clone(&stats), Arc::clone(&destinations));
    crate::metrics::registry().add(Box::new(move |out| {
        metric_stats.write_metrics(out);
        crate::relay::write_metrics(&metric_destinations, out);
    }));
    let (status_stats, status_destinations) = (Arc::clone(&stats), Arc::clone(&destinations));
    let status: console::StatusFn =
        Arc::new(move || crate::relay::status_line(&status_destinations, &status_stats));
    let (heartbeat_stats, heartbeat_destinations) = (Arc::clone(&stats), Arc::clone(&destinations));
    let totals: telemetry::Totals = Arc::new(move || {
        let s = heartbeat_stats.snapshot();
        let relayed = |f: fn(&crate::relay::sink::Destination) -> u64| {
            heartbeat_destinations.iter().map(f).sum::<u64>()
        };
        vec![
            ("n_messages_read", s.messages_read),
            (
                "n_messages_processed",
                relayed(|d| d.relayed.load(std::sync::atomic::Ordering::Relaxed)),
            ),
            ("n_bytes_read", s.bytes_read),
            (
                "n_bytes_processed",
                relayed(|d| d.relayed_bytes.load(std::sync::atomic::Ordering::Relaxed)),
            ),
        ]
    });
    let (run_source, run_destinations) = (source.clone(), Arc::clone(&destinations));
    let summary = run_reporting(
        &source,
        telemetry_settings,
        status,
        totals,
        "relay",
        move |cancel| {
            crate::relay::relay(
                &run_source,
                &settings,
                decryptor,
                run_destinations,
                stats,
                &cancel,
            )
        },
    )
    .await?;
    if let Some(why) = &summary.interrupted {
        tracing::warn!(reason = %why, "stopped before the destination acknowledged everything: what was not acknowledged was not committed, and is relayed again at the next start");
    }
    let s = &summary.read;
    let relayed: Vec<String> = summary
        .relayed
        .iter()
        .map(|(topic, messages, bytes)| {
            format!(
                "{} ({}) to {topic}",
                count(*messages, "message"),
                size(*bytes)
            )
        })
        .collect();
    println!(
        "relayed: {}; {} read, {} skipped (not selected), {} for other hosts, {} rejected; in {:.2} s; consumer group {}",
        relayed.join(", "),
        count(s.messages_read, "message"),
        s.skipped_messages,
        s.other_hosts_messages,
        s.rejected_messages,
        summary.elapsed.as_secs_f64(),
        summary.group_id,
    );
    Ok(if summary.stopped_idle && s.rejected_messages > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn while_moving(bytes: u64, active: Duration, verb: &str) -> String {
    timed_rate(bytes, active)
        .map_or_else(String::new, |rate| format!(", {rate:.1} MB/s while {verb}"))
}

async fn run_download_directory(args: DownloadDirectoryArgs) -> anyhow::Result<ExitCode> {
    let config = LoadedConfig::load(&args.kafka.config)?;
    crate::metrics::start(args.metrics.metrics_addr.as_ref(), &config)?;
    let download_regex = args
        .download_regex
        .as_deref()
        .map(|r| Regex::new(r).with_context(|| format!("invalid --download-regex `{r}`")))
        .transpose()?;
    let exit_when_idle = args
        .exit_when_idle
        .map(|secs| {
            Duration::try_from_secs_f64(secs).map_err(|_| {
                anyhow::anyhow!(
                    "--exit-when-idle must be a non-negative number of seconds, got {secs}"
                )
            })
        })
        .transpose()?;
    let settings = DownloadSettings {
        output_dir: args.output_dir,
        state_dir: args.state_dir,
        progress_every: positive_seconds("--progress-seconds", args.progress_seconds)?,
        topic: args.kafka.topic,
        group_id: args.group_id,
        sole_reader: args.sole_reader,
        download_regex,
        formats: args.format,
        exit_when_idle,
        verify_threads: usize::from(args.verify_threads),
        connect_timeout: Duration::from_secs(args.kafka.connect_timeout),
        report_missing_after: positive_seconds(
            "--report-missing-after",
            args.report_missing_after,
        )?,
        discard_partials_after: (args.discard_partials_after_days > 0)
            .then(|| Duration::from_secs(u64::from(args.discard_partials_after_days) * 86_400)),
        validation: match &args.validate {
            Some(text) => Some(Validation {
                command: UserCommand::parse("--validate", text)?,
                globs: validate_globs(&args.validate_globs)?,
                timeout: seconds("--validate-timeout", args.validate_timeout)?,
            }),
            None => None,
        },
        backup_suffix: match args.backup {
            true if args.backup_suffix.is_empty() || args.backup_suffix.contains(['/', '\\']) => {
                anyhow::bail!(
                    "--backup-suffix {:?} must be a non-empty file-name ending (no slashes)",
                    args.backup_suffix
                )
            }
            true => Some(args.backup_suffix.clone()),
            false => None,
        },
        hooks: HookSettings {
            on_file: args
                .on_file
                .as_deref()
                .map(|t| UserCommand::parse("--on-file", t))
                .transpose()?,
            on_batch: args
                .on_batch
                .as_deref()
                .map(|t| UserCommand::parse("--on-batch", t))
                .transpose()?,
            batch_delay: seconds("--hook-delay", args.hook_delay)?,
            timeout: seconds("--hook-timeout", args.hook_timeout)?,
            restore_from_backup: args
                .restore_on_hook_failure
                .then(|| args.backup_suffix.clone()),
            remove_after_run: false,
            file_env: Default::default(),
        },
    };
    let host = match args.host {
        Some(host) => {
            crate::targeting::validate_host_name(&host)
                .map_err(|e| anyhow::anyhow!("--host {host:?}: {e}"))?;
            host
        }
        None => crate::host::name(),
    };
    let encryption = Encryption::of(&config, settings.connect_timeout)?;
    let telemetry_settings = telemetry_settings(&args.telemetry, encryption.as_ref())?;
    let results = results_factory(
        &config,
        encryption.as_ref(),
        args.result_topic.as_deref(),
        settings.connect_timeout,
    )?;
    let opener = opener_factory(encryption, settings.topic.clone(), host);
    let stats = Arc::new(DownloadStats::default());
    let metric_stats = Arc::clone(&stats);
    crate::metrics::registry().add(Box::new(move |out| metric_stats.write_metrics(out)));
    let status_stats = Arc::clone(&stats);
    let status: console::StatusFn = Arc::new(move || status_stats.snapshot().to_string());
    // Heartbeats count what this consumer read and wrote.
    let heartbeat_stats = Arc::clone(&stats);
    let totals: telemetry::Totals = Arc::new(move || {
        let s = heartbeat_stats.snapshot();
        vec![
            ("n_messages_read", s.messages_read),
            (
                "n_messages_processed",
                s.chunks_written + s.duplicate_chunks + s.skipped_messages + s.other_hosts_messages,
            ),
            ("n_bytes_read", s.bytes_read),
            ("n_bytes_processed", s.bytes_written),
        ]
    });
    let run_config = config.clone();
    let summary = run_reporting(
        &config,
        telemetry_settings,
        status,
        totals,
        "download",
        move |cancel| download_directory(&run_config, &settings, opener, results, stats, &cancel),
    )
    .await?;
    let s = &summary.stats;
    let mut extras = String::new();
    if s.other_hosts_messages > 0 {
        extras.push_str(&format!(
            ", {} for other hosts skipped",
            count(s.other_hosts_messages, "message")
        ));
    }
    if s.hooks_failed > 0 {
        extras.push_str(&format!(", {} failed", count(s.hooks_failed, "hook")));
    }
    if s.results_sent > 0 {
        extras.push_str(&format!(", {} sent", count(s.results_sent, "result")));
    }
    if s.files_refused > 0 {
        extras.push_str(&format!(", {} refused by --validate", s.files_refused));
    }
    if s.files_unplaced > 0 {
        extras.push_str(&format!(", {} could not be put in place", s.files_unplaced));
    }
    if s.files_missing_chunks > 0 {
        extras.push_str(&format!(
            ", {} missing chunks the broker does not have (upload again)",
            count(s.files_missing_chunks, "file")
        ));
    }
    println!(
        "downloaded: {} completed, {} in progress, {} failed verification, {} rejected{extras}; \
         {} written{} in {:.2} s; consumer group {}",
        count(s.files_completed, "file"),
        s.files_in_progress,
        s.files_failed,
        count(s.rejected_messages, "message"),
        size(s.bytes_written),
        while_moving(s.bytes_written, summary.active, "writing"),
        summary.elapsed.as_secs_f64(),
        summary.group_id,
    );
    // A requested stop (quit, Ctrl-C, SIGTERM, a service stop) is a success for a long-running
    // command: failures are in the summary and the log, and a service manager must not mark a
    // healthy service failed. A run that ends by itself (--exit-when-idle, scripts) says with
    // its exit code whether anything failed or was rejected.
    let anything_failed = s.files_not_delivered() > 0
        || s.rejected_messages > 0
        || s.hooks_failed > 0
        || s.files_missing_chunks > 0;
    Ok(if summary.stopped_idle && anything_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_says_each_cause_once() {
        let os = std::io::Error::from(std::io::ErrorKind::NotFound);
        let os_text = os.to_string();
        let quoted = crate::upload::source::SourceError::Open {
            path: "/x/nope.bin".into(),
            source: os,
        };
        let error = anyhow::Error::new(quoted).context("uploading /x/nope.bin");
        let line = error_line(&error);
        assert_eq!(line.matches(&os_text).count(), 1, "{line}");
        assert!(
            line.starts_with("uploading /x/nope.bin: cannot open /x/nope.bin"),
            "{line}"
        );
        // A cause not quoted is still said.
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_line(&plain), "outer: inner");
    }
}
