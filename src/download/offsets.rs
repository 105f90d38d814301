//! Which offsets the downloader may commit.
//!
//! A chunk that is durable in this folder's staging area is safe for *this* folder: a restart
//! resumes the partial file from staging. It is not safe for the consumer group: when another
//! member (with its own output folder) takes the partition over, it starts at the committed
//! offset and never sees the chunks before it. So, per partition, the committed offset never
//! passes the first chunk of a file that is not yet whole here: it is the smaller of "after the
//! last message handled" and the first offset of every unfinished file's chunks in that
//! partition (its *pin*).
//!
//! The price is that a restart re-reads the chunks of unfinished files; they are recognised as
//! already staged and skipped. A file that stops receiving chunks (its uploader gave up, or a
//! hostile message announced chunks that never come) would pin its partition for ever, so a
//! pin is released once the file got no chunk for [`STALE_PIN_AFTER`]; its staged bytes stay
//! and it still completes here if the rest arrives.
//!
//! Why the pin never needs to be persisted: every message between the committed offset and the
//! last handled one was handled in this run (the writer handles each partition in order), and
//! chunks are pinned whether they are new or already staged, so after a restart the re-read
//! restores the pins before any commit could pass them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::warn;

/// A file that received no chunk for this long stops holding back its partitions' commits.
pub const STALE_PIN_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The file a handled chunk belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFile {
    /// Staging id of the file version.
    pub id: String,
    /// Relative path, for messages.
    pub relative: String,
}

/// First and last offsets of an unfinished file's chunks, per partition.
struct Pin {
    relative: String,
    first_offset: HashMap<i32, i64>,
    last_offset: HashMap<i32, i64>,
    last_chunk_at: Instant,
    /// Reported as missing chunks (see [`CommitTracker::newly_stalled`]).
    reported: bool,
}

/// An unfinished file whose missing chunks are behind messages already read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    /// Staging id.
    pub id: String,
    /// Relative path.
    pub relative: String,
    /// How long since its last chunk.
    pub idle: Duration,
}

/// Tracks handled offsets and unfinished files; yields what may be committed.
#[derive(Default)]
pub struct CommitTracker {
    /// Per partition, the offset after the last message handled.
    next: HashMap<i32, i64>,
    /// Unfinished files by staging id.
    pins: HashMap<String, Pin>,
    /// What was last handed out per partition, so unchanged offsets are not stored again.
    last_committable: HashMap<i32, i64>,
}

