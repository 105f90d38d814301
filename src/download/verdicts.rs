//! What to do with a verdict, in one place: the live path (the writer, in poll order) and the
//! retries of messages that waited for their key (held in memory or kept in `deferred/`) all
//! go through [`Verdicts::apply`], so a chunk, a skip, a bad message or a message of another
//! format is counted, logged and kept the same way whichever path it took.

use std::io;

use tracing::{debug, error};

use super::foreign::{Foreign, ForeignReport};
use super::offsets::ChunkFile;
use super::rejects::KeptAside;
use super::stats::DownloadStats;
use super::verify::{Formats, Verdict};
use crate::contract::{Accepted, ChunkSink, MessagePosition, RawMessage, VerifiedChunk};

/// What applying a verdict left to the caller.
#[derive(Debug)]
pub enum Applied {
    /// A chunk the sink took (or recognised): its file, for the commit tracking.
    Chunk(ChunkFile),
    /// Counted, and kept aside if bad: nothing more to do.
    Done,
    /// Cannot be opened yet: the caller holds it, keeps it, or leaves it where it is.
    NotYet {
        /// Why, for the log.
        reason: String,
        /// The message as received.
        message: RawMessage,
    },
}

/// The writer's handling of verdicts: its counters, the folders bad and waiting messages are
/// kept in, and what it has already explained about messages of other formats.
pub struct Verdicts<'a> {
    stats: &'a DownloadStats,
    /// Where bad (`rejected/`) and not-yet-openable (`deferred/`) messages go.
    pub kept: KeptAside,
    /// The formats read and whether messages are decrypted: to recognise messages of another
    /// format among the bad ones.
    formats: Formats,
    decrypting: bool,
    foreign: ForeignReport,
}

impl<'a> Verdicts<'a> {
    /// Verdicts counted in `stats`, kept in `kept`; `formats` and `decrypting` describe what
    /// this downloader reads.
    pub fn new(
        stats: &'a DownloadStats,
        kept: KeptAside,
        formats: Formats,
        decrypting: bool,
    ) -> Self {
        Verdicts {
            stats,
            kept,
            formats,
            decrypting,
            foreign: ForeignReport::default(),
        }
    }

    /// The counters verdicts are counted in.
    pub fn stats(&self) -> &'a DownloadStats {
        self.stats
    }

    /// Applies `verdict` on the message read from `topic` at `at`: a chunk goes to `sink`,
    /// a skip is counted, a bad message is counted, reported and kept in `rejected/` (once: a
    /// message read again behind an unfinished file is recognised as kept already).
    pub fn apply(
        &mut self,
        verdict: Verdict,
        topic: &str,
        at: MessagePosition,
        sink: &mut impl ChunkSink,
    ) -> io::Result<Applied> {
        let stats = self.stats;
        match verdict {
            Verdict::Chunk(mut chunk) => {
                return accept(&mut chunk, topic, at, sink, stats).map(Applied::Chunk)
            }
            Verdict::Skip => DownloadStats::add(&stats.skipped_messages, 1),
            Verdict::NotForUs => DownloadStats::add(&stats.other_hosts_messages, 1),
            Verdict::Defer { reason, message } => return Ok(Applied::NotYet { reason, message }),
            Verdict::Reject { .. } if self.kept.rejected.already_kept(topic, at) => {
                debug!(topic, partition = at.partition, offset = at.offset, "bad message read again (an unfinished file held the committed offset before it); already kept aside");
                DownloadStats::add(&stats.skipped_messages, 1)
            }
            Verdict::Reject {
                kind,
                reason,
                message,
            } => {
                DownloadStats::add(&stats.rejected_messages, 1);
                DownloadStats::add(&stats.rejected_by_kind[kind.index()], 1);
                let foreign = Foreign::of(&message, self.formats, self.decrypting);
                self.foreign.rejected(foreign, topic, at, &reason);
                let (key, value) = (message.key.as_deref(), message.value.as_deref());
                self.kept.rejected.keep(topic, at, key, value, &reason);
            }
        }
        Ok(Applied::Done)
    }
}

/// Hands one verified chunk to the sink; returns the file it is a chunk of.
fn accept(
    chunk: &mut VerifiedChunk,
    topic: &str,
    at: MessagePosition,
    sink: &mut impl ChunkSink,
    stats: &DownloadStats,
) -> io::Result<ChunkFile> {
    match sink.accept(chunk)? {
        Accepted::Written | Accepted::Completed => {}
        Accepted::Duplicate | Accepted::AlreadyComplete | Accepted::Superseded => {
            DownloadStats::add(&stats.duplicate_chunks, 1)
        }
        Accepted::NotWanted => DownloadStats::add(&stats.skipped_messages, 1),
        Accepted::HashMismatch => {
            error!(topic, partition = at.partition, offset = at.offset, path = %chunk.version.relative, "file failed whole-file verification")
        }
    }
    Ok(ChunkFile {
        id: std::mem::take(&mut chunk.id),
        relative: std::mem::take(&mut chunk.version.relative),
    })
}
