//! Messages that could not be opened when read (their decryption key had not arrived) are kept
//! in `.openmsi/deferred/` and their offsets committed, so they hold up nothing. The writer
//! retries them whenever the opener reports something new (a key arrived) and once a minute:
//! a message that opens goes to the sink like any chunk, and is removed from the folder only
//! after the flush that made it durable (a crash in between retries it again: a duplicate
//! chunk is harmless). One that turns out bad moves to `.openmsi/rejected/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::pipeline::KeptAside;
use super::rejects::KeptMessage;
use super::sink::{Accepted, ChunkSink};
use super::stats::DownloadStats;
use super::verify::{verify_kept, Opener, RawMessage, Selection, Verdict};

/// Kept messages are retried at least this often, even when nothing new arrived.
const RETRY_EVERY: Duration = Duration::from_secs(60);

/// The retry state of one writer.
pub struct Replay {
    opener: Arc<dyn Opener>,
    selection: Selection,
    seen_generation: Option<u64>,
    last_try: Instant,
    /// Opened and handed to the sink, to be removed once flushed.
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
            written: Vec::new(),
        }
    }

    /// Retries the kept messages if something arrived since the last try (or a minute
    /// passed); returns the files chunks were given to (a flush is due when any).
    pub fn maybe_retry(
        &mut self,
        kept: &mut KeptAside,
        sink: &mut impl ChunkSink,
        stats: &DownloadStats,
    ) -> std::io::Result<Vec<String>> {
        let generation = self.opener.generation();
        if self.seen_generation == Some(generation) && self.last_try.elapsed() < RETRY_EVERY {
            return Ok(Vec::new());
        }
        self.seen_generation = Some(generation);
        self.last_try = Instant::now();
        let mut files = Vec::new();
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
                    match sink.accept(&mut chunk)? {
                        Accepted::HashMismatch => {
                            warn!(path = %chunk.version.relative, "file failed whole-file verification")
                        }
                        Accepted::Duplicate | Accepted::AlreadyComplete | Accepted::Superseded => {
                            DownloadStats::add(&stats.duplicate_chunks, 1)
                        }
                        Accepted::Written | Accepted::Completed => {}
                    }
                    info!(topic = %message.topic, partition = message.at.partition, offset = message.at.offset, "a kept message could be opened now");
                    files.push(chunk.id.clone());
                    self.written.push(message);
                }
                Verdict::Defer { .. } | Verdict::Retry => waiting += 1,
                Verdict::Reject {
                    reason,
                    message: raw,
                } => {
                    warn!(topic = %message.topic, partition = message.at.partition, offset = message.at.offset, %reason, "a kept message is bad; moved to .openmsi/rejected");
                    DownloadStats::add(&stats.rejected_messages, 1);
                    kept.rejected.keep(
                        &message.topic,
                        message.at,
                        raw.key.as_deref(),
                        raw.value.as_deref(),
                        &reason,
                    );
                    kept.deferred.remove(&message.topic, message.at);
                }
                Verdict::Skip | Verdict::NotForUs => {
                    kept.deferred.remove(&message.topic, message.at)
                }
            }
        }
        // The status line's "waiting to be opened" is what is still in the folder.
        stats
            .deferred_messages
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
        Ok(files)
    }

    /// The sink flushed: what was retried into it is durable and leaves the folder.
    pub fn flushed(&mut self, kept: &mut KeptAside) {
        for message in self.written.drain(..) {
            kept.deferred.remove(&message.topic, message.at);
        }
    }
}
