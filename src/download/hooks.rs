//! `--on-file` (a command run after each file is published) and `--on-batch` (once after a
//! burst of files settles), on their own thread, one at a time and in order, never holding up
//! the writer, its fsyncs or its commits.
//!
//! A hook is *due* once its file is published. The due mark is made durable in
//! `.openmsi/hooks.jsonl` in the same flush that publishes the file, before the completed log
//! records it ([`HookLog::mark_due`], called by the publisher), and a *done* mark follows when
//! the command has run. So a hook that was due when the process died runs after the restart;
//! at worst a hook runs twice (died after running it, before the done mark), never zero times.
//!
//! With `--result-topic`, the command's standard output is its file's result: it is recorded
//! (fsynced) in the log before it is produced, and the done mark waits for the broker's
//! acknowledgement. A job found due at start with a recorded result sends that result again
//! without running the command: a result sent twice after a crash is identical, byte for byte.
//! A job whose result was not acknowledged stays due for the next start.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::command::{self, Capture, CapturedOutput, FileFacts, UserCommand};
use super::results::{ResultSink, MAX_RESULT_BYTES};
use crate::state::jsonl::{self, AppendLog};

/// One file whose hook is due.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HookJob {
    /// Order of publication.
    pub seq: u64,
    /// Relative path, `/`-separated.
    pub relative: String,
    pub size: u64,
    pub sha512: String,
    /// The command's output recorded by an earlier run (`--result-topic`), to be sent as it is.
    #[serde(skip)]
    pub recorded_result: Option<Vec<u8>>,
}

/// A line of `hooks.jsonl`: a due job, a job's recorded result (base64), or the sequence
/// number of a job done.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Due(HookJob),
    Result { result: u64, output: String },
    Done { done: u64 },
}

/// The durable queue of due hooks.
pub struct HookLog {
    file: AppendLog,
    next_seq: u64,
    /// Where newly due jobs go (the runner).
    runner: Sender<HookJob>,
    /// The files (relative path, hex SHA-512) whose jobs were due when the log was opened.
    due_at_open: std::collections::HashSet<(String, String)>,
}

impl HookLog {
    /// Opens `path`, keeps only the jobs not done (compacting the file atomically) and returns
    /// the log plus those jobs, oldest first, for the runner to do first.
    pub fn open(path: &Path, runner: Sender<HookJob>) -> io::Result<(Self, Vec<HookJob>)> {
        let mut due: BTreeMap<u64, HookJob> = BTreeMap::new();
        let mut results: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                // A torn last line (crash mid-append) was never made durable: ignored.
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Due(job)) => {
                        due.insert(job.seq, job);
                    }
                    Ok(Line::Result { result, output }) => {
                        use base64::Engine as _;
                        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(output)
                        {
                            results.insert(result, bytes);
                        }
                    }
                    Ok(Line::Done { done }) => {
                        due.remove(&done);
                    }
                    Err(_) => {}
                }
            }
        }
        let mut pending: Vec<HookJob> = due.into_values().collect();
        let mut lines: Vec<Line> = Vec::new();
        for job in &mut pending {
            lines.push(Line::Due(job.clone()));
            job.recorded_result = results.remove(&job.seq);
            if let Some(output) = &job.recorded_result {
                lines.push(result_line(job.seq, output));
            }
        }
        jsonl::rewrite(path, &lines)?;
        let next_seq = pending.last().map_or(0, |j| j.seq + 1);
        let due_at_open = pending
            .iter()
            .map(|j| (j.relative.clone(), j.sha512.clone()))
            .collect();
        Ok((
            Self {
                file: AppendLog::open(path)?,
                next_seq,
                runner,
                due_at_open,
            },
            pending,
        ))
    }

    /// Whether the job of this file version was due when the log was opened (the runner has
    /// it, or had it, from the start).
    pub fn was_due_at_open(&self, relative: &str, sha512: &str) -> bool {
        self.due_at_open
            .contains(&(relative.to_string(), sha512.to_string()))
    }

    /// Records that hooks are due for `files` (relative path, size, hex SHA-512) and makes the
    /// record durable; the runner gets them once [`HookLog::release`] is called.
    pub fn mark_due(&mut self, files: &[(String, u64, String)]) -> io::Result<Vec<HookJob>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let mut jobs = Vec::with_capacity(files.len());
        for (relative, size, sha512) in files {
            jobs.push(HookJob {
                seq: self.next_seq,
                relative: relative.clone(),
                size: *size,
                sha512: sha512.clone(),
                recorded_result: None,
            });
            self.next_seq += 1;
        }
        let lines: Vec<Line> = jobs.iter().cloned().map(Line::Due).collect();
        self.file.append(&lines)?;
        self.file.sync()?;
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

