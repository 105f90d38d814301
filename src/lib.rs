//! openmsi: stream data files through Apache Kafka, wire-compatible with OpenMSIStream.
//!
//! Module map:
//! - [`app`]: runs a parsed command line: settings, console, summary, exit code.
//! - [`cli`]: clap arguments, one struct per subcommand, shared groups flattened.
//! - [`config`]: INI config files (OpenMSIStream-compatible) → resolved Kafka client settings.
//! - [`chunk`]: the wire format of one file chunk (key string, msgpack value) and hashing. Pure.
//! - [`kafka`]: rdkafka client construction, logging contexts, topic checks, producer, consumer.
//! - [`upload`]: `upload-file`: read a file once for hashes, then stream its chunks to Kafka.
//! - [`download`]: `download-directory`: verify chunks, stage them durably, rename verified files.
//! - [`console`]: `check`/`quit` on stdin and SIGINT/SIGTERM, fanned out as one cancellation token.
//! - [`progress`]: progress bar on a terminal, periodic log lines otherwise.
//! - [`lock`]: one process per folder (an advisory lock on `FOLDER/.openmsi/lock`).
//! - [`logging`]: the `tracing` subscriber.

pub mod app;
pub mod chunk;
pub mod cli;
pub mod config;
pub mod console;
pub mod download;
pub mod host;
pub mod kafka;
pub mod logging;
pub mod progress;
pub mod state;
pub mod upload;
