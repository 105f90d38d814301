//! On a broker that auto-creates topics (a stock Apache Kafka with its default
//! `auto.create.topics.enable=true`, and the quick start's prebuilt tansu), no command may create
//! a topic by naming it: a typo in `--topic` is refused in one line, and nothing is created.
//! The source-built tansu never auto-creates, so these tests use the prebuilt one.

mod common;

use std::time::Duration;

use common::{write_config, Broker, Storage};

fn run(args: &[&str]) -> std::process::Output {
    common::run_openmsi(args)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The topics the broker has, through a request that cannot create one (a list of all).
fn listed(cfg: &str) -> Vec<String> {
    common::topics_listed(cfg)
}

/// Asserts that `out` failed with exit code 1 and one line saying `topic` is missing.
fn assert_missing(what: &str, out: &std::process::Output, topic: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert!(
        err.contains(&format!("topic `{topic}` does not exist")),
        "{what}: {err}"
    );
}

#[test]
fn no_command_creates_a_topic_by_naming_it() {
    let broker = Broker::start(Storage::Prebuilt);
    let work = tempfile::tempdir().unwrap();
    let cfg_path = write_config(work.path(), &broker);
    let cfg = cfg_path.to_str().unwrap();

    // The broker does auto-create: a plain client that allows it creates a topic by asking.
    {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = common::consumer_config(&broker, "probe")
            .set("allow.auto.create.topics", "true")
            .create()
            .unwrap();
        let created = common::wait_for(Duration::from_secs(20), || {
            consumer
                .fetch_metadata(Some("proof"), Duration::from_secs(5))
                .is_ok_and(|m| m.topics().iter().any(|t| !t.partitions().is_empty()))
        });
        assert!(created, "this broker was expected to auto-create topics");
        assert!(listed(cfg).contains(&"proof".to_string()));
    }
    let out = run(&["topic", "create", "real", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));

    let file = work.path().join("scan.tif");
    std::fs::write(&file, b"data").unwrap();
    let file = file.to_str().unwrap();
    let up = run(&["upload-file", file, "--config", cfg, "--topic", "reel"]);
    assert_missing("upload-file --topic reel", &up, "reel");

    // upload-directory without --topic: the default topic, which this cluster does not have.
    let watched = work.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    let updir = run(&[
        "upload-directory",
        watched.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert_missing("upload-directory", &updir, "openmsistream");

    let out_dir = work.path().join("out");
    let down = run(&[
        "download-directory",
        out_dir.to_str().unwrap(),
        "--config",
        cfg,
        "--topic",
        "reel",
    ]);
    assert_missing("download-directory --topic reel", &down, "reel");

    let describe = run(&["topic", "describe", "nosuch", "--config", cfg]);
    assert_missing("topic describe nosuch", &describe, "nosuch");
    let delete = run(&["topic", "delete", "nosuch", "--yes", "--config", cfg]);
    assert_missing("topic delete nosuch", &delete, "nosuch");
    assert!(!String::from_utf8_lossy(&delete.stdout).contains("deleted"));

    let topics = listed(cfg);
    for name in ["reel", "openmsistream", "nosuch"] {
        assert!(
            !topics.contains(&name.to_string()),
            "{name} was created: {topics:?}"
        );
    }
    assert!(topics.contains(&"real".to_string()), "{topics:?}");
    // And the real topic still works for the same commands.
    let up = run(&["upload-file", file, "--config", cfg, "--topic", "real"]);
    assert!(up.status.success(), "{}", stderr(&up));
}
