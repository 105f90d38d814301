//! Chaos test on a real (sqlite) broker: `upload-directory` and `download-directory` both
//! killed with SIGKILL many times, at random moments, during a mixed workload written into the
//! watched folder over time (large files cut into hundreds of chunks, many small files in
//! nested folders, an empty file, files replaced by new versions after their upload), each
//! restarted with the same state folder and consumer group.
//!
//! Checked:
//! - during the whole run, a watcher polls the output folder every 20 ms: every file under a
//!   final name must be byte-identical to a version that was written at the source;
//! - at the end, every file's latest version is in the output folder, byte-identical, and no
//!   other file is;
//! - every version was published at most once (`.openmsi/completed.jsonl` has one line per
//!   publication: two lines for one path and hash mean the file was re-created);
//! - no process panicked, nothing was rejected or failed verification.
//!
//! The kill schedule comes from a seeded RNG: the seed is printed, and `OPENMSI_CHAOS_SEED=N`
//! replays it. `OPENMSI_LONG_TESTS=1` runs the long variant (more data, more kills; use
//! `cargo nextest run --profile long --test chaos`, whose timeout allows it). The last line
//! printed is the summary for the reliability report.

mod common;

use common::TopicFixture;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{openmsi_std, sha512_file, wait_for, write_random_file, KillOnDrop, Storage};
use sha2::{Digest, Sha512};

/// Chunk size for the run: small, so a large file takes hundreds of messages and a kill lands
/// in the middle of one.
const CHUNK_SIZE: usize = 65_536;

/// How much work and how many faults.
struct Plan {
    /// Large files (bytes each), written at spread-out times.
    large: Vec<u64>,
    /// Medium files (bytes each).
    medium: Vec<u64>,
    /// Small files in nested folders.
    small: usize,
    /// Files given a new version after their first one was uploaded.
    new_versions: usize,
    /// Seconds over which the files are written.
    write_span: f64,
    /// SIGKILLs of each process.
    kills: usize,
    /// Bound on the whole fault phase, and on the final convergence.
    fault_phase: Duration,
    converge: Duration,
}

impl Plan {
    fn default_mode() -> Plan {
        Plan {
            large: vec![32 << 20, 24 << 20],
            medium: vec![3 << 20, 2 << 20],
            small: 60,
            new_versions: 4,
            write_span: 32.0,
            kills: 5,
            fault_phase: Duration::from_secs(60),
            converge: Duration::from_secs(75),
        }
    }

    fn long_mode() -> Plan {
        Plan {
            large: vec![64 << 20, 48 << 20, 32 << 20, 24 << 20],
            medium: vec![4 << 20, 3 << 20, 3 << 20, 2 << 20, 1 << 20],
            small: 250,
            new_versions: 12,
            write_span: 90.0,
            kills: 12,
            fault_phase: Duration::from_secs(300),
            converge: Duration::from_secs(300),
        }
    }
}

/// splitmix64: small, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in [lo, hi).
    fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

/// One file version to write: at `at` seconds after the start, `len` bytes from `seed`.
#[derive(Debug, Clone)]
struct SourceWrite {
    at: f64,
    relative: String,
    len: u64,
    seed: u64,
}

