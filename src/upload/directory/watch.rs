//! The bridge from filesystem events (notify: inotify on Linux, ReadDirectoryChangesW on
//! Windows) to the upload loop. Events only make discovery faster: the periodic scan is the
//! source of truth, so a dropped or overflowed event costs latency, never a file.
//!
//! When inotify runs out of watches (`fs.inotify.max_user_watches`) or instances
//! (`fs.inotify.max_user_instances`), at start or later when new folders appear, events no
//! longer cover the whole folder: the error names the limit, its current value and how to
//! raise it, and the loop falls back to frequent polling scans ([`Msg::EventsIncomplete`]).

use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError};

use notify::event::{AccessKind, AccessMode};
use notify::{ErrorKind, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{error, warn};

use super::message::Msg;

/// An inotify limit that stops events from covering the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Watches per user (one per folder): `fs.inotify.max_user_watches`.
    Watches,
    /// inotify instances per user (one per watching program): `fs.inotify.max_user_instances`.
    /// Also what "too many open files" looks like when the process's own descriptor limit is
    /// reached; the message says both.
    Instances,
}

impl Limit {
    /// The sysctl name.
    pub fn sysctl(self) -> &'static str {
        match self {
            Limit::Watches => "fs.inotify.max_user_watches",
            Limit::Instances => "fs.inotify.max_user_instances",
        }
    }

    /// Where the current value is read: the system-wide file, and the per-user-namespace one
    /// (Linux 5.11+; in a container the lower of the two applies).
    fn proc_files(self) -> [&'static str; 2] {
        match self {
            Limit::Watches => [
                "/proc/sys/fs/inotify/max_user_watches",
                "/proc/sys/user/max_inotify_watches",
            ],
            Limit::Instances => [
                "/proc/sys/fs/inotify/max_user_instances",
                "/proc/sys/user/max_inotify_instances",
            ],
        }
    }

    /// A value worth suggesting.
    fn suggested(self) -> u64 {
        match self {
            Limit::Watches => 524_288,
            Limit::Instances => 1024,
        }
    }
}

/// What a watcher error means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Some events were lost: one full scan catches up.
    Rescan,
    /// Events no longer cover the folder (a limit was reached): poll with frequent scans.
    Poll(Option<Limit>),
}

/// The inotify limit `e` reports, if any. notify reports ENOSPC from adding a watch as
/// `MaxFilesWatch`; a failing `inotify_init` surfaces as the raw EMFILE.
pub fn limit_of(e: &notify::Error) -> Option<Limit> {
    match &e.kind {
        ErrorKind::MaxFilesWatch => Some(Limit::Watches),
        ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => Some(Limit::Watches),
        ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => Some(Limit::Instances),
        _ => None,
    }
}

/// How the loop reacts to a watcher error reported while running.
pub fn reaction(e: &notify::Error) -> Reaction {
    match limit_of(e) {
        Some(limit) => Reaction::Poll(Some(limit)),
        None => Reaction::Rescan,
    }
}

/// The message for a reached limit: its name, current value(s) and how to raise it.
pub fn limit_message(limit: Limit, values: [Option<u64>; 2]) -> String {
    let name = limit.sysctl();
    let current = match values {
        [Some(global), Some(ns)] if ns < global => {
            format!("{name} = {global}, and {ns} in this user namespace")
        }
        [Some(global), _] => format!("{name} = {global}"),
        [None, _] => format!("{name} (current value unreadable)"),
    };
    let also = match limit {
        Limit::Watches => "",
        Limit::Instances => " (or this process's open-file limit, `ulimit -n`)",
    };
    format!(
        "the inotify limit {current} is reached{also}; raise it with `sudo sysctl {name}={}` \
         and keep it with a line `{name}={}` in /etc/sysctl.d/90-openmsi.conf. Falling back to \
         polling scans",
        limit.suggested(),
        limit.suggested()
    )
}

/// The current values of `limit` (system-wide, this user namespace).
fn current_values(limit: Limit) -> [Option<u64>; 2] {
    limit.proc_files().map(|path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Starts a recursive watcher on `root` that forwards changed paths as [`Msg::Paths`]. Returns
/// `None` (after saying why, and how to fix it) when events are unavailable: the caller then
/// relies on polling scans.
pub fn start(root: &Path, tx: SyncSender<Msg>) -> Option<RecommendedWatcher> {
    let callback_tx = tx.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        let msg = match event {
            Ok(event) if event.need_rescan() => Msg::Rescan,
            Ok(event) => match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => Msg::Closed(event.paths),
                EventKind::Access(_) => return,
                _ => Msg::Paths(event.paths),
            },
            Err(e) => match reaction(&e) {
                Reaction::Poll(limit) => {
                    explain(&e, limit, None);
                    // Rare and must arrive: worth a blocking send (the loop drains the queue).
                    let _ = callback_tx.send(Msg::EventsIncomplete);
                    return;
                }
                Reaction::Rescan => {
                    warn!(error = %e, "file watcher error; the next scan catches up");
                    Msg::Rescan
                }
            },
        };
        // Never block the watcher's thread: when the loop is behind, ask it for a full scan
        // instead (the scan sees everything the dropped events would have said).
        if let Err(TrySendError::Full(_)) = callback_tx.try_send(msg) {
            let _ = callback_tx.try_send(Msg::Rescan);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            explain(&e, limit_of(&e), Some(root));
            return None;
        }
    };
    if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
        explain(&e, limit_of(&e), Some(root));
        return None;
    }
    Some(watcher)
}

/// Logs why events are unavailable, naming the limit to raise when it is inotify's.
fn explain(e: &notify::Error, limit: Option<Limit>, root: Option<&Path>) {
    let folder = root.map(|r| r.display().to_string()).unwrap_or_default();
    match limit {
        Some(limit) => {
            let message = limit_message(limit, current_values(limit));
            error!(folder = %folder, error = %e, "{message}");
        }
        None => {
            error!(folder = %folder, error = %e, "cannot watch the folder for changes; falling back to polling scans")
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn inotify_limits_are_named_with_their_value_and_lead_to_polling() {
        // What notify returns when inotify_add_watch fails with ENOSPC, at start or for a
        // folder created later.
        let watches = notify::Error::new(ErrorKind::MaxFilesWatch);
        assert_eq!(reaction(&watches), Reaction::Poll(Some(Limit::Watches)));
        // What notify returns when inotify_init fails because of the instance limit.
        let instances = notify::Error::io(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(reaction(&instances), Reaction::Poll(Some(Limit::Instances)));
        // Anything else is transient: a rescan catches up.
        let other = notify::Error::generic("queue overflow");
        assert_eq!(reaction(&other), Reaction::Rescan);

        let message = limit_message(Limit::Watches, current_values(Limit::Watches));
        let value = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").unwrap();
        assert!(
            message.contains(&format!("fs.inotify.max_user_watches = {}", value.trim())),
            "{message}"
        );
        assert!(
            message.contains("sudo sysctl fs.inotify.max_user_watches=524288"),
            "{message}"
        );
        assert!(message.contains("polling"), "{message}");
        let message = limit_message(Limit::Instances, [Some(128), Some(8)]);
        assert!(
            message.contains("fs.inotify.max_user_instances = 128, and 8 in this user namespace"),
            "{message}"
        );
    }
}
