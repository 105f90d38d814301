//! Delivery control on the real broker: `--validate` keeps a bad new version out and the old
//! one in place, `--backup` keeps the replaced version, `--on-file` hooks run once per file
//! without a shell (hostile names are data), and a hook due at kill -9 runs after the restart.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{openmsi, openmsi_std, wait_for, KillOnDrop, TopicFixture};

fn upload(cfg: &Path, topic: &str, root: &Path, file: &Path) {
    openmsi()
        .arg("upload-file")
        .arg(file)
        .arg("--config")
        .arg(cfg)
        .arg("--root-dir")
        .arg(root)
        .args(["--topic", topic])
        .timeout(Duration::from_secs(60))
        .assert()
        .success();
}

/// download-directory until idle, always as group "fleet", with `extra` flags.
fn download(cfg: &Path, topic: &str, out: &Path, extra: &[&str]) -> (bool, String) {
    common::download_idle_with(cfg, topic, out, "fleet", extra)
}

#[test]
fn validation_keeps_a_bad_version_out_and_backup_keeps_the_replaced_one() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(common::Storage::Sqlite, "validate", 1);
    let src = work.path().join("src");
    let out = work.path().join("out");
    std::fs::create_dir_all(&src).unwrap();
    let conf = src.join("resolver.json");
    let notes = src.join("notes.txt");
    let flags = [
        "--validate",
        "python3 -m json.tool",
        "--validate-glob",
        "*.json",
        "--backup",
    ];

    std::fs::write(&conf, br#"{"version": 1}"#).unwrap();
    std::fs::write(&notes, b"{ not json, and not validated").unwrap();
    upload(&cfg, &topic, &src, &conf);
    upload(&cfg, &topic, &src, &notes);
    let (ok, log) = download(&cfg, &topic, &out, &flags);
    assert!(ok, "{log}");
    assert_eq!(
        std::fs::read(out.join("resolver.json")).unwrap(),
        br#"{"version": 1}"#
    );
    assert!(
        out.join("notes.txt").is_file(),
        "the glob limits validation"
    );

    // A broken new version: refused, the old one stays in use, the new one is kept aside.
    std::fs::write(&conf, br#"{"version": 2,"#).unwrap();
    upload(&cfg, &topic, &src, &conf);
    let (ok, log) = download(&cfg, &topic, &out, &flags);
    assert!(!ok, "a refused file makes the run fail: {log}");
    assert!(log.contains("--validate refused the new version"), "{log}");
    // Counted as what it is, not as a checksum failure.
    assert!(
        log.contains("0 failed verification") && log.contains("1 refused by --validate"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(out.join("resolver.json")).unwrap(),
        br#"{"version": 1}"#
    );
    let failed = out.join(".openmsi/failed");
    let kept: Vec<String> = std::fs::read_dir(&failed)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".validation.txt"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(failed.join(&kept[0])).unwrap(),
        br#"{"version": 2,"#
    );
    let report = std::fs::read_dir(&failed)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".validation.txt"))
        .expect("the command's output is kept beside the refused version");
    let report = std::fs::read_to_string(report.path()).unwrap();
    assert!(report.contains("exit code 1"), "{report}");
    assert!(!out.join("resolver.json.backup").exists());

    // A good new version replaces it; the replaced one is the backup.
    std::fs::write(&conf, br#"{"version": 3}"#).unwrap();
    upload(&cfg, &topic, &src, &conf);
    let (ok, log) = download(&cfg, &topic, &out, &flags);
    assert!(ok, "{log}");
    assert_eq!(
        std::fs::read(out.join("resolver.json")).unwrap(),
        br#"{"version": 3}"#
    );
    assert_eq!(
        std::fs::read(out.join("resolver.json.backup")).unwrap(),
        br#"{"version": 1}"#
    );
}

/// A hook that appends its argument and two of its environment variables to `log`, NUL-separated.
fn recording_hook(log: &Path) -> String {
    format!(
        "sh -c 'printf \"%s|%s|%s\\0\" \"$1\" \"$OPENMSI_RELATIVE_PATH\" \"$OPENMSI_SIZE\" >> {}' hook",
        log.display()
    )
}

