//! `openmsi s3-transfer` against a real S3 server (s3s-fs, which checks SigV4 signatures and
//! keeps each object as a plain file) and a real broker: objects byte for byte under
//! OpenMSIStream's key layout with their `sha512` metadata, multipart for large files, nothing
//! left behind locally or on the server, replays skipped, and the failures a user meets
//! (missing bucket, wrong secret, server down at start or mid-transfer, kill -9) each tested.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use common::{
    openmsi, openmsi_std, quit_and_wait, sha512_file, write_random_file, KillOnDrop, Storage,
    TopicFixture,
};
use openmsi::s3::client::S3Client;
use openmsi::s3::settings::S3Settings;

const BUCKET: &str = "lab-data";
const MIB: u64 = 1 << 20;

/// Uploads `file` (its folder relative to `root`) with upload-file.
fn upload(fx: &TopicFixture, file: &Path, root: &Path) {
    openmsi()
        .arg("upload-file")
        .arg(file)
        .arg("--config")
        .arg(&fx.cfg)
        .args(["--topic", &fx.topic])
        .arg("--root-dir")
        .arg(root)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
}

/// s3-transfer's arguments for this fixture and server, state in `state`.
fn transfer_args(fx: &TopicFixture, state: &Path, group: &str) -> Vec<String> {
    [
        "s3-transfer",
        BUCKET,
        "--config",
        fx.cfg.to_str().unwrap(),
        "--topic",
        &fx.topic,
        "--group-id",
        group,
        "--state-dir",
        state.to_str().unwrap(),
        "--part-size-mib",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// s3-transfer with `--exit-when-idle 3` and `extra`, run to its end.
fn transfer_until_idle(
    fx: &TopicFixture,
    state: &Path,
    group: &str,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    openmsi()
        .args(transfer_args(fx, state, group))
        .args(["--exit-when-idle", "3"])
        .args(extra)
        .timeout(Duration::from_secs(120))
        .assert()
}

/// The test's own S3 client, to HEAD objects.
fn client(server: &S3Server) -> S3Client {
    let settings = S3Settings {
        endpoint: server.endpoint().parse().unwrap(),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        secret_origin: "the test".into(),
    };
    S3Client::new(&settings, BUCKET, Duration::from_secs(5)).unwrap()
}

/// Object `key` holds exactly the bytes of `file`, and says so in its `sha512` metadata.
fn assert_object(server: &S3Server, key: &str, file: &Path) {
    let object = server.object(BUCKET, key);
    assert!(object.is_file(), "no object {key}\n{}", server.log());
    let sha = sha512_file(file);
    assert_eq!(
        sha512_file(&object),
        sha,
        "object {key} differs from its file"
    );
    let head = client(server)
        .head(key)
        .unwrap()
        .expect("HEAD found nothing");
    assert_eq!(head.size, std::fs::metadata(file).unwrap().len());
    assert_eq!(
        head.sha512.as_deref(),
        Some(sha.as_str()),
        "sha512 metadata of {key}"
    );
}

fn files_in(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    common::files_under(dir)
}

#[test]
fn files_become_verified_objects_under_openmsistreams_keys_and_a_replay_is_skipped() {
    let server = S3Server::start(BUCKET);
    let fx = TopicFixture::new(Storage::Memory, "s3", 2);
    server.add_to_config(&fx.cfg, SECRET_KEY);
    let src = fx.work.path().join("src");
    let small = src.join("run1/scan.json");
    let big = src.join("run1/deep/image.tif");
    let top = src.join("top.csv");
    let empty = src.join("empty.dat");
    write_random_file(&small, 100_000, 1);
    // 23 MiB in 5 MiB parts: a multipart upload of 5 parts, the last one short.
    write_random_file(&big, 23 * MIB, 2);
    write_random_file(&top, 3000, 3);
    std::fs::write(&empty, b"").unwrap();
    for f in [&small, &big, &top, &empty] {
        upload(&fx, f, &src);
    }
    let state = fx.work.path().join("state");
    let out = transfer_until_idle(&fx, &state, "create_new", &[]).success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("4 objects written"), "{stdout}");
    for (key, file) in [
        (format!("{}/run1/scan.json", fx.topic), &small),
        (format!("{}/run1/deep/image.tif", fx.topic), &big),
        (format!("{}/top.csv", fx.topic), &top),
        (format!("{}/empty.dat", fx.topic), &empty),
    ] {
        assert_object(&server, &key, file);
    }
    assert!(
        server.unfinished_uploads().is_empty(),
        "{:?}",
        server.unfinished_uploads()
    );
    // Nothing local is left: the outbox is empty once every object is confirmed.
    assert_eq!(files_in(&state.join("outbox")), Vec::<String>::new());

    // Another group reads the same versions again: every object is already there.
    let out =
        transfer_until_idle(&fx, &fx.work.path().join("state-2"), "create_new", &[]).success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        stdout.contains("0 objects written") && stdout.contains("4 already there"),
        "{stdout}"
    );

    // A changed file replaces its object.
    write_random_file(&top, 5000, 4);
    upload(&fx, &top, &src);
    transfer_until_idle(&fx, &fx.work.path().join("state-3"), "create_new", &[]).success();
    assert_object(&server, &format!("{}/top.csv", fx.topic), &top);

    // --key-prefix replaces `<topic>/`; --download-regex selects as in download-directory.
    transfer_until_idle(
        &fx,
        &fx.work.path().join("state-4"),
        "create_new",
        &[
            "--key-prefix",
            "archive/2026",
            "--download-regex",
            r"\.csv$",
        ],
    )
    .success();
    assert_object(&server, "archive/2026/top.csv", &top);
    assert!(!server
        .object(BUCKET, "archive/2026/run1/deep/image.tif")
        .exists());
}

