//! Staging: turns verified chunks into complete, verified files. Chunks go into staging files
//! under `.openmsi/staging/` ([`super::partial`]); a complete file whose whole-file SHA-512
//! matches is handed to the [`Publisher`] at the next [`ChunkSink::flush`], which first makes
//! everything written so far durable. Only after a flush may the pipeline commit the offsets of
//! the chunks it handed in. This is the output folder's [`ChunkSink`].

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::info;

use super::partial::{PartialFile, Recovered};
use super::publish::{DeliveryControl, Publisher, ReadyFile};
use super::stats::DownloadStats;
use crate::chunk::hash::from_hex;
use crate::contract::FileVersion;
use crate::contract::MessagePosition;
use crate::contract::{Accepted, ChunkSink, PublishedFile, VerifiedChunk};
use crate::progress::{Activity, Counters, TaskProgress, Ticket};
use crate::state::{annotate, StateDir};

/// Above this many files in progress, idle staging files are closed so that a stream
/// interleaving thousands of files cannot exhaust file descriptors.
const MAX_OPEN_STAGING_FILES: usize = 256;

/// The reassembly state of one output folder.
pub struct Reassembler {
    /// `.openmsi/staging/`.
    staging_dir: PathBuf,
    /// Files with chunks staged, not yet whole, by staging id.
    partials: HashMap<String, PartialFile>,
    /// Whole and verified, waiting for the next flush to be published.
    ready: Vec<ReadyFile>,
    /// Staging ids of `ready` (a late duplicate chunk of one of them is a duplicate).
    ready_ids: HashSet<String>,
    /// Relative paths of `ready`: a version waiting to be published will replace whatever is
    /// in place, so what is in place no longer counts as published for those paths.
    ready_paths: HashSet<String>,
    /// Unverified versions being received (Knot parts without `file-sha512`), by path and
    /// part count: the staging id of the one parts of that file now go to.
    unverified_runs: HashMap<(String, u64), String>,
    /// Puts verified files in place and remembers what was published.
    publisher: Publisher,
    stats: Arc<DownloadStats>,
    /// Chunk bytes written since the last flush.
    unflushed_bytes: u64,
    /// True when something (data, a completion) awaits a flush.
    unflushed: bool,
    /// Where files of several chunks show while they arrive (None: not shown).
    activity: Option<Arc<Activity>>,
    /// The files shown, by staging id: their place in the display and their counters.
    shown: HashMap<String, (Ticket, Arc<Counters>)>,
}

impl Reassembler {
    /// Opens the state of `output_dir` (creating it) and resumes staged files.
    pub fn open(
        output_dir: &Path,
        state: &StateDir,
        stats: Arc<DownloadStats>,
        control: DeliveryControl,
    ) -> io::Result<Self> {
        fs::create_dir_all(output_dir).map_err(|e| annotate(e, output_dir))?;
        let staging_dir = state.staging();
        fs::create_dir_all(&staging_dir).map_err(|e| annotate(e, &staging_dir))?;
        let publisher = Publisher::open(output_dir, state, Arc::clone(&stats), control)?;
        let mut me = Self {
            staging_dir,
            partials: HashMap::new(),
            ready: Vec::new(),
            ready_ids: HashSet::new(),
            ready_paths: HashSet::new(),
            unverified_runs: HashMap::new(),
            publisher,
            stats,
            unflushed_bytes: 0,
            unflushed: false,
            activity: None,
            shown: HashMap::new(),
        };
        me.recover()?;
        Ok(me)
    }

    /// The sink takes every published file elsewhere and removes it from the output folder
    /// ([`Publisher::treat_output_as_transient`]).
    pub fn treat_output_as_transient(&mut self) {
        self.publisher.treat_output_as_transient();
    }

    /// Shows files of several chunks in `activity` while they arrive.
    pub fn show_progress(&mut self, activity: Arc<Activity>) {
        self.activity = Some(activity);
    }

