//! A cluster of tansu brokers over one local S3 server (`scripts/broker.sh cluster-start`):
//! tansu's stateless brokers share their topics, offsets and groups through the bucket, so
//! stopping one leaves the data reachable through the others, as on a replicated Kafka cluster.
//!
//! What a client sees differs from Kafka (see docs/TEST_BROKER.md): every broker calls itself
//! node 111 and lists only itself, so a client knows one broker at a time and finds the others
//! through `bootstrap.servers` again (openmsi's `metadata.recovery.rebootstrap.trigger.ms`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{broker_sh, broker_sh_failed, EXIT_PORT_IN_USE};

/// N brokers and their S3 server on 127.0.0.1, stopped (and their directory removed) on drop.
pub struct Cluster {
    /// `s3/` (the server and its objects) and `broker-I/` for broker I (1-based).
    dir: tempfile::TempDir,
    s3_port: u16,
    ports: Vec<u16>,
    running: Vec<bool>,
}

impl Cluster {
    /// Starts `brokers` brokers on consecutive free ports, with the S3 server on the port
    /// before them. Fails the test (with the install hint) when tansu or s3s-fs is missing.
    pub fn start(brokers: usize) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("openmsi-cluster-")
            .tempdir()
            .expect("cannot create a temporary directory for the cluster");
        let owner = std::process::id().to_string();
        for _ in 0..5 {
            let base = consecutive_free_ports(brokers + 1);
            let first = (base + 1).to_string();
            let s3 = base.to_string();
            let n = brokers.to_string();
            let out = broker_sh(&[
                "cluster-start",
                "--brokers",
                &n,
                "--port",
                &first,
                "--s3-port",
                &s3,
                "--dir",
                dir.path().to_str().expect("temporary path is not UTF-8"),
                "--owner",
                &owner,
            ]);
            if out.status.success() {
                return Cluster {
                    dir,
                    s3_port: base,
                    ports: (1..=brokers as u16).map(|i| base + i).collect(),
                    running: vec![true; brokers],
                };
            }
            if out.status.code() != Some(EXIT_PORT_IN_USE) {
                broker_sh_failed("cluster-start", &out);
            }
        }
        panic!("no free ports for a cluster after 5 tries");
    }

    /// `bootstrap.servers` naming every broker.
    pub fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn port(&self, broker: usize) -> u16 {
        self.ports[broker]
    }

    /// Broker `broker`'s directory (0-based index; holds its `tansu.log`).
    pub fn broker_dir(&self, broker: usize) -> PathBuf {
        self.dir.path().join(format!("broker-{}", broker + 1))
    }

    /// Where the S3 server keeps the bucket's objects.
    pub fn s3_data(&self) -> PathBuf {
        self.dir.path().join("s3/data")
    }

    /// Creates a topic through the first running broker.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let broker = self
            .running
            .iter()
            .position(|r| *r)
            .expect("no broker of the cluster runs");
        let port = self.ports[broker].to_string();
        let partitions = partitions.to_string();
        let out = broker_sh(&[
            "create-topic",
            name,
            "--port",
            &port,
            "--partitions",
            &partitions,
        ]);
        if !out.status.success() {
            broker_sh_failed("create-topic", &out);
        }
    }

    /// Stops broker `broker` gracefully (SIGTERM; tansu finishes what it is doing first).
    pub fn stop(&mut self, broker: usize) {
        self.stop_with(broker, &[]);
    }

    /// Kills broker `broker` with SIGKILL, as a crash would.
    pub fn kill(&mut self, broker: usize) {
        self.stop_with(broker, &["--kill"]);
    }

    fn stop_with(&mut self, broker: usize, extra: &[&str]) {
        if !self.running[broker] {
            return;
        }
        let dir = self.broker_dir(broker);
        let mut args = vec!["stop", "--dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = broker_sh(&args);
        if !out.status.success() {
            broker_sh_failed("stop", &out);
        }
        self.running[broker] = false;
    }

    /// Starts broker `broker` again (same port, same S3 server).
    pub fn restart(&mut self, broker: usize) {
        self.stop(broker);
        let dir = self.broker_dir(broker);
        let port = self.ports[broker].to_string();
        let s3 = self.s3_port.to_string();
        let owner = std::process::id().to_string();
        let out = broker_sh(&[
            "start",
            "--dir",
            dir.to_str().unwrap(),
            "--port",
            &port,
            "--s3",
            &s3,
            "--owner",
            &owner,
        ]);
        if !out.status.success() {
            broker_sh_failed("start (restart)", &out);
        }
        self.running[broker] = true;
    }

    /// Every broker's log, for a failing test's message.
    pub fn logs(&self) -> String {
        (0..self.ports.len())
            .map(|b| {
                let log = std::fs::read_to_string(self.broker_dir(b).join("tansu.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- broker {} ---\n{}\n", b + 1, tail.join("\n"))
            })
            .collect()
    }

    /// Writes `DIR/openmsi.config` for the whole cluster (see [`super::write_config`]).
    pub fn write_config(&self, dir: &Path) -> PathBuf {
        // The S3 engine shares the memory engine's code (dynostore), and with it the mid-batch
        // fetch bug: one message per batch.
        super::write_config_for(dir, &self.bootstrap(), true)
    }

    /// [`Self::write_config`] with the producers' idempotence off. tansu's brokers do not share
    /// a producer's sequence numbers, and a broker that stops (even gracefully) can leave one
    /// counted but its batch unstored: the survivor then answers the retry
    /// `DuplicateSequenceNumber`, librdkafka takes the batch as delivered, and it is lost
    /// (seen in CI: a relayed file stuck at 98% for good). Without idempotence the retry is
    /// simply stored again; openmsi's readers drop a duplicate chunk.
    pub fn write_config_without_idempotence(&self, dir: &Path) -> PathBuf {
        let path = self.write_config(dir);
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "[producer]\n",
            "[producer]\nenable.idempotence = false\n",
            1,
        );
        assert!(text.contains("enable.idempotence = false"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let out = broker_sh(&["cluster-stop", "--dir", self.dir.path().to_str().unwrap()]);
        if !out.status.success() {
            eprintln!(
                "stopping the cluster failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The first of `n` consecutive ports that were all free on 127.0.0.1 a moment ago.
fn consecutive_free_ports(n: usize) -> u16 {
    for _ in 0..200 {
        let base = super::free_port();
        if base as usize + n > 65535 {
            continue;
        }
        let free =
            (0..n as u16).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no {n} consecutive free ports on 127.0.0.1");
}
