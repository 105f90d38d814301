//! `openmsi upload-directory` on a real broker: files dropped while it runs arrive whole and
//! once (checked by rebuilding them with `openmsi download-directory` and by counting the
//! messages on the topic), a restart never re-sends completed files, and kill -9 loses nothing.

mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    consumer_config, download_until_idle, openmsi_std, openmsi_std_through, sha512_file,
    unique_topic, wait_exit, wait_for, write_config, write_random_file, Broker, KillOnDrop,
    Storage,
};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A test's folders and broker.
struct Setup {
    broker: Broker,
    tmp: tempfile::TempDir,
    cfg: PathBuf,
    topic: String,
}

impl Setup {
    fn new(partitions: i32) -> Setup {
        let broker = Broker::start(Storage::Sqlite);
        let tmp = tempfile::tempdir().unwrap();
        let topic = unique_topic("updir");
        broker.create_topic(&topic, partitions);
        let cfg = write_config(tmp.path(), &broker);
        std::fs::create_dir_all(tmp.path().join("watched")).unwrap();
        Setup {
            broker,
            tmp,
            cfg,
            topic,
        }
    }

    fn watched(&self) -> PathBuf {
        self.tmp.path().join("watched")
    }

    /// Starts the uploader; waits until its first scan is done (the `watching` log line).
    fn start(&self, extra: &[&str]) -> Uploader {
        self.start_command(openmsi_std(), extra)
    }

    /// As [`Setup::start`], with `openmsi` run by `cmd`.
    fn start_command(&self, mut cmd: std::process::Command, extra: &[&str]) -> Uploader {
        let log = self.tmp.path().join(format!(
            "uploader-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = cmd
            .arg("upload-directory")
            .arg(self.watched())
            .arg("--config")
            .arg(&self.cfg)
            .args(["--topic", &self.topic])
            .args(if extra.contains(&"--settle-seconds") {
                &[][..]
            } else {
                &["--settle-seconds", "1"][..]
            })
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line.unwrap_or_default());
            }
        });
        let up = Uploader {
            child,
            stdout: rx,
            log,
        };
        assert!(
            wait_for(Duration::from_secs(30), || up
                .log_text()
                .contains("watching")),
            "the uploader did not start: {}",
            up.log_text()
        );
        up
    }

    /// Rebuilds the topic into a fresh folder with download-directory and returns it.
    fn download(&self, name: &str) -> PathBuf {
        let out = self.tmp.path().join(name);
        download_until_idle(&self.cfg, &self.topic, &out, &unique_topic("g")).success();
        out
    }

    /// Messages on the topic (sum of high - low watermarks; tansu's sqlite engine keeps exact
    /// offsets).
    fn message_count(&self) -> i64 {
        let consumer: BaseConsumer = consumer_config(&self.broker, "count").create().unwrap();
        let md = consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .unwrap();
        let partitions = md.topics()[0].partitions().len() as i32;
        (0..partitions)
            .map(|p| {
                let (lo, hi) = consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .unwrap();
                hi - lo
            })
            .sum()
    }
}