fn result_line(seq: u64, output: &[u8]) -> Line {
    use base64::Engine as _;
    Line::Result {
        result: seq,
        output: base64::engine::general_purpose::STANDARD.encode(output),
    }
}

/// The hooks configured (none by default).
#[derive(Debug, Clone, Default)]
pub struct HookSettings {
    /// `--on-file`: after each file.
    pub on_file: Option<UserCommand>,
    /// `--on-batch`: once after a burst of files settles.
    pub on_batch: Option<UserCommand>,
    /// `--hook-delay`: how long no new file must arrive before `on_batch` runs.
    pub batch_delay: Duration,
    /// Bound on each command.
    pub timeout: Duration,
    /// `--restore-on-hook-failure`: the backup suffix to restore from when a hook fails.
    pub restore_from_backup: Option<String>,
    /// s3-transfer: the output folder holds local copies kept only for `--on-file`; each is
    /// removed (with the folders it leaves empty) once its job is done.
    pub remove_after_run: bool,
    /// Variables `--on-file` gets besides the usual ones, from the file's relative path
    /// (s3-transfer: the object's bucket and key).
    pub file_env: FileEnv,
}

/// Per-file variables for `--on-file` ([`HookSettings::file_env`]); none by default.
#[derive(Clone, Default)]
pub struct FileEnv(Option<std::sync::Arc<FileEnvFn>>);

/// Gives the extra variables of the file at a relative path.
pub type FileEnvFn = dyn Fn(&str) -> Vec<(&'static str, String)> + Send + Sync;

impl FileEnv {
    pub fn new(f: impl Fn(&str) -> Vec<(&'static str, String)> + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(f)))
    }

    fn of(&self, relative: &str) -> Vec<(&'static str, String)> {
        self.0.as_ref().map_or_else(Vec::new, |f| f(relative))
    }
}

impl std::fmt::Debug for FileEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "FileEnv(..)"
        } else {
            "FileEnv(none)"
        })
    }
}

impl HookSettings {
    /// True when some hook is configured.
    pub fn any(&self) -> bool {
        self.on_file.is_some() || self.on_batch.is_some()
    }
}

/// What the runner needs.
pub struct HookRunner {
    pub settings: HookSettings,
    pub output_dir: PathBuf,
    pub topic: String,
    /// `.openmsi/hooks.jsonl`, for the done marks.
    pub log_path: PathBuf,
    /// Counts failed hooks.
    pub stats: std::sync::Arc<super::stats::DownloadStats>,
    /// `--result-topic`: where each `--on-file` command's output goes.
    pub results: Option<Box<dyn ResultSink>>,
}

