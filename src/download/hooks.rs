//! `--on-file`: a command run after each file is published, on its own thread, one at a time
//! and in order, never holding up the writer, its fsyncs or its commits.
//!
//! A hook is *due* once its file is published. The due mark is made durable in
//! `.openmsi/hooks.jsonl` in the same flush that publishes the file, before the completed log
//! records it ([`HookLog::mark_due`], called by the publisher), and a *done* mark follows when
//! the command has run. So a hook that was due when the process died runs after the restart;
//! at worst a hook runs twice (died after running it, before the done mark), never zero times.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::command::{self, FileFacts, UserCommand};
use crate::state::write_atomically;

/// One file whose hook is due.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HookJob {
    /// Order of publication.
    pub seq: u64,
    /// Relative path, `/`-separated.
    pub relative: String,
    pub size: u64,
    pub sha512: String,
}

/// A line of `hooks.jsonl`: a due job, or the sequence number of a job done.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Due(HookJob),
    Done { done: u64 },
}

/// The durable queue of due hooks.
pub struct HookLog {
    path: PathBuf,
    file: File,
    next_seq: u64,
    /// Where newly due jobs go (the runner).
    runner: Sender<HookJob>,
}

impl HookLog {
    /// Opens `path`, keeps only the jobs not done (compacting the file atomically) and returns
    /// the log plus those jobs, oldest first, for the runner to do first.
    pub fn open(path: &Path, runner: Sender<HookJob>) -> io::Result<(Self, Vec<HookJob>)> {
        let mut due: BTreeMap<u64, HookJob> = BTreeMap::new();
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                // A torn last line (crash mid-append) was never made durable: ignored.
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Due(job)) => {
                        due.insert(job.seq, job);
                    }
                    Ok(Line::Done { done }) => {
                        due.remove(&done);
                    }
                    Err(_) => {}
                }
            }
        }
        let pending: Vec<HookJob> = due.into_values().collect();
        let mut text = String::new();
        for job in &pending {
            text.push_str(
                &serde_json::to_string(&Line::Due(job.clone())).map_err(io::Error::other)?,
            );
            text.push('\n');
        }
        write_atomically(path, text.as_bytes())?;
        let next_seq = pending.last().map_or(0, |j| j.seq + 1);
        let file = OpenOptions::new().append(true).open(path)?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                next_seq,
                runner,
            },
            pending,
        ))
    }

    /// Records that hooks are due for `files` (relative path, size, hex SHA-512) and makes the
    /// record durable; the runner gets them once [`HookLog::release`] is called.
    pub fn mark_due(&mut self, files: &[(String, u64, String)]) -> io::Result<Vec<HookJob>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let mut jobs = Vec::with_capacity(files.len());
        let mut text = String::new();
        for (relative, size, sha512) in files {
            let job = HookJob {
                seq: self.next_seq,
                relative: relative.clone(),
                size: *size,
                sha512: sha512.clone(),
            };
            self.next_seq += 1;
            text.push_str(
                &serde_json::to_string(&Line::Due(job.clone())).map_err(io::Error::other)?,
            );
            text.push('\n');
            jobs.push(job);
        }
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| crate::state::annotate(e, &self.path))?;
        Ok(jobs)
    }

    /// Hands due jobs to the runner (after the files they are about are published).
    pub fn release(&self, jobs: Vec<HookJob>) {
        for job in jobs {
            // The runner only goes away at shutdown; the due mark stays for the next start.
            let _ = self.runner.send(job);
        }
    }
}

/// What the runner needs.
pub struct HookRunner {
    pub command: UserCommand,
    pub timeout: Duration,
    pub output_dir: PathBuf,
    pub topic: String,
    /// `.openmsi/hooks.jsonl`, for the done marks.
    pub log_path: PathBuf,
}

impl HookRunner {
    /// Runs `first` (due from an earlier run), then every job received, until the sender side
    /// is dropped and the queue is empty.
    pub fn run(self, first: Vec<HookJob>, jobs: Receiver<HookJob>) {
        if !first.is_empty() {
            info!(
                hooks = first.len(),
                "running --on-file hooks that were due when the last run stopped"
            );
        }
        let mut done_log = OpenOptions::new().append(true).open(&self.log_path);
        for job in first.into_iter().chain(jobs) {
            self.run_one(&job);
            // Not synced: a lost done mark only makes the hook run again after a crash.
            if let Ok(f) = done_log.as_mut() {
                let _ = writeln!(f, "{{\"done\":{}}}", job.seq);
            }
        }
    }

    fn run_one(&self, job: &HookJob) {
        let path: PathBuf = self
            .output_dir
            .join(job.relative.split('/').collect::<PathBuf>());
        let facts = FileFacts {
            path: &path,
            relative: &job.relative,
            size: job.size,
            sha512: &job.sha512,
            topic: &self.topic,
        };
        match command::run(&self.command, &facts, &[], self.timeout) {
            Ok(ran) if ran.succeeded() => {
                info!(path = %job.relative, took_s = ran.took.as_secs_f64(), "--on-file hook done")
            }
            Ok(ran) => error!(
                path = %job.relative,
                command = %self.command.text,
                outcome = %ran.describe(),
                output = %ran.output_tail.trim_end(),
                "--on-file hook failed"
            ),
            Err(e) => {
                warn!(path = %job.relative, command = %self.command.text, error = %e, "--on-file hook could not be started")
            }
        }
    }
}

/// Removes the hook log when no hook is configured any more, so old due marks never fire for
/// a command that is gone.
pub fn forget(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn due_jobs_survive_a_restart_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.jsonl");
        let (tx, rx) = mpsc::channel();
        let (mut log, pending) = HookLog::open(&path, tx).unwrap();
        assert!(pending.is_empty());
        let jobs = log
            .mark_due(&[("a".into(), 1, "aa".into()), ("b".into(), 2, "bb".into())])
            .unwrap();
        log.release(jobs);
        assert_eq!(rx.recv().unwrap().relative, "a");
        // "a" done, then a crash before "b" ran.
        writeln!(
            OpenOptions::new().append(true).open(&path).unwrap(),
            "{{\"done\":0}}"
        )
        .unwrap();
        drop(log);
        let (tx, _rx) = mpsc::channel();
        let (mut log, pending) = HookLog::open(&path, tx).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].relative, "b");
        let next = log.mark_due(&[("c".into(), 3, "cc".into())]).unwrap();
        assert_eq!(next[0].seq, 2);
    }
}
