//! `openmsi download-directory`: consume a topic in a consumer group and rebuild files under
//! an output folder, verified by SHA-512, atomically visible, resumable after any crash.
//!
//! - [`verify`]: the verify stage: open (decryption/selection seam), decode, validate, hash.
//! - [`validate`]: semantic and path-safety checks on decoded chunks.
//! - [`partial`]: one staged file (data + durable chunk record + incremental hash).
//! - [`reassembler`] is the output folder's `ChunkSink` (the seam is in `crate::contract`).
//! - [`reassembler`]: staging files, crash recovery.
//! - [`publish`]: putting a verified file in place (atomic rename), the failed area.
//! - [`completed`]: the log of files already published.
//! - [`rejects`]: bad messages kept aside.
//! - [`stale`]: removal of partial files abandoned for too long, at start.
//! - [`pipeline`]: the poll → verify → write threads and the offset commits.
//! - [`offsets`]: which offsets may be committed (never past an unfinished file's start).
//! - [`stats`]: counters for `check` and the summary.
//! - [`verdicts`]: what to do with each verdict, for the live path and the retries alike.
//! - [`replay`]: messages that cannot be opened yet (no key): held, kept, retried.
//! - [`foreign`]: messages of a format this downloader does not read, explained once.
//! - [`hooks`]: `--on-file`/`--on-batch`: the durable due/done log and the runner thread.
//! - [`results`]: `--result-topic`: each `--on-file` command's output as a result message.
//! - [`command`]: running a user's command (hooks, `--validate`) without a shell.

pub mod command;
pub mod completed;
pub mod foreign;
pub mod hooks;
pub mod offsets;
pub mod partial;
pub mod pipeline;
pub mod publish;
pub mod reassembler;
pub mod rejects;
pub mod replay;
pub mod results;
pub mod stale;
pub mod stats;
pub mod validate;
pub mod verdicts;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use regex::Regex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::LoadedConfig;
use crate::contract::{ChunkSink, Opener};
use crate::kafka::consumer::{self, ConsumerSpec, Membership};
use crate::kafka::ConsumerLogContext;
use crate::progress::Activity;
use crate::state::StateDir;
use hooks::HookSettings;
use pipeline::{PipelineOptions, StopReason};
use publish::{DeliveryControl, Validation};
use rdkafka::consumer::BaseConsumer;
use reassembler::Reassembler;
use rejects::KeptAside;
use rejects::RejectStore;
pub use stats::{DownloadStats, StatsSnapshot};

/// Validated settings for a download run.
#[derive(Debug, Clone)]
pub struct DownloadSettings {
    /// Folder files are rebuilt into.
    pub output_dir: PathBuf,
    /// Where staging, logs and kept messages live (`--state-dir`); None: `output_dir/.openmsi`.
    pub state_dir: Option<PathBuf>,
    /// Seconds between progress lines in a log for a file still arriving.
    pub progress_every: Duration,
    /// Topic to read.
    pub topic: String,
    /// Consumer group from the CLI (overrides the config file).
    pub group_id: Option<String>,
    /// `--sole-reader`: read every partition at once, without the group's rebalance.
    pub sole_reader: bool,
    /// Only files whose relative path matches are rebuilt.
    pub download_regex: Option<Regex>,
    /// `--format`: the message formats read.
    pub formats: verify::Formats,
    /// Exit after reading everything and this much quiet.
    pub exit_when_idle: Option<Duration>,
    /// Chunk verification threads.
    pub verify_threads: usize,
    /// Bound on waiting for the broker's first answer.
    pub connect_timeout: Duration,
    /// Partial files untouched this long are discarded at start (None: never).
    pub discard_partials_after: Option<Duration>,
    /// `--report-missing-after`: see `pipeline::PipelineOptions::report_missing_after`.
    pub report_missing_after: Duration,
    /// `--validate`: a command that must accept a file before it replaces anything.
    pub validation: Option<Validation>,
    /// `--backup`: keep the replaced version as NAME + this suffix.
    pub backup_suffix: Option<String>,
    /// `--on-file`, `--on-batch` and how they run.
    pub hooks: HookSettings,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct DownloadSummary {
    /// Final counters.
    pub stats: StatsSnapshot,
    /// Wall time.
    pub elapsed: Duration,
    /// Time data was being written (the wall time less idle pauses).
    pub active: Duration,
    /// The consumer group used (pass it as --group-id to resume).
    pub group_id: String,
    /// True when it stopped because the topic was idle.
    pub stopped_idle: bool,
}

/// The consumer's `session.timeout.ms` (the file's, or openmsi's default).
fn session_timeout(properties: &[(String, String)]) -> Duration {
    properties
        .iter()
        .rev()
        .find(|(k, _)| k == "session.timeout.ms")
        .and_then(|(_, v)| v.trim().parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(crate::kafka::consumer::DEFAULT_SESSION_TIMEOUT)
}

/// Creates the output folder and its state folder (`--state-dir`, or `output/.openmsi`). A
/// chosen state folder must be outside the output folder and on its filesystem: verified files
/// are renamed from its staging area into place, which cannot cross filesystems.
fn prepare_state(output: &Path, chosen: Option<&Path>) -> std::io::Result<StateDir> {
    std::fs::create_dir_all(output).map_err(|e| crate::state::annotate_create(e, output))?;
    if let Some(chosen) = chosen {
        // Before anything is created there.
        crate::state::refuse_inside(chosen, output, "the output folder")?;
    }
    let state = StateDir::located(output, chosen).ensure()?;
    if let Some(chosen) = chosen {
        if !crate::state::same_filesystem(chosen, output)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "--state-dir {} is on another filesystem than the output folder: files are renamed into place from it, which cannot cross filesystems. Choose a folder on the output folder's filesystem",
                    chosen.display()
                ),
            ));
        }
    }
    Ok(state)
}

