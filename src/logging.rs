//! The `tracing` subscriber: one readable line per event on stderr.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `--log-level` wins over `RUST_LOG`; the default is `info`.
/// librdkafka's own messages arrive under the `librdkafka` target (see `kafka::context`).
pub fn init(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level)
            .map_err(|e| anyhow::anyhow!("invalid --log-level `{level}`: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("could not initialise logging: {e}"))?;
    Ok(())
}
