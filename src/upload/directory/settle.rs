//! When a file is ready: either its last writer closed it (a close event), nobody else holds
//! it open for writing and it has not changed since ([`Settler::note_closed`]): it is ready at
//! once; or, the fallback for files with no close event (network shares, polling, macOS,
//! writers that close and reopen), its size and mtime have stayed the same for the settle
//! time and (see [`super::open_files`]) no process holds it open for writing. Either way a file
//! an instrument is still writing is not sent early.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::open_files::FileId;
use super::scan::Seen;

/// A file waiting to be ready.
#[derive(Debug, Clone)]
struct Candidate {
    path: PathBuf,
    size: u64,
    mtime: f64,
    id: FileId,
    /// When it is (or was) ready: the settle time after its last observed change, or when its
    /// writer closed it, whichever comes first.
    ready_at: Instant,
    /// Whether "held open for writing" was already reported for it.
    reported_open: bool,
    /// Closed by its last writer, nobody writing it, unchanged since: ready at once.
    closed: bool,
}

/// A file ready to upload.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Path relative to the watched folder.
    pub relative: String,
    /// Full path.
    pub path: PathBuf,
    /// Size when it became ready.
    pub size: u64,
    /// Mtime when it became ready.
    pub mtime: f64,
    /// (device, inode).
    pub id: FileId,
    /// Ready because it was closed (nobody held it open for writing then), not because it
    /// settled: no further open-for-writing check is needed.
    pub closed: bool,
    /// When it became ready (closed, or settled): where its close-to-acknowledged time starts.
    pub ready_at: Instant,
}

/// Files seen changing, by relative path, indexed by when they are ready, so that finding the
/// ready ones costs what they are, not what waits (a burst of 20,000 files is looked at many
/// times a second).
#[derive(Debug)]
pub struct Settler {
    /// How long a file must stay unchanged when no close says it is done.
    settle: Duration,
    candidates: HashMap<String, Candidate>,
    /// (ready_at, relative) of every candidate.
    by_ready_at: BTreeSet<(Instant, String)>,
}

impl Settler {
    /// A settler with `settle` as the settle time.
    pub fn new(settle: Duration) -> Self {
        Self {
            settle,
            candidates: HashMap::new(),
            by_ready_at: BTreeSet::new(),
        }
    }

    /// Records an observation at `now`. A changed size, mtime or identity (replaced by a
    /// rename) restarts its settle clock and forgets an earlier close.
    pub fn observe(&mut self, seen: Seen, now: Instant) {
        let ready_at = now + self.settle;
        match self.candidates.get_mut(&seen.relative) {
            Some(c) if c.size == seen.size && c.mtime == seen.mtime && c.id == seen.id => {}
            Some(c) => {
                self.by_ready_at
                    .remove(&(c.ready_at, seen.relative.clone()));
                c.size = seen.size;
                c.mtime = seen.mtime;
                c.id = seen.id;
                c.ready_at = ready_at;
                c.closed = false;
                self.by_ready_at.insert((ready_at, seen.relative));
            }
            None => {
                self.by_ready_at.insert((ready_at, seen.relative.clone()));
                self.candidates.insert(
                    seen.relative,
                    Candidate {
                        path: seen.path,
                        size: seen.size,
                        mtime: seen.mtime,
                        id: seen.id,
                        ready_at,
                        reported_open: false,
                        closed: false,
                    },
                );
            }
        }
    }

