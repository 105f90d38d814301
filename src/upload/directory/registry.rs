//! The upload registry (`DIR/.openmsi/uploaded.jsonl`): one JSON line per file version the
//! broker fully acknowledged (path, size, mtime, SHA-512), plus the files that were already
//! there at the first start and are deliberately not uploaded. A restart consults it so a
//! completed, unchanged file is never sent again, while a changed one is.
//!
//! Durability: a line is appended and fsynced only after every chunk of that file version was
//! acknowledged, so after kill -9 or power loss the log never claims more than the broker has.
//! On open, the log is compacted (latest line per path) into a temporary file that is fsynced
//! and renamed over the log, then the folder is fsynced: a crash at any point leaves either
//! the old or the new log whole. A torn last line from a crash is dropped by that rewrite.

use serde::{Deserialize, Serialize};

use crate::state::{Keyed, LatestLog};

/// Why a path is in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Every chunk of this version was acknowledged by the broker.
    Sent,
    /// Present when the registry was created without `--upload-existing`: left alone until it
    /// changes.
    Existing,
}

/// One line of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the watched folder, `/`-separated.
    pub path: String,
    /// Size in bytes of the version recorded.
    pub size: u64,
    /// Modification time (Unix seconds) of the version recorded.
    pub mtime: f64,
    /// Hex SHA-512 of the content sent (`None` for [`EntryState::Existing`]: never read).
    pub sha512: Option<String>,
    /// Sent or merely existing.
    pub state: EntryState,
    /// When the line was written, Unix seconds.
    pub at: f64,
}

impl Keyed for Entry {
    const LOG_NAME: &'static str = "the upload registry";
    const IF_UNREADABLE: &'static str = "those files are uploaded again";
    fn key(&self) -> &str {
        &self.path
    }
}

/// The registry: the log file plus the latest entry per path in memory (opening it compacts
/// it; see [`crate::state::jsonl`]).
pub type Registry = LatestLog<Entry>;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            size,
            mtime: 1_700_000_000.123_456_7,
            sha512: Some("ab".into()),
            state: EntryState::Sent,
            at: 0.0,
        }
    }

    #[test]
    fn latest_wins_torn_lines_dropped_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploaded.jsonl");
        {
            let mut reg = Registry::open(&path).unwrap();
            assert!(!reg.existed());
            reg.append(vec![entry("a/x", 1), entry("b", 2)]).unwrap();
            reg.append(vec![entry("a/x", 3)]).unwrap();
        }
        crate::state::jsonl::tear(&path);
        let mut reg = Registry::open(&path).unwrap();
        assert!(reg.existed());
        assert_eq!(reg.get("a/x"), Some(&entry("a/x", 3)));
        assert_eq!(reg.len(), 2);
        // The rewrite dropped the torn line, so a new line is not glued to it.
        reg.append(vec![entry("c", 4)]).unwrap();
        // Odd mtimes survive the JSON round trip exactly (they are compared with fresh stats).
        let mut odd = entry("d", 5);
        odd.mtime = 1_795_359_518.154_616_8;
        reg.append(vec![odd.clone()]).unwrap();
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.get("c"), Some(&entry("c", 4)));
        assert_eq!(reg.get("d").unwrap().mtime.to_bits(), odd.mtime.to_bits());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
    }
}
