//! Per-chunk progress of files being uploaded (`DIR/.openmsi/in_progress.jsonl`), so a restart
//! after kill -9 or power loss re-sends only the chunks the broker did not acknowledge.
//!
//! When a file version starts uploading, its version (size, mtime, whole-file SHA-512, chunk
//! size, chunk count) is recorded; the loop saves, about once a second and at shutdown, the
//! acknowledged chunk indices of every unfinished file as compact ranges. On restart, a file
//! whose size and mtime are unchanged resumes with the recorded hash and sends only the missing
//! chunks; a changed file is sent whole as a new version. Once the registry records a file as
//! sent, its entry is dropped here.
//!
//! The file is rewritten whole (temporary file, fsync, rename, folder fsync), so after a crash
//! it is either the previous or the new snapshot. It only ever lists chunks the broker
//! acknowledged: at worst the last second of acknowledgements is lost, and those chunks are sent
//! again (downloaders ignore duplicates). Size: one line per unfinished file.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chunk::hash::{from_hex, to_hex};
use crate::chunk::{RangeSet, Sha512Digest};
use crate::kafka::FileDelivery;
use crate::state::atomic::{tmp_path, write_atomically};
use crate::state::jsonl::{self, Keyed};
use crate::upload::send::Resume;

/// One file version being uploaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: f64,
    /// Hex SHA-512 of the whole file, as carried in every chunk.
    pub sha512: String,
    /// Chunk size the chunks were cut with (a resume must cut the same way).
    pub chunk_size: u64,
    /// Number of chunks of this version.
    pub n_chunks: u64,
}

/// One line of the progress file.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    /// Relative path, `/`-separated.
    path: String,
    #[serde(flatten)]
    version: Version,
    /// 0-based indices of acknowledged chunks, as `[start, end)` ranges.
    acked: RangeSet,
}

impl Keyed for Line {
    const LOG_NAME: &'static str = "the progress file";
    const IF_UNREADABLE: &'static str = "those files are sent whole";
    fn key(&self) -> &str {
        &self.path
    }
    fn is_usable(&self) -> bool {
        self.acked.is_valid() && from_hex(&self.version.sha512).is_some()
    }
}

/// An unfinished file.
#[derive(Debug)]
struct Tracked {
    /// The version being sent (a resume must be of the same version).
    version: Version,
    /// Chunks acknowledged in earlier attempts.
    acked: RangeSet,
    /// The current attempt's delivery tracker, while a worker sends it.
    live: Option<Arc<FileDelivery>>,
}

impl Tracked {
    fn acked_now(&self) -> RangeSet {
        let mut acked = self.acked.clone();
        if let Some(live) = &self.live {
            acked.union(&live.acked_chunks());
        }
        acked
    }
}

/// The unfinished files and their acknowledged chunks.
#[derive(Debug)]
pub struct ResumeState {
    /// The progress file.
    path: PathBuf,
    /// Unfinished files by relative path.
    files: HashMap<String, Tracked>,
    /// What the file on disk holds now (to skip writing an unchanged snapshot).
    saved: String,
}

impl ResumeState {
    /// Loads `path` (missing: nothing in progress). Unreadable lines are skipped: those files
    /// are simply sent whole.
    pub fn open(path: &Path) -> io::Result<Self> {
        let (lines, _) = jsonl::load::<Line>(path)?;
        let mut files = HashMap::new();
        for (path, line) in lines {
            files.insert(
                path,
                Tracked {
                    version: line.version,
                    acked: line.acked,
                    live: None,
                },
            );
        }
        let mut me = Self {
            path: path.to_path_buf(),
            files,
            saved: String::new(),
        };
        // What is on disk now, so an unchanged snapshot is not written again.
        me.saved = me.snapshot();
        // A leftover temporary file is an unfinished save: the previous snapshot is whole.
        let _ = std::fs::remove_file(tmp_path(path));
        Ok(me)
    }

    /// Where `relative` can resume from: only when the recorded version has this size, mtime
    /// and chunk size (anything else is a new version, sent whole).
    pub fn resume_point(
        &self,
        relative: &str,
        size: u64,
        mtime: f64,
        chunk_size: u64,
    ) -> Option<Resume> {
        let t = self.files.get(relative)?;
        let v = &t.version;
        if v.size != size || v.mtime != mtime || v.chunk_size != chunk_size {
            return None;
        }
        Some(Resume {
            file_hash: from_hex(&v.sha512)?,
            acked: t.acked_now(),
        })
    }

