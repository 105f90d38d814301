//! systemd: units in `/etc/systemd/system` (system services, installed by root) or
//! `~/.config/systemd/user` (`--user`), driven with `systemctl` and read with `journalctl`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{bail, Context};

use super::unit::{self, UnitSpec};
use super::users::{self, Account};
use super::{InstallRequest, Installed, ServiceState};

/// System or user manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The system manager (root).
    System,
    /// The invoking user's manager.
    User,
}

impl Scope {
    /// `--user` or not.
    pub fn of(user: bool) -> Self {
        if user {
            Scope::User
        } else {
            Scope::System
        }
    }

    fn flag(self) -> Option<&'static str> {
        (self == Scope::User).then_some("--user")
    }

    /// Where units of this scope live.
    fn unit_dir(self) -> anyhow::Result<PathBuf> {
        Ok(match self {
            Scope::System => PathBuf::from("/etc/systemd/system"),
            Scope::User => config_home()?.join("systemd/user"),
        })
    }

    /// Where the environment files of this scope's services live.
    fn env_dir(self) -> anyhow::Result<PathBuf> {
        Ok(match self {
            Scope::System => PathBuf::from("/etc/openmsi/services"),
            Scope::User => config_home()?.join("openmsi/services"),
        })
    }
}

fn config_home() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; cannot find ~/.config")?;
    Ok(PathBuf::from(home).join(".config"))
}

/// `systemctl [--user] ARGS...`, its output captured.
fn systemctl(scope: Scope, args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = Command::new("systemctl");
    cmd.args(scope.flag()).args(args);
    cmd.output()
        .context("cannot run systemctl (is systemd the service manager here?)")
}

