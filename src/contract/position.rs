//! Where a message sits in its topic: the one name for it, used by the download pipeline, the
//! completed log (which records the message that completed a file) and the rejected store.

use serde::{Deserialize, Serialize};

/// A message's partition and offset (the topic is the command's one topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessagePosition {
    /// Partition of the topic.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
}
