//! Knot Resolver's message format on the real broker, both ways, against an independent peer
//! (`tests/interop/knot_peer.py`, written with kafka-python from the format's description):
//! openmsi's `--format knot` uploads are rebuilt by a Knot-style consumer; the peer's parts
//! (0- or 1-based, any order, with or without `file-sha512`) are rebuilt by
//! `download-directory --format knot`; one topic carries both formats for `--format auto`; and
//! malformed Knot messages are kept aside while good files still arrive.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{openmsi, reference_python, repo_root, sha512_file, write_random_file, TopicFixture};

/// `tests/interop/knot_peer.py SUBCOMMAND --bootstrap B --topic T ARGS...`; returns stdout.
fn knot_peer(fixture: &TopicFixture, subcommand: &str, args: &[&str]) -> String {
    let output = Command::new(reference_python())
        .arg(repo_root().join("tests/interop/knot_peer.py"))
        .arg(subcommand)
        .args([
            "--bootstrap",
            &fixture.broker.bootstrap(),
            "--topic",
            &fixture.topic,
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "knot_peer.py {subcommand} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `openmsi upload-file FILE --format knot --root-dir ROOT EXTRA...`.
fn upload_knot(fixture: &TopicFixture, root: &Path, file: &Path, extra: &[&str]) {
    openmsi()
        .arg("upload-file")
        .arg(file)
        .arg("--config")
        .arg(&fixture.cfg)
        .arg("--root-dir")
        .arg(root)
        .args([
            "--topic",
            &fixture.topic,
            "--format",
            "knot",
            "--chunk-size",
            "65536",
        ])
        .args(extra)
        .timeout(Duration::from_secs(60))
        .assert()
        .success();
}

/// Downloads until idle with `--host HOST` and `extra`; asserts success; returns the output.
fn download(fixture: &TopicFixture, out: &Path, group: &str, extra: &[&str]) -> String {
    let (ok, output) = common::download_idle_with(&fixture.cfg, &fixture.topic, out, group, extra);
    assert!(ok, "{output}");
    output
}

#[test]
fn openmsi_feeds_a_knot_style_consumer_and_rebuilds_its_own_knot_uploads() {
    let fixture = TopicFixture::new(common::Storage::Sqlite, "knot-out", 2);
    let src = fixture.work.path().join("src");
    let files = [
        ("kresd.yaml", 3_000u64),
        ("zones/block.rpz", 200_000),
        ("empty.rpz", 0),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random_file(&path, *len, 40 + i as u64);
        upload_knot(&fixture, &src, &path, &["--to-host", "resolver-1"]);
    }
    // upload-directory produces the same layout.
    let watched = fixture.work.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    write_random_file(&watched.join("policy.json"), 70_000, 49);
    common::upload_existing_until(
        &fixture.cfg,
        &fixture.topic,
        &watched,
        &[
            "--format",
            "knot",
            "--chunk-size",
            "65536",
            "--to-host",
            "resolver-1",
        ],
        "policy.json",
    );

    // Knot's own processing, as described, takes every file for its host, byte for byte.
    let knot_out = fixture.work.path().join("knot-resolver-1");
    let report = knot_peer(
        &fixture,
        "consume",
        &[
            "--hostname",
            "resolver-1",
            "--out",
            knot_out.to_str().unwrap(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["keys_match"], true, "{report}");
    assert_eq!(
        report["headers"],
        serde_json::json!([
            "chunk-index",
            "file-name",
            "file-sha512",
            "hostname",
            "total-chunks"
        ])
    );
    for (name, _) in &files {
        assert_eq!(
            report["files"][name].as_str(),
            Some(sha512_file(&src.join(name)).as_str()),
            "{name}: {report}"
        );
    }
    assert_eq!(
        report["files"]["policy.json"].as_str(),
        Some(sha512_file(&watched.join("policy.json")).as_str())
    );
    // Another resolver takes nothing.
    let other = knot_peer(
        &fixture,
        "consume",
        &[
            "--hostname",
            "resolver-2",
            "--out",
            fixture.work.path().join("k2").to_str().unwrap(),
        ],
    );
    assert!(other.contains(r#""files": {}"#), "{other}");

    // openmsi reads its own Knot-format uploads back.
    let out = fixture.work.path().join("out");
    download(
        &fixture,
        &out,
        "g-knot",
        &["--format", "knot", "--host", "resolver-1"],
    );
    for (name, _) in &files {
        assert_eq!(
            sha512_file(&out.join(name)),
            sha512_file(&src.join(name)),
            "{name}"
        );
    }
    assert_eq!(
        sha512_file(&out.join("policy.json")),
        sha512_file(&watched.join("policy.json"))
    );
    assert_eq!(common::rejected_kept(&out), 0);
}

#[test]
fn an_independent_knot_producer_is_rebuilt_by_download_directory() {
    let fixture = TopicFixture::new(common::Storage::Sqlite, "knot-in", 1);
    let src = fixture.work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut sent = Vec::new();
    // (name, size, part size, peer options)
    let cases: &[(&str, u64, &str, &[&str])] = &[
        ("plain.rpz", 25_000, "4096", &[]),
        ("one-based.rpz", 25_000, "4096", &["--one-based"]),
        (
            "last-first.rpz",
            9_000,
            "4000",
            &["--reverse", "--one-based"],
        ),
        ("hashed.yaml", 30_000, "7000", &["--sha512", "--reverse"]),
        ("small.json", 300, "4096", &[]),
        ("tiny-parts.conf", 5_000, "100", &["--sha512"]),
    ];
    for (i, (name, len, part_size, options)) in cases.iter().enumerate() {
        let path = src.join(name);
        write_random_file(&path, *len, 60 + i as u64);
        let spec = format!("{name}={}", path.display());
        let mut args = vec!["--hostname", "resolver-1", "--part-size", part_size];
        args.extend_from_slice(options);
        args.push(&spec);
        sent.push(knot_peer(&fixture, "produce", &args));
    }
    // A newer version of plain.rpz of the same size and part count, without a hash: the
    // newer one must win, not be taken for the old one.
    write_random_file(&src.join("plain.rpz"), 25_000, 99);
    let spec = format!("plain.rpz={}", src.join("plain.rpz").display());
    knot_peer(
        &fixture,
        "produce",
        &["--hostname", "resolver-1", "--part-size", "4096", &spec],
    );

    let out = fixture.work.path().join("out");
    let summary = download(
        &fixture,
        &out,
        "g-in",
        &["--format", "knot", "--host", "resolver-1"],
    );
    for (name, ..) in cases {
        assert_eq!(
            sha512_file(&out.join(name)),
            sha512_file(&src.join(name)),
            "{name}: {sent:?}\n{summary}"
        );
    }
    assert_eq!(common::rejected_kept(&out), 0, "{summary}");
    assert_eq!(common::failed_kept(&out), 0, "{summary}");
    // Another host takes none of it.
    let other = fixture.work.path().join("other");
    let summary = download(
        &fixture,
        &other,
        "g-other",
        &["--format", "knot", "--host", "r2"],
    );
    assert!(!other.join("plain.rpz").exists(), "{summary}");
}

#[test]
fn auto_takes_both_formats_from_one_topic_and_bad_knot_messages_are_kept_aside() {
    let fixture = TopicFixture::new(common::Storage::Sqlite, "knot-mixed", 1);
    let src = fixture.work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("ours.dat"), 150_000, 70);
    common::upload(
        &fixture.cfg,
        &fixture.topic,
        Some(&src),
        &src.join("ours.dat"),
        65_536,
    );
    write_random_file(&src.join("theirs.rpz"), 12_000, 71);
    let spec = format!("theirs.rpz={}", src.join("theirs.rpz").display());
    knot_peer(&fixture, "produce", &["--part-size", "5000", &spec]);
    write_random_file(&src.join("ours-knot.yaml"), 80_000, 72);
    upload_knot(&fixture, &src, &src.join("ours-knot.yaml"), &[]);
    knot_peer(&fixture, "produce-bad", &[]);

    let out = fixture.work.path().join("auto");
    let auto = ["--format", "auto"];
    let (ok, summary) =
        common::download_idle_with(&fixture.cfg, &fixture.topic, &out, "g-auto", &auto);
    // Rejected messages make the exit code 1, for scripts.
    assert!(!ok && summary.contains("12 messages rejected"), "{summary}");
    for name in ["ours.dat", "theirs.rpz", "ours-knot.yaml"] {
        assert_eq!(
            sha512_file(&out.join(name)),
            sha512_file(&src.join(name)),
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(out.join("after-bad.txt")).unwrap(),
        b"still fine\n"
    );
    // 12 bad messages, each kept once with its reason; nothing escaped the folder.
    assert_eq!(common::rejected_kept(&out), 12, "{summary}");
    assert!(!fixture.work.path().join("escaped").exists());
    let reasons: String = std::fs::read_dir(out.join(".openmsi/rejected"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    for expected in [
        "`chunk-index` is missing",
        "`total-chunks` is missing",
        "`file-name` is missing",
        "not a decimal number",
        "outside 0..=2",
        "zero or absurd",
        "unsafe",
        "fails its SHA-512 check",
    ] {
        assert!(reasons.contains(expected), "{expected}: {reasons}");
    }
    // Read again by the same group: everything was committed, nothing new is kept.
    let again = download(&fixture, &out, "g-auto", &auto);
    assert_eq!(common::rejected_kept(&out), 12, "{again}");

    // openmsi-only reading the same topic rebuilds its own chunks and refuses the Knot parts.
    let strict = fixture.work.path().join("strict");
    let (ok, summary) =
        common::download_idle_with(&fixture.cfg, &fixture.topic, &strict, "g-strict", &[]);
    assert!(!ok, "{summary}");
    assert_eq!(
        sha512_file(&strict.join("ours.dat")),
        sha512_file(&src.join("ours.dat"))
    );
    assert!(!strict.join("theirs.rpz").exists());
    assert!(common::rejected_kept(&strict) > 0);
}