/// A running `openmsi upload-directory`.
struct Uploader {
    child: KillOnDrop,
    stdout: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Uploader {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn command(&mut self, line: &str) {
        let stdin = self.child.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// `quit` on stdin; asserts a clean exit with code 0 and returns stdout's lines.
    fn quit(mut self) -> Vec<String> {
        self.command("quit");
        let status = wait_exit(&mut self.child, Duration::from_secs(60));
        assert!(status.success(), "{status:?}\n{}", self.log_text());
        self.stdout.try_iter().collect()
    }
}

/// Latest `sent` hash per path in the uploader's registry.
fn registry_sent(watched: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(watched.join(".openmsi/uploaded.jsonl")).unwrap_or_default();
    let mut out = HashMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["state"] == "sent" {
            out.insert(
                v["path"].as_str().unwrap().to_string(),
                v["sha512"].as_str().unwrap().to_string(),
            );
        }
    }
    out
}

/// Waits until the registry records each of `paths` as sent with its current content's hash.
fn wait_sent(watched: &Path, paths: &[&str], timeout: Duration) {
    let ok = wait_for(timeout, || {
        let sent = registry_sent(watched);
        paths.iter().all(|p| {
            sent.get(*p)
                .is_some_and(|h| *h == sha512_file(&watched.join(p)))
        })
    });
    assert!(
        ok,
        "not all of {paths:?} were recorded as sent: {:?}",
        registry_sent(watched).keys().collect::<Vec<_>>()
    );
}

/// Every regular, non-hidden file under `dir`, relative, with its SHA-512.
fn tree(dir: &Path) -> HashMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut HashMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, sha512_file(&path));
            }
        }
    }
    let mut out = HashMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn files_dropped_while_running_arrive_nested_hidden_skipped_catalog_kept() {
    let s = Setup::new(3);
    let w = s.watched();
    write_random_file(&w.join("before.bin"), 1000, 1);
    let up = s.start(&[]);
    write_random_file(&w.join("top.bin"), 200_000, 2);
    write_random_file(&w.join("a/b c/deep.bin"), 1_500_000, 3);
    write_random_file(&w.join("catalog.csv"), 100, 4);
    write_random_file(&w.join("empty"), 0, 5);
    write_random_file(&w.join(".hidden"), 100, 6);
    write_random_file(&w.join(".hdir/x.bin"), 100, 7);
    write_random_file(&w.join("a/.tmp/y.bin"), 100, 8);
    let expected = ["top.bin", "a/b c/deep.bin", "catalog.csv", "empty"];
    wait_sent(&w, &expected, Duration::from_secs(60));
    let lines = up.quit();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upload-directory stopped: 4 files uploaded")),
        "{lines:?}"
    );
    let out = s.download("out");
    let got = tree(&out);
    let want: HashMap<String, String> = expected
        .iter()
        .map(|p| (p.to_string(), sha512_file(&w.join(p))))
        .collect();
    // `before.bin` was there at the first start: left alone without --upload-existing.
    assert_eq!(got, want);
}

#[test]
fn slowly_written_file_arrives_whole_and_once() {
    let s = Setup::new(1);
    let w = s.watched();
    let up = s.start(&["--settle-seconds", "3", "--chunk-size", "65536"]);
    // Six writes one second apart: each well within the 3 s settle time (the margin is for a
    // loaded machine, where a 1 s sleep can last longer).
    let path = w.join("slow/acquisition.raw");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = File::create(&path).unwrap();
    let part = tempfile::NamedTempFile::new().unwrap();
    write_random_file(part.path(), 100_000, 9);
    let bytes = std::fs::read(part.path()).unwrap();
    for _ in 0..6 {
        file.write_all(&bytes).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            registry_sent(&w).is_empty(),
            "uploaded while still being written"
        );
    }
    drop(file);
    wait_sent(&w, &["slow/acquisition.raw"], Duration::from_secs(30));
    up.quit();
    // 600,000 bytes in 64 KiB chunks: 10 messages, sent exactly once.
    assert_eq!(s.message_count(), 10);
    let out = s.download("out");
    assert_eq!(
        sha512_file(&out.join("slow/acquisition.raw")),
        sha512_file(&path)
    );
}

