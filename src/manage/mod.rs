//! `openmsi manage-service`: upload-directory and download-directory as OS services.
//!
//! - [`command`]: the service's command, parsed as the program will parse it, paths absolute;
//! - [`preflight`]: the checks made (as the service's user) before anything is installed;
//! - [`users`]: whom a service runs as;
//! - [`unit`] and [`systemd`]: Linux; [`windows`]: the Service Control Manager;
//! - [`envfile`]: the service's environment file (the config's `$VARIABLES`);
//!
//! Every platform module offers the same operations (install, status, logs, start, stop,
//! restart, remove, list) over the same [`InstallRequest`] and [`ServiceState`].

pub mod command;
pub mod envfile;
pub mod preflight;
#[cfg(target_os = "linux")]
pub mod systemd;
pub mod unit;
pub mod users;
#[cfg(windows)]
pub mod windows;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cli::{ServiceCheckArgs, ServiceCommand as Verb, ServiceInstallArgs};
use command::ServiceCommand;
use preflight::ServiceEnv;

/// Longest service name accepted.
const MAX_NAME: usize = 64;

/// What `install` installs.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// The service's name.
    pub name: String,
    /// The program (this binary, absolute).
    pub program: PathBuf,
    /// Its command.
    pub command: ServiceCommand,
    /// The variables its config reads.
    pub env: ServiceEnv,
    /// Where install ran: relative paths in other options resolve there.
    pub working_dir: PathBuf,
    /// Seconds a stop may take before the service is killed.
    pub stop_timeout: u64,
    /// Start it now (it starts at boot either way).
    pub start: bool,
}

/// What `install` wrote.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The unit (or service definition).
    pub unit: PathBuf,
    /// The environment file.
    pub env_file: PathBuf,
    /// Things the user should know (lingering, ...).
    pub notes: Vec<String>,
    /// Who alone can read the environment file, when the platform makes it so.
    pub env_readable_by: Option<String>,
}

/// A service as its manager and the program see it.
#[derive(Debug, Clone, Default)]
pub struct ServiceState {
    /// Running now.
    pub running: bool,
    /// The manager's words for its state.
    pub state: String,
    /// Since when (manager's format), when known.
    pub since: String,
    /// Main process id.
    pub pid: Option<u32>,
    /// Automatic restarts so far.
    pub restarts: u32,
    /// The manager's result of the last run (`success`, `exit-code`, `watchdog`, ...).
    pub last_result: String,
    /// The program's own last status line.
    pub status_text: String,
    /// What it runs.
    pub description: String,
    /// The newest warning or error it logged.
    pub last_error: Option<String>,
}

/// Checks a service name: letters, digits, `-`, `_`, starting with a letter or digit.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "service name {name:?}: use 1 to {MAX_NAME} letters, digits, `-` or `_`, starting \
             with a letter or digit"
        ))
    }
}

/// How a hosted service runs its command: the program's own entry point, handed down by the
/// caller (`app::run`), so that this module never imports the layer that dispatches to it.
pub type CommandRunner = fn(crate::cli::Cli) -> anyhow::Result<ExitCode>;

/// Runs `openmsi manage-service ...`; `runner` runs the command of a hosted Windows service.
pub fn run(verb: Verb, runner: CommandRunner) -> anyhow::Result<ExitCode> {
    match verb {
        Verb::Check(args) => check(args),
        other => platform::run(other, runner),
    }
}

/// The openmsi services installed on this machine (`user_only`: the user's own): name, scope
/// ("system" or "user") and state, as `manage-service list` shows them.
pub fn installed(user_only: bool) -> Vec<(String, &'static str, ServiceState)> {
    platform::installed(user_only)
}

/// `manage-service check -- COMMAND`: every install check, in this process (install runs it as
/// the service's user); the environment already holds the config's variables.
fn check(args: ServiceCheckArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the working folder")?;
    let command = command::parse(&args.command, &cwd)?;
    preflight::check_all(&command, &ServiceEnv::new(), false)?;
    println!("ok: {} can run as a service", command.name());
    Ok(ExitCode::SUCCESS)
}

