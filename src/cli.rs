//! Command-line arguments: the raw layer close to the flags. [`crate::app`] resolves these into
//! the validated settings each command runs with (the only thing the rest of the program sees). OpenMSIStream's underscore spellings are accepted
//! as aliases so existing scripts keep working.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::chunk::{ChunkSize, WireFields};

/// Stream data files through Apache Kafka, wire-compatible with OpenMSIStream.
#[derive(Debug, Parser)]
#[command(name = "openmsi", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as
    /// `openmsi=debug,librdkafka=info`. Overrides RUST_LOG. [default: info]
    #[arg(long, global = true, value_name = "LEVEL", alias = "log_level")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log file a command keeps besides stderr: upload-directory writes
    /// `DIR/.openmsi/upload-directory.log` when DIR exists (a missing DIR is reported by the
    /// command itself).
    pub fn log_file(&self) -> Option<PathBuf> {
        match &self.command {
            Command::UploadDirectory(args) if args.dir.is_dir() => {
                let state = crate::state::StateDir::located(&args.dir, args.state_dir.as_deref());
                Some(state.log_file("upload-directory"))
            }
            // A Windows service has no stderr anyone reads: both commands log to their folder.
            Command::ManageService(ManageServiceArgs {
                command: ServiceCommand::Host(host),
            }) => {
                let argv = std::iter::once("openmsi".to_string()).chain(host.command.clone());
                let (dir, state_dir, name) = match Cli::try_parse_from(argv).ok()?.command {
                    Command::UploadDirectory(a) => (a.dir, a.state_dir, "upload-directory"),
                    Command::DownloadDirectory(a) => {
                        (a.output_dir, a.state_dir, "download-directory")
                    }
                    _ => return None,
                };
                std::fs::create_dir_all(&dir).ok()?;
                let state = crate::state::StateDir::located(&dir, state_dir.as_deref());
                Some(state.log_file(name))
            }
            _ => None,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chunk one file and produce it to a topic; exit 0 only when the broker acknowledged every chunk.
    UploadFile(UploadFileArgs),
    /// Watch a folder recursively and upload every file that appears or changes, once it has
    /// settled; survives restarts without re-sending completed files. Type `check` or `quit`
    /// (then Enter) while it runs.
    UploadDirectory(UploadDirectoryArgs),
    /// Rebuild files from a topic into a folder, verified by SHA-512 and renamed into place
    /// atomically; resumes after a crash. Type `check` or `quit` (then Enter) while it runs.
    DownloadDirectory(DownloadDirectoryArgs),
    /// Create, list, describe or delete topics (Kafka admin API, same config files).
    Topic(TopicArgs),
    /// Add or remove SASL/SCRAM users (Kafka admin API, same config files).
    User(UserArgs),
    /// Run upload-directory, download-directory, relay or s3-transfer as an OS service (systemd on Linux, the
    /// Service Control Manager on Windows): install, status, logs, start, stop, restart,
    /// remove, list.
    ManageService(ManageServiceArgs),
    /// Create a node for end-to-end encrypted topics (its keys, its certificate, its config),
    /// in KafkaCrypto's formats; asks like KafkaCrypto's simple-provision, or runs from flags.
    ProvisionNode(ProvisionNodeArgs),
    /// Answer key requests for encrypted topics with the keys this producer node made, also
    /// those of uploads whose process has exited (run it where the producer node's files are,
    /// e.g. as a service, when no upload-directory of that node runs). Type `check` or `quit`.
    ServeKeys(ServeKeysArgs),
    /// Consume a topic and produce the selected files' messages, unchanged and verified, to
    /// other topics, on this cluster or another (--to-config); a source offset is committed
    /// only once the destination acknowledged everything selected before it. Type `check` or
    /// `quit` while it runs.
    Relay(RelayArgs),
    /// Rebuild files from a topic, verified as download-directory does, straight into an S3
    /// bucket (`<topic>/<subdir>/<file>`, SHA-512 as `sha512` metadata, multipart for large
    /// files); an offset is committed only once its files' objects are confirmed. Endpoint
    /// and keys from the config's [s3] section (OpenMSIStream's) or AWS's environment
    /// variables. Type `check` or `quit` while it runs.
    S3Transfer(S3TransferArgs),
    /// One view of a deployment: per topic, its consumer groups' lag and last commit; the
    /// programs on the heartbeat topic and when each was last heard from; the services on
    /// this machine. Exit code 1 when a program is stale or a group lags beyond --max-lag.
    Status(StatusArgs),
}

/// `openmsi status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub admin: AdminArgs,

    /// A topic to report on (repeatable). [default: every topic except key-exchange and
    /// internal ones]
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,

    /// The heartbeat topic the programs send to (their --heartbeat-topic); OpenMSIStream's
    /// programs are read too. [default: no heartbeats]
    #[arg(long, value_name = "TOPIC")]
    pub heartbeat_topic: Option<String>,

    /// A program is stale when its last heartbeat is older than this many seconds. [default:
    /// three of its own heartbeat intervals (as seen on the topic), else 2700]
    #[arg(long, value_name = "SECS")]
    pub stale_after: Option<f64>,

    /// Exit 1 when a consumer group has more than N messages left to read on a topic.
    #[arg(long, value_name = "N")]
    pub max_lag: Option<i64>,

    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `openmsi serve-keys`.
#[derive(Debug, Args)]
pub struct ServeKeysArgs {
    /// Config file naming the node in `[kafkacrypto]`, as for the uploads.
    #[arg(long, value_name = "FILE|NAME", default_value = "local")]
    pub config: String,

    /// A topic whose keys to serve (keys are per root: the name up to its first '.'); repeat
    /// for several. The default is every other command's default topic.
    #[arg(
        long = "topic",
        alias = "topic_name",
        value_name = "TOPIC",
        default_value = "openmsistream"
    )]
    pub topics: Vec<String>,

    /// Seconds to wait for the broker to answer before giving up with an error that names it.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub connect_timeout: u64,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// `openmsi provision-node`. Every answer can be a flag; passwords come from environment
