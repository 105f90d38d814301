//! Messages of a format this downloader is not set up to read: Knot Resolver parts on a
//! default downloader, openmsi chunks on a `--format knot` one, encrypted records without a
//! `[kafkacrypto]` section. They are rejected like any bad message, but a warning per message
//! would bury the one thing the user needs: what the messages are and what to set. That is
//! said once per kind; the rest are counted (and logged at debug level).

use std::collections::HashSet;

use tracing::{debug, warn};

use super::verify::Formats;
use crate::chunk::knot;
use crate::contract::MessagePosition;
use crate::contract::RawMessage;

/// A recognised format this downloader does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Foreign {
    /// Knot Resolver file parts (its `file-name`/`chunk-index` headers), read with `--format
    /// openmsi`.
    KnotParts,
    /// openmsi/OpenMSIStream chunks (no Knot headers, a MessagePack array), read with
    /// `--format knot`.
    OpenmsiChunks,
    /// KafkaCrypto-encrypted records, read without a `[kafkacrypto]` section.
    Encrypted,
}

impl Foreign {
    /// What `message` is, when it is a format this downloader (`formats`, `decrypting`) does
    /// not read; None for anything else (a corrupt or hostile message is just rejected).
    pub fn of(message: &RawMessage, formats: Formats, decrypting: bool) -> Option<Foreign> {
        let value = message.value.as_deref().unwrap_or_default();
        if !decrypting && crate::crypto::record::parse(value).is_ok() {
            return Some(Foreign::Encrypted);
        }
        let knot_headers = knot::has_part_headers(&message.headers);
        match formats {
            Formats::Openmsi if knot_headers => Some(Foreign::KnotParts),
            Formats::Knot if !knot_headers && looks_like_a_chunk(value) => {
                Some(Foreign::OpenmsiChunks)
            }
            _ => None,
        }
    }

    /// What the messages are and what to set, for the one warning.
    pub fn advice(self) -> &'static str {
        match self {
            Foreign::KnotParts => "these messages are Knot Resolver file parts (they carry Knot's file-name and chunk-index headers), which the default --format openmsi does not read: run with --format knot, or --format auto for a topic that carries both",
            Foreign::OpenmsiChunks => "these messages are openmsi (OpenMSIStream) file chunks, which --format knot does not read: run with --format openmsi, or --format auto for a topic that carries both",
            Foreign::Encrypted => "these messages are end-to-end encrypted (KafkaCrypto records) and this downloader has no key: add a [kafkacrypto] section naming this machine's node to the config (see docs/ENCRYPTION.md)",
        }
    }
}

/// An openmsi chunk value starts with a MessagePack array of 9 or 10 elements.
fn looks_like_a_chunk(value: &[u8]) -> bool {
    matches!(value.first(), Some(0x99 | 0x9a))
}

/// The kinds already explained in this run.
#[derive(Debug, Default)]
pub struct ForeignReport {
    said: HashSet<Foreign>,
}

impl ForeignReport {
    /// Logs a rejected message: the advice the first time its kind is seen, a debug line after
    /// that; any other rejection as a warning with its reason.
    pub fn rejected(
        &mut self,
        foreign: Option<Foreign>,
        topic: &str,
        at: MessagePosition,
        reason: &str,
    ) {
        let (partition, offset) = (at.partition, at.offset);
        match foreign {
            Some(kind) if self.said.insert(kind) => warn!(
                topic,
                partition,
                offset,
                "message of another format skipped and kept in the rejected folder: {}. Further messages like it are counted, not logged",
                kind.advice()
            ),
            Some(_) => {
                debug!(topic, partition, offset, %reason, "message of another format skipped and kept aside")
            }
            None => {
                warn!(topic, partition, offset, %reason, "bad message skipped and kept in the rejected folder")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(value: &[u8], headers: &[(&str, &str)]) -> RawMessage {
        RawMessage {
            key: None,
            value: Some(value.to_vec()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn each_foreign_format_is_recognised_only_where_it_is_not_read() {
        let knot = message(
            b"zone data",
            &[
                ("file-name", "a.zone"),
                ("total-chunks", "1"),
                ("chunk-index", "0"),
            ],
        );
        assert_eq!(
            Foreign::of(&knot, Formats::Openmsi, false),
            Some(Foreign::KnotParts)
        );
        assert_eq!(Foreign::of(&knot, Formats::Knot, false), None);
        assert_eq!(Foreign::of(&knot, Formats::Auto, false), None);

        let chunk = message(&[0x9a, 0xa1, b'a'], &[]);
        assert_eq!(
            Foreign::of(&chunk, Formats::Knot, false),
            Some(Foreign::OpenmsiChunks)
        );
        assert_eq!(Foreign::of(&chunk, Formats::Openmsi, false), None);

        let mut record = vec![0x01, 0x93, 0xc4, 32];
        record.extend([7u8; 32]);
        record.extend([0xc4, 16]);
        record.extend([8u8; 16]);
        record.extend([0xc4, 20]);
        record.extend([9u8; 20]);
        let encrypted = message(&record, &[]);
        assert_eq!(
            Foreign::of(&encrypted, Formats::Openmsi, false),
            Some(Foreign::Encrypted)
        );
        // A downloader that decrypts rejected it for another reason (tampered): no advice.
        assert_eq!(Foreign::of(&encrypted, Formats::Openmsi, true), None);

        // Garbage is just a bad message.
        assert_eq!(
            Foreign::of(&message(b"\x01junk", &[]), Formats::Openmsi, false),
            None
        );
    }

    #[test]
    fn advice_is_given_once_per_kind() {
        let mut report = ForeignReport::default();
        let at = MessagePosition {
            partition: 0,
            offset: 1,
        };
        report.rejected(Some(Foreign::KnotParts), "t", at, "r");
        report.rejected(Some(Foreign::KnotParts), "t", at, "r");
        report.rejected(Some(Foreign::Encrypted), "t", at, "r");
        assert_eq!(report.said.len(), 2);
    }
}
