//! Parts sent while a large file is still arriving: the bytes of each verified chunk, in file
//! order, are gathered into parts and handed to a thread that uploads them, so a large file's
//! upload overlaps its download instead of following it. The object is completed only once the
//! reassembler has verified the whole file's SHA-512 (at publication): before that the parts
//! are an unfinished multipart upload, journaled, aborted if the file fails or the process
//! stops. A file whose chunks come out of order, that resumed from staging, or that arrives
//! while two others stream, is uploaded at publication instead ([`super::upload`]).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{JoinHandle, ScopedJoinHandle};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::client::S3Client;
use super::upload::{md5_of, Journal, ObjectWriter, UploadError};
use crate::chunk::hash::to_hex;
use crate::contract::{PublishedFile, VerifiedChunk};

/// Files streamed at once (each holds up to [`PARTS_IN_FLIGHT`] + 1 parts in memory).
const MAX_STREAMS: usize = 2;

/// Parts of one stream uploading at once. With the part being filled, a stream holds at most
/// one more part than this in memory: the thread takes a part only when a slot is free.
const PARTS_IN_FLIGHT: usize = 3;

/// Which file version: relative path and whole-file hash (what a publication names).
fn version_key(relative: &str, sha512: &str) -> String {
    format!("{relative}\n{sha512}")
}

/// What the upload thread did.
struct SentParts {
    upload_id: String,
    etags: Vec<String>,
    md5s: Vec<u8>,
    bytes: u64,
}

/// One file being streamed.
struct Stream {
    key: String,
    next_offset: u64,
    buffer: Vec<u8>,
    parts: Option<SyncSender<Vec<u8>>>,
    thread: JoinHandle<Result<SentParts, UploadError>>,
}

/// A file that is not streamed (decided at its first chunk, kept so it is not reconsidered).
enum State {
    Streaming(Box<Stream>),
    NotStreamed,
}

/// The streams of one sink.
pub struct Streams {
    client: Arc<S3Client>,
    journal: Arc<Journal>,
    part_size: usize,
    cancel: CancellationToken,
    files: HashMap<String, State>,
}

/// A streamed file completed into its object.
pub enum Finished {
    /// The object is complete (its ETag checked); the caller confirms it with a HEAD.
    Completed,
    /// Not streamed, or the stream failed (logged): upload it the usual way.
    NotStreamed,
}