    /// Counts `len` more bytes of chunk `chunk_i` of `n_total` (at `offset`) for the display.
    /// The total is an estimate (chunks × this chunk's size) until the last chunk says it.
    fn count_shown(&mut self, id: &str, relative: &str, n_total: u64, chunk: (u64, u64, u64)) {
        let Some(activity) = &self.activity else {
            return;
        };
        let (chunk_i, offset, len) = chunk;
        if n_total < 2 {
            return;
        }
        let (_, counters) = self.shown.entry(id.to_string()).or_insert_with(|| {
            let counters = Arc::new(Counters::default());
            counters.total.store(n_total * len, Ordering::Relaxed);
            let ticket = activity.begin(relative, Arc::clone(&counters) as Arc<dyn TaskProgress>);
            (ticket, counters)
        });
        counters.done.fetch_add(len, Ordering::Relaxed);
        if chunk_i == n_total {
            counters.total.store(offset + len, Ordering::Relaxed);
        }
    }

    /// Reloads staging files left by an earlier run.
    fn recover(&mut self) -> io::Result<()> {
        let mut records = Vec::new();
        let mut datas = Vec::new();
        for entry in fs::read_dir(&self.staging_dir).map_err(|e| annotate(e, &self.staging_dir))? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("chunks") => records.push(path),
                Some("part") => datas.push(path),
                _ => {}
            }
        }
        let mut published_before_crash = Vec::new();
        for record in records {
            match PartialFile::recover(&record)? {
                Recovered::Partial(partial) => {
                    let partial = *partial;
                    self.stats
                        .files_in_progress
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let id = partial.version.id();
                    if partial.version.is_unverified() {
                        self.unverified_runs
                            .insert(run_key(&partial.version), id.clone());
                    }
                    if partial.is_complete() {
                        self.finish(id, partial, None)?;
                    } else {
                        self.partials.insert(id, partial);
                    }
                }
                Recovered::AlreadyPublished(version, completed_by) => {
                    // Renamed into place just before a crash: make sure the log knows.
                    published_before_crash.push((version, completed_by));
                    let _ = fs::remove_file(&record);
                }
                Recovered::Unusable => {
                    let _ = fs::remove_file(record.with_extension("part"));
                    let _ = fs::remove_file(&record);
                }
            }
        }
        self.publisher
            .note_published_before_crash(&published_before_crash)?;
        // Data without a record was never recorded as durable: Kafka delivers it again.
        for data in datas {
            if !data.with_extension("chunks").exists() {
                let _ = fs::remove_file(&data);
            }
        }
        if !self.partials.is_empty() {
            info!(
                files = self.partials.len(),
                "resuming partially received files"
            );
        }
        Ok(())
    }

    /// A complete file: verify it and queue it for publishing, or set it aside.
    fn finish(
        &mut self,
        id: String,
        mut partial: PartialFile,
        completed_by: Option<MessagePosition>,
    ) -> io::Result<Accepted> {
        self.stats
            .files_in_progress
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.unflushed = true;
        let relative = &partial.version.relative;
        if completed_by.is_some_and(|at| self.publisher.is_superseded(relative, at)) {
            self.publisher.discard_superseded(partial);
            return Ok(Accepted::Superseded);
        }
        if !partial.verify()? {
            self.publisher.set_aside_mismatch(&id, partial)?;
            return Ok(Accepted::HashMismatch);
        }
        if let Some(at) = completed_by {
            partial.record_completion(at);
        }
        let path: PathBuf = partial.version.relative.split('/').collect();
        self.ready_ids.insert(id);
        self.ready_paths.insert(partial.version.relative.clone());
        self.ready.push(ReadyFile {
            partial,
            path,
            completed_by,
        });
        Ok(Accepted::Completed)
    }

    /// Syncs and closes every staging file's descriptor (they reopen on demand).
    fn close_staging_files(&mut self) -> io::Result<()> {
        for p in self.partials.values_mut() {
            p.sync_data()?;
            p.close();
        }
        Ok(())
    }

    /// True when a flush has work to do.
    #[cfg(test)]
    fn needs_flush(&self) -> bool {
        self.unflushed
    }
}

/// What tells unverified versions of one file apart while they are received.
fn run_key(version: &FileVersion) -> (String, u64) {
    (version.relative.clone(), version.n_total_chunks)
}