/// variables or files, never from the command line (it is visible to other users in `ps`).
#[derive(Debug, Args)]
pub struct ProvisionNodeArgs {
    /// The node's name: the files are OUTPUT_DIR/NODE_ID/NODE_ID.{config,crypto,seed}.
    #[arg(long, value_name = "NODE_ID")]
    pub node_id: Option<String>,

    /// What the node may do.
    #[arg(long, value_enum)]
    pub role: Option<crate::crypto::provision::Role>,

    /// Space-separated topics the node may use (reduced to their roots, the part before the
    /// first '.'); "all" for every topic.
    #[arg(long, value_name = "TOPICS")]
    pub topics: Option<String>,

    /// How many certificates may follow the node's (-1: no limit). [default: 1]
    #[arg(long, allow_negative_numbers = true)]
    pub pathlen: Option<i64>,

    /// Signing key type: 1 = Ed25519 (the only type openmsi supports). [default: 1]
    #[arg(long, value_name = "TYPE")]
    pub key_type: Option<u8>,

    /// The folder that receives the node's folder. [default: .]
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Read the root-of-trust password from this file (else $OPENMSI_ROT_PASSWORD, else a
    /// prompt on a terminal).
    #[arg(long, value_name = "FILE")]
    pub rot_password_file: Option<PathBuf>,

    /// Read the provisioning password from this file (else $OPENMSI_PROVISIONING_PASSWORD,
    /// else a prompt on a terminal).
    #[arg(long, value_name = "FILE")]
    pub provisioning_password_file: Option<PathBuf>,

    /// Sign the node with the root key in FILE (created by --new-root-key) instead of
    /// password-derived keys.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rot_password_file", "provisioning_password_file", "new_root_key"])]
    pub root_key: Option<PathBuf>,

    /// Create a random root key in FILE (keep it offline), then sign the node with it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rot_password_file", "provisioning_password_file"])]
    pub new_root_key: Option<PathBuf>,

    /// Replace an existing node (its keys are lost) or root key file.
    #[arg(long)]
    pub force: bool,

    /// Do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `openmsi manage-service`.
#[derive(Debug, Args)]
pub struct ManageServiceArgs {
    #[command(subcommand)]
    pub command: ServiceCommand,
}

/// Which service manager scope a command addresses.
#[derive(Debug, Args, Clone, Copy)]
pub struct ServiceScope {
    /// A user service of the invoking user (systemd's user manager; no root needed) instead of
    /// a system service.
    #[arg(long)]
    pub user: bool,
}

/// A service by name.
#[derive(Debug, Args)]
pub struct ServiceName {
    /// The service's name (letters, digits, `-` and `_`; the unit is `openmsi-NAME.service`).
    #[arg(value_name = "NAME")]
    pub name: String,

    #[command(flatten)]
    pub scope: ServiceScope,
}

/// The subcommands of `openmsi manage-service`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Check a command as the service will run it and install it as a service that starts at
    /// boot (and now): `install NAME -- upload-directory DIR --config C --topic T`. Nothing is
    /// installed when the check fails.
    Install(ServiceInstallArgs),
    /// The service manager's state and the program's own last status line.
    Status(ServiceName),
    /// The service's log, newest last.
    Logs(ServiceLogsArgs),
    /// Start the service.
    Start(ServiceName),
    /// Stop the service gracefully (in-flight data flushed and recorded), then hard after the
    /// stop timeout.
    Stop(ServiceName),
    /// Stop (gracefully), then start the service.
    Restart(ServiceName),
    /// Stop the service and remove it, its environment file and its unit.
    Remove(ServiceName),
    /// Every openmsi service on this machine.
    List(ServiceScope),
    /// Check a command as a service would run it, without installing anything (what install
    /// runs as the service's user).
    #[command(hide = true)]
    Check(ServiceCheckArgs),
    /// What the Windows Service Control Manager starts: runs COMMAND as service NAME.
    #[command(hide = true)]
    Host(ServiceHostArgs),
}

/// `openmsi manage-service host`.
#[derive(Debug, Args)]
pub struct ServiceHostArgs {
    /// The service's name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The folder with the service's environment file and status line, as install saw it
    /// (a service's own %ProgramData% may differ).
    #[arg(long, value_name = "DIR")]
    pub data_dir: std::path::PathBuf,

