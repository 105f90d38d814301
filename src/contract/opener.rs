//! What a download reads before decoding, and the step that opens it (decryption, selection
//! by header): the seam download, targeting and crypto share.

use super::MessagePosition;

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

    /// Opens a message retried after it was set aside as `NotYet`. It was selected by header
    /// when first read, and a message kept on disk has lost its headers, so an opener that
    /// selects by header passes it straight to the next step.
    fn open_kept(&self, message: RawMessage, at: MessagePosition) -> Opened {
        self.open(message, at)
    }

    /// Grows whenever something arrives that may let a `NotYet` message open (a decryption
    /// key); kept messages are retried when it changes.
    fn generation(&self) -> u64 {
        0
    }

    /// Whether this opener decrypts (so an encrypted message it rejects was not simply
    /// unexpected; see [`crate::download::foreign`]).
    fn decrypts(&self) -> bool {
        false
    }
}

/// Plaintext topics: every message is readable as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Plaintext;

impl Opener for Plaintext {
    fn open(&self, message: RawMessage, _at: MessagePosition) -> Opened {
        Opened::Readable(message)
    }
}
