//! Prometheus metrics of the long-running commands (`--metrics-addr HOST:PORT`, or `address`
//! in the config file's `[metrics]` section): `GET /metrics` in the text exposition format.
//!
//! - [`exposition`]: the text format, written by hand (the values live in the commands' own
//!   atomic counters; a scrape only reads them).
//! - [`histogram`]: per-file latencies in fixed buckets (a few atomic adds per file).
//! - [`kafka`]: broker connection state and consumer lag, from librdkafka's statistics
//!   (`statistics.interval.ms`, on only when metrics are).
//! - [`server`]: a small blocking HTTP responder on its own thread, bound before the command
//!   starts anything else so a bad address fails at once.
//!
//! Each command adds a [`Source`] writing its own families; every scrape also carries
//! `openmsi_build_info`, the process start time and the Kafka families.

pub mod exposition;
pub mod histogram;
pub mod kafka;
pub mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub use exposition::{Exposition, Kind};
pub use histogram::Histogram;
pub use server::{MetricsAddr, MetricsError, MetricsServer};

/// The config file section that may set the address (`address = HOST:PORT`), so a service
/// installed with a config file picks it up.
pub const CONFIG_SECTION: &str = "metrics";

/// Why metrics could not start: a bad address in the config file, or the socket.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file could not be read for `[metrics]` (an unset `$VAR`, ...).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `address` in `[metrics]` is not a HOST:PORT.
    #[error("config file {} line {line}, key 'address' in [metrics]: {problem}", path.display())]
    Address {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line of the key.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// Binding failed.
    #[error(transparent)]
    Bind(#[from] MetricsError),
}

/// Starts serving metrics when `--metrics-addr` (`flag`) or the config file's `[metrics]`
/// section asks for it; nothing otherwise. Called before the command starts anything else.
pub fn start(
    flag: Option<&MetricsAddr>,
    config: &crate::config::LoadedConfig,
) -> Result<(), StartError> {
    let addr =
        match flag {
            Some(addr) => Some(addr.clone()),
            None => match config.checked_section(CONFIG_SECTION)? {
                Some(section) => match section.try_get("address")? {
                    Some(text) => Some(text.parse::<MetricsAddr>().map_err(|problem| {
                        StartError::Address {
                            path: config.path().to_path_buf(),
                            line: section.line_of("address").unwrap_or(0),
                            problem,
                        }
                    })?),
                    None => None,
                },
                None => None,
            },
        };
    if let Some(addr) = addr {
        MetricsServer::bind(&addr)?.serve();
    }
    Ok(())
}

/// Writes some families into a scrape.
pub type Source = Box<dyn Fn(&mut Exposition) + Send + Sync>;

/// The process's metrics.
pub struct Registry {
    sources: Mutex<Vec<Source>>,
    started: SystemTime,
    enabled: AtomicBool,
}

/// The process-wide registry (librdkafka's statistics callback has no other way to reach it).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        sources: Mutex::new(Vec::new()),
        started: SystemTime::now(),
        enabled: AtomicBool::new(false),
    })
}

impl Registry {
    /// Adds a command's families to every scrape.
    pub fn add(&self, source: Source) {
        crate::sync::lock(&self.sources).push(source);
    }

    /// Whether a metrics endpoint is serving (Kafka clients then report statistics).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// One scrape.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        out.family(
            "openmsi_build_info",
            "The running openmsi's version (the value is always 1).",
            Kind::Gauge,
        );
        out.sample(
            "openmsi_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        out.gauge(
            "openmsi_process_start_time_seconds",
            "When this process started, in seconds since the Unix epoch.",
            (started * 1000.0).round() / 1000.0,
        );
        kafka::write(&mut out);
        for source in crate::sync::lock(&self.sources).iter() {
            source(&mut out);
        }
        out.finish()
    }
}

/// `openmsi_failures_total{kind}`: every kind of failure of a command in one family, so one
/// query covers drop boxes and downloaders alike (each command also has a family per kind).
pub fn write_failures(out: &mut Exposition, kinds: &[(&str, u64)]) {
    out.family(
        "openmsi_failures_total",
        "Everything that failed, by kind (upload, verification, rejected, refused, unplaced, hook).",
        Kind::Counter,
    );
    for (kind, n) in kinds {
        out.sample("openmsi_failures_total", &[("kind", kind)], *n as f64);
    }
}
