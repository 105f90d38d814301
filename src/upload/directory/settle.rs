//! The settle rule: a file is ready once its size and mtime have stayed the same for the
//! settle time, so a file an instrument is still writing is not sent early.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A file waiting to settle.
#[derive(Debug, Clone)]
struct Candidate {
    path: PathBuf,
    size: u64,
    mtime: f64,
    /// When (size, mtime) last changed, as far as we observed.
    stable_since: Instant,
}

/// A settled file, ready to upload.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Path relative to the watched folder.
    pub relative: String,
    /// Full path.
    pub path: PathBuf,
    /// Size when it settled.
    pub size: u64,
    /// Mtime when it settled.
    pub mtime: f64,
}

/// Files seen changing, by relative path.
#[derive(Debug, Default)]
pub struct Settler {
    candidates: HashMap<String, Candidate>,
}

impl Settler {
    /// Records an observation of `relative` at `now`. A changed size or mtime restarts its
    /// settle clock.
    pub fn observe(&mut self, relative: &str, path: PathBuf, size: u64, mtime: f64, now: Instant) {
        match self.candidates.get_mut(relative) {
            Some(c) if c.size == size && c.mtime == mtime => {}
            Some(c) => {
                c.size = size;
                c.mtime = mtime;
                c.stable_since = now;
            }
            None => {
                self.candidates.insert(
                    relative.to_string(),
                    Candidate {
                        path,
                        size,
                        mtime,
                        stable_since: now,
                    },
                );
            }
        }
    }

    /// Forgets `relative` (deleted, sent, or no longer wanted).
    pub fn remove(&mut self, relative: &str) {
        self.candidates.remove(relative);
    }

    /// Number of files waiting.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Full paths of the waiting files, for the caller to stat again.
    pub fn waiting(&self) -> Vec<(String, PathBuf)> {
        self.candidates
            .iter()
            .map(|(rel, c)| (rel.clone(), c.path.clone()))
            .collect()
    }

    /// Files unchanged for `settle` as of `now`, oldest first; they stay candidates until the
    /// caller removes them (when it managed to queue them).
    pub fn settled(&self, settle: Duration, now: Instant) -> Vec<Ready> {
        let mut ready: Vec<(&String, &Candidate)> = self
            .candidates
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.stable_since) >= settle)
            .collect();
        ready.sort_by_key(|(_, c)| c.stable_since);
        ready
            .into_iter()
            .map(|(rel, c)| Ready {
                relative: rel.clone(),
                path: c.path.clone(),
                size: c.size,
                mtime: c.mtime,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_restarts_the_clock() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(3);
        let mut s = Settler::default();
        s.observe("a", "a".into(), 1, 1.0, t0);
        assert!(s.settled(settle, t0 + Duration::from_secs(2)).is_empty());
        s.observe("a", "a".into(), 2, 1.0, t0 + Duration::from_secs(2));
        assert!(s.settled(settle, t0 + Duration::from_secs(4)).is_empty());
        s.observe("a", "a".into(), 2, 1.0, t0 + Duration::from_secs(4));
        let ready = s.settled(settle, t0 + Duration::from_secs(5));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].size, 2);
    }
}
