//! Secured connections on a real broker: tansu behind a real TLS front end (stunnel), with
//! mutual TLS and SASL/SCRAM. Each shipped example config (`config_files/`) is proven by an
//! upload-file → download-directory round trip through it, and each way a connection can be
//! misconfigured fails within the connect timeout with one line naming the cause and the
//! setting to fix.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{openmsi, repo_root, Broker, Security, Storage, Tls};

/// Throw-away certificates from `scripts/test-certs.sh`.
struct Certs(tempfile::TempDir);

impl Certs {
    fn generate() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(repo_root().join("scripts/test-certs.sh"))
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "test-certs.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// The broker's TLS front end with the server certificate; `mutual`: client certificates
    /// signed by the test CA required.
    fn front(&self, mutual: bool) -> Tls {
        self.front_with("server", mutual)
    }

    fn front_with(&self, server: &str, mutual: bool) -> Tls {
        Tls {
            cert: self.file(&format!("{server}.pem")),
            key: self.file(&format!("{server}.key")),
            client_ca: mutual.then(|| self.file("ca.pem")),
            port: 0,
        }
    }
}

/// A broker secured by `security`, with topic `t` (2 partitions).
fn secured_broker(security: Security) -> Broker {
    let security = Security {
        topics: vec![("t".into(), 2)],
        ..security
    };
    Broker::start_secured(Storage::Sqlite, security)
}