/// The workload: first versions spread over the write span, new versions of some of them in
/// its last third (long after their first version, so that one was uploaded).
fn workload(plan: &Plan, rng: &mut Rng) -> Vec<SourceWrite> {
    let mut writes = Vec::new();
    let span = plan.write_span;
    for (i, &len) in plan.large.iter().enumerate() {
        writes.push(SourceWrite {
            at: span * 0.6 * i as f64 / plan.large.len() as f64,
            relative: format!("large/run{i}/scan {i}.raw"),
            len,
            seed: rng.next(),
        });
    }
    for (i, &len) in plan.medium.iter().enumerate() {
        writes.push(SourceWrite {
            at: rng.range_f64(0.0, span * 0.6),
            relative: format!("medium/m{i}.tif"),
            len,
            seed: rng.next(),
        });
    }
    for i in 0..plan.small {
        let depth = rng.below(4);
        let mut folder = String::new();
        for d in 0..depth {
            folder.push_str(&format!("d{d}_{}/", rng.below(3)));
        }
        writes.push(SourceWrite {
            at: rng.range_f64(0.0, span * 0.6),
            relative: format!("small/{folder}s{i}.dat"),
            // One empty file; the rest up to 256 KiB (one to four chunks).
            len: if i == 0 { 0 } else { rng.below(256 << 10) },
            seed: rng.next(),
        });
    }
    // New versions: one large file in six, the rest medium and small files.
    let firsts = writes.clone();
    for v in 0..plan.new_versions {
        let pool: Vec<&SourceWrite> = firsts
            .iter()
            .filter(|w| match v % 6 {
                0 => w.relative.starts_with("large/"),
                1 | 4 => w.relative.starts_with("medium/"),
                _ => w.relative.starts_with("small/"),
            })
            .collect();
        let first = pool[rng.below(pool.len() as u64) as usize];
        writes.push(SourceWrite {
            at: rng.range_f64(span * 0.7, span).max(first.at + span * 0.3),
            relative: first.relative.clone(),
            len: first.len + 1 + rng.below(100_000),
            seed: rng.next(),
        });
    }
    writes.sort_by(|a, b| a.at.total_cmp(&b.at));
    writes
}

/// Every version written at the source: relative path → hex SHA-512s in write order.
type Versions = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

/// Writes the workload into `src` on schedule. Each version is written to a hidden temporary
/// name (never uploaded) and renamed into place, after its hash is recorded: the watcher can
/// never see a version it does not know.
fn start_writer(
    src: PathBuf,
    writes: Vec<SourceWrite>,
    versions: Versions,
    start: Instant,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for w in writes {
            let due = start + Duration::from_secs_f64(w.at);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let path = src.join(&w.relative);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let temp = path.with_file_name(format!(".{name}.writing"));
            write_random_file(&temp, w.len, w.seed);
            let hash = sha512_file(&temp);
            versions
                .lock()
                .unwrap()
                .entry(w.relative.clone())
                .or_default()
                .push(hash);
            std::fs::rename(&temp, &path).unwrap();
        }
    })
}

