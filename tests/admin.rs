//! `openmsi topic` and `openmsi user` against the real broker (tansu), through the same config
//! files as every other command.

mod common;

use std::time::Duration;

use common::{openmsi, write_config, Broker, Security, Storage, Tls};

fn run(args: &[&str]) -> std::process::Output {
    common::run_openmsi(args)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn listed(cfg: &str) -> Vec<String> {
    common::topics_listed(cfg)
}

#[test]
fn create_is_idempotent_names_differences_and_sizes_max_message_bytes() {
    let broker = Broker::start(Storage::Memory);
    let work = tempfile::tempdir().unwrap();
    let cfg = write_config(work.path(), &broker);
    let cfg = cfg.to_str().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec!["topic", "create", "xrd", "--config", cfg];
        args.extend_from_slice(extra);
        run(&args)
    };
    let first = create(&[
        "--partitions",
        "3",
        "--topic-config",
        "retention.ms=604800000",
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("created topic xrd: 3 partition(s)"));
    // Scripts re-run it: the same settings are not an error.
    let again = create(&[
        "--partitions",
        "3",
        "--topic-config",
        "retention.ms=604800000",
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("already exists with these settings"));
    // Other settings: the error says what differs.
    let other = create(&["--partitions", "2", "--topic-config", "retention.ms=1000"]);
    assert!(!other.status.success());
    let err = stderr(&other);
    assert!(err.contains("3 partition(s), not 2"), "{err}");
    assert!(err.contains("retention.ms is 604800000, not 1000"), "{err}");
    // max.message.bytes fits a chunk message of the default chunk size (512 KiB).
    let out = run(&["topic", "describe", "xrd", "--json", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let max: usize = report["configs"]["max.message.bytes"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(max > 512 * 1024, "{max}");
    assert_eq!(report["partitions"].as_array().unwrap().len(), 3);
    // A value too small for the chunk size is refused before anything is created.
    let small = run(&[
        "topic",
        "create",
        "tiny",
        "--config",
        cfg,
        "--topic-config",
        "max.message.bytes=1000",
    ]);
    assert!(!small.status.success());
    assert!(stderr(&small).contains("too small"), "{}", stderr(&small));
    assert!(!listed(cfg).contains(&"tiny".to_string()));
}

#[test]
fn encrypted_topics_get_their_key_exchange_topics_and_delete_asks_first() {
    // The memory engine: tansu 0.6.0's sqlite engine deletes every topic on DeleteTopics.
    let broker = Broker::start(Storage::Memory);
    let work = tempfile::tempdir().unwrap();
    let cfg = write_config(work.path(), &broker);
    let cfg = cfg.to_str().unwrap();
    let out = run(&["topic", "create", "sealed", "--encrypted", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["topic", "create", "other", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let topics = listed(cfg);
    for t in [
        "sealed",
        "sealed.keys",
        "sealed.reqs",
        "sealed.subs",
        "other",
    ] {
        assert!(topics.contains(&t.to_string()), "{t} missing: {topics:?}");
    }
    let out = run(&[
        "topic",
        "describe",
        "sealed.keys",
        "--json",
        "--config",
        cfg,
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["configs"]["cleanup.policy"], "compact");

    // No terminal and no --yes: refused, nothing deleted.
    let refused = run(&["topic", "delete", "other", "--config", cfg]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert!(listed(cfg).contains(&"other".to_string()));
    let out = run(&["topic", "delete", "other", "--yes", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let topics = listed(cfg);
    assert!(!topics.contains(&"other".to_string()), "{topics:?}");
    assert!(topics.contains(&"sealed".to_string()), "{topics:?}");
    let missing = run(&["topic", "delete", "other", "--yes", "--config", cfg]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn describe_shows_offsets_and_the_lag_of_each_group() {
    let broker = Broker::start(Storage::Sqlite);
    let work = tempfile::tempdir().unwrap();
    let cfg_path = write_config(work.path(), &broker);
    let cfg = cfg_path.to_str().unwrap();
    let out = run(&[
        "topic",
        "create",
        "runs",
        "--partitions",
        "2",
        "--config",
        cfg,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = work.path().join("a.bin");
    common::write_random_file(&file, 200_000, 1);
    common::upload(&cfg_path, "runs", None, &file, 65_536);
    common::download_until_idle(&cfg_path, "runs", &work.path().join("out"), "readers").success();
    // One more file the group has not read: lag 1 on its partition.
    let later = work.path().join("b.bin");
    common::write_random_file(&later, 1000, 2);
    common::upload(&cfg_path, "runs", None, &later, 65_536);

    let out = run(&["topic", "describe", "runs", "--json", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ends: i64 = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(ends, 5, "4 chunks + 1: {report}");
    let groups = report["groups"].as_array().unwrap();
    let readers = groups
        .iter()
        .find(|g| g["group"] == "readers")
        .unwrap_or_else(|| panic!("group missing: {report}"));
    assert_eq!(readers["total_lag"], 1, "{report}");

    let table = run(&["topic", "describe", "runs", "--config", cfg]);
    let text = stdout(&table);
    assert!(text.contains("partition  leader  replicas"), "{text}");
    assert!(text.contains("readers: lag 1"), "{text}");
}

#[test]
fn a_user_added_can_transfer_files_and_a_removed_one_cannot() {
    let certs = tempfile::tempdir().unwrap();
    let made = std::process::Command::new(common::repo_root().join("scripts/test-certs.sh"))
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(made.status.success());
    let broker = Broker::start_secured(
        Storage::Sqlite,
        Security {
            tls: Some(Tls {
                cert: certs.path().join("server.pem"),
                key: certs.path().join("server.key"),
                client_ca: None,
                port: 0,
            }),
            users: vec![("admin".into(), "admin-pw".into(), "scram512".into())],
            topics: vec![("t".into(), 1)],
        },
    );
    let work = tempfile::tempdir().unwrap();
    let config_for = |user: &str, password: &str| {
        let path = work.path().join(format!("{user}.config"));
        std::fs::write(
            &path,
            format!(
                "[broker]\nbootstrap.servers = {}\nsecurity.protocol = SASL_SSL\n\
                 ssl.ca.location = {}\nsasl.mechanism = SCRAM-SHA-512\n\
                 sasl.username = {user}\nsasl.password = {password}\n[producer]\n[consumer]\n",
                broker.bootstrap(),
                certs.path().join("ca.pem").display()
            ),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    let admin = config_for("admin", "admin-pw");
    let added = openmsi()
        .args([
            "user",
            "add",
            "lab",
            "--password-env",
            "LAB_PW",
            "--config",
            &admin,
        ])
        .env("LAB_PW", "lab password")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", stderr(&added));

    let lab = config_for("lab", "lab password");
    let file = work.path().join("x.bin");
    common::write_random_file(&file, 100_000, 3);
    let up = run(&[
        "upload-file",
        file.to_str().unwrap(),
        "--config",
        &lab,
        "--topic",
        "t",
    ]);
    assert!(up.status.success(), "{}", stderr(&up));

    let removed = run(&["user", "remove", "lab", "--config", &admin]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let refused = run(&[
        "upload-file",
        file.to_str().unwrap(),
        "--config",
        &lab,
        "--topic",
        "t",
        "--connect-timeout",
        "5",
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("SASL authentication failed"),
        "{}",
        stderr(&refused)
    );

    // No password source: refused without asking.
    let no_password = openmsi()
        .args(["user", "add", "x", "--config", &admin])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(!no_password.status.success());
    assert!(stderr(&no_password).contains("--password-env"));
}
