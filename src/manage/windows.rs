//! Windows: services of the Service Control Manager, through the windows-service crate. The
//! SCM starts `openmsi manage-service host NAME -- COMMAND`, which registers with it, loads the
//! service's environment file, and runs the command; SERVICE_CONTROL_STOP (and shutdown) take
//! the same path as `quit`. Each service keeps, in `%ProgramData%\openmsi\services\`, its
//! environment file, a record of what it runs, and the program's last status line.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState as ScmState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{envfile, InstallRequest, Installed, ServiceState};

/// The account a service runs as unless `--run-as` says otherwise: unprivileged.
pub const DEFAULT_ACCOUNT: &str = r"NT AUTHORITY\LocalService";

/// What a service runs, kept beside its environment file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The service's name.
    pub name: String,
    /// `upload-directory C:\data`, for `list` and `status`.
    pub summary: String,
    /// The program's log file (in the folder's `.openmsi\`).
    pub log_file: PathBuf,
    /// Seconds a stop may take.
    pub stop_timeout: u64,
}

/// The SCM's name of service `name`.
pub fn scm_name(name: &str) -> String {
    format!("openmsi-{name}")
}

/// `%ProgramData%\openmsi\services`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("PROGRAMDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join("openmsi")
        .join("services")
}

fn env_path(name: &str) -> PathBuf {
    env_path_in(&data_dir(), name)
}

fn env_path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.env"))
}

fn record_path(name: &str) -> PathBuf {
    data_dir().join(format!("{name}.json"))
}

/// Where the service host writes the status line.
pub fn status_path(name: &str) -> PathBuf {
    status_path_in(&data_dir(), name)
}

fn status_path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.status"))
}

fn record(name: &str) -> anyhow::Result<ServiceRecord> {
    let path = record_path(name);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no openmsi service `{name}` here ({} is missing); `openmsi manage-service list` shows them",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
}

fn manager(access: ServiceManagerAccess) -> anyhow::Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT | access)
        .context("cannot open the Service Control Manager (run as an administrator)")
}

/// Installs the service, sets its recovery actions, and starts it unless asked not to.
pub fn install(
    request: &InstallRequest,
    account: Option<(String, Option<String>)>,
) -> anyhow::Result<Installed> {
    let name = &request.name;
    if record_path(name).exists() {
        bail!("a service `{name}` is already installed; remove it first: openmsi manage-service remove {name}");
    }
    std::fs::create_dir_all(data_dir())
        .with_context(|| format!("cannot create {}", data_dir().display()))?;
    let env_text = envfile::render(&request.env)?;
    // The environment holds the config's secrets: readable by this account only where the
    // platform allows it, and never half-written.
    crate::state::atomic::write_private_atomically(&env_path(name), env_text.as_bytes())?;
    let log_file = crate::state::StateDir::located(
        &request.command.folder,
        request.command.state_dir.as_deref(),
    )
    .log_file(request.command.name());
    let summary = format!(
        "{} {}",
        request.command.name(),
        request.command.folder.display()
    );
    let rec = ServiceRecord {
        name: name.clone(),
        summary: summary.clone(),
        log_file,
        stop_timeout: request.stop_timeout,
    };
    crate::state::write_atomically(
        &record_path(name),
        serde_json::to_string_pretty(&rec)?.as_bytes(),
    )?;
    let cleanup = || {
        for p in [env_path(name), record_path(name), status_path(name)] {
            let _ = std::fs::remove_file(p);
        }
    };
    let mut launch: Vec<OsString> = ["manage-service", "host", name.as_str(), "--data-dir"]
        .iter()
        .map(OsString::from)
        .collect();
    launch.push(data_dir().into_os_string());
    launch.push("--".into());
    launch.extend(request.command.args.iter().map(OsString::from));
    let (account_name, account_password) = match account {
        Some((user, password)) => (Some(OsString::from(user)), password.map(OsString::from)),
        None => (None, None),
    };
    let info = ServiceInfo {
        name: OsString::from(scm_name(name)),
        display_name: OsString::from(format!("openmsi {name}")),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: request.program.clone(),
        launch_arguments: launch,
        dependencies: vec![],
        account_name,
        account_password,
    };
    let scm = manager(ServiceManagerAccess::CREATE_SERVICE).inspect_err(|_| cleanup())?;
    let service = scm
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG
                | ServiceAccess::START
                | ServiceAccess::QUERY_STATUS
                | ServiceAccess::DELETE
                | ServiceAccess::STOP,
        )
        .map_err(|e| {
            cleanup();
            anyhow::anyhow!("the Service Control Manager refused the service: {e}")
        })?;
    let mut notes = Vec::new();
    let _ = service.set_description(format!("openmsi {name}: {summary}"));
    // Restart after a crash or a failed run: 10 s, 10 s, then 60 s; the count resets after a
    // day without failures.
    let actions = ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![
            restart_after(10),
            restart_after(10),
            restart_after(60),
        ]),
    };
    if let Err(e) = service
        .update_failure_actions(actions)
        .and_then(|()| service.set_failure_actions_on_non_crash_failures(true))
    {
        notes.push(format!("could not set the restart-on-failure actions: {e}"));
    }
    if request.start {
        let started = service
            .start::<&OsStr>(&[])
            .map_err(anyhow::Error::from)
            .and_then(|()| wait_for_state(name, ScmState::Running, Duration::from_secs(60)));
        if let Err(e) = started {
            let _ = service.delete();
            cleanup();
            return Err(e.context("the service did not start; nothing is left installed"));
        }
    }
    Ok(Installed {
        unit: PathBuf::from(format!("service {}", scm_name(name))),
        env_file: env_path(name),
        notes,
        // %ProgramData% is readable by local users; openmsi sets no ACL of its own yet.
        env_readable_by: None,
    })
}

