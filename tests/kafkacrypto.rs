//! Compatibility with the real KafkaCrypto 0.9.11.3 (the reference venv's package, through
//! `tests/interop/kafkacrypto_peer.py`): nodes provisioned by openmsi pass KafkaCrypto's own
//! chain validation; nodes provisioned by KafkaCrypto's simple-provision load in openmsi; and
//! a record encrypted by a real KafkaCrypto object decrypts with openmsi's record code.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{openmsi, provision_node, reference_python, repo_root, Broker, Storage};
use openmsi::crypto::node::Node;
use openmsi::crypto::ratchet::RatchetKey;
use openmsi::crypto::record::{self, RecordPart};

fn peer(args: &[&str]) -> std::process::Output {
    Command::new(reference_python())
        .arg(repo_root().join("tests/interop/kafkacrypto_peer.py"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn openmsi_nodes_pass_kafkacrypto_chain_validation() {
    let dir = tempfile::tempdir().unwrap();
    let prodcon = provision_node(dir.path(), "both", "prodcon", "xrd other.sub");
    for (usage, topic, ok) in [
        ("key-encrypt", "xrd", true),
        ("key-encrypt-request", "other", true),
        ("key-encrypt", "elsewhere", false),
    ] {
        let out = peer(&["check-chain", prodcon.to_str().unwrap(), usage, topic]);
        assert_eq!(
            out.status.success(),
            ok,
            "{usage} on {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let consumer = provision_node(dir.path(), "reader", "consumer", "xrd");
    let out = peer(&[
        "check-chain",
        consumer.to_str().unwrap(),
        "key-encrypt",
        "xrd",
    ]);
    assert!(
        !out.status.success(),
        "a consumer must not be granted key-encrypt"
    );
    let out = peer(&[
        "check-chain",
        consumer.to_str().unwrap(),
        "key-encrypt-request",
        "xrd",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A node signed by a root key file: KafkaCrypto accepts its one-certificate chain.
    openmsi()
        .args([
            "provision-node",
            "--node-id",
            "keyed",
            "--role",
            "producer",
            "--topics",
            "xrd",
            "--output-dir",
        ])
        .arg(dir.path())
        .arg("--new-root-key")
        .arg(dir.path().join("root.key"))
        .timeout(Duration::from_secs(60))
        .assert()
        .success()
        .stdout(predicates::str::contains("rot-openmsi : base64#"));
    let keyed = dir.path().join("keyed/keyed.config");
    let out = peer(&["check-chain", keyed.to_str().unwrap(), "key-encrypt", "xrd"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn provision_node_without_a_terminal_names_what_is_missing_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    openmsi()
        .args([
            "provision-node",
            "--node-id",
            "n",
            "--role",
            "producer",
            "--topics",
            "t",
            "--output-dir",
        ])
        .arg(dir.path())
        .env_remove("OPENMSI_ROT_PASSWORD")
        .assert()
        .failure()
        .stderr(
            predicates::str::contains("OPENMSI_ROT_PASSWORD")
                .and(predicates::str::contains("--rot-password-file")),
        );
    openmsi()
        .args([
            "provision-node",
            "--role",
            "producer",
            "--topics",
            "t",
            "--output-dir",
        ])
        .arg(dir.path())
        .env("OPENMSI_ROT_PASSWORD", "rotpassword1234")
        .env("OPENMSI_PROVISIONING_PASSWORD", "provpass99")
        .assert()
        .failure()
        .stderr(predicates::str::contains("--node-id is missing"));
    let config = provision_node(dir.path(), "n", "producer", "t");
    let before = std::fs::read(&config).unwrap();
    openmsi()
        .args([
            "provision-node",
            "--node-id",
            "n",
            "--role",
            "consumer",
            "--topics",
            "t",
            "--output-dir",
        ])
        .arg(dir.path())
        .env("OPENMSI_ROT_PASSWORD", "rotpassword1234")
        .env("OPENMSI_PROVISIONING_PASSWORD", "provpass99")
        .assert()
        .failure()
        .stderr(predicates::str::contains("--force"));
    assert_eq!(std::fs::read(&config).unwrap(), before);
    // Weak passwords are refused, as KafkaCrypto refuses them.
    openmsi()
        .args([
            "provision-node",
            "--node-id",
            "m",
            "--role",
            "producer",
            "--topics",
            "t",
            "--output-dir",
        ])
        .arg(dir.path())
        .env("OPENMSI_ROT_PASSWORD", "short")
        .env("OPENMSI_PROVISIONING_PASSWORD", "provpass99")
        .assert()
        .failure()
        .stderr(predicates::str::contains("at least 12"));
    assert!(!dir.path().join("m").exists());
}

use predicates::prelude::PredicateBooleanExt;

#[test]
fn nodes_from_kafkacrypto_simple_provision_load_in_openmsi() {
    let fixtures = repo_root().join("tests/fixtures/kafkacrypto-nodes");
    for (name, public_root) in [("p", "1a3eeac1"), ("c", "1a3eeac1")] {
        let node = Node::load(&fixtures.join(name).join(format!("{name}.config"))).unwrap();
        assert_eq!(node.id, name);
        let root: String = node.trust.allow[0]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(root.starts_with(public_root), "{root}");
        assert_eq!(node.chains.len(), 1);
    }
}

/// A real KafkaCrypto object (OpenMSIStream's wrapper, on the test broker) encrypts a record
/// key and value with an openmsi-provisioned node; openmsi's record code decrypts both with
/// the ratchet position the node's seed held when KafkaCrypto started.
#[test]
fn records_encrypted_by_kafkacrypto_decrypt_in_openmsi() {
    let broker = Broker::start(Storage::Memory);
    for topic in [
        "xrd",
        "xrd.keys",
        "xrd.reqs",
        "xrd.subs",
        "chains",
        "allowlist",
        "denylist",
    ] {
        broker.create_topic(topic, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = provision_node(dir.path(), "up", "prodcon", "xrd");
    let seed_before = std::fs::read(dir.path().join("up/up.seed")).unwrap();
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let data_path = dir.path().join("data.bin");
    std::fs::write(&data_path, &data).unwrap();
    let out = peer(&[
        "serialize",
        config.to_str().unwrap(),
        &broker.bootstrap(),
        "xrd.sub",
        data_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unhex = |s: &str| {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
    };
    let value = unhex(json["value"].as_str().unwrap());
    let key = unhex(json["key"].as_str().unwrap());

    // KafkaCrypto advanced the seed before using its key: the file moved one step on.
    let seed_after =
        RatchetKey::from_file_bytes(&std::fs::read(dir.path().join("up/up.seed")).unwrap())
            .unwrap();
    let used = RatchetKey::from_file_bytes(&seed_before).unwrap();
    assert_eq!(seed_after.index, used.index + 1);

    let node = Node::load(&config).unwrap();
    let secret = used.root_secret(record::topic_root("xrd.sub"));
    let parsed = record::parse(&value).unwrap();
    assert_eq!(parsed.key_id, used.key_id(&node.signing_key_id()));
    assert_eq!(
        record::open(&parsed, RecordPart::Value, &secret).unwrap(),
        data
    );
    let parsed_key = record::parse(&key).unwrap();
    assert_eq!(
        record::open(&parsed_key, RecordPart::Key, &secret).unwrap(),
        b"key"
    );
    // The other half's key stream, or another root's secret, does not open it.
    assert!(record::open(&parsed, RecordPart::Key, &secret).is_err());
    assert!(record::open(&parsed, RecordPart::Value, &used.root_secret("other")).is_err());
}

/// Interactive provisioning on a terminal (a pseudo-terminal from `script`) takes the answers
/// in simple-provision's order (key type, root-of-trust password, provisioning password, node
/// id, role, limited?, topics, path length, confirmation), so the same answers work for both;
/// the node it writes passes KafkaCrypto's validation.
#[test]
fn interactive_provisioning_asks_what_simple_provision_asks() {
    let dir = tempfile::tempdir().unwrap();
    let binary = assert_cmd::cargo::cargo_bin("openmsi");
    let command = format!(
        "{} provision-node --output-dir {}",
        binary.display(),
        dir.path().display()
    );
    let answers = "1\nrotpassword1234\nprovpass99\ninteractive\n4\nn\nxrd\n\nyes\n";
    let output = assert_cmd::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .write_stdin(answers)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for question in [
        "Key type",
        "root-of-trust password",
        "provisioning password",
        "Node ID",
        "Consumer and Producer",
        "Limit the consumer",
        "topics",
        "pathlength",
        "correct",
    ] {
        assert!(text.contains(question), "not asked: {question}\n{text}");
    }
    let config = dir.path().join("interactive/interactive.config");
    for usage in ["key-encrypt", "key-encrypt-request"] {
        let out = peer(&["check-chain", config.to_str().unwrap(), usage, "xrd"]);
        assert!(
            out.status.success(),
            "{usage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