/// Linux: the close of a file is an event (IN_CLOSE_WRITE). A file written and closed goes at
/// once, not after the settle time (60 s here); one that another process (here: another handle)
/// still holds open for writing waits until that one closes it too.
#[test]
fn a_closed_file_goes_at_once_unless_another_writer_still_holds_it() {
    let s = Setup::new(1);
    let w = s.watched();
    let up = s.start(&["--settle-seconds", "60"]);
    let started = Instant::now();
    std::fs::write(w.join("spectrum.csv"), b"1,2,3\n4,5,6\n").unwrap();
    wait_sent(&w, &["spectrum.csv"], Duration::from_secs(20));
    assert!(started.elapsed() < Duration::from_secs(20));

    let shared = w.join("shared.log");
    let keeper = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&shared)
        .unwrap();
    {
        let mut writer = OpenOptions::new().append(true).open(&shared).unwrap();
        writer.write_all(b"first line\n").unwrap();
    } // closed: an IN_CLOSE_WRITE event, but `keeper` still has it open for writing
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !registry_sent(&w).contains_key("shared.log"),
        "sent while another handle held it open for writing"
    );
    drop(keeper);
    wait_sent(&w, &["shared.log"], Duration::from_secs(20));
    up.quit();
    let out = s.download("out");
    assert_eq!(
        std::fs::read(out.join("shared.log")).unwrap(),
        b"first line\n"
    );
    assert_eq!(
        std::fs::read(out.join("spectrum.csv")).unwrap(),
        b"1,2,3\n4,5,6\n"
    );
}

#[test]
fn modified_file_is_sent_again_and_replaces_the_old_copy() {
    let s = Setup::new(1);
    let w = s.watched();
    let up = s.start(&[]);
    let path = w.join("run/result.dat");
    write_random_file(&path, 300_000, 10);
    wait_sent(&w, &["run/result.dat"], Duration::from_secs(30));
    let first = sha512_file(&path);
    write_random_file(&path, 200_000, 11);
    wait_sent(&w, &["run/result.dat"], Duration::from_secs(30));
    assert_ne!(first, sha512_file(&path));
    up.quit();
    let out = s.download("out");
    assert_eq!(sha512_file(&out.join("run/result.dat")), sha512_file(&path));
}