/// One line on stderr, naming `needle`, and a failure, within `bound`.
fn fails_at_start(args: &[String], needle: &str, bound: Duration) {
    let started = Instant::now();
    let out = openmsi()
        .args(args)
        .args(["--exit-when-idle", "3"])
        .timeout(Duration::from_secs(60))
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "not one error line:\n{stderr}");
    assert!(errors[0].contains(needle), "no {needle:?} in:\n{stderr}");
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
}

#[test]
fn a_missing_bucket_a_wrong_secret_and_a_server_down_each_fail_at_start_in_one_line() {
    let server = S3Server::start(BUCKET);
    let fx = TopicFixture::new(Storage::Memory, "s3-bad", 1);
    let good = fx.cfg.clone();
    server.add_to_config(&good, SECRET_KEY);
    let state = fx.work.path().join("state");

    let mut args = transfer_args(&fx, &state, "create_new");
    args[1] = "no-such-bucket".into();
    fails_at_start(
        &args,
        "bucket \"no-such-bucket\" does not exist",
        Duration::from_secs(30),
    );

    let wrong = fx.work.path().join("wrong-secret.config");
    std::fs::copy(&fx.cfg, &wrong).unwrap();
    let text = std::fs::read_to_string(&wrong).unwrap().replace(
        &format!("secret_key_id = {SECRET_KEY}"),
        "secret_key_id = not-the-secret",
    );
    std::fs::write(&wrong, text).unwrap();
    let mut args = transfer_args(&fx, &state, "create_new");
    args[3] = wrong.to_str().unwrap().into();
    fails_at_start(&args, "secret_key_id", Duration::from_secs(30));

    server.stop();
    let mut args = transfer_args(&fx, &state, "create_new");
    args.extend(["--connect-timeout".into(), "5".into()]);
    fails_at_start(
        &args,
        "did not answer within --connect-timeout 5 s",
        Duration::from_secs(20),
    );
}

