//! The identity of one version of one file being received: what a chunk says it belongs to,
//! and what staging files and the sink are keyed by.

use serde::{Deserialize, Serialize};

use super::MessagePosition;
use crate::chunk::hash::{from_hex, sha512, to_hex};
use crate::chunk::Sha512Digest;

/// Identity of one version of one file, as the chunks describe it. Written as the first line
/// of the `.chunks` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileVersion {
    /// Relative path of the rebuilt file (validated, `/`-separated).
    pub relative: String,
    /// Hex SHA-512 of the whole file.
    pub file_hash: String,
    /// Number of chunks.
    pub n_total_chunks: u64,
    /// Source mtime (Unix seconds) to set on the rebuilt file, when the producer sent one.
    pub file_mtime: Option<f64>,
    /// Where the parts go in the staging file.
    #[serde(default, skip_serializing_if = "PartLayout::is_offsets")]
    pub layout: PartLayout,
    /// For a version that names no whole-file hash (Knot's format without `file-sha512`):
    /// the message that started it. Without a hash nothing else tells two versions of one
    /// path apart (see `download::reassembler`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MessagePosition>,
}

/// How a version's parts are placed in its staging file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartLayout {
    /// At the byte offset each chunk carries (openmsi's format).
    #[default]
    Offsets,
    /// Appended in arrival order, then put in index order once every part is there (Knot
    /// Resolver's format carries no offsets, and its parts need not be of equal size). Part
    /// slots are the sent index + 1, so 0- and 1-based indices both fit in `1..=n + 1`; which
    /// one a file used is decided once it is whole.
    Appended,
}

impl PartLayout {
    fn is_offsets(&self) -> bool {
        *self == PartLayout::Offsets
    }
}

impl FileVersion {
    /// Staging id: a digest of everything that identifies the version, so two versions of a
    /// path (or hostile chunks with another count) never share a staging file.
    pub fn id(&self) -> String {
        let mut text = Vec::new();
        text.extend_from_slice(self.relative.as_bytes());
        text.push(0);
        text.extend_from_slice(self.file_hash.as_bytes());
        text.push(0);
        text.extend_from_slice(self.n_total_chunks.to_string().as_bytes());
        // Versions staged before these fields existed keep their ids.
        if self.layout == PartLayout::Appended {
            text.extend_from_slice(b"\0appended");
        }
        if let Some(at) = self.started_at {
            text.extend_from_slice(format!("\0{}:{}", at.partition, at.offset).as_bytes());
        }
        to_hex(&sha512(&text)[..16])
    }

    /// True for a version that names no whole-file hash: its content is checked for
    /// completeness only, and its hash is computed when it is whole.
    pub fn is_unverified(&self) -> bool {
        self.file_hash.is_empty()
    }

    /// The expected whole-file hash: None for an unverified version (Knot parts without
    /// `file-sha512`); an error for anything else that is not 128 hex digits.
    pub fn expected_hash(&self) -> Option<Option<Sha512Digest>> {
        if self.is_unverified() && self.layout == PartLayout::Appended {
            return Some(None);
        }
        from_hex(&self.file_hash).map(Some)
    }

    /// Highest chunk slot a chunk of this version may use.
    pub fn max_slot(&self) -> u64 {
        match self.layout {
            PartLayout::Offsets => self.n_total_chunks,
            PartLayout::Appended => self.n_total_chunks + 1,
        }
    }
}
