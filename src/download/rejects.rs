//! Messages kept aside, one `.key`/`.value` pair plus a `.txt` saying why, named by topic,
//! partition and offset: bad messages for inspection (`.openmsi/rejected/`), and messages that
//! cannot be opened yet (`.openmsi/deferred/`, e.g. their decryption key has not arrived).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::kafka::MessagePosition;

/// Keep at most this many rejected messages on disk: a flood of garbage must not fill the disk.
/// Beyond it, rejects are still logged and counted.
pub const MAX_KEPT: u64 = 10_000;

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

    /// Saves the message and the reason. Failing to save is logged, never fatal: the reject
    /// itself is already reported.
    pub fn keep(
        &mut self,
        topic: &str,
        at: MessagePosition,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        reason: &str,
    ) {
        if self.kept >= MAX_KEPT {
            warn!(limit = MAX_KEPT, "not keeping this rejected message: the rejected folder is full; inspect and clear it");
            return;
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
            write_synced(&self.dir.join(format!("{stem}.txt")), text.as_bytes())
        })();
        match result {
            Ok(()) => self.kept += 1,
            Err(e) => {
                warn!(error = %e, dir = %self.dir.display(), "could not keep a rejected message aside")
            }
        }
    }
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
