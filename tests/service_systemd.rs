//! `openmsi manage-service` against a real systemd: a throw-away one booted by
//! `scripts/systemd-sandbox.sh` (systemd-nspawn on an overlay of this machine's root), with the
//! broker on the host's 127.0.0.1. System services (run as an unprivileged user) and a user
//! service move files; `stop` is graceful and bounded during a large transfer; a killed main
//! process is restarted and finishes its work; `status`, `logs` and `list` report; `remove`
//! leaves nothing; refused installs (bad config, missing variable, unreachable broker, missing
//! topic, bad command, unwritable folder) install nothing.
//!
//! Needs root and systemd-nspawn (`.ci/run` installs `systemd-container`): the tests fail,
//! saying so, when the machine cannot boot the sandbox.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{files_under, repo_root, sha512_file, wait_for, write_random_file, TopicFixture};

/// A booted sandbox; torn down on drop.
struct Sandbox {
    work: PathBuf,
}

impl Sandbox {
    fn boot() -> Sandbox {
        let check = script().arg("check").output().unwrap();
        assert!(
            check.status.success(),
            "this machine cannot boot a systemd sandbox for the service tests: {} (run as \
             root; apt-get install systemd-container)",
            String::from_utf8_lossy(&check.stderr).trim()
        );
        let work = std::env::temp_dir().join(common::unique_topic("sandbox"));
        let up = script().arg("up").arg(&work).output().unwrap();
        let sandbox = Sandbox { work };
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        // The binary under test, where an unprivileged service user can run it.
        let bin = sandbox.root().join("usr/local/bin/openmsi");
        std::fs::copy(env!("CARGO_BIN_EXE_openmsi"), &bin).unwrap();
        sandbox
    }

    /// The sandbox's `/` seen from the host.
    fn root(&self) -> PathBuf {
        self.work.join("root")
    }

