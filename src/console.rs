//! The operator's controls for long-running commands: `check` (or `c`) prints a status line,
//! `quit` (or `q`), Ctrl-C and SIGTERM request a clean shutdown. All of them end in one
//! [`CancellationToken`] that every stage watches. Works with stdin closed or not a terminal
//! (as a service): end of input just stops the reader.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Produces the text printed for `check`.
pub type StatusFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Exit code used when a second Ctrl-C forces an immediate exit (128 + SIGINT, as shells do).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Starts the stdin reader and the signal handlers on the current tokio runtime. Returns the
/// token that is cancelled on `quit`, Ctrl-C or SIGTERM. A second Ctrl-C or SIGTERM exits the
/// process at once: state on disk is consistent at every instant, so this loses nothing durable.
pub fn spawn(status: StatusFn) -> CancellationToken {
    let cancel = spawn_signal_handlers();
    tokio::spawn(read_commands(status, cancel.clone()));
    cancel
}

/// The process-wide stop request a service manager's stop control sets (Windows'
/// SERVICE_CONTROL_STOP); every token made here follows it.
fn service_stop() -> &'static CancellationToken {
    static STOP: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    STOP.get_or_init(CancellationToken::new)
}

/// Requests the same clean shutdown as `quit` (a service manager's stop).
pub fn request_stop() {
    info!("stop requested by the service manager; finishing what is in flight");
    service_stop().cancel();
}

/// Signals only, for one-shot commands that must leave stdin to the calling script.
pub fn spawn_signal_handlers() -> CancellationToken {
    let cancel = service_stop().child_token();
    tokio::spawn(watch_signals(cancel.clone()));
    cancel
}

async fn read_commands(status: StatusFn, cancel: CancellationToken) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            _ = cancel.cancelled() => return,
            line = lines.next_line() => line,
        };
        match line {
            Ok(Some(line)) => match line.trim().to_ascii_lowercase().as_str() {
                "" => {}
                "c" | "check" => println!("{}", status()),
                "q" | "quit" => {
                    info!("quit requested; finishing what is in flight");
                    cancel.cancel();
                    return;
                }
                other => println!(
                    "unknown command `{other}`: type `check` (c) for status or `quit` (q) to stop"
                ),
            },
            // End of input (service, pipe closed, </dev/null): keep running on signals only.
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "stopped reading commands from stdin");
                return;
            }
        }
    }
}

#[cfg(unix)]
async fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("could not install signal handlers; use `quit` on stdin to stop cleanly");
        return;
    };
    let mut requests = 0;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        requests += 1;
        if requests == 1 {
            info!(
                signal = name,
                "shutting down cleanly; send it again to exit at once"
            );
            cancel.cancel();
        } else {
            warn!(signal = name, "exiting at once");
            std::process::exit(FORCED_EXIT_CODE);
        }
    }
}

#[cfg(not(unix))]
async fn watch_signals(cancel: CancellationToken) {
    let mut requests = 0;
    while tokio::signal::ctrl_c().await.is_ok() {
        requests += 1;
        if requests == 1 {
            info!("shutting down cleanly; press Ctrl-C again to exit at once");
            cancel.cancel();
        } else {
            std::process::exit(FORCED_EXIT_CODE);
        }
    }
}