/// The request for `install`, after the command was parsed (not yet checked).
fn request(args: &ServiceInstallArgs) -> anyhow::Result<InstallRequest> {
    check_name(&args.service.name)?;
    let cwd = std::env::current_dir().context("cannot read the working folder")?;
    let command = command::parse(&args.command, &cwd)?;
    let program = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot find this program's own path")?;
    Ok(InstallRequest {
        name: args.service.name.clone(),
        program,
        command,
        env: ServiceEnv::new(),
        working_dir: cwd,
        stop_timeout: args.stop_timeout,
        start: !args.no_start,
    })
}

/// Reads the config as the service will (a missing variable is asked for on a terminal), keeps
/// the variables it reads (and the `AWS_*` ones s3-transfer's settings fall back to), and gives a downloader whose config asks for a fresh consumer group
/// at every run a stable one. Returns a note about that group.
fn prepare(request: &mut InstallRequest) -> anyhow::Result<Option<String>> {
    let (config, mut env) =
        preflight::load_config(&request.command.config, &ServiceEnv::new(), true)?;
    if let Some(to_config) = &request.command.to_config {
        let (_, more) = preflight::load_config(to_config, &env, true)?;
        env.extend(more);
    }
    if request.command.bucket.is_some() {
        preflight::s3_settings(&config, &mut env)?;
    }
    request.env = env;
    let pinned = request
        .command
        .pin_group(config.consumer_group_is_fresh(), &request.name);
    Ok(pinned.map(|group| {
        format!(
            "consumer group {group} (the config asks for a fresh group at every run; a service \
             resumes where it stopped)"
        )
    }))
}

fn print_installed(request: &InstallRequest, installed: &Installed, runs_as: &str) {
    println!(
        "installed {} ({}, runs as {runs_as}, starts at boot{})",
        installed.unit.display(),
        request.command.name(),
        if request.start { "; started" } else { "" }
    );
    match &request.command.config {
        command::ConfigChoice::File(path) => println!(
            "  config: {} (referenced, not copied: edits apply at the next restart)",
            path.display()
        ),
        command::ConfigChoice::BuiltIn(name) => println!("  config: built-in `{name}`"),
    }
    println!(
        "  environment: {} ({} variable(s) the config reads{})",
        installed.env_file.display(),
        request.env.len(),
        installed
            .env_readable_by
            .as_ref()
            .map(|who| format!(", readable by {who} only"))
            .unwrap_or_default()
    );
    for note in &installed.notes {
        println!("  note: {note}");
    }
    println!("  status: openmsi manage-service status {}", request.name);
}