impl Streams {
    pub fn new(
        client: Arc<S3Client>,
        journal: Arc<Journal>,
        part_size: usize,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            client,
            journal,
            part_size,
            cancel,
            files: HashMap::new(),
        }
    }

    /// Takes a chunk the reassembler has just written; `key` is its object's key.
    pub fn take(&mut self, chunk: &VerifiedChunk, key: impl FnOnce() -> String) {
        let id = version_key(&chunk.version.relative, &chunk.version.file_hash);
        let data = &chunk.payload[chunk.data.clone()];
        if !self.files.contains_key(&id) {
            let state = self.start(chunk, data.len(), key());
            self.files.insert(id.clone(), state);
        }
        let Some(State::Streaming(stream)) = self.files.get_mut(&id) else {
            return;
        };
        if chunk.offset < stream.next_offset {
            return; // already taken
        }
        if chunk.offset > stream.next_offset {
            debug!(
                key = stream.key,
                "chunks out of order: the file is uploaded once it is whole"
            );
            self.give_up(&id);
            return;
        }
        stream.buffer.extend_from_slice(data);
        stream.next_offset += data.len() as u64;
        while stream.buffer.len() >= self.part_size {
            let rest = stream.buffer.split_off(self.part_size);
            let part = std::mem::replace(&mut stream.buffer, rest);
            let sent = stream
                .parts
                .as_ref()
                .is_some_and(|tx| tx.send(part).is_ok());
            if !sent {
                // The thread ended early (its error is reported when the file is published).
                stream.parts = None;
                break;
            }
        }
    }

    /// Whether to stream the file of `chunk` (its first chunk taken here), and if so, the
    /// stream with its thread.
    fn start(&self, chunk: &VerifiedChunk, chunk_len: usize, key: String) -> State {
        let streaming = self
            .files
            .values()
            .filter(|s| matches!(s, State::Streaming(_)))
            .count();
        let estimated = chunk
            .version
            .n_total_chunks
            .saturating_mul(chunk_len as u64);
        if chunk.offset != 0 || estimated < 2 * self.part_size as u64 || streaming >= MAX_STREAMS {
            return State::NotStreamed;
        }
        // The object already there with these bytes: nothing to stream (skipped at
        // publication).
        if let Ok(Some(info)) = self.client.head(&key) {
            if info.sha512.as_deref() == Some(chunk.version.file_hash.as_str()) {
                return State::NotStreamed;
            }
        }
        let (tx, rx) = mpsc::sync_channel(0);
        let (client, journal, cancel) = (
            Arc::clone(&self.client),
            Arc::clone(&self.journal),
            self.cancel.clone(),
        );
        let (thread_key, sha512) = (key.clone(), chunk.version.file_hash.clone());
        let thread = std::thread::Builder::new()
            .name("s3-parts".into())
            .spawn(move || send_parts(&client, &journal, &cancel, &thread_key, &sha512, rx))
            .expect("cannot start a thread");
        State::Streaming(Box::new(Stream {
            key,
            next_offset: 0,
            buffer: Vec::with_capacity(self.part_size),
            parts: Some(tx),
            thread,
        }))
    }

    /// Stops streaming a file; its parts, if any, are aborted.
    pub fn give_up(&mut self, id: &str) {
        if let Some(State::Streaming(stream)) =
            self.files.insert(id.to_string(), State::NotStreamed)
        {
            self.abort(*stream);
        }
    }

    /// Stops streaming the version `relative`/`sha512` (it failed verification, or was
    /// superseded).
    pub fn forget(&mut self, relative: &str, sha512: &str) {
        let id = version_key(relative, sha512);
        self.give_up(&id);
        self.files.remove(&id);
    }

    fn abort(&self, mut stream: Stream) {
        stream.parts = None;
        if let Ok(Ok(sent)) = stream.thread.join() {
            let writer = self.writer();
            writer.abort(&stream.key, &sent.upload_id);
        }
    }

    fn writer(&self) -> ObjectWriter<'_> {
        ObjectWriter {
            client: &self.client,
            journal: &self.journal,
            part_size: self.part_size,
            cancel: &self.cancel,
        }
    }

    /// The file was published (verified whole): sends its last part and completes its
    /// object, if it was streamed.
    pub fn finish(&mut self, file: &PublishedFile) -> Result<Finished, UploadError> {
        let id = version_key(&file.relative, &file.file_hash);
        let Some(State::Streaming(stream)) = self.files.remove(&id) else {
            return Ok(Finished::NotStreamed);
        };
        debug!(key = stream.key, "file published: sending its last part");
        let mut stream = *stream;
        if !stream.buffer.is_empty() {
            let last = std::mem::take(&mut stream.buffer);
            if let Some(tx) = &stream.parts {
                let _ = tx.send(last);
            }
        }
        let complete = stream.next_offset == file.size && stream.parts.is_some();
        stream.parts = None;
        let sent = match stream.thread.join() {
            Ok(Ok(sent)) => sent,
            Ok(Err(UploadError::Cancelled { key })) => return Err(UploadError::Cancelled { key }),
            Ok(Err(e)) => {
                warn!(key = stream.key, error = %e, "streaming the parts failed; uploading the whole file again");
                return Ok(Finished::NotStreamed);
            }
            Err(_) => return Ok(Finished::NotStreamed),
        };
        debug!(
            key = stream.key,
            parts = sent.etags.len(),
            "every part sent"
        );
        let writer = self.writer();
        if !complete || sent.bytes != file.size {
            writer.abort(&stream.key, &sent.upload_id);
            return Ok(Finished::NotStreamed);
        }
        let expected = format!("{}-{}", to_hex(&md5_of(&sent.md5s)), sent.etags.len());
        match writer.complete(&stream.key, &sent.upload_id, &sent.etags, &expected) {
            Ok(()) => Ok(Finished::Completed),
            Err(UploadError::Cancelled { key }) => Err(UploadError::Cancelled { key }),
            Err(e) => {
                warn!(key = stream.key, error = %e, "completing the streamed upload failed; uploading the whole file again");
                writer.abort(&stream.key, &sent.upload_id);
                Ok(Finished::NotStreamed)
            }
        }
    }
}