    /// The command it runs.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `openmsi manage-service install`.
#[derive(Debug, Args)]
pub struct ServiceInstallArgs {
    #[command(flatten)]
    pub service: ServiceName,

    /// The user the service runs as. [default: the user who installs (with sudo, the user who
    /// ran sudo)]. `root` must be asked for explicitly.
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,

    /// Seconds a stop may take (flushing what is in flight) before the service is killed.
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub stop_timeout: u64,

    /// Install and enable, but do not start now.
    #[arg(long)]
    pub no_start: bool,

    /// The command the service runs: upload-directory, download-directory, relay or s3-transfer with its
    /// arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `openmsi manage-service logs`.
#[derive(Debug, Args)]
pub struct ServiceLogsArgs {
    #[command(flatten)]
    pub service: ServiceName,

    /// How many of the newest lines to show.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 200)]
    pub lines: u32,

    /// Keep printing new lines as they come (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `openmsi manage-service check`.
#[derive(Debug, Args)]
pub struct ServiceCheckArgs {
    /// The command, as for install.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Config file and connect timeout for the admin commands.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Config file: a path, or a name looked up like every command's --config.
    #[arg(long, value_name = "FILE|NAME", default_value = "local")]
    pub config: String,

    /// Seconds to wait for the broker to answer.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub connect_timeout: u64,
}

/// `openmsi topic`.
#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// `openmsi topic` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic sized for openmsi's chunks; an existing topic with the same settings is
    /// not an error.
    Create(TopicCreateArgs),
    /// List the cluster's topics.
    List(TopicListArgs),
    /// Partitions, leaders, replicas, settings, offsets and the consumer groups reading a
    /// topic with their lag.
    Describe(TopicDescribeArgs),
    /// Delete a topic and every message in it (asks first unless --yes).
    Delete(TopicDeleteArgs),
}

/// `openmsi topic create`.
#[derive(Debug, Args)]
pub struct TopicCreateArgs {
    /// The topic.
    #[arg(value_name = "TOPIC")]
    pub name: String,

    /// Partitions: files are spread over them, one consumer per partition at most.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100_000))]
    pub partitions: i32,

    /// Copies of each partition (at most the number of brokers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub replication_factor: i32,

    /// A topic setting KEY=VALUE such as retention.ms=604800000 (repeatable).
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    pub topic_config: Vec<String>,

    /// Also create the key-exchange topics of an encrypted topic (TOPIC.keys, .reqs, .subs).
    #[arg(long)]
    pub encrypted: bool,

