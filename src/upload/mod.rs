//! Uploading: naming a file relative to its upload root, hashing it, and producing its chunks.

pub mod directory;
pub mod envelopes;
pub mod error;
pub mod file;
pub mod hashing;
pub mod send;
pub mod source;

pub use file::{upload_file, UploadFileSettings, UploadSummary};
