//! Publishing verified files: the one unit that puts a rebuilt file under its final name
//! (stamp the source mtime, fsync, atomic rename, fsync the folders), records it in the
//! completed log, and sets aside what cannot be published (`.openmsi/failed/`).
//!
//! Staging ([`super::reassembler`]) decides *when* a file is complete and verified; this module
//! decides *how* it appears. A post-publish step (hooks, notifications) gets the
//! [`PublishedFile`]s a flush returns, after the files and the log are durable, from the
//! pipeline's flush (see [`super::pipeline`]): it never runs inside the fsync/commit path.

use std::collections::BTreeSet;
use std::fs::{self};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{error, info};

use globset::GlobSet;

use super::command::{self, FileFacts, UserCommand};
use super::completed::{CompletedEntry, CompletedLog};
use super::hooks::HookLog;
use super::partial::PartialFile;
use super::stats::DownloadStats;
use crate::chunk::Sha512Digest;
use crate::contract::FileVersion;
use crate::contract::MessagePosition;
use crate::contract::PublishedFile;
use crate::state::{annotate, is_out_of_space, sync_dir, sync_filesystem, StateDir};

/// From this many files in one flush on, their data (and then the renames) are made durable
/// with one filesystem sync each instead of one fsync per file and per folder.
const SYNC_FILESYSTEM_FROM: usize = 8;

/// A verified file waiting for the next flush to be renamed into place.
pub struct ReadyFile {
    /// Its staging file, complete and verified.
    pub partial: PartialFile,
    /// Relative native path it is published at.
    pub path: PathBuf,
    /// The message that completed it (None when completed from staging at start-up).
    pub completed_by: Option<MessagePosition>,
}

/// `--validate`: a command that must accept a file before it replaces anything.
#[derive(Debug, Clone)]
pub struct Validation {
    pub command: UserCommand,
    /// Only files whose relative path matches (None: every file).
    pub globs: Option<GlobSet>,
    pub timeout: Duration,
}

/// What publishing does besides the rename: validation, backups, hooks.
#[derive(Default)]
pub struct DeliveryControl {
    pub validation: Option<Validation>,
    /// `--backup`: the replaced version is kept as NAME + this suffix.
    pub backup_suffix: Option<String>,
    /// `--on-file`: due marks for the hook runner.
    pub hooks: Option<HookLog>,
    /// For the commands' environment.
    pub topic: String,
}

/// Puts verified files into the output folder.
pub struct Publisher {
    /// The output folder.
    output_dir: PathBuf,
    /// `.openmsi/failed/`: versions that failed verification or could not be put in place.
    failed_dir: PathBuf,
    /// Files published, latest version per path.
    completed: CompletedLog,
    /// Counters for `check` and the summary.
    stats: Arc<DownloadStats>,
    /// Validation, backups, hooks.
    control: DeliveryControl,
    /// The sink takes each published file elsewhere and removes it (see
    /// [`Publisher::treat_output_as_transient`]).
    output_is_transient: bool,
}

impl Publisher {
    /// Opens the completed log of `output_dir` and prepares its failed area.
    pub fn open(
        output_dir: &Path,
        state: &StateDir,
        stats: Arc<DownloadStats>,
        control: DeliveryControl,
    ) -> io::Result<Self> {
        let failed_dir = state.failed();
        fs::create_dir_all(&failed_dir).map_err(|e| annotate(e, &failed_dir))?;
        Ok(Self {
            output_dir: output_dir.to_path_buf(),
            failed_dir,
            completed: CompletedLog::open(&state.completed_log())?,
            stats,
            control,
            output_is_transient: false,
        })
    }

    /// True when this version of `relative` is the one published and its file is in place
    /// (or taken elsewhere, see [`Publisher::treat_output_as_transient`]).
    pub fn is_published(&self, relative: &str, hash: &Sha512Digest, path: &Path) -> bool {
        self.completed.is_latest(relative, hash)
            && (self.output_is_transient || self.output_dir.join(path).is_file())
    }

    /// The sink takes every published file somewhere else and then removes it from the output
    /// folder (s3-transfer: into a bucket; a file it could not take is moved out too). A
    /// version the completed log has as the latest is then delivered even when its file is
    /// gone, so chunks read again after a crash do not deliver it (and run its hook) twice.
    pub fn treat_output_as_transient(&mut self) {
        self.output_is_transient = true;
    }

    /// True when a version of `relative` completed by the message at `at` is older than the
    /// one in place (see [`CompletedLog::is_superseded`]).
    pub fn is_superseded(&self, relative: &str, at: MessagePosition) -> bool {
        self.completed.is_superseded(relative, at)
    }

