//! Crash safety of download-directory on a real broker: kill -9 at several points, restart
//! with the same group, and the file completes byte-identical; no partial file is ever
//! visible under its final name.

mod common;

use common::TopicFixture;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{openmsi_std, sha512_file, write_random_file, KillOnDrop, Storage};

fn downloader(cfg: &Path, topic: &str, out: &Path, group: &str) -> KillOnDrop {
    let child = openmsi_std()
        .arg("download-directory")
        .arg(out)
        .arg("--config")
        .arg(cfg)
        .args(["--topic", topic, "--group-id", group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// Watches `paths` until stopped; records any moment a final path held wrong content.
fn watch_final_paths(
    paths: Vec<(PathBuf, String)>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut violations = Vec::new();
        while !stop.load(Ordering::Acquire) {
            for (path, want) in &paths {
                if path.exists() {
                    // The file may be replaced between exists() and reading; a read error is fine.
                    if let Ok(bytes) = std::fs::read(path) {
                        use sha2::{Digest, Sha512};
                        let got: String = Sha512::digest(&bytes)
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        if &got != want {
                            violations.push(format!(
                                "{} visible with {} bytes and the wrong hash",
                                path.display(),
                                bytes.len()
                            ));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        violations
    })
}

#[test]
fn kill_9_at_several_points_then_resume_completes_every_file() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "crash", 2);
    let src = work.path().join("src");
    let files = [
        ("big one.bin", 24u64 << 20),
        ("nested/small.bin", 300_000),
        ("nested/deeper/mid.bin", 3 << 20),
    ];
    for (i, (rel, len)) in files.iter().enumerate() {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_random_file(&p, *len, 100 + i as u64);
        common::upload(&cfg, &topic, Some(&src), &p, 65536);
    }
    let out = work.path().join("out");
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    let expected: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(rel, _)| (out.join(rel), sha512_file(&src.join(rel))))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_final_paths(expected.clone(), Arc::clone(&stop));

    // Each round waits until this instance has written something new (after a kill, the
    // group hands its partitions over only when the dead member's session expires), then
    // kills it at a different moment of its work.
    let mut last = common::progress_bytes(&out);
    let mut kills_mid_transfer = 0;
    for (round, extra_ms) in [0u64, 100, 250, 50, 400].into_iter().enumerate() {
        let mut child = downloader(&cfg, &topic, &out, "crash-group");
        let moved = common::wait_for(Duration::from_secs(40), || {
            common::progress_bytes(&out) > last
        });
        assert!(
            moved,
            "round {round}: the restarted downloader made no progress"
        );
        std::thread::sleep(Duration::from_millis(extra_ms));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        last = common::progress_bytes(&out);
        if last >= total {
            break;
        }
        kills_mid_transfer += 1;
    }
    assert!(
        kills_mid_transfer >= 2,
        "only {kills_mid_transfer} kills landed mid-transfer; use bigger files"
    );
    let output = common::download_until_idle(&cfg, &topic, &out, "crash-group")
        .get_output()
        .clone();
    stop.store(true, Ordering::Release);
    let violations = watcher.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (path, want) in &expected {
        assert_eq!(&sha512_file(path), want, "{}", path.display());
    }
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(
        std::fs::read_dir(out.join(".openmsi/staging"))
            .unwrap()
            .count(),
        0
    );
}

/// Writes a staging pair for `relative` under `out` (as an earlier run would have left it),
/// last written `age` ago; returns the `.part` path.
fn abandoned_partial(out: &Path, id: &str, relative: &str, age: Duration) -> PathBuf {
    let staging = out.join(".openmsi/staging");
    std::fs::create_dir_all(&staging).unwrap();
    let version = serde_json::json!({
        "relative": relative,
        "file_hash": "ab".repeat(64),
        "n_total_chunks": 4,
        "file_mtime": null,
    });
    let record = staging.join(format!("{id}.chunks"));
    let data = staging.join(format!("{id}.part"));
    std::fs::write(&record, format!("{version}\n")).unwrap();
    std::fs::write(&data, vec![7u8; 1000]).unwrap();
    for p in [&record, &data] {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
    }
    data
}

#[test]
fn partial_files_abandoned_longer_than_the_limit_are_discarded_at_start() {
    const DAY: Duration = Duration::from_secs(86_400);
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "stale", 1);
    let out = work.path().join("out");
    let old = abandoned_partial(&out, "old", "run1/abandoned.bin", 3 * DAY);
    let recent = abandoned_partial(&out, "recent", "run1/recent.bin", DAY / 2);

    // 0 keeps everything.
    common::openmsi()
        .arg("download-directory")
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .args(["--topic", &topic, "--exit-when-idle", "1"])
        .args(["--discard-partials-after-days", "0"])
        .timeout(Duration::from_secs(60))
        .assert()
        .success();
    assert!(old.exists() && recent.exists());

    let assert = common::openmsi()
        .arg("download-directory")
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .args(["--topic", &topic, "--exit-when-idle", "1"])
        .args(["--discard-partials-after-days", "2"])
        .timeout(Duration::from_secs(60))
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("run1/abandoned.bin") && stderr.contains("discarded a partial file"),
        "the warning does not name the file: {stderr}"
    );
    assert!(!stderr.contains("run1/recent.bin"), "{stderr}");
    assert!(!old.exists() && !old.with_extension("chunks").exists());
    assert!(recent.exists() && recent.with_extension("chunks").exists());
}

/// A chunk the broker lost (acknowledged to the uploader, then gone, as a SIGKILLed broker of a
/// shared-storage cluster did): the file cannot complete, and instead of a silent stall the
/// downloader reports it once its partition has moved past the gap — which file, which chunks,
/// to upload it again — in the log, the summary and the metrics; the staged part is kept.
#[test]
fn chunks_the_broker_lost_are_reported_by_file_and_chunk() {
    let common::TopicFixture {
        broker,
        topic,
        work,
        cfg,
    } = common::TopicFixture::new(common::Storage::Sqlite, "lost-chunks", 1);
    let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let chunk = |i| common::ChunkSpec::of_file("run/lost.bin", &content, 1024, i).encode();
    // Chunks 1, 3, 4 and 5 of 5: chunk 2 is gone. Then another file: the partition moves on.
    let after = common::ChunkSpec::single("run", "next.bin", b"later file");
    common::produce_values(
        &broker,
        &topic,
        &[chunk(0), chunk(2), chunk(3), chunk(4), after.encode()],
    );
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let out = work.path().join("out");
    let (ok, output) = common::download_idle_with(
        &cfg,
        &topic,
        &out,
        "lost",
        &[
            "--report-missing-after",
            "1",
            "--metrics-addr",
            &metrics_addr,
        ],
    );
    // An idle exit with a file that cannot complete is a failure for a script.
    assert!(!ok, "{output}");
    assert!(out.join("run/next.bin").is_file());
    assert!(!out.join("run/lost.bin").exists());
    let warning = output
        .lines()
        .find(|l| l.contains("file incomplete"))
        .unwrap_or_else(|| panic!("no report of the lost chunk:\n{output}"));
    for needed in [
        "run/lost.bin",
        "chunk 2 of 5",
        "broker lost them",
        "upload the file again",
    ] {
        assert!(warning.contains(needed), "{needed:?} not in {warning}");
    }
    assert_eq!(output.matches("file incomplete").count(), 1, "{output}");
    assert!(
        output.contains("1 file missing chunks the broker does not have (upload again)"),
        "{output}"
    );
    // Kept for when the rest arrives (or --discard-partials-after-days).
    let staged = std::fs::read_dir(out.join(".openmsi/staging"))
        .unwrap()
        .count();
    assert!(staged >= 1, "the staged part is gone");
}
