//! Why an upload of one file did not complete, typed, so callers decide by variant (retry,
//! report, stop) instead of by message text.

use std::io;
use std::path::PathBuf;

use crate::kafka::producer::ProduceError;
use crate::upload::source::SourceError;

/// Why one file's upload did not complete.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Stopped by `quit`, Ctrl-C or SIGTERM before every chunk was acknowledged.
    #[error(
        "interrupted before every chunk was acknowledged; nothing more is recorded as uploaded \
         than the broker acknowledged"
    )]
    Cancelled,
    /// The file could not be opened or named.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The file became shorter while it was read.
    #[error(
        "{path} became shorter while it was being read; upload it again once it is completely \
         written"
    )]
    Shrunk {
        /// The file.
        path: PathBuf,
    },
    /// The file changed while its only chunk was read: nothing was sent.
    #[error(
        "{path} changed while it was being read; nothing was sent. Upload it again once it is \
         completely written"
    )]
    ChangedWhileRead {
        /// The file.
        path: PathBuf,
    },
    /// The file changed while it was being sent: receivers reject that copy.
    #[error(
        "{path} changed while it was being uploaded; the receivers will reject this copy \
         because its hash will not match. Upload it again once it is completely written"
    )]
    ChangedWhileSent {
        /// The file.
        path: PathBuf,
    },
    /// The producer or the broker refused, timed out or did not acknowledge.
    #[error(transparent)]
    Produce(ProduceError),
}

impl From<ProduceError> for UploadError {
    fn from(e: ProduceError) -> Self {
        match e {
            ProduceError::Cancelled { .. } => Self::Cancelled,
            other => Self::Produce(other),
        }
    }
}

impl UploadError {
    /// True when the upload stopped because a stop was requested.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled)
    }

    /// A read error of `path`, telling "the file became shorter" apart.
    pub fn read(path: &std::path::Path, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::UnexpectedEof => Self::Shrunk {
                path: path.to_path_buf(),
            },
            io::ErrorKind::Interrupted => Self::Cancelled,
            _ => Self::Read {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}
