//! Command-line behaviour a user sees without a working broker: help, versions, argument
//! validation, and the errors for bad configs, missing files and unreachable brokers.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::openmsi;
use predicates::prelude::*;

#[test]
fn version_and_help_describe_every_flag() {
    openmsi()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
    openmsi()
        .args(["upload-file", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("--chunk-size")
                .and(predicate::str::contains("524288"))
                .and(predicate::str::contains("--topic"))
                .and(predicate::str::contains("--config"))
                .and(predicate::str::contains("--wire-fields"))
                .and(predicate::str::contains("--root-dir")),
        );
    openmsi()
        .args(["download-directory", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("--group-id")
                .and(predicate::str::contains("--download-regex"))
                .and(predicate::str::contains("--exit-when-idle")),
        );
    openmsi()
        .args(["upload-directory", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("--upload-existing")
                .and(predicate::str::contains("--upload-regex"))
                .and(predicate::str::contains("--settle-seconds"))
                .and(predicate::str::contains("--rescan-seconds"))
                .and(predicate::str::contains("--poll"))
                .and(predicate::str::contains("--update-seconds"))
                .and(predicate::str::contains("--heartbeat-topic")),
        );
    // Only working subcommands are listed; the service host and check are hidden.
    openmsi().arg("--help").assert().success().stdout(
        predicate::str::contains("upload-directory")
            .and(predicate::str::contains("manage-service"))
            .and(predicate::str::contains("provision-node"))
            .and(predicate::str::contains("serve-keys")),
    );
    openmsi()
        .args(["provision-node", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("--node-id")
                .and(predicate::str::contains("--role"))
                .and(predicate::str::contains("--topics"))
                .and(predicate::str::contains("--rot-password-file"))
                .and(predicate::str::contains("--new-root-key")),
        );
    openmsi()
        .args(["manage-service", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("install")
                .and(predicate::str::contains("status"))
                .and(predicate::str::contains("logs"))
                .and(predicate::str::contains("remove"))
                .and(predicate::str::contains("list"))
                .and(
                    predicate::str::is_match(r"(?m)^\s+(host|check)\s")
                        .unwrap()
                        .not(),
                ),
        );
}

#[test]
fn bad_chunk_size_is_rejected_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    for bad in ["0", "1000", "-4", "lots"] {
        openmsi()
            .arg("upload-file")
            .arg(&file)
            .arg(format!("--chunk-size={bad}"))
            .assert()
            .code(2)
            .stderr(predicate::str::contains("chunk"));
    }
}

#[test]
fn underscore_aliases_of_openmsistream_are_accepted() {
    // Parsing succeeds (the failure is the missing config, not an unknown flag).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    openmsi()
        .arg("upload-file")
        .arg(&file)
        .args([
            "--topic_name",
            "t",
            "--chunk_size",
            "4096",
            "--n_threads",
            "2",
        ])
        .args(["--config", "/nonexistent/none.config"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unexpected argument").not());
    openmsi()
        .arg("download-directory")
        .arg(dir.path())
        .args([
            "--topic_name",
            "t",
            "--consumer_group_id",
            "g",
            "--download_regex",
            ".*",
        ])
        .args(["--config", "/nonexistent/none.config"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unexpected argument").not());
}

#[test]
fn missing_config_lists_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    openmsi()
        .arg("upload-file")
        .arg(&file)
        .args(["--config", "no_such_config_name"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no_such_config_name"));
}

#[test]
fn config_syntax_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.config");
    std::fs::write(
        &cfg,
        "[broker]\nbootstrap.servers = 127.0.0.1:1\nthis line has no delimiter\n",
    )
    .unwrap();
    let file = dir.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    openmsi()
        .arg("upload-file")
        .arg(&file)
        .arg("--config")
        .arg(&cfg)
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad.config").and(predicate::str::contains("3")));
}

#[test]
fn unset_environment_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("env.config");
    std::fs::write(
        &cfg,
        "[broker]\nbootstrap.servers = $OPENMSI_TEST_SURELY_UNSET_VAR\n",
    )
    .unwrap();
    let file = dir.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    openmsi()
        .arg("upload-file")
        .arg(&file)
        .arg("--config")
        .arg(&cfg)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("OPENMSI_TEST_SURELY_UNSET_VAR")
                .and(predicate::str::contains("env.config")),
        );
}

#[test]
fn property_rejected_by_librdkafka_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prop.config");
    std::fs::write(
        &cfg,
        "[broker]\nbootstrap.servers = 127.0.0.1:1\n\n[producer]\nno.such.property = 5\n",
    )
    .unwrap();
    let file = dir.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    openmsi()
        .arg("upload-file")
        .arg(&file)
        .arg("--config")
        .arg(&cfg)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("no.such.property")
                .and(predicate::str::contains("prop.config"))
                .and(predicate::str::contains("line 5")),
        );
}

#[test]
fn missing_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.config");
    std::fs::write(&cfg, "[broker]\nbootstrap.servers = 127.0.0.1:1\n").unwrap();
    openmsi()
        .arg("upload-file")
        .arg(dir.path().join("missing.tif"))
        .arg("--config")
        .arg(&cfg)
        .assert()
        .failure()
        .stderr(predicate::str::contains("missing.tif"));
}

/// `DIR/c.config` naming a broker on a 127.0.0.1 port nothing listens on, and that port.
fn unreachable_broker_config(dir: &std::path::Path) -> (std::path::PathBuf, u16) {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.join("c.config");
    std::fs::write(
        &cfg,
        format!("[broker]\nbootstrap.servers = 127.0.0.1:{port}\n"),
    )
    .unwrap();
    (cfg, port)
}

#[test]
fn unreachable_broker_fails_within_the_timeout_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = unreachable_broker_config(dir.path());
    let file = dir.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    let started = Instant::now();
    openmsi()
        .arg("upload-file")
        .arg(&file)
        .arg("--config")
        .arg(&cfg)
        .args(["--connect-timeout", "2"])
        .timeout(Duration::from_secs(30))
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!("127.0.0.1:{port}")));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    let out = tempfile::tempdir().unwrap();
    openmsi()
        .arg("download-directory")
        .arg(out.path())
        .arg("--config")
        .arg(&cfg)
        .args(["--connect-timeout", "2"])
        .timeout(Duration::from_secs(30))
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!("127.0.0.1:{port}")));
}

/// Log lines to a file, a pipe or a service manager's journal carry no colour codes (only a
/// terminal gets them).
#[test]
fn log_lines_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = unreachable_broker_config(dir.path());
    let out = openmsi()
        .arg("download-directory")
        .arg(dir.path().join("out"))
        .arg("--config")
        .arg(&cfg)
        .args(["--connect-timeout", "1", "--log-level", "debug"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(" DEBUG "),
        "no log lines to check: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "colour codes in: {stderr}");
}