    /// Makes sure the completed log knows the versions that were renamed into place just
    /// before a crash (their staging record survived, their data did not).
    pub fn note_published_before_crash(
        &mut self,
        versions: &[(FileVersion, Option<MessagePosition>)],
    ) -> io::Result<()> {
        let entries = versions
            .iter()
            .filter(|(v, _)| {
                crate::chunk::hash::from_hex(&v.file_hash)
                    .is_some_and(|hash| !self.completed.is_latest(&v.relative, &hash))
            })
            .map(|(v, at)| entry_for(v, v.file_hash.clone(), 0, *at))
            .collect();
        self.completed.append(entries)
    }

    /// A complete version whose whole-file hash does not match: its bytes go to the failed
    /// area and the final path stays untouched.
    pub fn set_aside_mismatch(&self, id: &str, mut partial: PartialFile) -> io::Result<()> {
        DownloadStats::add(&self.stats.files_failed, 1);
        partial.close();
        // Record first: a data file without its record is deleted at start-up, while a record
        // without data means "renamed into place", so a crash in between cannot make this
        // failed version look published.
        partial.remove_record();
        let kept = self.failed_dir.join(format!(
            "{}-{}",
            id,
            partial.version.relative.replace('/', "_")
        ));
        error!(
            path = %partial.version.relative,
            kept = %kept.display(),
            "whole-file SHA-512 does not match: the file is NOT written to its final path; the received bytes are kept aside"
        );
        fs::rename(partial.data_path(), &kept).map_err(|e| annotate(e, partial.data_path()))
    }

    /// An older version read again: dropped without touching the newer one in place.
    pub fn discard_superseded(&self, mut partial: PartialFile) {
        info!(path = %partial.version.relative, "an older version of this file was read again; the newer one in place is kept");
        partial.close();
        // Record first (see `set_aside_mismatch`).
        partial.remove_record();
        let _ = fs::remove_file(partial.data_path());
    }

    /// Publishes `ready` files: each is stamped with its source mtime, made durable, and
    /// renamed into place (or, when that fails for a reason other than a full disk, set
    /// aside); then the folders involved and `staging_dir` (the renames left it) are made
    /// durable, the completed log records them with one fsync, and their staging records are
    /// removed. A batch of many files is synced with two filesystem syncs (data before the
    /// renames, then the renames) instead of two fsyncs per file.
    pub fn publish_all(
        &mut self,
        mut ready: Vec<ReadyFile>,
        staging_dir: &Path,
    ) -> io::Result<Vec<PublishedFile>> {
        for file in &mut ready {
            stamp_mtime(&mut file.partial);
        }
        let batched = ready.len() >= SYNC_FILESYSTEM_FROM && sync_filesystem(staging_dir)?;
        if batched {
            for file in &mut ready {
                file.partial.mark_synced();
            }
        }
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut entries = Vec::new();
        let mut published = Vec::new();
        let mut records = Vec::new();
        for mut file in ready {
            if !self.passes_validation(&mut file)? {
                continue;
            }
            match self.publish(&mut file) {
                Ok(final_path) => {
                    let version = &file.partial.version;
                    if let Some(parent) = final_path.parent() {
                        dirs.insert(parent.to_path_buf());
                    }
                    let file_hash = file.partial.file_hash_hex();
                    entries.push(entry_for(
                        version,
                        file_hash.clone(),
                        file.partial.size(),
                        file.completed_by,
                    ));
                    published.push(PublishedFile {
                        relative: version.relative.clone(),
                        path: final_path,
                        size: file.partial.size(),
                        file_hash,
                        since_first_chunk: file.partial.first_chunk_at.elapsed(),
                    });
                    records.extend(file.partial.record_file().map(Path::to_path_buf));
                }
                Err(e) if is_out_of_space(&e) => return Err(e),
                Err(e) => {
                    // One file that cannot be placed (a folder in the way, permissions) must
                    // not stop the stream; it is kept aside.
                    DownloadStats::add(&self.stats.files_unplaced, 1);
                    error!(path = %file.partial.version.relative, error = %e, "could not put the rebuilt file in place; it is kept in .openmsi/failed");
                    let kept = self.failed_dir.join(file.partial.version.id());
                    file.partial.remove_record();
                    let _ = fs::rename(file.partial.data_path(), kept);
                }
            }
        }
        dirs.insert(staging_dir.to_path_buf());
        if !(batched && sync_filesystem(staging_dir)?) {
            for dir in &dirs {
                sync_dir(dir)?;
            }
        }
        // Hooks are due once their files are in place: marked durably before the completed log
        // records the files, so a crash in between re-delivers the files rather than losing
        // their hooks.
        let due = match self.control.hooks.as_mut() {
            Some(log) => log.mark_due(
                &published
                    .iter()
                    .map(|p| (p.relative.clone(), p.size, p.file_hash.clone()))
                    .collect::<Vec<_>>(),
            )?,
            None => Vec::new(),
        };
        self.completed.append(entries)?;
        if let Some(log) = &self.control.hooks {
            log.release(due);
        }
        DownloadStats::add(&self.stats.files_completed, published.len() as u64);
        for r in records {
            let _ = fs::remove_file(r);
        }
        Ok(published)
    }