impl Reassembler {
    /// An unverified version (no whole-file hash: Knot parts without `file-sha512`) has no
    /// identity of its own, yet a newer version of the file must never be taken for the old
    /// one. Its parts go to the version of that path and part count being received, or start
    /// a new one named after this message; a part sent again replaces the earlier copy (the
    /// later one wins, as in Knot's own client). Read again after a restart, the parts
    /// rebuild the same content; a version older than the one in place is discarded as
    /// superseded, by position, like any other.
    fn assign_unverified_run(&mut self, chunk: &mut VerifiedChunk) {
        let key = run_key(&chunk.version);
        if let Some(partial) = self
            .unverified_runs
            .get(&key)
            .and_then(|id| self.partials.get(id))
        {
            chunk.version = partial.version.clone();
        } else {
            chunk.version.started_at = Some(chunk.message);
        }
        chunk.id = chunk.version.id();
        self.unverified_runs.insert(key, chunk.id.clone());
    }
}

impl ChunkSink for Reassembler {
    const DESTINATION: &'static str = "the output folder";

    fn accept(&mut self, chunk: &mut VerifiedChunk) -> io::Result<Accepted> {
        let unverified = chunk.version.is_unverified();
        if unverified {
            self.assign_unverified_run(chunk);
        }
        if self.ready_ids.contains(&chunk.id) {
            return Ok(Accepted::Duplicate);
        }
        let data = &chunk.payload[chunk.data.clone()];
        let partial = match self.partials.get_mut(&chunk.id) {
            Some(p) if p.has(chunk.chunk_i) && !unverified => return Ok(Accepted::Duplicate),
            Some(p) => p,
            None => {
                // A version of this path waiting for the flush replaces what is in place, so
                // this one must be staged even if it is the one in place now (it is newer
                // when it comes later in the partition; is_superseded sorts it out). An
                // unverified version cannot be compared with what is in place before it is
                // whole.
                if !unverified && !self.ready_paths.contains(&chunk.version.relative) {
                    let hash = from_hex(&chunk.version.file_hash)
                        .ok_or_else(|| io::Error::other("internal: bad hex hash"))?;
                    if self
                        .publisher
                        .is_published(&chunk.version.relative, &hash, &chunk.path)
                    {
                        return Ok(Accepted::AlreadyComplete);
                    }
                }
                if self.partials.len() >= MAX_OPEN_STAGING_FILES {
                    self.close_staging_files()?;
                }
                let p = PartialFile::create(&self.staging_dir, chunk.version.clone())?;
                self.stats
                    .files_in_progress
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.partials.entry(chunk.id.clone()).or_insert(p)
            }
        };
        if chunk.whole_file_checked {
            partial.write_checked_whole_file(data)?;
        } else {
            partial.write_chunk(chunk.chunk_i, chunk.offset, data)?;
        }
        DownloadStats::add(&self.stats.chunks_written, 1);
        DownloadStats::add(&self.stats.bytes_written, data.len() as u64);
        self.stats.active.mark();
        let (n_total, len) = (partial.version.n_total_chunks, data.len() as u64);
        let complete = partial.is_complete();
        self.unflushed_bytes += len;
        self.count_shown(
            &chunk.id,
            &chunk.version.relative,
            n_total,
            (chunk.chunk_i, chunk.offset, len),
        );
        self.unflushed = true;
        if !complete {
            return Ok(Accepted::Written);
        }
        self.shown.remove(&chunk.id);
        let Some(partial) = self.partials.remove(&chunk.id) else {
            return Ok(Accepted::Written);
        };
        if unverified {
            self.unverified_runs.remove(&run_key(&partial.version));
        }
        self.finish(chunk.id.clone(), partial, Some(chunk.message))
    }

    fn is_in_progress(&self, id: &str) -> bool {
        self.partials.contains_key(id)
    }

    fn missing_chunks(&self, id: &str) -> Option<String> {
        self.partials.get(id).map(PartialFile::missing_description)
    }

    fn unflushed_bytes(&self) -> u64 {
        self.unflushed_bytes
    }

