//! Host targeting on the real broker: files addressed with `--to-host` reach only downloaders
//! of those hosts (`--host`, case-insensitive); files addressed to no host reach everyone;
//! skipped messages are counted, never written, and their offsets committed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{files_under, openmsi, sha512_file, write_random_file, TopicFixture};

fn upload_to(cfg: &Path, topic: &str, root: &Path, file: &Path, hosts: &[&str]) {
    let mut cmd = openmsi();
    cmd.arg("upload-file")
        .arg(file)
        .arg("--config")
        .arg(cfg)
        .arg("--root-dir")
        .arg(root)
        .args(["--topic", topic, "--chunk-size", "65536"]);
    for h in hosts {
        cmd.args(["--to-host", h]);
    }
    cmd.timeout(Duration::from_secs(60)).assert().success();
}

/// Runs a downloader for `host` (its own group) until idle; returns its output.
fn download_as(cfg: &Path, topic: &str, out: &Path, host: &str) -> String {
    let group = format!("group-{}", host.to_lowercase());
    let (ok, output) = common::download_idle_with(cfg, topic, out, &group, &["--host", host]);
    assert!(ok, "{output}");
    output
}

#[test]
fn targeted_files_reach_only_their_hosts_and_untargeted_ones_reach_everyone() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(common::Storage::Sqlite, "targeting", 2);
    let src = work.path().join("src");
    let files = [
        ("for-alpha.conf", &["alpha"][..], 1_000u64),
        ("for-beta-and-gamma.rpz", &["beta", "gamma"][..], 200_000),
        ("for-everyone.json", &[][..], 300),
        ("zones/for-alpha-too.rpz", &["ALPHA"][..], 150_000),
    ];
    for (i, (name, hosts, len)) in files.iter().enumerate() {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random_file(&path, *len, i as u64);
        upload_to(&cfg, &topic, &src, &path, hosts);
    }

    let alpha = work.path().join("alpha");
    let summary = download_as(&cfg, &topic, &alpha, "alpha");
    assert_eq!(
        files_under(&alpha),
        [
            "for-alpha.conf",
            "for-everyone.json",
            "zones/for-alpha-too.rpz"
        ]
    );
    // for-beta-and-gamma.rpz is 4 chunks of 64 KiB: 4 messages skipped, nothing written.
    assert!(
        summary.contains("4 messages for other hosts skipped"),
        "{summary}"
    );
    assert_eq!(common::rejected_kept(&alpha), 0);
    for name in [
        "for-alpha.conf",
        "for-everyone.json",
        "zones/for-alpha-too.rpz",
    ] {
        assert_eq!(sha512_file(&alpha.join(name)), sha512_file(&src.join(name)));
    }

    // Host names compare without regard to case.
    let beta = work.path().join("beta");
    download_as(&cfg, &topic, &beta, "BETA");
    assert_eq!(
        files_under(&beta),
        ["for-beta-and-gamma.rpz", "for-everyone.json"]
    );

    // The skipped messages' offsets were committed: the group has no lag.
    let describe = openmsi()
        .args(["topic", "describe", &topic, "--json", "--config"])
        .arg(&cfg)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&describe.stdout).unwrap();
    let group = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "group-alpha")
        .unwrap_or_else(|| panic!("{report}"))
        .clone();
    assert_eq!(group["total_lag"], 0, "{report}");
}

#[test]
fn upload_directory_addresses_every_file_and_bad_host_names_are_refused() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(common::Storage::Sqlite, "targeting-dir", 1);
    let watched = work.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    write_random_file(&watched.join("resolver.yaml"), 5_000, 9);
    common::upload_existing_until(
        &cfg,
        &topic,
        &watched,
        &["--to-host", "resolver-1"],
        "resolver.yaml",
    );

    let other = work.path().join("other");
    let summary = download_as(&cfg, &topic, &other, "resolver-2");
    assert!(files_under(&other).is_empty());
    assert!(
        summary.contains("1 message for other hosts skipped"),
        "{summary}"
    );
    let mine = work.path().join("mine");
    download_as(&cfg, &topic, &mine, "resolver-1");
    assert_eq!(files_under(&mine), ["resolver.yaml"]);

    for bad in ["", "two words", "new\nline"] {
        let out = openmsi()
            .arg("upload-file")
            .arg(watched.join("resolver.yaml"))
            .arg("--config")
            .arg(&cfg)
            .args(["--topic", &topic, "--to-host", bad])
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--to-host"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
