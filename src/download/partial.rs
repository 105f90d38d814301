//! One file being rebuilt in the staging area: `<id>.part` holds the bytes written so far at
//! their offsets, and `<id>.chunks` records which chunks are durably in it. A chunk is recorded
//! only after the data file was fsynced, so after any crash every recorded chunk is really
//! there; unrecorded ones are read again from Kafka (their offsets were not committed).
//!
//! The whole-file SHA-512 is computed as the contiguous prefix grows: in-order chunks are hashed
//! from memory as they are written, and chunks that arrived early are read back from the
//! staging file once the gap before them fills. Each byte is hashed once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::chunk::hash::{to_hex, Sha512Stream};
use crate::chunk::Sha512Digest;
use crate::contract::{FileVersion, PartLayout};
use crate::state::annotate;

#[cfg(unix)]
use std::os::unix::fs::FileExt;

/// A chunk written but not yet recorded as durable.
#[derive(Debug, Clone, Copy)]
struct ChunkRecord {
    chunk_i: u64,
    offset: u64,
    len: u64,
}

/// A file being rebuilt.
pub struct PartialFile {
    /// What this is a version of.
    pub version: FileVersion,
    /// Expected whole-file hash (None: unverified, see [`FileVersion::is_unverified`]).
    file_hash: Option<Sha512Digest>,
    /// The hash computed when the file was verified (for an unverified version, its only one).
    computed_hash: Option<Sha512Digest>,
    /// Appended layout: where each part slot's latest copy is (offset, length).
    parts: BTreeMap<u64, (u64, u64)>,
    /// Appended layout: every part so far arrived right after the one before it, once, so
    /// the staging file already is the file.
    appended_in_order: bool,
    /// Appended layout: the slot of the part appended last.
    last_slot: Option<u64>,
    /// `<id>.part`.
    data_path: PathBuf,
    /// `<id>.chunks`.
    record_path: PathBuf,
    /// False for a file of one chunk, which has no record (see [`PartialFile::create`]).
    recorded: bool,
    /// Open data file (None after being closed to save descriptors).
    data: Option<File>,
    /// Chunk indices present in the data file (recorded or not).
    received: BTreeSet<u64>,
    /// Written since the last flush; recorded once the data is synced.
    unrecorded: Vec<ChunkRecord>,
    /// Data written since the last fsync.
    dirty: bool,
    /// Whole-file hash of bytes [0, hashed_upto).
    hasher: Sha512Stream,
    hashed_upto: u64,
    /// Written chunks beyond `hashed_upto`: offset → length.
    waiting: BTreeMap<u64, u64>,
    /// Largest end offset seen: the file's size once complete.
    size: u64,
    /// The whole file was written by one chunk whose hash, already checked, is the file's
    /// hash: nothing to hash again.
    hash_checked: bool,
    /// When this process took its first chunk (or found it in staging after a restart).
    pub first_chunk_at: std::time::Instant,
}

