//! Fault injection on a real (sqlite) broker: the broker stopped and restarted mid-transfer, a
//! broker outage longer than the uploader's timeouts, a full disk under the downloader, and one
//! of two downloaders in a group killed with SIGKILL, and a group member leaving or killed while it
//! holds half of a file. The SIGKILL takeover runs on librdkafka's mock cluster, because tansu
//! 0.6.0 never evicts a dead member; everything else runs on tansu.
//!
//! Every wait is on observable state (bytes staged, the broker's database growing, a process
//! exiting); the only sleeps are the outages themselves.

mod common;

use common::{produce_values, ChunkSpec, TopicFixture};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    openmsi_std, sha512_file, unique_topic, wait_for, write_config, write_random_file, Broker,
    KillOnDrop, Storage,
};

/// How long the broker stays down in the "short outage" tests: several of librdkafka's
/// reconnect backoffs, far below any client timeout.
const SHORT_OUTAGE: Duration = Duration::from_secs(4);

/// Source files: (relative path, size). Written under `src` with distinct seeds.
fn make_files(src: &Path, files: &[(&str, u64)]) -> Vec<(String, String)> {
    files
        .iter()
        .enumerate()
        .map(|(i, (rel, len))| {
            let p = src.join(rel);
            write_random_file(&p, *len, 500 + i as u64);
            (rel.to_string(), sha512_file(&p))
        })
        .collect()
}

/// True when every file is at its final path under `out` with the right content.
fn all_present(out: &Path, files: &[(String, String)]) -> bool {
    files.iter().all(|(rel, hash)| {
        let p = out.join(rel);
        p.is_file() && std::fs::metadata(&p).is_ok_and(|m| m.len() > 0) && &sha512_file(&p) == hash
    })
}