    /// `path` inside the sandbox, seen from the host.
    fn host_path(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    /// Runs `args` inside as root; returns the output.
    fn run(&self, args: &[&str]) -> Output {
        script()
            .arg("run")
            .arg(&self.work)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a shell line inside as root.
    fn sh(&self, line: &str) -> Output {
        self.run(&["sh", "-c", line])
    }

    /// `openmsi ARGS` inside as root, in /srv; asserts success; returns stdout + stderr.
    fn openmsi_ok(&self, args: &str) -> String {
        let out = self.sh(&format!("cd /srv && openmsi {args}"));
        let text = text(&out);
        assert!(out.status.success(), "openmsi {args}:\n{text}");
        text
    }

    /// `openmsi ARGS` inside as root, in /srv, expected to fail; returns stdout + stderr.
    fn openmsi_fails(&self, args: &str) -> String {
        let out = self.sh(&format!("cd /srv && openmsi {args}"));
        let text = text(&out);
        assert!(
            !out.status.success(),
            "openmsi {args} should have failed:\n{text}"
        );
        text
    }

    /// openmsi's units and environment files, as `ls` lists them.
    fn installed(&self) -> String {
        text(&self.sh(
            "ls /etc/systemd/system/ | grep openmsi; ls /etc/openmsi/services 2>/dev/null; \
             systemctl list-units --all --no-legend 'openmsi-*'",
        ))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = script().arg("down").arg(&self.work).output();
    }
}

fn script() -> Command {
    Command::new(repo_root().join("scripts/systemd-sandbox.sh"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes the test config into the sandbox at `/etc/openmsi-test/NAME` with `bootstrap`, and
/// a stable consumer group unless the service should get its own.
fn write_sandbox_config(sandbox: &Sandbox, name: &str, bootstrap: &str) -> String {
    let path = format!("/etc/openmsi-test/{name}");
    let host = sandbox.host_path(&path);
    std::fs::create_dir_all(host.parent().unwrap()).unwrap();
    std::fs::write(
        &host,
        format!(
            "[broker]\nbootstrap.servers = {bootstrap}\n\n[producer]\n\n[consumer]\n\
             group.id = create_new\nauto.offset.reset = earliest\nfetch.wait.max.ms = 10\n"
        ),
    )
    .unwrap();
    path
}

/// A user `lab` owning `/srv/drop` and `/srv/out`.
fn add_lab_user(sandbox: &Sandbox) {
    let out = sandbox.sh(
        "useradd -m lab && mkdir -p /srv/drop /srv/out /srv/locked && chown lab /srv/drop /srv/out",
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// Waits until `name` is in `out` with the content of `src`.
fn arrives(out: &Path, src: &Path, name: &str, within: Duration) -> bool {
    let want = sha512_file(&src.join(name));
    wait_for(within, || {
        out.join(name).is_file() && sha512_file(&out.join(name)) == want
    })
}

#[test]
fn system_services_move_files_stop_gracefully_survive_kill_9_and_remove_cleanly() {
    let fixture = TopicFixture::new(common::Storage::Sqlite, "service", 2);
    let sandbox = Sandbox::boot();
    add_lab_user(&sandbox);
    let config = write_sandbox_config(&sandbox, "lab.config", &fixture.broker.bootstrap());
    let topic = &fixture.topic;

    let installed = sandbox.openmsi_ok(&format!(
        "manage-service install dropbox --run-as lab -- upload-directory /srv/drop \
         --config {config} --topic {topic} --upload-existing --settle-seconds 0.5"
    ));
    assert!(installed.contains("runs as lab"), "{installed}");
    assert!(installed.contains("referenced, not copied"), "{installed}");
    // The config asks for a fresh group at every run: the downloader gets a stable one.
    let installed = sandbox.openmsi_ok(&format!(
        "manage-service install getter --run-as lab --stop-timeout 60 -- download-directory \
         out --config {config} --topic {topic}"
    ));
    assert!(installed.contains("consumer group openmsi-"), "{installed}");

    // systemd accepts the units as written, without a warning.
    for unit in ["openmsi-dropbox.service", "openmsi-getter.service"] {
        let verify = sandbox.run(&[
            "systemd-analyze",
            "verify",
            &format!("/etc/systemd/system/{unit}"),
        ]);
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "{unit}: {}",
            text(&verify)
        );
    }
    let unit =
        std::fs::read_to_string(sandbox.host_path("/etc/systemd/system/openmsi-getter.service"))
            .unwrap();
    for line in [
        "Type=notify",
        "User=lab",
        "ExecStart=\"/usr/local/bin/openmsi\" \"download-directory\" \"/srv/out\"",
        "KillMode=mixed",
        "TimeoutStopSec=60",
        "ProtectSystem=strict",
        "ReadWritePaths=/srv/out",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(line), "{line} missing:\n{unit}");
    }

    // Files dropped in arrive.
    let (drop, out) = (
        sandbox.host_path("/srv/drop"),
        sandbox.host_path("/srv/out"),
    );
    for i in 0..5u64 {
        write_random_file(&drop.join(format!("small-{i}.dat")), 10_000 + i * 1_000, i);
    }
    for i in 0..5 {
        assert!(
            arrives(
                &out,
                &drop,
                &format!("small-{i}.dat"),
                Duration::from_secs(60)
            ),
            "{:?}",
            files_under(&out)
        );
    }
    // The program refreshes its status line every 5 s.
    let mut status = String::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            status = sandbox.openmsi_ok("manage-service status dropbox");
            status.contains("active (running)") && status.contains("5 done")
        }),
        "{status}"
    );
    let logs = sandbox.openmsi_ok("manage-service logs dropbox -n 50");
    assert!(
        logs.contains("uploaded") && logs.contains("small-4.dat"),
        "{logs}"
    );

    // A graceful, bounded stop during a large transfer; the restart finishes the file.
    write_random_file(&drop.join("large.bin"), 300 << 20, 77);
    assert!(wait_for(
        Duration::from_secs(120),
        || common::progress_bytes(&out) > 60 << 20
    ));
    let started = Instant::now();
    let stopped = sandbox.openmsi_ok("manage-service stop getter");
    let stop_took = started.elapsed();
    assert!(
        stop_took < Duration::from_secs(30),
        "stop took {stop_took:?}: {stopped}"
    );
    assert!(
        stopped.contains("inactive (dead)") && stopped.contains("last run: success"),
        "{stopped}"
    );
    let logs = sandbox.openmsi_ok("manage-service logs getter -n 30");
    assert!(logs.contains("shutting down cleanly"), "{logs}");
    assert!(
        !out.join("large.bin").exists(),
        "published before it was whole"
    );
    sandbox.openmsi_ok("manage-service start getter");
    assert!(
        arrives(&out, &drop, "large.bin", Duration::from_secs(300)),
        "{:?}",
        files_under(&out)
    );
    let logs = sandbox.openmsi_ok("manage-service logs getter -n 200");
    assert!(logs.contains("resuming partially received files"), "{logs}");

    // kill -9 of the uploader's main process during a transfer: systemd restarts it and the
    // file still arrives.
    let before = common::progress_bytes(&out);
    write_random_file(&drop.join("after-kill.bin"), 300 << 20, 78);
    // Killed once part of the file is through, well before all of it is.
    assert!(wait_for(Duration::from_secs(60), || {
        common::progress_bytes(&out) > before + (20 << 20)
    }));
    let killed =
        sandbox.sh("systemctl kill --signal=KILL --kill-whom=main openmsi-dropbox.service");
    assert!(killed.status.success(), "{}", text(&killed));
    assert!(
        arrives(&out, &drop, "after-kill.bin", Duration::from_secs(180)),
        "{:?}",
        files_under(&out)
    );
    let mut status = String::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            status = text(&sandbox.sh("openmsi manage-service status dropbox"));
            status.contains("active (running)") && status.contains("restarted 1 time(s)")
        }),
        "{status}"
    );

    let list = sandbox.openmsi_ok("manage-service list");
    assert!(list.contains("dropbox\tsystem\tactive (running)"), "{list}");
    assert!(list.contains("getter\tsystem\tactive (running)"), "{list}");

    // remove leaves nothing behind.
    for name in ["dropbox", "getter"] {
        let removed = sandbox.openmsi_ok(&format!("manage-service remove {name}"));
        assert!(
            removed.contains(&format!("openmsi-{name}.service")),
            "{removed}"
        );
    }
    assert_eq!(sandbox.installed().trim(), "");
    assert!(sandbox
        .openmsi_ok("manage-service list")
        .contains("no openmsi services"));
    let gone = sandbox.openmsi_fails("manage-service status getter");
    assert!(gone.contains("no openmsi service `getter`"), "{gone}");
}

