//! The verify stage of the download pipeline, CPU-heavy and stateless: *open* the message
//! (the seam for decryption and per-host selection), decode the chunk (openmsi's format, or
//! Knot Resolver's part headers), validate its path and sizes, and check its SHA-512. Its result is a [`Verdict`] the writer acts on.

use std::ops::Range;

use regex::Regex;

use super::validate::{validate, validate_knot};
use crate::chunk::batch_hash::sha512_each;
use crate::chunk::hash::{sha512, to_hex};
use crate::chunk::Sha512Digest;
use crate::chunk::{decode_value, knot};
use crate::contract::VerifiedChunk;
use crate::contract::{FileVersion, PartLayout};
use crate::contract::{MessagePosition, Opened, Opener, RawMessage};

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
        /// What kind of problem (the label of the rejected-messages metric).
        kind: RejectKind,
        /// Why.
        reason: String,
        /// The message as received.
        message: RawMessage,
    },
}

/// Why a message was rejected, in a few kinds (counted apart in the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// Not a chunk or file part at all (no value, not msgpack, no part headers).
    NotAChunk,
    /// A chunk whose fields are unusable (unsafe path, impossible sizes or indices).
    Invalid,
    /// The data does not match its SHA-512.
    Checksum,
    /// Could not be opened: undecryptable or tampered ciphertext.
    Unreadable,
}

impl RejectKind {
    /// Every kind, in the order of [`RejectKind::index`].
    pub const ALL: [RejectKind; 4] = [
        RejectKind::NotAChunk,
        RejectKind::Invalid,
        RejectKind::Checksum,
        RejectKind::Unreadable,
    ];

    /// Position in [`RejectKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RejectKind::NotAChunk => "not_a_chunk",
            RejectKind::Invalid => "invalid",
            RejectKind::Checksum => "checksum",
            RejectKind::Unreadable => "unreadable",
        }
    }
}

/// Which message formats a downloader takes (`--format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Formats {
    /// openmsi's and OpenMSIStream's chunks only.
    #[default]
    Openmsi,
    /// Knot Resolver's file parts only.
    Knot,
    /// Both on one topic, told apart per message: one with any of Knot's part headers is a
    /// Knot part, anything else an openmsi chunk.
    Auto,
}

/// What the verify stage keeps: the formats it reads and the files it wants.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The message formats taken.
    pub formats: Formats,
    /// Only files whose relative path it matches are rebuilt.
    pub regex: Option<Regex>,
}

/// Opens, decodes, validates and hash-checks messages (each read at its position): one verdict
/// each, in order. The chunk hashes of the batch are computed side by side (see
/// [`crate::chunk::batch_hash`]), which costs less CPU than one by one.
pub fn verify_batch(
    messages: Vec<(RawMessage, MessagePosition)>,
    opener: &dyn Opener,
    selection: &Selection,
) -> Vec<Verdict> {
    let examined = messages
        .into_iter()
        .map(|(message, at)| examine(opener.open(message, at), at, selection))
        .collect();
    check_hashes(examined)
}

/// [`verify_batch`] for one message set aside earlier because it could not be opened yet (see
/// [`Opener::open_kept`]).
pub fn verify_kept(
    message: RawMessage,
    at: MessagePosition,
    opener: &dyn Opener,
    selection: &Selection,
) -> Verdict {
    let examined = examine(opener.open_kept(message, at), at, selection);
    check_hashes(vec![examined])
        .pop()
        .expect("one verdict per message")
}

/// A message decoded and validated: decided, or a chunk whose SHA-512 is still to be checked.
enum Examined {
    Decided(Verdict),
    /// `chunk.payload[chunk.data]` must hash to `expected`.
    HashToCheck {
        chunk: Box<VerifiedChunk>,
        expected: Sha512Digest,
        /// How to name the chunk if it fails: "chunk I of N of PATH".
        chunk_i: u64,
    },
}

