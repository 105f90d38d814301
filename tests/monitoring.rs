//! Monitoring with real parts: a real Prometheus (Debian's 2.42) scrapes a running drop box and
//! downloader and its counters equal what moved; `promtool check metrics` accepts every
//! endpoint; `openmsi status` shows both programs from their heartbeats, the group's lag, and
//! a stopped drop box as stale; a bad `--metrics-addr` is one line at start with nothing else
//! started.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// `GET path` on 127.0.0.1:`port`; the body (empty when nothing answers).
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// A sample's value in a scrape (the line `name value`).
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` on one scrape.
fn promtool_accepts(scrape: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: scripts/install-packages.sh installs Debian's prometheus");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus query through its HTTP API: (instance label, value) per series.
fn query(port: u16, expr: &str) -> Vec<(String, f64)> {
    let encoded: String = expr
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = http_get(port, &format!("/api/v1/query?query={encoded}"));
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    v["data"]["result"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .map(|s| {
                    (
                        s["metric"]["instance"].as_str().unwrap_or("").to_string(),
                        s["value"][1]
                            .as_str()
                            .unwrap_or("nan")
                            .parse()
                            .unwrap_or(f64::NAN),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A long-running `openmsi COMMAND DIR --config .. --topic .. EXTRA...` (stdin piped for `quit`).
fn spawn_long_running(fx: &TopicFixture, command: &str, dir: &Path, extra: &[&str]) -> KillOnDrop {
    KillOnDrop(
        openmsi_std()
            .arg(command)
            .arg(dir)
            .arg("--config")
            .arg(&fx.cfg)
            .args(["--topic", &fx.topic])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn spawn_upload_directory(fx: &TopicFixture, watched: &Path, extra: &[&str]) -> KillOnDrop {
    let mut args = vec!["--upload-existing", "--settle-seconds", "0.2"];
    args.extend_from_slice(extra);
    spawn_long_running(fx, "upload-directory", watched, &args)
}

fn spawn_download_directory(fx: &TopicFixture, out: &Path, extra: &[&str]) -> KillOnDrop {
    spawn_long_running(fx, "download-directory", out, extra)
}

/// Writes `n` files of `len` bytes named `f<i>.bin`, starting at `first`; their total size.
fn write_files(dir: &Path, first: u64, n: u64, len: u64) -> u64 {
    for i in first..first + n {
        write_random_file(&dir.join(format!("f{i}.bin")), len, i);
    }
    n * len
}

#[test]
fn a_real_prometheus_scrapes_both_commands_and_the_counters_equal_what_moved() {
    let fx = TopicFixture::new(Storage::Sqlite, "metrics", 1);
    let (watched, out) = (fx.work.path().join("in"), fx.work.path().join("out"));
    std::fs::create_dir_all(&watched).unwrap();
    let bytes = write_files(&watched, 0, 5, 40_000);
    let (up_port, down_port, prom_port) = (free_port(), free_port(), free_port());
    let mut down = spawn_download_directory(
        &fx,
        &out,
        &[
            "--group-id",
            "scraped",
            "--metrics-addr",
            &format!("127.0.0.1:{down_port}"),
        ],
    );
    let mut up = spawn_upload_directory(
        &fx,
        &watched,
        &["--metrics-addr", &format!("127.0.0.1:{up_port}")],
    );
    assert!(
        wait_for(Duration::from_secs(60), || files_under(&out).len() == 5),
        "the 5 files did not arrive: {:?}",
        files_under(&out)
    );

    // Each endpoint: well-formed, and its counters are what moved.
    let up_scrape = http_get(up_port, "/metrics");
    let down_scrape = http_get(down_port, "/metrics");
    promtool_accepts(&up_scrape);
    promtool_accepts(&down_scrape);
    assert_eq!(
        sample(&up_scrape, "openmsi_files_uploaded_total"),
        Some(5.0)
    );
    assert_eq!(
        sample(&up_scrape, "openmsi_bytes_uploaded_total"),
        Some(bytes as f64)
    );
    assert!(wait_for(Duration::from_secs(10), || {
        sample(
            &http_get(down_port, "/metrics"),
            "openmsi_files_downloaded_total",
        ) == Some(5.0)
    }));
    assert!(
        down_scrape.contains("openmsi_build_info{version=\""),
        "{down_scrape}"
    );

    // A real Prometheus scrapes both.
    let prom_dir = fx.work.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: openmsi\n    \
             static_configs:\n      - targets: ['127.0.0.1:{up_port}', '127.0.0.1:{down_port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is missing: scripts/install-packages.sh installs it"),
    );
    let targets_up = || {
        let up = query(prom_port, "up");
        up.len() == 2 && up.iter().all(|(_, v)| *v == 1.0)
    };
    assert!(
        wait_for(Duration::from_secs(60), targets_up),
        "Prometheus does not see both targets up: {:?}",
        query(prom_port, "up")
    );
    let one = |expr: &str| {
        let mut got = Vec::new();
        wait_for(Duration::from_secs(20), || {
            got = query(prom_port, expr);
            got.len() == 1
        });
        assert_eq!(got.len(), 1, "{expr}: {got:?}");
        got[0].1
    };
    assert_eq!(one("openmsi_files_uploaded_total"), 5.0);
    assert_eq!(one("openmsi_bytes_uploaded_total"), bytes as f64);
    assert_eq!(one("openmsi_files_downloaded_total"), 5.0);
    assert_eq!(one("openmsi_bytes_downloaded_total"), bytes as f64);
    assert_eq!(one("sum(openmsi_messages_rejected_total)"), 0.0);
    assert_eq!(
        one("openmsi_download_first_chunk_to_published_seconds_count"),
        5.0
    );
    assert_eq!(
        one("openmsi_upload_close_to_acknowledged_seconds_count"),
        5.0
    );
    // librdkafka's statistics come every 5 s: the consumer is connected and caught up.
    assert!(
        wait_for(Duration::from_secs(30), || {
            query(prom_port, "openmsi_consumer_lag_messages")
                .first()
                .is_some_and(|(_, lag)| *lag == 0.0)
                && query(prom_port, "min(openmsi_broker_connected)")
                    .first()
                    .is_some_and(|(_, v)| *v == 1.0)
        }),
        "lag {:?}, connected {:?}",
        query(prom_port, "openmsi_consumer_lag_messages"),
        query(prom_port, "openmsi_broker_connected")
    );

    // The dashboard's queries (the README's) run, each with a series per instance.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("examples/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert_eq!(exprs.len(), 4);
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for expr in exprs {
        assert!(readme.contains(expr), "the README does not give {expr}");
        let mut got = Vec::new();
        wait_for(Duration::from_secs(20), || {
            got = query(prom_port, expr);
            !got.is_empty()
        });
        assert!(!got.is_empty(), "{expr} returns nothing");
    }

    assert!(quit_and_wait(&mut up, Duration::from_secs(30)).success());
    assert!(quit_and_wait(&mut down, Duration::from_secs(30)).success());
}

/// `openmsi status --json ARGS`: its exit code and JSON.
fn status(fx: &TopicFixture, args: &[&str]) -> (i32, serde_json::Value) {
    let cfg = fx.cfg.to_string_lossy();
    let mut all = vec!["status", "--json", "--config", &cfg, "--topic", &fx.topic];
    all.extend_from_slice(args);
    let out = run_openmsi(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn program<'a>(status: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    status["programs"]
        .as_array()?
        .iter()
        .find(|p| p["program_id"] == id)
}

fn group_lag(status: &serde_json::Value, group: &str) -> Option<i64> {
    status["topics"][0]["groups"]
        .as_array()?
        .iter()
        .find(|g| g["group"] == group)?["total_lag"]
        .as_i64()
}

#[test]
fn status_shows_the_drop_box_and_the_downloader_their_lag_and_a_stopped_drop_box_as_stale() {
    let fx = TopicFixture::new(Storage::Sqlite, "status", 1);
    let heartbeats = unique_topic("heartbeats");
    fx.broker.create_topic(&heartbeats, 1);
    let (watched, out) = (fx.work.path().join("in"), fx.work.path().join("out"));
    std::fs::create_dir_all(&watched).unwrap();
    write_files(&watched, 0, 2, 10_000);
    let beat = |id: &'static str| {
        vec![
            "--heartbeat-topic".to_string(),
            heartbeats.clone(),
            "--heartbeat-interval".into(),
            "1".into(),
            "--program-id".into(),
            id.into(),
        ]
    };
    let up_args = beat("box1");
    let mut up = spawn_upload_directory(&fx, &watched, &as_strs(&up_args));
    let mut down_args = beat("reader1");
    down_args.extend(["--group-id".to_string(), "readers".to_string()]);
    let mut down = spawn_download_directory(&fx, &out, &as_strs(&down_args));
    // OpenMSIStream's drop box on an empty folder of its own, sending heartbeats too.
    let reference_watched = fx.work.path().join("reference-in");
    std::fs::create_dir_all(&reference_watched).unwrap();
    let mut reference = KillOnDrop(
        reference_command("DataFileUploadDirectory")
            .arg(&reference_watched)
            .arg("--config")
            .arg(&fx.cfg)
            .args(["--topic_name", &fx.topic])
            .args(["--heartbeat_topic_name", &heartbeats])
            .args([
                "--heartbeat_program_id",
                "refbox",
                "--heartbeat_interval_secs",
                "1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(Duration::from_secs(60), || files_under(&out)
        .len()
        == 2));

    // All running: all heard from, nothing stale, the group caught up.
    let hb = ["--heartbeat-topic", heartbeats.as_str()];
    let mut seen = (0, serde_json::Value::Null);
    let all_fresh = wait_for(Duration::from_secs(60), || {
        seen = status(&fx, &hb);
        let fresh = |id| program(&seen.1, id).is_some_and(|p| p["stale"] == false);
        fresh("box1")
            && fresh("reader1")
            && fresh("refbox")
            && group_lag(&seen.1, "readers") == Some(0)
    });
    assert!(all_fresh, "{:#}", seen.1);
    assert_eq!(seen.0, 0, "{:#}", seen.1);
    assert!(program(&seen.1, "box1").unwrap()["counts"]["n_messages_produced"].is_number());
    assert!(program(&seen.1, "refbox").unwrap()["counts"]["n_messages_produced"].is_number());
    reference
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"q\n")
        .unwrap();
    assert!(wait_for(Duration::from_secs(60), || reference
        .0
        .try_wait()
        .unwrap()
        .is_some()));

    // The reader stops; three more files: the group lags by three messages.
    assert!(quit_and_wait(&mut down, Duration::from_secs(30)).success());
    write_files(&watched, 2, 3, 10_000);
    let registry = watched.join(".openmsi/uploaded.jsonl");
    assert!(wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&registry).is_ok_and(|t| t.contains("f4.bin"))
    }));
    let patient = [
        "--heartbeat-topic",
        heartbeats.as_str(),
        "--stale-after",
        "600",
    ];
    let (code, json) = status(&fx, &patient);
    assert_eq!(group_lag(&json, "readers"), Some(3), "{json:#}");
    assert_eq!(code, 0, "{json:#}");
    let mut strict = patient.to_vec();
    strict.extend(["--max-lag", "2"]);
    let (code, json) = status(&fx, &strict);
    assert_eq!(code, 1, "{json:#}");
    assert!(
        json["problems"][0]
            .as_str()
            .unwrap()
            .contains("group readers lags 3"),
        "{json:#}"
    );

    // The drop box stops: three of its intervals later it is stale.
    assert!(quit_and_wait(&mut up, Duration::from_secs(30)).success());
    std::thread::sleep(Duration::from_secs(4));
    let (code, json) = status(&fx, &hb);
    assert_eq!(program(&json, "box1").unwrap()["stale"], true, "{json:#}");
    assert_eq!(code, 1, "{json:#}");
    // The table says the same.
    let cfg = fx.cfg.to_string_lossy();
    let text = run_openmsi(&[
        "status",
        "--config",
        &cfg,
        "--topic",
        &fx.topic,
        "--heartbeat-topic",
        &heartbeats,
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("STALE"), "{text}");
    assert!(text.contains("group readers"), "{text}");
}

#[test]
fn a_bad_metrics_address_is_one_line_at_start_and_nothing_else_starts() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("x.config");
    // No broker is needed: the address is checked before anything connects.
    std::fs::write(&cfg, "[broker]\nbootstrap.servers = 127.0.0.1:9\n").unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out_dir = work.path().join("out");
    let run = |args: &[&str]| {
        let started = std::time::Instant::now();
        let out = openmsi()
            .args(args)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let (code, err) = run(&[
        "download-directory",
        &out_dir.to_string_lossy(),
        "--config",
        &cfg.to_string_lossy(),
        "--metrics-addr",
        &addr,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot serve metrics on {addr}")),
        "{err}"
    );
    assert!(err.contains("choose another port"), "{err}");
    assert!(!out_dir.exists(), "the output folder was created");

    let (code, err) = run(&[
        "upload-directory",
        &work.path().to_string_lossy(),
        "--config",
        &cfg.to_string_lossy(),
        "--metrics-addr",
        "localhost",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is not a HOST:PORT"), "{err}");

    // The same from the config file, with its line.
    std::fs::write(
        &cfg,
        "[broker]\nbootstrap.servers = 127.0.0.1:9\n\n[metrics]\naddress = 127.0.0.1:99999\n",
    )
    .unwrap();
    let (code, err) = run(&[
        "download-directory",
        &out_dir.to_string_lossy(),
        "--config",
        &cfg.to_string_lossy(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 5, key 'address' in [metrics]"), "{err}");
    assert!(!out_dir.exists(), "the output folder was created");
}

/// When a group last committed: openmsi stamps each commit's metadata with its time, which
/// `status` reads back (`kafka::group::commit_time`). tansu 0.6.0 drops commit metadata (a
/// commit with metadata reads back without it), so this runs on librdkafka's mock cluster,
/// which keeps it as Kafka does.
#[test]
fn every_commit_carries_its_time_for_status_mock_cluster() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("stamped", 1, 1).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("mock.config");
    std::fs::write(
        &cfg,
        format!(
            "[broker]\nbootstrap.servers = {}\n\n[producer]\n# The mock cluster has no \
             transactions coordinator for idempotence.\nenable.idempotence = false\n",
            cluster.bootstrap_servers()
        ),
    )
    .unwrap();
    let file = work.path().join("a.bin");
    write_random_file(&file, 100_000, 7);
    let cfg_text = cfg.to_string_lossy();
    let up = run_openmsi(&[
        "upload-file",
        &file.to_string_lossy(),
        "--config",
        &cfg_text,
        "--topic",
        "stamped",
    ]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = work.path().join("out");
    let down = run_openmsi(&[
        "download-directory",
        &out.to_string_lossy(),
        "--config",
        &cfg_text,
        "--topic",
        "stamped",
        "--group-id",
        "stamped-readers",
        "--exit-when-idle",
        "1",
    ]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(sha512_file(&out.join("a.bin")), sha512_file(&file));
    // The mock cluster does not list groups (status's way to find them), so the group's
    // commit is read back directly, through the same OffsetFetch status uses.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "stamped-readers")
        .create()
        .unwrap();
    let mut wanted = rdkafka::TopicPartitionList::new();
    wanted.add_partition("stamped", 0);
    let committed = reader
        .committed_offsets(wanted, Duration::from_secs(10))
        .unwrap();
    let element = &committed.elements_for_topic("stamped")[0];
    assert_eq!(
        element.offset(),
        rdkafka::Offset::Offset(1),
        "the file's one chunk committed"
    );
    let at = openmsi::kafka::group::commit_time(element.metadata())
        .unwrap_or_else(|| panic!("no commit time in metadata {:?}", element.metadata()))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(at >= before && at <= before + 60, "{at} vs {before}");
}