impl PartialFile {
    /// Starts a new staging file for `version` in `dir`, replacing leftovers of the same id.
    ///
    /// A file of one chunk gets no `.chunks` record: it is complete as soon as it is created,
    /// so there is nothing to resume. If the process dies before it is published, the data
    /// file without a record is deleted at start and its (uncommitted) message is read again;
    /// if it dies between the rename and the completed log, the message is read again and the
    /// same content is published again over itself. Creating and deleting a record per file
    /// costs a burst of small files more than everything else (ext4's inode allocator slows
    /// down after many deletions).
    pub fn create(dir: &Path, version: FileVersion) -> io::Result<Self> {
        let file_hash = version
            .expected_hash()
            .ok_or_else(|| io::Error::other("internal: file hash is not 128 hex digits"))?;
        let id = version.id();
        let data_path = dir.join(format!("{id}.part"));
        let record_path = dir.join(format!("{id}.chunks"));
        let data = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&data_path)
            .map_err(|e| annotate(e, &data_path))?;
        let recorded = version.n_total_chunks > 1;
        if recorded {
            let mut header = serde_json::to_string(&version).map_err(io::Error::other)?;
            header.push('\n');
            fs::write(&record_path, header).map_err(|e| annotate(e, &record_path))?;
        }
        let mut me = Self::new(version, file_hash, data_path, record_path, Some(data));
        me.recorded = recorded;
        Ok(me)
    }

    fn new(
        version: FileVersion,
        file_hash: Option<Sha512Digest>,
        data_path: PathBuf,
        record_path: PathBuf,
        data: Option<File>,
    ) -> Self {
        Self {
            version,
            file_hash,
            computed_hash: None,
            parts: BTreeMap::new(),
            appended_in_order: true,
            last_slot: None,
            data_path,
            record_path,
            recorded: true,
            data,
            received: BTreeSet::new(),
            unrecorded: Vec::new(),
            dirty: false,
            hasher: Sha512Stream::new(),
            hashed_upto: 0,
            waiting: BTreeMap::new(),
            size: 0,
            hash_checked: false,
            first_chunk_at: std::time::Instant::now(),
        }
    }

    /// Reloads a staging file after a restart from its `.chunks` record. Returns None (after
    /// deleting the leftovers) when the record is unusable; those chunks' offsets were never
    /// committed, so Kafka delivers them again.
    pub fn recover(record_path: &Path) -> io::Result<Recovered> {
        let data_path = record_path.with_extension("part");
        let reader = BufReader::new(File::open(record_path)?);
        let mut lines = reader.lines();
        let header = lines.next().transpose()?.unwrap_or_default();
        let version: FileVersion = match serde_json::from_str(&header) {
            Ok(v) => v,
            Err(_) => return Ok(Recovered::Unusable),
        };
        let Some(file_hash) = version.expected_hash() else {
            return Ok(Recovered::Unusable);
        };
        if !data_path.exists() {
            // The completion line, if any, is the record's last line.
            let completed_by = lines
                .map_while(Result::ok)
                .filter_map(|l| parse_completion(&l))
                .last();
            return Ok(Recovered::AlreadyPublished(version, completed_by));
        }
        let data = OpenOptions::new().read(true).write(true).open(&data_path)?;
        let data_len = data.metadata()?.len();
        let mut partial = Self::new(
            version,
            file_hash,
            data_path,
            record_path.to_path_buf(),
            Some(data),
        );
        for line in lines {
            let Ok(line) = line else { break };
            let fields: Vec<u64> = line
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            // A torn last line (crash mid-append) has fewer fields; it was never synced.
            let [chunk_i, offset, len] = fields[..] else {
                break;
            };
            let end = offset.saturating_add(len);
            if chunk_i == 0 || chunk_i > partial.version.max_slot() || end > data_len {
                break;
            }
            if partial.version.layout == PartLayout::Appended {
                partial.note_appended(chunk_i, offset, len);
            }
            if partial.received.insert(chunk_i) || partial.version.layout == PartLayout::Appended {
                partial.waiting.insert(offset, len);
                partial.size = partial.size.max(end);
            }
        }
        if partial.version.layout == PartLayout::Appended && data_len > partial.size {
            // Parts appended after the last record were not durable; they are read again and
            // appended where the recorded ones end.
            let path = partial.data_path.clone();
            let size = partial.size;
            partial
                .data()?
                .set_len(size)
                .map_err(|e| annotate(e, &path))?;
        }
        Ok(Recovered::Partial(Box::new(partial)))
    }

    /// True when chunk `chunk_i` is already staged.
    pub fn has(&self, chunk_i: u64) -> bool {
        self.received.contains(&chunk_i)
    }

    /// The chunks not staged yet, for a message: "chunks 3, 7-9 of 60" (1-based), or for
    /// Knot's parts, whose numbering is only known once the file is whole, "2 of 5 parts".
    pub fn missing_description(&self) -> String {
        let total = self.version.n_total_chunks;
        if self.version.layout == PartLayout::Appended {
            let missing = total.saturating_sub(self.received());
            return format!("{missing} of {total} parts");
        }
        let mut ranges: Vec<String> = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        for i in (1..=total).filter(|i| !self.received.contains(i)) {
            run = match run {
                Some((start, end)) if end + 1 == i => Some((start, i)),
                Some(done) => {
                    ranges.push(range_text(done));
                    Some((i, i))
                }
                None => Some((i, i)),
            };
        }
        ranges.extend(run.map(range_text));
        let word = if ranges.len() == 1 && !ranges[0].contains('-') {
            "chunk"
        } else {
            "chunks"
        };
        format!("{word} {} of {total}", ranges.join(", "))
    }

    /// Number of chunks staged.
    pub fn received(&self) -> u64 {
        self.received.len() as u64
    }

    /// True when every chunk is staged.
    pub fn is_complete(&self) -> bool {
        self.received() == self.version.n_total_chunks
    }

    /// True when data was written since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Path of the staging data file.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// Path of the `.chunks` record, when the file has one (files of more than one chunk).
    pub fn record_file(&self) -> Option<&Path> {
        self.recorded.then_some(self.record_path.as_path())
    }

    /// Deletes the `.chunks` record, if any (errors ignored: a leftover is cleaned at start).
    pub fn remove_record(&self) {
        if let Some(record) = self.record_file() {
            let _ = fs::remove_file(record);
        }
    }

    /// The file's size (valid once complete).
    pub fn size(&self) -> u64 {
        self.size
    }

    fn data(&mut self) -> io::Result<&File> {
        if self.data.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.data_path)
                .map_err(|e| annotate(e, &self.data_path))?;
            self.data = Some(f);
        }
        // Just set above when it was None.
        self.data
            .as_ref()
            .ok_or_else(|| io::Error::other("internal: staging file not open"))
    }

    /// Writes one new chunk at its offset (appended layout: at the end, whatever `offset`
    /// says) and advances the whole-file hash if it can.
    pub fn write_chunk(&mut self, chunk_i: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let offset = match self.version.layout {
            PartLayout::Offsets => offset,
            PartLayout::Appended => {
                self.note_appended(chunk_i, self.size, data.len() as u64);
                self.size
            }
        };
        self.write_at(chunk_i, offset, data)?;
        let len = data.len() as u64;
        if offset == self.hashed_upto {
            self.hasher.update(data);
            self.hashed_upto += len;
            self.hash_waiting_chunks()?;
        } else if offset > self.hashed_upto {
            self.waiting.insert(offset, len);
        }
        Ok(())
    }

    /// Writes the only chunk of a one-chunk file whose chunk hash was checked and equals the
    /// file's hash: the whole-file hash is known to match without hashing the bytes again
    /// (most files of a drop box are one chunk; this halves their hashing).
    pub fn write_checked_whole_file(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_at(1, 0, data)?;
        self.hashed_upto = data.len() as u64;
        self.hash_checked = true;
        Ok(())
    }

    fn write_at(&mut self, chunk_i: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let path = self.data_path.clone();
        write_all_at(self.data()?, data, offset).map_err(|e| annotate(e, &path))?;
        self.dirty = true;
        self.received.insert(chunk_i);
        let len = data.len() as u64;
        self.unrecorded.push(ChunkRecord {
            chunk_i,
            offset,
            len,
        });
        self.size = self.size.max(offset + len);
        Ok(())
    }

    /// Appended layout: notes where slot `chunk_i`'s latest copy is, and whether the parts
    /// still follow each other.
    fn note_appended(&mut self, chunk_i: u64, offset: u64, len: u64) {
        let follows = self.last_slot.is_none_or(|prev| chunk_i == prev + 1);
        let repeated = self.parts.insert(chunk_i, (offset, len)).is_some();
        self.appended_in_order &= follows && !repeated;
        self.last_slot = Some(chunk_i);
    }

    /// Appended layout, once every slot is there: true when the slots are `1..=n` (0-based
    /// indices) or `2..=n + 1` (1-based). Anything else (both 0 and n sent, say) is a file
    /// whose parts contradict each other.
    fn appended_slots_are_whole(&self) -> bool {
        let n = self.version.n_total_chunks;
        let (Some(&first), Some(&last)) = (self.parts.keys().next(), self.parts.keys().last())
        else {
            return false;
        };
        self.parts.len() as u64 == n && (first == 1 || first == 2) && last == first + n - 1
    }

    /// Appended layout, parts out of order or sent twice: copies each slot's latest part, in
    /// slot order, into a new staging file that replaces the old one, hashing as it goes.
    /// The record describes the old layout, so it is removed first: if the process dies now,
    /// the data without a record is deleted at start and Kafka delivers the parts again
    /// (their offsets are not committed before the file is published).
    fn put_parts_in_order(&mut self) -> io::Result<()> {
        self.remove_record();
        self.recorded = false;
        self.unrecorded.clear();
        let ordered_path = self.data_path.with_extension("ordered");
        let mut out = File::create(&ordered_path).map_err(|e| annotate(e, &ordered_path))?;
        let mut hasher = Sha512Stream::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut written = 0u64;
        let parts: Vec<(u64, u64)> = self.parts.values().copied().collect();
        for (offset, len) in parts {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                read_exact_at(self.data()?, &mut buf[..n], offset + done)?;
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| annotate(e, &ordered_path))?;
                done += n as u64;
            }
            written += len;
        }
        drop(out);
        self.data = None;
        fs::rename(&ordered_path, &self.data_path).map_err(|e| annotate(e, &self.data_path))?;
        self.hasher = hasher;
        self.hashed_upto = written;
        self.size = written;
        self.waiting.clear();
        self.dirty = true;
        self.appended_in_order = true;
        Ok(())
    }

    /// Feeds chunks that arrived early and now continue the hashed prefix, reading them back.
    fn hash_waiting_chunks(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        while let Some(len) = self.waiting.remove(&self.hashed_upto) {
            buf.resize(len as usize, 0);
            let at = self.hashed_upto;
            read_exact_at(self.data()?, &mut buf, at)?;
            self.hasher.update(&buf);
            self.hashed_upto += len;
        }
        Ok(())
    }

    /// Once complete: finishes the whole-file hash (reading back anything not yet hashed, e.g.
    /// after a restart) and says whether it matches.
    pub fn verify(&mut self) -> io::Result<bool> {
        if self.hash_checked {
            return Ok(true);
        }
        if self.version.layout == PartLayout::Appended {
            if !self.appended_slots_are_whole() {
                return Ok(false);
            }
            if !self.appended_in_order {
                self.put_parts_in_order()?;
            }
        }
        self.hash_waiting_chunks()?;
        let mut buf = Vec::new();
        while self.hashed_upto < self.size {
            buf.resize(1 << 20, 0);
            let n = (self.size - self.hashed_upto).min(buf.len() as u64) as usize;
            let at = self.hashed_upto;
            read_exact_at(self.data()?, &mut buf[..n], at)?;
            self.hasher.update(&buf[..n]);
            self.hashed_upto += n as u64;
        }
        // Hostile overlapping chunks can leave the data file longer than the hashed size.
        let on_disk = self.data()?.metadata()?.len();
        let digest = std::mem::take(&mut self.hasher).finalize();
        self.computed_hash = Some(digest);
        Ok(on_disk == self.size && self.file_hash.is_none_or(|expected| expected == digest))
    }

    /// Hex SHA-512 of the content: the verified one, or for an unverified version the one
    /// computed when it was whole.
    pub fn file_hash_hex(&self) -> String {
        match (self.file_hash, self.computed_hash) {
            (Some(expected), _) => to_hex(&expected),
            (None, Some(computed)) => to_hex(&computed),
            (None, None) => self.version.file_hash.clone(),
        }
    }

    /// fsyncs the data file if needed.
    pub fn sync_data(&mut self) -> io::Result<()> {
        if self.dirty {
            let path = self.data_path.clone();
            self.data()?.sync_data().map_err(|e| annotate(e, &path))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Appends the chunks written since the last call to the record and fsyncs it. Call only
    /// after [`Self::sync_data`]: that order is what makes a recorded chunk trustworthy.
    pub fn record_synced_chunks(&mut self) -> io::Result<()> {
        if !self.recorded {
            self.unrecorded.clear();
            return Ok(());
        }
        if self.unrecorded.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for r in self.unrecorded.drain(..) {
            text.push_str(&format!("{} {} {}\n", r.chunk_i, r.offset, r.len));
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(&self.record_path)
            .map_err(|e| annotate(e, &self.record_path))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| annotate(e, &self.record_path))
    }

    /// Notes in the record which message completed the file, so that a crash after the file
    /// was renamed into place (before the completed log learnt of it) still tells start-up
    /// its position. Best effort and not synced: without it, the position is unknown.
    pub fn record_completion(&self, at: crate::contract::MessagePosition) {
        if !self.recorded {
            return;
        }
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.record_path) {
            let _ = writeln!(f, "@ {} {}", at.partition, at.offset);
        }
    }

    /// Sets the data file's modification time, through its descriptor while it is still open
    /// (a burst of small files would otherwise pay one more open per file). Best effort.
    pub fn set_modified(&mut self, time: std::time::SystemTime) {
        if let Ok(f) = self.data() {
            let _ = f.set_modified(time);
        }
    }

    /// Closes the data file (it is reopened on demand). Caller syncs first if it matters.
    pub fn close(&mut self) {
        self.data = None;
    }

    /// Records that the data is durable because the whole filesystem was synced
    /// ([`crate::state::sync_filesystem`]) after the last write.
    pub fn mark_synced(&mut self) {
        self.dirty = false;
    }
}