/// `download-directory OUT` running until `quit`, its output in `log_dir/NAME.{out,err}`.
fn spawn_downloader(
    cfg: &Path,
    topic: &str,
    out: &Path,
    group: &str,
    log_dir: &Path,
    name: &str,
) -> KillOnDrop {
    let child = openmsi_std()
        .arg("download-directory")
        .arg(out)
        .arg("--config")
        .arg(cfg)
        .args(["--topic", topic, "--group-id", group])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(log_dir.join(format!("{name}.out"))).unwrap())
        .stderr(std::fs::File::create(log_dir.join(format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// Sends `quit` and waits (bounded) for a clean exit; returns the exit status.
fn quit(child: &mut KillOnDrop) -> std::process::ExitStatus {
    common::quit_and_wait(child, Duration::from_secs(30))
}

/// Size of the broker's sqlite database (and its journal): grows as messages are stored.
fn broker_db_bytes(broker: &Broker) -> u64 {
    std::fs::read_dir(broker.dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("tansu.db"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Lines of the staging records under `out` (one per durable chunk).
fn staged_chunks(out: &Path) -> usize {
    std::fs::read_dir(out.join(".openmsi/staging")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "chunks"))
            .map(|e| read(&e.path()).lines().count())
            .sum()
    })
}

/// The broker goes down while the downloader holds half of a file (staged and durable), stays
/// down for [`SHORT_OUTAGE`], and comes back; the rest of that file and a new upload then
/// arrive without anyone touching the downloader.
#[test]
fn download_keeps_running_through_a_broker_restart_and_finishes_every_file() {
    let TopicFixture {
        mut broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "outage-down", 1);
    let src = work.path().join("src");
    let mut files = make_files(
        &src,
        &[
            ("run1/before.bin", 3 << 20),
            ("run1/mid.bin", 1 << 20),
            ("run2/after.bin", 2 << 20),
        ],
    );
    common::upload(
        &cfg,
        &topic,
        Some(&src),
        &src.join("run1/before.bin"),
        65536,
    );
    // Half of mid.bin now, the other half after the outage.
    let mid = std::fs::read(src.join("run1/mid.bin")).unwrap();
    let chunks: Vec<Vec<u8>> = (0..16)
        .map(|i| ChunkSpec::of_file("run1/mid.bin", &mid, 65536, i).encode())
        .collect();
    produce_values(&broker, &topic, &chunks[..8]);

    let out = work.path().join("out");
    let mut child = spawn_downloader(&cfg, &topic, &out, "outage-group", work.path(), "down");
    let holding_half = wait_for(Duration::from_secs(40), || {
        all_present(&out, &files[..1]) && staged_chunks(&out) >= 8
    });
    assert!(
        holding_half,
        "the downloader did not stage the first half of mid.bin: {}",
        read(&work.path().join("down.err"))
    );
    broker.stop();
    std::thread::sleep(SHORT_OUTAGE);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the downloader exited during the outage: {}",
        read(&work.path().join("down.err"))
    );
    assert!(!out.join("run1/mid.bin").exists());
    broker.restart();

    let started = Instant::now();
    produce_values(&broker, &topic, &chunks[8..]);
    common::upload(&cfg, &topic, Some(&src), &src.join("run2/after.bin"), 65536);
    let done = wait_for(Duration::from_secs(40), || all_present(&out, &files));
    files.retain(|(rel, _)| !out.join(rel).exists());
    assert!(
        done,
        "{files:?} did not arrive within 40 s of the restart:\n{}",
        read(&work.path().join("down.err"))
    );
    eprintln!(
        "everything arrived {:.1} s after the broker came back",
        started.elapsed().as_secs_f64()
    );
    let status = quit(&mut child);
    assert!(
        status.success(),
        "{status}: {}",
        read(&work.path().join("down.err"))
    );
    assert_eq!(
        std::fs::read_dir(out.join(".openmsi/staging"))
            .unwrap()
            .count(),
        0,
        "staging files left behind"
    );
}

/// `upload-file FILE` as a child, output captured in `log_dir/upload.{out,err}`.
fn spawn_upload(
    cfg: &Path,
    topic: &str,
    file: &Path,
    extra: &[&str],
    log_dir: &Path,
) -> KillOnDrop {
    let mut cmd: Command = openmsi_std();
    cmd.arg("upload-file")
        .arg(file)
        .arg("--config")
        .arg(cfg)
        .args(["--topic", topic, "--chunk-size", "65536"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log_dir.join("upload.out")).unwrap())
        .stderr(std::fs::File::create(log_dir.join("upload.err")).unwrap());
    KillOnDrop(cmd.spawn().unwrap())
}

/// Waits until the broker's database grew by `bytes` since `base`, or the uploader exited.
fn wait_for_broker_to_store(broker: &Broker, base: u64, bytes: u64, child: &mut KillOnDrop) {
    let stored = wait_for(Duration::from_secs(40), || {
        broker_db_bytes(broker) > base + bytes || child.0.try_wait().unwrap().is_some()
    });
    assert!(stored, "the broker stored nothing within 40 s");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the upload finished before the broker stopped; use a bigger file"
    );
}

/// Uploads a 128 MiB file (about 2 s of uploading here), takes the broker down (`stop`: SIGTERM; `kill`: SIGKILL) once it has
/// stored at least 1 MiB, restarts it after [`SHORT_OUTAGE`], and returns the upload's exit
/// status and stderr. A successful upload is checked by downloading the file.
fn upload_through_outage(graceful: bool, seed: u64) -> (std::process::ExitStatus, String) {
    let TopicFixture {
        mut broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "outage-up", 1);
    let file = work.path().join("src").join("data.bin");
    write_random_file(&file, 128 << 20, seed);
    let want = sha512_file(&file);

    let base = broker_db_bytes(&broker);
    let mut child = spawn_upload(&cfg, &topic, &file, &[], work.path());
    wait_for_broker_to_store(&broker, base, 256 << 10, &mut child);
    if graceful {
        broker.stop();
    } else {
        broker.kill();
    }
    std::thread::sleep(SHORT_OUTAGE);
    broker.restart();

    let exited = wait_for(Duration::from_secs(90), || {
        child.0.try_wait().unwrap().is_some()
    });
    assert!(
        exited,
        "the upload did not finish within 90 s of the restart"
    );
    let status = child.0.wait().unwrap();
    let stderr = read(&work.path().join("upload.err"));
    if status.success() {
        assert!(read(&work.path().join("upload.out")).contains("uploaded"));
        // Every chunk made it: the file is whole.
        let out = work.path().join("out");
        common::download_until_idle(&cfg, &topic, &out, "outage-up-check")
            .success()
            .stdout(predicates::str::contains("1 file completed"));
        assert_eq!(sha512_file(&out.join("data.bin")), want);
    }
    (status, stderr)
}

#[test]
fn upload_survives_a_broker_crash_and_restart() {
    let (status, stderr) = upload_through_outage(false, 77);
    assert!(
        status.success(),
        "upload failed after a {} s outage: {stderr}",
        SHORT_OUTAGE.as_secs()
    );
}

/// A graceful tansu shutdown answers the produce requests in flight with an unknown server
/// error, which librdkafka treats as final: the upload may then fail instead of retrying. It
/// must never claim success for a file that did not arrive, and a failure must say which
/// broker did not acknowledge how many chunks.
#[test]
fn upload_during_a_graceful_broker_restart_succeeds_or_fails_clearly() {
    let (status, stderr) = upload_through_outage(true, 79);
    eprintln!("upload through a graceful broker restart: {status}\n{stderr}");
    if !status.success() {
        assert!(
            stderr.contains("were not acknowledged by 127.0.0.1:"),
            "the error does not say what was lost where: {stderr}"
        );
    }
}

#[test]
fn upload_fails_clearly_when_the_broker_stays_down_past_its_timeouts() {
    let TopicFixture {
        mut broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "outage-long", 1);
    // librdkafka's per-message timeout bounds the wait for queue room; the default (300 s)
    // is right for users and too long for a test.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace("[producer]\n", "[producer]\nmessage.timeout.ms = 8000\n");
    std::fs::write(&cfg, text).unwrap();
    let file = work.path().join("src").join("data.bin");
    write_random_file(&file, 256 << 20, 78);

    let base = broker_db_bytes(&broker);
    let started = Instant::now();
    let mut child = spawn_upload(
        &cfg,
        &topic,
        &file,
        &["--delivery-timeout", "5"],
        work.path(),
    );
    wait_for_broker_to_store(&broker, base, 256 << 10, &mut child);
    broker.kill();
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the upload finished before the broker died; use a bigger file"
    );

    let exited = wait_for(Duration::from_secs(45), || {
        child.0.try_wait().unwrap().is_some()
    });
    assert!(
        exited,
        "the upload was still waiting 45 s after the broker went away for good"
    );
    let status = child.0.wait().unwrap();
    let stderr = read(&work.path().join("upload.err"));
    eprintln!(
        "upload gave up after {:.1} s: {status}\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(!status.success(), "the upload claimed success: {stderr}");
    assert!(
        stderr.contains(&broker.bootstrap()),
        "the error does not name the broker: {stderr}"
    );
    assert!(
        stderr.contains("not acknowledged") || stderr.contains("unacknowledged"),
        "the error does not say chunks were not delivered: {stderr}"
    );
    assert!(!read(&work.path().join("upload.out")).contains("uploaded"));
}

/// `upload-directory` is left running for months, so an outage longer than every timeout must
/// not need an operator: the file that was being sent is reported as failed, retried once the
/// broker is back (after the retry interval, 60 s), and arrives whole; the uploader keeps
/// running and exits 0 on `quit`.
#[test]
fn upload_directory_retries_by_itself_after_an_outage_longer_than_its_timeouts() {
    let TopicFixture {
        mut broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "outage-updir", 1);
    // Idempotence off: after an idempotent producer's messages timed out, librdkafka bumps its
    // epoch, and the next produce makes tansu 0.6.0's sqlite engine panic ("more or less than
    // one row", lite.rs:503) and stop serving; nothing a client can do about that.
    let mut text = read(&cfg);
    text = text.replace(
        "[producer]\n",
        "[producer]\nmessage.timeout.ms = 8000\nenable.idempotence = false\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let watched = work.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    let log = work.path().join("updir.err");
    let mut uploader = KillOnDrop(
        openmsi_std()
            .arg("upload-directory")
            .arg(&watched)
            .arg("--config")
            .arg(&cfg)
            .args([
                "--topic",
                &topic,
                "--settle-seconds",
                "1",
                "--delivery-timeout",
                "5",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for(Duration::from_secs(30), || read(&log).contains("watching")),
        "{}",
        read(&log)
    );
    let staging = work.path().join("staging.bin");
    write_random_file(&staging, 96 << 20, 81);
    let want = sha512_file(&staging);
    let base = broker_db_bytes(&broker);
    std::fs::rename(&staging, watched.join("data.bin")).unwrap();
    wait_for_broker_to_store(&broker, base, 256 << 10, &mut uploader);
    broker.kill();
    // Longer than the delivery timeout and librdkafka's message timeout together.
    let reported = wait_for(Duration::from_secs(30), || {
        read(&log).contains("upload failed")
    });
    assert!(reported, "the failure was not reported:\n{}", read(&log));
    std::thread::sleep(Duration::from_secs(5));
    broker.restart();

    let out = work.path().join("out");
    let mut downloader = spawn_downloader(&cfg, &topic, &out, "outage-updir", work.path(), "down");
    let whole = wait_for(Duration::from_secs(150), || {
        std::fs::metadata(out.join("data.bin")).is_ok_and(|m| m.len() == 96 << 20)
            && sha512_file(&out.join("data.bin")) == want
    });
    assert!(
        whole,
        "data.bin never arrived after the broker came back\n--- uploader ---\n{}\n--- downloader ---\n{}",
        read(&log),
        read(&work.path().join("down.err"))
    );
    assert!(quit(&mut downloader).success());
    assert!(quit(&mut uploader).success(), "{}", read(&log));
}

/// A tmpfs mounted for the test, unmounted on drop (even when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "8m") at `dir`; None when mounting is not permitted.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot resize the tmpfs at {}",
            self.0.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `download-directory --exit-when-idle 2`, failing the test with the downloader's log (and
/// its threads' stacks) if it has not exited within 40 s.
fn download_bounded(
    cfg: &Path,
    topic: &str,
    out: &Path,
    group: &str,
    log_dir: &Path,
) -> (std::process::ExitStatus, String) {
    let mut child = KillOnDrop(
        openmsi_std()
            .arg("download-directory")
            .arg(out)
            .arg("--config")
            .arg(cfg)
            .args([
                "--topic",
                topic,
                "--group-id",
                group,
                "--exit-when-idle",
                "2",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log_dir.join("bounded.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let exited = wait_for(Duration::from_secs(40), || {
        child.0.try_wait().unwrap().is_some()
    });
    let stderr = read(&log_dir.join("bounded.err"));
    if !exited {
        let stacks = Command::new("gdb")
            .args([
                "-p",
                &child.0.id().to_string(),
                "-batch",
                "-ex",
                "thread apply all bt 8",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("the downloader did not exit within 40 s:\n{stderr}\n{stacks}");
    }
    (child.0.wait().unwrap(), stderr)
}

#[test]
fn disk_full_stops_with_a_clear_error_and_resumes_once_space_is_freed() {
    // Bound, not `_`: the broker must run until the end of the test.
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "diskfull", 1);
    let src = work.path().join("src");
    let files = make_files(
        &src,
        &[
            ("a.bin", 3 << 20),
            ("b.bin", 3 << 20),
            ("sub/c.bin", 3 << 20),
            ("sub/d.bin", 3 << 20),
        ],
    );
    for (rel, _) in &files {
        common::upload(&cfg, &topic, Some(&src), &src.join(rel), 65536);
    }
    let out = work.path().join("small-disk");
    let Some(disk) = Tmpfs::mount(&out, "8m") else {
        panic!("mounting a tmpfs is not permitted here (this test needs root)");
    };

    let (status, stderr) = download_bounded(&cfg, &topic, &out, "diskfull-group", work.path());
    assert!(!status.success(), "12 MiB fit on an 8 MiB disk? {stderr}");
    assert!(
        stderr.contains(&out.display().to_string()),
        "the error does not name the path: {stderr}"
    );
    assert!(
        stderr.contains("free some space"),
        "the error does not say what to do: {stderr}"
    );
    let present_before = files
        .iter()
        .filter(|(rel, _)| out.join(rel).exists())
        .count();
    assert!(present_before < files.len());
    // Whatever is under a final name is whole.
    for (rel, hash) in &files {
        if out.join(rel).exists() {
            assert_eq!(&sha512_file(&out.join(rel)), hash, "{rel}");
        }
    }

    disk.resize("64m");
    let (status, stderr) = download_bounded(&cfg, &topic, &out, "diskfull-group", work.path());
    assert!(status.success(), "{status} after space was freed: {stderr}");
    for (rel, hash) in &files {
        assert_eq!(&sha512_file(&out.join(rel)), hash, "{rel}");
    }
    drop(disk);
}

/// Which of `files` are whole under `out`.
fn whole_in(out: &Path, files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(rel, hash)| out.join(rel).is_file() && &sha512_file(&out.join(rel)) == hash)
        .map(|(rel, _)| rel.clone())
        .collect()
}

/// Two downloaders of one group in separate processes with different output folders; the
/// first is killed with SIGKILL mid-transfer. Every file must end up whole in one of the two
/// folders.
///
/// With the default dynamic membership and the cooperative-sticky assignor, tansu 0.6.0 hands
/// the dead member's partitions to the survivor once its session expires (10 s), and the
/// survivor reads each unfinished file from its first chunk (the committed offset never passed
/// it). (With static membership, or the eager assignors, tansu 0.6.0 never reassigns them.)
#[test]
fn second_downloader_in_the_group_takes_over_when_the_first_is_killed() {
    const PARTITIONS: i32 = 4;
    let broker = Broker::start(Storage::Sqlite);
    let topic = unique_topic("takeover");
    broker.create_topic(&topic, PARTITIONS);
    let work = tempfile::tempdir().unwrap();
    let cfg = write_config(work.path(), &broker);
    let src = work.path().join("src");
    // Two files per partition (all chunks of a file go to the partition of its path).
    let mut per_partition = [0; PARTITIONS as usize];
    let specs: Vec<(String, u64)> = (0..)
        .map(|i| format!("run/file{i}.bin"))
        .filter(|rel| {
            let p = openmsi::kafka::partition_for_path(rel, PARTITIONS) as usize;
            per_partition[p] += 1;
            per_partition[p] <= 2
        })
        .take(2 * PARTITIONS as usize)
        .map(|rel| (rel, 3 << 20))
        .collect();
    let spec_refs: Vec<(&str, u64)> = specs.iter().map(|(r, l)| (r.as_str(), *l)).collect();
    let files = make_files(&src, &spec_refs);
    let used: std::collections::BTreeSet<i32> = files
        .iter()
        .map(|(rel, _)| openmsi::kafka::partition_for_path(rel, PARTITIONS))
        .collect();
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "files do not cover every partition"
    );
    for (rel, _) in &files {
        common::upload(&cfg, &topic, Some(&src), &src.join(rel), 65536);
    }

    let (out_a, out_b) = (work.path().join("out-a"), work.path().join("out-b"));
    let mut a = spawn_downloader(&cfg, &topic, &out_a, "takeover-group", work.path(), "a");
    let mut b = spawn_downloader(&cfg, &topic, &out_b, "takeover-group", work.path(), "b");
    // Both members have partitions once both write something.
    let both = wait_for(Duration::from_secs(40), || {
        common::progress_bytes(&out_a) > 0 && common::progress_bytes(&out_b) > 0
    });
    assert!(
        both,
        "the two downloaders did not both receive partitions: a={} b={}\n{}\n{}",
        common::progress_bytes(&out_a),
        common::progress_bytes(&out_b),
        read(&work.path().join("a.err")),
        read(&work.path().join("b.err"))
    );
    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    let killed_at = Instant::now();
    eprintln!(
        "A killed at {:?} (seconds since the epoch)",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    );
    let a_had = whole_in(&out_a, &files);
    assert!(
        a_had.len() < files.len(),
        "the first downloader finished before it was killed"
    );

    let done = wait_for(Duration::from_secs(40), || {
        let b_has = whole_in(&out_b, &files);
        files
            .iter()
            .all(|(rel, _)| a_had.contains(rel) || b_has.contains(rel))
    });
    let b_has = whole_in(&out_b, &files);
    let missing: Vec<&String> = files
        .iter()
        .map(|(rel, _)| rel)
        .filter(|rel| !a_had.contains(rel) && !b_has.contains(rel))
        .collect();
    let staged_in_a: Vec<String> = std::fs::read_dir(out_a.join(".openmsi/staging"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        done,
        "{} s after killing A, missing in both folders: {missing:?}; A had {a_had:?}, B has \
         {b_has:?}; A's staging: {staged_in_a:?}\n--- B ---\n{}",
        killed_at.elapsed().as_secs(),
        read(&work.path().join("b.err"))
    );
    eprintln!(
        "B completed the group's files {:.1} s after A was killed (A had {} whole, B {})",
        killed_at.elapsed().as_secs_f64(),
        a_had.len(),
        b_has.len()
    );
    let status = quit(&mut b);
    assert!(status.success(), "{}", read(&work.path().join("b.err")));
}

/// What another member of the group would start from: the committed offset of `partition`.
fn committed_offset(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?;
    match got.find_partition(topic, partition)?.offset() {
        rdkafka::Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// A member that dies (or is removed) hands its partitions to another member with its own
/// output folder, which starts at the committed offset. So the committed offset must never
/// pass the first chunk of a file that is not yet whole in the folder that has its earlier
/// chunks; otherwise that file can never complete anywhere but in the dead member's folder.
///
/// (An earlier version committed the offset of every chunk once it was durable in staging, which
/// is right for restarting the same folder but broke this hand-over; see src/download/offsets.rs.)
#[test]
fn committed_offsets_never_pass_the_start_of_an_unfinished_file() {
    use openmsi::chunk::hash::sha512;
    use openmsi::chunk::{encode_value, ChunkHeader, WireFields};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let TopicFixture {
        broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "commit-start", 1);
    // A three-chunk file whose last chunk is sent only once the first two are durable.
    let content: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 % 253) as u8).collect();
    let file_hash = sha512(&content);
    let chunk = |i: usize| {
        let data = &content[i * 4096..(i + 1) * 4096];
        let chunk_hash = sha512(data);
        let header = ChunkHeader {
            filename: "half.bin",
            file_hash: &file_hash,
            chunk_hash: &chunk_hash,
            offset: i as u64 * 4096,
            chunk_i: i as u64 + 1,
            n_total_chunks: 3,
            subdir: "",
            filename_append: "",
            file_mtime: 0.0,
        };
        let mut out = Vec::new();
        encode_value(&header, data, WireFields::Ten, &mut out);
        out
    };
    let producer: BaseProducer = common::producer_config(&broker).create().unwrap();
    let send = |i: usize| {
        producer
            .send(BaseRecord::to(&topic).key("half").payload(&chunk(i)))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    send(0);
    send(1);

    let group = "commit-start-group";
    let observer: rdkafka::consumer::BaseConsumer =
        common::consumer_config(&broker, group).create().unwrap();
    let out = work.path().join("out");
    let mut child = spawn_downloader(&cfg, &topic, &out, group, work.path(), "a");
    // Durable: the staging record lists both chunks (written at a flush, before the commit).
    let staged = wait_for(Duration::from_secs(30), || {
        std::fs::read_dir(out.join(".openmsi/staging")).is_ok_and(|d| {
            d.filter_map(Result::ok).any(|e| {
                e.path().extension().is_some_and(|x| x == "chunks")
                    && std::fs::read_to_string(e.path()).is_ok_and(|t| t.lines().count() >= 2)
            })
        })
    });
    assert!(staged, "the first two chunks were not staged within 30 s");
    // Give a commit that should not happen every chance to show up.
    let mut early = None;
    let committed_early = wait_for(Duration::from_secs(3), || {
        early = committed_offset(&observer, &topic, 0);
        early.is_some_and(|o| o > 0)
    });
    send(2);
    let whole = wait_for(Duration::from_secs(30), || {
        std::fs::read(out.join("half.bin")).is_ok_and(|b| b == content)
    });
    let status = quit(&mut child);
    assert!(
        whole,
        "half.bin did not complete once its last chunk arrived"
    );
    assert!(status.success());
    assert_eq!(
        committed_offset(&observer, &topic, 0),
        Some(3),
        "the observer does not see the group's final offset"
    );
    assert!(
        !committed_early,
        "the group committed offset {:?} while half.bin had 2 of 3 chunks: a member with \
         another output folder taking over the partition would start after chunks only this \
         folder holds, and never complete half.bin",
        early
    );
}

/// The hand-over end to end: member A holds the first two chunks of a file when it leaves the
/// group (cleanly: tansu 0.6.0 never reassigns a killed member's partitions); member B, with its
/// own output folder, then gets the partition and must still rebuild the whole file once the
/// last chunk arrives, so it has to start at that file's first chunk.
#[test]
fn another_member_completes_a_file_the_leaving_member_had_half_of() {
    let TopicFixture {
        broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "handover", 1);
    // Dynamic membership, so that A's `quit` is a LeaveGroup that hands the partition over.
    let mut text = read(&cfg);
    text.push_str("group.instance.id =\n");
    std::fs::write(&cfg, text).unwrap();

    let content: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 13 % 251) as u8).collect();
    let chunk = |i| ChunkSpec::of_file("sub/handover.bin", &content, 4096, i).encode();
    let small = b"complete before the hand-over".to_vec();
    produce_values(
        &broker,
        &topic,
        &[
            ChunkSpec::of_file("before.txt", &small, 4096, 0).encode(),
            chunk(0),
            chunk(1),
        ],
    );
    let group = "handover-group";
    let (out_a, out_b) = (work.path().join("out-a"), work.path().join("out-b"));
    let mut a = spawn_downloader(&cfg, &topic, &out_a, group, work.path(), "a");
    let staged = wait_for(Duration::from_secs(30), || {
        staged_chunks(&out_a) >= 3 && out_a.join("before.txt").is_file()
    });
    assert!(
        staged,
        "A did not stage the first two chunks\n{}",
        read(&work.path().join("a.err"))
    );
    let a_status = quit(&mut a);
    assert!(a_status.success(), "{}", read(&work.path().join("a.err")));
    // B joins once A has left: a join while A leaves can leave tansu 0.6.0's group stuck in a
    // rebalance that never completes (the live SIGKILL takeover is tested on the mock cluster).
    let mut b = spawn_downloader(&cfg, &topic, &out_b, group, work.path(), "b");
    produce_values(&broker, &topic, &[chunk(2)]);

    let target = out_b.join("sub/handover.bin");
    let whole = wait_for(Duration::from_secs(60), || {
        std::fs::read(&target).is_ok_and(|bytes| bytes == content)
    });
    let b_status = quit(&mut b);
    assert!(
        whole,
        "B never rebuilt sub/handover.bin (A staged its first chunks, then left)\n--- B ---\n{}",
        read(&work.path().join("b.err"))
    );
    assert!(b_status.success(), "{}", read(&work.path().join("b.err")));
    assert!(
        !out_a.join("sub/handover.bin").exists(),
        "A could not have had the last chunk"
    );
}

/// One of two members killed with SIGKILL while it holds half of a file: the survivor takes its
/// partition over after the session timeout and rebuilds that file from its first chunk.
///
/// This runs on librdkafka's mock cluster (in this process, listening on 127.0.0.1; the real
/// binaries talk to it) because tansu 0.6.0 never evicts a dead member (see
/// `second_downloader_in_the_group_takes_over_when_the_first_is_killed`); the clean hand-over on
/// the real broker is `another_member_completes_a_file_the_leaving_member_had_half_of`.
#[test]
fn survivor_completes_the_file_a_killed_member_had_half_of_mock_cluster() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let topic = "takeover";
    cluster.create_topic(topic, 2, 1).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("mock.config");
    std::fs::write(
        &cfg,
        format!(
            "[broker]\nbootstrap.servers = {}\n\n[consumer]\ngroup.instance.id =\n\
             session.timeout.ms = 6000\nheartbeat.interval.ms = 500\nfetch.wait.max.ms = 10\n",
            cluster.bootstrap_servers()
        ),
    )
    .unwrap();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    // One three-chunk file per partition; the last chunks are sent after the kill.
    let contents: Vec<Vec<u8>> = (0..2u32)
        .map(|p| {
            (0..3 * 4096u32)
                .map(|i| (i * (p + 3) % 251) as u8)
                .collect()
        })
        .collect();
    let names = ["p0/first.bin", "p1/second.bin"];
    let send = |partition: usize, i: usize| {
        let value = ChunkSpec::of_file(names[partition], &contents[partition], 4096, i).encode();
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(partition as i32)
                    .key("k")
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    for partition in 0..2 {
        send(partition, 0);
        send(partition, 1);
    }
    let group = "mock-takeover";
    let (out_a, out_b) = (work.path().join("out-a"), work.path().join("out-b"));
    let mut a = spawn_downloader(&cfg, topic, &out_a, group, work.path(), "a");
    let a_staged = wait_for(Duration::from_secs(30), || staged_chunks(&out_a) >= 4);
    assert!(
        a_staged,
        "A did not stage both half files\n{}",
        read(&work.path().join("a.err"))
    );
    // B joins; the rebalance gives it one partition, which it reads from that file's start.
    let mut b = spawn_downloader(&cfg, topic, &out_b, group, work.path(), "b");
    let b_staged = wait_for(Duration::from_secs(40), || staged_chunks(&out_b) >= 2);
    assert!(
        b_staged,
        "B staged nothing: it got no partition, or started after the half file's first chunks\n{}",
        read(&work.path().join("b.err"))
    );
    a.0.kill().unwrap(); // SIGKILL: no LeaveGroup, the session has to expire
    a.0.wait().unwrap();
    for partition in 0..2 {
        send(partition, 2);
    }
    let whole = wait_for(Duration::from_secs(60), || {
        names
            .iter()
            .zip(&contents)
            .all(|(name, content)| std::fs::read(out_b.join(name)).is_ok_and(|b| &b == content))
    });
    let status = quit(&mut b);
    assert!(
        whole,
        "B did not rebuild both files after A was killed\n--- B ---\n{}",
        read(&work.path().join("b.err"))
    );
    assert!(status.success(), "{}", read(&work.path().join("b.err")));
}

/// Offsets wait at the first chunk of an unfinished file, so a restart reads everything after
/// it again, including older versions of files that were replaced since. Those must not
/// replace the newer version, even for a moment, nor be recorded as completed again.
#[test]
fn a_restart_reading_an_old_version_again_keeps_the_newer_one() {
    let TopicFixture {
        broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "reread-version", 1);
    let unfinished: Vec<u8> = vec![7; 2 * 4096];
    let (v1, v2) = (vec![1u8; 5000], vec![2u8; 3000]);
    produce_values(
        &broker,
        &topic,
        &[
            ChunkSpec::of_file("unfinished.bin", &unfinished, 4096, 0).encode(),
            ChunkSpec::of_file("x.bin", &v1, 4096, 0).encode(),
            ChunkSpec::of_file("x.bin", &v1, 4096, 1).encode(),
            ChunkSpec::of_file("x.bin", &v2, 4096, 0).encode(),
        ],
    );
    let out = work.path().join("out");
    let completed_lines = || {
        read(&out.join(".openmsi/completed.jsonl"))
            .lines()
            .filter(|l| l.contains("\"x.bin\""))
            .count()
    };
    for run in 1..=2 {
        common::download_until_idle(&cfg, &topic, &out, "reread-version-group")
            .success()
            .stdout(predicates::str::contains(if run == 1 {
                "2 files completed, 1 in progress"
            } else {
                "0 files completed, 1 in progress"
            }));
        assert_eq!(std::fs::read(out.join("x.bin")).unwrap(), v2, "run {run}");
        // Run 1 records v1 then v2. Run 2 starts by compacting the log to the latest entry
        // per path (v2's); recording v1 (or v2) again would add a line.
        let want = if run == 1 { 2 } else { 1 };
        assert_eq!(completed_lines(), want, "run {run}: x.bin recorded again");
    }
    produce_values(
        &broker,
        &topic,
        &[ChunkSpec::of_file("unfinished.bin", &unfinished, 4096, 1).encode()],
    );
    common::download_until_idle(&cfg, &topic, &out, "reread-version-group")
        .success()
        .stdout(predicates::str::contains("1 file completed, 0 in progress"));
    assert_eq!(
        std::fs::read(out.join("unfinished.bin")).unwrap(),
        unfinished
    );
    assert_eq!(std::fs::read(out.join("x.bin")).unwrap(), v2);
}
