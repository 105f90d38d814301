//! What the loop ([`super::dropbox`]) is told by the watcher and the workers, and what a worker
//! reports about a file ([`Done`], [`Outcome`]).

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::settle::Ready;
use crate::upload::error::UploadError;

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

/// What happened to one file.
#[derive(Debug)]
pub enum Outcome {
    /// Every chunk acknowledged; the file was unchanged from open to last acknowledgement.
    Sent {
        /// Hex SHA-512 of what was sent.
        sha512: String,
    },
    /// The file changed before or during the upload: it settles again and is sent anew.
    Changed,
    /// Could not be sent (broker refused, read error, ...): reported and retried later.
    Failed(UploadError),
    /// This user may not read the file: reported with what to do, retried at the next scan.
    PermissionDenied,
    /// Stopped by `quit`/a signal before every chunk was acknowledged: sent again next run.
    Interrupted,
}

impl Outcome {
    /// The outcome of an attempt that ended with `e`: interrupted when a stop was requested
    /// (whatever error the stop caused), failed otherwise.
    pub(super) fn from_error(e: UploadError, cancel: &CancellationToken) -> Self {
        if e.is_cancelled() || cancel.is_cancelled() {
            Self::Interrupted
        } else {
            Self::Failed(e)
        }
    }
}

/// A finished job, reported to the loop.
#[derive(Debug)]
pub struct Done {
    /// The file, as it was when it settled.
    pub file: Ready,
    /// What happened.
    pub outcome: Outcome,
}
