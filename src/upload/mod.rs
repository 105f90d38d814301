//! Uploading: naming a file relative to its upload root, hashing it, and producing its chunks.
//!
//! - [`source`]: the file as the wire format names it (folder relative to the root).
//! - [`hashing`]: the whole-file SHA-512 and the chunk SHA-512s in one read.
//! - [`send`]: the one send path (`queue_file`, every message through `emit`).
//! - [`envelopes`]: the envelopes a command's messages pass through (`--to-host`, encryption).
//! - [`file`]: `upload-file`; [`directory`]: `upload-directory`.
//! - [`error`]: why one file's upload did not complete.

pub mod directory;
pub mod envelopes;
pub mod error;
pub mod file;
pub mod hashing;
pub mod send;
pub mod source;

pub use file::{upload_file, UploadFileSettings, UploadSummary};
