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

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

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

/// The registry: the log file plus the latest entry per path in memory.
pub struct Registry {
    path: PathBuf,
    file: File,
    latest: HashMap<String, Entry>,
    /// False when the log did not exist before this run (a first start).
    existed: bool,
}

impl Registry {
    /// Opens `path`, loading and compacting it (creating it when missing).
    pub fn open(path: &Path) -> io::Result<Self> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut latest: HashMap<String, Entry> = HashMap::new();
        let existed = path.exists();
        if existed {
            let mut bad_lines = 0usize;
            for line in BufReader::new(File::open(path).map_err(with_path)?).lines() {
                let line = line.map_err(with_path)?;
                match serde_json::from_str::<Entry>(&line) {
                    Ok(entry) => {
                        latest.insert(entry.path.clone(), entry);
                    }
                    Err(_) if line.trim().is_empty() => {}
                    Err(_) => bad_lines += 1,
                }
            }
            if bad_lines > 0 {
                warn!(path = %path.display(), bad_lines, "ignored unreadable lines in the upload registry (a crash can leave one torn line); those files are uploaded again");
            }
        }
        rewrite_atomically(path, latest.values()).map_err(with_path)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(with_path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            latest,
            existed,
        })
    }

    /// True when the registry existed before this run.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// The latest entry for `relative`.
    pub fn get(&self, relative: &str) -> Option<&Entry> {
        self.latest.get(relative)
    }

    /// Number of paths recorded.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Appends entries and makes them durable with one fsync (callers batch).
    pub fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for entry in &entries {
            text.push_str(&serde_json::to_string(entry).map_err(io::Error::other)?);
            text.push('\n');
        }
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        for entry in entries {
            self.latest.insert(entry.path.clone(), entry);
        }
        Ok(())
    }
}

/// Writes `entries` to `path` via a fsynced temporary file and a rename, then fsyncs the folder
/// so the rename itself survives power loss.
fn rewrite_atomically<'a>(path: &Path, entries: impl Iterator<Item = &'a Entry>) -> io::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        for entry in entries {
            serde_json::to_writer(&mut out, entry).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

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
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"path\": \"tor")
            .unwrap();
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
