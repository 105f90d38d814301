//! `openmsi s3-transfer` from its flags: settings, console, signals, metrics, heartbeats, and
//! the summary line and exit code (as download-directory's, with the bucket's counters).

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use regex::Regex;

use super::settings::S3Settings;
use super::sink::{KeyLayout, S3Stats};
use super::{default_state_dir, s3_transfer, TransferSettings};
use crate::cli::S3TransferArgs;
use crate::command_args::{
    opener_factory, positive_seconds, results_factory, run_reporting, seconds, telemetry_settings,
};
use crate::config::LoadedConfig;
use crate::console;
use crate::crypto::session::Encryption;
use crate::download::command::UserCommand;
use crate::download::hooks::{FileEnv, HookSettings};
use crate::download::{DownloadSettings, DownloadStats};
use crate::kafka::telemetry;
use crate::progress::{count, size};

/// Runs the command; see [`super`].
pub async fn run(args: S3TransferArgs) -> anyhow::Result<ExitCode> {
    let config = LoadedConfig::load(&args.kafka.config)?;
    let env = |name: &str| std::env::var(name).ok();
    let s3 = S3Settings::from_config(&config, &env)?;
    crate::metrics::start(args.metrics.metrics_addr.as_ref(), &config)?;
    let state_root = match args
        .state_dir
        .clone()
        .or_else(|| default_state_dir(&args.bucket, &args.kafka.topic))
    {
        Some(dir) => dir,
        None => anyhow::bail!(
            "no cache folder to keep s3-transfer's state in (HOME is not set): give --state-dir"
        ),
    };
    let keys = KeyLayout::new(&args.kafka.topic, args.key_prefix.as_deref());
    let bucket = args.bucket.clone();
    let transfer = TransferSettings {
        bucket: args.bucket.clone(),
        s3,
        key_prefix: args.key_prefix.clone(),
        part_size: args.part_size_mib as usize * (1 << 20),
        state_root,
        // The command runs on the outbox copy once the object is confirmed; the copy goes
        // once the command has run.
        hooks: HookSettings {
            on_file: args
                .on_file
                .as_deref()
                .map(|t| UserCommand::parse("--on-file", t))
                .transpose()?,
            timeout: seconds("--hook-timeout", args.hook_timeout)?,
            remove_after_run: true,
            file_env: FileEnv::new(move |relative| {
                vec![
                    ("OPENMSI_S3_BUCKET", bucket.clone()),
                    ("OPENMSI_S3_KEY", keys.key(relative)),
                ]
            }),
            ..HookSettings::default()
        },
    };
    let download = DownloadSettings {
        output_dir: transfer.outbox(),
        state_dir: Some(transfer.download_state()),
        progress_every: positive_seconds("--progress-seconds", args.progress_seconds)?,
        topic: args.kafka.topic.clone(),
        group_id: args.group_id.clone(),
        sole_reader: args.sole_reader,
        download_regex: args
            .download_regex
            .as_deref()
            .map(|r| Regex::new(r).with_context(|| format!("invalid --download-regex `{r}`")))
            .transpose()?,
        formats: args.format,
        exit_when_idle: args
            .exit_when_idle
            .map(|secs| seconds("--exit-when-idle", secs))
            .transpose()?,
        verify_threads: usize::from(args.verify_threads),
        connect_timeout: Duration::from_secs(args.kafka.connect_timeout),
        discard_partials_after: (args.discard_partials_after_days > 0)
            .then(|| Duration::from_secs(u64::from(args.discard_partials_after_days) * 86_400)),
        report_missing_after: positive_seconds(
            "--report-missing-after",
            args.report_missing_after,
        )?,
        validation: None,
        backup_suffix: None,
        // Hooks are s3-transfer's own (`transfer.hooks`): they wait for the object, not for
        // the file's publication into the outbox.
        hooks: HookSettings::default(),
    };
    let host = match args.host.clone() {
        Some(host) => {
            crate::targeting::validate_host_name(&host)
                .map_err(|e| anyhow::anyhow!("--host {host:?}: {e}"))?;
            host
        }
        None => crate::host::name(),
    };
    let encryption = Encryption::of(&config, download.connect_timeout)?;
    let telemetry_settings = telemetry_settings(&args.telemetry, encryption.as_ref())?;
    let results = results_factory(
        &config,
        encryption.as_ref(),
        args.result_topic.as_deref(),
        download.connect_timeout,
    )?;
    let opener = opener_factory(encryption, download.topic.clone(), host);
    let stats = Arc::new(DownloadStats::default());
    let s3_stats = Arc::new(S3Stats::default());
    let (metric_stats, metric_s3) = (Arc::clone(&stats), Arc::clone(&s3_stats));
    crate::metrics::registry().add(Box::new(move |out| {
        metric_stats.write_metrics(out);
        metric_s3.write_metrics(out);
    }));
    let (status_stats, status_s3) = (Arc::clone(&stats), Arc::clone(&s3_stats));
    let status: console::StatusFn =
        Arc::new(move || format!("{}; {}", status_stats.snapshot(), status_s3.line()));
    let (heartbeat_stats, heartbeat_s3) = (Arc::clone(&stats), Arc::clone(&s3_stats));
    let totals: telemetry::Totals = Arc::new(move || {
        let s = heartbeat_stats.snapshot();
        vec![
            ("n_messages_read", s.messages_read),
            (
                "n_messages_processed",
                s.chunks_written + s.duplicate_chunks + s.skipped_messages,
            ),
            ("n_bytes_read", s.bytes_read),
            (
                "n_bytes_processed",
                heartbeat_s3.bytes.load(Ordering::Relaxed),
            ),
        ]
    });
    let run_s3 = Arc::clone(&s3_stats);
    let run_config = config.clone();
    let summary = run_reporting(
        &config,
        telemetry_settings,
        status,
        totals,
        "s3-transfer",
        move |cancel| {
            s3_transfer(
                &run_config,
                &download,
                &transfer,
                opener,
                results,
                stats,
                run_s3,
                &cancel,
            )
        },
    )
    .await?;
    let s = &summary.stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let failed_objects = get(&s3_stats.failed);
    let mut extras = String::new();
    if s.hooks_failed > 0 {
        extras.push_str(&format!(", {} failed", count(s.hooks_failed, "hook")));
    }
    if s.results_sent > 0 {
        extras.push_str(&format!(", {} sent", count(s.results_sent, "result")));
    }
    println!(
        "transferred to bucket {}: {} written ({}), {} already there, {} failed; {} in progress, \
         {} failed verification, {} rejected{extras}; in {:.2} s; consumer group {}",
        args.bucket,
        count(get(&s3_stats.written), "object"),
        size(get(&s3_stats.bytes)),
        get(&s3_stats.already_there),
        failed_objects,
        s.files_in_progress,
        s.files_failed,
        count(s.rejected_messages, "message"),
        summary.elapsed.as_secs_f64(),
        summary.group_id,
    );
    let anything_failed = failed_objects > 0
        || s.files_not_delivered() > 0
        || s.rejected_messages > 0
        || s.hooks_failed > 0
        || s.files_missing_chunks > 0;
    Ok(if summary.stopped_idle && anything_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