fn recorded(log: &Path) -> Vec<String> {
    std::fs::read(log)
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn on_file_hooks_run_once_per_file_and_hostile_names_inject_nothing() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(common::Storage::Sqlite, "hooks", 2);
    let src = work.path().join("src");
    let out = work.path().join("out");
    // The downloader runs in `work`: an injected `touch INJECTED` would create this.
    let marker = work.path().join("INJECTED");
    std::fs::create_dir_all(&src).unwrap();
    let names = [
        "plain.rpz",
        "semi; touch INJECTED",
        "dollar $(touch INJECTED)",
        "tick `touch INJECTED`",
        "quote ' and \" and spaces",
        "-n looks like an option",
    ];
    for name in &names {
        let path = src.join(name);
        std::fs::write(&path, name.as_bytes()).unwrap();
        upload(&cfg, &topic, &src, &path);
    }
    let log = work.path().join("hook.log");
    let (ok, output) = download(&cfg, &topic, &out, &["--on-file", &recording_hook(&log)]);
    assert!(ok, "{output}");
    let mut got = recorded(&log);
    got.sort();
    let mut want: Vec<String> = names
        .iter()
        .map(|n| format!("{}|{n}|{}", out.join(n).display(), n.len()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert!(!marker.exists(), "a file name was run as a command");
    // Read again by the same group: nothing new, no hook runs again.
    let (ok, output) = download(&cfg, &topic, &out, &["--on-file", &recording_hook(&log)]);
    assert!(ok, "{output}");
    assert_eq!(recorded(&log).len(), names.len());
}

#[test]
fn a_hook_due_when_the_downloader_is_killed_runs_after_the_restart() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(common::Storage::Sqlite, "hook-crash", 1);
    let src = work.path().join("src");
    let out = work.path().join("out");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("zone.rpz");
    std::fs::write(&file, b"zone data").unwrap();
    upload(&cfg, &topic, &src, &file);
    let log = work.path().join("hook.log");
    // Takes 3 s, and records only if the downloader that started it is still alive (a killed
    // downloader's orphaned hook must not count as run).
    let slow_hook = format!(
        "sh -c 'sleep 3; kill -0 $PPID 2>/dev/null && printf \"%s\\0\" \"$1\" >> {}' hook",
        log.display()
    );
    let mut first = KillOnDrop(
        openmsi_std()
            .arg("download-directory")
            .arg(&out)
            .arg("--config")
            .arg(&cfg)
            .args([
                "--topic",
                &topic,
                "--group-id",
                "fleet",
                "--on-file",
                &slow_hook,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let completed = out.join(".openmsi/completed.jsonl");
    assert!(wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(&completed).is_ok_and(|t| t.contains("zone.rpz"))
    }));
    // Published, its hook running (sleeping): kill -9.
    std::thread::sleep(Duration::from_millis(500));
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        recorded(&log).is_empty(),
        "the orphaned hook recorded a run"
    );

    let (ok, output) = download(&cfg, &topic, &out, &["--on-file", &slow_hook]);
    assert!(ok, "{output}");
    assert!(output.contains("hooks that were due"), "{output}");
    assert_eq!(recorded(&log), [out.join("zone.rpz").display().to_string()]);
}

#[test]
fn on_batch_runs_once_for_a_burst_of_twenty_files() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(common::Storage::Sqlite, "batch", 2);
    let src = work.path().join("src");
    let out = work.path().join("out");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        let path = src.join(format!("zones/z{i:02}.rpz"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("zone {i}")).unwrap();
        upload(&cfg, &topic, &src, &path);
    }
    let log = work.path().join("batch.log");
    let hook = format!(
        "sh -c 'printf \"%s %s\\n\" \"$OPENMSI_FILE_COUNT\" \"$(tr \"\\0\" \"\\n\" < \"$1\" | sort | head -1)\" >> {}' batch",
        log.display()
    );
    let mut down = KillOnDrop(
        openmsi_std()
            .arg("download-directory")
            .arg(&out)
            .arg("--config")
            .arg(&cfg)
            .args(["--topic", &topic, "--group-id", "fleet"])
            .args(["--on-batch", &hook, "--hook-delay", "2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(Duration::from_secs(60), || log.exists()));
    // Settled: no second run for the same burst.
    std::thread::sleep(Duration::from_secs(4));
    assert!(common::quit_and_wait(&mut down, Duration::from_secs(30)).success());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "20 zones/z00.rpz\n");
}

#[test]
fn a_failing_hook_puts_the_previous_version_back() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(common::Storage::Sqlite, "restore", 1);
    let src = work.path().join("src");
    let out = work.path().join("out");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("policy.rpz");
    // The "reload" accepts only content that says good.
    let flags = [
        "--backup",
        "--on-file",
        "grep -q good",
        "--restore-on-hook-failure",
    ];
    std::fs::write(&file, b"good v1").unwrap();
    upload(&cfg, &topic, &src, &file);
    let (ok, log) = download(&cfg, &topic, &out, &flags);
    assert!(ok, "{log}");
    std::fs::write(&file, b"broken v2").unwrap();
    upload(&cfg, &topic, &src, &file);
    let (ok, log) = download(&cfg, &topic, &out, &flags);
    assert!(!ok, "a failed hook makes the run fail: {log}");
    assert!(log.contains("1 hook failed"), "{log}");
    assert!(log.contains("hook failed"), "{log}");
    assert!(log.contains("exit code 1"), "{log}");
    assert!(
        log.contains("the previous version is back in place"),
        "{log}"
    );
    assert_eq!(std::fs::read(out.join("policy.rpz")).unwrap(), b"good v1");
}

/// `--result-topic`: each successful `--on-file` command's output becomes one message keyed as
/// OpenMSIStream keys its processing results, read back by a Python consumer (confluent-kafka,
/// from the reference venv) that parses the JSON; a failing command sends nothing; a missing
/// result topic stops the downloader at start in one line.
#[test]
fn on_file_output_goes_to_the_result_topic_and_python_reads_it() {
    let TopicFixture {
        broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(common::Storage::Sqlite, "results", 2);
    let results = common::unique_topic("results-out");
    broker.create_topic(&results, 1);
    let src = work.path().join("src");
    for (rel, content) in [
        ("scan.json", &b"{}"[..]),
        ("run 1/x.tif", &[7u8; 70_000][..]),
        ("run 1/bad.tif", &b"nope"[..]),
    ] {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        upload(&cfg, &topic, &src, &path);
    }
    // JSON for every file but bad.tif, whose command fails.
    let hook = r#"sh -c 'case "$OPENMSI_RELATIVE_PATH" in *bad*) exit 3;; esac; printf "{\"path\": \"%s\", \"size\": %s}" "$OPENMSI_RELATIVE_PATH" "$OPENMSI_SIZE"' result"#;
    let out = work.path().join("out");
    let (_, output) = download(
        &cfg,
        &topic,
        &out,
        &["--on-file", hook, "--result-topic", &results],
    );
    assert!(output.contains("2 results sent"), "{output}");
    assert!(output.contains("1 hook failed"), "{output}");

    let script = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "py-results",
              "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
c.assign([TopicPartition(sys.argv[2], 0, 0)])
got = {}
for _ in range(100):
    m = c.poll(0.2)
    if m is not None and m.error() is None:
        got[m.key().decode()] = json.loads(m.value().decode())
    if len(got) == 2:
        break
c.close()
for key in sorted(got):
    print(key, got[key]["path"], got[key]["size"])
"#;
    let python = std::process::Command::new(common::reference_python())
        .args(["-c", script, &broker.bootstrap(), &results])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&python.stdout);
    assert!(
        python.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&python.stderr)
    );
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        [
            "_scan.json_chunk_processing_result scan.json 2",
            "run 1_x.tif_chunk_processing_result run 1/x.tif 70000",
        ]
    );

    // A result topic that does not exist: one line at start, nothing read.
    let (ok, output) = download(
        &cfg,
        &topic,
        &work.path().join("out2"),
        &["--on-file", hook, "--result-topic", "no-such-results"],
    );
    assert!(!ok);
    let errors: Vec<&str> = output.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{output}");
    assert!(
        errors[0].contains("--result-topic no-such-results"),
        "{output}"
    );
}
