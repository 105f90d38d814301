//! The command a service runs: parsed exactly as the program will parse it at every start,
//! limited to the long-running commands, with its folder and config file made absolute (a
//! service does not start in the folder `install` ran in).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::config::lookup::{find_config, ConfigSource};

/// Which long-running command a service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `upload-directory`: reads and writes state in its folder.
    UploadDirectory,
    /// `download-directory`: writes into its folder (created when missing).
    DownloadDirectory,
    /// `relay`: its folder is its state folder (`--state-dir`, created when missing).
    Relay,
    /// `s3-transfer`: like relay, its folder is its state folder (its positional argument is
    /// the bucket).
    S3Transfer,
}

/// Where the service's config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChoice {
    /// A file, by absolute path (referenced, not copied).
    File(PathBuf),
    /// A copy built into the binary (`local`), by name.
    BuiltIn(String),
}

/// A command checked and made fit to run as a service.
#[derive(Debug, Clone)]
pub struct ServiceCommand {
    /// Which command.
    pub kind: Kind,
    /// The arguments after the program's name, folder and `--config` absolute.
    pub args: Vec<String>,
    /// The folder it watches or writes, absolute.
    pub folder: PathBuf,
    /// `--state-dir`, absolute, when given.
    pub state_dir: Option<PathBuf>,
    /// Its config.
    pub config: ConfigChoice,
    /// relay's `--to-config` (the destination cluster's), when given.
    pub to_config: Option<ConfigChoice>,
    /// The topic it uses.
    pub topic: String,
    /// Its bound on the broker's first answer.
    pub connect_timeout: Duration,
    /// download-directory's `--group-id`, when given.
    pub group_id: Option<String>,
    /// s3-transfer's bucket.
    pub bucket: Option<String>,
}

impl ServiceCommand {
    /// A downloader whose config asks for a fresh consumer group at every run would read the
    /// topic from the start after each restart: it gets a group of its own, named after this
    /// host and the service. Returns the group given, if one was.
    pub fn pin_group(&mut self, config_group_is_fresh: bool, service: &str) -> Option<String> {
        let reads_a_topic = matches!(self.kind, Kind::DownloadDirectory | Kind::S3Transfer);
        if !reads_a_topic || self.group_id.is_some() || !config_group_is_fresh {
            return None;
        }
        let id = format!("openmsi-{}-{service}", crate::host::id_safe_name());
        self.args.extend(["--group-id".to_string(), id.clone()]);
        self.group_id = Some(id.clone());
        Some(id)
    }

    /// The subcommand's name.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::UploadDirectory => "upload-directory",
            Kind::DownloadDirectory => "download-directory",
            Kind::Relay => "relay",
            Kind::S3Transfer => "s3-transfer",
        }
    }
}

