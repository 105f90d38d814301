//! The bridge from filesystem events (notify: inotify on Linux, ReadDirectoryChangesW on
//! Windows) to the upload loop. Events only make discovery faster: the periodic scan is the
//! source of truth, so a dropped or overflowed event costs latency, never a file.

use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError};

use notify::{ErrorKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{error, warn};

use super::Msg;

/// Starts a recursive watcher on `root` that forwards changed paths as [`Msg::Paths`]. Returns
/// `None` (after saying why, and how to fix it) when events are unavailable: the caller then
/// relies on polling scans.
pub fn start(root: &Path, tx: SyncSender<Msg>) -> Option<RecommendedWatcher> {
    let callback_tx = tx.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        let msg = match event {
            Ok(event) if event.need_rescan() => Msg::Rescan,
            Ok(event) => {
                if event.kind.is_access() {
                    return;
                }
                Msg::Paths(event.paths)
            }
            Err(e) => {
                warn!(error = %e, "file watcher error; the next scan catches up");
                Msg::Rescan
            }
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
            explain(&e, root);
            return None;
        }
    };
    if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
        explain(&e, root);
        return None;
    }
    Some(watcher)
}

/// Logs why events are unavailable, naming the limit to raise when it is inotify's.
fn explain(e: &notify::Error, root: &Path) {
    match &e.kind {
        ErrorKind::MaxFilesWatch => error!(
            folder = %root.display(),
            "the inotify watch limit is reached (fs.inotify.max_user_watches; raise it with \
             `sudo sysctl fs.inotify.max_user_watches=524288`, and in /etc/sysctl.d/ to keep it); \
             falling back to polling scans"
        ),
        _ => {
            error!(folder = %root.display(), error = %e, "cannot watch the folder for changes; falling back to polling scans")
        }
    }
}
