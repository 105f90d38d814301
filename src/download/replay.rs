//! Messages that cannot be opened yet (their decryption key has not arrived) must neither hold
//! up the stream nor be lost. The writer hands them here and goes on with the next message:
//!
//! 1. **Held in memory** first, their offsets pinned (not committed): a starting download
//!    typically meets its key a second later, and holding avoids writing everything read in
//!    that second to disk.
//! 2. **Kept on disk** (`.openmsi/deferred/`, durable) once held for [`HOLD_FOR`] or when more
//!    than [`HOLD_BYTES`] are held; then their offsets may be committed.
//!
//! Whenever the opener reports something new (a key arrived), and at least once a minute, held
//! and kept messages are retried: one that opens goes to the sink like any chunk (a kept one
//! leaves the folder after the flush that made it durable; a crash in between retries it: a
//! duplicate chunk is harmless); one that turns out bad moves to `.openmsi/rejected/`. At
//! shutdown, held messages are kept on disk (the topic may not keep them until the next run);
//! one that cannot be kept stays uncommitted and is read again. A held message counts as in
//! flight, so `--exit-when-idle` gives keys up to [`HOLD_FOR`] to arrive.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::offsets::ChunkFile;
use super::rejects::{KeptAside, KeptMessage};
use super::verdicts::{Applied, Verdicts};
use super::verify::{verify_kept, Selection};
use crate::contract::{ChunkSink, MessagePosition, Opener, RawMessage};

/// Kept messages are retried at least this often, even when nothing new arrived.
const RETRY_EVERY: Duration = Duration::from_secs(60);
/// A message is held in memory at most this long before it is kept on disk.
pub const HOLD_FOR: Duration = Duration::from_secs(10);
/// At most this many bytes are held in memory.
pub const HOLD_BYTES: usize = 64 << 20;

/// A message held in memory.
struct Held {
    topic: String,
    at: MessagePosition,
    message: RawMessage,
    reason: String,
    since: Instant,
}

impl Held {
    fn bytes(&self) -> usize {
        self.message.key.as_ref().map_or(0, Vec::len)
            + self.message.value.as_ref().map_or(0, Vec::len)
    }
}

/// What a retry did, for the writer's commit tracking.
#[derive(Default)]
pub struct Retried {
    /// Chunks given to the sink: their file, and where the message was read when it was held
    /// in memory (None for one kept on disk: its offset was committed long ago).
    pub chunks: Vec<(ChunkFile, Option<MessagePosition>)>,
    /// Held messages dealt with (opened, kept on disk, or rejected): unpin them.
    pub released: Vec<MessagePosition>,
}

/// The retry state of one writer.
pub struct Replay {
    opener: Arc<dyn Opener>,
    selection: Selection,
    seen_generation: Option<u64>,
    last_try: Instant,
    held: VecDeque<Held>,
    held_bytes: usize,
    hold_for: Duration,
    /// Messages kept on disk still waiting (as of the last retry, plus those kept since).
    kept_waiting: u64,
    /// Kept messages opened and handed to the sink, to be removed once flushed.
    written: Vec<KeptMessage>,
}

impl Replay {
    /// Retries with `opener` and `selection` (the pipeline's own).
    pub fn new(opener: Arc<dyn Opener>, selection: Selection) -> Self {
        Replay {
            opener,
            selection,
            seen_generation: None,
            last_try: Instant::now(),
            held: VecDeque::new(),
            held_bytes: 0,
            hold_for: HOLD_FOR,
            kept_waiting: 0,
            written: Vec::new(),
        }
    }

    /// The same with another holding time (tests).
    pub fn holding_for(mut self, hold_for: Duration) -> Self {
        self.hold_for = hold_for;
        self
    }

    /// The pin that keeps a held message's offset from being committed.
    pub fn pin(at: MessagePosition) -> ChunkFile {
        ChunkFile {
            id: format!("held {}:{}", at.partition, at.offset),
            relative: format!(
                "(message at partition {} offset {}, waiting for its key)",
                at.partition, at.offset
            ),
        }
    }

    /// Holds a message that cannot be opened yet; the caller pins its offset ([`Self::pin`]).
    pub fn hold(&mut self, topic: &str, at: MessagePosition, message: RawMessage, reason: String) {
        let held = Held {
            topic: topic.to_owned(),
            at,
            message,
            reason,
            since: Instant::now(),
        };
        self.held_bytes += held.bytes();
        self.held.push_back(held);
    }