impl CommitTracker {
    /// Records that the message at `partition`/`offset` was handled (written, skipped or kept
    /// aside). Messages of one partition arrive in order.
    pub fn handled(&mut self, partition: i32, offset: i64) {
        let next = self.next.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// The message at `partition`/`offset` is a chunk of `file`, which is not yet whole here.
    pub fn unfinished(&mut self, file: &ChunkFile, partition: i32, offset: i64) {
        self.unfinished_at(file, partition, offset, Instant::now());
    }

    fn unfinished_at(&mut self, file: &ChunkFile, partition: i32, offset: i64, now: Instant) {
        let pin = self.pins.entry(file.id.clone()).or_insert_with(|| Pin {
            relative: file.relative.clone(),
            first_offset: HashMap::new(),
            last_offset: HashMap::new(),
            last_chunk_at: now,
            reported: false,
        });
        pin.last_chunk_at = now;
        let first = pin.first_offset.entry(partition).or_insert(offset);
        *first = (*first).min(offset);
        let last = pin.last_offset.entry(partition).or_insert(offset);
        *last = (*last).max(offset);
    }

    /// Unfinished files not reported yet whose partition has moved past their last chunk and
    /// that got no chunk for `after`: their missing chunks are behind messages already read, so
    /// they will not come (a broker that lost acknowledged messages, or an uploader that gave
    /// up). Each is returned once; [`CommitTracker::finished`] says whether it had been.
    pub fn newly_stalled(&mut self, after: Duration) -> Vec<Stalled> {
        self.newly_stalled_at(after, Instant::now())
    }

    fn newly_stalled_at(&mut self, after: Duration, now: Instant) -> Vec<Stalled> {
        let mut out = Vec::new();
        for (id, pin) in &mut self.pins {
            let idle = now.saturating_duration_since(pin.last_chunk_at);
            let passed = pin
                .last_offset
                .iter()
                .any(|(p, &last)| self.next.get(p).is_some_and(|&next| next > last + 1));
            if !pin.reported && passed && idle >= after {
                pin.reported = true;
                out.push(Stalled {
                    id: id.clone(),
                    relative: pin.relative.clone(),
                    idle,
                });
            }
        }
        out
    }

    /// The file with staging id `id` is whole here (published, set aside as failed, or rebuilt
    /// earlier): it no longer holds back any partition. True when it had been reported as
    /// stalled.
    pub fn finished(&mut self, id: &str) -> bool {
        self.pins.remove(id).is_some_and(|pin| pin.reported)
    }

    /// Per partition, the next offset to commit, for the partitions whose value changed since
    /// the last call. Call only once everything handled so far is durable.
    pub fn committable(&mut self) -> HashMap<i32, i64> {
        self.committable_at(Instant::now())
    }

    fn committable_at(&mut self, now: Instant) -> HashMap<i32, i64> {
        self.release_stale_pins(now);
        let mut offsets = self.next.clone();
        for pin in self.pins.values() {
            for (partition, &first) in &pin.first_offset {
                if let Some(o) = offsets.get_mut(partition) {
                    *o = (*o).min(first);
                }
            }
        }
        offsets.retain(|partition, offset| {
            let changed = self.last_committable.get(partition) != Some(offset);
            if changed {
                self.last_committable.insert(*partition, *offset);
            }
            changed
        });
        offsets
    }

    fn release_stale_pins(&mut self, now: Instant) {
        self.pins.retain(|_, pin| {
            let idle = now.saturating_duration_since(pin.last_chunk_at);
            if idle < STALE_PIN_AFTER {
                return true;
            }
            warn!(
                path = %pin.relative,
                idle_hours = idle.as_secs() / 3600,
                "file still incomplete after a day without new chunks: offsets are committed past its first chunks now (its staged part is kept; it still completes here if the rest arrives, but another group member taking over would not have its beginning)"
            );
            false
        });
    }

    /// Number of unfinished files holding back commits (for tests and status).
    pub fn pinned_files(&self) -> usize {
        self.pins.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str) -> ChunkFile {
        ChunkFile {
            id: id.into(),
            relative: format!("{id}.bin"),
        }
    }

    fn chunk(t: &mut CommitTracker, f: &ChunkFile, partition: i32, offset: i64) {
        t.handled(partition, offset);
        t.unfinished(f, partition, offset);
    }

    #[test]
    fn a_file_is_stalled_once_its_partition_moved_past_it_and_it_waited() {
        let mut t = CommitTracker::default();
        let now = Instant::now();
        let (a, b) = (file("a"), file("b"));
        t.handled(0, 10);
        t.unfinished_at(&a, 0, 10, now);
        // Nothing after a's last chunk yet: a may simply be arriving.
        assert!(t
            .newly_stalled_at(Duration::from_secs(5), now + Duration::from_secs(60))
            .is_empty());
        // b's chunks come after it, and a gets nothing for 5 s: a's missing chunks were skipped.
        t.handled(0, 11);
        t.unfinished_at(&b, 0, 11, now + Duration::from_secs(1));
        assert!(t
            .newly_stalled_at(Duration::from_secs(5), now + Duration::from_secs(3))
            .is_empty());
        let stalled = t.newly_stalled_at(Duration::from_secs(5), now + Duration::from_secs(6));
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].relative, "a.bin");
        // Reported once; b is the partition's last file and is not stalled.
        assert!(t
            .newly_stalled_at(Duration::from_secs(5), now + Duration::from_secs(60))
            .is_empty());
        assert!(t.finished("a"));
        assert!(!t.finished("b"));
    }

    #[test]
    fn commit_stops_at_the_first_chunk_of_an_unfinished_file() {
        let mut t = CommitTracker::default();
        let (a, b) = (file("a"), file("b"));
        t.handled(0, 10); // a rejected message
        chunk(&mut t, &a, 0, 11);
        chunk(&mut t, &b, 0, 12);
        chunk(&mut t, &a, 0, 13);
        assert_eq!(t.committable(), HashMap::from([(0, 11)]));
        // Nothing changed: nothing to store again.
        assert!(t.committable().is_empty());
        t.handled(0, 14);
        t.finished(&a.id); // its last chunk was at 14
        assert_eq!(t.committable(), HashMap::from([(0, 12)]));
        t.handled(0, 15);
        t.finished(&b.id);
        assert_eq!(t.committable(), HashMap::from([(0, 16)]));
        assert_eq!(t.pinned_files(), 0);
    }

    #[test]
    fn pins_are_per_partition_and_redelivered_chunks_move_them_back() {
        let mut t = CommitTracker::default();
        let a = file("a");
        // A file whose chunks a foreign producer spread over two partitions.
        t.handled(1, 5);
        chunk(&mut t, &a, 0, 7);
        chunk(&mut t, &a, 1, 6);
        t.handled(1, 8);
        assert_eq!(t.committable(), HashMap::from([(0, 7), (1, 6)]));
        // After a rebalance the partition is read again from an earlier offset: the earlier
        // (already staged) chunk lowers the pin; the commit never moves past it.
        chunk(&mut t, &a, 0, 3);
        assert_eq!(t.committable(), HashMap::from([(0, 3)]));
        t.handled(1, 9);
        t.finished(&a.id);
        assert_eq!(t.committable(), HashMap::from([(0, 8), (1, 10)]));
    }

    #[test]
    fn a_file_without_chunks_for_a_day_stops_holding_back_the_partition() {
        let mut t = CommitTracker::default();
        let (a, b) = (file("abandoned"), file("active"));
        let start = Instant::now();
        for (f, offset) in [(&a, 0), (&b, 1)] {
            t.handled(0, offset);
            t.unfinished_at(f, 0, offset, start);
        }
        assert_eq!(t.committable_at(start), HashMap::from([(0, 0)]));
        let later = start + STALE_PIN_AFTER - Duration::from_secs(60);
        t.handled(0, 2);
        t.unfinished_at(&b, 0, 2, later);
        let a_day_on = start + STALE_PIN_AFTER;
        assert_eq!(t.committable_at(a_day_on), HashMap::from([(0, 1)]));
        assert_eq!(
            t.pinned_files(),
            1,
            "the active file still holds its partition"
        );
    }
}
