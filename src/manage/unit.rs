//! The systemd unit openmsi writes for a service (pure text; `systemd-analyze verify` accepts
//! it without a warning, checked by the tests).

use std::path::{Path, PathBuf};

/// Everything a unit says.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    /// The service's name (the unit is `openmsi-NAME.service`).
    pub name: String,
    /// The command in one line, for the description.
    pub summary: String,
    /// Program and arguments.
    pub exec: Vec<String>,
    /// `User=` for a system unit (a user unit runs as its user).
    pub user: Option<String>,
    /// The environment file with the variables the config reads.
    pub env_file: PathBuf,
    /// Where relative paths in the command's other options resolve (where install ran).
    pub working_dir: PathBuf,
    /// Folders the service writes: everything else is read-only to it.
    pub read_write: Vec<PathBuf>,
    /// Paths the service must see (program, config, folders): home folders are hidden unless
    /// one of them is inside one.
    pub needs_to_see: Vec<PathBuf>,
    /// Seconds a stop may take before the service is killed.
    pub stop_timeout: u64,
    /// A system unit (else a user unit).
    pub system: bool,
}

/// The unit file name of service `name`.
pub fn unit_name(name: &str) -> String {
    format!("openmsi-{name}.service")
}

/// Seconds without a watchdog keep-alive after which systemd kills and restarts the service.
/// The main loops beat several times a second; a minute leaves room for a slow disk.
const WATCHDOG_SECS: u64 = 60;

/// Renders the unit.
pub fn render(spec: &UnitSpec) -> String {
    let exec: Vec<String> = spec.exec.iter().map(|a| quote(a)).collect();
    let mut unit = String::new();
    let mut line = |text: &str| {
        unit.push_str(text);
        unit.push('\n');
    };
    line("# Written by `openmsi manage-service install`; change it with remove + install.");
    line("[Unit]");
    line(&format!(
        "Description=openmsi {}: {}",
        spec.name,
        escape_specifiers(&spec.summary)
    ));
    line("After=network-online.target");
    line("Wants=network-online.target");
    // A service failing at every start (a broken config) stops being restarted after 5 tries
    // in 10 minutes instead of looping.
    line("StartLimitIntervalSec=600");
    line("StartLimitBurst=5");
    line("");
    line("[Service]");
    line("Type=notify");
    line("NotifyAccess=main");
    line(&format!("ExecStart={}", exec.join(" ")));
    line(&format!("EnvironmentFile={}", quote_path(&spec.env_file)));
    line(&format!(
        "WorkingDirectory={}",
        quote_path(&spec.working_dir)
    ));
    if let Some(user) = &spec.user {
        line(&format!("User={user}"));
    }
    // Crashes and hangs (no watchdog keep-alive) restart after 10 s; exit code 2 (invalid
    // arguments) never does.
    line("Restart=on-failure");
    line("RestartSec=10");
    line("RestartPreventExitStatus=2");
    line(&format!("WatchdogSec={WATCHDOG_SECS}"));
    // A stop is SIGTERM to the program (its graceful stop: flush, record, commit), then
    // SIGKILL to everything left after the timeout.
    line("KillMode=mixed");
    line("KillSignal=SIGTERM");
    line(&format!("TimeoutStopSec={}", spec.stop_timeout));
    line("StandardInput=null");
    line("NoNewPrivileges=yes");
    line("UMask=0027");
    if spec.system {
        sandbox(spec, &mut line);
    }
    line("");
    line("[Install]");
    line(if spec.system {
        "WantedBy=multi-user.target"
    } else {
        "WantedBy=default.target"
    });
    unit
}

/// The file-system sandbox of a system unit. A user manager can only build one with
/// unprivileged user namespaces, which many hosts disable, so user units do without.
fn sandbox(spec: &UnitSpec, line: &mut dyn FnMut(&str)) {
    line("ProtectSystem=strict");
    let rw: Vec<String> = spec.read_write.iter().map(|p| quote_path(p)).collect();
    line(&format!("ReadWritePaths={}", rw.join(" ")));
    line(&format!("ProtectHome={}", protect_home(&spec.needs_to_see)));
    line("PrivateTmp=yes");
    line("PrivateDevices=yes");
    line("ProtectKernelTunables=yes");
    line("ProtectKernelModules=yes");
    line("ProtectControlGroups=yes");
    line("RestrictSUIDSGID=yes");
    line("LockPersonality=yes");
}

/// `yes` hides /home, /root and /run/user; `read-only` when the service needs something in
/// them (its writable folders stay writable through `ReadWritePaths`).
fn protect_home(paths: &[PathBuf]) -> &'static str {
    let in_home = |p: &PathBuf| {
        ["/home", "/root", "/run/user"]
            .iter()
            .any(|h| p.starts_with(h))
    };
    if paths.iter().any(in_home) {
        "read-only"
    } else {
        "yes"
    }
}

/// One argument of `ExecStart=`, quoted: `\` and `"` escaped, `%` (specifiers) doubled and `$`
/// (variable expansion) doubled, so systemd passes it through unchanged.
fn quote(arg: &str) -> String {
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.contains([' ', '"', '\\', '%', '\t']) {
        // Setting values that hold paths take C-style quoting and specifiers.
        let mut out = String::from("\"");
        for c in text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '%' => out.push_str("%%"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    } else {
        text.into_owned()
    }
}

fn escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// Checks an argument can be written into a unit: no control characters (a newline would end
/// the setting).
pub fn check_writable(arg: &str) -> anyhow::Result<()> {
    if arg.chars().any(char::is_control) {
        return Err(anyhow::anyhow!(
            "{arg:?} contains a control character; a service's command cannot"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UnitSpec {
        UnitSpec {
            name: "xrd-dropbox".into(),
            summary: "upload-directory /data/xrd".into(),
            exec: vec![
                "/usr/local/bin/openmsi".into(),
                "upload-directory".into(),
                "/data/x r d".into(),
                "--upload-regex".into(),
                r#"^run\d+ 100% "$HOME""#.into(),
            ],
            user: Some("lab".into()),
            env_file: "/etc/openmsi/services/xrd-dropbox.env".into(),
            working_dir: "/srv".into(),
            read_write: vec!["/data/x r d".into()],
            needs_to_see: vec!["/usr/local/bin/openmsi".into(), "/data/x r d".into()],
            stop_timeout: 90,
            system: true,
        }
    }

    #[test]
    fn arguments_pass_through_quoting_specifiers_and_variables_unchanged() {
        let unit = render(&spec());
        assert!(unit.contains(
            r#"ExecStart="/usr/local/bin/openmsi" "upload-directory" "/data/x r d" "--upload-regex" "^run\\d+ 100%% \"$$HOME\"""#
        ), "{unit}");
        assert!(unit.contains("ReadWritePaths=\"/data/x r d\"\n"));
        assert!(unit.contains("ProtectHome=yes\n"));
        assert!(unit.contains("User=lab\n"));
        assert!(unit.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn a_folder_in_a_home_keeps_homes_visible_read_only() {
        let mut s = spec();
        s.needs_to_see.push("/home/lab/data".into());
        s.system = false;
        s.user = None;
        let unit = render(&s);
        assert!(!unit.contains("ProtectHome"), "{unit}");
        assert!(!unit.contains("User="));
        s.system = true;
        assert!(render(&s).contains("ProtectHome=read-only\n"));
        assert!(unit.contains("WantedBy=default.target"));
        assert!(check_writable("a\nb").is_err());
        assert!(check_writable("a b").is_ok());
    }
}
