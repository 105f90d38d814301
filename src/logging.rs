//! The `tracing` subscriber: one readable line per event on stderr, and for long-running
//! commands that own a state folder, the same lines in a log file there (services often have
//! no one reading stderr).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

/// At most this many lines wait for the log topic; older ones are dropped first, so a broker
/// that is down for days costs bounded memory.
const CAPTURE_MAX: usize = 1000;

/// Whether lines are kept for the log topic (only when one is configured).
static CAPTURE: AtomicBool = AtomicBool::new(false);
/// Lines waiting for the log topic.
static CAPTURED: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// Starts (or stops) keeping info-and-above lines for the log topic.
pub fn capture_for_log_topic(on: bool) {
    CAPTURE.store(on, Ordering::Release);
}

/// The lines kept since the previous call.
pub fn drain_captured() -> Vec<String> {
    let mut lines = crate::sync::lock(&CAPTURED);
    lines.drain(..).collect()
}

/// Keeps a plain-text copy of each info-or-above event while capturing is on.
struct CaptureLayer;

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !CAPTURE.load(Ordering::Acquire) || *event.metadata().level() > Level::INFO {
            return;
        }
        let mut line = LineVisitor(format!("{} ", event.metadata().level()));
        event.record(&mut line);
        let mut lines = crate::sync::lock(&CAPTURED);
        if lines.len() >= CAPTURE_MAX {
            lines.pop_front();
        }
        lines.push_back(line.0);
    }
}

/// Formats an event as `LEVEL message key=value ...`.
struct LineVisitor(String);

impl Visit for LineVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// A log file larger than this at start is moved to `NAME.1` (replacing an older one), so a
/// drop box left running for months keeps at most two files of bounded size.
const ROTATE_AT_BYTES: u64 = 16 << 20;

/// True when stderr goes to systemd's journal (a service's stderr).
pub fn to_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// The syslog priority prefix the journal reads for `level`.
pub fn syslog_prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// A line format that starts with the event's syslog priority, for the journal.
struct SyslogPriority<F>(F);

impl<S, N, F> fmt::FormatEvent<S, N> for SyslogPriority<F>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> fmt::FormatFields<'a> + 'static,
    F: fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &fmt::FmtContext<'_, S, N>,
        mut writer: fmt::format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(syslog_prefix(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `--log-level` is not a level or a tracing directive.
    #[error("invalid --log-level `{level}`: {reason}")]
    Level { level: String, reason: String },
    /// A subscriber was installed already.
    #[error("could not initialise logging: {0}")]
    Init(String),
}

/// Installs the global subscriber. `--log-level` wins over `RUST_LOG`; the default is `info`.
/// librdkafka's own messages arrive under the `librdkafka` target (see `kafka::context`).
/// With `log_file`, lines also go there (without colours); a file that cannot be opened is
/// reported on stderr and logging continues there alone.
pub fn init(level: Option<&str>, log_file: Option<&Path>) -> Result<(), LoggingError> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| LoggingError::Level {
            level: level.to_string(),
            reason: e.to_string(),
        })?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let file = log_file.and_then(|path| match open_log_file(path) {
        Ok(file) => Some(file),
        Err(e) => {
            eprintln!("warning: cannot write the log file {}: {e}", path.display());
            None
        }
    });
    // Colours only for a person at a terminal: a service manager's journal, a file or a pipe
    // gets plain lines.
    // Under a systemd service stderr is the journal (it sets JOURNAL_STREAM), which stamps
    // every line itself: a second timestamp would only be noise.
    let to_journal = to_journal();
    let stderr_layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // The journal also reads a line's priority from a `<N>` prefix (syslog's levels), so
    // `journalctl -p warning` and `manage-service status` find warnings and errors.
    let stderr_layer = if to_journal {
        stderr_layer
            .without_time()
            .event_format(SyslogPriority(
                fmt::format().without_time().with_target(false),
            ))
            .boxed()
    } else {
        stderr_layer.boxed()
    };
    let file_layer = file.map(|file| {
        fmt::layer()
            .with_writer(Mutex::new(file))
            .with_ansi(false)
            .with_target(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr_layer)
        .with(file_layer)
        .with(CaptureLayer)
        .try_init()
        .map_err(|e| LoggingError::Init(e.to_string()))?;
    Ok(())
}

fn open_log_file(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() > ROTATE_AT_BYTES) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, old)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}
