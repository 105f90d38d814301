//! upload-file's errors for failures only a broker can report, driven with librdkafka's mock
//! cluster (in-process, but listening on 127.0.0.1, so the real binary talks to it). tansu does
//! not enforce a message size limit, so this is where "too large" is proven.

mod common;

use std::time::Duration;

use common::openmsi;
use predicates::prelude::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[test]
fn message_too_large_for_the_broker_is_reported_and_fails() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("big", 1, 1).unwrap();
    // Every Produce request is refused the way a broker refuses an oversized message.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 64],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mock.config");
    std::fs::write(
        &cfg,
        format!(
            "[broker]\nbootstrap.servers = {}\n\n[producer]\n# The mock cluster has no transactions coordinator for idempotence.\nenable.idempotence = false\n",
            cluster.bootstrap_servers()
        ),
    )
    .unwrap();
    let file = dir.path().join("scan.tif");
    common::write_random_file(&file, 100_000, 1);
    openmsi()
        .arg("upload-file")
        .arg(&file)
        .arg("--config")
        .arg(&cfg)
        .args(["--topic", "big", "--chunk-size", "65536"])
        .timeout(Duration::from_secs(60))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("too large")
                .and(predicate::str::contains("--chunk-size"))
                .and(predicate::str::contains("scan.tif")),
        );
}