    /// The chunk size uploads will use: max.message.bytes is set large enough for it.
    #[arg(long, value_name = "BYTES", default_value_t = ChunkSize::default())]
    pub chunk_size: ChunkSize,

    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `openmsi topic list`.
#[derive(Debug, Args)]
pub struct TopicListArgs {
    #[command(flatten)]
    pub admin: AdminArgs,

    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `openmsi topic describe`.
#[derive(Debug, Args)]
pub struct TopicDescribeArgs {
    /// The topic.
    #[arg(value_name = "TOPIC")]
    pub name: String,

    #[command(flatten)]
    pub admin: AdminArgs,

    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `openmsi topic delete`.
#[derive(Debug, Args)]
pub struct TopicDeleteArgs {
    /// The topic.
    #[arg(value_name = "TOPIC")]
    pub name: String,

    #[command(flatten)]
    pub admin: AdminArgs,

    /// Delete without asking (needed when standard input is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// `openmsi user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
}

/// `openmsi user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a SCRAM user, or set a new password for one.
    Add(UserAddArgs),
    /// Remove a SCRAM user's credential.
    Remove(UserRemoveArgs),
}

/// A SCRAM hash function (`user add`, `user remove`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    /// SCRAM-SHA-256.
    #[value(name = "scram-sha-256")]
    Sha256,
    /// SCRAM-SHA-512.
    #[value(name = "scram-sha-512")]
    Sha512,
}

/// PBKDF2 iterations for a new SCRAM credential: Kafka's minimum is 4096; 8192 is what the
/// Kafka and tansu tools use by default.
pub const DEFAULT_SCRAM_ITERATIONS: i32 = 8192;

/// `openmsi user add`.
#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// The user name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// SCRAM hash function (clients set sasl.mechanism to match).
    #[arg(long, value_enum, default_value = "scram-sha-512")]
    pub mechanism: Mechanism,

    /// Read the password from this environment variable instead of asking on the terminal.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,

    /// PBKDF2 iterations (at least 4096).
    #[arg(long, default_value_t = DEFAULT_SCRAM_ITERATIONS,
          value_parser = clap::value_parser!(i32).range(4096..))]
    pub iterations: i32,

    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `openmsi user remove`.
#[derive(Debug, Args)]
pub struct UserRemoveArgs {
    /// The user name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The credential to remove.
    #[arg(long, value_enum, default_value = "scram-sha-512")]
    pub mechanism: Mechanism,

    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Where to find Kafka: shared by every command.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Config file: a path, or a name looked up (with `.config` appended when it has no
    /// extension) in $OPENMSI_CONFIG_DIR and then in the shipped config_files/ folder.
    #[arg(long, value_name = "FILE|NAME", default_value = "local")]
    pub config: String,

    /// Kafka topic to use.
    #[arg(
        long,
        alias = "topic_name",
        value_name = "TOPIC",
        default_value = "openmsistream"
    )]
    pub topic: String,

    /// Seconds to wait for the broker to answer before giving up with an error that names it.
    #[arg(
        long,
        alias = "connect_timeout",
        value_name = "SECS",
        default_value_t = 15
    )]
    pub connect_timeout: u64,
}

/// What every upload command takes: where to send, and how each file is cut and addressed.
#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Address each file to this host only (repeatable: to each host named). Downloaders on
    /// other hosts skip it. [default: every host]
    #[arg(long = "to-host", value_name = "NAME")]
    pub to_hosts: Vec<String>,

    /// Bytes per chunk (one Kafka message each); a non-zero power of two.
    #[arg(long, alias = "chunk_size", value_name = "BYTES", default_value_t = ChunkSize::default())]
    pub chunk_size: ChunkSize,

    /// Fields per chunk message: 10 (OpenMSIStream >= 1.8.7, adds the file's mtime) or 9 for
    /// consumers running OpenMSIStream 1.8.6 or older.
    #[arg(long, alias = "wire_fields", value_name = "9|10", default_value_t = WireFields::Ten)]
    pub wire_fields: WireFields,

    /// Message layout: openmsi's own (OpenMSIStream's), or Knot Resolver's (key = file name,
    /// value = the part's bytes, `file-name`/`total-chunks`/`chunk-index` headers, plus
    /// `file-sha512`), to feed Knot Resolvers (with `--to-host`).
    #[arg(long, value_enum, default_value = "openmsi")]
    pub format: crate::chunk::MessageFormat,
}

/// `openmsi upload-file`.
#[derive(Debug, Args)]
pub struct UploadFileArgs {
    /// The file to upload.
    #[arg(value_name = "FILE", alias = "filepath")]
    pub file: PathBuf,