/// Parses `command` (a subcommand and its arguments) as the program would, refuses anything
/// but upload-directory, download-directory, relay and s3-transfer, and rewrites the folder, `--config`
/// and `--to-config` as absolute paths (relative ones are taken from `cwd`). A missing
/// `--config` is written out as the config the command would find now, and a relay's state
/// folder as the one it would use now.
pub fn parse(command: &[String], cwd: &Path) -> anyhow::Result<ServiceCommand> {
    let Some(first) = command.first() else {
        return Err(anyhow::anyhow!(
            "no command given: install NAME -- upload-directory DIR ..."
        ));
    };
    let argv = std::iter::once("openmsi".to_string()).chain(command.iter().cloned());
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        anyhow::anyhow!("the service's command does not parse: {}", text.trim())
    })?;
    let relay_state: PathBuf;
    let bucket = match &cli.command {
        Command::S3Transfer(a) => Some(a.bucket.clone()),
        _ => None,
    };
    let (kind, dir, state_dir, kafka, group_id, to_config) = match &cli.command {
        Command::UploadDirectory(a) => (
            Kind::UploadDirectory,
            &a.dir,
            &a.state_dir,
            &a.upload.kafka,
            None,
            None,
        ),
        Command::DownloadDirectory(a) => (
            Kind::DownloadDirectory,
            &a.output_dir,
            &a.state_dir,
            &a.kafka,
            a.group_id.clone(),
            None,
        ),
        Command::Relay(a) => {
            relay_state = match a
                .state_dir
                .clone()
                .or_else(|| crate::relay::default_state_dir(&a.kafka.topic))
            {
                Some(dir) => dir,
                None => {
                    return Err(anyhow::anyhow!(
                        "no cache folder for the relay's state (HOME is not set): give --state-dir"
                    ))
                }
            };
            (
                Kind::Relay,
                &relay_state,
                &None,
                &a.kafka,
                a.group_id.clone(),
                a.to_config.as_deref(),
            )
        }
        Command::S3Transfer(a) => {
            relay_state = match a
                .state_dir
                .clone()
                .or_else(|| crate::s3::default_state_dir(&a.bucket, &a.kafka.topic))
            {
                Some(dir) => dir,
                None => {
                    return Err(anyhow::anyhow!(
                    "no cache folder for s3-transfer's state (HOME is not set): give --state-dir"
                ))
                }
            };
            (
                Kind::S3Transfer,
                &relay_state,
                &None,
                &a.kafka,
                a.group_id.clone(),
                None,
            )
        }
        _ => {
            return Err(anyhow::anyhow!(
                "`{first}` is not a long-running command: a service runs upload-directory, \
                 download-directory, relay or s3-transfer"
            ))
        }
    };
    if command.iter().any(|a| {
        a == "--exit-when-idle" || a.starts_with("--exit-when-idle=") || a == "--exit_when_idle"
    }) {
        return Err(anyhow::anyhow!(
            "--exit-when-idle is for scripts: a service runs until it is stopped"
        ));
    }
    let folder = absolute(cwd, dir);
    let state_dir = state_dir.as_deref().map(|d| absolute(cwd, d));
    let config = resolve_config(&kafka.config, cwd)?;
    let to_config = to_config.map(|c| resolve_config(c, cwd)).transpose()?;
    // s3-transfer's positional argument is its bucket, not a folder.
    let folder_argument = (kind != Kind::S3Transfer).then_some(folder.as_path());
    let mut args = rewrite(
        command,
        folder_argument,
        state_dir.as_deref(),
        &config,
        to_config.as_ref(),
    )?;
    if matches!(kind, Kind::Relay | Kind::S3Transfer) {
        // Its state folder is its folder: named in full, whoever the service runs as.
        replace_or_add(&mut args, "--state-dir", text(&folder)?);
    }
    Ok(ServiceCommand {
        kind,
        args,
        folder,
        state_dir,
        config,
        to_config,
        topic: kafka.topic.clone(),
        connect_timeout: Duration::from_secs(kafka.connect_timeout),
        group_id,
        bucket,
    })
}

/// Sets `flag`'s value in a rewritten argument list (`--flag VALUE` form), adding it when
/// absent.
fn replace_or_add(args: &mut Vec<String>, flag: &str, value: String) {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value,
        _ => args.extend([flag.to_string(), value]),
    }
}

/// `path` made absolute against `cwd` (without resolving symbolic links: the user named it).
fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    let joined = cwd.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Finds the config as the command would now; a file is referenced by absolute path.
fn resolve_config(spec: &str, cwd: &Path) -> anyhow::Result<ConfigChoice> {
    match find_config(spec)? {
        ConfigSource::File(path) => Ok(ConfigChoice::File(absolute(cwd, &path))),
        ConfigSource::Embedded { .. } => Ok(ConfigChoice::BuiltIn(spec.to_string())),
    }
}