    fn flush(&mut self) -> io::Result<Vec<PublishedFile>> {
        if !self.unflushed {
            return Ok(Vec::new());
        }
        for p in self.partials.values_mut() {
            p.sync_data()?;
        }
        let ready = std::mem::take(&mut self.ready);
        self.ready_ids.clear();
        self.ready_paths.clear();
        let published = self.publisher.publish_all(ready, &self.staging_dir)?;
        for p in self.partials.values_mut() {
            p.record_synced_chunks()?;
        }
        self.unflushed_bytes = 0;
        self.unflushed = false;
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::chunk::hash::sha512;
    use crate::chunk::hash::to_hex;
    use crate::contract::{FileVersion, PartLayout};
    use std::time::UNIX_EPOCH;

    impl Reassembler {
        /// `accept` of a copy, so a test can hand the same chunk in again.
        fn take(&mut self, chunk: &VerifiedChunk) -> io::Result<Accepted> {
            self.accept(&mut chunk.clone())
        }
    }

    fn relatives(published: Vec<PublishedFile>) -> Vec<String> {
        published.into_iter().map(|p| p.relative).collect()
    }

    fn chunks_of(relative: &str, content: &[u8], size: usize) -> Vec<VerifiedChunk> {
        let pieces: Vec<&[u8]> = if content.is_empty() {
            vec![&[][..]]
        } else {
            content.chunks(size).collect()
        };
        let version = FileVersion {
            relative: relative.into(),
            file_hash: to_hex(&sha512(content)),
            n_total_chunks: pieces.len() as u64,
            file_mtime: Some(1_600_000_000.5),
            layout: Default::default(),
            started_at: None,
        };
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| VerifiedChunk {
                id: version.id(),
                version: version.clone(),
                path: relative.split('/').collect(),
                chunk_i: i as u64 + 1,
                offset: (i * size) as u64,
                payload: piece.to_vec(),
                data: 0..piece.len(),
                key: None,
                headers: Vec::new(),
                message: MessagePosition {
                    partition: 0,
                    offset: i as i64,
                },
                whole_file_checked: false,
            })
            .collect()
    }

    /// The same chunks as if they came at `first_offset` onwards in partition 0.
    fn at_offset(mut chunks: Vec<VerifiedChunk>, first_offset: i64) -> Vec<VerifiedChunk> {
        for (i, c) in chunks.iter_mut().enumerate() {
            c.message.offset = first_offset + i as i64;
        }
        chunks
    }

    fn open(dir: &Path) -> Reassembler {
        Reassembler::open(
            dir,
            &StateDir::of(dir),
            Arc::new(DownloadStats::default()),
            DeliveryControl::default(),
        )
        .unwrap()
    }

    #[test]
    fn file_appears_only_after_flush_and_is_byte_identical() {
        let out = tempfile::tempdir().unwrap();
        let mut r = open(out.path());
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let chunks = chunks_of("a/b/x y.dat", &content, 4096);
        let target = out.path().join("a/b/x y.dat");
        assert_eq!(r.take(&chunks[2]).unwrap(), Accepted::Written);
        assert_eq!(r.take(&chunks[0]).unwrap(), Accepted::Written);
        assert_eq!(r.take(&chunks[0]).unwrap(), Accepted::Duplicate);
        assert_eq!(r.take(&chunks[1]).unwrap(), Accepted::Completed);
        assert!(!target.exists(), "visible before flush");
        assert_eq!(
            relatives(r.flush().unwrap()),
            vec!["a/b/x y.dat".to_string()]
        );
        assert_eq!(fs::read(&target).unwrap(), content);
        let mtime = fs::metadata(&target).unwrap().modified().unwrap();
        assert_eq!(
            mtime.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_600_000_000
        );
        // Redelivered tail after a restart is ignored, the file stays.
        drop(r);
        let mut r = open(out.path());
        assert_eq!(r.take(&chunks[2]).unwrap(), Accepted::AlreadyComplete);
        assert!(!r.needs_flush());
    }

