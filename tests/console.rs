//! The operator console of download-directory: `check` prints a status, `quit` and SIGTERM
//! stop it cleanly with exit code 0.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{
    openmsi_std, unique_topic, wait_exit, wait_for, write_config, Broker, KillOnDrop, Storage,
};

fn start(broker: &Broker, dir: &std::path::Path) -> KillOnDrop {
    let topic = unique_topic("console");
    broker.create_topic(&topic, 1);
    let cfg = write_config(dir, broker);
    let child = openmsi_std()
        .arg("download-directory")
        .arg(dir.join("out"))
        .arg("--config")
        .arg(&cfg)
        .args(["--topic", &topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

#[test]
fn check_prints_status_and_quit_exits_cleanly() {
    let broker = Broker::start(Storage::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let mut child = start(&broker, dir.path());
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let mut stdin = child.0.stdin.take().unwrap();
    // Typed before the consumer is even connected: still answered.
    writeln!(stdin, "check").unwrap();
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no answer to check");
    assert!(
        line.contains("files completed") && line.contains("messages read"),
        "{line}"
    );
    writeln!(stdin, "bogus").unwrap();
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(line.contains("unknown command"), "{line}");
    writeln!(stdin, "quit").unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let summary: Vec<String> = rx.try_iter().collect();
    assert!(
        summary.iter().any(|l| l.starts_with("downloaded:")),
        "{summary:?}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_shuts_down_cleanly() {
    let broker = Broker::start(Storage::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let mut child = start(&broker, dir.path());
    // Wait until it has set up its state folder (it is running), then signal.
    assert!(wait_for(Duration::from_secs(20), || dir
        .path()
        .join("out/.openmsi/staging")
        .is_dir()));
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.0.id() as libc::pid_t;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}