/// Runs systemctl and fails with its own message when it fails.
fn systemctl_ok(scope: Scope, args: &[&str]) -> anyhow::Result<()> {
    let out = systemctl(scope, args)?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The unit's properties as `systemctl show` gives them.
fn show(scope: Scope, unit: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = systemctl(
        scope,
        &[
            "show",
            unit,
            "--property=LoadState,ActiveState,SubState,MainPID,Result,ExecMainStatus,NRestarts,StatusText,ActiveEnterTimestamp,Description",
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn state_of(scope: Scope, name: &str) -> anyhow::Result<ServiceState> {
    let unit = unit::unit_name(name);
    let props = show(scope, &unit)?;
    let get = |k: &str| {
        props
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if get("LoadState") == "not-found" || !scope.unit_dir()?.join(&unit).exists() {
        bail!(
            "no openmsi service `{name}` here ({} has no {unit}); `openmsi manage-service list{}` shows them",
            scope.unit_dir()?.display(),
            if scope == Scope::User { " --user" } else { "" }
        );
    }
    Ok(ServiceState {
        running: get("ActiveState") == "active",
        state: format!("{} ({})", get("ActiveState"), get("SubState")),
        since: get("ActiveEnterTimestamp"),
        pid: get("MainPID").parse().ok().filter(|p| *p != 0),
        restarts: get("NRestarts").parse().unwrap_or(0),
        last_result: get("Result"),
        status_text: get("StatusText"),
        description: get("Description"),
        last_error: last_error(scope, &unit),
    })
}

/// The newest warning or error the service logged, if the journal can be read.
fn last_error(scope: Scope, unit: &str) -> Option<String> {
    let out = journal(scope, unit)
        .args(["-p", "warning", "-n", "1", "-o", "cat", "--no-pager", "-q"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// `journalctl` for the unit: the system journal, filtered by the user unit for `--user`
/// (with a volatile journal, user units log into the system journal).
fn journal(scope: Scope, unit: &str) -> Command {
    let mut cmd = Command::new("journalctl");
    match scope {
        Scope::System => cmd.args(["-u", unit]),
        Scope::User => cmd.args(["--user-unit", unit]),
    };
    cmd
}

/// Where a system booted with systemd has its runtime state (what `sd_booted()` looks at).
const SYSTEMD_RUNTIME: &str = "/run/systemd/system";

/// Fails in one line when systemd is not this machine's service manager (a container, WSL1, a
/// minimal VM): no unit can be installed, started or asked about there.
pub fn require_running() -> anyhow::Result<()> {
    if Path::new(SYSTEMD_RUNTIME).is_dir() {
        return Ok(());
    }
    bail!(
        "systemd is not running on this machine (no {SYSTEMD_RUNTIME}; a container or WSL1?), so there is no service manager to install into and nothing was changed. Run the command directly (e.g. under the container's own process manager), or use a machine booted with systemd"
    )
}

/// Writes `text` to `path` atomically with `mode`, owned by `owner` when given (its folder
/// created first).
fn write_private(
    path: &Path,
    text: &str,
    mode: u32,
    owner: Option<&Account>,
) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The state layer's errors name the file.
    crate::state::atomic::write_owned_atomically(
        path,
        text.as_bytes(),
        mode,
        owner.map(|a| (a.uid, a.gid)),
    )?;
    Ok(())
}

/// The folders above `file` that do not exist yet, outermost first.
fn missing_folders(file: &Path) -> Vec<PathBuf> {
    let mut missing: Vec<PathBuf> = file
        .ancestors()
        .skip(1)
        .take_while(|dir| !dir.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    missing
}

/// Installs and enables (and starts unless asked not to) the unit for `request`.
pub fn install(
    scope: Scope,
    request: &InstallRequest,
    account: Option<&Account>,
) -> anyhow::Result<Installed> {
    let unit_name = unit::unit_name(&request.name);
    let unit_path = scope.unit_dir()?.join(&unit_name);
    if unit_path.exists() {
        bail!(
            "a service `{}` is already installed ({}); remove it first: openmsi manage-service remove {}{}",
            request.name,
            unit_path.display(),
            request.name,
            if scope == Scope::User { " --user" } else { "" }
        );
    }
    let env_path = scope.env_dir()?.join(format!("{}.env", request.name));
    // Folders this install creates, removed again if it fails (an install that fails leaves
    // nothing behind).
    let mut created = missing_folders(&env_path);
    created.extend(missing_folders(&unit_path));
    let mut read_write = vec![request.command.folder.clone()];
    read_write.extend(request.command.state_dir.clone());
    read_write.dedup();
    let mut needs_to_see = vec![
        request.program.clone(),
        request.command.folder.clone(),
        request.working_dir.clone(),
    ];
    for config in std::iter::once(&request.command.config).chain(&request.command.to_config) {
        if let super::command::ConfigChoice::File(path) = config {
            needs_to_see.push(path.clone());
        }
    }
    let spec = UnitSpec {
        name: request.name.clone(),
        summary: format!(
            "{} {}",
            request.command.name(),
            request.command.folder.display()
        ),
        exec: std::iter::once(request.program.to_string_lossy().into_owned())
            .chain(request.command.args.iter().cloned())
            .collect(),
        user: account.map(|a| a.name.clone()),
        env_file: env_path.clone(),
        working_dir: request.working_dir.clone(),
        read_write,
        needs_to_see,
        stop_timeout: request.stop_timeout,
        system: scope == Scope::System,
    };
    for arg in &spec.exec {
        unit::check_writable(arg)?;
    }
    let env_text = super::envfile::render(&request.env)?;
    let remove_created = || {
        for dir in created.iter().rev() {
            // Only if empty: never take away what another install put there meanwhile.
            let _ = fs::remove_dir(dir);
        }
    };
    if let Err(e) = write_private(&env_path, &env_text, 0o600, account) {
        remove_created();
        return Err(e);
    }
    let text = unit::render(&spec);
    if let Err(e) = write_private(&unit_path, &text, 0o644, None) {
        let _ = fs::remove_file(&env_path);
        remove_created();
        return Err(e);
    }
    let undo = || {
        let _ = fs::remove_file(&unit_path);
        let _ = fs::remove_file(&env_path);
        let _ = systemctl(scope, &["daemon-reload"]);
        remove_created();
    };
    let started = (|| {
        systemctl_ok(scope, &["daemon-reload"])?;
        if request.start {
            systemctl_ok(scope, &["enable", "--now", &unit_name])
        } else {
            systemctl_ok(scope, &["enable", &unit_name])
        }
    })();
    if let Err(e) = started {
        let _ = systemctl(scope, &["disable", "--now", &unit_name]);
        undo();
        let _ = systemctl(scope, &["reset-failed", &unit_name]);
        return Err(e.context("the service did not start; nothing is left installed"));
    }
    let mut notes = Vec::new();
    if scope == Scope::User {
        if let Some(hint) = linger_hint() {
            notes.push(hint);
        }
    }
    let env_readable_by = Some(match account {
        Some(a) => a.name.clone(),
        None => users::current_user_name(),
    });
    Ok(Installed {
        unit: unit_path,
        env_file: env_path,
        notes,
        env_readable_by,
    })
}

/// For a user service: without lingering, it stops when the user's last session ends.
fn linger_hint() -> Option<String> {
    let user = users::current()?.name;
    let out = Command::new("loginctl")
        .args(["show-user", &user, "--property=Linger"])
        .output()
        .ok()?;
    let linger = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (linger != "Linger=yes").then(|| {
        format!(
            "user services run only while {user} is logged in, unless lingering is on: \
             sudo loginctl enable-linger {user}"
        )
    })
}

/// The service's state.
pub fn status(scope: Scope, name: &str) -> anyhow::Result<ServiceState> {
    state_of(scope, name)
}

/// Prints the service's journal (and follows it).
pub fn logs(scope: Scope, name: &str, lines: u32, follow: bool) -> anyhow::Result<()> {
    state_of(scope, name)?;
    let unit = unit::unit_name(name);
    let mut cmd = journal(scope, &unit);
    cmd.args(["-n", &lines.to_string(), "--no-pager", "-o", "short-iso"]);
    if follow {
        cmd.arg("-f");
    }
    let status = cmd.status().context("cannot run journalctl")?;
    if !status.success() {
        bail!("journalctl could not read the service's log (exit {status})");
    }
    Ok(())
}

/// start, stop or restart; returns how long it took.
pub fn control(scope: Scope, name: &str, verb: &str) -> anyhow::Result<std::time::Duration> {
    state_of(scope, name)?;
    let started = Instant::now();
    systemctl_ok(scope, &[verb, &unit::unit_name(name)])?;
    Ok(started.elapsed())
}

/// Stops, disables and deletes the service; returns the files removed.
pub fn remove(scope: Scope, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    state_of(scope, name)?;
    let unit_name = unit::unit_name(name);
    systemctl_ok(scope, &["disable", "--now", &unit_name])?;
    let mut removed = Vec::new();
    for path in [
        scope.unit_dir()?.join(&unit_name),
        scope.env_dir()?.join(format!("{name}.env")),
    ] {
        if path.exists() {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            removed.push(path);
        }
    }
    systemctl_ok(scope, &["daemon-reload"])?;
    let _ = systemctl(scope, &["reset-failed", &unit_name]);
    Ok(removed)
}

/// Every openmsi service of `scope`: (name, state).
pub fn list(scope: Scope) -> anyhow::Result<Vec<(String, ServiceState)>> {
    let dir = scope.unit_dir()?;
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_prefix("openmsi-")?
                .strip_suffix(".service")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| state_of(scope, &n).map(|s| (n, s)))
        .collect()
}
