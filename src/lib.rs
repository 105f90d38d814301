//! openmsi: stream data files through Apache Kafka, wire-compatible with OpenMSIStream.
//!
//! Module map, from the command line down (the data flow of each command, with the module that
//! owns each step, is in `docs/ARCHITECTURE.md`; the contracts in `docs/WIRE_FORMAT.md` and
//! `docs/CONFIG.md`). No module imports one above it.
//! - [`app`]: runs a parsed command line: settings, encryption wiring, console, summary, exit
//!   code (anyhow lives here and in the command modules only).
//! - [`status`]: `openmsi status`: groups' lag, programs' heartbeats and this machine's
//!   services in one report (uses `admin` and `manage`).
//! - [`manage`]: `manage-service`: the long-running commands as systemd or Windows services.
//! - [`admin`]: `openmsi topic` and `openmsi user` through the Kafka admin API.
//! - [`provision_node`]: `openmsi provision-node`: the questions, then `crypto::provision`.
//! - [`cli`]: clap arguments, one struct per subcommand, shared groups flattened.
//! - [`relay`]: `openmsi relay`: the download pipeline with a sink that produces to other
//!   topics (commit after the destination acknowledged).
//! - [`download`]: `download-directory`: poll → verify (opener seam) → verdicts → sink
//!   (staging, publishing) → commit after durable.
//! - [`upload`]: the one send path (`send`, with its envelope seam), `upload-file`, and
//!   `upload-directory` (`upload::directory`).
//! - [`crypto`]: end-to-end encryption compatible with KafkaCrypto.
//! - [`targeting`]: host targeting (`--to-host` headers, `--host` selection).
//! - [`kafka`]: the rdkafka layer: clients and their defaults, logging contexts, connection
//!   and topic checks, the chunk producer and consumer, the group member's side, heartbeats.
//! - [`metrics`]: Prometheus metrics (`--metrics-addr`): the text format, latency histograms,
//!   librdkafka's statistics (lag, broker state), the `/metrics` responder.
//! - [`contract`]: the contracts the features plug into (envelope, opener, sink, file
//!   version, message position), defined by none of them.
//! - [`config`]: INI config files (OpenMSIStream-compatible) → resolved Kafka client settings.
//! - [`state`]: the `.openmsi/` folder and every durable write: layout, locks, atomic writes,
//!   JSONL logs.
//! - [`chunk`]: the wire format of one file chunk (key string, msgpack value) and hashing
//!   (one stream, and chunk hashes four at a time: `chunk::batch_hash`). Pure.
//! - [`progress`]: bars and log lines for long work, active time, summary wording.
//! - [`sync`]: the lock policy (poisoned locks are recovered) and the shared work queue.
//! - [`console`]: `check`/`quit` on stdin and SIGINT/SIGTERM, fanned out as one cancellation
//!   token.
//! - [`service`]: systemd's notify protocol and the Windows service's status file.
//! - [`logging`]: the `tracing` subscriber.
//! - [`host`]: this machine's name.

// A Windows PathBuf is larger than a Unix one, which takes `ConfigError` (paths, sections,
// keys: built once, on a cold path) just past clippy's size limit for error variants there.
#![cfg_attr(windows, allow(clippy::result_large_err))]

pub mod admin;
pub mod app;
pub mod chunk;
pub mod cli;
pub mod command_args;
pub mod config;
pub mod console;
pub mod contract;
pub mod crypto;
pub mod download;
pub mod host;
pub mod kafka;
pub mod logging;
pub mod manage;
pub mod metrics;
pub mod progress;
pub mod provision_node;
pub mod relay;
pub mod s3;
pub mod service;
pub mod state;
pub mod status;
pub mod sync;
pub mod targeting;
pub mod upload;
