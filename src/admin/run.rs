//! Runs `openmsi topic ...` and `openmsi user ...` from their parsed arguments.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use super::topic::{self, CreateRequest};
use super::user::{self, PasswordSource};
use super::Admin;
use crate::cli::{AdminArgs, TopicCommand, TopicCreateArgs, UserCommand};
use crate::config::LoadedConfig;

fn connect(config: &str, connect_timeout: u64) -> anyhow::Result<Admin> {
    let config = LoadedConfig::load(config)?;
    Admin::connect(config, Duration::from_secs(connect_timeout))
}

fn connect_with(args: &AdminArgs) -> anyhow::Result<Admin> {
    connect(&args.config, args.connect_timeout)
}

/// `topic create`'s `--config` values: at most one config file (no `=`), any number of topic
/// settings (`KEY=VALUE`).
fn split_config_values(values: &[String]) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let mut file = None;
    let mut settings = Vec::new();
    for v in values {
        match v.split_once('=') {
            Some((k, val)) if !k.trim().is_empty() => {
                settings.push((k.trim().to_string(), val.trim().to_string()))
            }
            Some(_) => bail!("--config {v}: a topic setting needs a name before `=`"),
            None if file.is_some() => {
                bail!(
                    "--config given two config files ({} and {v}); topic settings are KEY=VALUE",
                    file.unwrap_or_default()
                )
            }
            None => file = Some(v.clone()),
        }
    }
    Ok((file.unwrap_or_else(|| "local".into()), settings))
}

async fn create(args: TopicCreateArgs) -> anyhow::Result<ExitCode> {
    let (file, settings) = split_config_values(&args.config)?;
    let request = CreateRequest {
        name: args.name,
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        settings,
        encrypted: args.encrypted,
        chunk_size: args.chunk_size.get(),
    };
    // Refuse a bad request before connecting.
    topic::topic_settings(&request)?;
    let admin = connect(&file, args.connect_timeout)?;
    topic::create(&admin, &request).await?;
    Ok(ExitCode::SUCCESS)
}

/// `openmsi topic ...`.
pub async fn run_topic(command: TopicCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopicCommand::Create(args) => create(args).await,
        TopicCommand::List(args) => {
            let admin = connect_with(&args.admin)?;
            let topics = topic::list(&admin)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&topics)?);
            } else {
                for t in &topics {
                    println!("{}  ({} partition(s))", t.name, t.partitions);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicCommand::Describe(args) => {
            let admin = connect_with(&args.admin)?;
            let report = topic::describe(&admin, &args.name).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", topic::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicCommand::Delete(args) => {
            let admin = connect_with(&args.admin)?;
            topic::delete(&admin, &args.name, args.yes).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `openmsi user ...`.
pub async fn run_user(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add(args) => {
            let source = match args.password_env {
                Some(var) => PasswordSource::Env(var),
                None => PasswordSource::Prompt,
            };
            // Asked before connecting, so a slow broker does not sit between the prompts.
            let password = user::read_password(&source, &args.name)?;
            let admin = connect_with(&args.admin)?;
            user::add(
                &admin,
                &args.name,
                args.mechanism,
                &password,
                args.iterations,
            )?;
        }
        UserCommand::Remove(args) => {
            let admin = connect_with(&args.admin)?;
            user::remove(&admin, &args.name, args.mechanism)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_split_into_file_and_settings() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (file, settings) =
            split_config_values(&v(&["lab.config", "retention.ms=1000"])).unwrap();
        assert_eq!(file, "lab.config");
        assert_eq!(settings, vec![("retention.ms".into(), "1000".into())]);
        assert_eq!(split_config_values(&[]).unwrap().0, "local");
        assert!(split_config_values(&v(&["a", "b"])).is_err());
        assert!(split_config_values(&v(&["=x"])).is_err());
    }
}
