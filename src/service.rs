//! Talking to a service manager with systemd's notify protocol (`Type=notify`): `READY=1` once a
//! long-running command is connected and watching, `WATCHDOG=1` keep-alives only while its main
//! loop is alive (so a hung process is restarted), `STATUS=` with the command's own status line,
//! and `STOPPING=1` when a stop was requested. Everything is a no-op when the process was not
//! started with `NOTIFY_SOCKET` (and on Windows, whose service control lives elsewhere).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often the status line is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The longest the thread sleeps between looks.
const QUARTER_SECOND: Duration = Duration::from_millis(250);

/// When the process started, and when its main loop last said it was alive (ms after start).
struct Liveness {
    started: Instant,
    last_beat_ms: AtomicU64,
}

fn liveness() -> &'static Liveness {
    static LIVENESS: OnceLock<Liveness> = OnceLock::new();
    LIVENESS.get_or_init(|| Liveness {
        started: Instant::now(),
        last_beat_ms: AtomicU64::new(0),
    })
}

/// Called by a command's main loop on every turn: the watchdog keep-alives depend on it.
pub fn beat() {
    let l = liveness();
    l.last_beat_ms
        .store(l.started.elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// How long ago the main loop last beat (the watchdog is systemd's).
#[cfg(unix)]
fn since_last_beat() -> Duration {
    let l = liveness();
    let now = l.started.elapsed().as_millis() as u64;
    Duration::from_millis(now.saturating_sub(l.last_beat_ms.load(Ordering::Relaxed)))
}

#[cfg(unix)]
fn send(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "could not notify the service manager");
    }
}

/// The command is connected and doing its job.
pub fn ready() {
    beat();
    #[cfg(unix)]
    send(&[sd_notify::NotifyState::Ready]);
}

/// Starts the thread that keeps the service manager informed until `cancel` (a requested stop,
/// then reported with `STOPPING=1`). None when no service manager listens.
pub fn spawn(
    status: Arc<dyn Fn() -> String + Send + Sync>,
    cancel: CancellationToken,
) -> Option<std::thread::JoinHandle<()>> {
    #[cfg(unix)]
    {
        std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = sd_notify::watchdog_enabled();
        // At least four keep-alives per watchdog period (one lost to a busy moment does no
        // harm), and a requested stop noticed within a quarter second.
        let tick = watchdog
            .map_or(QUARTER_SECOND, |w| w / 4)
            .clamp(Duration::from_millis(10), QUARTER_SECOND);
        std::thread::Builder::new()
            .name("service manager".into())
            .spawn(move || {
                // None until the first status: an Instant cannot go before the clock's start (on
                // Windows that is near the process's start).
                let mut last_status: Option<Instant> = None;
                while !cancel.is_cancelled() {
                    if let Some(period) = watchdog {
                        // A main loop silent for half the period is hung: no keep-alive, and
                        // the service manager restarts the process when the period ends.
                        if since_last_beat() < period / 2 {
                            send(&[sd_notify::NotifyState::Watchdog]);
                        }
                    }
                    if last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
                        send(&[sd_notify::NotifyState::Status(&status())]);
                        last_status = Some(Instant::now());
                    }
                    std::thread::sleep(tick);
                }
                send(&[sd_notify::NotifyState::Stopping]);
            })
            .ok()
    }
    #[cfg(not(unix))]
    {
        // A Windows service host names a file for the status line (`manage-service status`
        // reads it); the Service Control Manager has no place for one.
        let path = std::path::PathBuf::from(std::env::var_os(STATUS_FILE_ENV)?);
        std::thread::Builder::new()
            .name("service status".into())
            .spawn(move || {
                // None until the first status: an Instant cannot go before the clock's start (on
                // Windows that is near the process's start).
                let mut last_status: Option<Instant> = None;
                while !cancel.is_cancelled() {
                    if last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
                        if let Err(e) = std::fs::write(&path, status()) {
                            tracing::debug!(path = %path.display(), error = %e, "cannot write the status line");
                        }
                        last_status = Some(Instant::now());
                    }
                    std::thread::sleep(QUARTER_SECOND);
                }
                let _ = std::fs::write(&path, format!("stopping; last status: {}", status()));
            })
            .ok()
    }
}

/// Where a Windows service host asks for the status line to be written.
pub const STATUS_FILE_ENV: &str = "OPENMSI_STATUS_FILE";