    /// Notes that `seen.relative`'s last writer closed it at `now` and nobody holds it open
    /// for writing: ready at once, unless it changed since it was last observed. True when
    /// that made it ready.
    pub fn note_closed(&mut self, seen: &Seen, now: Instant) -> bool {
        match self.candidates.get_mut(&seen.relative) {
            Some(c) if c.size == seen.size && c.mtime == seen.mtime && c.id == seen.id => {
                c.closed = true;
                if now < c.ready_at {
                    self.by_ready_at
                        .remove(&(c.ready_at, seen.relative.clone()));
                    c.ready_at = now;
                    self.by_ready_at.insert((now, seen.relative.clone()));
                }
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
        if let Some(c) = self.candidates.remove(relative) {
            self.by_ready_at.remove(&(c.ready_at, relative.to_string()));
        }
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

    /// Full paths of the files still settling at `now` (not yet ready), for the caller to
    /// stat again: a change that no event reported restarts their clock. Ready files need no
    /// second look: the worker checks size and mtime again when it opens one.
    pub fn settling(&self, now: Instant) -> Vec<(String, PathBuf)> {
        self.by_ready_at
            .range((now, String::new())..)
            .filter(|(at, _)| *at > now)
            .filter_map(|(_, rel)| Some((rel.clone(), self.candidates.get(rel)?.path.clone())))
            .collect()
    }

    /// Up to `limit` files ready at `now`, the earliest ready first, after skipping the first
    /// `skip`; they stay candidates until the caller removes them (when it managed to queue
    /// them).
    pub fn ready(&self, now: Instant, skip: usize, limit: usize) -> Vec<Ready> {
        self.by_ready_at
            .iter()
            .take_while(|(at, _)| *at <= now)
            .skip(skip)
            .take(limit)
            .filter_map(|(at, rel)| {
                let c = self.candidates.get(rel)?;
                Some(Ready {
                    ready_at: *at,
                    relative: rel.clone(),
                    path: c.path.clone(),
                    size: c.size,
                    mtime: c.mtime,
                    id: c.id,
                    closed: c.closed,
                })
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
        let mut s = Settler::new(Duration::from_secs(3));
        s.observe(seen(1), t0);
        assert!(s.ready(t0 + Duration::from_secs(2), 0, 10).is_empty());
        assert_eq!(s.settling(t0 + Duration::from_secs(2)).len(), 1);
        s.observe(seen(2), t0 + Duration::from_secs(2));
        assert!(s.ready(t0 + Duration::from_secs(4), 0, 10).is_empty());
        s.observe(seen(2), t0 + Duration::from_secs(4));
        let ready = s.ready(t0 + Duration::from_secs(5), 0, 10);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].size, 2);
        assert!(!ready[0].closed);
        // Ready files are not stat'ed again.
        assert!(s.settling(t0 + Duration::from_secs(5)).is_empty());
        s.remove("a");
        assert!(s.is_empty() && s.ready(t0 + Duration::from_secs(9), 0, 10).is_empty());
    }

    #[test]
    fn the_earliest_ready_come_first_and_at_most_the_limit() {
        let t0 = Instant::now();
        let mut s = Settler::new(Duration::from_secs(1));
        for i in 0..5u64 {
            let mut f = seen(1);
            f.relative = format!("f{i}");
            s.observe(f, t0 + Duration::from_millis(10 * (5 - i)));
        }
        let ready = s.ready(t0 + Duration::from_secs(2), 0, 3);
        let names: Vec<&str> = ready.iter().map(|r| r.relative.as_str()).collect();
        assert_eq!(names, ["f4", "f3", "f2"]);
    }

    #[test]
    fn a_closed_file_is_ready_at_once_unless_it_changed_since() {
        let t0 = Instant::now();
        let mut s = Settler::new(Duration::from_secs(3));
        s.observe(seen(5), t0);
        // Closed as it was seen: ready now, not in 3 s.
        assert!(s.note_closed(&seen(5), t0));
        let ready = s.ready(t0, 0, 10);
        assert_eq!(ready.len(), 1);
        assert!(ready[0].closed);
        // Written again: back to the settle rule.
        s.observe(seen(6), t0 + Duration::from_millis(1));
        assert!(s.ready(t0 + Duration::from_secs(1), 0, 10).is_empty());
        // A close that reports another size than the last observation does not count.
        assert!(!s.note_closed(&seen(7), t0 + Duration::from_secs(1)));
        assert!(s.ready(t0 + Duration::from_secs(1), 0, 10).is_empty());
    }
}