    #[command(flatten)]
    pub upload: UploadArgs,

    /// Folder the file's subfolder is recorded relative to, so a downloader recreates it
    /// (e.g. `--root-dir /data` for /data/run1/x.tif gives run1/x.tif). [default: the file's folder]
    #[arg(long, alias = "rootdir", alias = "root_dir", value_name = "DIR")]
    pub root_dir: Option<PathBuf>,

    /// Threads that compute chunk hashes while the whole-file hash is computed (`--n-threads`
    /// and OpenMSIStream's `--n_threads` are accepted as old names).
    #[arg(long, visible_alias = "n-threads", alias = "n_threads", value_name = "N",
          default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub hash_threads: u16,

    /// Seconds to wait, after the last chunk is queued, for the broker to acknowledge all of them.
    #[arg(
        long,
        alias = "delivery_timeout",
        value_name = "SECS",
        default_value_t = 300
    )]
    pub delivery_timeout: u64,
}

/// `openmsi download-directory`.
#[derive(Debug, Args)]
pub struct DownloadDirectoryArgs {
    /// Folder to rebuild files into (created if missing). openmsi keeps its state in
    /// `.openmsi/` inside it: partial files, the completed-file log and rejected messages.
    #[arg(value_name = "OUTPUT_DIR", alias = "output_dir")]
    pub output_dir: PathBuf,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Consumer group id. Reuse one to resume where a previous run stopped; `create_new`
    /// makes a fresh group that reads the topic from the start. [default: group.id from the
    /// config file, else create_new]
    #[arg(
        long,
        alias = "consumer_group_id",
        alias = "group_id",
        value_name = "ID"
    )]
    pub group_id: Option<String>,

    /// This is the only process reading with --group-id: read every partition at once instead
    /// of waiting for the group's first rebalance (a stock Kafka delays it 3 s), resuming from
    /// the group's committed offsets. Never with a group other processes share. A fresh group
    /// (`create_new`) always starts this way.
    #[arg(long)]
    pub sole_reader: bool,

    /// Take only files addressed to this host (`--to-host` on the uploader) and files addressed
    /// to no host; compared without regard to case. [default: this machine's host name]
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,

    /// Before a verified file replaces anything, run CMD (split into words like a shell does,
    /// but never run by a shell) with the staged file's path as its last argument and
    /// OPENMSI_FILE, OPENMSI_RELATIVE_PATH, OPENMSI_SIZE, OPENMSI_SHA512, OPENMSI_TOPIC set.
    /// A non-zero exit or a timeout keeps the file in place and sets the new version aside.
    #[arg(long, value_name = "CMD")]
    pub validate: Option<String>,

    /// Validate only files whose relative path matches GLOB (repeatable; e.g. '*.json').
    /// [default: every file]
    #[arg(long = "validate-glob", value_name = "GLOB", requires = "validate")]
    pub validate_globs: Vec<String>,

    /// Seconds a --validate command may run.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub validate_timeout: f64,

    /// Keep the version a new one replaces, as NAME.backup (the last one only).
    #[arg(long)]
    pub backup: bool,

    /// Suffix of --backup copies.
    #[arg(
        long,
        value_name = "SUFFIX",
        default_value = ".backup",
        requires = "backup"
    )]
    pub backup_suffix: String,

    /// After each file is published, run CMD (like --validate, with the final path), on its own
    /// thread, one at a time, in order. A hook due when the process stopped runs after the
    /// restart.
    #[arg(long, value_name = "CMD")]
    pub on_file: Option<String>,

    /// Produce the standard output of each successful --on-file command, as it printed it, to
    /// TOPIC: one message per file, keyed like OpenMSIStream's processing results
    /// (`<subdir with / → _>_<filename>_chunk_processing_result`). After a crash a result is
    /// sent again with the same bytes.
    #[arg(long, value_name = "TOPIC", requires = "on_file")]
    pub result_topic: Option<String>,

    /// After a burst of files settles (no new file for --hook-delay seconds), run CMD once
    /// with the path of a NUL-separated list of the files' relative paths as its last argument
    /// (also in OPENMSI_FILE_LIST; OPENMSI_FILE_COUNT, OPENMSI_OUTPUT_DIR, OPENMSI_TOPIC set).
    #[arg(long, value_name = "CMD")]
    pub on_batch: Option<String>,

    /// Seconds without a new file before --on-batch runs (Knot Resolver waits 5 s too).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub hook_delay: f64,

    /// Seconds an --on-file or --on-batch command may run.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub hook_timeout: f64,

    /// When a hook fails, put the previous version of its files back (needs --backup).
    #[arg(long, requires = "backup")]
    pub restore_on_hook_failure: bool,

    /// Only rebuild files whose path relative to the upload root matches this regular
    /// expression (others are skipped and counted). [default: every file]
    #[arg(long, alias = "download_regex", value_name = "REGEX")]
    pub download_regex: Option<String>,

    /// Message formats to read: openmsi's (and OpenMSIStream's) chunks, Knot Resolver's file
    /// parts, or auto for both on one topic (a message with Knot's part headers is a Knot
    /// part). Messages of another format are rejected and kept aside.
    #[arg(long, value_enum, default_value = "openmsi")]
    pub format: crate::download::verify::Formats,

    /// Exit once every assigned partition has been read to its end and no message arrived for
    /// this many seconds (for scripts). [default: run until `quit`, Ctrl-C or SIGTERM]
    #[arg(long, alias = "exit_when_idle", value_name = "SECS")]
    pub exit_when_idle: Option<f64>,

    /// Threads that verify chunk hashes (`--n-threads` and OpenMSIStream's `--n_threads` are
    /// accepted as old names).
    #[arg(long, visible_alias = "n-threads", alias = "n_threads", value_name = "N",
          default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub verify_threads: u16,

    /// Keep openmsi's state (partial files, the completed log, rejected messages, the lock) in DIR instead of `.openmsi/` inside the folder, e.g.
    /// to keep the output folder free of it; on the same filesystem as the output folder (files are renamed into place from it). One state folder per output folder; outside the folder.
    #[arg(long, alias = "state_dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// At start, discard partial files (in `.openmsi/staging/`) not written to for this many
    /// days: their missing chunks are not coming. 0 keeps them forever.
    #[arg(
        long,
        alias = "discard_partials_after_days",
        value_name = "DAYS",
        default_value_t = 30
    )]
    pub discard_partials_after_days: u32,

    /// Report a file still incomplete once its partition has moved past its last chunk and no
    /// chunk of it came for this many seconds: its missing chunks are behind messages already
    /// read (a broker lost them after acknowledging them, or the uploader gave up). A warning
    /// naming the chunks, counted in `check`, the summary and the metrics.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub report_missing_after: f64,

    /// When stderr is not a terminal (a service, a log file): seconds between progress lines
    /// for each file still moving after that long (on a terminal, bars show instead).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub progress_seconds: f64,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// `openmsi relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// The source: its config (brokers, security, `[kafkacrypto]` to decrypt) and topic.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Consumer group on the source. Reuse it to resume where a previous run stopped.
    /// [default: group.id from the config file, else openmsi-relay-<TOPIC>; `create_new`
    /// reads the topic from the start]
    #[arg(long, alias = "group_id", value_name = "ID")]
    pub group_id: Option<String>,

    /// This is the only process reading with --group-id: read every partition at once instead
    /// of waiting for the group's first rebalance.
    #[arg(long)]
    pub sole_reader: bool,

    /// Produce every selected file to this topic.
    #[arg(
        long,
        value_name = "TOPIC",
        required_unless_present = "routes",
        conflicts_with = "routes"
    )]
    pub to_topic: Option<String>,

    /// REGEX=TOPIC (repeatable): produce each file to every TOPIC whose REGEX matches its
    /// relative path (`/`-separated); a file no route matches is skipped and counted.
    #[arg(long = "route", value_name = "REGEX=TOPIC")]
    pub routes: Vec<String>,

    /// The destination cluster's config (its brokers, its security, `[kafkacrypto]` to
    /// encrypt for it). [default: the source's --config: the same cluster]
    #[arg(long, value_name = "FILE|NAME")]
    pub to_config: Option<String>,

    /// Relay only files whose relative path matches this regular expression (others are
    /// skipped and counted). [default: every file]
    #[arg(long = "match", value_name = "REGEX")]
    pub match_regex: Option<String>,

    /// Relay only files addressed to this host (`--to-host` on the uploader) or to no host.
    /// [default: every file, whatever it is addressed to]
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,

    /// Address what is relayed to this host (repeatable): the `hostname` headers read are
    /// replaced. [default: relayed with the addressing it came with]
    #[arg(long = "to-host", value_name = "NAME")]
    pub to_hosts: Vec<String>,

    /// Message formats to read (see download-directory).
    #[arg(long, value_enum, default_value = "openmsi")]
    pub format: crate::download::verify::Formats,

    /// Exit once every assigned partition has been read to its end, everything relayed was
    /// acknowledged, and no message arrived for this many seconds (for scripts).
    #[arg(long, alias = "exit_when_idle", value_name = "SECS")]
    pub exit_when_idle: Option<f64>,

    /// Threads that verify chunk hashes.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub verify_threads: u16,

    /// Keep the relay's state (its lock, rejected messages, messages waiting for their key) in
    /// DIR. [default: the user's cache folder, openmsi/relay/<TOPIC>]
    #[arg(long, alias = "state_dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// s3-transfer's default part size, MiB (as the AWS CLI's): a streamed file holds three parts in