#[test]
fn refused_installs_install_nothing_and_a_user_service_gets_its_environment() {
    let fixture = TopicFixture::new(common::Storage::Sqlite, "service-refusals", 1);
    let sandbox = Sandbox::boot();
    add_lab_user(&sandbox);
    let topic = &fixture.topic;
    let good = write_sandbox_config(&sandbox, "good.config", &fixture.broker.bootstrap());
    let with_var = write_sandbox_config(&sandbox, "var.config", "$LAB_BROKER");
    let unreachable = write_sandbox_config(&sandbox, "unreachable.config", "127.0.0.1:1");
    std::fs::write(
        sandbox.host_path("/etc/openmsi-test/broken.config"),
        "[broker]\nbootstrap.servers = x\n[producer\n",
    )
    .unwrap();

    let refusals = [
        (
            format!("upload-directory /srv/drop --config /etc/openmsi-test/broken.config --topic {topic}"),
            "broken.config",
        ),
        (
            format!("upload-directory /srv/drop --config {with_var} --topic {topic}"),
            "LAB_BROKER",
        ),
        (
            format!("upload-directory /srv/drop --config {unreachable} --topic {topic} --connect-timeout 3"),
            "cannot connect to Kafka at 127.0.0.1:1",
        ),
        (
            format!("upload-directory /srv/drop --config {good} --topic no-such-topic"),
            "topic `no-such-topic` does not exist",
        ),
        (format!("frobnicate /srv/drop --config {good}"), "does not parse"),
        (format!("upload-file /etc/hostname --config {good}"), "not a long-running command"),
        (
            format!("upload-directory /srv/locked --config {good} --topic {topic}"),
            "/srv/locked is not readable and writable by lab",
        ),
        (
            format!("upload-directory /srv/missing --config {good} --topic {topic}"),
            "/srv/missing is not a folder",
        ),
    ];
    for (command, expected) in &refusals {
        let started = Instant::now();
        let refused = sandbox.openmsi_fails(&format!(
            "manage-service install bad --run-as lab -- {command}"
        ));
        assert!(
            refused.contains(expected),
            "{command}: expected {expected:?} in:\n{refused}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{command}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            sandbox.installed().trim(),
            "",
            "{command} left something installed"
        );
    }
    // Not root for a system service, and root only when asked.
    let no_user = sandbox.openmsi_fails(&format!(
        "manage-service install bad -- upload-directory /srv/drop --config {good} --topic {topic}"
    ));
    assert!(no_user.contains("--run-as USER"), "{no_user}");

    // The config's variable comes from install's environment into a file only lab can read.
    let installed = text(&sandbox.sh(&format!(
        "cd /srv && LAB_BROKER={} openmsi manage-service install withvar --run-as lab -- \
         download-directory /srv/out --config {with_var} --topic {topic} --group-id g-withvar",
        fixture.broker.bootstrap()
    )));
    assert!(installed.contains("1 variable(s)"), "{installed}");
    let env_file = sandbox.sh(
        "stat -c '%U %a' /etc/openmsi/services/withvar.env; cat /etc/openmsi/services/withvar.env",
    );
    let env_text = text(&env_file);
    assert!(env_text.starts_with("lab 600"), "{env_text}");
    assert!(
        env_text.contains(&format!("LAB_BROKER=\"{}\"", fixture.broker.bootstrap())),
        "{env_text}"
    );
    let src = fixture.work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("via-env.dat"), 50_000, 5);
    common::upload(
        &fixture.cfg,
        topic,
        Some(&src),
        &src.join("via-env.dat"),
        65_536,
    );
    assert!(arrives(
        &sandbox.host_path("/srv/out"),
        &src,
        "via-env.dat",
        Duration::from_secs(60)
    ));
    sandbox.openmsi_ok("manage-service remove withvar");

    // A user service, installed by the user without root; it runs with lingering.
    let uid =
        text(&sandbox.sh("useradd -m tester && loginctl enable-linger tester && id -u tester"));
    let uid = uid.trim().lines().last().unwrap().to_string();
    assert!(wait_for(Duration::from_secs(20), || {
        sandbox
            .sh(&format!("test -S /run/user/{uid}/systemd/private"))
            .status
            .success()
    }));
    let as_tester = |line: &str| {
        sandbox.sh(&format!(
            "cd /home/tester && runuser -u tester -- env XDG_RUNTIME_DIR=/run/user/{uid} \
             HOME=/home/tester {line}"
        ))
    };
    let out = as_tester(&format!(
        "openmsi manage-service install mine --user -- download-directory in --config {good} \
         --topic {topic}"
    ));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("/home/tester/.config/systemd/user/openmsi-mine.service"));
    assert!(arrives(
        &sandbox.host_path("/home/tester/in"),
        &src,
        "via-env.dat",
        Duration::from_secs(60)
    ));
    let verify = as_tester(
        "systemd-analyze --user verify /home/tester/.config/systemd/user/openmsi-mine.service",
    );
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "user unit: {}",
        text(&verify)
    );
    let status = as_tester("openmsi manage-service status mine --user");
    assert!(
        text(&status).contains("active (running)"),
        "{}",
        text(&status)
    );
    let list = as_tester("openmsi manage-service list --user");
    assert!(
        text(&list).contains("mine\tuser\tactive (running)"),
        "{}",
        text(&list)
    );
    let removed = as_tester("openmsi manage-service remove mine --user");
    assert!(removed.status.success(), "{}", text(&removed));
    let left =
        sandbox.sh("ls /home/tester/.config/systemd/user/ /home/tester/.config/openmsi/services/");
    assert!(
        !text(&left).contains("openmsi-mine") && !text(&left).contains("mine.env"),
        "{}",
        text(&left)
    );
}

