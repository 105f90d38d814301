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

/// Each command's thread count has a name that says what the threads do; the old
/// `--n-threads` still parses everywhere. The common flags (`--config`, `--topic`) come first
/// in `--help`.
#[test]
fn thread_flags_say_what_they_count_and_common_flags_come_first() {
    let help = |command: &str| {
        let out = openmsi().args([command, "--help"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (command, flag) in [
        ("upload-file", "--hash-threads"),
        ("upload-directory", "--files-at-once"),
        ("download-directory", "--verify-threads"),
    ] {
        let text = help(command);
        assert!(text.contains(flag), "{command}: {text}");
        let config = text.find("--config").unwrap();
        let topic = text.find("--topic").unwrap();
        let first_other = ["--host", "--to-host", "--validate", "--chunk-size"]
            .iter()
            .filter_map(|f| text.find(f))
            .min()
            .unwrap();
        assert!(
            config < first_other && topic < first_other,
            "{command}: {text}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for (command, old) in [
        ("upload-directory", "--n-threads"),
        ("download-directory", "--n-threads"),
        ("download-directory", "--n_threads"),
    ] {
        openmsi()
            .arg(command)
            .arg(dir.path())
            .args([old, "2", "--config", "/nonexistent/none.config"])
            .assert()
            .failure()
            .stderr(predicate::str::contains("unexpected argument").not());
    }
    // serve-keys defaults to the same topic as every other command.
    let text = help("serve-keys");
    assert!(text.contains("[default: openmsistream]"), "{text}");
    // topic create: settings have their own flag, and the old spelling is explained.
    let text = help("topic");
    assert!(text.contains("create"), "{text}");
    let out = openmsi()
        .args(["topic", "create", "t", "--config", "retention.ms=1000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--topic-config KEY=VALUE"), "{stderr}");
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
fn missing_file_is_reported_with_its_cause_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.config");
    std::fs::write(&cfg, "[broker]\nbootstrap.servers = 127.0.0.1:1\n").unwrap();
    let out = openmsi()
        .arg("upload-file")
        .arg(dir.path().join("missing.tif"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.tif"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A folder this user may not write: the error names that folder (the cause), not the path
/// that could not be made inside it, and says the cause once.
#[test]
fn an_unwritable_output_folder_is_named_as_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.config");
    std::fs::write(&cfg, "[broker]\nbootstrap.servers = 127.0.0.1:1\n").unwrap();
    let parent = dir.path().join("locked");
    std::fs::create_dir(&parent).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(dir.path(), 0o755);
        mode(&parent, 0o555);
        mode(&cfg, 0o644);
    }
    let out = common::openmsi_unprivileged()
        .arg("download-directory")
        .arg(parent.join("out"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("this user may not write in {}", parent.display())),
        "{stderr}"
    );
    assert_eq!(stderr.matches("ermission denied").count(), 1, "{stderr}");
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

/// "Connection refused" on every bootstrap address is certain at once: every command says it
/// within a second or so (not after --connect-timeout), in the same words.
#[test]
fn a_refused_connection_is_reported_at_once_in_the_same_words_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = unreachable_broker_config(dir.path());
    let file = dir.path().join("x");
    std::fs::write(&file, b"x").unwrap();
    let watched = dir.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    let cfg = cfg.to_str().unwrap();
    let file = file.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let watched = watched.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["upload-file", file],
        &["upload-directory", watched],
        &["download-directory", out],
        &["topic", "list"],
        &["topic", "describe", "t"],
    ];
    let expected = format!(
        "cannot connect to Kafka at 127.0.0.1:{port}: nothing accepts connections there (connection refused)"
    );
    for command in commands {
        let started = Instant::now();
        let output = openmsi()
            .args(command)
            .args(["--config", cfg, "--connect-timeout", "30"])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(stderr.contains(&expected), "{command:?}: {stderr}");
        // Well under the 30 s timeout; generous for a loaded 2-core machine (it takes ~0.5 s).
        assert!(took < Duration::from_secs(5), "{command:?} took {took:?}");
    }
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

/// Where systemd is not the service manager (a container, WSL1; these test machines: PID 1 is
/// not systemd), `manage-service install` says so in one line before it checks or writes
/// anything, and leaves no folder behind.
#[cfg(target_os = "linux")]
#[test]
fn manage_service_without_systemd_says_so_in_one_line_and_changes_nothing() {
    assert!(
        !std::path::Path::new("/run/systemd/system").exists(),
        "this test needs a machine not booted with systemd (the service tests boot their own in a sandbox)"
    );
    let home = tempfile::tempdir().unwrap();
    let watched = home.path().join("drop");
    std::fs::create_dir(&watched).unwrap();
    let system_dir_existed = std::path::Path::new("/etc/openmsi/services").exists();
    for scope in [&["--user"][..], &[][..]] {
        let out = openmsi()
            .env("HOME", home.path())
            .args(["manage-service", "install", "dropbox"])
            .args(scope)
            .args(["--", "upload-directory"])
            .arg(&watched)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("systemd is not running on this machine"),
            "{stderr}"
        );
        assert!(!home.path().join(".config").exists(), "{scope:?}");
        assert_eq!(
            std::path::Path::new("/etc/openmsi/services").exists(),
            system_dir_existed
        );
    }
    let out = openmsi().args(["manage-service", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("systemd is not running"));
}