/// memory at most.
pub const DEFAULT_PART_SIZE_MIB: u32 = (crate::s3::upload::DEFAULT_PART_SIZE >> 20) as u32;

/// `openmsi s3-transfer`.
#[derive(Debug, Args)]
pub struct S3TransferArgs {
    /// The bucket (it must exist).
    #[arg(value_name = "BUCKET", alias = "bucket_name")]
    pub bucket: String,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Consumer group id. Reuse one to resume where a previous run stopped; `create_new`
    /// reads the topic from the start. [default: group.id from the config file, else
    /// create_new]
    #[arg(
        long,
        alias = "consumer_group_id",
        alias = "group_id",
        value_name = "ID"
    )]
    pub group_id: Option<String>,

    /// This is the only process reading with --group-id: read every partition at once
    /// instead of waiting for the group's first rebalance.
    #[arg(long)]
    pub sole_reader: bool,

    /// Object keys start with PREFIX/ instead of `<topic>/` ("" for none).
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,

    /// Take only files addressed to this host (`--to-host` on the uploader) and files
    /// addressed to no host. [default: this machine's host name]
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,

    /// Only transfer files whose relative path matches this regular expression (others are
    /// skipped and counted). [default: every file]
    #[arg(long, alias = "download_regex", value_name = "REGEX")]
    pub download_regex: Option<String>,

    /// Message formats to read (see download-directory).
    #[arg(long, value_enum, default_value = "openmsi")]
    pub format: crate::download::verify::Formats,

    /// Exit once every assigned partition has been read to its end, every file is in the
    /// bucket, and no message arrived for this many seconds (for scripts).
    #[arg(long, alias = "exit_when_idle", value_name = "SECS")]
    pub exit_when_idle: Option<f64>,

    /// Threads that verify chunk hashes.
    #[arg(long, visible_alias = "n-threads", alias = "n_threads", value_name = "N",
          default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub verify_threads: u16,

    /// MiB per part of a multipart upload (files larger than one part go up in parts; at
    /// least 5, S3's minimum; larger where a file would need more than 10,000 parts).
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_PART_SIZE_MIB,
          value_parser = clap::value_parser!(u32).range(5..=5120))]
    pub part_size_mib: u32,

    /// Keep the state (files being rebuilt, files waiting for their object, uploads in
    /// flight, the lock) in DIR. [default: the user's cache folder,
    /// openmsi/s3-transfer/<BUCKET>/<TOPIC>]
    #[arg(long, alias = "state_dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// At start, discard partial files not written to for this many days. 0 keeps them.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub discard_partials_after_days: u32,

    /// After each file's object is confirmed in the bucket, run CMD on the rebuilt local copy
    /// (OPENMSI_FILE, as download-directory's --on-file; also OPENMSI_S3_BUCKET and
    /// OPENMSI_S3_KEY), on its own thread, one at a time, in order; the copy is removed once
    /// CMD has run. A command due when the process stopped runs after the restart.
    #[arg(long, value_name = "CMD")]
    pub on_file: Option<String>,

    /// Produce the standard output of each successful --on-file command to TOPIC, keyed like
    /// OpenMSIStream's processing results (see download-directory).
    #[arg(long, value_name = "TOPIC", requires = "on_file")]
    pub result_topic: Option<String>,

    /// Seconds an --on-file command may run.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub hook_timeout: f64,

    /// Report a file still incomplete once its partition moved past its last chunk and no
    /// chunk of it came for this many seconds (see download-directory).
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub report_missing_after: f64,

    /// When stderr is not a terminal: seconds between progress lines for a file still
    /// arriving.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub progress_seconds: f64,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// `openmsi upload-directory`.
