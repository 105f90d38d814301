//! Progress for long work: a bar when stderr is a terminal, a log line every few seconds
//! otherwise (services, CI, pipes), so progress is visible either way.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

/// How often the non-terminal fallback logs.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Byte progress of one task.
pub struct ByteProgress {
    label: String,
    total: u64,
    started: Instant,
    bar: Option<ProgressBar>,
    last_log: Instant,
}

impl ByteProgress {
    /// Starts tracking `total` bytes of work described by `label`.
    pub fn new(label: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.to_string());
            bar
        });
        Self {
            label: label.to_string(),
            total,
            started: Instant::now(),
            bar,
            last_log: Instant::now(),
        }
    }

    /// Reports that `done` bytes are complete.
    pub fn set(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let pct = if self.total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / self.total as f64
            };
            info!(
                task = %self.label,
                percent = format_args!("{pct:.1}"),
                done_mb = format_args!("{:.1}", done as f64 / 1e6),
                total_mb = format_args!("{:.1}", self.total as f64 / 1e6),
                mb_per_s = format_args!("{:.1}", mb_per_s(done, self.started.elapsed())),
                "progress"
            );
        }
    }

    /// Removes the bar (the caller prints its own summary).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Megabytes (10^6) per second, 0 for a zero duration.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / 1e6 / secs
    }
}
