//! Wire format of one data file chunk (DESIGN.md section 2): the Kafka key string and the
//! MessagePack value, byte-compatible with OpenMSIStream 1.8.8. Pure: no I/O.
//!
//! INTERFACE CONTRACT (filled in by the wire-format work; keep these names and signatures):

/// SHA-512 digest length in bytes.
pub const HASH_LEN: usize = 64;
/// A SHA-512 digest.
pub type Sha512Digest = [u8; HASH_LEN];
/// Default chunk size, as OpenMSIStream: 512 KiB.
pub const DEFAULT_CHUNK_SIZE: usize = 524_288;
