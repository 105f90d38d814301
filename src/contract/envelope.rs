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
/// partition, so a file's chunks stay together. Sealing cannot fail: whatever can go wrong (a
/// node not entitled to the topic, a key exchange that does not start) is found when the
/// envelope is built, before anything is read.
pub trait Envelope: Send + Sync {
    /// Transforms `message` in place.
    fn seal(&self, message: &mut ChunkMessage);
    /// The most bytes the transform adds to a message's key, value and headers together.
    fn overhead(&self) -> usize;
}
