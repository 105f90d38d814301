//! The verify stage of the download pipeline, CPU-heavy and stateless: *open* the message
//! (the seam for decryption and per-host selection), decode the chunk, validate its path and
//! sizes, and check its SHA-512. Its result is a [`Verdict`] the writer acts on.

use std::ops::Range;

use regex::Regex;

use super::partial::FileVersion;
use super::sink::VerifiedChunk;
use super::validate::validate;
use crate::chunk::decode_value;
use crate::chunk::hash::{sha512, to_hex};
use crate::kafka::MessagePosition;

/// A message as it came from Kafka: key, value and headers, all optional bytes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawMessage {
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The message value.
    pub value: Option<Vec<u8>>,
    /// Headers in the order they came (names are not unique in Kafka).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What opening a message gave.
#[derive(Debug)]
pub enum Opened {
    /// A readable chunk message (plaintext key and value).
    Readable(RawMessage),
    /// Not meant for this downloader (e.g. addressed to another host): skipped, counted, and
    /// its offset committed.
    NotForUs,
    /// Cannot be opened *yet* (e.g. its decryption key has not arrived): kept durably aside so
    /// it can be opened later; its offset may be committed.
    NotYet {
        /// Why, for the log.
        reason: String,
        /// The message as received.
        message: RawMessage,
    },
    /// Can never be opened (tampered ciphertext, unknown sender): rejected like any bad
    /// message.
    Unreadable {
        /// Why, for the log and the `.txt` kept beside it.
        reason: String,
        /// The message as received.
        message: RawMessage,
    },
}

/// The step before decoding: decryption, selection by header. Runs on the verify threads.
pub trait Opener: Send + Sync {
    /// Opens the message read at `at`.
    fn open(&self, message: RawMessage, at: MessagePosition) -> Opened;
}

/// Plaintext topics: every message is readable as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Plaintext;

impl Opener for Plaintext {
    fn open(&self, message: RawMessage, _at: MessagePosition) -> Opened {
        Opened::Readable(message)
    }
}

/// What verification decided.
#[derive(Debug)]
pub enum Verdict {
    /// A valid chunk, for the sink.
    Chunk(Box<VerifiedChunk>),
    /// Not wanted here (it does not match --download-regex): counted as skipped.
    Skip,
    /// Addressed to other hosts: counted apart, never written anywhere.
    NotForUs,
    /// Not openable yet: kept aside until it can be opened.
    Defer {
        /// Why.
        reason: String,
        /// The message as received.
        message: RawMessage,
    },
    /// Not a valid chunk: kept aside with the reason.
    Reject {
        /// Why.
        reason: String,
        /// The message as received.
        message: RawMessage,
    },
}

/// Opens, decodes, validates and hash-checks one message read at `at`. `regex` keeps only
/// files whose relative path it matches.
pub fn verify(
    message: RawMessage,
    at: MessagePosition,
    opener: &dyn Opener,
    regex: Option<&Regex>,
) -> Verdict {
    let message = match opener.open(message, at) {
        Opened::Readable(m) => m,
        Opened::NotForUs => return Verdict::NotForUs,
        Opened::NotYet { reason, message } => return Verdict::Defer { reason, message },
        Opened::Unreadable { reason, message } => return Verdict::Reject { reason, message },
    };
    let reject = |reason: String, message: RawMessage| Verdict::Reject { reason, message };
    let Some(payload) = message.value.as_deref() else {
        return reject("message has no value".into(), message);
    };
    let decoded = match decode_value(payload) {
        Ok(d) => d,
        Err(e) => return reject(format!("not an OpenMSIStream file chunk: {e}"), message),
    };
    let destination = match validate(&decoded) {
        Ok(d) => d,
        Err(e) => return reject(format!("invalid chunk: {e}"), message),
    };
    if regex.is_some_and(|re| !re.is_match(&destination.relative)) {
        return Verdict::Skip;
    }
    if sha512(decoded.data) != decoded.chunk_hash {
        let reason = format!(
            "chunk {} of {} of {} fails its SHA-512 check (corrupted in transit or by the producer)",
            decoded.chunk_i, decoded.n_total_chunks, destination.relative
        );
        return reject(reason, message);
    }
    let start = decoded.data.as_ptr() as usize - payload.as_ptr() as usize;
    let data: Range<usize> = start..start + decoded.data.len();
    let version = FileVersion {
        relative: destination.relative,
        file_hash: to_hex(&decoded.file_hash),
        n_total_chunks: decoded.n_total_chunks,
        file_mtime: decoded.file_mtime,
    };
    let (chunk_i, offset) = (decoded.chunk_i, decoded.offset);
    let whole_file_checked = decoded.n_total_chunks == 1
        && decoded.offset == 0
        && decoded.chunk_hash == decoded.file_hash;
    let payload = message.value.unwrap_or_default();
    Verdict::Chunk(Box::new(VerifiedChunk {
        id: version.id(),
        version,
        path: destination.path,
        chunk_i,
        offset,
        payload,
        data,
        message: at,
        whole_file_checked,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defers everything with a header `key-id`, and refuses everything with `tampered`.
    struct TestOpener;

    impl Opener for TestOpener {
        fn open(&self, message: RawMessage, _at: MessagePosition) -> Opened {
            let has = |name: &str| message.headers.iter().any(|(n, _)| n == name);
            if has("tampered") {
                Opened::Unreadable {
                    reason: "bad ciphertext".into(),
                    message,
                }
            } else if has("key-id") {
                Opened::NotYet {
                    reason: "key not here yet".into(),
                    message,
                }
            } else if has("other-host") {
                Opened::NotForUs
            } else {
                Opened::Readable(message)
            }
        }
    }

    const AT: MessagePosition = MessagePosition {
        partition: 0,
        offset: 7,
    };

    fn with_header(name: &str) -> RawMessage {
        RawMessage {
            key: Some(b"k".to_vec()),
            value: Some(b"not a chunk".to_vec()),
            headers: vec![(name.into(), b"1".to_vec())],
        }
    }

    #[test]
    fn the_opener_decides_before_decoding_and_keeps_the_message_for_later() {
        match verify(with_header("key-id"), AT, &TestOpener, None) {
            Verdict::Defer { reason, message } => {
                assert_eq!(reason, "key not here yet");
                assert_eq!(message, with_header("key-id"));
            }
            other => panic!("{other:?}"),
        }
        match verify(with_header("tampered"), AT, &TestOpener, None) {
            Verdict::Reject { reason, .. } => assert_eq!(reason, "bad ciphertext"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verify(with_header("other-host"), AT, &TestOpener, None),
            Verdict::NotForUs
        ));
        // Readable but not a chunk: the ordinary decoding rejects it.
        match verify(with_header("x"), AT, &Plaintext, None) {
            Verdict::Reject { reason, message } => {
                assert!(
                    reason.starts_with("not an OpenMSIStream file chunk"),
                    "{reason}"
                );
                assert_eq!(message.headers, vec![("x".to_string(), b"1".to_vec())]);
            }
            other => panic!("{other:?}"),
        }
    }
}