impl HookRunner {
    /// Runs the hooks of `first` (due from an earlier run), then of every job received, until
    /// the sender side is dropped and the queue is empty. `--on-file` runs as each job comes;
    /// `--on-batch` once no job came for the batch delay (or the queue ended). A job is marked
    /// done once every hook it needs has run.
    pub fn run(self, first: Vec<HookJob>, jobs: Receiver<HookJob>) {
        if !first.is_empty() {
            info!(
                hooks = first.len(),
                "running hooks that were due when the last run stopped"
            );
        }
        // The writer thread appends due marks to the same file through its own handle.
        let mut log = AppendLog::open(&self.log_path);
        let mark_done = |log: &mut io::Result<AppendLog>, batch: &[HookJob]| {
            // Not synced: a lost done mark only makes the hook run again after a crash.
            if let Ok(log) = log.as_mut() {
                let lines: Vec<Line> = batch
                    .iter()
                    .map(|job| Line::Done { done: job.seq })
                    .collect();
                let _ = log.append(&lines);
            }
        };
        // Jobs of the batch whose result was not acknowledged: they stay due.
        let mut undelivered: Vec<u64> = Vec::new();
        let mut batch: Vec<HookJob> = Vec::new();
        let mut first = first.into_iter();
        loop {
            let next = match first.next() {
                Some(job) => Some(job),
                None if batch.is_empty() => jobs.recv().ok(),
                None => match jobs.recv_timeout(self.settings.batch_delay) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            match next {
                Some(job) => {
                    let done = match &self.settings.on_file {
                        Some(cmd) => self.run_on_file(cmd, &job, &mut log),
                        None => true,
                    };
                    if !done {
                        undelivered.push(job.seq);
                    }
                    if self.settings.on_batch.is_some() {
                        batch.push(job);
                    } else if done {
                        mark_done(&mut log, std::slice::from_ref(&job));
                        if self.settings.remove_after_run {
                            self.remove_local_copy(&job.relative);
                        }
                    }
                }
                None if batch.is_empty() => break,
                None => {
                    if let Some(cmd) = &self.settings.on_batch {
                        self.run_on_batch(cmd, &batch);
                    }
                    batch.retain(|job| !undelivered.contains(&job.seq));
                    mark_done(&mut log, &batch);
                    batch.clear();
                    undelivered.clear();
                }
            }
        }
    }

    /// Removes the local copy of `relative` and the folders it leaves empty (up to the output
    /// folder); a copy already gone is fine.
    fn remove_local_copy(&self, relative: &str) {
        let path = self.final_path(relative);
        match crate::state::remove_with_empty_parents(&self.output_dir, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot remove the local copy after its hook")
            }
        }
    }

    fn final_path(&self, relative: &str) -> PathBuf {
        self.output_dir
            .join(relative.split('/').collect::<PathBuf>())
    }

    /// Runs `--on-file` for `job` and sends its result (`--result-topic`); false when a result
    /// was not acknowledged (the job stays due).
    fn run_on_file(
        &self,
        cmd: &UserCommand,
        job: &HookJob,
        log: &mut io::Result<AppendLog>,
    ) -> bool {
        let output = match &job.recorded_result {
            // Ran before the last stop, its result not acknowledged: sent as it was recorded.
            Some(recorded) => recorded.clone(),
            None => match self.run_command_on_file(cmd, job) {
                Some(output) => {
                    // Recorded before it is sent, so a repeat after a crash sends these bytes.
                    let recorded = log
                        .as_mut()
                        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
                        .and_then(|log| {
                            log.append(&[result_line(job.seq, &output)])?;
                            log.sync()
                        });
                    if let Err(e) = recorded {
                        warn!(path = %job.relative, error = %e, "--result-topic: the result could not be recorded; a crash before it is acknowledged would run the command again");
                    }
                    output
                }
                None => return true,
            },
        };
        let Some(results) = &self.results else {
            return true;
        };
        match results.send(&job.relative, &output) {
            Ok(()) => {
                super::stats::DownloadStats::add(&self.stats.results_sent, 1);
                true
            }
            Err(e) => {
                error!(path = %job.relative, error = %e, "--result-topic: the result was not acknowledged; it is sent again (the same bytes) at the next start");
                false
            }
        }
    }

    /// Runs the `--on-file` command; its standard output when a result is to be sent.
    fn run_command_on_file(&self, cmd: &UserCommand, job: &HookJob) -> Option<Vec<u8>> {
        let path = self.final_path(&job.relative);
        let facts = FileFacts {
            path: &path,
            relative: &job.relative,
            size: job.size,
            sha512: &job.sha512,
            topic: &self.topic,
        };
        let capture = match self.results {
            Some(_) => Capture::Stdout(MAX_RESULT_BYTES),
            None => Capture::Tail,
        };
        let outcome = command::run(
            cmd,
            &facts,
            &[("OPENMSI_STAGE", "on-file".into())]
                .into_iter()
                .chain(self.settings.file_env.of(&job.relative))
                .collect::<Vec<_>>(),
            self.settings.timeout,
            capture,
        );
        let stdout = outcome.as_ref().ok().and_then(|ran| ran.stdout.clone());
        if !self.report("--on-file", cmd, &job.relative, outcome) {
            self.restore(std::slice::from_ref(job));
            return None;
        }
        match stdout? {
            CapturedOutput::Whole(output) => Some(output),
            CapturedOutput::TooLong => {
                super::stats::DownloadStats::add(&self.stats.hooks_failed, 1);
                error!(hook = "--on-file", subject = %job.relative, "--result-topic: the command printed more than {MAX_RESULT_BYTES} bytes; no result is sent for this file");
                None
            }
        }
    }