/// Prints a service's state; the exit code is 0 when it runs, 3 when not (as systemctl's).
fn report_status(name: &str, state: &ServiceState) -> ExitCode {
    print_state(name, state);
    if state.running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn report_removed(name: &str, removed: &[PathBuf]) -> ExitCode {
    println!("removed service {name}: stopped and deleted:");
    for path in removed {
        println!("  {}", path.display());
    }
    ExitCode::SUCCESS
}

fn print_state(name: &str, s: &ServiceState) {
    let mut head = format!("{name}: {}", s.state);
    if s.running && !s.since.is_empty() {
        head.push_str(&format!(" since {}", s.since));
    }
    if let Some(pid) = s.pid {
        head.push_str(&format!("; main PID {pid}"));
    }
    head.push_str(&format!("; restarted {} time(s)", s.restarts));
    if !s.last_result.is_empty() && s.last_result != "success" {
        head.push_str(&format!("; last result: {}", s.last_result));
    }
    println!("{head}");
    if !s.description.is_empty() {
        println!("  runs: {}", s.description);
    }
    println!(
        "  status: {}",
        if s.status_text.is_empty() {
            "(no status line from the program)"
        } else {
            &s.status_text
        }
    );
    if let Some(e) = &s.last_error {
        println!("  last warning or error: {e}");
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use super::*;
    use crate::cli::ServiceName;
    use systemd::Scope;

    /// The openmsi services of this machine (with `user_only`, the user's own): name, scope
    /// ("system" or "user") and state. A scope that cannot be read is left out.
    pub fn installed(user_only: bool) -> Vec<(String, &'static str, ServiceState)> {
        let scopes: &[Scope] = if user_only {
            &[Scope::User]
        } else {
            &[Scope::System, Scope::User]
        };
        let mut out = Vec::new();
        for &s in scopes {
            let kind = if s == Scope::User { "user" } else { "system" };
            for (name, state) in systemd::list(s).unwrap_or_default() {
                out.push((name, kind, state));
            }
        }
        out
    }

    pub fn run(verb: Verb, _runner: CommandRunner) -> anyhow::Result<ExitCode> {
        // Before anything is checked or written: without a running systemd there is nothing
        // to install into, and systemctl's own two lines would not say what to do.
        if !matches!(verb, Verb::Check(_) | Verb::Host(_)) {
            systemd::require_running()?;
        }
        match verb {
            Verb::Install(args) => install(&args),
            Verb::Status(ServiceName { name, scope }) => Ok(report_status(
                &name,
                &systemd::status(Scope::of(scope.user), &name)?,
            )),
            Verb::Logs(args) => {
                let s = &args.service;
                systemd::logs(Scope::of(s.scope.user), &s.name, args.lines, args.follow)?;
                Ok(ExitCode::SUCCESS)
            }
            Verb::Start(s) => control(&s, "start", "started"),
            Verb::Stop(s) => control(&s, "stop", "stopped"),
            Verb::Restart(s) => control(&s, "restart", "restarted"),
            Verb::Remove(ServiceName { name, scope }) => Ok(report_removed(
                &name,
                &systemd::remove(Scope::of(scope.user), &name)?,
            )),
            Verb::List(scope) => {
                let services = installed(scope.user);
                for (name, kind, state) in &services {
                    println!("{name}\t{kind}\t{}\t{}", state.state, state.description);
                }
                if services.is_empty() {
                    println!("no openmsi services");
                }
                Ok(ExitCode::SUCCESS)
            }
            Verb::Check(_) => unreachable!("handled by manage::run"),
            Verb::Host(_) => bail!(
                "manage-service host is what the Windows Service Control Manager starts; \
                 systemd runs the command itself"
            ),
        }
    }

    fn control(s: &ServiceName, verb: &str, done: &str) -> anyhow::Result<ExitCode> {
        let scope = Scope::of(s.scope.user);
        let took = systemd::control(scope, &s.name, verb)?;
        let state = systemd::status(scope, &s.name)?;
        println!(
            "{done} {} in {:.1} s: now {}{}",
            s.name,
            took.as_secs_f64(),
            state.state,
            if state.last_result.is_empty() {
                String::new()
            } else {
                format!(" (last run: {})", state.last_result)
            }
        );
        Ok(ExitCode::SUCCESS)
    }

    fn install(args: &ServiceInstallArgs) -> anyhow::Result<ExitCode> {
        let scope = Scope::of(args.service.scope.user);
        let mut request = request(args)?;
        let account = match scope {
            Scope::System => {
                if !users::is_root() {
                    bail!(
                        "installing a system service needs root (run it with sudo), or install a \
                         user service with --user"
                    );
                }
                let (account, warning) = users::service_account(args.run_as.as_deref())?;
                if let Some(w) = warning {
                    tracing::warn!("{w}");
                }
                Some(account)
            }
            Scope::User => {
                if args.run_as.is_some() {
                    bail!("--run-as is for system services; a user service runs as its user");
                }
                None
            }
        };
        let current = users::current().context("cannot tell which user this is")?;
        let runs_as = account.as_ref().unwrap_or(&current).clone();
        let group_note = prepare(&mut request)?;
        if runs_as.uid == current.uid {
            preflight::check_all(&request.command, &request.env, false)?;
        } else {
            check_as(&runs_as, &request)?;
        }
        let mut installed = systemd::install(scope, &request, account.as_ref())?;
        installed.notes.splice(0..0, group_note);
        print_installed(&request, &installed, &runs_as.name);
        Ok(ExitCode::SUCCESS)
    }

    /// Runs the install checks as the service's user (`runuser`), with the config's variables.
    fn check_as(account: &users::Account, request: &InstallRequest) -> anyhow::Result<()> {
        let output = std::process::Command::new("runuser")
            .args(["-u", &account.name, "--"])
            .arg(&request.program)
            .args(["manage-service", "check", "--"])
            .args(&request.command.args)
            .envs(&request.env)
            .current_dir(&request.working_dir)
            .output()
            .context("cannot run runuser to check the command as the service's user")?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("it failed without a message")
            .trim()
            .trim_start_matches("Error: ")
            .to_string();
        bail!(
            "checked as {} (the service's user): {reason}; nothing was installed",
            account.name
        )
    }
}

#[cfg(windows)]
mod platform {
    use super::*;
    use crate::cli::ServiceName;

    /// The openmsi services of this machine: name, scope and state (none when the service
    /// manager cannot be read).
    pub fn installed(_user_only: bool) -> Vec<(String, &'static str, ServiceState)> {
        windows::list()
            .unwrap_or_default()
            .into_iter()
            .map(|(name, state)| (name, "system", state))
            .collect()
    }

    pub fn run(verb: Verb, runner: CommandRunner) -> anyhow::Result<ExitCode> {
        let no_user = |s: &crate::cli::ServiceScope| -> anyhow::Result<()> {
            if s.user {
                bail!("--user is for systemd; a Windows service belongs to the machine");
            }
            Ok(())
        };
        match verb {
            Verb::Install(args) => {
                no_user(&args.service.scope)?;
                install(&args)
            }
            Verb::Status(ServiceName { name, scope }) => {
                no_user(&scope)?;
                Ok(report_status(&name, &windows::status(&name)?))
            }
            Verb::Logs(args) => {
                no_user(&args.service.scope)?;
                windows::logs(&args.service.name, args.lines, args.follow)?;
                Ok(ExitCode::SUCCESS)
            }
            Verb::Start(s) => control(&s, "start", "started"),
            Verb::Stop(s) => control(&s, "stop", "stopped"),
            Verb::Restart(s) => control(&s, "restart", "restarted"),
            Verb::Remove(ServiceName { name, scope }) => {
                no_user(&scope)?;
                Ok(report_removed(&name, &windows::remove(&name)?))
            }
            Verb::List(scope) => {
                no_user(&scope)?;
                let services = windows::list()?;
                if services.is_empty() {
                    println!("no openmsi services");
                }
                for (name, state) in services {
                    println!("{name}\tsystem\t{}\t{}", state.state, state.description);
                }
                Ok(ExitCode::SUCCESS)
            }
            Verb::Check(_) => unreachable!("handled by manage::run"),
            Verb::Host(args) => windows::host(args.name, args.data_dir, args.command, runner),
        }
    }

    fn control(s: &ServiceName, verb: &str, done: &str) -> anyhow::Result<ExitCode> {
        if s.scope.user {
            bail!("--user is for systemd; a Windows service belongs to the machine");
        }
        let took = windows::control(&s.name, verb)?;
        let state = windows::status(&s.name)?;
        println!(
            "{done} {} in {:.1} s: now {}",
            s.name,
            took.as_secs_f64(),
            state.state
        );
        Ok(ExitCode::SUCCESS)
    }

    fn install(args: &ServiceInstallArgs) -> anyhow::Result<ExitCode> {
        let mut request = request(args)?;
        windows::check_path(&request.program)?;
        let group_note = prepare(&mut request)?;
        preflight::check_all(&request.command, &request.env, false)?;
        let (account, runs_as) = match args.run_as.as_deref() {
            None => (
                Some((windows::DEFAULT_ACCOUNT.to_string(), None)),
                windows::DEFAULT_ACCOUNT.to_string(),
            ),
            Some(system) if system.eq_ignore_ascii_case("LocalSystem") => {
                tracing::warn!(
                    "the service will run as LocalSystem, as asked: a drop box or downloader \
                     does not need it; prefer an unprivileged account"
                );
                (None, "LocalSystem".to_string())
            }
            Some(user) => {
                let password = match std::env::var("OPENMSI_SERVICE_PASSWORD") {
                    Ok(p) => p,
                    Err(_) => rpassword::prompt_password(format!("Password of {user}: "))
                        .context("the account's password (or set OPENMSI_SERVICE_PASSWORD)")?,
                };
                (Some((user.to_string(), Some(password))), user.to_string())
            }
        };
        let mut installed = windows::install(&request, account)?;
        installed.notes.splice(0..0, group_note);
        installed.notes.push(format!(
            "the service's account ({runs_as}) must be able to read the config and write {}",
            request.command.folder.display()
        ));
        print_installed(&request, &installed, &runs_as);
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
mod platform {
    use super::*;

    /// No service manager is supported here.
    pub fn installed(_user_only: bool) -> Vec<(String, &'static str, super::ServiceState)> {
        Vec::new()
    }

    pub fn run(_verb: Verb, _runner: CommandRunner) -> anyhow::Result<ExitCode> {
        bail!("manage-service supports systemd (Linux) and Windows services only")
    }
}
