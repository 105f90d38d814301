//! The envelopes a command's chunk messages pass through, in order: per-host addressing
//! (`--to-host` headers) and end-to-end encryption (`[kafkacrypto]` in the config).

use std::sync::Arc;

use crate::contract::{ChunkMessage, Envelope};
use crate::targeting::HostTargets;

/// Every envelope configured for a run (none by default).
#[derive(Clone, Default)]
pub struct Envelopes {
    /// `--to-host` addressing headers.
    pub targets: Option<HostTargets>,
    /// Encryption of each message's key and value.
    pub encryption: Option<Arc<dyn Envelope>>,
}

impl std::fmt::Debug for Envelopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelopes")
            .field("targets", &self.targets)
            .field("encrypted", &self.encryption.is_some())
            .finish()
    }
}

impl Envelopes {
    /// Addressing only (no encryption).
    pub fn targets(targets: Option<HostTargets>) -> Self {
        Envelopes {
            targets,
            encryption: None,
        }
    }

    /// The envelope to apply, or None when there is nothing to do.
    pub fn get(&self) -> Option<&dyn Envelope> {
        (self.targets.is_some() || self.encryption.is_some()).then_some(self as &dyn Envelope)
    }
}

impl Envelope for Envelopes {
    fn seal(&self, message: &mut ChunkMessage) {
        if let Some(t) = &self.targets {
            t.seal(message);
        }
        if let Some(e) = &self.encryption {
            e.seal(message);
        }
    }

    fn overhead(&self) -> usize {
        self.targets.as_ref().map_or(0, Envelope::overhead)
            + self.encryption.as_ref().map_or(0, |e| e.overhead())
    }
}
