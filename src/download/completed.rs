//! The log of files already rebuilt (`.openmsi/completed.jsonl`), one JSON line per file
//! version. It lets a restarted downloader ignore chunks of a file it already published (the
//! tail of a file whose last offsets were not yet committed when it stopped), while a real new
//! version of that path (different hash) is still rebuilt.

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
}

/// The log, plus the latest hash per path in memory.
pub struct CompletedLog {
    path: PathBuf,
    file: File,
    latest: HashMap<String, Sha512Digest>,
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
                    .and_then(|e| Some((e.path, from_hex(&e.file_hash)?)));
                match parsed {
                    Some((p, hash)) => {
                        latest.insert(p, hash);
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
        self.latest.get(relative) == Some(file_hash)
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
            self.latest.insert(entry.path.clone(), *hash);
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
        let entry = |hash: &Sha512Digest| {
            (
                CompletedEntry {
                    path: "a/x".into(),
                    file_hash: to_hex(hash),
                    size: 1,
                    completed_at: 0.0,
                },
                *hash,
            )
        };
        {
            let mut log = CompletedLog::open(&path).unwrap();
            log.append(&[entry(&[1; 64])]).unwrap();
            log.append(&[entry(&[2; 64])]).unwrap();
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
    }
}
