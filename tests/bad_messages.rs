//! Hostile and broken messages on the topic never stop the downloader, never escape the
//! output folder, are kept aside and reported once, and are not read again after a restart.

mod common;

use common::{ChunkSpec, TopicFixture};

use std::time::Duration;

use common::{producer_config, write_random_file, Storage};
use predicates::prelude::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// A well-formed single-chunk value for `data`, broken as `tweak` says.
fn value(subdir: &str, filename: &str, data: &[u8], tweak: impl FnOnce(&mut ChunkSpec)) -> Vec<u8> {
    let mut spec = ChunkSpec::single(subdir, filename, data);
    tweak(&mut spec);
    spec.encode()
}

#[test]
fn bad_messages_are_skipped_kept_aside_and_never_reread() {
    let TopicFixture {
        broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "hostile", 1);

    let wrong = [7u8; 64];
    let eight_fields = {
        let mut v = Vec::new();
        rmp::encode::write_array_len(&mut v, 8).unwrap();
        for _ in 0..8 {
            rmp::encode::write_uint(&mut v, 1).unwrap();
        }
        v
    };
    let bad: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("garbage", Some(b"definitely not msgpack".to_vec())),
        (
            "truncated",
            Some(value("", "t.bin", b"abc", |_| {})[..20].to_vec()),
        ),
        ("eight fields", Some(eight_fields)),
        (
            "chunk hash",
            Some(value("", "c.bin", b"abc", |h| h.chunk_hash = wrong)),
        ),
        (
            "dotdot",
            Some(value("../../escape", "x.bin", b"abc", |_| {})),
        ),
        (
            "absolute",
            Some(value("/tmp/escape", "x.bin", b"abc", |_| {})),
        ),
        ("nul", Some(value("", "x\0.bin", b"abc", |_| {}))),
        (
            "huge count",
            Some(value("", "h.bin", b"abc", |h| h.n_total_chunks = 1 << 40)),
        ),
        (
            "index beyond",
            Some(value("", "i.bin", b"abc", |h| h.chunk_i = 5)),
        ),
        (
            "huge offset",
            Some(value("", "o.bin", b"abc", |h| h.offset = u64::MAX - 1)),
        ),
        (
            "state folder",
            Some(value(".openmsi/staging", "x.part", b"abc", |_| {})),
        ),
        ("tombstone", None),
    ];
    let producer: BaseProducer = producer_config(&broker).create().unwrap();
    for (name, payload) in &bad {
        let mut record = BaseRecord::<str, [u8]>::to(&topic).key(*name);
        if let Some(p) = payload {
            record = record.payload(p.as_slice());
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    // Valid chunk hashes, wrong whole-file hash: fails verification, final path untouched.
    let file_hash_wrong = value("", "wrong_file_hash.bin", b"abc", |h| h.file_hash = wrong);
    producer
        .send(BaseRecord::to(&topic).key("fh").payload(&file_hash_wrong))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();

    // A real file after all that still arrives.
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("good.bin"), 100_000, 9);
    common::upload(&cfg, &topic, None, &src.join("good.bin"), 4096);

    let out = work.path().join("nest").join("out");
    let run = || common::download_until_idle(&cfg, &topic, &out, "hostile-group");
    run()
        .code(1)
        .stdout(
            predicate::str::contains("1 file completed")
                .and(predicate::str::contains(format!(
                    "{} messages rejected",
                    bad.len()
                )))
                .and(predicate::str::contains("1 failed verification")),
        )
        .stderr(predicate::str::contains("offset"));
    assert_eq!(
        std::fs::read(out.join("good.bin")).unwrap(),
        std::fs::read(src.join("good.bin")).unwrap()
    );
    assert!(!out.join("wrong_file_hash.bin").exists());
    assert_eq!(common::rejected_kept(&out), bad.len());
    assert_eq!(common::failed_kept(&out), 1);
    // Nothing escaped: the only thing next to `out` is `out`, and nothing in /tmp/escape.
    let siblings: Vec<_> = std::fs::read_dir(work.path().join("nest"))
        .unwrap()
        .collect();
    assert_eq!(siblings.len(), 1);
    assert!(!std::path::Path::new("/tmp/escape/x.bin").exists());
    assert!(!work.path().join("escape").exists());

    // Offsets were committed: a restart reads nothing again and exits cleanly.
    run()
        .success()
        .stdout(predicate::str::contains("0 messages rejected"));
}

/// A bad message after the first chunk of an unfinished file is read again by the next run
/// (the committed offset waits at that file's first chunk, so another group member could take
/// it over); it is not reported or counted again, and the file completes once its last chunk
/// comes.
#[test]
fn bad_message_read_again_behind_an_unfinished_file_is_reported_once() {
    let TopicFixture {
        broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "reread", 1);
    let content: Vec<u8> = (0..2 * 4096u32).map(|i| (i * 5 % 249) as u8).collect();
    let chunk = |i: usize| ChunkSpec::of_file("later.bin", &content, 4096, i).encode();
    let producer: BaseProducer = producer_config(&broker).create().unwrap();
    let send = |v: &[u8]| {
        producer
            .send(BaseRecord::to(&topic).key("k").payload(v))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    send(&chunk(0));
    send(b"not a chunk at all");

    let out = work.path().join("out");
    let run = || common::download_until_idle(&cfg, &topic, &out, "reread-group");
    run()
        .code(1)
        .stdout(predicate::str::contains("1 message rejected"));
    run()
        .success()
        .stdout(predicate::str::contains("0 messages rejected"));
    assert!(!out.join("later.bin").exists());
    send(&chunk(1));
    run()
        .success()
        .stdout(predicate::str::contains("0 messages rejected"));
    assert_eq!(std::fs::read(out.join("later.bin")).unwrap(), content);
    assert_eq!(common::rejected_kept(&out), 1);
}

/// A requested stop exits 0 even after bad messages (a service manager must not mark a healthy
/// downloader failed); the summary still counts them. An --exit-when-idle run exits 1.
#[test]
fn quit_exits_0_after_bad_messages_while_an_idle_exit_reports_them() {
    let TopicFixture {
        broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "quit-status", 1);
    common::produce_values(&broker, &topic, &[b"not a chunk".to_vec()]);
    let out = work.path().join("out");
    let mut down = common::KillOnDrop(
        common::openmsi_std()
            .arg("download-directory")
            .arg(&out)
            .arg("--config")
            .arg(&cfg)
            .args(["--topic", &topic, "--group-id", "g"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(common::wait_for(Duration::from_secs(30), || {
        common::rejected_kept(&out) == 1
    }));
    let status = common::quit_and_wait(&mut down, Duration::from_secs(30));
    let mut stdout = String::new();
    std::io::Read::read_to_string(down.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status}: {stdout}");
    assert!(stdout.contains("1 message rejected"), "{stdout}");

    common::download_until_idle(&cfg, &topic, &work.path().join("again"), "other")
        .code(1)
        .stdout(predicate::str::contains("1 message rejected"));
}