    /// Runs the batch command with a NUL-separated list of the files' relative paths, whose
    /// path is its last argument and `OPENMSI_FILE_LIST`; `OPENMSI_FILE_COUNT` says how many.
    fn run_on_batch(&self, cmd: &UserCommand, batch: &[HookJob]) {
        let list = self.log_path.with_extension("batch");
        let mut text = Vec::new();
        for job in batch {
            text.extend_from_slice(job.relative.as_bytes());
            text.push(0);
        }
        if let Err(e) = fs::write(&list, &text) {
            warn!(error = %e, list = %list.display(), "--on-batch: cannot write the file list; the hook is not run");
            return;
        }
        let mut command_line = std::process::Command::new(cmd.program());
        command_line
            .args(cmd.args())
            .arg(&list)
            .env("OPENMSI_FILE_LIST", &list)
            .env("OPENMSI_FILE_COUNT", batch.len().to_string())
            .env("OPENMSI_TOPIC", &self.topic)
            .env("OPENMSI_OUTPUT_DIR", &self.output_dir)
            .env("OPENMSI_STAGE", "on-batch");
        let outcome = command::run_command(command_line, self.settings.timeout, Capture::Tail);
        let what = format!("{} files", batch.len());
        if !self.report("--on-batch", cmd, &what, outcome) {
            self.restore(batch);
        }
    }

    /// Logs a hook's outcome; true when it succeeded.
    fn report(
        &self,
        flag: &str,
        cmd: &UserCommand,
        subject: &str,
        outcome: std::io::Result<command::Ran>,
    ) -> bool {
        match outcome {
            Ok(ran) if ran.succeeded() => {
                info!(
                    hook = flag,
                    subject,
                    took_s = ran.took.as_secs_f64(),
                    "hook done"
                );
                true
            }
            Ok(ran) => {
                super::stats::DownloadStats::add(&self.stats.hooks_failed, 1);
                error!(
                    hook = flag,
                    subject,
                    command = %cmd.text,
                    outcome = %ran.describe(),
                    output = %ran.output_tail.trim_end(),
                    "hook failed"
                );
                false
            }
            Err(e) => {
                super::stats::DownloadStats::add(&self.stats.hooks_failed, 1);
                error!(hook = flag, subject, command = %cmd.text, error = %e, "hook could not be started");
                false
            }
        }
    }

    /// `--restore-on-hook-failure`: puts each file's backup (the version it replaced) back in
    /// place, atomically (a hard link renamed over the file). A file without a backup (it was
    /// new) is left alone.
    fn restore(&self, jobs: &[HookJob]) {
        let Some(suffix) = &self.settings.restore_from_backup else {
            return;
        };
        for job in jobs {
            let path = self.final_path(&job.relative);
            let mut backup = path.clone().into_os_string();
            backup.push(suffix);
            let backup = PathBuf::from(backup);
            if !backup.is_file() {
                warn!(path = %job.relative, "hook failed and there is no previous version to restore; the new one stays");
                continue;
            }
            match crate::state::atomic::link_over(&backup, &path) {
                Ok(()) => {
                    warn!(path = %job.relative, "hook failed: the previous version is back in place (--restore-on-hook-failure)")
                }
                Err(e) => {
                    error!(path = %job.relative, error = %e, "hook failed and restoring the previous version failed too")
                }
            }
        }
    }
}