#[derive(Debug, Args)]
pub struct UploadDirectoryArgs {
    /// The folder to watch (recursively). openmsi keeps its registry of uploaded files in
    /// `.openmsi/` inside it.
    #[arg(value_name = "DIR", alias = "upload_dir")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub upload: UploadArgs,

    /// Keep openmsi's state (the registry of uploaded files, the lock, the log) in DIR instead of `.openmsi/` inside the folder, e.g.
    /// for a folder this user may only read (a read-only share). One state folder per watched folder; outside the folder.
    #[arg(long, alias = "state_dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Also upload the files already in the folder at the first start. [default: only files
    /// that appear or change later, as OpenMSIStream]
    #[arg(long, alias = "upload_existing")]
    pub upload_existing: bool,

    /// Only upload files whose path relative to DIR (`/`-separated, e.g. `run1/x.tif`) matches
    /// this regular expression (searched anywhere; anchor with ^ and $). Hidden files and
    /// folders are always skipped. [default: every file]
    #[arg(long, alias = "upload_regex", value_name = "REGEX")]
    pub upload_regex: Option<String>,

    /// A file is uploaded once its size and modification time stayed unchanged this long.
    #[arg(
        long,
        alias = "settle_seconds",
        value_name = "SECS",
        default_value_t = 3.0
    )]
    pub settle_seconds: f64,

    /// Seconds between full scans of the folder (the source of truth; events only make new
    /// files show up sooner). [default: 30, or 2 with --poll]
    #[arg(long, alias = "rescan_seconds", value_name = "SECS")]
    pub rescan_seconds: Option<f64>,

    /// Do not use filesystem events, only periodic scans: for network shares (SMB, NFS) where
    /// events are unreliable.
    #[arg(long)]
    pub poll: bool,

    /// Files read and sent at the same time (`--n-threads` and OpenMSIStream's `--n_threads`
    /// are accepted as old names).
    #[arg(long, visible_alias = "n-threads", alias = "n_threads", value_name = "N",
          default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub files_at_once: u16,

    /// Seconds to wait for the broker to acknowledge all chunks of one file before it counts as
    /// failed (it is retried later).
    #[arg(
        long,
        alias = "delivery_timeout",
        value_name = "SECS",
        default_value_t = 300
    )]
    pub delivery_timeout: u64,

    /// Seconds between "still running" status lines in the log; -1 turns them off.
    #[arg(
        long,
        alias = "update_seconds",
        value_name = "SECS",
        default_value_t = 300,
        allow_negative_numbers = true
    )]
    pub update_seconds: i64,

    /// When stderr is not a terminal (a service, a log file): seconds between progress lines
    /// for each file still moving after that long (on a terminal, bars show instead).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub progress_seconds: f64,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Prometheus metrics of a long-running command.
