//! Removal of abandoned partial files. A file whose remaining chunks never arrive (the
//! uploader died for good, the topic's retention dropped them) would keep its staging files
//! (`.openmsi/staging/<id>.part` + `<id>.chunks`) forever. At start, before the reassembler
//! loads the staging area, pairs untouched for longer than `--discard-partials-after-days` are
//! removed with a warning naming the file they belonged to.
//!
//! A `.chunks` record without its `.part` is left alone: that is a file renamed into place
//! just before a crash, which the reassembler still has to log as published.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::warn;

use crate::contract::FileVersion;
use crate::state::annotate;

/// One partial file removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Discarded {
    /// Relative path of the file it belonged to (None when its record is unreadable).
    pub relative: Option<String>,
    /// The `.part` file removed.
    pub data: PathBuf,
    /// Time since it was last written.
    pub age: Duration,
}

/// Removes the partial files in `staging` last written more than `max_age` before `now`
/// (both the `.part` and the `.chunks` count as writes). A missing staging folder is fine
/// (first start). Returns what was removed.
pub fn discard_stale_partials(
    staging: &Path,
    max_age: Duration,
    now: SystemTime,
) -> io::Result<Vec<Discarded>> {
    let entries = match fs::read_dir(staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(annotate(e, staging)),
    };
    let mut discarded = Vec::new();
    for entry in entries {
        let record = entry.map_err(|e| annotate(e, staging))?.path();
        if record.extension().and_then(|e| e.to_str()) != Some("chunks") {
            continue;
        }
        let data = record.with_extension("part");
        let (Some(record_time), Some(data_time)) = (modified(&record), modified(&data)) else {
            continue;
        };
        let age = now
            .duration_since(record_time.max(data_time))
            .unwrap_or_default();
        if age <= max_age {
            continue;
        }
        let relative = fs::read_to_string(&record).ok().and_then(|text| {
            let header = text.lines().next()?;
            serde_json::from_str::<FileVersion>(header)
                .ok()
                .map(|v| v.relative)
        });
        // The record first: a `.part` without a record is dropped by the reassembler anyway,
        // while a record without its `.part` would look like a file already published.
        fs::remove_file(&record).map_err(|e| annotate(e, &record))?;
        fs::remove_file(&data).map_err(|e| annotate(e, &data))?;
        warn!(
            file = relative.as_deref().unwrap_or("<unreadable record>"),
            staging = %data.display(),
            days = age.as_secs() / 86_400,
            "discarded a partial file untouched for longer than --discard-partials-after-days; \
             its missing chunks never arrived (a new upload of the file starts it again)"
        );
        discarded.push(Discarded {
            relative,
            data,
            age,
        });
    }
    Ok(discarded)
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    /// A staging pair for `relative`, both files last written `age` ago.
    fn staged(staging: &Path, id: &str, relative: &str, age: Duration) -> (PathBuf, PathBuf) {
        let record = staging.join(format!("{id}.chunks"));
        let data = staging.join(format!("{id}.part"));
        let version = FileVersion {
            relative: relative.into(),
            file_hash: "00".repeat(64),
            n_total_chunks: 3,
            file_mtime: None,
            layout: Default::default(),
            started_at: None,
        };
        fs::write(
            &record,
            format!("{}\n", serde_json::to_string(&version).unwrap()),
        )
        .unwrap();
        fs::write(&data, b"some bytes").unwrap();
        set_age(&record, age);
        set_age(&data, age);
        (record, data)
    }

    fn set_age(path: &Path, age: Duration) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn only_pairs_untouched_past_the_limit_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path();
        let (old_record, old_data) = staged(staging, "old", "run1/abandoned.bin", 40 * DAY);
        let (new_record, new_data) = staged(staging, "new", "run1/recent.bin", 2 * DAY);
        // Old data, but its record was written an hour ago: still in progress.
        let (mixed_record, mixed_data) = staged(staging, "mixed", "mixed.bin", 40 * DAY);
        set_age(&mixed_record, Duration::from_secs(3600));
        // A record alone (published just before a crash) is the reassembler's business.
        let (lone_record, lone_data) = staged(staging, "lone", "lone.bin", 40 * DAY);
        fs::remove_file(&lone_data).unwrap();

        let removed = discard_stale_partials(staging, 30 * DAY, SystemTime::now()).unwrap();

        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(removed[0].relative.as_deref(), Some("run1/abandoned.bin"));
        assert_eq!(removed[0].data, old_data);
        assert!(removed[0].age >= 40 * DAY - Duration::from_secs(60));
        assert!(!old_record.exists() && !old_data.exists());
        for kept in [new_record, new_data, mixed_record, mixed_data, lone_record] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
    }

    #[test]
    fn unreadable_records_are_removed_too_and_a_missing_staging_folder_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let (record, data) = staged(dir.path(), "torn", "x", 31 * DAY);
        fs::write(&record, b"{\"rel").unwrap();
        set_age(&record, 31 * DAY);
        let removed = discard_stale_partials(dir.path(), 30 * DAY, SystemTime::now()).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].relative, None);
        assert!(!record.exists() && !data.exists());

        let missing = dir.path().join("no such folder");
        assert!(discard_stale_partials(&missing, DAY, SystemTime::now())
            .unwrap()
            .is_empty());
    }
}
