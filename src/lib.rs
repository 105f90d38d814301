//! openmsi: stream data files through Apache Kafka, wire-compatible with OpenMSIStream.
//!
//! Module map (the data flow of each command, with the module that owns each step, is in
//! `docs/ARCHITECTURE.md`; the contracts in `docs/WIRE_FORMAT.md` and `docs/CONFIG.md`):
//! - [`app`]: runs a parsed command line: settings, console, summary, exit code.
//! - [`cli`]: clap arguments, one struct per subcommand, shared groups flattened.
//! - [`config`]: INI config files (OpenMSIStream-compatible) → resolved Kafka client settings.
//! - [`chunk`]: the wire format of one file chunk (key string, msgpack value) and hashing. Pure.
//! - [`kafka`]: the rdkafka layer: clients and their defaults, logging contexts, topic checks,
//!   the chunk producer (delivery tracking, in-flight window), the consumer, heartbeats.
//! - [`upload`]: the one send path (`send`, with its envelope seam), `upload-file`, and
//!   `upload-directory` (`upload::directory`).
//! - [`download`]: `download-directory`: poll → verify (opener seam) → sink (staging,
//!   publishing) → commit after durable.
//! - [`state`]: the `.openmsi/` folder: layout, lock, atomic writes, latest-per-key JSONL logs.
//! - [`console`]: `check`/`quit` on stdin and SIGINT/SIGTERM, fanned out as one cancellation token.
//! - [`progress`]: progress bar on a terminal, periodic log lines otherwise.
//! - [`host`]: this machine's name.
//! - [`manage`]: `manage-service`: the long-running commands as systemd or Windows services.
//! - [`logging`]: the `tracing` subscriber.

// A Windows PathBuf is larger than a Unix one, which takes `ConfigError` (paths, sections,
// keys: built once, on a cold path) just past clippy's size limit for error variants there.
#![cfg_attr(windows, allow(clippy::result_large_err))]

pub mod admin;
pub mod app;
pub mod chunk;
pub mod cli;
pub mod config;
pub mod console;
pub mod contract;
pub mod crypto;
pub mod download;
pub mod host;
pub mod kafka;
pub mod logging;
pub mod manage;
pub mod progress;
pub mod provision_node;
pub mod service;
pub mod state;
pub mod sync;
pub mod targeting;
pub mod upload;