/// The argument list with the folder (the first positional argument, when `folder` is given),
/// `--state-dir` and `--config` replaced. Options are told apart from their values with the parser's own table of
/// arguments.
fn rewrite(
    command: &[String],
    folder: Option<&Path>,
    state_dir: Option<&Path>,
    config: &ConfigChoice,
    to_config: Option<&ConfigChoice>,
) -> anyhow::Result<Vec<String>> {
    let mut root = Cli::command();
    root.build();
    let sub = root
        .find_subcommand(&command[0])
        .ok_or_else(|| anyhow::anyhow!("unknown command `{}`", command[0]))?;
    let takes_value = |arg: &clap::Arg| arg.get_action().takes_values();
    let find_long = |name: &str| {
        sub.get_arguments().find(|a| {
            a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|al| al.contains(&name))
        })
    };
    let choice_text = |choice: &ConfigChoice| match choice {
        ConfigChoice::File(path) => text(path),
        ConfigChoice::BuiltIn(name) => Ok(name.clone()),
    };
    let config_value = choice_text(config)?;
    let to_config_value = to_config.map(choice_text).transpose()?;
    let mut out = vec![command[0].clone()];
    let mut folder_done = false;
    let mut config_done = false;
    let mut tokens = command[1..].iter();
    while let Some(token) = tokens.next() {
        if token == "--" {
            return Err(anyhow::anyhow!(
                "`--` inside the service's command is not supported"
            ));
        }
        if let Some(long) = token.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let arg = find_long(name);
            let is_config = arg.is_some_and(|a| a.get_id() == "config");
            if let Some(value) = to_config_value
                .as_ref()
                .filter(|_| arg.is_some_and(|a| a.get_id() == "to_config"))
            {
                if inline.is_none() {
                    tokens.next();
                }
                out.extend(["--to-config".to_string(), value.clone()]);
                continue;
            }
            if let Some(state_dir) =
                state_dir.filter(|_| arg.is_some_and(|a| a.get_id() == "state_dir"))
            {
                if inline.is_none() {
                    tokens.next();
                }
                out.extend(["--state-dir".to_string(), text(state_dir)?]);
                continue;
            }
            if arg.is_some_and(takes_value) && inline.is_none() {
                let value = tokens.next().cloned().unwrap_or_default();
                if is_config {
                    out.extend(["--config".to_string(), config_value.clone()]);
                    config_done = true;
                } else {
                    out.extend([token.clone(), value]);
                }
                continue;
            }
            if is_config {
                out.extend(["--config".to_string(), config_value.clone()]);
                config_done = true;
                continue;
            }
            out.push(token.clone());
        } else if token.starts_with('-') && token.len() > 1 {
            let short = token.chars().nth(1);
            let arg = sub.get_arguments().find(|a| a.get_short() == short);
            out.push(token.clone());
            if arg.is_some_and(takes_value) && token.len() == 2 {
                out.extend(tokens.next().cloned());
            }
        } else if let Some(folder) = folder.filter(|_| !folder_done) {
            out.push(text(folder)?);
            folder_done = true;
        } else {
            out.push(token.clone());
        }
    }
    if !config_done {
        out.extend(["--config".to_string(), config_value]);
    }
    Ok(out)
}

