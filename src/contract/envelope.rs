//! What an upload hands the producer, and the transforms every chunk message may pass
//! through first (`--to-host` headers, encryption): the seam upload, targeting and crypto
//! share.

/// A finished chunk message on its way to the producer.
#[derive(Debug, Default)]
pub struct ChunkMessage {
    /// Partition (chosen by the file's path).
    pub partition: i32,
    /// Message key bytes.
    pub key: Vec<u8>,
    /// Message value bytes.
    pub value: Vec<u8>,
    /// Message headers (none for openmsi's own plaintext chunks).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A transform every chunk message passes through before it is produced (encryption, extra
/// headers). It may replace the key and value and add headers; it must not change the
/// partition, so a file's chunks stay together.
pub trait Envelope: Send + Sync {
    /// Transforms `message` in place; an error fails the file with the reason.
    fn seal(&self, message: &mut ChunkMessage) -> Result<(), String>;
    /// The most bytes the transform adds to a message's key, value and headers together.
    fn overhead(&self) -> usize;
}
