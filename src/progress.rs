//! Progress for long work: a bar when stderr is a terminal, a log line every few seconds
//! otherwise (services, CI, pipes), so progress is visible either way. [`ByteProgress`] is one
//! task (upload-file); [`Activity`] the files a long-running command is moving right now, shown
//! by [`spawn_display`]. Sizes and rates are in decimal units (MB, MB/s) everywhere, bars and
//! summaries alike. [`ActiveTime`] measures how long data was actually moving, for rates that
//! do not average over idle hours.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tracing::info;

/// How often the non-terminal fallback logs (upload-file; the long-running commands take
/// `--progress-seconds`).
const LOG_EVERY: Duration = Duration::from_secs(5);

/// One bar: decimal units, like the summaries (`MB`, `MB/s`).
const BAR_TEMPLATE: &str =
    "{msg} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta}";

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
            let style = ProgressStyle::with_template(BAR_TEMPLATE)
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

/// How far one task of an [`Activity`] is: bytes done and bytes in all (the total may be an
/// estimate that is refined as the work goes on).
pub trait TaskProgress: Send + Sync {
    /// Bytes done so far.
    fn done(&self) -> u64;
    /// Bytes in all.
    fn total(&self) -> u64;
}

/// A task's progress as two counters, for work that counts as it goes.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes done.
    pub done: AtomicU64,
    /// Bytes in all.
    pub total: AtomicU64,
}

impl TaskProgress for Counters {
    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
    fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// One task being worked on.
struct Task {
    label: String,
    progress: Arc<dyn TaskProgress>,
    started: Instant,
}

/// The tasks (files) a long-running command is moving right now. The data path registers a
/// task with [`Activity::begin`] and keeps the [`Ticket`] while it works on it; the display
/// thread only reads. Registering takes one lock per file, never per chunk.
#[derive(Default)]
pub struct Activity {
    tasks: Mutex<BTreeMap<u64, Task>>,
    next_id: AtomicU64,
}

impl Activity {
    /// Registers a task until the returned ticket is dropped.
    pub fn begin(self: &Arc<Self>, label: &str, progress: Arc<dyn TaskProgress>) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let task = Task {
            label: label.to_string(),
            progress,
            started: Instant::now(),
        };
        self.lock().insert(id, task);
        Ticket {
            activity: Arc::clone(self),
            id,
        }
    }

    /// The tasks running for at least `min_age`: id, label, done, total, age.
    fn older_than(&self, min_age: Duration) -> Vec<(u64, String, u64, u64, Duration)> {
        self.lock()
            .iter()
            .filter(|(_, t)| t.started.elapsed() >= min_age)
            .map(|(id, t)| {
                let total = t.progress.total();
                let done = t.progress.done().min(total);
                (*id, t.label.clone(), done, total, t.started.elapsed())
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Task>> {
        // Statistics only: a panic elsewhere must not stop the display.
        crate::sync::lock(&self.tasks)
    }
}

/// A task's registration: dropping it ends the task.
pub struct Ticket {
    activity: Arc<Activity>,
    id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.activity.lock().remove(&self.id);
    }
}

/// A task shows on a terminal once it has run this long (most files are done sooner, and a bar
/// per small file would only flicker).
const SHOW_AFTER: Duration = Duration::from_secs(1);
/// Bars shown at most; the rest are summed up in one line.
const MAX_BARS: usize = 4;

/// Shows the tasks of `activity` until the returned handle is stopped: bars on a terminal
/// (stderr), else a log line every `log_every` for each file that has taken longer than that.
pub fn spawn_display(activity: Arc<Activity>, log_every: Duration) -> DisplayHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let terminal = std::io::stderr().is_terminal();
    let thread = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            if terminal {
                draw_bars(&activity, &stopped)
            } else {
                log_lines(&activity, &stopped, log_every)
            }
        })
        .ok();
    DisplayHandle { stop, thread }
}