    /// Syncs (unless already synced) and renames one verified file into place; returns its
    /// final path.
    fn publish(&self, ready: &mut ReadyFile) -> io::Result<PathBuf> {
        let final_path = self.output_dir.join(&ready.path);
        let parent = final_path.parent().unwrap_or(&self.output_dir);
        fs::create_dir_all(parent).map_err(|e| annotate(e, parent))?;
        ready.partial.sync_data()?;
        ready.partial.close();
        if let Some(suffix) = &self.control.backup_suffix {
            keep_backup(&final_path, suffix)?;
        }
        fs::rename(ready.partial.data_path(), &final_path).map_err(|e| annotate(e, &final_path))?;
        Ok(final_path)
    }

    /// Runs `--validate` on a staged file whose path matches its globs. Refused (or timed
    /// out): the version goes to the failed area with the command's output beside it, the
    /// file in place stays untouched, and false is returned.
    fn passes_validation(&self, ready: &mut ReadyFile) -> io::Result<bool> {
        let Some(validation) = &self.control.validation else {
            return Ok(true);
        };
        let relative = ready.partial.version.relative.clone();
        if validation
            .globs
            .as_ref()
            .is_some_and(|g| !g.is_match(&relative))
        {
            return Ok(true);
        }
        ready.partial.sync_data()?;
        ready.partial.close();
        let file_hash = ready.partial.file_hash_hex();
        let facts = FileFacts {
            path: ready.partial.data_path(),
            relative: &relative,
            size: ready.partial.size(),
            sha512: &file_hash,
            topic: &self.control.topic,
        };
        let outcome = command::run(
            &validation.command,
            &facts,
            &[("OPENMSI_STAGE", "validate".to_string())],
            validation.timeout,
            command::Capture::Tail,
        );
        let (verdict, output) = match outcome {
            Ok(ran) if ran.succeeded() => return Ok(true),
            Ok(ran) => (ran.describe(), ran.output_tail),
            Err(e) => (format!("could not be started: {e}"), String::new()),
        };
        DownloadStats::add(&self.stats.files_refused, 1);
        let kept = self.failed_dir.join(format!(
            "{}-{}",
            ready.partial.version.id(),
            relative.replace('/', "_")
        ));
        error!(
            path = %relative,
            command = %validation.command.text,
            outcome = %verdict,
            output = %output.trim_end(),
            kept = %kept.display(),
            "--validate refused the new version: the file in place is unchanged; the new version is kept aside"
        );
        ready.partial.remove_record();
        fs::rename(ready.partial.data_path(), &kept).map_err(|e| annotate(e, &kept))?;
        let mut report = kept.clone().into_os_string();
        report.push(".validation.txt");
        let _ = fs::write(
            &report,
            format!(
                "command: {}\noutcome: {verdict}\noutput (last part):\n{output}",
                validation.command.text
            ),
        );
        Ok(false)
    }
}

/// Keeps the file now at `final_path` (if any) as `final_path` + `suffix`, atomically: a hard
/// link under a temporary name renamed over the old backup, so the backup is always a whole
/// version and the file in place is never missing.
fn keep_backup(final_path: &Path, suffix: &str) -> io::Result<()> {
    match fs::symlink_metadata(final_path) {
        Ok(meta) if meta.is_file() => {}
        _ => return Ok(()),
    }
    let mut backup = final_path.as_os_str().to_os_string();
    backup.push(suffix);
    crate::state::atomic::link_over(final_path, Path::new(&backup))
}

/// Sets the source mtime (10-field messages) on a staged file about to be published. Best
/// effort: a file that cannot even be opened fails (and is set aside) when it is placed.
fn stamp_mtime(partial: &mut PartialFile) {
    let Some(mtime) = partial
        .version
        .file_mtime
        .filter(|t| t.is_finite() && *t > 0.0)
    else {
        return;
    };
    partial.set_modified(UNIX_EPOCH + Duration::from_secs_f64(mtime));
}

fn entry_for(
    version: &FileVersion,
    file_hash: String,
    size: u64,
    completed_by: Option<MessagePosition>,
) -> CompletedEntry {
    CompletedEntry {
        completed_by,
        path: version.relative.clone(),
        file_hash,
        size,
        completed_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    }
}