#[test]
fn a_service_that_cannot_start_is_restarted_with_pauses_and_then_left_failed() {
    let fixture = TopicFixture::new(common::Storage::Sqlite, "service-loop", 1);
    let sandbox = Sandbox::boot();
    add_lab_user(&sandbox);
    let config = write_sandbox_config(&sandbox, "lab.config", &fixture.broker.bootstrap());
    sandbox.openmsi_ok(&format!(
        "manage-service install fragile --run-as lab -- upload-directory /srv/drop \
         --config {config} --topic {}",
        fixture.topic
    ));
    // The config breaks after install (an edit gone wrong), then the process dies: every
    // restart now fails at once with a configuration error.
    std::fs::write(sandbox.host_path(&config), "[broker\n").unwrap();
    let killed =
        sandbox.sh("systemctl kill --signal=KILL --kill-whom=main openmsi-fragile.service");
    assert!(killed.status.success(), "{}", text(&killed));
    let started = Instant::now();
    let show = || {
        text(&sandbox.sh("systemctl show openmsi-fragile.service -p ActiveState,Result,NRestarts"))
    };
    let mut state = String::new();
    assert!(
        wait_for(Duration::from_secs(150), || {
            state = show();
            state.contains("ActiveState=failed")
        }),
        "{state}"
    );
    // 10 s between attempts, and no more than 5 starts in 10 minutes: not a tight loop.
    let took = started.elapsed();
    let restarts: u32 = state
        .lines()
        .find_map(|l| l.strip_prefix("NRestarts="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(u32::MAX);
    assert!((1..=5).contains(&restarts), "{state}");
    assert!(
        took >= Duration::from_secs(10 * u64::from(restarts) - 5),
        "gave up after {took:?}: {state}"
    );
    std::thread::sleep(Duration::from_secs(12));
    let later = show();
    assert!(
        later.contains("ActiveState=failed") && later.contains(&format!("NRestarts={restarts}")),
        "restarted again: {later}"
    );
    let status = sandbox.openmsi_fails("manage-service status fragile");
    assert!(status.contains("failed"), "{status}");
    assert!(status.contains("last warning or error"), "{status}");
}

/// `manage-service install NAME -- relay ...`: the destination config given by a relative path
/// and the default state folder are written out in full; the relay moves a file from one topic
/// to another as user `lab` and stops cleanly.
#[test]
fn a_relay_runs_as_a_service_and_stops_cleanly() {
    let fixture = TopicFixture::new(common::Storage::Sqlite, "svc-relay", 1);
    let relayed = common::unique_topic("svc-relayed");
    fixture.broker.create_topic(&relayed, 2);
    let sandbox = Sandbox::boot();
    add_lab_user(&sandbox);
    let config = write_sandbox_config(&sandbox, "lab.config", &fixture.broker.bootstrap());
    // The destination's config, named relative to /srv where install runs.
    let far = sandbox.host_path("/srv/far.config");
    std::fs::copy(sandbox.host_path(&config), &far).unwrap();
    let topic = &fixture.topic;
    let made = sandbox.sh("mkdir -p /srv/relay-state && chown lab /srv/relay-state");
    assert!(made.status.success(), "{}", text(&made));
    let installed = sandbox.openmsi_ok(&format!(
        "manage-service install mover --run-as lab -- relay --config {config} --topic {topic} \
         --to-topic {relayed} --to-config far.config --state-dir /srv/relay-state"
    ));
    assert!(installed.contains("runs as lab"), "{installed}");
    let unit =
        std::fs::read_to_string(sandbox.host_path("/etc/systemd/system/openmsi-mover.service"))
            .unwrap();
    for line in [
        "\"relay\"",
        "\"--to-config\" \"/srv/far.config\"",
        "\"--state-dir\" \"/srv/relay-state\"",
        "ReadWritePaths=/srv/relay-state",
    ] {
        assert!(unit.contains(line), "{line} missing:\n{unit}");
    }

    let src = fixture.work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("moved.bin"), 200_000, 5);
    common::upload(
        &fixture.cfg,
        topic,
        Some(&src),
        &src.join("moved.bin"),
        65536,
    );
    let out = fixture.work.path().join("out");
    assert!(
        wait_for(Duration::from_secs(60), || {
            common::download_until_idle(&fixture.cfg, &relayed, &out, "far-reader");
            out.join("moved.bin").is_file()
        }),
        "{}",
        sandbox.openmsi_ok("manage-service logs mover -n 50")
    );
    assert_eq!(
        sha512_file(&out.join("moved.bin")),
        sha512_file(&src.join("moved.bin"))
    );

    let stopped = sandbox.openmsi_ok("manage-service stop mover");
    assert!(
        stopped.contains("inactive (dead)") && stopped.contains("last run: success"),
        "{stopped}"
    );
    let logs = sandbox.openmsi_ok("manage-service logs mover -n 30");
    assert!(logs.contains("relayed"), "{logs}");
    sandbox.openmsi_ok("manage-service remove mover");
    assert_eq!(sandbox.installed().trim(), "");
}

/// `manage-service install NAME -- s3-transfer BUCKET ...`: the bucket stays the positional
/// argument, the state folder is written out in full; the service puts a file into the bucket
/// of a real S3 server (s3s-fs on the host) as user `lab` and stops cleanly.
#[test]
fn an_s3_transfer_runs_as_a_service_and_stops_cleanly() {
    let fixture = TopicFixture::new(common::Storage::Sqlite, "svc-s3", 1);
    let server = common::s3::S3Server::start("archive");
    let sandbox = Sandbox::boot();
    add_lab_user(&sandbox);
    let config = write_sandbox_config(&sandbox, "s3.config", &fixture.broker.bootstrap());
    // The secret is not in the config: s3-transfer takes it from AWS_SECRET_ACCESS_KEY, which
    // install must hand on to the service.
    server.add_to_config(&sandbox.host_path(&config), common::s3::SECRET_KEY);
    let host_config = sandbox.host_path(&config);
    let without_secret: String = std::fs::read_to_string(&host_config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("secret_key_id"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&host_config, without_secret).unwrap();
    let made = sandbox.sh("mkdir -p /srv/s3-state && chown lab /srv/s3-state");
    assert!(made.status.success(), "{}", text(&made));
    let topic = &fixture.topic;
    let secret = format!("AWS_SECRET_ACCESS_KEY={}", common::s3::SECRET_KEY);

    // A bucket that is not there, or no secret at all: refused before anything is installed.
    let refused = sandbox.openmsi_fails(&format!(
        "manage-service install archiver --run-as lab -- s3-transfer no-such-bucket \
         --config {config} --topic {topic} --state-dir /srv/s3-state"
    ));
    assert!(
        refused.contains("secret") && refused.contains("AWS_SECRET_ACCESS_KEY"),
        "{refused}"
    );
    let refused = text(&sandbox.sh(&format!(
        "cd /srv && {secret} openmsi manage-service install archiver --run-as lab -- \
         s3-transfer no-such-bucket --config {config} --topic {topic} \
         --state-dir /srv/s3-state"
    )));
    assert!(
        refused.contains("bucket \"no-such-bucket\" does not exist"),
        "{refused}"
    );
    assert_eq!(sandbox.installed().trim(), "");

    let installed = text(&sandbox.sh(&format!(
        "cd /srv && {secret} openmsi manage-service install archiver --run-as lab -- \
         s3-transfer archive --config {config} --topic {topic} --state-dir /srv/s3-state"
    )));
    assert!(installed.contains("1 variable(s)"), "{installed}");
    let env_text = text(&sandbox.sh("cat /etc/openmsi/services/archiver.env"));
    assert!(
        env_text.contains(&format!(
            "AWS_SECRET_ACCESS_KEY=\"{}\"",
            common::s3::SECRET_KEY
        )),
        "{env_text}"
    );
    let unit =
        std::fs::read_to_string(sandbox.host_path("/etc/systemd/system/openmsi-archiver.service"))
            .unwrap();
    for line in [
        "\"s3-transfer\" \"archive\"",
        "\"--state-dir\" \"/srv/s3-state\"",
        "ReadWritePaths=/srv/s3-state",
    ] {
        assert!(unit.contains(line), "{line} missing:\n{unit}");
    }
    let src = fixture.work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("kept.bin"), 300_000, 6);
    common::upload(
        &fixture.cfg,
        topic,
        Some(&src),
        &src.join("kept.bin"),
        65536,
    );
    let object = server.object("archive", &format!("{topic}/kept.bin"));
    assert!(
        wait_for(Duration::from_secs(60), || object.is_file()
            && sha512_file(&object) == sha512_file(&src.join("kept.bin"))),
        "{}",
        sandbox.openmsi_ok("manage-service logs archiver -n 50")
    );
    let stopped = sandbox.openmsi_ok("manage-service stop archiver");
    assert!(
        stopped.contains("inactive (dead)") && stopped.contains("last run: success"),
        "{stopped}"
    );
    let logs = sandbox.openmsi_ok("manage-service logs archiver -n 30");
    assert!(logs.contains("object written and confirmed"), "{logs}");
    sandbox.openmsi_ok("manage-service remove archiver");
    assert_eq!(sandbox.installed().trim(), "");
}