/// Checks the pending chunk hashes of a batch together; a chunk that fails becomes a rejection.
fn check_hashes(examined: Vec<Examined>) -> Vec<Verdict> {
    let data: Vec<&[u8]> = examined
        .iter()
        .filter_map(|e| match e {
            Examined::HashToCheck { chunk, .. } => Some(&chunk.payload[chunk.data.clone()]),
            Examined::Decided(_) => None,
        })
        .collect();
    let mut digests = sha512_each(&data).into_iter();
    examined
        .into_iter()
        .map(|e| match e {
            Examined::Decided(verdict) => verdict,
            Examined::HashToCheck {
                chunk,
                expected,
                chunk_i,
            } => {
                if digests.next() == Some(expected) {
                    Verdict::Chunk(chunk)
                } else {
                    let reason = format!(
                        "chunk {chunk_i} of {} of {} fails its SHA-512 check (corrupted in transit \
                         or by the producer)",
                        chunk.version.n_total_chunks, chunk.version.relative
                    );
                    let message = RawMessage {
                        key: chunk.key,
                        value: Some(chunk.payload),
                        headers: chunk.headers,
                    };
                    Verdict::Reject {
                        kind: RejectKind::Checksum,
                        reason,
                        message,
                    }
                }
            }
        })
        .collect()
}

fn examine(opened: Opened, at: MessagePosition, selection: &Selection) -> Examined {
    let message = match opened {
        Opened::Readable(m) => m,
        Opened::NotForUs => return Examined::Decided(Verdict::NotForUs),
        Opened::NotYet { reason, message } => {
            return Examined::Decided(Verdict::Defer { reason, message })
        }
        Opened::Unreadable { reason, message } => {
            return Examined::Decided(Verdict::Reject {
                kind: RejectKind::Unreadable,
                reason,
                message,
            })
        }
    };
    let knot = match selection.formats {
        Formats::Openmsi => false,
        Formats::Knot => true,
        Formats::Auto => knot::has_part_headers(&message.headers),
    };
    if knot {
        Examined::Decided(verify_knot_part(message, at, selection.regex.as_ref()))
    } else {
        examine_chunk(message, at, selection.regex.as_ref())
    }
}

/// An openmsi chunk: decoded and validated; its own SHA-512 is checked by [`check_hashes`].
fn examine_chunk(message: RawMessage, at: MessagePosition, regex: Option<&Regex>) -> Examined {
    let reject = |kind: RejectKind, reason: String, message: RawMessage| {
        Examined::Decided(Verdict::Reject {
            kind,
            reason,
            message,
        })
    };
    let Some(payload) = message.value.as_deref() else {
        return reject(
            RejectKind::NotAChunk,
            "message has no value".into(),
            message,
        );
    };
    let decoded = match decode_value(payload) {
        Ok(d) => d,
        Err(e) => {
            let reason = format!("not an OpenMSIStream file chunk: {e}");
            return reject(RejectKind::NotAChunk, reason, message);
        }
    };
    let destination = match validate(&decoded) {
        Ok(d) => d,
        Err(e) => return reject(RejectKind::Invalid, format!("invalid chunk: {e}"), message),
    };
    if regex.is_some_and(|re| !re.is_match(&destination.relative)) {
        return Examined::Decided(Verdict::Skip);
    }
    let start = decoded.data.as_ptr() as usize - payload.as_ptr() as usize;
    let data: Range<usize> = start..start + decoded.data.len();
    let version = FileVersion {
        relative: destination.relative,
        file_hash: to_hex(&decoded.file_hash),
        n_total_chunks: decoded.n_total_chunks,
        file_mtime: decoded.file_mtime,
        layout: PartLayout::Offsets,
        started_at: None,
    };
    let (chunk_i, offset, expected) = (decoded.chunk_i, decoded.offset, decoded.chunk_hash);
    let whole_file_checked = decoded.n_total_chunks == 1
        && decoded.offset == 0
        && decoded.chunk_hash == decoded.file_hash;
    let RawMessage {
        key,
        value,
        headers,
    } = message;
    Examined::HashToCheck {
        chunk: Box::new(VerifiedChunk {
            id: version.id(),
            version,
            path: destination.path,
            chunk_i,
            offset,
            payload: value.unwrap_or_default(),
            data,
            key,
            headers,
            message: at,
            whole_file_checked,
        }),
        expected,
        chunk_i,
    }
}

