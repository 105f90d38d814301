//! Finding a config file from what the user gave to `--config`: a path, or a name such as
//! `local` looked up in the config folders and finally among the copies built into the binary.
//!
//! Order (the first hit wins):
//! 1. `spec` as a path (relative to the working directory), then `spec.config` when `spec` has
//!    no extension (OpenMSIStream appends `.config` before looking at the working directory,
//!    so `--config prod` finds `./prod.config` there too);
//! 2. for a relative `spec`, in each folder `spec` then `spec.config`: `$OPENMSI_CONFIG_DIR`,
//!    then OpenMSIStream's `$OPENMSISTREAM_CONFIG_FILE_DIR` (so labs can keep the folder they
//!    already use), then the installed `config_files/` (`<exe dir>/config_files`,
//!    `<exe dir>/../share/openmsi/config_files`), then the source tree's `config_files/` (for
//!    `cargo run`);
//! 3. for a bare file name, the built-in copies of the files shipped in `config_files/`.
//!
//! The search never fails on a folder that does not exist; [`ConfigError::NotFound`] lists
//! every path tried.

use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// The extension OpenMSIStream gives config files; appended to a bare name.
pub const CONFIG_EXTENSION: &str = "config";

/// The environment variable naming our config folder.
pub const CONFIG_DIR_ENV: &str = "OPENMSI_CONFIG_DIR";

/// The environment variable OpenMSIStream uses for its config folder; searched after ours.
pub const REFERENCE_CONFIG_DIR_ENV: &str = "OPENMSISTREAM_CONFIG_FILE_DIR";

/// How an embedded config's path is shown in messages.
pub const EMBEDDED_PREFIX: &str = "<built-in>";

/// The files of `config_files/`, compiled in so that `--config local` works for an installed
/// binary with no `config_files/` folder next to it. (file name, contents)
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "local.config",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config_files/local.config"
        )),
    ),
    (
        "confluent_cloud_example.config",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config_files/confluent_cloud_example.config"
        )),
    ),
    (
        "tls_ca_file.config",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config_files/tls_ca_file.config"
        )),
    ),
    (
        "mutual_tls_pem.config",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config_files/mutual_tls_pem.config"
        )),
    ),
    (
        "mutual_tls_pkcs12.config",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config_files/mutual_tls_pkcs12.config"
        )),
    ),
    (
        "sasl_ssl_scram.config",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config_files/sasl_ssl_scram.config"
        )),
    ),
];

/// Where a config was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file on disk.
    File(PathBuf),
    /// A copy built into the binary.
    Embedded {
        /// File name in `config_files/`, e.g. `local.config`.
        name: &'static str,
        /// The file's text.
        text: &'static str,
    },
}

impl ConfigSource {
    /// The path to show in messages: the file, or `<built-in>/NAME` for an embedded copy.
    pub fn display_path(&self) -> PathBuf {
        match self {
            ConfigSource::File(path) => path.clone(),
            ConfigSource::Embedded { name, .. } => Path::new(EMBEDDED_PREFIX).join(name),
        }
    }
}

/// The places searched for a config given by name. Built from the process environment by
/// [`SearchPlaces::from_environment`]; tests build their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPlaces {
    /// `$OPENMSI_CONFIG_DIR`.
    pub config_dir: Option<PathBuf>,
    /// `$OPENMSISTREAM_CONFIG_FILE_DIR` (OpenMSIStream's variable).
    pub reference_config_dir: Option<PathBuf>,
    /// The folder holding the running executable.
    pub exe_dir: Option<PathBuf>,
    /// The source tree's `config_files/`.
    pub source_dir: Option<PathBuf>,
    /// Whether to fall back to the built-in copies.
    pub embedded: bool,
}

impl SearchPlaces {
    /// The places for this process: its environment variables, its executable's folder, the
    /// source tree it was built from, and the built-in copies.
    pub fn from_environment() -> Self {
        let dir_from_env = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        SearchPlaces {
            config_dir: dir_from_env(CONFIG_DIR_ENV),
            reference_config_dir: dir_from_env(REFERENCE_CONFIG_DIR_ENV),
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf)),
            source_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("config_files")),
            embedded: true,
        }
    }

    /// The folders to search, in order, each with a label for messages.
    fn folders(&self) -> Vec<(PathBuf, String)> {
        let mut folders = Vec::new();
        if let Some(dir) = &self.config_dir {
            folders.push((dir.clone(), format!("${CONFIG_DIR_ENV}")));
        }
        if let Some(dir) = &self.reference_config_dir {
            folders.push((dir.clone(), format!("${REFERENCE_CONFIG_DIR_ENV}")));
        }
        if let Some(exe_dir) = &self.exe_dir {
            folders.push((exe_dir.join("config_files"), "next to the program".into()));
            folders.push((
                exe_dir
                    .join("..")
                    .join("share")
                    .join("openmsi")
                    .join("config_files"),
                "installed".into(),
            ));
        }
        if let Some(dir) = &self.source_dir {
            folders.push((dir.clone(), "source tree".into()));
        }
        folders
    }
}

/// Finds the config `spec` names, searching the places of this process.
pub fn find_config(spec: &str) -> Result<ConfigSource, ConfigError> {
    find_config_in(spec, &SearchPlaces::from_environment())
}

/// Finds the config `spec` names in the given places (see the module docs for the order).
pub fn find_config_in(spec: &str, places: &SearchPlaces) -> Result<ConfigSource, ConfigError> {
    if spec.trim().is_empty() {
        return Err(ConfigError::NotFound {
            spec: spec.to_string(),
            searched: Vec::new(),
        });
    }
    let names = candidate_names(spec);
    let mut searched = Vec::new();
    let mut try_path = |path: PathBuf, label: Option<&str>| {
        let found = path.is_file();
        searched.push(match label {
            Some(label) => format!("{} ({label})", path.display()),
            None => path.display().to_string(),
        });
        found.then_some(path)
    };
    let cwd_label = Path::new(spec).is_relative().then_some("working directory");
    for name in &names {
        if let Some(path) = try_path(PathBuf::from(name), cwd_label) {
            return Ok(ConfigSource::File(path));
        }
    }
    // An absolute path names one place only (joining it onto a folder gives it back).
    if Path::new(spec).is_relative() {
        for (folder, label) in places.folders() {
            for name in &names {
                if let Some(path) = try_path(folder.join(name), Some(&label)) {
                    return Ok(ConfigSource::File(path));
                }
            }
        }
    }
    if places.embedded && is_bare_name(spec) {
        for name in &names {
            if let Some(&(name, text)) = EMBEDDED.iter().find(|(n, _)| n == name) {
                return Ok(ConfigSource::Embedded { name, text });
            }
        }
        let built_in: Vec<&str> = EMBEDDED.iter().map(|(n, _)| *n).collect();
        searched.push(format!("built-in configs: {}", built_in.join(", ")));
    }
    Err(ConfigError::NotFound {
        spec: spec.to_string(),
        searched,
    })
}

/// `spec`, and `spec.config` when it has no extension.
fn candidate_names(spec: &str) -> Vec<String> {
    let mut names = vec![spec.to_string()];
    if Path::new(spec).extension().is_none() {
        names.push(format!("{spec}.{CONFIG_EXTENSION}"));
    }
    names
}

/// A plain file name (`prod`, `lab.config`), as opposed to a path with folders: only those
/// can name a built-in config.
fn is_bare_name(spec: &str) -> bool {
    let path = Path::new(spec);
    path.components().count() == 1 && path.file_name().is_some()
}
