//! `openmsi user add|remove`: SCRAM credentials for SASL/SCRAM clusters.

use std::io::IsTerminal;

use anyhow::{bail, Context};

use super::native::{alter_scram, Alteration, Mechanism};
use super::Admin;

/// Where `user add` takes the password from.
pub enum PasswordSource {
    /// The named environment variable (scripts, services).
    Env(String),
    /// Asked on the terminal, twice, without echo.
    Prompt,
}

/// Reads the password from `source`.
pub fn read_password(source: &PasswordSource, user: &str) -> anyhow::Result<String> {
    let password = match source {
        PasswordSource::Env(var) => std::env::var(var).with_context(|| {
            format!("--password-env {var}: the environment variable {var} is not set")
        })?,
        PasswordSource::Prompt => {
            if !std::io::stdin().is_terminal() {
                bail!("no password for {user}: standard input is not a terminal, so openmsi cannot ask; pass --password-env VAR with the password in that environment variable");
            }
            let first = rpassword::prompt_password(format!("Password for {user}: "))?;
            let again = rpassword::prompt_password("Same password again: ")?;
            if first != again {
                bail!("the two passwords differ; nothing was changed");
            }
            first
        }
    };
    if password.is_empty() {
        bail!("the password for {user} is empty; nothing was changed");
    }
    Ok(password)
}

/// Creates `user` (or replaces its password) for `mechanism`.
pub fn add(
    admin: &Admin,
    user: &str,
    mechanism: Mechanism,
    password: &str,
    iterations: i32,
) -> anyhow::Result<()> {
    alter_scram(
        admin.client.inner(),
        &Alteration::Upsert {
            user,
            mechanism,
            iterations,
            password: password.as_bytes(),
        },
        admin.timeout,
    )
    .with_context(|| format!("adding user {user} on {}", admin.brokers))?;
    println!(
        "user {user} can now authenticate with sasl.mechanism = {} (sasl.username = {user})",
        mechanism.sasl_name()
    );
    Ok(())
}

/// Removes `user`'s credential for `mechanism`.
pub fn remove(admin: &Admin, user: &str, mechanism: Mechanism) -> anyhow::Result<()> {
    alter_scram(
        admin.client.inner(),
        &Alteration::Delete { user, mechanism },
        admin.timeout,
    )
    .with_context(|| format!("removing user {user} on {}", admin.brokers))?;
    println!(
        "removed the {} credential of user {user}",
        mechanism.sasl_name()
    );
    Ok(())
}
