//! upload-file → download-directory on a real broker (tansu, sqlite storage): sizes around the
//! chunk boundaries, nested folders, unicode and spaces, a 50 MiB file, partitioning, new
//! versions replacing old ones, and a topic that does not exist.

mod common;

use common::TopicFixture;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use common::{
    download_until_idle, openmsi, sha512_file, write_config, write_random_file, Broker, Storage,
};
use predicates::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

/// Uploads `file` (relative to `root`) and asserts success.
fn upload(cfg: &Path, topic: &str, root: &Path, file: &Path, chunk_size: usize) {
    common::upload(cfg, topic, Some(root), file, chunk_size);
}

/// Runs the downloader until the topic is idle; returns its stdout.
fn download(cfg: &Path, topic: &str, out: &Path, group: &str) -> String {
    let assert = download_until_idle(cfg, topic, out, group);
    let output = assert.get_output();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "download failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Every regular file under `dir` (relative path → SHA-512), skipping openmsi's state folder.
fn tree(dir: &Path) -> HashMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut HashMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel == ".openmsi" {
                continue;
            }
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(rel, sha512_file(&path));
            }
        }
    }
    let mut out = HashMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn sizes_around_chunk_boundaries_nested_and_unicode_names_round_trip() {
    let TopicFixture {
        broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "sizes", 3);
    let src = work.path().join("src");
    let chunk = 4096usize;
    let cases: Vec<(&str, u64)> = vec![
        ("empty.dat", 0),
        ("one byte.bin", 1),
        ("a/chunk minus one.bin", chunk as u64 - 1),
        ("a/b/exactly chunk.bin", chunk as u64),
        ("a/b/chunk plus one.bin", chunk as u64 + 1),
        ("données/ünïcödé 名前.tif", 3 * chunk as u64 + 17),
        ("catalog.csv", 10_000),
    ];
    for (i, (rel, len)) in cases.iter().enumerate() {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random_file(&path, *len, i as u64);
        upload(&cfg, &topic, &src, &path, chunk);
    }
    let out = work.path().join("out");
    let summary = download(&cfg, &topic, &out, "sizes-group");
    assert!(
        summary.contains(&format!("{} files completed", cases.len())),
        "{summary}"
    );
    assert_eq!(tree(&out), tree(&src));
    // Nothing left in staging.
    assert_eq!(
        std::fs::read_dir(out.join(".openmsi/staging"))
            .unwrap()
            .count(),
        0
    );

    // All chunks of each file went to one partition, and the keys follow the wire format.
    let consumer: BaseConsumer = common::consumer_config(&broker, "inspect")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut partitions: HashMap<String, HashSet<i32>> = HashMap::new();
    let mut seen = 0;
    let total: u64 = cases
        .iter()
        .map(|(_, len)| len.div_ceil(chunk as u64).max(1))
        .sum();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen < total && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let file = key.split("_chunk_").next().unwrap().to_string();
            partitions.entry(file).or_default().insert(m.partition());
            seen += 1;
        }
    }
    assert_eq!(seen, total);
    assert!(partitions.contains_key("_empty.dat"), "{partitions:?}");
    assert!(
        partitions.contains_key("a_b_exactly chunk.bin"),
        "{partitions:?}"
    );
    for (file, parts) in &partitions {
        assert_eq!(parts.len(), 1, "{file} spread over {parts:?}");
    }
}

#[test]
fn fifty_mib_file_with_default_chunk_size() {
    // The memory engine: this test is about streaming a large file, and the sqlite engine
    // consumes at a few MB/s. The harness config carries the engine's batching workaround.
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Memory, "big", 1);
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("big.bin");
    write_random_file(&file, 50 << 20, 7);
    upload(&cfg, &topic, &src, &file, 524_288);
    let out = work.path().join("out");
    download(&cfg, &topic, &out, "big-group");
    assert_eq!(sha512_file(&out.join("big.bin")), sha512_file(&file));
}

#[test]
fn changed_file_replaces_the_old_copy_and_resumes_with_the_same_group() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "versions", 1);
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("scan.tif");
    let out = work.path().join("out");

    write_random_file(&file, 40_000, 1);
    upload(&cfg, &topic, &src, &file, 4096);
    download(&cfg, &topic, &out, "versions-group");
    assert_eq!(sha512_file(&out.join("scan.tif")), sha512_file(&file));

    // A shorter new version: the old tail must not survive.
    write_random_file(&file, 5_000, 2);
    upload(&cfg, &topic, &src, &file, 4096);
    let summary = download(&cfg, &topic, &out, "versions-group");
    // The same group resumes: only the new version's chunks are read.
    assert!(summary.contains("1 file completed"), "{summary}");
    assert_eq!(
        std::fs::read(out.join("scan.tif")).unwrap(),
        std::fs::read(&file).unwrap()
    );
}

#[test]
fn missing_topic_is_a_clear_error() {
    let broker = Broker::start(Storage::Sqlite);
    let work = tempfile::tempdir().unwrap();
    let cfg = write_config(work.path(), &broker);
    let file = work.path().join("x");
    std::fs::write(&file, b"data").unwrap();
    openmsi()
        .arg("upload-file")
        .arg(&file)
        .arg("--config")
        .arg(&cfg)
        .args(["--topic", "no_such_topic", "--connect-timeout", "10"])
        .timeout(Duration::from_secs(60))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("no_such_topic")
                .and(predicate::str::contains("does not exist")),
        );
    openmsi()
        .arg("download-directory")
        .arg(work.path().join("out"))
        .arg("--config")
        .arg(&cfg)
        .args(["--topic", "no_such_topic", "--connect-timeout", "10"])
        .timeout(Duration::from_secs(60))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("no_such_topic")
                .and(predicate::str::contains("does not exist")),
        );
}

#[test]
fn download_regex_skips_other_files() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "regex", 1);
    let src = work.path().join("src");
    for name in ["keep/a.tif", "drop/b.txt"] {
        let p = src.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_random_file(&p, 1000, 3);
        upload(&cfg, &topic, &src, &p, 4096);
    }
    let out = work.path().join("out");
    openmsi()
        .arg("download-directory")
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .args([
            "--topic",
            &topic,
            "--exit-when-idle",
            "2",
            "--download-regex",
            r"\.tif$",
        ])
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    assert!(out.join("keep/a.tif").is_file());
    assert!(!out.join("drop").exists());
}