/// A Knot Resolver file part: its headers read and validated. Parts carry no hash of their
/// own; a one-part file is checked against `file-sha512` here, a larger one when it is whole.
fn verify_knot_part(message: RawMessage, at: MessagePosition, regex: Option<&Regex>) -> Verdict {
    let reject = |kind: RejectKind, reason: String, message: RawMessage| Verdict::Reject {
        kind,
        reason,
        message,
    };
    let part = match knot::parse_part_headers(&message.headers) {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("not a Knot Resolver file part: {e}");
            return reject(RejectKind::NotAChunk, reason, message);
        }
    };
    let destination = match validate_knot(&part) {
        Ok(d) => d,
        Err(e) => {
            let reason = format!("invalid Knot Resolver file part: {e}");
            return reject(RejectKind::Invalid, reason, message);
        }
    };
    if regex.is_some_and(|re| !re.is_match(&destination.relative)) {
        return Verdict::Skip;
    }
    let data_len = message.value.as_ref().map_or(0, Vec::len);
    let one_part = part.total == 1;
    let whole_file_checked = match (one_part, &part.file_hash) {
        (true, Some(expected)) => {
            if sha512(message.value.as_deref().unwrap_or_default()) != *expected {
                let reason = format!(
                    "{} fails its SHA-512 check (corrupted in transit or by the producer)",
                    destination.relative
                );
                return reject(RejectKind::Checksum, reason, message);
            }
            true
        }
        _ => false,
    };
    let version = FileVersion {
        relative: destination.relative,
        file_hash: part
            .file_hash
            .as_ref()
            .map(|h| to_hex(h))
            .unwrap_or_default(),
        n_total_chunks: part.total,
        file_mtime: None,
        layout: PartLayout::Appended,
        started_at: None,
    };
    Verdict::Chunk(Box::new(VerifiedChunk {
        id: version.id(),
        version,
        path: destination.path,
        // The only part of a one-part file takes slot 1 whatever its base.
        chunk_i: if one_part { 1 } else { part.index + 1 },
        offset: 0,
        payload: message.value.unwrap_or_default(),
        data: 0..data_len,
        key: message.key,
        headers: message.headers,
        message: at,
        whole_file_checked,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One message through the batch path.
    fn verify(
        message: RawMessage,
        at: MessagePosition,
        opener: &dyn Opener,
        selection: &Selection,
    ) -> Verdict {
        verify_batch(vec![(message, at)], opener, selection)
            .pop()
            .expect("one verdict per message")
    }
    use crate::contract::Plaintext;

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
        match verify(
            with_header("key-id"),
            AT,
            &TestOpener,
            &Selection::default(),
        ) {
            Verdict::Defer { reason, message } => {
                assert_eq!(reason, "key not here yet");
                assert_eq!(message, with_header("key-id"));
            }
            other => panic!("{other:?}"),
        }
        match verify(
            with_header("tampered"),
            AT,
            &TestOpener,
            &Selection::default(),
        ) {
            Verdict::Reject { reason, .. } => assert_eq!(reason, "bad ciphertext"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verify(
                with_header("other-host"),
                AT,
                &TestOpener,
                &Selection::default()
            ),
            Verdict::NotForUs
        ));
        // Readable but not a chunk: the ordinary decoding rejects it.
        match verify(with_header("x"), AT, &Plaintext, &Selection::default()) {
            Verdict::Reject {
                reason, message, ..
            } => {
                assert!(
                    reason.starts_with("not an OpenMSIStream file chunk"),
                    "{reason}"
                );
                assert_eq!(message.headers, vec![("x".to_string(), b"1".to_vec())]);
            }
            other => panic!("{other:?}"),
        }
    }

    fn knot_message(pairs: &[(&str, &str)], value: &[u8]) -> RawMessage {
        RawMessage {
            key: Some(b"k".to_vec()),
            value: Some(value.to_vec()),
            headers: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn knot_selection(formats: Formats) -> Selection {
        Selection {
            formats,
            regex: None,
        }
    }

    fn rejection(verdict: Verdict) -> String {
        match verdict {
            Verdict::Reject { reason, .. } => reason,
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn knot_parts_are_read_by_knot_and_auto_only() {
        let hash = to_hex(&sha512(b"whole"));
        let m = knot_message(
            &[
                ("file-name", "conf/kresd.yaml"),
                ("total-chunks", "1"),
                ("chunk-index", "0"),
                ("file-sha512", &hash),
            ],
            b"whole",
        );
        for formats in [Formats::Knot, Formats::Auto] {
            match verify(m.clone(), AT, &Plaintext, &knot_selection(formats)) {
                Verdict::Chunk(c) => {
                    assert_eq!(c.version.relative, "conf/kresd.yaml");
                    assert_eq!(c.version.layout, PartLayout::Appended);
                    assert_eq!(c.version.file_hash, hash);
                    assert!(c.whole_file_checked);
                    assert_eq!(&c.payload[c.data.clone()], b"whole");
                }
                other => panic!("{other:?}"),
            }
        }
        let reason = rejection(verify(m, AT, &Plaintext, &Selection::default()));
        assert!(
            reason.starts_with("not an OpenMSIStream file chunk"),
            "{reason}"
        );
    }

    #[test]
    fn bad_knot_parts_are_rejected_with_the_reason() {
        let knot = knot_selection(Formats::Knot);
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("total-chunks", "1"), ("chunk-index", "0")],
                "`file-name` is missing",
            ),
            (
                &[
                    ("file-name", "a"),
                    ("total-chunks", "x"),
                    ("chunk-index", "0"),
                ],
                "not a decimal",
            ),
            (
                &[
                    ("file-name", "a"),
                    ("total-chunks", "2"),
                    ("chunk-index", "3"),
                ],
                "outside 0..=2",
            ),
            (
                &[
                    ("file-name", "a"),
                    ("total-chunks", "0"),
                    ("chunk-index", "0"),
                ],
                "zero or absurd",
            ),
            (
                &[
                    ("file-name", "a"),
                    ("total-chunks", "99999999999"),
                    ("chunk-index", "0"),
                ],
                "zero or absurd",
            ),
            (
                &[
                    ("file-name", "../etc/passwd"),
                    ("total-chunks", "1"),
                    ("chunk-index", "0"),
                ],
                "unsafe",
            ),
            (
                &[
                    ("file-name", "/etc/passwd"),
                    ("total-chunks", "1"),
                    ("chunk-index", "0"),
                ],
                "unsafe",
            ),
            (
                &[
                    ("file-name", ".openmsi/x"),
                    ("total-chunks", "1"),
                    ("chunk-index", "0"),
                ],
                "unsafe",
            ),
            (
                &[
                    ("file-name", "a\\..\\b"),
                    ("total-chunks", "1"),
                    ("chunk-index", "0"),
                ],
                "unsafe",
            ),
            (
                &[
                    ("file-name", "a"),
                    ("total-chunks", "1"),
                    ("chunk-index", "0"),
                    ("file-sha512", &"0".repeat(128)),
                ],
                "fails its SHA-512 check",
            ),
        ];
        for (headers, expected) in cases {
            let reason = rejection(verify(
                knot_message(headers, b"data"),
                AT,
                &Plaintext,
                &knot,
            ));
            assert!(reason.contains(expected), "{headers:?}: {reason}");
        }
        // Knot only: an openmsi-looking message without the headers is refused too.
        let reason = rejection(verify(knot_message(&[], b"x"), AT, &Plaintext, &knot));
        assert!(reason.contains("`file-name` is missing"), "{reason}");
    }
}
