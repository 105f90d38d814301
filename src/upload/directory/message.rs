//! What the loop ([`super::dropbox`]) is told by the watcher and the workers.

use std::path::PathBuf;

use super::worker::Done;

/// Room for events between loop iterations; when it is full the watcher asks for a full scan
/// instead of blocking (see [`super::watch`]).
pub const EVENT_QUEUE: usize = 8192;

/// Messages to the loop.
#[derive(Debug)]
pub enum Msg {
    /// Paths the filesystem says changed.
    Paths(Vec<PathBuf>),
    /// Files a writer just closed (Linux: `IN_CLOSE_WRITE`): ready at once when nobody else
    /// holds them open for writing.
    Closed(Vec<PathBuf>),
    /// Events were lost: scan everything.
    Rescan,
    /// Events no longer cover the folder (an inotify limit was reached): poll instead.
    EventsIncomplete,
    /// A worker finished a file.
    Done(Box<Done>),
}