    /// Records that `version` of `relative` starts (or resumes) sending, with `acked` already
    /// acknowledged and further acknowledgements counted by `live`.
    pub fn begin(
        &mut self,
        relative: &str,
        version: Version,
        acked: RangeSet,
        live: Arc<FileDelivery>,
    ) {
        self.files.insert(
            relative.to_string(),
            Tracked {
                version,
                acked,
                live: Some(live),
            },
        );
    }

    /// The attempt on `relative` ended without completing: keep what was acknowledged.
    pub fn end(&mut self, relative: &str) {
        if let Some(t) = self.files.get_mut(relative) {
            t.acked = t.acked_now();
            t.live = None;
        }
    }

    /// Forgets `relative` (recorded as sent, or changed so its chunks are useless).
    pub fn forget(&mut self, relative: &str) {
        self.files.remove(relative);
    }

    /// Keeps only the files for which `keep(path, size, mtime)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, u64, f64) -> bool) {
        self.files
            .retain(|path, t| keep(path, t.version.size, t.version.mtime));
    }

    /// Number of unfinished files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no file is unfinished.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The file's current content, one line per unfinished file, sorted by path.
    pub fn snapshot(&self) -> String {
        let mut paths: Vec<&String> = self.files.keys().collect();
        paths.sort();
        let mut text = String::new();
        for path in paths {
            let t = &self.files[path];
            let line = Line {
                path: path.clone(),
                version: t.version.clone(),
                acked: t.acked_now(),
            };
            // A plain struct of strings and numbers always serialises.
            if let Ok(json) = serde_json::to_string(&line) {
                text.push_str(&json);
                text.push('\n');
            }
        }
        text
    }

    /// Writes a snapshot if it differs from the one on disk.
    pub fn save(&mut self) -> io::Result<()> {
        let text = self.snapshot();
        if text == self.saved {
            return Ok(());
        }
        write_atomically(&self.path, text.as_bytes())?;
        self.saved = text;
        Ok(())
    }
}

/// The version record of a file about to be sent.
pub fn version(
    size: u64,
    mtime: f64,
    file_hash: &Sha512Digest,
    chunk_size: u64,
    n_chunks: u64,
) -> Version {
    Version {
        size,
        mtime,
        sha512: to_hex(file_hash),
        chunk_size,
        n_chunks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::sha512;

    const PROGRESS_FILE: &str = "in_progress.jsonl";

    #[test]
    fn acknowledged_ranges_survive_a_reopen_and_only_matching_versions_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROGRESS_FILE);
        let hash = sha512(b"content");
        let mut progress = ResumeState::open(&path).unwrap();
        let delivery = FileDelivery::new();
        let mut earlier = RangeSet::new();
        earlier.insert_range(0, 10);
        progress.begin(
            "a/big.raw",
            version(1000, 1.5, &hash, 16, 63),
            earlier,
            Arc::clone(&delivery),
        );
        progress.begin(
            "gone",
            version(1, 2.0, &hash, 16, 1),
            RangeSet::new(),
            FileDelivery::new(),
        );
        progress.save().unwrap();
        drop(progress);

        let mut progress = ResumeState::open(&path).unwrap();
        assert_eq!(progress.len(), 2);
        let point = progress.resume_point("a/big.raw", 1000, 1.5, 16).unwrap();
        assert_eq!(point.file_hash, hash);
        assert_eq!(point.acked.missing(63), [(10, 63)]);
        // Changed size, mtime or chunk size: a new version, sent whole.
        assert!(progress.resume_point("a/big.raw", 1001, 1.5, 16).is_none());
        assert!(progress.resume_point("a/big.raw", 1000, 1.6, 16).is_none());
        assert!(progress.resume_point("a/big.raw", 1000, 1.5, 32).is_none());
        progress.retain(|p, _, _| p != "gone");
        progress.forget("a/big.raw");
        progress.save().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn a_torn_or_garbage_line_only_loses_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROGRESS_FILE);
        let good = format!(
            "{{\"path\":\"x\",\"size\":5,\"mtime\":1.0,\"sha512\":\"{}\",\"chunk_size\":4,\"n_chunks\":2,\"acked\":[[0,1]]}}\n",
            to_hex(&sha512(b"hello"))
        );
        std::fs::write(&path, format!("{good}{{\"path\":\"y\",\"si")).unwrap();
        std::fs::write(tmp_path(&path), "half a save").unwrap();
        let progress = ResumeState::open(&path).unwrap();
        assert_eq!(progress.len(), 1);
        assert!(progress.resume_point("x", 5, 1.0, 4).is_some());
        assert!(!tmp_path(&path).exists());
    }
}
