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

use tracing::{info, warn};

use super::offsets::ChunkFile;
use super::rejects::KeptAside;
use super::rejects::KeptMessage;
use super::stats::DownloadStats;
use super::verify::{verify_kept, Selection, Verdict};
use crate::contract::MessagePosition;
use crate::contract::{Accepted, ChunkSink, VerifiedChunk};
use crate::contract::{Opener, RawMessage};

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
        kept: &mut KeptAside,
        sink: &mut impl ChunkSink,
        stats: &DownloadStats,
    ) -> std::io::Result<Retried> {
        let mut done = Retried::default();
        let generation = self.opener.generation();
        if self.seen_generation != Some(generation) || self.last_try.elapsed() >= RETRY_EVERY {
            self.seen_generation = Some(generation);
            self.last_try = Instant::now();
            self.retry_held(kept, sink, stats, &mut done)?;
            self.retry_kept(kept, sink, stats, &mut done)?;
        }
        self.spill(kept, &mut done);
        // The status line's "waiting to be opened": kept on disk plus held in memory.
        stats.deferred_messages.store(
            self.kept_waiting + self.held.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(done)
    }

    fn retry_held(
        &mut self,
        kept: &mut KeptAside,
        sink: &mut impl ChunkSink,
        stats: &DownloadStats,
        done: &mut Retried,
    ) -> std::io::Result<()> {
        let mut still = VecDeque::new();
        while let Some(mut held) = self.held.pop_front() {
            let bytes = held.bytes();
            // The message moves into the retry and, if still not openable, back (no copy).
            let message = std::mem::take(&mut held.message);
            match verify_kept(message, held.at, self.opener.as_ref(), &self.selection) {
                Verdict::Defer { message, .. } => {
                    held.message = message;
                    still.push_back(held);
                    continue;
                }
                Verdict::Chunk(mut chunk) => {
                    let file = accept(&mut chunk, sink, stats)?;
                    done.chunks.push((file, Some(held.at)));
                }
                Verdict::Reject { reason, message } => {
                    reject(kept, stats, &held.topic, held.at, &message, &reason)
                }
                Verdict::Skip => DownloadStats::add(&stats.skipped_messages, 1),
                Verdict::NotForUs => DownloadStats::add(&stats.other_hosts_messages, 1),
            }
            self.held_bytes -= bytes;
            done.released.push(held.at);
        }
        self.held = still;
        Ok(())
    }

    fn retry_kept(
        &mut self,
        kept: &mut KeptAside,
        sink: &mut impl ChunkSink,
        stats: &DownloadStats,
        done: &mut Retried,
    ) -> std::io::Result<()> {
        let mut waiting = 0u64;
        for message in kept.deferred.entries() {
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
            match verify_kept(raw, message.at, self.opener.as_ref(), &self.selection) {
                Verdict::Chunk(mut chunk) => {
                    let file = accept(&mut chunk, sink, stats)?;
                    info!(topic = %message.topic, partition = message.at.partition, offset = message.at.offset, "a kept message could be opened now");
                    done.chunks.push((file, None));
                    self.written.push(message);
                }
                Verdict::Defer { .. } => waiting += 1,
                Verdict::Reject {
                    reason,
                    message: raw,
                } => {
                    reject(kept, stats, &message.topic, message.at, &raw, &reason);
                    kept.deferred.remove(&message.topic, message.at);
                }
                Verdict::Skip | Verdict::NotForUs => {
                    kept.deferred.remove(&message.topic, message.at)
                }
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

/// A message that opened but is bad: counted, logged and kept in `.openmsi/rejected/`.
fn reject(
    kept: &mut KeptAside,
    stats: &DownloadStats,
    topic: &str,
    at: MessagePosition,
    message: &RawMessage,
    reason: &str,
) {
    warn!(topic, partition = at.partition, offset = at.offset, %reason, "a message that waited for its key is bad; kept in .openmsi/rejected");
    DownloadStats::add(&stats.rejected_messages, 1);
    kept.rejected.keep(
        topic,
        at,
        message.key.as_deref(),
        message.value.as_deref(),
        reason,
    );
}

/// Hands a retried chunk to the sink; returns its file.
fn accept(
    chunk: &mut VerifiedChunk,
    sink: &mut impl ChunkSink,
    stats: &DownloadStats,
) -> std::io::Result<ChunkFile> {
    match sink.accept(chunk)? {
        Accepted::HashMismatch => {
            warn!(path = %chunk.version.relative, "file failed whole-file verification")
        }
        Accepted::Duplicate | Accepted::AlreadyComplete | Accepted::Superseded => {
            DownloadStats::add(&stats.duplicate_chunks, 1)
        }
        Accepted::Written | Accepted::Completed => {}
    }
    Ok(ChunkFile {
        id: chunk.id.clone(),
        relative: chunk.version.relative.clone(),
    })
}