#[test]
fn burst_of_2000_small_files() {
    let s = Setup::new(2);
    let w = s.watched();
    let up = s.start(&["--n-threads", "8"]);
    let started = Instant::now();
    let mut names = Vec::new();
    for i in 0..2000u64 {
        let rel = format!("burst/d{}/f{i:04}.bin", i % 10);
        write_random_file(&w.join(&rel), 1024 + i, 100 + i);
        names.push(rel);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_sent(&w, &refs, Duration::from_secs(100));
    eprintln!(
        "2000 files sent in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    up.quit();
    assert_eq!(s.message_count(), 2000);
    let out = s.download("out");
    assert_eq!(tree(&out), tree(&w));
}

#[test]
fn regex_filter_and_upload_existing() {
    let s = Setup::new(1);
    let w = s.watched();
    write_random_file(&w.join("old/a.tif"), 1000, 20);
    write_random_file(&w.join("old/a.txt"), 1000, 21);
    let up = s.start(&["--upload-existing", "--upload_regex", r"\.tif$"]);
    write_random_file(&w.join("new/b.tif"), 1000, 22);
    write_random_file(&w.join("new/b.log"), 1000, 23);
    wait_sent(&w, &["old/a.tif", "new/b.tif"], Duration::from_secs(30));
    // Give the filtered files the same chance to be (wrongly) sent.
    std::thread::sleep(Duration::from_secs(2));
    up.quit();
    assert_eq!(
        registry_sent(&w).keys().count(),
        2,
        "{:?}",
        registry_sent(&w)
    );
    assert_eq!(s.message_count(), 2);
}

#[test]
fn check_and_quit_on_stdin() {
    let s = Setup::new(1);
    let w = s.watched();
    let mut up = s.start(&[]);
    write_random_file(&w.join("x.bin"), 5000, 30);
    wait_sent(&w, &["x.bin"], Duration::from_secs(30));
    // The registry line is written a moment before the counters move: ask until they do.
    let mut line = String::new();
    for _ in 0..50 {
        up.command("check");
        line = up
            .stdout
            .recv_timeout(Duration::from_secs(10))
            .expect("no answer to check");
        if line.contains("1 done") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        line.contains("0 waiting")
            && line.contains("0 in progress")
            && line.contains("1 done")
            && line.contains("0 failed")
            && line.contains("bytes/s"),
        "{line}"
    );
    let lines = up.quit();
    assert!(
        lines.iter().any(|l| l.contains("1 file uploaded")),
        "{lines:?}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_stops_cleanly() {
    let s = Setup::new(1);
    let mut up = s.start(&[]);
    let pid = up.child.0.id() as libc::pid_t;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut up.child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", up.log_text());
}

#[test]
fn kill_9_mid_upload_then_restart_sends_everything_and_clean_restart_resends_nothing() {
    let s = Setup::new(2);
    let w = s.watched();
    // A large file (many small chunks, so the kill lands mid-file) and a burst.
    write_random_file(&w.join("big/scan.raw"), 24 << 20, 40);
    for i in 0..300u64 {
        write_random_file(&w.join(format!("burst/f{i:03}.bin")), 2000 + i, 41 + i);
    }
    let args = [
        "--upload-existing",
        "--chunk-size",
        "65536",
        "--n-threads",
        "3",
    ];
    let mut up = s.start(&args);
    // Kill once some, but not all, files are acknowledged.
    assert!(wait_for(Duration::from_secs(60), || registry_sent(&w)
        .len()
        >= 20));
    up.child.0.kill().unwrap();
    up.child.0.wait().unwrap();
    let after_kill = registry_sent(&w).len();
    assert!(after_kill < 301, "everything was done before the kill");

    let up = s.start(&args);
    let mut all: Vec<String> = tree(&w).into_keys().collect();
    all.sort();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    wait_sent(&w, &refs, Duration::from_secs(120));
    up.quit();
    let out = s.download("out");
    assert_eq!(tree(&out), tree(&w));

    // A clean restart re-sends nothing: the message count stays put.
    let before = s.message_count();
    let up = s.start(&args);
    std::thread::sleep(Duration::from_secs(4));
    let lines = up.quit();
    assert!(
        lines.iter().any(|l| l.contains(" 0 files uploaded")),
        "{lines:?}"
    );
    assert_eq!(s.message_count(), before);
}

#[test]
fn missing_directory_is_a_clear_error() {
    let s = Setup::new(1);
    let out = openmsi_std()
        .arg("upload-directory")
        .arg(s.tmp.path().join("nope"))
        .arg("--config")
        .arg(&s.cfg)
        .args(["--topic", &s.topic])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn poll_mode_alive_line_and_log_file() {
    let s = Setup::new(1);
    let w = s.watched();
    let up = s.start(&["--poll", "--rescan-seconds", "0.5", "--update-seconds", "1"]);
    write_random_file(&w.join("share/new/x.bin"), 3000, 50);
    wait_sent(&w, &["share/new/x.bin"], Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    up.quit();
    let file_log = std::fs::read_to_string(w.join(".openmsi/upload-directory.log")).unwrap();
    // Events off: scans only.
    assert!(file_log.contains("events=false"), "{file_log}");
    assert!(
        file_log.contains("upload-directory is running"),
        "{file_log}"
    );
    assert!(
        file_log.contains("uploaded path=share/new/x.bin"),
        "{file_log}"
    );
    let out = s.download("out");
    assert_eq!(tree(&out), tree(&w));
}

/// Every (key, value) on `topic`, read until `want` holds or 30 s pass.
fn read_topic(
    broker: &Broker,
    topic: &str,
    mut want: impl FnMut(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    use rdkafka::Message;
    let consumer: BaseConsumer = consumer_config(broker, &unique_topic("read"))
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want(&got) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            got.push((key, value));
        }
    }
    got
}

#[test]
fn heartbeat_and_log_topics_in_the_reference_format() {
    let s = Setup::new(1);
    let w = s.watched();
    s.broker.create_topic("hb", 1);
    s.broker.create_topic("lg", 1);
    let up = s.start(&[
        "--heartbeat-topic",
        "hb",
        "--log-topic",
        "lg",
        "--heartbeat-interval",
        "1",
        "--program-id",
        "lab1",
    ]);
    write_random_file(&w.join("x.bin"), 12_345, 60);
    wait_sent(&w, &["x.bin"], Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    up.quit();
    let produced = |got: &[(String, serde_json::Value)]| {
        got.iter()
            .map(|(_, v)| {
                (
                    v["n_messages_produced"].as_u64().unwrap(),
                    v["n_bytes_produced"].as_u64().unwrap(),
                )
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let beats = read_topic(&s.broker, "hb", |got| produced(got) == (1, 12_345));
    assert_eq!(produced(&beats), (1, 12_345), "{beats:?}");
    for (key, value) in &beats {
        assert_eq!(key, "lab1_heartbeat");
        let ts = value["timestamp"].as_str().unwrap();
        assert!(ts.ends_with("+00:00") && ts.contains('T'), "{ts}");
    }
    let logs = read_topic(&s.broker, "lg", |got| {
        got.iter().any(|(_, v)| v.to_string().contains("uploaded"))
    });
    assert!(
        logs.iter()
            .all(|(k, v)| k == "lab1_log" && v["timestamp"].is_f64() && v["messages"].is_array()),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|(_, v)| v.to_string().contains("uploaded")),
        "{logs:?}"
    );
}

#[test]
fn download_directory_sends_heartbeats_too() {
    let s = Setup::new(1);
    s.broker.create_topic("hb", 1);
    let file = s.tmp.path().join("one.bin");
    write_random_file(&file, 70_000, 70);
    common::upload(&s.cfg, &s.topic, None, &file, 65_536);
    common::openmsi()
        .arg("download-directory")
        .arg(s.tmp.path().join("out"))
        .arg("--config")
        .arg(&s.cfg)
        .args(["--topic", &s.topic, "--exit-when-idle", "2"])
        .args(["--heartbeat-topic", "hb", "--heartbeat-interval", "1"])
        .args(["--program-id", "dl1"])
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let total = |got: &[(String, serde_json::Value)], field: &str| -> u64 {
        got.iter().map(|(_, v)| v[field].as_u64().unwrap()).sum()
    };
    let beats = read_topic(&s.broker, "hb", |got| {
        total(got, "n_bytes_processed") == 70_000
    });
    assert!(beats.iter().all(|(k, _)| k == "dl1_heartbeat"), "{beats:?}");
    assert_eq!(total(&beats, "n_messages_read"), 2, "{beats:?}");
    assert_eq!(total(&beats, "n_messages_processed"), 2, "{beats:?}");
    assert_eq!(total(&beats, "n_bytes_processed"), 70_000, "{beats:?}");
}

/// Chunks the uploader's progress file records as acknowledged for `path`.
fn progress_acked(watched: &Path, path: &str) -> u64 {
    let text =
        std::fs::read_to_string(watched.join(".openmsi/in_progress.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["path"] == path)
        .map(|v| {
            v["acked"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum()
}

#[cfg(unix)]
#[test]
fn kill_9_mid_large_file_resends_only_the_unacknowledged_chunks() {
    let s = Setup::new(1);
    let w = s.watched();
    // One chunk per produce request slows the broker down enough (several seconds for this
    // file) that the kill reliably lands mid-file, after a few saves of the progress file.
    let cfg = std::fs::read_to_string(&s.cfg).unwrap();
    std::fs::write(
        &s.cfg,
        cfg.replace("[producer]\n", "[producer]\nbatch.num.messages = 1\n"),
    )
    .unwrap();
    let size: u64 = 128 << 20;
    let chunk: u64 = 16 << 10;
    let n = size / chunk;
    write_random_file(&w.join("big/scan.raw"), size, 80);
    let args = ["--upload-existing", "--chunk-size", "16384"];
    let mut up = s.start(&args);
    // Kill once the saved state shows a good part, but not all, of the file acknowledged.
    assert!(
        wait_for(Duration::from_secs(120), || progress_acked(
            &w,
            "big/scan.raw"
        ) >= n / 4),
        "no progress recorded: {}",
        up.log_text()
    );
    up.child.0.kill().unwrap();
    up.child.0.wait().unwrap();
    let acked_before = progress_acked(&w, "big/scan.raw");
    assert!(
        acked_before < n && registry_sent(&w).is_empty(),
        "the file was done before the kill"
    );
    // Requests the dead process had already written to its socket may still be stored.
    std::thread::sleep(Duration::from_secs(1));
    let first_run = s.message_count() as u64;

    let up = s.start(&args);
    wait_sent(&w, &["big/scan.raw"], Duration::from_secs(180));
    up.quit();
    let log = std::fs::read_to_string(w.join(".openmsi/upload-directory.log")).unwrap();
    assert!(
        log.contains(&format!("acknowledged_before={acked_before}")),
        "{log}"
    );
    let total = s.message_count() as u64;
    let second_run = total - first_run;
    eprintln!(
        "{n} chunks; killed after {first_run} were on the topic ({acked_before} recorded as \
         acknowledged); the restart sent {second_run}; {total} in all"
    );
    // Exactly the chunks not recorded as acknowledged, so the file is whole, and well short of
    // a second copy.
    assert_eq!(second_run, n - acked_before);
    assert!(total >= n && total < 2 * n - n / 8, "{total} of {n}");
    let out = s.download("out");
    assert_eq!(
        sha512_file(&out.join("big/scan.raw")),
        sha512_file(&w.join("big/scan.raw"))
    );
}

#[test]
fn kill_9_during_a_burst_every_file_arrives_once_and_whole() {
    let s = Setup::new(2);
    let w = s.watched();
    let args = ["--n-threads", "4"];
    let mut up = s.start(&args);
    // Killed while the burst is still being written once 50 files are recorded as sent (a fast
    // uploader can otherwise finish all 600 before a kill after the burst).
    let mut killed = false;
    for i in 0..600u64 {
        write_random_file(&w.join(format!("burst/f{i:03}.bin")), 3000 + i, 900 + i);
        if !killed && i % 20 == 0 && registry_sent(&w).len() >= 50 {
            up.child.0.kill().unwrap();
            killed = true;
        }
    }
    if !killed {
        assert!(wait_for(Duration::from_secs(60), || registry_sent(&w)
            .len()
            >= 50));
        up.child.0.kill().unwrap();
    }
    up.child.0.wait().unwrap();
    assert!(registry_sent(&w).len() < 600, "all done before the kill");

    let up = s.start(&args);
    let mut all: Vec<String> = tree(&w).into_keys().collect();
    all.sort();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    wait_sent(&w, &refs, Duration::from_secs(120));
    up.quit();
    let messages = s.message_count();
    // Each file is one chunk. Only files acknowledged but not yet recorded when the process
    // died can have been sent twice: at most the files in flight (MAX_FILES_IN_FLIGHT = 256
    // awaiting acknowledgement, plus those of the last batch being recorded).
    assert!((600..600 + 256 + 16).contains(&messages), "{messages}");
    let out = s.download("out");
    assert_eq!(tree(&out), tree(&w));
    // The downloader published every file exactly once (duplicates of a finished version are
    // ignored, so nothing appears twice or as a second version).
    let completed = std::fs::read_to_string(out.join(".openmsi/completed.jsonl")).unwrap();
    let mut per_path: HashMap<String, usize> = HashMap::new();
    for line in completed.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *per_path
            .entry(v["path"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_path.len(), 600);
    assert!(per_path.values().all(|&c| c == 1), "{per_path:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_file_held_open_for_writing_waits_until_it_is_closed() {
    let s = Setup::new(1);
    let w = s.watched();
    let up = s.start(&[]);
    let path = w.join("held/acquisition.raw");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer = File::create(&path).unwrap();
    let part = tempfile::NamedTempFile::new().unwrap();
    write_random_file(part.path(), 50_000, 90);
    writer
        .write_all(&std::fs::read(part.path()).unwrap())
        .unwrap();
    writer.flush().unwrap();
    // A file next to it, closed, goes through meanwhile.
    write_random_file(&w.join("held/closed.raw"), 1000, 91);
    wait_sent(&w, &["held/closed.raw"], Duration::from_secs(30));
    // Unchanged for four times the 1 s settle time, but still open for writing.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !registry_sent(&w).contains_key("held/acquisition.raw"),
        "uploaded while another process held it open for writing"
    );
    drop(writer);
    wait_sent(&w, &["held/acquisition.raw"], Duration::from_secs(30));
    up.quit();
    let log = std::fs::read_to_string(w.join(".openmsi/upload-directory.log")).unwrap();
    assert!(log.contains("holds it open for writing"), "{log}");
    assert_eq!(s.message_count(), 2);
}

#[cfg(unix)]
#[test]
fn a_file_this_user_cannot_read_is_reported_skipped_and_sent_once_readable() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new(1);
    let w = s.watched();
    // Root reads every file, so as root the uploader runs as `nobody` (setpriv, util-linux).
    // The folders must let that user in, and the watched folder take its state folder.
    if unsafe { libc::geteuid() } == 0 {
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(s.tmp.path(), 0o755);
        mode(&w, 0o777);
    }
    let up = s.start_command(common::openmsi_unprivileged(), &["--rescan-seconds", "1"]);
    let secret = w.join("run/secret.bin");
    write_random_file(&secret, 5000, 95);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    write_random_file(&w.join("run/open.bin"), 6000, 96);
    wait_sent(&w, &["run/open.bin"], Duration::from_secs(30));
    // Several scans later it is still skipped, and was reported once, naming the file.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!registry_sent(&w).contains_key("run/secret.bin"));
    let log = std::fs::read_to_string(w.join(".openmsi/upload-directory.log")).unwrap();
    assert_eq!(log.matches("permission denied").count(), 1, "{log}");
    assert!(
        log.lines().any(|l| l.contains("permission denied")
            && l.contains("run/secret.bin")
            && l.contains("chmod")),
        "{log}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_sent(&w, &["run/secret.bin"], Duration::from_secs(30));
    up.quit();
    assert_eq!(s.message_count(), 2);
    let out = s.download("out");
    assert_eq!(tree(&out), tree(&w));
}

#[cfg(target_os = "linux")]
#[test]
fn inotify_watch_limit_reached_later_is_explained_and_falls_back_to_polling() {
    let s = Setup::new(1);
    let w = s.watched();
    // The uploader runs in its own user namespace (unshare, util-linux) whose inotify watch
    // limit is 2: enough for the watched folder and its state folder, not for folders created
    // later. A real limit, reached for real; the machine's own limit is not touched.
    let cmd = openmsi_std_through(&[
        "unshare",
        "--user",
        "--map-root-user",
        "sh",
        "-c",
        "echo 2 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"",
    ]);
    let up = s.start_command(cmd, &[]);
    write_random_file(&w.join("top.bin"), 1000, 97);
    wait_sent(&w, &["top.bin"], Duration::from_secs(30));
    // A new folder cannot be watched. A file written into it once its creation was handled
    // produces no event: without the fallback it would wait for the 30 s safety-net scan;
    // polling finds it within seconds.
    std::fs::create_dir_all(w.join("new/deeper")).unwrap();
    assert!(wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(w.join(".openmsi/upload-directory.log"))
            .unwrap_or_default()
            .contains("polling with full scans")
    }));
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    write_random_file(&w.join("new/deeper/x.bin"), 2000, 98);
    wait_sent(&w, &["new/deeper/x.bin"], Duration::from_secs(15));
    eprintln!(
        "found by polling after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    up.quit();
    let log = std::fs::read_to_string(w.join(".openmsi/upload-directory.log")).unwrap();
    assert!(
        log.contains("fs.inotify.max_user_watches = ")
            && log.contains("and 2 in this user namespace")
            && log.contains("sudo sysctl fs.inotify.max_user_watches=")
            && log.contains("polling with full scans"),
        "{log}"
    );
}