fn text(path: &Path) -> anyhow::Result<String> {
    path.to_str().map(str::to_string).ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not valid UTF-8; a service needs a UTF-8 path",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn folder_and_config_become_absolute_and_values_are_not_taken_for_the_folder() {
        let work = tempfile::tempdir().unwrap();
        std::fs::write(
            work.path().join("lab.config"),
            "[broker]\nbootstrap.servers = x:9092\n",
        )
        .unwrap();
        let cwd = work.path();
        let cmd = parse(
            &args(&[
                "upload-directory",
                "--topic",
                "xrd",
                "data/xrd",
                "--config",
                &cwd.join("lab.config").to_string_lossy(),
                "--upload-regex",
                "tif$",
                "--poll",
            ]),
            cwd,
        )
        .unwrap();
        assert_eq!(cmd.kind, Kind::UploadDirectory);
        assert_eq!(cmd.folder, cwd.join("data/xrd"));
        assert_eq!(cmd.topic, "xrd");
        assert_eq!(
            cmd.args,
            args(&[
                "upload-directory",
                "--topic",
                "xrd",
                &cwd.join("data/xrd").to_string_lossy(),
                "--config",
                &cwd.join("lab.config").to_string_lossy(),
                "--upload-regex",
                "tif$",
                "--poll",
            ])
        );
        // No --config: the one the command would use now is written out.
        let cmd = parse(&args(&["download-directory", "out", "--topic=t"]), cwd).unwrap();
        let written = match &cmd.config {
            ConfigChoice::BuiltIn(name) => name.clone(),
            // In the source tree, config_files/ is found before the built-in copy.
            ConfigChoice::File(path) => path.to_string_lossy().into_owned(),
        };
        assert_eq!(
            cmd.args[cmd.args.len() - 2..],
            ["--config".to_string(), written]
        );
        assert_eq!(cmd.args[1], cwd.join("out").to_string_lossy());
        // --state-dir becomes absolute too, in both spellings.
        for spelling in [&["--state-dir", "st"][..], &["--state-dir=st"][..]] {
            let mut words = vec!["upload-directory", "in"];
            words.extend_from_slice(spelling);
            let cmd = parse(&args(&words), cwd).unwrap();
            let state = cwd.join("st");
            assert_eq!(cmd.state_dir.as_deref(), Some(state.as_path()));
            assert_eq!(
                cmd.args[2..4],
                [
                    "--state-dir".to_string(),
                    state.to_string_lossy().into_owned()
                ]
            );
        }
    }

    #[test]
    fn a_metrics_address_is_passed_through_to_the_service_unchanged() {
        let cwd = Path::new("/");
        let cmd = parse(
            &args(&[
                "download-directory",
                "out",
                "--metrics-addr",
                "0.0.0.0:9464",
            ]),
            cwd,
        )
        .unwrap();
        assert_eq!(
            cmd.args[2..4],
            ["--metrics-addr".to_string(), "0.0.0.0:9464".to_string()]
        );
        let err = parse(
            &args(&["upload-directory", "in", "--metrics-addr", "9464"]),
            cwd,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not a HOST:PORT"), "{err}");
    }

    #[test]
    fn an_s3_transfer_keeps_its_bucket_and_gets_its_state_folder_named() {
        let work = tempfile::tempdir().unwrap();
        std::fs::write(
            work.path().join("lab.config"),
            "[broker]\nbootstrap.servers = x:9092\n",
        )
        .unwrap();
        let config = work.path().join("lab.config").display().to_string();
        let cmd = parse(
            &args(&[
                "s3-transfer",
                "lab-bucket",
                "--config",
                &config,
                "--topic",
                "raw",
                "--state-dir",
                "s3-state",
            ]),
            work.path(),
        )
        .unwrap();
        assert_eq!(cmd.kind, Kind::S3Transfer);
        assert_eq!(cmd.folder, work.path().join("s3-state"));
        let state = work.path().join("s3-state").display().to_string();
        assert_eq!(
            cmd.args,
            [
                "s3-transfer",
                "lab-bucket",
                "--config",
                &config,
                "--topic",
                "raw",
                "--state-dir",
                &state,
            ]
        );
    }

    #[test]
    fn a_relay_gets_absolute_configs_and_its_state_folder_named() {
        let work = tempfile::tempdir().unwrap();
        for name in ["src.config", "dst.config"] {
            std::fs::write(
                work.path().join(name),
                "[broker]\nbootstrap.servers = x:9092\n",
            )
            .unwrap();
        }
        let dst = work.path().join("dst.config").display().to_string();
        let src = work.path().join("src.config").display().to_string();
        let cmd = parse(
            &args(&[
                "relay",
                "--config",
                &src,
                "--topic",
                "raw",
                "--to-topic",
                "public",
                &format!("--to-config={dst}"),
                "--state-dir",
                "state",
            ]),
            work.path(),
        )
        .unwrap();
        assert_eq!(cmd.kind, Kind::Relay);
        assert_eq!(cmd.folder, work.path().join("state"));
        let state = work.path().join("state").display().to_string();
        assert_eq!(
            cmd.args,
            [
                "relay",
                "--config",
                &src,
                "--topic",
                "raw",
                "--to-topic",
                "public",
                "--to-config",
                &dst,
                "--state-dir",
                &state
            ]
        );
        assert_eq!(
            cmd.to_config,
            Some(ConfigChoice::File(work.path().join("dst.config")))
        );
        // Without --state-dir: the one it would use now, written out.
        let cmd = parse(
            &args(&["relay", "--config", &src, "--route", "x=y"]),
            work.path(),
        )
        .unwrap();
        assert!(cmd
            .args
            .ends_with(&["--state-dir".to_string(), cmd.folder.display().to_string()]));
        assert!(
            cmd.folder.ends_with("openmsi/relay/openmsistream"),
            "{:?}",
            cmd.folder
        );
    }

    #[test]
    fn other_commands_and_bad_arguments_are_refused_with_the_reason() {
        let cwd = Path::new("/");
        let err = parse(&args(&["upload-file", "x"]), cwd)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a long-running command"), "{err}");
        let err = parse(&args(&["upload-directory"]), cwd)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not parse"), "{err}");
        let err = parse(&args(&["frobnicate"]), cwd).unwrap_err().to_string();
        assert!(err.contains("does not parse"), "{err}");
        let err = parse(
            &args(&["download-directory", "o", "--exit-when-idle", "3"]),
            cwd,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("for scripts"), "{err}");
        let err = parse(
            &args(&["upload-directory", "d", "--config", "/nonexistent/x.config"]),
            cwd,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("x.config"), "{err}");
    }
}