    /// Messages held in memory now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Retries held and kept messages if something arrived since the last try (or a minute
    /// passed), and moves messages held too long (or too many bytes) to disk.
    pub fn maybe_retry(
        &mut self,
        verdicts: &mut Verdicts<'_>,
        sink: &mut impl ChunkSink,
    ) -> std::io::Result<Retried> {
        let mut done = Retried::default();
        let generation = self.opener.generation();
        if self.seen_generation != Some(generation) || self.last_try.elapsed() >= RETRY_EVERY {
            self.seen_generation = Some(generation);
            self.last_try = Instant::now();
            self.retry_held(verdicts, sink, &mut done)?;
            self.retry_kept(verdicts, sink, &mut done)?;
        }
        self.spill(&mut verdicts.kept, &mut done);
        let stats = verdicts.stats();
        // The status line's "waiting to be opened": kept on disk plus held in memory.
        stats.deferred_messages.store(
            self.kept_waiting + self.held.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(done)
    }

    fn retry_held(
        &mut self,
        verdicts: &mut Verdicts<'_>,
        sink: &mut impl ChunkSink,
        done: &mut Retried,
    ) -> std::io::Result<()> {
        let mut still = VecDeque::new();
        while let Some(mut held) = self.held.pop_front() {
            let bytes = held.bytes();
            // The message moves into the retry and, if still not openable, back (no copy).
            let message = std::mem::take(&mut held.message);
            let verdict = verify_kept(message, held.at, self.opener.as_ref(), &self.selection);
            match verdicts.apply(verdict, &held.topic, held.at, sink)? {
                Applied::NotYet { message, .. } => {
                    held.message = message;
                    still.push_back(held);
                    continue;
                }
                Applied::Chunk(file) => done.chunks.push((file, Some(held.at))),
                Applied::Done => {}
            }
            self.held_bytes -= bytes;
            done.released.push(held.at);
        }
        self.held = still;
        Ok(())
    }

    fn retry_kept(
        &mut self,
        verdicts: &mut Verdicts<'_>,
        sink: &mut impl ChunkSink,
        done: &mut Retried,
    ) -> std::io::Result<()> {
        let mut waiting = 0u64;
        for message in verdicts.kept.deferred.entries() {
            if self
                .written
                .iter()
                .any(|w| w.topic == message.topic && w.at == message.at)
            {
                continue;
            }
            let raw = RawMessage {
                key: message.key.clone(),
                value: message.value.clone(),
                headers: Vec::new(),
            };
            let verdict = verify_kept(raw, message.at, self.opener.as_ref(), &self.selection);
            match verdicts.apply(verdict, &message.topic, message.at, sink)? {
                Applied::Chunk(file) => {
                    info!(topic = %message.topic, partition = message.at.partition, offset = message.at.offset, "a kept message could be opened now");
                    done.chunks.push((file, None));
                    self.written.push(message);
                }
                Applied::NotYet { .. } => waiting += 1,
                // Skipped, or bad and now kept in rejected/: no longer waiting.
                Applied::Done => verdicts.kept.deferred.remove(&message.topic, message.at),
            }
        }
        self.kept_waiting = waiting;
        Ok(())
    }

    /// Keeps on disk what was held too long, or beyond [`HOLD_BYTES`]; a message that cannot be
    /// kept stays held (and pinned).
    fn spill(&mut self, kept: &mut KeptAside, done: &mut Retried) {
        while let Some(front) = self.held.front() {
            if front.since.elapsed() < self.hold_for && self.held_bytes <= HOLD_BYTES {
                break;
            }
            let held = self.held.pop_front().expect("front exists");
            let (key, value) = (held.message.key.as_deref(), held.message.value.as_deref());
            if !kept.deferred.already_kept(&held.topic, held.at)
                && !kept
                    .deferred
                    .keep(&held.topic, held.at, key, value, &held.reason)
            {
                // Could not be kept: stays held, so its offset stays uncommitted.
                self.held.push_front(held);
                break;
            }
            info!(topic = %held.topic, partition = held.at.partition, offset = held.at.offset, reason = %held.reason, "message cannot be opened yet; kept in .openmsi/deferred");
            self.held_bytes -= held.bytes();
            self.kept_waiting += 1;
            done.released.push(held.at);
        }
    }

    /// Keeps every held message on disk (at shutdown); returns those kept (the others stay
    /// pinned and are read again next run).
    pub fn keep_all_held(&mut self, kept: &mut KeptAside) -> Vec<MessagePosition> {
        self.hold_for = Duration::ZERO;
        let mut done = Retried::default();
        self.spill(kept, &mut done);
        done.released
    }

    /// The sink flushed: kept messages retried into it are durable and leave the folder.
    pub fn flushed(&mut self, kept: &mut KeptAside) {
        for message in self.written.drain(..) {
            kept.deferred.remove(&message.topic, message.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Accepted, PublishedFile, VerifiedChunk};
    use crate::download::rejects::RejectStore;
    use crate::download::stats::DownloadStats;
    use crate::download::verify::Formats;
    use std::sync::atomic::Ordering;

    /// A sink that must never be reached.
    struct NoSink;

    impl ChunkSink for NoSink {
        const DESTINATION: &'static str = "nowhere";
        fn accept(&mut self, _: &mut VerifiedChunk) -> std::io::Result<Accepted> {
            unreachable!("no chunk in this test")
        }
        fn is_in_progress(&self, _: &str) -> bool {
            false
        }
        fn unflushed_bytes(&self) -> u64 {
            0
        }
        fn flush(&mut self) -> std::io::Result<Vec<PublishedFile>> {
            Ok(Vec::new())
        }
    }

    /// An opener whose key "arrives" when told.
    struct KeyLater(std::sync::atomic::AtomicBool);

    impl Opener for KeyLater {
        fn open(&self, message: RawMessage, _at: MessagePosition) -> crate::contract::Opened {
            if self.0.load(Ordering::Acquire) {
                crate::contract::Opened::Readable(message)
            } else {
                crate::contract::Opened::NotYet {
                    reason: "key 17 not received yet".into(),
                    message,
                }
            }
        }

        fn generation(&self) -> u64 {
            u64::from(self.0.load(Ordering::Acquire))
        }
    }

    fn kept_aside(dir: &std::path::Path) -> KeptAside {
        KeptAside {
            rejected: RejectStore::open(&dir.join("rejected")).unwrap(),
            deferred: RejectStore::open(&dir.join("deferred")).unwrap(),
        }
    }

    fn waiting_message() -> RawMessage {
        RawMessage {
            key: Some(b"k".to_vec()),
            value: Some(b"ciphertext".to_vec()),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_message_held_too_long_is_kept_on_disk_once_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let stats = DownloadStats::default();
        let mut verdicts = Verdicts::new(&stats, kept_aside(dir.path()), Formats::Openmsi, false);
        let opener = Arc::new(KeyLater(Default::default()));
        let mut replay = Replay::new(opener, Selection::default()).holding_for(Duration::ZERO);
        let at = MessagePosition {
            partition: 2,
            offset: 9,
        };
        replay.hold("t", at, waiting_message(), "key 17 not received yet".into());
        let retried = replay.maybe_retry(&mut verdicts, &mut NoSink).unwrap();
        assert_eq!(retried.released, vec![at]);
        assert_eq!(replay.held(), 0);
        assert!(verdicts.kept.deferred.already_kept("t", at));
        let snap = stats.snapshot();
        assert_eq!((snap.deferred_messages, snap.rejected_messages), (1, 0));
        let file = dir.path().join("deferred/t-2-9");
        assert_eq!(
            std::fs::read(file.with_extension("value")).unwrap(),
            b"ciphertext"
        );
        let why = std::fs::read_to_string(file.with_extension("txt")).unwrap();
        assert!(why.contains("key 17 not received yet"), "{why}");
    }

    #[test]
    fn a_held_message_is_retried_from_memory_when_its_key_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let stats = DownloadStats::default();
        let mut verdicts = Verdicts::new(&stats, kept_aside(dir.path()), Formats::Openmsi, false);
        let opener = Arc::new(KeyLater(Default::default()));
        let mut replay = Replay::new(Arc::clone(&opener) as Arc<dyn Opener>, Selection::default());
        let at = MessagePosition {
            partition: 0,
            offset: 4,
        };
        replay.hold("t", at, waiting_message(), "key 17 not received yet".into());
        // Nothing new: it stays held (its offset pinned by the writer), nothing on disk.
        let retried = replay.maybe_retry(&mut verdicts, &mut NoSink).unwrap();
        assert!(retried.released.is_empty() && retried.chunks.is_empty());
        assert_eq!((replay.held(), stats.snapshot().deferred_messages), (1, 1));
        assert!(!verdicts.kept.deferred.already_kept("t", at));
        // The key arrives: the message opens (here into a bad chunk, so it is rejected) and is
        // released.
        opener.0.store(true, Ordering::Release);
        let retried = replay.maybe_retry(&mut verdicts, &mut NoSink).unwrap();
        assert_eq!(retried.released, vec![at]);
        assert_eq!(replay.held(), 0);
        let snap = stats.snapshot();
        assert_eq!((snap.deferred_messages, snap.rejected_messages), (0, 1));
    }
}
