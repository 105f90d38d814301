//! systemd's notify protocol, as a service manager sees it: a datagram socket named by
//! `NOTIFY_SOCKET`. The long-running commands say READY=1 once connected and watching, send
//! WATCHDOG=1 keep-alives while running (`WATCHDOG_USEC`), report their status line, and say
//! STOPPING=1 on `quit` before exiting 0. (The same commands under a real systemd are issue 12's
//! manage-service tests.)
#![cfg(unix)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{openmsi_std, quit_and_wait, KillOnDrop, TopicFixture};

/// Reads datagrams from `socket` for `how_long`.
fn collect(socket: &UnixDatagram, how_long: Duration, into: &mut Vec<String>) {
    let deadline = Instant::now() + how_long;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            into.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            );
        }
    }
}

fn check_command(args: &[&str], status_word: &str) {
    let TopicFixture {
        broker: _broker,
        topic,
        work,
        cfg,
    } = TopicFixture::new(common::Storage::Sqlite, "notify", 1);
    let socket_path = work.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let target = work.path().join("folder");
    std::fs::create_dir_all(&target).unwrap();
    let mut child = KillOnDrop(
        openmsi_std()
            .args(args)
            .arg(&target)
            .arg("--config")
            .arg(&cfg)
            .args(["--topic", &topic])
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = Vec::new();
    collect(&socket, Duration::from_secs(4), &mut seen);
    assert!(seen.iter().any(|l| l == "READY=1"), "{seen:?}");
    let keep_alives = seen.iter().filter(|l| *l == "WATCHDOG=1").count();
    // 1 s watchdog: at least four keep-alives a second, over ~3 s after start-up.
    assert!(keep_alives >= 8, "{keep_alives} keep-alives: {seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("STATUS=") && l.contains(status_word)),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|l| l == "STOPPING=1"));
    let status = quit_and_wait(&mut child, Duration::from_secs(30));
    collect(&socket, Duration::from_millis(300), &mut seen);
    assert!(status.success(), "{status}");
    assert!(seen.iter().any(|l| l == "STOPPING=1"), "{seen:?}");
}

#[test]
fn upload_directory_notifies_ready_keep_alive_status_and_stopping() {
    check_command(&["upload-directory"], "files");
}

#[test]
fn download_directory_notifies_ready_keep_alive_status_and_stopping() {
    check_command(&["download-directory"], "messages read");
}