fn spawn_transfer(args: &[String], log: &Path) -> KillOnDrop {
    KillOnDrop(
        openmsi_std()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn parts_go_up_while_the_file_arrives_and_a_kill_leaks_no_upload_nor_a_partial_object() {
    let server = S3Server::start(BUCKET);
    let fx = TopicFixture::new(Storage::Memory, "s3-kill", 1);
    server.add_to_config(&fx.cfg, SECRET_KEY);
    let src = fx.work.path().join("src");
    let big = src.join("big.bin");
    let after = src.join("after.bin");
    write_random_file(&big, 60 * MIB, 5);
    write_random_file(&after, 2 * MIB, 6);
    upload(&fx, &big, &src);
    upload(&fx, &after, &src);
    let state = fx.work.path().join("state");
    let args = transfer_args(&fx, &state, "s3-kill-group");
    let log = fx.work.path().join("first.log");
    let mut first = spawn_transfer(&args, &log);
    // Killed once parts of the big file are on the server.
    assert!(
        common::wait_for(Duration::from_secs(60), || server
            .unfinished_uploads()
            .iter()
            .any(|n| n.contains(".part-"))),
        "no part was uploaded\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The parts go up while the file is still arriving (it is not rebuilt yet).
    let rebuilt = state.join("outbox/big.bin").exists();
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(
        !rebuilt,
        "the first part was sent only once the whole file was rebuilt"
    );
    assert!(!server
        .object(BUCKET, &format!("{}/big.bin", fx.topic))
        .exists());

    let out = transfer_until_idle(&fx, &state, "s3-kill-group", &[]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("aborted a multipart upload"), "{stderr}");
    assert_object(&server, &format!("{}/big.bin", fx.topic), &big);
    assert_object(&server, &format!("{}/after.bin", fx.topic), &after);
    assert!(
        server.unfinished_uploads().is_empty(),
        "leaked: {:?}",
        server.unfinished_uploads()
    );
    assert_eq!(files_in(&state.join("outbox")), Vec::<String>::new());
}

#[test]
fn a_server_down_mid_transfer_is_waited_for_and_the_transfer_resumes() {
    let server = S3Server::start(BUCKET);
    let fx = TopicFixture::new(Storage::Memory, "s3-down", 1);
    server.add_to_config(&fx.cfg, SECRET_KEY);
    let src = fx.work.path().join("src");
    let first_file = src.join("first.bin");
    write_random_file(&first_file, MIB, 7);
    upload(&fx, &first_file, &src);
    let state = fx.work.path().join("state");
    let args = transfer_args(&fx, &state, "s3-down-group");
    let log = fx.work.path().join("transfer.log");
    let mut transfer = spawn_transfer(&args, &log);
    let first_key = format!("{}/first.bin", fx.topic);
    assert!(
        common::wait_for(Duration::from_secs(60), || server
            .object(BUCKET, &first_key)
            .is_file()),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The server goes away; a file arrives meanwhile; the server comes back 8 s later.
    server.stop();
    let second = src.join("sub/second.bin");
    write_random_file(&second, 12 * MIB, 8);
    upload(&fx, &second, &src);
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        transfer.0.try_wait().unwrap().is_none(),
        "s3-transfer exited while the server was down"
    );
    server.restart();
    let second_key = format!("{}/sub/second.bin", fx.topic);
    assert!(
        common::wait_for(Duration::from_secs(90), || server
            .object(BUCKET, &second_key)
            .is_file()),
        "not uploaded after the server came back\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(quit_and_wait(&mut transfer, Duration::from_secs(30)).success());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("trying again"), "{log_text}");
    assert_object(&server, &first_key, &first_file);
    assert_object(&server, &second_key, &second);
    assert!(
        server.unfinished_uploads().is_empty(),
        "{:?}",
        server.unfinished_uploads()
    );
}

#[test]
fn openmsistreams_s3_transfer_and_openmsi_fill_buckets_the_same_from_one_config() {
    const REF_BUCKET: &str = "reference-bucket";
    let server = S3Server::start(BUCKET);
    std::fs::create_dir_all(server.root().join(REF_BUCKET)).unwrap();
    let fx = TopicFixture::new(Storage::Memory, "s3-ref", 1);
    server.add_to_config(&fx.cfg, SECRET_KEY);
    let src = fx.work.path().join("src");
    let files = [src.join("top.txt"), src.join("run7/xrd/pattern.bin")];
    write_random_file(&files[0], 2000, 9);
    write_random_file(&files[1], 3 * MIB + 17, 10);
    for f in &files {
        upload(&fx, f, &src);
    }
    // The reference, from the same config file, into its own bucket of the same server.
    let ref_log = fx.work.path().join("reference.log");
    let mut reference = KillOnDrop(
        common::reference_command("S3TransferStreamProcessor")
            .arg(REF_BUCKET)
            .arg("--config")
            .arg(&fx.cfg)
            .args(["--topic_name", &fx.topic])
            .current_dir(fx.work.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&ref_log).unwrap())
            .spawn()
            .expect("run S3TransferStreamProcessor"),
    );
    transfer_until_idle(&fx, &fx.work.path().join("state"), "create_new", &[]).success();
    let keys = [
        format!("{}/top.txt", fx.topic),
        format!("{}/run7/xrd/pattern.bin", fx.topic),
    ];
    let reference_done = common::wait_for(Duration::from_secs(90), || {
        keys.iter().zip(&files).all(|(k, f)| {
            let o = server.object(REF_BUCKET, k);
            o.is_file() && sha512_file(&o) == sha512_file(f)
        })
    });
    use std::io::Write as _;
    let _ = reference.stdin.take().unwrap().write_all(b"q\n");
    assert!(
        reference_done,
        "the reference did not fill its bucket\n{}",
        std::fs::read_to_string(&ref_log).unwrap_or_default()
    );
    for (key, file) in keys.iter().zip(&files) {
        assert_object(&server, key, file);
    }
    // Same keys in both buckets, nothing else.
    let listing = |bucket: &str| files_in(&server.root().join(bucket));
    assert_eq!(listing(BUCKET), listing(REF_BUCKET));
}

#[test]
fn a_server_error_on_one_part_is_retried_and_the_object_is_whole() {
    let server = S3Server::start(BUCKET);
    // Part 2 of the multipart upload is answered 500 the first time.
    let proxy = common::s3::FaultyProxy::start(server.port, "partNumber=2", 1);
    let fx = TopicFixture::new(Storage::Memory, "s3-500", 1);
    let mut text = std::fs::read_to_string(&fx.cfg).unwrap();
    text.push_str(&format!(
        "\n[s3]\nendpoint_url = http://127.0.0.1:{}\naccess_key_id = {ACCESS_KEY}\nsecret_key_id = {SECRET_KEY}\nregion = us-east-1\n",
        proxy.port
    ));
    std::fs::write(&fx.cfg, text).unwrap();
    let src = fx.work.path().join("src");
    let file = src.join("parts.bin");
    write_random_file(&file, 12 * MIB, 11);
    upload(&fx, &file, &src);
    let out = transfer_until_idle(&fx, &fx.work.path().join("state"), "create_new", &[]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(proxy.failed.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        stderr.contains("a part failed; sending it again"),
        "{stderr}"
    );
    assert_object(&server, &format!("{}/parts.bin", fx.topic), &file);
    assert!(server.unfinished_uploads().is_empty());
}

#[test]
fn a_key_the_server_refuses_is_reported_kept_and_the_stream_goes_on() {
    let server = S3Server::start(BUCKET);
    let fx = TopicFixture::new(Storage::Memory, "s3-key", 1);
    server.add_to_config(&fx.cfg, SECRET_KEY);
    let src = fx.work.path().join("src");
    let file = src.join("data.bin");
    write_random_file(&file, 1000, 12);
    upload(&fx, &file, &src);
    // S3 keys are at most 1024 bytes.
    let long_prefix = "p".repeat(1100);
    let state = fx.work.path().join("state");
    let out =
        transfer_until_idle(&fx, &state, "create_new", &["--key-prefix", &long_prefix]).failure();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stdout.contains("1 failed"), "{stdout}");
    assert!(
        stderr.contains("could NOT be put into the bucket"),
        "{stderr}"
    );
    // Kept, not lost.
    let kept = state.join("failed-uploads/data.bin");
    assert_eq!(sha512_file(&kept), sha512_file(&file));
}

#[test]
fn knot_format_files_addressed_to_this_host_are_transferred_and_others_skipped() {
    let server = S3Server::start(BUCKET);
    let fx = TopicFixture::new(Storage::Memory, "s3-knot", 1);
    server.add_to_config(&fx.cfg, SECRET_KEY);
    let src = fx.work.path().join("src");
    let ours = src.join("zones/lab.zone");
    let theirs = src.join("zones/other.zone");
    write_random_file(&ours, 70_000, 13);
    write_random_file(&theirs, 70_000, 14);
    for (file, host) in [(&ours, "resolver-1"), (&theirs, "resolver-2")] {
        openmsi()
            .arg("upload-file")
            .arg(file)
            .arg("--config")
            .arg(&fx.cfg)
            .args(["--topic", &fx.topic, "--format", "knot", "--to-host", host])
            .args(["--chunk-size", "32768"])
            .arg("--root-dir")
            .arg(&src)
            .timeout(Duration::from_secs(60))
            .assert()
            .success();
    }
    transfer_until_idle(
        &fx,
        &fx.work.path().join("state"),
        "create_new",
        &["--format", "knot", "--host", "resolver-1"],
    )
    .success();
    let listing = files_in(&server.root().join(BUCKET));
    assert_eq!(listing.len(), 1, "{listing:?}");
    let key = format!(
        "{}/{}",
        fx.topic,
        listing[0].trim_start_matches(&format!("{}/", fx.topic))
    );
    assert!(key.ends_with("lab.zone"), "{key}");
    assert_eq!(
        sha512_file(&server.object(BUCKET, &key)),
        sha512_file(&ours)
    );
}

/// The messages of partition 0 of `topic`: (key, value), until `n` were read.
fn read_messages(fx: &TopicFixture, topic: &str, n: usize) -> Vec<(String, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = common::consumer_config(&fx.broker, "results-reader")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            got.push((text(m.key()), text(m.payload())));
        }
    }
    got
}

#[test]
fn on_file_runs_on_the_local_copy_once_the_object_is_confirmed_and_its_output_is_a_result() {
    let server = S3Server::start(BUCKET);
    let fx = TopicFixture::new(Storage::Memory, "s3-hooks", 1);
    server.add_to_config(&fx.cfg, SECRET_KEY);
    let results = format!("{}-results", fx.topic);
    fx.broker.create_topic(&results, 1);
    let src = fx.work.path().join("src");
    let small = src.join("run1/scan.json");
    // 12 MiB in 5 MiB parts: streamed while it arrives.
    let big = src.join("run1/big.raw");
    let bad = src.join("bad.txt");
    write_random_file(&small, 100_000, 21);
    write_random_file(&big, 12 * MIB, 22);
    write_random_file(&bad, 10, 23);
    for f in [&small, &big, &bad] {
        upload(&fx, f, &src);
    }
    // The command checks that the object is already in the bucket (s3s-fs keeps it as a
    // plain file) and prints the key and the SHA-512 of the local copy it was given.
    let bucket_root = server.object(BUCKET, "");
    let hook = format!(
        r#"sh -c 'case "$OPENMSI_RELATIVE_PATH" in bad*) exit 3;; esac; test -f "{}/$OPENMSI_S3_KEY" || exit 4; printf "{{\"bucket\": \"%s\", \"key\": \"%s\", \"sha512\": \"%s\"}}" "$OPENMSI_S3_BUCKET" "$OPENMSI_S3_KEY" "$(sha512sum < "$OPENMSI_FILE" | cut -d" " -f1)"' hook"#,
        bucket_root.display()
    );
    let state = fx.work.path().join("state");
    let out = transfer_until_idle(
        &fx,
        &state,
        "hooks-group",
        &["--on-file", &hook, "--result-topic", &results],
    )
    .failure();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stdout.contains("3 objects written")
            && stdout.contains("1 hook failed")
            && stdout.contains("2 results sent"),
        "{stdout}\n{stderr}"
    );
    for (rel, file) in [
        ("run1/scan.json", &small),
        ("run1/big.raw", &big),
        ("bad.txt", &bad),
    ] {
        assert_object(&server, &format!("{}/{rel}", fx.topic), file);
    }
    let mut got = read_messages(&fx, &results, 2);
    got.sort();
    let expected = |rel: &str, file: &Path| {
        (
            format!("{}_chunk_processing_result", rel.replace('/', "_")),
            format!(
                r#"{{"bucket": "{BUCKET}", "key": "{}/{rel}", "sha512": "{}"}}"#,
                fx.topic,
                sha512_file(file)
            ),
        )
    };
    assert_eq!(
        got,
        [
            expected("run1/big.raw", &big),
            expected("run1/scan.json", &small)
        ]
    );
    // Every local copy is gone once its command ran (the failed one's too).
    assert_eq!(files_in(&state.join("outbox")), Vec::<String>::new());
}

