//! Who a service runs as: the installing user (with sudo, the one who ran sudo), another user
//! named with `--run-as`, never root unless asked for.

/// A local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home folder.
    pub home: std::path::PathBuf,
}

/// The account named `name`, if it exists.
#[cfg(unix)]
pub fn lookup(name: &str) -> Option<Account> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns NULL or a pointer to a static record valid until the next call;
    // its fields are copied out at once (the program is not calling it from other threads).
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        if pw.is_null() {
            return None;
        }
        account(&*pw)
    }
}

#[cfg(unix)]
unsafe fn account(pw: &libc::passwd) -> Option<Account> {
    // SAFETY (caller): `pw` comes from getpwnam/getpwuid and its strings are NUL-terminated.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        .to_str()
        .ok()?
        .to_string();
    let home = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) }
        .to_str()
        .ok()?
        .into();
    Some(Account {
        name,
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        home,
    })
}

/// The account this process runs as.
#[cfg(unix)]
pub fn current() -> Option<Account> {
    // SAFETY: as in `lookup`.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return None;
        }
        account(&*pw)
    }
}

/// True when this process runs as root.
#[cfg(unix)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The name of the user this process runs as, for messages.
pub fn current_user_name() -> String {
    #[cfg(unix)]
    if let Some(a) = current() {
        return a.name;
    }
    std::env::var("USERNAME")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "this user".into())
}

/// Whom a system service runs as: `--run-as`, else the user who ran sudo, else refused (a
/// system service is installed by root, and root is only used when asked for).
#[cfg(unix)]
pub fn service_account(run_as: Option<&str>) -> anyhow::Result<(Account, Option<String>)> {
    let name = match run_as {
        Some(n) => n.to_string(),
        None => match std::env::var("SUDO_USER") {
            Ok(u) if !u.is_empty() && u != "root" => u,
            _ => {
                anyhow::bail!(
                    "a system service runs as an unprivileged user: give --run-as USER \
                     (or install with sudo from that user's account, or install a user \
                     service with --user)"
                )
            }
        },
    };
    let account = lookup(&name).ok_or_else(|| anyhow::anyhow!("--run-as {name}: no such user"))?;
    let warning = (account.uid == 0).then(|| {
        "the service will run as root, as asked: a drop box or downloader does not need it; \
         prefer an unprivileged user"
            .to_string()
    });
    Ok((account, warning))
}
