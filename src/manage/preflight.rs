//! The checks `install` makes before anything is installed, as the service's user: the config
//! loads with every `$VARIABLE` resolved, the folder can be used, s3-transfer's bucket answers,
//! the broker answers and the topic exists. Each failure is one line naming the problem.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use super::command::{ConfigChoice, Kind, ServiceCommand};
use crate::admin::Admin;
use crate::config::LoadedConfig;
use crate::kafka::topic::check_topic;
use crate::s3::settings::S3Settings;

/// Environment variables a service's config reads, with the values it will get.
pub type ServiceEnv = BTreeMap<String, String>;

/// Loads the config with the process environment overlaid by `known`; a variable the config
/// needs and nobody set is asked for on a terminal (without echo) when `ask` allows, and is
/// otherwise the reason for refusing. Returns the config and every variable it read that has
/// a value (what the service's environment file must hold).
pub fn load_config(
    choice: &ConfigChoice,
    known: &ServiceEnv,
    ask: bool,
) -> anyhow::Result<(LoadedConfig, ServiceEnv)> {
    let mut values = known.clone();
    loop {
        let read: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let env = |name: &str| {
            read.borrow_mut().push(name.to_string());
            values
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
        };
        let loaded = match choice {
            ConfigChoice::File(path) => std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))
                .and_then(|f| Ok(LoadedConfig::from_reader(path, f, &env)?)),
            ConfigChoice::BuiltIn(name) => Ok(LoadedConfig::load(name)?),
        };
        let unset = match &loaded {
            Err(_) => read
                .borrow()
                .iter()
                .find(|n| env_value(&values, n).is_none())
                .cloned(),
            Ok(_) => None,
        };
        match (loaded, unset) {
            (Ok(config), _) => {
                let needed = read
                    .into_inner()
                    .into_iter()
                    .filter_map(|n| env_value(&values, &n).map(|v| (n, v)))
                    .collect();
                return Ok((config, needed));
            }
            (Err(reason), Some(var)) if ask && std::io::stdin().is_terminal() => {
                let value = rpassword::prompt_password(format!(
                    "The config needs ${var} ({reason}).\nValue of {var} for the service: "
                ))
                .map_err(|e| anyhow::anyhow!("could not read {var} from the terminal: {e}"))?;
                values.insert(var, value);
            }
            (Err(reason), Some(_)) => {
                return Err(anyhow::anyhow!(
                    "{reason}. The service gets the variables its config uses from an \
                     environment file written at install: set it in install's environment, or \
                     run install on a terminal to be asked"
                ))
            }
            (Err(reason), None) => return Err(reason),
        }
    }
}

fn env_value(values: &ServiceEnv, name: &str) -> Option<String> {
    values
        .get(name)
        .cloned()
        .or_else(|| std::env::var(name).ok())
}

/// The folder can be used by this process: upload-directory's exists and is readable and
/// writable (its state lives inside); download-directory's is writable, or can be created.
pub fn check_folder(kind: Kind, folder: &Path) -> anyhow::Result<()> {
    match kind {
        Kind::UploadDirectory => {
            if !folder.is_dir() {
                return Err(anyhow::anyhow!(
                    "{} is not a folder (upload-directory watches an existing folder)",
                    folder.display()
                ));
            }
            writable(folder, true)
        }
        Kind::DownloadDirectory | Kind::Relay | Kind::S3Transfer => {
            if folder.is_dir() {
                return writable(folder, true);
            }
            if folder.exists() {
                return Err(anyhow::anyhow!(
                    "{} exists and is not a folder",
                    folder.display()
                ));
            }
            let mut parent = folder.parent();
            while let Some(p) = parent {
                if p.is_dir() {
                    return writable(p, false).map_err(|e| {
                        anyhow::anyhow!(
                            "{} does not exist and cannot be created: {e}",
                            folder.display()
                        )
                    });
                }
                parent = p.parent();
            }
            Err(anyhow::anyhow!(
                "{} has no existing parent folder",
                folder.display()
            ))
        }
    }
}

/// Whether this process may list (when `read`), enter and create files in `dir`.
#[cfg(unix)]
fn writable(dir: &Path, read: bool) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| anyhow::anyhow!("{} contains a NUL byte", dir.display()))?;
    let mode = libc::W_OK | libc::X_OK | if read { libc::R_OK } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        return Ok(());
    }
    // Read before anything else can overwrite errno (looking up the user name does).
    let reason = std::io::Error::last_os_error();
    let user = super::users::current_user_name();
    Err(anyhow::anyhow!(
        "{} is not {} by {user}: {}",
        dir.display(),
        if read {
            "readable and writable"
        } else {
            "writable"
        },
        reason
    ))
}

#[cfg(windows)]
fn writable(dir: &Path, _read: bool) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.permissions().readonly() => Ok(()),
        Ok(_) => Err(anyhow::anyhow!("{} is read-only", dir.display())),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", dir.display())),
    }
}

/// The broker answers within the command's `--connect-timeout` and the topic exists.
pub fn check_broker(config: LoadedConfig, command: &ServiceCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(config, command.connect_timeout)?;
    check_topic(
        admin.client.inner(),
        &admin.cfg,
        &command.topic,
        command.connect_timeout,
        &|| {},
    )?;
    Ok(())
}

/// s3-transfer's `[s3]` settings, made as the command makes them: what the section lacks comes
/// from the `AWS_*` variables, and those read, with their values, join `env` (the service
/// gets them from its environment file, not from this shell).
pub fn s3_settings(config: &LoadedConfig, env: &mut ServiceEnv) -> anyhow::Result<S3Settings> {
    let read: RefCell<ServiceEnv> = RefCell::new(ServiceEnv::new());
    let lookup = |name: &str| {
        let value = env_value(env, name)?;
        read.borrow_mut().insert(name.to_string(), value.clone());
        Some(value)
    };
    let settings = S3Settings::from_config(config, &lookup)?;
    env.extend(read.into_inner());
    Ok(settings)
}

/// s3-transfer's bucket answers with the config's `[s3]` settings (see [`s3_settings`]).
pub fn check_bucket(
    config: &LoadedConfig,
    bucket: &str,
    connect_timeout: std::time::Duration,
    env: &mut ServiceEnv,
) -> anyhow::Result<()> {
    let settings = s3_settings(config, env)?;
    crate::s3::check_bucket_answers(&settings, bucket, connect_timeout)
}

/// Every check, in this process: config (asking on a terminal when `ask`), folder, bucket
/// (s3-transfer), broker. Returns the environment the service needs.
pub fn check_all(
    command: &ServiceCommand,
    known: &ServiceEnv,
    ask: bool,
) -> anyhow::Result<ServiceEnv> {
    let (config, mut env) = load_config(&command.config, known, ask)?;
    if let Some(to_config) = &command.to_config {
        let (_, more) = load_config(to_config, &env, ask)?;
        env.extend(more);
    }
    check_folder(command.kind, &command.folder)?;
    if let Some(bucket) = &command.bucket {
        check_bucket(&config, bucket, command.connect_timeout, &mut env)?;
    }
    check_broker(config, command)?;
    Ok(env)
}