fn restart_after(secs: u64) -> ServiceAction {
    ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    }
}

fn query(name: &str) -> anyhow::Result<ServiceStatus> {
    let scm = manager(ServiceManagerAccess::empty())?;
    let service = scm
        .open_service(scm_name(name), ServiceAccess::QUERY_STATUS)
        .with_context(|| {
            format!(
                "no service {} in the Service Control Manager",
                scm_name(name)
            )
        })?;
    Ok(service.query_status()?)
}

fn wait_for_state(name: &str, want: ScmState, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let now = query(name)?.current_state;
        if now == want {
            return Ok(());
        }
        if now == ScmState::Stopped && want == ScmState::Running {
            bail!("the service stopped right after starting; see `openmsi manage-service logs {name}`");
        }
        if Instant::now() >= deadline {
            bail!(
                "the service is {now:?}, not {want:?}, after {} s",
                within.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The service's state: the SCM's, the program's status line, the newest warning in its log.
pub fn status(name: &str) -> anyhow::Result<ServiceState> {
    let rec = record(name)?;
    let st = query(name)?;
    let status_text = std::fs::read_to_string(status_path(name)).unwrap_or_default();
    let last_error = std::fs::read_to_string(&rec.log_file).ok().and_then(|log| {
        log.lines()
            .rev()
            .find(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_string)
    });
    Ok(ServiceState {
        running: st.current_state == ScmState::Running,
        state: format!("{:?}", st.current_state).to_lowercase(),
        since: String::new(),
        pid: st.process_id,
        restarts: 0,
        last_result: match st.exit_code {
            ServiceExitCode::Win32(0) => String::new(),
            ServiceExitCode::Win32(c) => format!("exit code {c}"),
            ServiceExitCode::ServiceSpecific(c) => format!("exit code {c}"),
        },
        status_text: status_text.trim().to_string(),
        description: format!("openmsi {name}: {}", rec.summary),
        last_error,
    })
}

/// Prints the newest `lines` lines of the service's log file (and follows it).
pub fn logs(name: &str, lines: u32, follow: bool) -> anyhow::Result<()> {
    let rec = record(name)?;
    let text = std::fs::read_to_string(&rec.log_file)
        .with_context(|| format!("cannot read the service's log {}", rec.log_file.display()))?;
    let all: Vec<&str> = text.lines().collect();
    for line in &all[all.len().saturating_sub(lines as usize)..] {
        println!("{line}");
    }
    if !follow {
        return Ok(());
    }
    let mut shown = text.len() as u64;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Ok(text) = std::fs::read(&rec.log_file) else {
            continue;
        };
        if (text.len() as u64) > shown {
            print!("{}", String::from_utf8_lossy(&text[shown as usize..]));
            shown = text.len() as u64;
        }
    }
}

/// start, stop or restart; returns how long it took.
pub fn control(name: &str, verb: &str) -> anyhow::Result<Duration> {
    let rec = record(name)?;
    let scm = manager(ServiceManagerAccess::empty())?;
    let service = scm.open_service(
        scm_name(name),
        ServiceAccess::START | ServiceAccess::STOP | ServiceAccess::QUERY_STATUS,
    )?;
    let started = Instant::now();
    let stop_bound = Duration::from_secs(rec.stop_timeout + 10);
    if verb != "start" && service.query_status()?.current_state != ScmState::Stopped {
        service.stop()?;
        wait_for_state(name, ScmState::Stopped, stop_bound)?;
    }
    if verb != "stop" {
        service.start::<&OsStr>(&[])?;
        wait_for_state(name, ScmState::Running, Duration::from_secs(60))?;
    }
    Ok(started.elapsed())
}

/// Stops and deletes the service and its files; returns what was removed.
pub fn remove(name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let rec = record(name)?;
    let scm = manager(ServiceManagerAccess::empty())?;
    if let Ok(service) = scm.open_service(
        scm_name(name),
        ServiceAccess::STOP | ServiceAccess::QUERY_STATUS | ServiceAccess::DELETE,
    ) {
        if service.query_status()?.current_state != ScmState::Stopped {
            service.stop()?;
            wait_for_state(
                name,
                ScmState::Stopped,
                Duration::from_secs(rec.stop_timeout + 10),
            )?;
        }
        service.delete()?;
    }
    let mut removed = vec![PathBuf::from(format!("service {}", scm_name(name)))];
    for p in [env_path(name), record_path(name), status_path(name)] {
        if p.exists() {
            std::fs::remove_file(&p)?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Every openmsi service: (name, state).
pub fn list() -> anyhow::Result<Vec<(String, ServiceState)>> {
    let Ok(entries) = std::fs::read_dir(data_dir()) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .filter_map(|n| status(&n).ok().map(|s| (n, s)))
        .collect())
}

// ------------------------------------------------------------------------------------------
// The service host: what the SCM runs.

/// What the SCM's callback runs.
#[derive(Debug, Clone)]
struct Hosted {
    name: String,
    data_dir: PathBuf,
    command: Vec<String>,
    /// Runs the parsed command (the program's own entry point, handed down so this module
    /// does not import the layer above it).
    runner: super::CommandRunner,
}

static HOSTED: OnceLock<Hosted> = OnceLock::new();
/// The hosted command's exit code.
static EXIT: AtomicU32 = AtomicU32::new(0);

define_windows_service!(ffi_service_main, service_main);

/// Runs as service `name` under the SCM (which must have started this process).
pub fn host(
    name: String,
    data_dir: PathBuf,
    command: Vec<String>,
    runner: super::CommandRunner,
) -> anyhow::Result<ExitCode> {
    let scm = scm_name(&name);
    HOSTED
        .set(Hosted {
            name,
            data_dir,
            command,
            runner,
        })
        .map_err(|_| anyhow::anyhow!("internal: service hosted twice"))?;
    service_dispatcher::start(&scm, ffi_service_main).context(
        "manage-service host is started by the Service Control Manager, not by hand \
         (use manage-service start)",
    )?;
    Ok(ExitCode::from(EXIT.load(Ordering::Relaxed).min(255) as u8))
}

fn service_main(_arguments: Vec<OsString>) {
    let Some(Hosted {
        name,
        data_dir,
        command,
        runner,
    }) = HOSTED.get().cloned()
    else {
        return;
    };
    let handler = |event| match event {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            crate::console::request_stop();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(handle) = service_control_handler::register(scm_name(&name), handler) else {
        return;
    };
    let report = |state: ScmState, accept: ServiceControlAccept, code: u32| {
        let _ = handle.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code: ServiceExitCode::Win32(code),
            checkpoint: 0,
            wait_hint: Duration::from_secs(30),
            process_id: None,
        });
    };
    report(
        ScmState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        0,
    );
    let code = run_hosted(&name, &data_dir, &command, runner);
    EXIT.store(code, Ordering::Relaxed);
    // A non-zero code makes the SCM run the recovery actions (restart).
    report(ScmState::Stopped, ServiceControlAccept::empty(), code);
}

/// Loads the environment file and runs the command; returns its exit code.
fn run_hosted(
    name: &str,
    data_dir: &Path,
    command: &[String],
    runner: super::CommandRunner,
) -> u32 {
    if let Ok(text) = std::fs::read_to_string(env_path_in(data_dir, name)) {
        for (key, value) in envfile::parse(&text) {
            // Before the command starts, which reads them when it loads its config (and
            // Windows synchronises environment access itself).
            std::env::set_var(key, value);
        }
    }
    let status_file = status_path_in(data_dir, name);
    tracing::info!(service = %scm_name(name), status_file = %status_file.display(), "running as a Windows service");
    std::env::set_var(crate::service::STATUS_FILE_ENV, status_file);
    let argv = std::iter::once("openmsi".to_string()).chain(command.iter().cloned());
    let cli = match <crate::cli::Cli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            tracing::error!("the service's command does not parse: {e}");
            return 2;
        }
    };
    match runner(cli) {
        Ok(code) if code == ExitCode::SUCCESS => 0,
        Ok(_) => 1,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    }
}

/// Checks `path` can be named in a service's command (Windows paths are UTF-16; openmsi's
/// arguments are UTF-8).
pub fn check_path(path: &Path) -> anyhow::Result<()> {
    path.to_str()
        .map(|_| ())
        .with_context(|| format!("{} is not valid Unicode", path.display()))
}
