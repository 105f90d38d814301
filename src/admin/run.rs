//! Runs `openmsi topic ...` and `openmsi user ...` from their parsed arguments.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use super::topic::{self, CreateRequest};
use super::user::{self, PasswordSource};
use super::Admin;
use crate::cli::{AdminArgs, TopicCommand, TopicCreateArgs, UserCommand};
use crate::config::LoadedConfig;

fn connect_with(args: &AdminArgs) -> anyhow::Result<Admin> {
    let config = LoadedConfig::load(&args.config)?;
    Admin::connect(config, Duration::from_secs(args.connect_timeout))
}

/// `topic create`'s `--topic-config KEY=VALUE` values.
fn topic_settings(values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), val.trim().to_string()))
            }
            _ => bail!(
                "--topic-config {v}: a topic setting is KEY=VALUE, e.g. retention.ms=604800000"
            ),
        })
        .collect()
}

async fn create(args: TopicCreateArgs) -> anyhow::Result<ExitCode> {
    // Before 0.3, topic settings went into --config too: say where they go now.
    if args.admin.config.contains('=') {
        bail!(
            "--config {} looks like a topic setting: --config names the config file; give topic settings with --topic-config KEY=VALUE",
            args.admin.config
        );
    }
    let settings = topic_settings(&args.topic_config)?;
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
    let admin = connect_with(&args.admin)?;
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
    fn topic_settings_are_key_value_pairs() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let settings = topic_settings(&v(&["retention.ms=1000", " a = b "])).unwrap();
        assert_eq!(
            settings,
            vec![
                ("retention.ms".into(), "1000".into()),
                ("a".into(), "b".into())
            ]
        );
        assert!(topic_settings(&[]).unwrap().is_empty());
        assert!(topic_settings(&v(&["lab.config"])).is_err());
        assert!(topic_settings(&v(&["=x"])).is_err());
    }
}
