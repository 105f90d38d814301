//! Messages kept aside, one `.key`/`.value` pair plus a `.txt` saying why, named by topic,
//! partition and offset: bad messages for inspection (`.openmsi/rejected/`), and messages that
//! cannot be opened yet (`.openmsi/deferred/`, e.g. their decryption key has not arrived).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::contract::MessagePosition;

/// Keep at most this many rejected messages on disk: a flood of garbage must not fill the disk.
/// Beyond it, rejects are still logged and counted.
pub const MAX_KEPT: u64 = 10_000;

/// Where messages that are not chunks for the sink are kept.
pub struct KeptAside {
    /// Bad messages (`.openmsi/rejected/`).
    pub rejected: RejectStore,
    /// Messages that cannot be opened yet (`.openmsi/deferred/`).
    pub deferred: RejectStore,
}

/// Where rejected messages go.
pub struct RejectStore {
    dir: PathBuf,
    kept: u64,
}

impl RejectStore {
    /// Uses `dir`, counting what is already there towards the cap.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let kept = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
            .count() as u64;
        Ok(Self {
            dir: dir.to_path_buf(),
            kept,
        })
    }

    /// True when the message at `at` was kept aside by an earlier read. Offsets are never
    /// committed past an unfinished file's first chunk, so a restart can read a bad message
    /// again; it is then neither reported nor counted twice.
    pub fn already_kept(&self, topic: &str, at: MessagePosition) -> bool {
        self.dir.join(format!("{}.txt", stem(topic, at))).is_file()
    }

    /// Saves the message and the reason, durably (files and folder entry fsynced); true when
    /// kept. Failing to save is logged: for a reject that is all (it is already reported); a
    /// deferred message that could not be kept must not be committed (the caller's job).
    pub fn keep(
        &mut self,
        topic: &str,
        at: MessagePosition,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        reason: &str,
    ) -> bool {
        if self.kept >= MAX_KEPT {
            warn!(limit = MAX_KEPT, dir = %self.dir.display(), "not keeping this message: the folder is full; inspect and clear it");
            return false;
        }
        let stem = stem(topic, at);
        let result = (|| -> io::Result<()> {
            write_synced(
                &self.dir.join(format!("{stem}.key")),
                key.unwrap_or_default(),
            )?;
            write_synced(
                &self.dir.join(format!("{stem}.value")),
                value.unwrap_or_default(),
            )?;
            let text = format!(
                "topic: {}\npartition: {}\noffset: {}\nkey bytes: {}\nvalue bytes: {}\nreason: {reason}\n",
                topic,
                at.partition,
                at.offset,
                key.map_or(0, <[u8]>::len),
                value.map_or(0, <[u8]>::len),
            );
            write_synced(&self.dir.join(format!("{stem}.txt")), text.as_bytes())?;
            crate::state::atomic::sync_dir(&self.dir)
        })();
        match result {
            Ok(()) => {
                self.kept += 1;
                true
            }
            Err(e) => {
                warn!(error = %e, dir = %self.dir.display(), "could not keep a message aside");
                false
            }
        }
    }

    /// Every message kept here (oldest offsets first within a partition), read back.
    pub fn entries(&self) -> Vec<KeptMessage> {
        let mut out = Vec::new();
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in dir.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "txt") {
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .map(str::to_owned)
            };
            let (Some(topic), Some(partition), Some(offset)) =
                (field("topic:"), field("partition:"), field("offset:"))
            else {
                continue;
            };
            let (Ok(partition), Ok(offset)) = (partition.parse(), offset.parse()) else {
                continue;
            };
            let at = MessagePosition { partition, offset };
            let stem = stem(&topic, at);
            let (Ok(key), Ok(value)) = (
                fs::read(self.dir.join(format!("{stem}.key"))),
                fs::read(self.dir.join(format!("{stem}.value"))),
            ) else {
                continue;
            };
            out.push(KeptMessage {
                topic,
                at,
                key: (!key.is_empty()).then_some(key),
                value: Some(value),
            });
        }
        out.sort_by_key(|m| (m.at.partition, m.at.offset));
        out
    }

    /// Removes a kept message (its `.txt` last, so a crash leaves either all or a harmless
    /// remainder that [`Self::entries`] ignores).
    pub fn remove(&mut self, topic: &str, at: MessagePosition) {
        let stem = stem(topic, at);
        for ext in ["key", "value", "txt"] {
            let _ = fs::remove_file(self.dir.join(format!("{stem}.{ext}")));
        }
        self.kept = self.kept.saturating_sub(1);
    }
}

/// A message read back from a [`RejectStore`].
#[derive(Debug, Clone)]
pub struct KeptMessage {
    /// Its topic.
    pub topic: String,
    /// Where it was read.
    pub at: MessagePosition,
    /// Its key (None when empty).
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
}

/// File name stem of a kept message: topic, partition and offset.
fn stem(topic: &str, at: MessagePosition) -> String {
    format!("{topic}-{}-{}", at.partition, at.offset)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}