/// Polls `out` every 20 ms until `stop`; returns every moment a file under a final name was
/// not a version written at the source. A file is hashed again only when its inode, size or
/// mtime changed (that is how the downloader replaces files: rename of a new inode).
fn start_watcher(
    out: PathBuf,
    versions: Versions,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, u64)> {
    std::thread::spawn(move || {
        let mut seen: HashMap<PathBuf, (u64, u64, u64, i64, i64)> = HashMap::new();
        let mut violations = Vec::new();
        let mut polls = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            // One last poll after `stop`, so the final state is checked too.
            let stopping = stop.load(Ordering::Acquire);
            polls += 1;
            let walk = walkdir::WalkDir::new(&out)
                .into_iter()
                .filter_entry(|e| e.file_name() != ".openmsi");
            for entry in walk.filter_map(Result::ok) {
                if !entry.file_type().is_file() {
                    continue;
                }
                let path = entry.path();
                // Replaced or removed since the listing: the next poll sees the new one.
                let Ok(mut file) = File::open(path) else {
                    continue;
                };
                let Ok(meta) = file.metadata() else { continue };
                let key = (
                    meta.dev(),
                    meta.ino(),
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                );
                if seen.get(path) == Some(&key) {
                    continue;
                }
                let mut hasher = Sha512::new();
                loop {
                    let n = file.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                let hash: String = hasher
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let relative = path
                    .strip_prefix(&out)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let known = versions
                    .lock()
                    .unwrap()
                    .get(&relative)
                    .is_some_and(|v| v.contains(&hash));
                if !known {
                    violations.push(format!(
                        "{relative}: {} bytes under its final name, not a version written at \
                         the source",
                        meta.len()
                    ));
                }
                seen.insert(path.to_path_buf(), key);
            }
            if stopping {
                return (violations, polls);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// A long-running openmsi process that gets killed and restarted.
struct Restartable {
    name: &'static str,
    args: Vec<String>,
    logs: PathBuf,
    child: Option<KillOnDrop>,
    /// Starts so far (log files are numbered by it).
    starts: usize,
    started_at: Instant,
    kills: usize,
}

impl Restartable {
    fn new(name: &'static str, args: Vec<String>, logs: &Path) -> Restartable {
        Restartable {
            name,
            args,
            logs: logs.to_path_buf(),
            child: None,
            starts: 0,
            started_at: Instant::now(),
            kills: 0,
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        self.starts += 1;
        let log = |ext: &str| {
            File::create(
                self.logs
                    .join(format!("{}-{}.{ext}", self.name, self.starts)),
            )
            .unwrap()
        };
        let child = openmsi_std()
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .unwrap();
        self.child = Some(KillOnDrop(child));
        self.started_at = Instant::now();
    }

    /// SIGKILL, reaped.
    fn kill(&mut self) {
        let mut child = self
            .child
            .take()
            .expect("kill of a process that is not running");
        if child.0.try_wait().unwrap().is_some() {
            panic!(
                "{} run {} exited on its own before its kill: {}",
                self.name,
                self.starts,
                self.stderr(self.starts)
            );
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        self.kills += 1;
    }

    /// Asserts it is still running (a crash between kills is a failure).
    fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!(
                    "{} run {} exited on its own ({status}): {}",
                    self.name,
                    self.starts,
                    self.stderr(self.starts)
                );
            }
        }
    }

    /// `quit` on stdin; waits for a clean exit.
    fn quit(&mut self) -> std::process::ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("quit of a process that is not running");
        child
            .0
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"quit\n")
            .unwrap();
        let exited = wait_for(Duration::from_secs(60), || {
            child.0.try_wait().unwrap().is_some()
        });
        assert!(
            exited,
            "{} did not stop within 60 s of `quit`: {}",
            self.name,
            self.stderr(self.starts)
        );
        child.0.wait().unwrap()
    }

    fn stderr(&self, run: usize) -> String {
        std::fs::read_to_string(self.logs.join(format!("{}-{run}.err", self.name)))
            .unwrap_or_default()
    }

    /// Every run's log lines that mention one of `paths` or are warnings/errors, prefixed with
    /// the run: the story of a lost file across restarts.
    fn lines_about(&self, paths: &[&String]) -> String {
        let mut out = String::new();
        for run in 1..=self.starts {
            for line in self.stderr(run).lines() {
                let relevant = paths.iter().any(|p| line.contains(p.as_str()))
                    || line.contains(" WARN ")
                    || line.contains(" ERROR ");
                if relevant {
                    out.push_str(&format!("{} run {run}: {line}\n", self.name));
                }
            }
        }
        out
    }

    /// Runs whose stderr mentions a panic.
    fn panics(&self) -> Vec<String> {
        (1..=self.starts)
            .filter(|&run| self.stderr(run).contains("panicked"))
            .map(|run| format!("{} run {run}: {}", self.name, self.stderr(run)))
            .collect()
    }
}

/// Bytes the downloader has staged or published, plus its completed-log size: grows whenever
/// it does anything.
fn download_progress(out: &Path) -> u64 {
    common::progress_bytes(out)
        + std::fs::metadata(out.join(".openmsi/completed.jsonl")).map_or(0, |m| m.len())
}

/// Partial files in the downloader's staging area.
fn staged_partials(out: &Path) -> usize {
    std::fs::read_dir(out.join(".openmsi/staging")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .count()
    })
}

/// Paths whose latest version written is not yet recorded as acknowledged in the uploader's
/// registry (`.openmsi/uploaded.jsonl`): the uploader has work in hand.
fn uploads_pending(src: &Path, versions: &Versions) -> usize {
    let text = std::fs::read_to_string(src.join(".openmsi/uploaded.jsonl")).unwrap_or_default();
    let acked: std::collections::HashSet<(String, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v["path"].as_str()?.to_string(),
                v["sha512"].as_str()?.to_string(),
            ))
        })
        .collect();
    versions
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, v)| !acked.contains(&((*p).clone(), v.last().unwrap().clone())))
        .count()
}