/// Opens the hook log at `log_path` and starts the runner thread, when a hook is configured;
/// otherwise removes the log, so old due marks never fire for a command that is gone.
pub fn start(
    log_path: &Path,
    settings: &HookSettings,
    output_dir: &Path,
    topic: &str,
    stats: &std::sync::Arc<super::stats::DownloadStats>,
    results: Option<Box<dyn ResultSink>>,
) -> std::io::Result<(Option<HookLog>, Option<std::thread::JoinHandle<()>>)> {
    if !settings.any() {
        let _ = fs::remove_file(log_path);
        return Ok((None, None));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (log, pending) =
        HookLog::open(log_path, tx).map_err(|e| crate::state::annotate(e, log_path))?;
    let runner = HookRunner {
        settings: settings.clone(),
        output_dir: output_dir.to_path_buf(),
        topic: topic.to_string(),
        log_path: log_path.to_path_buf(),
        stats: std::sync::Arc::clone(stats),
        results,
    };
    let handle = std::thread::Builder::new()
        .name("hooks".into())
        .spawn(move || runner.run(pending, rx))?;
    Ok((Some(log), Some(handle)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    type Sent = Vec<(String, Vec<u8>)>;

    /// Records what it is sent; refuses everything while `down`.
    #[derive(Clone, Default)]
    struct Collect {
        sent: Arc<Mutex<Sent>>,
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    impl ResultSink for Collect {
        fn send(&self, relative: &str, value: &[u8]) -> Result<(), String> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("broker down".into());
            }
            self.sent
                .lock()
                .unwrap()
                .push((relative.into(), value.to_vec()));
            Ok(())
        }
    }

    /// A runner for `on_file` writing its log in `dir`, sending results to `sink`.
    fn runner(dir: &Path, on_file: &str, sink: &Collect) -> HookRunner {
        HookRunner {
            settings: HookSettings {
                on_file: Some(UserCommand::parse("--on-file", on_file).unwrap()),
                on_batch: None,
                batch_delay: Duration::from_millis(10),
                timeout: Duration::from_secs(10),
                ..HookSettings::default()
            },
            output_dir: dir.to_path_buf(),
            topic: "t".into(),
            log_path: dir.join("hooks.jsonl"),
            stats: Default::default(),
            results: Some(Box::new(sink.clone())),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_result_not_acknowledged_is_sent_again_as_recorded_without_running_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.jsonl");
        // The command's output changes at every run (it counts its runs in a file).
        let counter = dir.path().join("runs");
        let on_file = format!(
            "sh -c 'echo x >> {0}; printf \"{{\\\"runs\\\": %s}}\" $(wc -l < {0})' hook",
            counter.display()
        );
        let sink = Collect::default();
        sink.down.store(true, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let (mut log, pending) = HookLog::open(&path, tx).unwrap();
        assert!(pending.is_empty());
        let jobs = log
            .mark_due(&[("a/b.json".into(), 1, "aa".into())])
            .unwrap();
        log.release(jobs);
        drop(log);
        // The broker is down: the command runs once, its result is recorded and not sent.
        runner(dir.path(), &on_file, &sink).run(Vec::new(), rx);
        assert!(sink.sent.lock().unwrap().is_empty());
        assert_eq!(
            std::fs::read_to_string(&counter).unwrap().lines().count(),
            1
        );

        // The next start: the job is still due, with its recorded result.
        sink.down.store(false, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let (log, pending) = HookLog::open(&path, tx).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            pending[0].recorded_result.as_deref(),
            Some(&br#"{"runs": 1}"#[..])
        );
        drop(log);
        runner(dir.path(), &on_file, &sink).run(pending, rx);
        assert_eq!(
            *sink.sent.lock().unwrap(),
            [("a/b.json".to_string(), br#"{"runs": 1}"#.to_vec())]
        );
        // The command did not run again, and the job is done now.
        assert_eq!(
            std::fs::read_to_string(&counter).unwrap().lines().count(),
            1
        );
        let (tx, _rx) = mpsc::channel();
        let (_log, pending) = HookLog::open(&path, tx).unwrap();
        assert!(pending.is_empty());
    }

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
        use std::io::Write;
        writeln!(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap(),
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
