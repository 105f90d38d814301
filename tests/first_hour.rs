//! What a new user meets in the first hour with the long-running commands: progress while a
//! large file moves, one piece of advice for a topic of another format, a state folder outside a
//! read-only watched folder, and a downloader that starts reading without waiting for a
//! rebalance on a broker that delays a new group's first one (as a stock Kafka does).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    openmsi, openmsi_std, produce_values, quit_and_wait, sha512_file, wait_for, write_random_file,
    KillOnDrop, Storage, TopicFixture,
};

/// Starts `openmsi ARGS` with piped stdin (for `quit`) and stderr to `log`.
fn start(args: &[&str], log: &Path) -> KillOnDrop {
    let mut command = openmsi_std();
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    KillOnDrop(command.spawn().unwrap())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Both long-running commands log a progress line for a file that takes longer than
/// `--progress-seconds` (their stderr is not a terminal here), naming the file, and their
/// summaries give the rate while data moved.
#[test]
fn long_running_commands_log_progress_for_a_large_file() {
    // sqlite: its slow fetches (DESIGN: 6-20 MB/s) keep the file arriving for seconds. On the
    // memory engine a downloader that joined late read the whole backlog faster than a tick.
    let f = TopicFixture::new(Storage::Sqlite, "progress", 1);
    let cfg = f.cfg.to_str().unwrap();
    let watched = f.work.path().join("watched");
    let out = f.work.path().join("out");
    std::fs::create_dir(&watched).unwrap();
    let (up_log, down_log) = (f.work.path().join("up.log"), f.work.path().join("down.log"));
    let common = [
        "--config",
        cfg,
        "--topic",
        &f.topic,
        "--progress-seconds",
        "0.1",
    ];
    let mut up = start(
        &[
            &["upload-directory", watched.to_str().unwrap()][..],
            &common,
        ]
        .concat(),
        &up_log,
    );
    let mut down = start(
        &[&["download-directory", out.to_str().unwrap()][..], &common].concat(),
        &down_log,
    );
    // Large enough to take well over 0.1 s on both sides (96 chunks through sqlite).
    let big = f.work.path().join("big.bin");
    write_random_file(&big, 48 << 20, 7);
    std::fs::rename(&big, watched.join("big.bin")).unwrap();
    let arrived = wait_for(Duration::from_secs(120), || out.join("big.bin").is_file());
    assert!(arrived, "{}\n{}", read(&up_log), read(&down_log));
    assert_eq!(
        sha512_file(&out.join("big.bin")),
        sha512_file(&watched.join("big.bin"))
    );
    assert!(quit_and_wait(&mut up, Duration::from_secs(30)).success());
    assert!(quit_and_wait(&mut down, Duration::from_secs(30)).success());
    for log in [&up_log, &down_log] {
        let text = read(log);
        let progress: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("in progress") && l.contains("big.bin"))
            .collect();
        assert!(
            !progress.is_empty(),
            "no progress line in {}:\n{text}",
            log.display()
        );
        assert!(progress[0].contains("mb_per_s="), "{}", progress[0]);
    }
}

/// A default downloader on a topic of Knot Resolver parts, or of encrypted records, says once
/// per kind what the messages are and what to set, and counts the rest.
#[test]
fn a_topic_of_another_format_gets_one_piece_of_advice_per_kind() {
    let f = TopicFixture::new(Storage::Memory, "foreign", 1);
    let src = f.work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..3 {
        let file = src.join(format!("zone{i}.rpz"));
        std::fs::write(&file, format!("zone {i}")).unwrap();
        openmsi()
            .arg("upload-file")
            .arg(&file)
            .args(["--format", "knot", "--config"])
            .arg(&f.cfg)
            .args(["--topic", &f.topic])
            .assert()
            .success();
    }
    // Three messages shaped like KafkaCrypto records (format byte, key id, salt, box).
    let record = |n: u8| {
        let mut v = vec![0x01, 0x93, 0xc4, 32];
        v.extend([n; 32]);
        v.extend([0xc4, 16]);
        v.extend([n; 16]);
        v.extend([0xc4, 40]);
        v.extend([n; 40]);
        v
    };
    produce_values(&f.broker, &f.topic, &[record(1), record(2), record(3)]);
    let out = f.work.path().join("out");
    let (ok, log) = common::download_idle_with(&f.cfg, &f.topic, &out, "default-format", &[]);
    assert!(!ok, "rejected messages make an idle exit fail: {log}");
    assert_eq!(log.matches("--format knot").count(), 1, "{log}");
    assert_eq!(log.matches("[kafkacrypto]").count(), 1, "{log}");
    assert!(log.contains("6 messages rejected"), "{log}");
    assert!(!log.contains("bad message skipped"), "{log}");
}

