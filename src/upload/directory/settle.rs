//! When a file is ready: either its last writer closed it (a close event), nobody else holds
//! it open for writing and it has not changed since ([`Settler::note_closed`]): it is ready at
//! once; or, the fallback for files with no close event (network shares, polling, macOS,
//! writers that close and reopen), its size and mtime have stayed the same for the settle
//! time and (see [`super::open_files`]) no process holds it open for writing. Either way a file
//! an instrument is still writing is not sent early.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::open_files::FileId;
use super::scan::Seen;

/// A file waiting to settle.
#[derive(Debug, Clone)]
struct Candidate {
    path: PathBuf,
    size: u64,
    mtime: f64,
    id: FileId,
    /// When (size, mtime, identity) last changed, as far as we observed.
    stable_since: Instant,
    /// Whether "held open for writing" was already reported for it.
    reported_open: bool,
    /// Closed by its last writer, nobody writing it, unchanged since: ready now.
    closed: bool,
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
    /// (device, inode).
    pub id: FileId,
    /// Ready because it was closed (nobody held it open for writing then), not because it
    /// settled: no further open-for-writing check is needed.
    pub closed: bool,
}

/// Files seen changing, by relative path.
#[derive(Debug, Default)]
pub struct Settler {
    candidates: HashMap<String, Candidate>,
}

impl Settler {
    /// Records an observation at `now`. A changed size, mtime or identity (replaced by a
    /// rename) restarts its settle clock.
    pub fn observe(&mut self, seen: Seen, now: Instant) {
        match self.candidates.get_mut(&seen.relative) {
            Some(c) if c.size == seen.size && c.mtime == seen.mtime && c.id == seen.id => {}
            Some(c) => {
                c.size = seen.size;
                c.mtime = seen.mtime;
                c.id = seen.id;
                c.stable_since = now;
                c.closed = false;
            }
            None => {
                self.candidates.insert(
                    seen.relative,
                    Candidate {
                        path: seen.path,
                        size: seen.size,
                        mtime: seen.mtime,
                        id: seen.id,
                        stable_since: now,
                        reported_open: false,
                        closed: false,
                    },
                );
            }
        }
    }

    /// Notes that `relative`'s last writer closed it and nobody holds it open for writing, as
    /// it was when `seen`: ready at once, unless it changed since it was last observed. True
    /// when that made it ready.
    pub fn note_closed(&mut self, seen: &Seen) -> bool {
        match self.candidates.get_mut(&seen.relative) {
            Some(c) if c.size == seen.size && c.mtime == seen.mtime && c.id == seen.id => {
                c.closed = true;
                true
            }
            _ => false,
        }
    }

    /// Notes that `relative` is held open for writing; true the first time (to report it once).
    pub fn note_open(&mut self, relative: &str) -> bool {
        self.candidates
            .get_mut(relative)
            .is_some_and(|c| !std::mem::replace(&mut c.reported_open, true))
    }

    /// Forgets `relative` (deleted, sent, or no longer wanted).
    pub fn remove(&mut self, relative: &str) {
        self.candidates.remove(relative);
    }

    /// True when `relative` waits to be ready.
    pub fn contains(&self, relative: &str) -> bool {
        self.candidates.contains_key(relative)
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

    /// Files closed, or unchanged for `settle` as of `now`, oldest first; they stay candidates
    /// until the caller removes them (when it managed to queue them).
    pub fn settled(&self, settle: Duration, now: Instant) -> Vec<Ready> {
        let mut ready: Vec<(&String, &Candidate)> = self
            .candidates
            .iter()
            .filter(|(_, c)| c.closed || now.saturating_duration_since(c.stable_since) >= settle)
            .collect();
        ready.sort_by_key(|(_, c)| c.stable_since);
        ready
            .into_iter()
            .map(|(rel, c)| Ready {
                relative: rel.clone(),
                path: c.path.clone(),
                size: c.size,
                mtime: c.mtime,
                id: c.id,
                closed: c.closed,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(size: u64) -> Seen {
        Seen {
            relative: "a".into(),
            path: "a".into(),
            size,
            mtime: 1.0,
            id: (1, 1),
        }
    }

    #[test]
    fn a_change_restarts_the_clock() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(3);
        let mut s = Settler::default();
        s.observe(seen(1), t0);
        assert!(s.settled(settle, t0 + Duration::from_secs(2)).is_empty());
        s.observe(seen(2), t0 + Duration::from_secs(2));
        assert!(s.settled(settle, t0 + Duration::from_secs(4)).is_empty());
        s.observe(seen(2), t0 + Duration::from_secs(4));
        let ready = s.settled(settle, t0 + Duration::from_secs(5));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].size, 2);
        assert!(!ready[0].closed);
    }

    #[test]
    fn a_closed_file_is_ready_at_once_unless_it_changed_since() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(3);
        let mut s = Settler::default();
        s.observe(seen(5), t0);
        // Closed as it was seen: ready now, not in 3 s.
        assert!(s.note_closed(&seen(5)));
        let ready = s.settled(settle, t0);
        assert_eq!(ready.len(), 1);
        assert!(ready[0].closed);
        // Written again: back to the settle rule.
        s.observe(seen(6), t0 + Duration::from_millis(1));
        assert!(s.settled(settle, t0 + Duration::from_secs(1)).is_empty());
        // A close that reports another size than the last observation does not count.
        assert!(!s.note_closed(&seen(7)));
        assert!(s.settled(settle, t0 + Duration::from_secs(1)).is_empty());
    }
}