#[derive(Debug, Args, Clone, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464; 0.0.0.0:9464
    /// for a scraper on another machine). [default: `address` in the config file's [metrics]
    /// section, else off]
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<crate::metrics::MetricsAddr>,
}

/// Optional heartbeat and log topics, in OpenMSIStream's formats.
#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// Send a heartbeat (messages and bytes produced since the previous one) to this topic
    /// every --heartbeat-interval seconds.
    #[arg(long, alias = "heartbeat_topic_name", value_name = "TOPIC")]
    pub heartbeat_topic: Option<String>,

    /// Seconds between heartbeats (and log-topic sends).
    #[arg(
        long,
        alias = "heartbeat_interval_secs",
        alias = "heartbeat_interval",
        value_name = "SECS",
        default_value_t = 900.0
    )]
    pub heartbeat_interval: f64,

    /// Send the log lines (info and above) to this topic every --heartbeat-interval seconds.
    #[arg(long, alias = "log_topic_name", value_name = "TOPIC")]
    pub log_topic: Option<String>,

    /// Names this program in heartbeat and log keys (`<ID>_heartbeat`, `<ID>_log`).
    /// [default: openmsi_<hostname>]
    #[arg(
        long,
        alias = "program_id",
        alias = "heartbeat_program_id",
        alias = "log_program_id",
        value_name = "ID"
    )]
    pub program_id: Option<String>,
}