/// `--state-dir` lets upload-directory watch a folder it may only read (a read-only share), and
/// keeps download-directory's state out of its output folder.
#[cfg(target_os = "linux")]
#[test]
fn state_dir_lets_a_read_only_folder_be_watched_and_keeps_state_elsewhere() {
    let f = TopicFixture::new(Storage::Memory, "statedir", 1);
    let cfg = f.cfg.to_str().unwrap();
    let data = f.work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_random_file(&data.join("scan.tif"), 300_000, 3);
    // A read-only bind mount of `data`: a share this process may only read, even as root.
    let share = f.work.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let mount = |args: &[&str]| {
        let status = std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "mount {args:?} (these tests run as root)");
    };
    mount(&["--bind", data.to_str().unwrap(), share.to_str().unwrap()]);
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&share);
    mount(&["-o", "remount,bind,ro", share.to_str().unwrap()]);
    let share_s = share.to_str().unwrap();

    // Without --state-dir: one line that names the folder and the flag.
    let refused = openmsi()
        .args([
            "upload-directory",
            share_s,
            "--config",
            cfg,
            "--topic",
            &f.topic,
        ])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--state-dir"), "{stderr}");
    assert!(stderr.contains(share_s), "{stderr}");

    // Inside the watched folder: refused (its files would be uploaded).
    let inside = openmsi()
        .args([
            "upload-directory",
            data.to_str().unwrap(),
            "--config",
            cfg,
            "--state-dir",
        ])
        .arg(data.join("state"))
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&inside.stderr).contains("inside the watched folder"));
    // The same for a downloader's output folder, and nothing is created there.
    let out = f.work.path().join("out");
    let (ok, log) = common::download_idle_with(
        &f.cfg,
        &f.topic,
        &out,
        "state-inside",
        &["--state-dir", out.join("state").to_str().unwrap()],
    );
    assert!(!ok && log.contains("inside the output folder"), "{log}");
    assert!(!out.join("state").exists());

    let state = f.work.path().join("upload-state");
    let down_state = f.work.path().join("download-state");
    let up_log = f.work.path().join("up.log");
    let state_s = state.to_str().unwrap();
    let mut up = start(
        &[
            "upload-directory",
            share_s,
            "--config",
            cfg,
            "--topic",
            &f.topic,
            "--state-dir",
            state_s,
            "--upload-existing",
        ],
        &up_log,
    );
    // Sent (recorded in the registry in the state folder) before the downloader looks.
    let sent = wait_for(Duration::from_secs(60), || {
        read(&state.join("uploaded.jsonl")).contains("scan.tif")
    });
    assert!(sent, "{}", read(&up_log));
    let (ok, log) = common::download_idle_with(
        &f.cfg,
        &f.topic,
        &out,
        "state-elsewhere",
        &["--state-dir", down_state.to_str().unwrap()],
    );
    assert!(ok, "{log}\n{}", read(&up_log));
    assert_eq!(
        sha512_file(&out.join("scan.tif")),
        sha512_file(&data.join("scan.tif"))
    );
    assert!(quit_and_wait(&mut up, Duration::from_secs(30)).success());
    assert!(state.join("uploaded.jsonl").is_file());
    assert!(state.join("upload-directory.log").is_file());
    assert!(!data.join(".openmsi").exists());
    assert!(down_state.join("completed.jsonl").is_file());
    assert!(
        !out.join(".openmsi").exists(),
        "the output folder holds only the files"
    );
}

/// On a broker that delays a new group's first assignment (the quick start's prebuilt tansu,
/// like a stock Kafka's `group.initial.rebalance.delay.ms`), a downloader with a fresh group
/// assigns itself every partition and starts at once; a named group with --sole-reader too,
/// and it resumes from the group's committed offsets.
#[test]
fn a_fresh_group_starts_reading_without_waiting_for_a_rebalance() {
    let f = TopicFixture::new(Storage::Prebuilt, "faststart", 2);
    let file = f.work.path().join("a.bin");
    write_random_file(&file, 1000, 1);
    common::upload(&f.cfg, &f.topic, None, &file, 65_536);
    let run = |out: &Path, extra: &[&str]| {
        let started = Instant::now();
        let output = openmsi()
            .arg("download-directory")
            .arg(out)
            .arg("--config")
            .arg(&f.cfg)
            .args(["--topic", &f.topic, "--exit-when-idle", "0.5"])
            .args(extra)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{text}");
        (started.elapsed(), text)
    };
    // The config's group.id = create_new: a fresh group.
    let (took, text) = run(&f.work.path().join("out1"), &[]);
    assert!(f.work.path().join("out1/a.bin").is_file(), "{text}");
    // The broker holds a new group's first assignment ~5 s; reading and the 0.5 s idle exit
    // take well under that.
    assert!(took < Duration::from_millis(4500), "took {took:?}: {text}");

    let (took, text) = run(
        &f.work.path().join("out2"),
        &["--group-id", "lab-reader", "--sole-reader"],
    );
    assert!(f.work.path().join("out2/a.bin").is_file(), "{text}");
    assert!(took < Duration::from_millis(4500), "took {took:?}: {text}");
    // The group committed its offsets: a second run reads nothing new.
    let second = f.work.path().join("b.bin");
    write_random_file(&second, 1000, 2);
    common::upload(&f.cfg, &f.topic, None, &second, 65_536);
    let (_, text) = run(
        &f.work.path().join("out3"),
        &["--group-id", "lab-reader", "--sole-reader"],
    );
    assert!(f.work.path().join("out3/b.bin").is_file(), "{text}");
    assert!(!f.work.path().join("out3/a.bin").exists(), "{text}");
}
