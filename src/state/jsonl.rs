//! Append-only JSONL logs where only the latest line per key matters: the upload registry
//! (`uploaded.jsonl`, key = relative path), the download completed log (`completed.jsonl`,
//! key = relative path) and the upload resume state (`in_progress.jsonl`, rewritten whole as a
//! snapshot through [`rewrite`]).
//!
//! Durability: [`LatestLog::append`] writes a batch of lines and fsyncs once, so callers group
//! what they record. [`LatestLog::open`] loads the log and compacts it (latest line per key)
//! into a temporary file that is fsynced and renamed over it, so a log never grows without
//! bound and a torn last line left by a crash is dropped before anything is appended after it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;

use super::annotate;
use super::atomic::write_with;

/// An entry of a latest-per-key log.
pub trait Keyed: Serialize + DeserializeOwned {
    /// What the log is, for the warning about unreadable lines ("the upload registry").
    const LOG_NAME: &'static str;
    /// What an unreadable line costs, for the same warning ("those files are uploaded again").
    const IF_UNREADABLE: &'static str;
    /// The key whose latest entry counts.
    fn key(&self) -> &str;
    /// False for an entry that parsed but cannot be used (it counts as an unreadable line).
    fn is_usable(&self) -> bool {
        true
    }
}

/// The latest entry per key of the log at `path`, and whether the file existed. Unreadable
/// lines (a torn last line after a crash, garbage) are skipped with one warning.
pub fn load<E: Keyed>(path: &Path) -> io::Result<(HashMap<String, E>, bool)> {
    let mut latest = HashMap::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((latest, false)),
        Err(e) => return Err(annotate(e, path)),
    };
    let mut bad_lines = 0usize;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| annotate(e, path))?;
        match serde_json::from_str::<E>(&line) {
            Ok(entry) if entry.is_usable() => {
                latest.insert(entry.key().to_string(), entry);
            }
            _ if line.trim().is_empty() => {}
            _ => bad_lines += 1,
        }
    }
    if bad_lines > 0 {
        warn!(path = %path.display(), bad_lines, "ignored unreadable lines in {} (a crash can leave one torn line); {}", E::LOG_NAME, E::IF_UNREADABLE);
    }
    Ok((latest, true))
}

/// Replaces the log at `path` with `entries`, one line each, atomically.
pub fn rewrite<'a, E: Serialize + 'a>(
    path: &Path,
    entries: impl IntoIterator<Item = &'a E>,
) -> io::Result<()> {
    write_with(path, |out| {
        for entry in entries {
            serde_json::to_writer(&mut *out, entry).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// An append-only JSONL file, fsynced on demand. A batch of lines goes out in one write on a
/// file opened for appending (the kernel appends each write whole), so two handles on one log
/// (the hook log's writer and runner threads) never interleave within a line, and a burst of
/// small files costs one system call.
pub struct AppendLog {
    /// The log file, for error messages.
    path: PathBuf,
    /// Open for appending.
    file: File,
    /// Lines written since the last fsync.
    unsynced: bool,
}

impl AppendLog {
    /// Opens `path` for appending (creating it).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| annotate(e, path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            unsynced: false,
        })
    }

    /// Appends one line per entry, without waiting for the disk (see [`AppendLog::sync`]).
    pub fn append<'a, E: Serialize + 'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a E>,
    ) -> io::Result<()> {
        let mut text = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut text, entry).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&text)
            .map_err(|e| annotate(e, &self.path))?;
        self.unsynced = true;
        Ok(())
    }

    /// Makes every line appended so far durable (one fsync, none when nothing is pending).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data().map_err(|e| annotate(e, &self.path))?;
            self.unsynced = false;
        }
        Ok(())
    }
}

/// A latest-per-key log: the file, open for appending, plus the latest entry per key in memory.
pub struct LatestLog<E> {
    /// The log file.
    file: AppendLog,
    /// The latest entry per key.
    latest: HashMap<String, E>,
    /// False when the log did not exist before this run (a first start).
    existed: bool,
}

impl<E: Keyed> LatestLog<E> {
    /// Opens `path` (creating it), loading and compacting it.
    pub fn open(path: &Path) -> io::Result<Self> {
        let (latest, existed) = load::<E>(path)?;
        let mut keys: Vec<&String> = latest.keys().collect();
        keys.sort();
        rewrite(path, keys.into_iter().map(|k| &latest[k]))?;
        Ok(Self {
            file: AppendLog::open(path)?,
            latest,
            existed,
        })
    }

    /// True when the log existed before this run.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// The latest entry for `key`.
    pub fn get(&self, key: &str) -> Option<&E> {
        self.latest.get(key)
    }

    /// Number of keys recorded.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Appends `entries` and makes them durable with one fsync (callers batch).
    pub fn append(&mut self, entries: Vec<E>) -> io::Result<()> {
        self.append_unsynced(entries)?;
        self.sync()
    }

    /// Appends `entries` without waiting for the disk: they survive this process dying (the
    /// kernel has them), not a power loss before the next [`LatestLog::sync`]. For logs whose
    /// lost tail only costs work done again (a file sent twice), so many small appends share
    /// one fsync.
    pub fn append_unsynced(&mut self, entries: Vec<E>) -> io::Result<()> {
        self.file.append(&entries)?;
        for entry in entries {
            self.latest.insert(entry.key().to_string(), entry);
        }
        Ok(())
    }

    /// Makes every line appended so far durable (one fsync, none when nothing is pending).
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync()
    }
}

/// Appends half a line to the log at `path`, as a crash in the middle of a write leaves it
/// (for the tests of every log built on this one).
#[cfg(test)]
pub(crate) fn tear(path: &Path) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(b"{\"path\": \"tor")
        .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Line {
        path: String,
        n: u64,
    }

    impl Keyed for Line {
        const LOG_NAME: &'static str = "the test log";
        const IF_UNREADABLE: &'static str = "nothing is lost";
        fn key(&self) -> &str {
            &self.path
        }
        fn is_usable(&self) -> bool {
            self.n != 666
        }
    }

    fn line(path: &str, n: u64) -> Line {
        Line {
            path: path.into(),
            n,
        }
    }

    #[test]
    fn latest_wins_torn_and_unusable_lines_dropped_and_compacted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        {
            let mut log = LatestLog::<Line>::open(&path).unwrap();
            assert!(!log.existed());
            log.append(vec![line("a", 1), line("b", 2)]).unwrap();
            log.append(vec![line("a", 3), line("c", 666)]).unwrap();
            assert_eq!(log.get("a"), Some(&line("a", 3)));
        }
        tear(&path);
        let mut log = LatestLog::<Line>::open(&path).unwrap();
        assert!(log.existed());
        assert_eq!(log.len(), 2);
        assert_eq!(log.get("a"), Some(&line("a", 3)));
        assert_eq!(log.get("c"), None);
        // Compacted: one line per key, so the next line is not glued to the torn one.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        log.append(vec![line("d", 4)]).unwrap();
        let log = LatestLog::<Line>::open(&path).unwrap();
        assert_eq!(log.get("d"), Some(&line("d", 4)));
    }
}