impl Drop for Streams {
    /// Streams of files not published (the process is stopping, or they failed): their parts
    /// are aborted now (or, if the server is down, at the next start from the journal).
    fn drop(&mut self) {
        for (_, state) in std::mem::take(&mut self.files) {
            if let State::Streaming(stream) = state {
                self.abort(*stream);
            }
        }
    }
}

/// The upload thread of one stream: starts the multipart upload (journaled), then sends the
/// parts it is given, up to [`PARTS_IN_FLIGHT`] at once (one connection each, as S3 clients
/// do: one request at a time leaves the server and this process waiting on each other), each
/// with its own retries, until the sender is dropped.
fn send_parts(
    client: &S3Client,
    journal: &Journal,
    cancel: &CancellationToken,
    key: &str,
    sha512: &str,
    parts: Receiver<Vec<u8>>,
) -> Result<SentParts, UploadError> {
    let writer = ObjectWriter {
        client,
        journal,
        part_size: 0,
        cancel,
    };
    let upload_id = writer.start_multipart(key, sha512)?;
    let result = std::thread::scope(|scope| {
        let mut in_flight = VecDeque::new();
        let mut sent = SentParts {
            upload_id: upload_id.clone(),
            etags: Vec::new(),
            md5s: Vec::new(),
            bytes: 0,
        };
        // Waits for the oldest part in flight, so parts are recorded in order.
        let settle = |in_flight: &mut VecDeque<ScopedJoinHandle<'_, PartResult>>,
                      sent: &mut SentParts| {
            let handle = in_flight.pop_front().expect("a part in flight");
            let (etag, md5, len) = handle.join().expect("a part upload panicked")?;
            sent.etags.push(etag);
            sent.md5s.extend_from_slice(&md5);
            sent.bytes += len;
            Ok::<(), UploadError>(())
        };
        let mut number = 0u16;
        loop {
            // A free slot first, so no part waits here in memory while others are sent.
            if in_flight.len() == PARTS_IN_FLIGHT {
                settle(&mut in_flight, &mut sent)?;
            }
            let part = match parts.recv_timeout(Duration::from_millis(200)) {
                Ok(part) => part,
                Err(mpsc::RecvTimeoutError::Timeout) if cancel.is_cancelled() => {
                    return Err(UploadError::Cancelled { key: key.into() })
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            number += 1;
            let (writer, upload_id) = (&writer, &upload_id);
            in_flight.push_back(scope.spawn(move || {
                let md5 = md5_of(&part);
                let etag = writer.send_part(key, upload_id, number, &part, &md5)?;
                debug!(key, number, "part sent");
                Ok((etag, md5, part.len() as u64))
            }));
        }
        while !in_flight.is_empty() {
            settle(&mut in_flight, &mut sent)?;
        }
        Ok(sent)
    });
    if result.is_err() {
        // Its parts would otherwise stay on the server (the journal has it if this fails
        // too). The scope has joined every part thread by now.
        writer.abort(key, &upload_id);
    }
    result
}

/// What one part's upload gives: its ETag, MD5 and length.
type PartResult = Result<(String, [u8; 16], u64), UploadError>;
