//! One process per folder: a second download-directory on an output folder, or a second
//! upload-directory on a watched folder, is refused at once (exit 1) with an error naming the
//! folder and the pid holding it; after the holder is killed with SIGKILL the folder is free.

mod common;

use common::TopicFixture;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{openmsi_std, wait_for, KillOnDrop, Storage};

/// `openmsi <command> FOLDER --config CFG --topic T [extra]`, running until killed.
fn spawn(command: &str, folder: &Path, cfg: &Path, topic: &str, extra: &[&str]) -> KillOnDrop {
    KillOnDrop(
        openmsi_std()
            .arg(command)
            .arg(folder)
            .arg("--config")
            .arg(cfg)
            .args(["--topic", topic])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits until `pid` holds the lock of `folder` (it writes its pid once it has the lock).
fn wait_for_holder(folder: &Path, pid: u32) {
    let lock = folder.join(".openmsi/lock");
    let held = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&format!("pid {pid} ")))
    });
    assert!(
        held,
        "pid {pid} did not take {} within 20 s: {:?}",
        lock.display(),
        std::fs::read_to_string(&lock)
    );
}

/// Runs a second `command` on `folder` and checks it is refused naming the folder and `pid`.
fn assert_refused(command: &str, folder: &Path, cfg: &Path, topic: &str, extra: &[&str], pid: u32) {
    let out = common::openmsi()
        .arg(command)
        .arg(folder)
        .arg("--config")
        .arg(cfg)
        .args(["--topic", topic])
        .args(extra)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
    assert!(
        stderr.contains(&folder.display().to_string()),
        "the error does not name the folder: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {pid} ")),
        "the error does not name the holder's pid {pid}: {stderr}"
    );
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[test]
fn a_second_downloader_on_one_output_folder_is_refused() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "lock-down", 1);
    let out = work.path().join("out");

    let mut first = spawn("download-directory", &out, &cfg, &topic, &[]);
    wait_for_holder(&out, first.id());
    assert_refused(
        "download-directory",
        &out,
        &cfg,
        &topic,
        &["--exit-when-idle", "1"],
        first.id(),
    );
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first downloader stopped"
    );

    // The kernel releases the lock of a killed process: a restart is never blocked.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let second = spawn("download-directory", &out, &cfg, &topic, &[]);
    wait_for_holder(&out, second.id());
}

#[test]
fn a_second_uploader_on_one_watched_folder_is_refused() {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(Storage::Sqlite, "lock-up", 1);
    let watched = work.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();

    let mut first = spawn("upload-directory", &watched, &cfg, &topic, &[]);
    wait_for_holder(&watched, first.id());
    assert_refused("upload-directory", &watched, &cfg, &topic, &[], first.id());
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first uploader stopped"
    );

    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let second = spawn("upload-directory", &watched, &cfg, &topic, &[]);
    wait_for_holder(&watched, second.id());
}