/// (path, hash) → publications, from the downloader's completed log.
fn publications(out: &Path) -> BTreeMap<(String, String), usize> {
    let text = std::fs::read_to_string(out.join(".openmsi/completed.jsonl")).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("unreadable completed.jsonl line {line:?}: {e}"));
        let key = (
            v["path"].as_str().unwrap().to_string(),
            v["file_hash"].as_str().unwrap().to_string(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// True when every path's latest version is in `out`, byte-identical.
fn latest_all_present(out: &Path, versions: &Versions) -> bool {
    let latest: Vec<(String, String)> = versions
        .lock()
        .unwrap()
        .iter()
        .map(|(p, v)| (p.clone(), v.last().unwrap().clone()))
        .collect();
    latest.iter().all(|(rel, hash)| {
        let p = out.join(rel);
        p.is_file() && &sha512_file(&p) == hash
    })
}

#[test]
fn kill_9_of_uploader_and_downloader_during_a_mixed_workload_loses_and_corrupts_nothing() {
    let long = std::env::var("OPENMSI_LONG_TESTS").is_ok_and(|v| v == "1");
    let plan = if long {
        Plan::long_mode()
    } else {
        Plan::default_mode()
    };
    let seed = std::env::var("OPENMSI_CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("OPENMSI_CHAOS_SEED must be an integer"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!(
        "chaos: seed {seed} ({} mode); replay with OPENMSI_CHAOS_SEED={seed}",
        if long { "long" } else { "default" }
    );
    let mut rng = Rng(seed);

    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "chaos", 2);
    // OPENMSI_CHAOS_KEEP=1 keeps the work folder (sources, output, every process's log) for a
    // post-mortem of a failed run.
    let (_work_guard, root) = if std::env::var("OPENMSI_CHAOS_KEEP").is_ok_and(|v| v == "1") {
        let kept = work.keep();
        eprintln!("chaos: work folder kept at {}", kept.display());
        (None, kept)
    } else {
        let root = work.path().to_path_buf();
        (Some(work), root)
    };
    let src = root.join("watched");
    let out = root.join("out");
    let logs = root.join("logs");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut uploader = Restartable::new(
        "upload-directory",
        vec![
            "upload-directory".into(),
            s(&src),
            "--config".into(),
            s(&cfg),
            "--topic".into(),
            topic.clone(),
            "--chunk-size".into(),
            CHUNK_SIZE.to_string(),
            "--upload-existing".into(),
            "--settle-seconds".into(),
            "0.5".into(),
            "--rescan-seconds".into(),
            "2".into(),
        ],
        &logs,
    );
    let mut downloader = Restartable::new(
        "download-directory",
        vec![
            "download-directory".into(),
            s(&out),
            "--config".into(),
            s(&cfg),
            "--topic".into(),
            topic.clone(),
            "--group-id".into(),
            "chaos-group".into(),
        ],
        &logs,
    );

    let writes = workload(&plan, &mut rng);
    let bytes_written: u64 = writes.iter().map(|w| w.len).sum();
    // Uploader kills at seeded moments over the write span and a little after it (spaced by
    // at least 1 s); the downloader is killed at a seeded delay after it has made progress
    // since its restart (a restarted static member needs several seconds to rejoin on tansu,
    // so kills at fixed times would mostly hit an idle process). A kill that is due waits up to
    // `PREFER_BUSY` for the process to have work in hand (files not yet acknowledged, partial
    // files staged), so that most kills interrupt a transfer.
    const PREFER_BUSY: Duration = Duration::from_secs(3);
    const PREFER_MID_FILE: Duration = Duration::from_secs(6);
    let mut up_kill_at: Vec<f64> = (0..plan.kills)
        .map(|_| rng.range_f64(1.0, plan.write_span + 4.0))
        .collect();
    up_kill_at.sort_by(f64::total_cmp);
    for i in 1..up_kill_at.len() {
        up_kill_at[i] = up_kill_at[i].max(up_kill_at[i - 1] + 1.0);
    }
    let mut up_kills = up_kill_at.into_iter().peekable();

    let versions: Versions = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = start_watcher(out.clone(), Arc::clone(&versions), Arc::clone(&stop));
    let start = Instant::now();
    uploader.start();
    downloader.start();
    let writer = start_writer(src.clone(), writes.clone(), Arc::clone(&versions), start);

    // Fault phase.
    let mut down_base = download_progress(&out);
    let mut down_kill_at: Option<Instant> = None;
    let mut up_restart_at: Option<Instant> = None;
    let mut down_restart_at: Option<Instant> = None;
    // Kills that hit work in hand: files not yet acknowledged, partial files staged.
    let (mut up_kills_busy, mut down_kills_mid_file) = (0, 0);
    // The downloader is killed only after progress: once the workload is written and it has
    // been idle for a while, its remaining kills would never come.
    let (mut last_progress, mut last_progress_at) = (down_base, Instant::now());
    while start.elapsed() < plan.fault_phase
        && (up_kills.peek().is_some()
            || !writer.is_finished()
            || up_restart_at.is_some()
            || down_restart_at.is_some()
            || (downloader.kills < plan.kills
                && last_progress_at.elapsed() < Duration::from_secs(5)))
    {
        let now = Instant::now();
        let progress = download_progress(&out);
        if progress != last_progress {
            (last_progress, last_progress_at) = (progress, now);
        }
        uploader.assert_alive();
        downloader.assert_alive();
        if up_restart_at.is_some_and(|t| now >= t) {
            uploader.start();
            up_restart_at = None;
        }
        if down_restart_at.is_some_and(|t| now >= t) {
            downloader.start();
            down_base = download_progress(&out);
            down_restart_at = None;
        }
        if uploader.child.is_some() {
            let due = up_kills
                .peek()
                .map(|&t| start.elapsed().as_secs_f64() - t)
                .filter(|&late| late >= 0.0);
            if let Some(late) = due {
                let busy = uploads_pending(&src, &versions) > 0;
                if busy || late >= PREFER_BUSY.as_secs_f64() {
                    up_kills.next();
                    up_kills_busy += usize::from(busy);
                    uploader.kill();
                    up_restart_at = Some(now + rng.millis(0, 500));
                }
            }
        }
        if downloader.child.is_some() && downloader.kills < plan.kills {
            match down_kill_at {
                None if progress > down_base => {
                    down_kill_at = Some(now + rng.millis(0, 1500));
                }
                Some(t) if now >= t => {
                    let busy = staged_partials(&out) > 0;
                    if busy || now >= t + PREFER_MID_FILE {
                        down_kills_mid_file += usize::from(busy);
                        downloader.kill();
                        down_kill_at = None;
                        down_restart_at = Some(now + rng.millis(0, 500));
                    }
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    for p in [&mut uploader, &mut downloader] {
        if p.child.is_none() {
            p.start();
        }
    }
    let fault_phase = start.elapsed();
    eprintln!(
        "chaos: fault phase over after {:.1} s: {} uploader kills, {} downloader kills",
        fault_phase.as_secs_f64(),
        uploader.kills,
        downloader.kills
    );

    // Convergence: the survivors finish the job.
    let converged = wait_for(plan.converge, || {
        uploader.assert_alive();
        downloader.assert_alive();
        latest_all_present(&out, &versions)
    });
    let up_status = uploader.quit();
    let down_status = downloader.quit();
    stop.store(true, Ordering::Release);
    let (violations, polls) = watcher.join().unwrap();

    let versions = versions.lock().unwrap().clone();
    let missing: Vec<&String> = versions
        .iter()
        .filter(|(rel, v)| {
            let p = out.join(rel);
            !(p.is_file() && &sha512_file(&p) == v.last().unwrap())
        })
        .map(|(rel, _)| rel)
        .collect();
    let extra: Vec<String> = common::files_under(&out)
        .into_iter()
        .filter(|rel| !versions.contains_key(rel))
        .collect();
    let published = publications(&out);
    let republished: Vec<String> = published
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|((p, h), n)| format!("{p} ({}…) published {n} times", &h[..12]))
        .collect();
    let unknown_published: Vec<String> = published
        .keys()
        .filter(|(p, h)| !versions.get(p).is_some_and(|v| v.contains(h)))
        .map(|(p, _)| p.clone())
        .collect();
    let panics: Vec<String> = uploader
        .panics()
        .into_iter()
        .chain(downloader.panics())
        .collect();
    let files_moved: usize = published.values().sum();
    let n_versions: usize = versions.values().map(Vec::len).sum();

    println!(
        "chaos summary: seed {seed}, {} mode, {:.0} s: faults injected {} (kill -9: {} \
         upload-directory, {up_kills_busy} of them with uploads pending; {} \
         download-directory, {down_kills_mid_file} of them with partial files staged); file versions written {n_versions} \
         ({:.1} MiB), files moved {files_moved}; lost {}, corrupted {}, re-created {}; watcher \
         polls {polls}; panics {}",
        if long { "long" } else { "default" },
        start.elapsed().as_secs_f64(),
        uploader.kills + downloader.kills,
        uploader.kills,
        downloader.kills,
        bytes_written as f64 / (1 << 20) as f64,
        missing.len(),
        violations.len() + extra.len(),
        republished.len(),
        panics.len(),
    );

    assert!(panics.is_empty(), "{panics:#?}");
    assert!(
        violations.is_empty(),
        "files under their final name that were never written at the source: {violations:#?}"
    );
    assert!(
        converged && missing.is_empty(),
        "after {:.0} s these files' latest versions are missing or wrong: {missing:?}\n\
         --- versions written (SHA-512 prefixes, oldest first) ---\n{}\n\
         --- upload registry and completed-log lines for them ---\n{}\n\
         --- uploader log lines about them, warnings and errors (every run) ---\n{}\n\
         --- downloader log lines about them, warnings and errors (every run) ---\n{}\n\
         --- last runs' summaries ---\n{}{}\n\
         --- last downloader log ---\n{}",
        plan.converge.as_secs_f64(),
        missing
            .iter()
            .map(|p| format!(
                "{p}: {:?}",
                versions[*p].iter().map(|h| &h[..12]).collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
            .join("\n"),
        [
            src.join(".openmsi/uploaded.jsonl"),
            out.join(".openmsi/completed.jsonl")
        ]
        .iter()
        .flat_map(|f| std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .filter(|l| missing.iter().any(|p| l.contains(p.as_str())))
            .map(|l| format!("{}: {l}", f.display()))
            .collect::<Vec<_>>())
        .collect::<Vec<_>>()
        .join("\n"),
        uploader.lines_about(&missing),
        downloader.lines_about(&missing),
        std::fs::read_to_string(logs.join(format!("upload-directory-{}.out", uploader.starts)))
            .unwrap_or_default(),
        std::fs::read_to_string(logs.join(format!("download-directory-{}.out", downloader.starts)))
            .unwrap_or_default(),
        downloader.stderr(downloader.starts)
    );
    assert!(
        extra.is_empty(),
        "files never written at the source: {extra:?}"
    );
    assert!(republished.is_empty(), "{republished:#?}");
    assert!(unknown_published.is_empty(), "{unknown_published:?}");
    assert!(
        up_status.success(),
        "upload-directory: {up_status}: {}",
        uploader.stderr(uploader.starts)
    );
    assert!(
        down_status.success(),
        "download-directory ({down_status}) rejected messages or failed files: {}",
        downloader.stderr(downloader.starts)
    );
    assert_eq!(common::rejected_kept(&out), 0);
    assert_eq!(common::failed_kept(&out), 0);
    assert!(
        uploader.kills >= plan.kills.min(2) && downloader.kills >= plan.kills.min(2),
        "only {} uploader and {} downloader kills landed: the workload is too short",
        uploader.kills,
        downloader.kills
    );
    assert!(
        up_kills_busy > 0 && down_kills_mid_file > 0,
        "no kill hit work in hand (uploads pending: {up_kills_busy}, partial files staged: \
         {down_kills_mid_file}): the workload is too small"
    );
}