/// A consumer in its group, as the commands that read a topic through the pipeline join it.
pub struct Joined {
    /// Subscribed (or assigned every partition, for a sole reader).
    pub consumer: BaseConsumer<ConsumerLogContext>,
    /// The group id used (pass it as --group-id to resume).
    pub group_id: String,
    /// When nothing was assigned for this long, leave and rejoin (see
    /// [`crate::kafka::group::Rejoin`]).
    pub rejoin_after: Duration,
    /// A new consumer in the same group, for when rejoining is not enough (see
    /// [`pipeline::Reconnect`]).
    pub reconnect: pipeline::Reconnect,
}

/// Creates the consumer for `topic` in group `group_id` (None: the config's), checks the topic
/// within `connect_timeout` and subscribes: a fresh group (`create_new`) or a `sole_reader`
/// reads every partition at once, anything else joins the group's rebalance. `partition_eof`
/// reports ends of partitions (for `--exit-when-idle`).
pub fn join_group(
    config: &LoadedConfig,
    topic: &str,
    group_id: Option<&str>,
    sole_reader: bool,
    partition_eof: bool,
    connect_timeout: Duration,
) -> anyhow::Result<Joined> {
    let properties = config.consumer_properties(group_id, true);
    let resolved_group = properties
        .iter()
        .rev()
        .find(|(k, _)| k == "group.id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // A fresh group has no other member, by construction: it need not wait for a rebalance.
    let fresh_group = match group_id {
        Some(id) => crate::config::is_create_new(id),
        None => config.consumer_group_is_fresh(),
    };
    let membership = if fresh_group || sole_reader {
        Membership::Sole
    } else {
        Membership::Group
    };
    let consumer = consumer::subscribe(
        config,
        &ConsumerSpec {
            properties: &properties,
            topic,
            partition_eof,
            connect_timeout,
            membership,
        },
    )?;
    let rejoin_after = session_timeout(&properties) + Duration::from_secs(5);
    let (config, topic) = (config.clone(), topic.to_string());
    let reconnect: pipeline::Reconnect = Box::new(move |connect_timeout| {
        let spec = ConsumerSpec {
            properties: &properties,
            topic: &topic,
            partition_eof,
            connect_timeout,
            // Only a member of a shared group goes without partitions.
            membership: Membership::Group,
        };
        Ok(consumer::subscribe(&config, &spec)?)
    });
    Ok(Joined {
        consumer,
        group_id: resolved_group,
        rejoin_after,
        reconnect,
    })
}

/// Builds the step before decoding (host selection, decryption) once the output folder is
/// ready: the command layer decides what it is (`app.rs`), the downloader when it starts.
pub type OpenerFactory = Box<dyn FnOnce() -> anyhow::Result<Arc<dyn Opener>> + Send>;

/// Connects the `--result-topic` producer (checking the topic) once the output folder is ready.
pub type ResultsFactory = Box<dyn FnOnce() -> anyhow::Result<Box<dyn results::ResultSink>> + Send>;

/// Runs the downloader until `cancel`, idle exit, or a fatal error.
pub fn download_directory(
    config: &LoadedConfig,
    settings: &DownloadSettings,
    opener: OpenerFactory,
    results: Option<ResultsFactory>,
    stats: Arc<DownloadStats>,
    cancel: &CancellationToken,
) -> anyhow::Result<DownloadSummary> {
    download_into(config, settings, opener, results, stats, cancel, Ok)
}

/// [`download_directory`] with the output folder's sink wrapped by `sink_for` (s3-transfer
/// puts each published file into a bucket), called once the folder is ready and before
/// anything touches Kafka. A sink that gives up with `Interrupted` after a stop request ends
/// the run as a requested stop (nothing it had not finished is committed).
pub fn download_into<S: ChunkSink + Send>(
    config: &LoadedConfig,
    settings: &DownloadSettings,
    opener: OpenerFactory,
    results: Option<ResultsFactory>,
    stats: Arc<DownloadStats>,
    cancel: &CancellationToken,
    sink_for: impl FnOnce(Reassembler) -> anyhow::Result<S>,
) -> anyhow::Result<DownloadSummary> {
    let started = Instant::now();
    let output = &settings.output_dir;
    // Local state first: a bad output folder fails before anything touches Kafka.
    let state_dir = prepare_state(output, settings.state_dir.as_deref())
        .with_context(|| format!("preparing output folder {}", output.display()))?;
    // Held until return: a second downloader on this folder would share its staging files.
    let _lock = state_dir.lock(output, "download-directory")?;
    if let Some(max_age) = settings.discard_partials_after {
        stale::discard_stale_partials(&state_dir.staging(), max_age, SystemTime::now())
            .with_context(|| format!("cleaning the staging area of {}", output.display()))?;
    }
    let results = results.map(|connect| connect()).transpose()?;
    let (hook_log, hook_runner) = hooks::start(
        &state_dir.hook_log(),
        &settings.hooks,
        output,
        &settings.topic,
        &stats,
        results,
    )?;
    let control = DeliveryControl {
        validation: settings.validation.clone(),
        backup_suffix: settings.backup_suffix.clone(),
        hooks: hook_log,
        topic: settings.topic.clone(),
    };
    let mut reassembler = Reassembler::open(output, &state_dir, Arc::clone(&stats), control)
        .with_context(|| format!("preparing output folder {}", output.display()))?;
    // Files of several chunks show with their bytes and rate while they arrive.
    let activity = Arc::new(Activity::default());
    reassembler.show_progress(Arc::clone(&activity));
    let _display = crate::progress::spawn_display(activity, settings.progress_every);
    let sink = sink_for(reassembler)?;
    let kept = KeptAside {
        rejected: RejectStore::open(&state_dir.rejected())
            .with_context(|| format!("preparing {}", output.display()))?,
        deferred: RejectStore::open(&state_dir.deferred())
            .with_context(|| format!("preparing {}", output.display()))?,
    };

    // Encrypted topics: the key exchange starts (and its topics are checked) before reading.
    let opener = opener()?;
    let joined = join_group(
        config,
        &settings.topic,
        settings.group_id.as_deref(),
        settings.sole_reader,
        settings.exit_when_idle.is_some(),
        settings.connect_timeout,
    )?;
    let (mut consumer, group_id) = (joined.consumer, joined.group_id);
    info!(
        topic = %settings.topic,
        group = %group_id,
        output = %output.display(),
        "downloading; type `check` for status or `quit` to stop (pass this --group-id to resume later)"
    );
    crate::service::ready();

    let options = PipelineOptions {
        topic: settings.topic.clone(),
        selection: verify::Selection {
            formats: settings.formats,
            regex: settings.download_regex.clone(),
        },
        verify_threads: settings.verify_threads,
        exit_when_idle: settings.exit_when_idle,
        opener,
        rejoin_unassigned_after: joined.rejoin_after,
        reconnect: Some(joined.reconnect),
        report_missing_after: settings.report_missing_after,
    };
    let stop = pipeline::run(&mut consumer, sink, kept, &options, &stats, cancel);
    // The pipeline dropped the hook log's sender: the runner finishes the hooks due and ends.
    if let Some(handle) = hook_runner {
        if handle.join().is_err() {
            warn!("the hook thread panicked; hooks still due run at the next start");
        }
    }
    let stop = match stop {
        Err(pipeline::PipelineError::Write { source, .. })
            if cancel.is_cancelled() && source.kind() == std::io::ErrorKind::Interrupted =>
        {
            warn!(reason = %source, "stopped while writing");
            StopReason::Requested
        }
        other => other?,
    };
    Ok(DownloadSummary {
        stats: stats.snapshot(),
        elapsed: started.elapsed(),
        active: stats.active.active(),
        group_id,
        stopped_idle: stop == StopReason::Idle,
    })
}