fn range_text((start, end): (u64, u64)) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    }
}

/// What recovery found for one `.chunks` record.
/// A record's completion line, `@ PARTITION OFFSET` (see [`PartialFile::record_completion`]).
fn parse_completion(line: &str) -> Option<crate::contract::MessagePosition> {
    let mut words = line.strip_prefix("@ ")?.split_whitespace();
    let partition = words.next()?.parse().ok()?;
    let offset = words.next()?.parse().ok()?;
    Some(crate::contract::MessagePosition { partition, offset })
}

pub enum Recovered {
    /// A partial file to continue.
    Partial(Box<PartialFile>),
    /// The data file is gone: it was renamed into place before the crash; with the message
    /// that completed it when the record says.
    AlreadyPublished(FileVersion, Option<crate::contract::MessagePosition>),
    /// The record is unreadable (torn before its first sync): discard.
    Unusable,
}

#[cfg(unix)]
fn write_all_at(f: &File, data: &[u8], offset: u64) -> io::Result<()> {
    f.write_all_at(data, offset)
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    f.read_exact_at(buf, offset)
}

#[cfg(windows)]
fn write_all_at(mut f: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)
}

#[cfg(windows)]
fn read_exact_at(mut f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::hash::sha512;

    fn version(content: &[u8], n: u64) -> FileVersion {
        FileVersion {
            relative: "a/x.dat".into(),
            file_hash: to_hex(&sha512(content)),
            n_total_chunks: n,
            file_mtime: None,
            layout: Default::default(),
            started_at: None,
        }
    }

    #[test]
    fn out_of_order_and_duplicate_chunks_verify() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<&[u8]> = content.chunks(4096).collect();
        let mut p = PartialFile::create(dir.path(), version(&content, 3)).unwrap();
        for i in [3usize, 1, 3, 2] {
            if !p.has(i as u64) {
                p.write_chunk(i as u64, (i as u64 - 1) * 4096, chunks[i - 1])
                    .unwrap();
            }
        }
        assert!(p.is_complete());
        assert!(p.verify().unwrap());
        assert_eq!(fs::read(p.data_path()).unwrap(), content);
    }

    #[test]
    fn wrong_content_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialFile::create(dir.path(), version(b"right", 1)).unwrap();
        p.write_chunk(1, 0, b"wrong").unwrap();
        assert!(!p.verify().unwrap());
    }

    #[test]
    fn recovery_keeps_only_recorded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..12_288u32).map(|i| (i % 249) as u8).collect();
        let chunks: Vec<&[u8]> = content.chunks(4096).collect();
        let record;
        {
            let mut p = PartialFile::create(dir.path(), version(&content, 3)).unwrap();
            p.write_chunk(2, 4096, chunks[1]).unwrap();
            p.sync_data().unwrap();
            p.record_synced_chunks().unwrap();
            // Written but never recorded: must be delivered again after the "crash".
            p.write_chunk(1, 0, chunks[0]).unwrap();
            record = p.record_file().unwrap().to_path_buf();
        }
        // A torn append from the crash.
        OpenOptions::new()
            .append(true)
            .open(&record)
            .unwrap()
            .write_all(b"1 0")
            .unwrap();
        let Recovered::Partial(mut p) = PartialFile::recover(&record).unwrap() else {
            panic!("expected a partial file");
        };
        assert!(p.has(2) && !p.has(1) && !p.has(3));
        p.write_chunk(1, 0, chunks[0]).unwrap();
        p.write_chunk(3, 8192, chunks[2]).unwrap();
        assert!(p.is_complete());
        assert!(p.verify().unwrap());
    }

    #[test]
    fn recovery_of_published_and_torn_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = PartialFile::create(dir.path(), version(b"xy", 2)).unwrap();
        let record = p.record_file().unwrap();
        fs::remove_file(p.data_path()).unwrap();
        assert!(matches!(
            PartialFile::recover(record).unwrap(),
            Recovered::AlreadyPublished(_, None)
        ));
        // Completed by a known message before the rename: start-up learns where.
        let at = crate::contract::MessagePosition {
            partition: 1,
            offset: 42,
        };
        p.record_completion(at);
        match PartialFile::recover(record).unwrap() {
            Recovered::AlreadyPublished(_, Some(got)) => assert_eq!(got, at),
            _ => panic!("expected the completing message"),
        }
        fs::write(record, b"{\"rel").unwrap();
        assert!(matches!(
            PartialFile::recover(record).unwrap(),
            Recovered::Unusable
        ));
        // A file of one chunk has no record at all.
        let single = PartialFile::create(dir.path(), version(b"z", 1)).unwrap();
        assert!(single.record_file().is_none());
    }
}