/// Stops the display thread when dropped.
pub struct DisplayHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DisplayHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn draw_bars(activity: &Activity, stop: &AtomicBool) {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(BAR_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut bars: BTreeMap<u64, ProgressBar> = BTreeMap::new();
    // The line counting the files beyond MAX_BARS, only while there are some.
    let mut more: Option<ProgressBar> = None;
    while !stop.load(Ordering::Relaxed) {
        let tasks = activity.older_than(SHOW_AFTER);
        let shown: Vec<_> = tasks.iter().take(MAX_BARS).collect();
        bars.retain(|id, bar| {
            let alive = shown.iter().any(|t| t.0 == *id);
            if !alive {
                bar.finish_and_clear();
                multi.remove(bar);
            }
            alive
        });
        for (id, label, done, total, _) in shown {
            let bar = bars.entry(*id).or_insert_with(|| {
                let bar = ProgressBar::new(*total);
                let bar = match &more {
                    Some(more) => multi.insert_before(more, bar),
                    None => multi.add(bar),
                };
                bar.set_style(style.clone());
                bar.set_message(label.clone());
                bar
            });
            bar.set_length(*total);
            bar.set_position(*done);
        }
        match (tasks.len().checked_sub(MAX_BARS).filter(|n| *n > 0), &more) {
            (Some(n), Some(line)) => line.set_message(format!("… and {n} more files in flight")),
            (Some(n), None) => {
                let line = multi.add(ProgressBar::new_spinner());
                line.set_style(
                    ProgressStyle::with_template("{msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                line.set_message(format!("… and {n} more files in flight"));
                more = Some(line);
            }
            (None, Some(line)) => {
                line.finish_and_clear();
                multi.remove(line);
                more = None;
            }
            (None, None) => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for bar in bars.values().chain(more.iter()) {
        bar.finish_and_clear();
    }
}

fn log_lines(activity: &Activity, stop: &AtomicBool, every: Duration) {
    let mut last = Instant::now();
    let nap = every.min(Duration::from_millis(200));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(nap);
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        for (_, label, done, total, age) in activity.older_than(every) {
            info!(
                path = %label,
                percent = format_args!("{:.1}", percent(done, total)),
                done_mb = format_args!("{:.1}", done as f64 / 1e6),
                total_mb = format_args!("{:.1}", total as f64 / 1e6),
                mb_per_s = format_args!("{:.1}", mb_per_s(done, age)),
                "in progress"
            );
        }
    }
}

fn percent(done: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    }
}

/// How long data was moving: the time between events (a chunk written, a delivery
/// acknowledged) that follow each other within [`ActiveTime::GAP`]; a longer pause is idle time
/// and does not count. A rate over this time is the rate while transferring, not an average
/// over idle hours.
#[derive(Debug)]
pub struct ActiveTime {
    origin: Instant,
    /// Nanoseconds since `origin` of the last event; `u64::MAX` before the first.
    last_ns: AtomicU64,
    active_ns: AtomicU64,
}

impl Default for ActiveTime {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ns: AtomicU64::new(u64::MAX),
            active_ns: AtomicU64::new(0),
        }
    }
}

impl ActiveTime {
    /// Pauses longer than this are idle.
    pub const GAP: Duration = Duration::from_secs(2);

    /// Records an event now. Called from one thread at a time per instance (the delivery
    /// callback, the download writer); relaxed atomics suffice for a statistic.
    pub fn mark(&self) {
        self.mark_at(Instant::now());
    }

    fn mark_at(&self, now: Instant) {
        let now_ns = now.saturating_duration_since(self.origin).as_nanos() as u64;
        let last = self.last_ns.swap(now_ns, Ordering::Relaxed);
        if last != u64::MAX {
            let gap = now_ns.saturating_sub(last);
            if gap <= Self::GAP.as_nanos() as u64 {
                self.active_ns.fetch_add(gap, Ordering::Relaxed);
            }
        }
    }

    /// Time spent moving data so far.
    pub fn active(&self) -> Duration {
        Duration::from_nanos(self.active_ns.load(Ordering::Relaxed))
    }
}

/// `bytes` over `active` in MB/s, or None when the transfer was too short to time (a file of
/// one chunk): a summary then shows no rate rather than a meaningless `0.0 MB/s`.
pub fn timed_rate(bytes: u64, active: Duration) -> Option<f64> {
    // Below a megabyte the time is mostly start-up and round trips, not transfer.
    (active >= Duration::from_millis(10) && bytes >= 1_000_000).then(|| mb_per_s(bytes, active))
}

/// [`timed_rate`] as a summary's note: `" (12.3 MB/s)"`, or nothing.
pub fn rate_note(bytes: u64, active: Duration) -> String {
    timed_rate(bytes, active).map_or_else(String::new, |rate| format!(" ({rate:.1} MB/s)"))
}

/// A size in decimal units, precise enough to read: `512 bytes`, `12.3 kB`, `4.5 MB`,
/// `1.07 GB` (never `0.0 MB` for a small file).
pub fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => count(bytes, "byte"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

/// `n` and the noun, plural when `n` is not 1: `1 chunk`, `2 chunks`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_time_leaves_out_idle_pauses() {
        let t = ActiveTime::default();
        let start = t.origin;
        t.mark_at(start + Duration::from_secs(1));
        t.mark_at(start + Duration::from_millis(1500));
        // An hour idle, then another burst of a second.
        t.mark_at(start + Duration::from_secs(3600));
        t.mark_at(start + Duration::from_secs(3601));
        assert_eq!(t.active(), Duration::from_millis(1500));
    }

    #[test]
    fn summaries_count_and_rate_read_naturally() {
        assert_eq!(count(1, "chunk"), "1 chunk");
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(3, "file"), "3 files");
        assert_eq!(size(1), "1 byte");
        assert_eq!(size(1000), "1.0 kB");
        assert_eq!(size(4_500_000), "4.5 MB");
        assert_eq!(size(1_073_741_824), "1.07 GB");
        assert_eq!(rate_note(10, Duration::ZERO), "");
        assert_eq!(rate_note(4, Duration::from_millis(30)), "");
        assert_eq!(rate_note(2_000_000, Duration::from_secs(1)), " (2.0 MB/s)");
    }

    #[test]
    fn tasks_leave_the_activity_when_their_ticket_drops() {
        let activity = Arc::new(Activity::default());
        let counters = Arc::new(Counters::default());
        counters.total.store(100, Ordering::Relaxed);
        counters.done.store(40, Ordering::Relaxed);
        let ticket = activity.begin("a.bin", counters);
        let tasks = activity.older_than(Duration::ZERO);
        assert_eq!(tasks.len(), 1);
        assert_eq!((tasks[0].2, tasks[0].3), (40, 100));
        drop(ticket);
        assert!(activity.older_than(Duration::ZERO).is_empty());
    }
}
