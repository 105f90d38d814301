//! The log of files already rebuilt (`.openmsi/completed.jsonl`), one JSON line per file
//! version. It lets a restarted downloader ignore chunks of a file it already published (the
//! tail of a file whose last offsets were not yet committed when it stopped), while a real new
//! version of that path (different hash) is still rebuilt.
//!
//! Each entry also records the Kafka message that completed the file. A restart can read an
//! older version of a path again (offsets wait at the first chunk of unfinished files, see
//! [`super::offsets`]); when that older version completes at an earlier message of the same
//! partition than the version already in place, it is stale and must not replace it
//! ([`CompletedLog::is_superseded`]). A later upload of the same old content completes at a
//! later message, so it still replaces the file.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chunk::hash::from_hex;
use crate::chunk::Sha512Digest;
use crate::state::{Keyed, LatestLog};

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletedEntry {
    /// Relative path of the rebuilt file, `/`-separated.
    pub path: String,
    /// Hex SHA-512 of its content.
    pub file_hash: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was published, Unix seconds.
    pub completed_at: f64,
    /// The message whose chunk completed the file (absent in older logs and for files
    /// completed from staging at start-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_by: Option<MessagePosition>,
}

pub use crate::contract::MessagePosition;

impl Keyed for CompletedEntry {
    const LOG_NAME: &'static str = "the completed-file log";
    const IF_UNREADABLE: &'static str = "chunks of those files read again are rebuilt again";
    fn key(&self) -> &str {
        &self.path
    }
    fn is_usable(&self) -> bool {
        from_hex(&self.file_hash).is_some()
    }
}

/// The log, plus the latest version per path in memory. Opening it compacts it to the latest
/// entry per path (see [`crate::state::jsonl`]), so it does not grow for ever.
pub struct CompletedLog {
    log: LatestLog<CompletedEntry>,
}

impl CompletedLog {
    /// Opens (creating) the log, loads and compacts it. A torn last line from a crash is
    /// dropped.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            log: LatestLog::open(path)?,
        })
    }

    /// True when the latest version published at `relative` has `file_hash`.
    pub fn is_latest(&self, relative: &str, file_hash: &Sha512Digest) -> bool {
        self.log
            .get(relative)
            .is_some_and(|l| from_hex(&l.file_hash).as_ref() == Some(file_hash))
    }

    /// True when a version of `relative` completed by the message at `at` is older than the one
    /// in place: that one was completed by a later message of the same partition. (Versions
    /// completed in different partitions cannot be ordered; the last to complete wins.)
    pub fn is_superseded(&self, relative: &str, at: MessagePosition) -> bool {
        self.log
            .get(relative)
            .and_then(|l| l.completed_by)
            .is_some_and(|by| by.partition == at.partition && by.offset > at.offset)
    }

    /// Appends entries and makes them durable with one fsync.
    pub fn append(&mut self, entries: Vec<CompletedEntry>) -> io::Result<()> {
        self.log.append(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::hash::to_hex;
    use std::io::Write;

    #[test]
    fn latest_version_wins_and_torn_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("completed.jsonl");
        let entry = |hash: &Sha512Digest, offset: i64| CompletedEntry {
            path: "a/x".into(),
            file_hash: to_hex(hash),
            size: 1,
            completed_at: 0.0,
            completed_by: Some(MessagePosition {
                partition: 0,
                offset,
            }),
        };
        {
            let mut log = CompletedLog::open(&path).unwrap();
            log.append(vec![entry(&[1; 64], 3)]).unwrap();
            log.append(vec![entry(&[2; 64], 7)]).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"path\": \"tor")
            .unwrap();
        let log = CompletedLog::open(&path).unwrap();
        // Compacted at open: one line per path.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert!(log.is_latest("a/x", &[2; 64]));
        assert!(!log.is_latest("a/x", &[1; 64]));
        assert!(!log.is_latest("b", &[2; 64]));
        // The message positions survive a restart.
        let at = |partition, offset| MessagePosition { partition, offset };
        assert!(log.is_superseded("a/x", at(0, 3)));
        assert!(!log.is_superseded("a/x", at(0, 9)));
        assert!(!log.is_superseded("a/x", at(1, 3)));
        assert!(!log.is_superseded("b", at(0, 3)));
    }
}