/// Runs `openmsi ARGS` with `env`, for a round trip or a failure.
fn run(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = openmsi();
    cmd.args(args).timeout(Duration::from_secs(120));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The example config `name` from `config_files/`, used as shipped.
fn example(name: &str) -> String {
    repo_root()
        .join("config_files")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// upload-file of a 300 KiB file in 64 KiB chunks, then download-directory until idle, both
/// with `config` and `env`: the file arrives byte for byte.
fn round_trip(config: &str, env: &[(&str, String)]) {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("scan.raw");
    common::write_random_file(&file, 300 * 1024, 7);
    let up = run(
        &[
            "upload-file",
            file.to_str().unwrap(),
            "--config",
            config,
            "--topic",
            "t",
            "--chunk-size",
            "65536",
        ],
        env,
    );
    assert!(
        up.status.success(),
        "upload-file failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let out = work.path().join("out");
    let down = run(
        &[
            "download-directory",
            out.to_str().unwrap(),
            "--config",
            config,
            "--topic",
            "t",
            "--group-id",
            "secured-test",
            "--exit-when-idle",
            "2",
        ],
        env,
    );
    assert!(
        down.status.success(),
        "download-directory failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(
        common::sha512_file(&out.join("scan.raw")),
        common::sha512_file(&file)
    );
}

fn env_for(broker: &Broker, certs: &Certs) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap()),
        ("KAFKA_CA_FILE", path_str(&certs.file("ca.pem"))),
    ]
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn tls_with_a_ca_file_round_trip() {
    let certs = Certs::generate();
    let broker = secured_broker(Security {
        tls: Some(certs.front(false)),
        ..Default::default()
    });
    round_trip(&example("tls_ca_file.config"), &env_for(&broker, &certs));
}

#[test]
fn mutual_tls_with_pem_key_and_certificate_round_trip() {
    let certs = Certs::generate();
    let broker = secured_broker(Security {
        tls: Some(certs.front(true)),
        ..Default::default()
    });
    let mut env = env_for(&broker, &certs);
    env.push(("KAFKA_CLIENT_CERT", path_str(&certs.file("client.pem"))));
    env.push(("KAFKA_CLIENT_KEY", path_str(&certs.file("client.key"))));
    let config = example("mutual_tls_pem.config");
    // The admin commands connect the same way.
    let created = run(
        &["topic", "create", "through-tls", "--config", &config],
        &env,
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let listed = run(&["topic", "list", "--config", &config], &env);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("through-tls"));
    round_trip(&config, &env);
}

#[test]
fn mutual_tls_with_a_pkcs12_keystore_round_trip() {
    let certs = Certs::generate();
    let broker = secured_broker(Security {
        tls: Some(certs.front(true)),
        ..Default::default()
    });
    let mut env = env_for(&broker, &certs);
    env.push(("KAFKA_KEYSTORE", path_str(&certs.file("client.p12"))));
    env.push(("KAFKA_KEYSTORE_PASSWORD", "keystore-pass".into()));
    round_trip(&example("mutual_tls_pkcs12.config"), &env);
}

fn scram_user(name: &str, password: &str) -> (String, String, String) {
    (name.into(), password.into(), "scram512".into())
}

#[test]
fn sasl_ssl_scram_sha_512_with_credentials_from_the_environment_round_trip() {
    let certs = Certs::generate();
    let broker = secured_broker(Security {
        tls: Some(certs.front(false)),
        users: vec![scram_user("lab-uploader", "s3cret pass")],
        ..Default::default()
    });
    let mut env = env_for(&broker, &certs);
    env.push(("KAFKA_USERNAME", "lab-uploader".into()));
    env.push(("KAFKA_PASSWORD", "s3cret pass".into()));
    round_trip(&example("sasl_ssl_scram.config"), &env);
}

/// Writes a config with `lines` in `[broker]` for bootstrap `servers`.
fn config_with(dir: &Path, servers: &str, lines: &[String]) -> String {
    let path = dir.join("case.config");
    let mut text = format!("[broker]\nbootstrap.servers = {servers}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str("[producer]\n[consumer]\n");
    std::fs::write(&path, text).unwrap();
    path_str(&path)
}

/// upload-file with `config` must fail within the 8 s connect timeout (plus start-up), with
/// one error line that contains every one of `expect`, and no raw librdkafka lines.
fn fails_clearly(config: &str, expect: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("x.bin");
    std::fs::write(&file, b"payload").unwrap();
    let started = Instant::now();
    let out = run(
        &[
            "upload-file",
            file.to_str().unwrap(),
            "--config",
            config,
            "--topic",
            "t",
            "--connect-timeout",
            "8",
        ],
        &[],
    );
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {stderr}");
    assert!(took < Duration::from_secs(12), "took {took:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "more than one line: {stderr}");
    for e in expect {
        assert!(stderr.contains(e), "{e:?} missing from: {stderr}");
    }
    assert!(!stderr.contains("BrokerTransportFailure"), "{stderr}");
}

fn ssl(certs: &Certs, ca: &str) -> Vec<String> {
    vec![
        "security.protocol = SSL".into(),
        format!("ssl.ca.location = {}", path_str(&certs.file(ca))),
    ]
}

/// A broker secured by `security`, a config for `servers` (the broker's advertised address
/// unless given) with `lines` in `[broker]`: upload-file must fail clearly with `expect`.
fn misconfigured(
    security: Security,
    servers: Option<&dyn Fn(&Broker) -> String>,
    lines: &[String],
    expect: &[&str],
) {
    let broker = secured_broker(security);
    let work = tempfile::tempdir().unwrap();
    let servers = servers.map_or_else(|| broker.bootstrap(), |f| f(&broker));
    let cfg = config_with(work.path(), &servers, lines);
    fails_clearly(&cfg, expect);
}

fn tls_only(certs: &Certs, server: &str, mutual: bool) -> Security {
    Security {
        tls: Some(certs.front_with(server, mutual)),
        ..Default::default()
    }
}

#[test]
fn an_unknown_ca_is_named_with_ssl_ca_location() {
    let certs = Certs::generate();
    misconfigured(
        tls_only(&certs, "server", false),
        None,
        &ssl(&certs, "rogue-ca.pem"),
        &["certificate was not accepted", "ssl.ca.location"],
    );
}

#[test]
fn a_host_name_mismatch_is_named() {
    let certs = Certs::generate();
    misconfigured(
        tls_only(&certs, "wrong-host", false),
        None,
        &ssl(&certs, "ca.pem"),
        &["mismatch", "does not name the host", "bootstrap.servers"],
    );
}

#[test]
fn a_missing_client_certificate_is_named() {
    let certs = Certs::generate();
    misconfigured(
        tls_only(&certs, "server", true),
        None,
        &ssl(&certs, "ca.pem"),
        &["requires a client certificate", "ssl.certificate.location"],
    );
}

fn with_client(certs: &Certs, name: &str) -> Vec<String> {
    let mut lines = ssl(certs, "ca.pem");
    lines.push(format!(
        "ssl.certificate.location = {}",
        path_str(&certs.file(&format!("{name}.pem")))
    ));
    lines.push(format!(
        "ssl.key.location = {}",
        path_str(&certs.file(&format!("{name}.key")))
    ));
    lines
}

#[test]
fn a_client_certificate_from_another_ca_is_named() {
    let certs = Certs::generate();
    misconfigured(
        tls_only(&certs, "server", true),
        None,
        &with_client(&certs, "rogue"),
        &[
            "not signed by a CA the broker trusts",
            "ssl.certificate.location",
        ],
    );
}

#[test]
fn an_expired_client_certificate_is_named() {
    let certs = Certs::generate();
    misconfigured(
        tls_only(&certs, "server", true),
        None,
        &with_client(&certs, "expired"),
        &["expired", "ssl.certificate.location"],
    );
}

fn sasl(certs: &Certs, mechanism: &str, user: &str, password: &str) -> Vec<String> {
    let mut lines = ssl(certs, "ca.pem");
    lines[0] = "security.protocol = SASL_SSL".into();
    lines.push(format!("sasl.mechanism = {mechanism}"));
    lines.push(format!("sasl.username = {user}"));
    lines.push(format!("sasl.password = {password}"));
    lines
}

fn sasl_security(certs: &Certs) -> Security {
    Security {
        tls: Some(certs.front(false)),
        users: vec![scram_user("alice", "right")],
        ..Default::default()
    }
}

#[test]
fn a_wrong_password_is_named() {
    let certs = Certs::generate();
    misconfigured(
        sasl_security(&certs),
        None,
        &sasl(&certs, "SCRAM-SHA-512", "alice", "wrong"),
        &[
            "SASL authentication failed",
            "invalid-proof",
            "sasl.password",
        ],
    );
}

#[test]
fn an_unknown_user_is_named() {
    let certs = Certs::generate();
    misconfigured(
        sasl_security(&certs),
        None,
        &sasl(&certs, "SCRAM-SHA-512", "mallory", "x"),
        &["unknown-user", "sasl.username"],
    );
}

#[test]
fn a_sasl_mechanism_the_broker_does_not_offer_is_named() {
    let certs = Certs::generate();
    misconfigured(
        sasl_security(&certs),
        None,
        &sasl(&certs, "PLAIN", "alice", "right"),
        &["SASL mechanism PLAIN", "sasl.mechanism"],
    );
}

#[test]
fn plaintext_to_a_tls_port_is_named() {
    let certs = Certs::generate();
    misconfigured(
        tls_only(&certs, "server", false),
        None,
        &[],
        &["expects TLS", "security.protocol = SSL"],
    );
}

#[test]
fn tls_to_a_plaintext_port_is_named() {
    let certs = Certs::generate();
    // The broker's own port, behind the TLS front end, speaks plaintext.
    misconfigured(
        tls_only(&certs, "server", false),
        Some(&|b: &Broker| format!("127.0.0.1:{}", b.port())),
        &ssl(&certs, "ca.pem"),
        &["does not answer TLS", "security.protocol = PLAINTEXT"],
    );
}

#[test]
fn a_missing_broker_is_one_line_for_every_command() {
    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config_with(work.path(), &format!("127.0.0.1:{port}"), &[]);
    let file = work.path().join("x.bin");
    std::fs::write(&file, b"x").unwrap();
    let out_dir = work.path().join("out");
    let watched = work.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    for args in [
        vec!["upload-file", file.to_str().unwrap()],
        vec!["download-directory", out_dir.to_str().unwrap()],
        vec!["upload-directory", watched.to_str().unwrap()],
    ] {
        let mut args = args.clone();
        args.extend(["--config", &cfg, "--topic", "t", "--connect-timeout", "2"]);
        let out = run(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.starts_with("error"))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(errors[0].contains("connection refused"), "{stderr}");
        assert!(errors[0].contains("bootstrap.servers"), "{stderr}");
    }
}