#[test]
fn a_command_due_at_a_kill_runs_once_after_the_restart_on_its_kept_copy() {
    let server = S3Server::start(BUCKET);
    let fx = TopicFixture::new(Storage::Memory, "s3-hook-kill", 1);
    server.add_to_config(&fx.cfg, SECRET_KEY);
    let src = fx.work.path().join("src");
    let file = src.join("run2/frame.bin");
    write_random_file(&file, 300_000, 31);
    upload(&fx, &file, &src);
    let marks = fx.work.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // First run: the command marks that it started, then hangs until killed.
    let slow = format!(
        r#"sh -c 'touch "{}/started"; sleep 60' slow"#,
        marks.display()
    );
    let state = fx.work.path().join("state");
    let mut args = transfer_args(&fx, &state, "hook-kill-group");
    args.extend(["--on-file".to_string(), slow]);
    let log = fx.work.path().join("first.log");
    let mut first = spawn_transfer(&args, &log);
    assert!(
        common::wait_for(Duration::from_secs(60), || marks.join("started").exists()),
        "the command never started\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    // The object was confirmed before the command became due; the copy is kept for it.
    assert_object(&server, &format!("{}/run2/frame.bin", fx.topic), &file);
    assert_eq!(files_in(&state.join("outbox")), ["run2/frame.bin"]);

    // After the restart the command runs once, on the kept copy, and the copy goes.
    let counting = format!(
        r#"sh -c 'cmp -s "$OPENMSI_FILE" "{}" && echo "$OPENMSI_S3_KEY" >> "{}/ran"' count"#,
        file.display(),
        marks.display()
    );
    let out =
        transfer_until_idle(&fx, &state, "hook-kill-group", &["--on-file", &counting]).success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    // Nothing was uploaded again: the copy was the runner's, not a leftover to upload.
    assert!(stdout.contains("0 objects written"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(
        std::fs::read_to_string(marks.join("ran")).unwrap_or_default(),
        format!("{}/run2/frame.bin\n", fx.topic),
        "{stderr}"
    );
    assert_eq!(files_in(&state.join("outbox")), Vec::<String>::new());
}
