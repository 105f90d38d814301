//! Where verified chunks go: the seam between the download pipeline (poll, open, verify, keep
//! poll order, commit) and what is done with the data.
//!
//! The pipeline only needs four things of a sink: take a chunk, say whether a file is still
//! unfinished (its first offset then pins the partition's committed offset, see
//! `download::offsets`), say how much is waiting for a flush, and flush. *Durable* is whatever
//! the sink means by it: for `download::reassembler::Reassembler` (the output folder) the bytes
//! are fsynced in staging files; for `relay::sink::RelaySink`, which re-publishes messages to
//! other topics, it means acknowledged by the destination broker. Either way the pipeline commits an offset only after the
//! flush that made its chunk durable returned, so `download::offsets::CommitTracker` works
//! unchanged for every sink.

use std::io;
use std::ops::Range;
use std::path::PathBuf;

use super::{FileVersion, MessagePosition};

/// A chunk that passed opening, decoding, validation and its hash check.
#[derive(Debug, Clone)]
pub struct VerifiedChunk {
    /// Staging id of the file version ([`FileVersion::id`]).
    pub id: String,
    /// The file version the chunk belongs to.
    pub version: FileVersion,
    /// Relative native path of the rebuilt file.
    pub path: PathBuf,
    /// 1-based chunk index.
    pub chunk_i: u64,
    /// Byte offset in the file.
    pub offset: u64,
    /// The whole message value (kept to avoid copying the data out of it).
    pub payload: Vec<u8>,
    /// The message key as opened (a sink that passes messages on, like the relay, sends it
    /// unchanged; a rejected chunk is kept with it).
    pub key: Option<Vec<u8>>,
    /// The message headers as opened (Knot Resolver's part headers, `hostname`).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Where the chunk data sits in `payload`.
    pub data: Range<usize>,
    /// The Kafka message it came in.
    pub message: MessagePosition,
    /// The chunk is the whole file (one chunk, at offset 0) and its checked hash is the
    /// file's hash: the file is verified already.
    pub whole_file_checked: bool,
}

/// What happened to one chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Taken (written to its staging file).
    Written,
    /// Already taken (redelivery or duplicate upload).
    Duplicate,
    /// The file was already published with this content.
    AlreadyComplete,
    /// Taken, and the file is complete and verified; it is published at the next flush.
    Completed,
    /// Taken, the file is complete, and its whole-file hash does not match.
    HashMismatch,
    /// Taken and complete, but an older version than the one in place (read again after a
    /// restart): discarded.
    Superseded,
    /// Not wanted by this sink (a relay with no route for the file): counted as skipped.
    NotWanted,
}

/// A file published by a flush: what a post-publish step (hooks, notifications) is told.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedFile {
    /// Relative path, `/`-separated.
    pub relative: String,
    /// Where it now is.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-512 of its content (verified).
    pub file_hash: String,
    /// From the first chunk this process took of it to its publication.
    pub since_first_chunk: std::time::Duration,
}

/// Where verified chunks go, with accept/flush semantics (see the module docs).
pub trait ChunkSink {
    /// Where the sink puts data, for the line that stops the pipeline when it cannot ("the
    /// output folder", "the destination topic").
    const DESTINATION: &'static str;

    /// Takes one verified chunk. An error stops the pipeline (nothing after the last flush is
    /// committed); per-file problems are reported through [`Accepted`] instead. A sink may
    /// set the chunk's `id` and `version` for versions that carry no identity of their own
    /// (Knot parts without a whole-file hash); the pipeline reads them after the call.
    fn accept(&mut self, chunk: &mut VerifiedChunk) -> io::Result<Accepted>;

    /// True while the file version with staging id `id` has chunks taken but is not whole.
    fn is_in_progress(&self, id: &str) -> bool;

    /// Chunk bytes taken since the last flush.
    fn unflushed_bytes(&self) -> u64;

    /// For a file version still in progress: which of its chunks are missing, for a message
    /// ("chunks 3, 7-9 of 60"). None where the sink does not keep files.
    fn missing_chunks(&self, _id: &str) -> Option<String> {
        None
    }

    /// Makes everything taken so far durable and publishes the files completed; returns them.
    /// After it returns Ok, the offsets of every chunk taken before it may be committed.
    fn flush(&mut self) -> io::Result<Vec<PublishedFile>>;
}