    #[test]
    fn a_burst_of_files_published_in_one_flush_are_all_in_place_with_their_mtime() {
        let out = tempfile::tempdir().unwrap();
        let mut r = open(out.path());
        let files: Vec<(String, Vec<u8>)> = (0..20u8)
            .map(|i| (format!("d{}/f{i}.bin", i % 3), vec![i; 100 + i as usize]))
            .collect();
        for (rel, content) in &files {
            for c in chunks_of(rel, content, 64) {
                r.take(&c).unwrap();
            }
        }
        assert_eq!(r.flush().unwrap().len(), files.len());
        for (rel, content) in &files {
            let path = out.path().join(rel);
            assert_eq!(&fs::read(&path).unwrap(), content, "{rel}");
            let mtime = fs::metadata(&path).unwrap().modified().unwrap();
            assert_eq!(
                mtime.duration_since(UNIX_EPOCH).unwrap().as_secs(),
                1_600_000_000
            );
        }
        assert_eq!(
            fs::read_dir(out.path().join(".openmsi/staging"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_one_chunk_file_whose_hash_was_checked_is_published_without_hashing_again() {
        let out = tempfile::tempdir().unwrap();
        let mut r = open(out.path());
        let mut chunk = chunks_of("one.bin", b"one chunk", 64).remove(0);
        chunk.whole_file_checked = true;
        assert_eq!(r.take(&chunk).unwrap(), Accepted::Completed);
        r.flush().unwrap();
        assert_eq!(fs::read(out.path().join("one.bin")).unwrap(), b"one chunk");
    }

    #[test]
    fn empty_file_and_replacement_by_new_version() {
        let out = tempfile::tempdir().unwrap();
        let mut r = open(out.path());
        let empty = chunks_of("e", b"", 4096);
        assert_eq!(r.take(&empty[0]).unwrap(), Accepted::Completed);
        r.flush().unwrap();
        assert_eq!(fs::read(out.path().join("e")).unwrap(), b"");
        // Each upload later in the partition than the one before.
        for (content, first_offset) in [(&b"first version, long"[..], 10), (b"second", 20)] {
            for c in at_offset(chunks_of("v.txt", content, 4), first_offset) {
                r.take(&c).unwrap();
            }
            r.flush().unwrap();
            assert_eq!(fs::read(out.path().join("v.txt")).unwrap(), content);
        }
        // Going back to the first content is a new version again and is rebuilt.
        for c in at_offset(chunks_of("v.txt", b"first version, long", 4), 30) {
            r.take(&c).unwrap();
        }
        r.flush().unwrap();
        assert_eq!(
            fs::read(out.path().join("v.txt")).unwrap(),
            b"first version, long"
        );
    }

    #[test]
    fn an_older_version_read_again_does_not_replace_the_newer_one() {
        let out = tempfile::tempdir().unwrap();
        let mut r = open(out.path());
        let (v1, v2) = (&b"version one, long"[..], &b"version two"[..]);
        let target = out.path().join("v.txt");
        for c in at_offset(chunks_of("v.txt", v1, 4), 0) {
            r.take(&c).unwrap();
        }
        r.flush().unwrap();
        for c in at_offset(chunks_of("v.txt", v2, 4), 10) {
            r.take(&c).unwrap();
        }
        r.flush().unwrap();
        drop(r);
        // A restart reads v1 again (offsets waited at an unfinished file before it).
        let mut r = open(out.path());
        let again = at_offset(chunks_of("v.txt", v1, 4), 0);
        let outcomes: Vec<Accepted> = again.iter().map(|c| r.take(c).unwrap()).collect();
        assert_eq!(outcomes.last(), Some(&Accepted::Superseded));
        r.flush().unwrap();
        assert_eq!(fs::read(&target).unwrap(), v2);
        assert_eq!(
            fs::read_dir(out.path().join(".openmsi/staging"))
                .unwrap()
                .count(),
            0
        );
        // The same old content uploaded again later is a new version: it replaces v2.
        for c in at_offset(chunks_of("v.txt", v1, 4), 20) {
            r.take(&c).unwrap();
        }
        r.flush().unwrap();
        assert_eq!(fs::read(&target).unwrap(), v1);
    }

    /// The chaos test's lost file: v2 was renamed into place just before a crash (so the
    /// completed log learnt of it at start-up, without the message that completed it), and the
    /// restart reads v1 and then v2 again. v1 completes first and waits for the flush; v2's
    /// chunks must not be dropped as "already published" meanwhile, or v1 ends up in place.
    #[test]
    fn a_newer_version_read_while_an_older_one_waits_for_the_flush_ends_up_in_place() {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("m.tif");
        let (v1, v2) = (&b"version one, long"[..], &b"version two"[..]);
        let mut r = open(out.path());
        for c in at_offset(chunks_of("m.tif", v1, 4), 0) {
            r.take(&c).unwrap();
        }
        r.flush().unwrap();
        for c in at_offset(chunks_of("m.tif", v2, 4), 10) {
            r.take(&c).unwrap();
        }
        r.flush().unwrap();
        drop(r);
        // As note_published_before_crash records it: no completing message.
        let log = out.path().join(".openmsi/completed.jsonl");
        let text: String = fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("completed_by");
                format!("{v}\n")
            })
            .collect();
        fs::write(&log, text).unwrap();

        let mut r = open(out.path());
        for c in at_offset(chunks_of("m.tif", v1, 4), 0) {
            r.take(&c).unwrap();
        }
        let outcomes: Vec<Accepted> = at_offset(chunks_of("m.tif", v2, 4), 10)
            .iter()
            .map(|c| r.take(c).unwrap())
            .collect();
        assert_ne!(outcomes.first(), Some(&Accepted::AlreadyComplete));
        r.flush().unwrap();
        assert_eq!(fs::read(&target).unwrap(), v2);
    }

    #[test]
    fn hash_mismatch_leaves_final_path_untouched() {
        let out = tempfile::tempdir().unwrap();
        let mut r = open(out.path());
        fs::write(out.path().join("x"), b"old").unwrap();
        let mut chunks = chunks_of("x", b"new content", 4);
        chunks[1].payload = b"EVIL".to_vec();
        for c in &chunks[..chunks.len() - 1] {
            r.take(c).unwrap();
        }
        assert_eq!(
            r.take(chunks.last().unwrap()).unwrap(),
            Accepted::HashMismatch
        );
        r.flush().unwrap();
        assert_eq!(fs::read(out.path().join("x")).unwrap(), b"old");
        assert_eq!(
            fs::read_dir(out.path().join(".openmsi/failed"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn restart_resumes_only_flushed_chunks() {
        let out = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
        let chunks = chunks_of("big.bin", &content, 4096);
        {
            let mut r = open(out.path());
            r.take(&chunks[0]).unwrap();
            r.take(&chunks[1]).unwrap();
            r.flush().unwrap();
            // Written after the last flush: its offset was never committed.
            r.take(&chunks[2]).unwrap();
        }
        let mut r = open(out.path());
        assert_eq!(r.take(&chunks[1]).unwrap(), Accepted::Duplicate);
        for c in &chunks[2..] {
            r.take(c).unwrap();
        }
        r.flush().unwrap();
        assert_eq!(fs::read(out.path().join("big.bin")).unwrap(), content);
        assert_eq!(
            fs::read_dir(out.path().join(".openmsi/staging"))
                .unwrap()
                .count(),
            0
        );
    }

    /// Knot-format parts of `content` cut at `cuts` (so of any sizes), with sent indices
    /// starting at `base`, the whole-file hash when `verified`, read from partition 0 at
    /// `first_offset` onwards.
    fn knot_parts(
        relative: &str,
        content: &[u8],
        cuts: &[usize],
        base: u64,
        verified: bool,
        first_offset: i64,
    ) -> Vec<VerifiedChunk> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(content.len());
        let n = bounds.len() as u64 - 1;
        let version = FileVersion {
            relative: relative.into(),
            file_hash: if verified {
                to_hex(&sha512(content))
            } else {
                String::new()
            },
            n_total_chunks: n,
            file_mtime: None,
            layout: PartLayout::Appended,
            started_at: None,
        };
        bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| VerifiedChunk {
                id: version.id(),
                version: version.clone(),
                path: relative.split('/').collect(),
                chunk_i: i as u64 + base + 1,
                offset: 0,
                payload: content[w[0]..w[1]].to_vec(),
                data: 0..w[1] - w[0],
                key: None,
                headers: Vec::new(),
                message: MessagePosition {
                    partition: 0,
                    offset: first_offset + i as i64,
                },
                whole_file_checked: false,
            })
            .collect()
    }

    #[test]
    fn knot_parts_of_any_size_in_any_order_and_either_base_rebuild_the_file() {
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 239) as u8).collect();
        for (base, verified) in [(0, true), (1, true), (0, false), (1, false)] {
            let out = tempfile::tempdir().unwrap();
            let mut r = open(out.path());
            let parts = knot_parts(
                "zones/a.rpz",
                &content,
                &[100, 5000, 5001],
                base,
                verified,
                0,
            );
            let order = [2, 0, 3, 1];
            for (k, &i) in order.iter().enumerate() {
                let expected = if k == 3 {
                    Accepted::Completed
                } else {
                    Accepted::Written
                };
                assert_eq!(r.take(&parts[i]).unwrap(), expected, "base {base}");
            }
            let published = r.flush().unwrap();
            assert_eq!(published[0].file_hash, to_hex(&sha512(&content)));
            assert_eq!(fs::read(out.path().join("zones/a.rpz")).unwrap(), content);
        }
    }

    #[test]
    fn knot_parts_that_contradict_each_other_or_the_hash_are_set_aside() {
        let content = b"0123456789".to_vec();
        let out = tempfile::tempdir().unwrap();
        let mut r = open(out.path());
        // Slots 1 (index 0) and 3 (index 2 of 2): both bases at once.
        let mut parts = knot_parts("x.json", &content, &[5], 0, true, 0);
        parts[1].chunk_i = 3;
        r.take(&parts[0]).unwrap();
        assert_eq!(r.take(&parts[1]).unwrap(), Accepted::HashMismatch);
        // The right slots with a wrong byte.
        let mut parts = knot_parts("y.json", &content, &[5], 0, true, 10);
        parts[1].payload[0] ^= 1;
        r.take(&parts[0]).unwrap();
        assert_eq!(r.take(&parts[1]).unwrap(), Accepted::HashMismatch);
        r.flush().unwrap();
        assert!(!out.path().join("x.json").exists());
        assert!(!out.path().join("y.json").exists());
    }

    #[test]
    fn unverified_knot_versions_of_one_file_are_told_apart_by_position() {
        let out = tempfile::tempdir().unwrap();
        let mut r = open(out.path());
        // Two versions of equal size and part count in one flush, then one whose first
        // version lost a part: the resend wins.
        let v1 = knot_parts("kresd.yaml", b"version one", &[4], 0, false, 0);
        let v2 = knot_parts("kresd.yaml", b"version two", &[4], 0, false, 2);
        for c in v1.iter().chain(&v2) {
            r.take(c).unwrap();
        }
        let published = r.flush().unwrap();
        assert_eq!(relatives(published), ["kresd.yaml", "kresd.yaml"]);
        assert_eq!(
            fs::read(out.path().join("kresd.yaml")).unwrap(),
            b"version two"
        );
        let lost = knot_parts("kresd.yaml", b"version 3!!", &[4], 0, false, 4);
        let resent = knot_parts("kresd.yaml", b"version 4!!", &[4], 0, false, 5);
        r.take(&lost[0]).unwrap();
        assert_eq!(r.take(&resent[0]).unwrap(), Accepted::Written);
        assert_eq!(r.take(&resent[1]).unwrap(), Accepted::Completed);
        r.flush().unwrap();
        assert_eq!(
            fs::read(out.path().join("kresd.yaml")).unwrap(),
            b"version 4!!"
        );
    }

    #[test]
    fn knot_parts_resume_after_a_restart() {
        let out = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..9_000u32).map(|i| (i % 233) as u8).collect();
        for verified in [true, false] {
            let parts = knot_parts("big.rpz", &content, &[3000, 6000], 0, verified, 0);
            {
                let mut r = open(out.path());
                r.take(&parts[1]).unwrap();
                r.flush().unwrap();
                // Not flushed: read again after the restart.
                r.take(&parts[0]).unwrap();
            }
            let mut r = open(out.path());
            for c in &parts {
                r.take(c).unwrap();
            }
            r.flush().unwrap();
            assert_eq!(fs::read(out.path().join("big.rpz")).unwrap(), content);
            let staging = fs::read_dir(out.path().join(".openmsi/staging")).unwrap();
            assert_eq!(staging.count(), 0, "verified {verified}");
        }
    }
}
