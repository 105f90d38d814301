//! The contracts the features plug into, in one low module that none of them defines: what an
//! upload hands the producer and the transforms before it ([`envelope`]: `ChunkMessage`,
//! `Envelope`), what a download reads and the step that opens it ([`opener`]: `RawMessage`,
//! `Opener`, `Opened`, `Plaintext`), where verified chunks go ([`sink`]: `ChunkSink`,
//! `VerifiedChunk`, `Accepted`, `PublishedFile`), the identity of a file version ([`version`])
//! and where a message sits in its topic ([`position`]). upload, download, crypto, targeting
//! and kafka import these; this module imports only `chunk`.

pub mod envelope;
pub mod opener;
pub mod position;
pub mod sink;
pub mod version;

pub use envelope::{ChunkMessage, Envelope};
pub use opener::{Opened, Opener, Plaintext, RawMessage};
pub use position::MessagePosition;
pub use sink::{Accepted, ChunkSink, PublishedFile, VerifiedChunk};
pub use version::{FileVersion, PartLayout};
