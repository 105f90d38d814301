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

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::chunk::hash::from_hex;
use crate::chunk::Sha512Digest;

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

/// Where a message sits in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePosition {
    pub partition: i32,
    pub offset: i64,
}

/// What the log remembers of the latest version of a path.
#[derive(Debug, Clone, Copy)]
struct Latest {
    hash: Sha512Digest,
    completed_by: Option<MessagePosition>,
}

/// The log, plus the latest version per path in memory.
pub struct CompletedLog {
    path: PathBuf,
    file: File,
    latest: HashMap<String, Latest>,
}

impl CompletedLog {
    /// Opens (creating) the log and loads it. A torn last line from a crash is ignored.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut latest = HashMap::new();
        if let Ok(existing) = File::open(path) {
            let mut bad_lines = 0usize;
            for line in BufReader::new(existing).lines() {
                let line = line?;
                let parsed = serde_json::from_str::<CompletedEntry>(&line)
                    .ok()
                    .and_then(|e| {
                        let hash = from_hex(&e.file_hash)?;
                        Some((
                            e.path,
                            Latest {
                                hash,
                                completed_by: e.completed_by,
                            },
                        ))
                    });
                match parsed {
                    Some((p, entry)) => {
                        latest.insert(p, entry);
                    }
                    None if line.trim().is_empty() => {}
                    None => bad_lines += 1,
                }
            }
            if bad_lines > 0 {
                warn!(path = %path.display(), bad_lines, "ignored unreadable lines in the completed-file log (a crash can leave one torn line)");
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            latest,
        })
    }

    /// True when the latest version published at `relative` has `file_hash`.
    pub fn is_latest(&self, relative: &str, file_hash: &Sha512Digest) -> bool {
        self.latest
            .get(relative)
            .is_some_and(|l| &l.hash == file_hash)
    }

    /// True when a version of `relative` completed by the message at `at` is older than the one
    /// in place: that one was completed by a later message of the same partition. (Versions
    /// completed in different partitions cannot be ordered; the last to complete wins.)
    pub fn is_superseded(&self, relative: &str, at: MessagePosition) -> bool {
        self.latest
            .get(relative)
            .and_then(|l| l.completed_by)
            .is_some_and(|by| by.partition == at.partition && by.offset > at.offset)
    }

    /// Appends entries and makes them durable with one fsync.
    pub fn append(&mut self, entries: &[(CompletedEntry, Sha512Digest)]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for (entry, _) in entries {
            text.push_str(&serde_json::to_string(entry).map_err(io::Error::other)?);
            text.push('\n');
        }
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        for (entry, hash) in entries {
            let latest = Latest {
                hash: *hash,
                completed_by: entry.completed_by,
            };
            self.latest.insert(entry.path.clone(), latest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::hash::to_hex;

    #[test]
    fn latest_version_wins_and_torn_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("completed.jsonl");
        let entry = |hash: &Sha512Digest, offset: i64| {
            (
                CompletedEntry {
                    path: "a/x".into(),
                    file_hash: to_hex(hash),
                    size: 1,
                    completed_at: 0.0,
                    completed_by: Some(MessagePosition {
                        partition: 0,
                        offset,
                    }),
                },
                *hash,
            )
        };
        {
            let mut log = CompletedLog::open(&path).unwrap();
            log.append(&[entry(&[1; 64], 3)]).unwrap();
            log.append(&[entry(&[2; 64], 7)]).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"path\": \"tor")
            .unwrap();
        let log = CompletedLog::open(&path).unwrap();
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
