//! `openmsi provision-node`: gathers the answers (flags, environment, files, or questions on a
//! terminal, in the order KafkaCrypto's simple-provision asks them), then writes the node
//! ([`crate::crypto::provision`]). Without a terminal a missing answer is an error naming the
//! flag that gives it, never a wait for input.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cli::ProvisionNodeArgs;
use crate::crypto::provision::{
    allowlist_line, hex, provision, read_root_key, write_root_key, Request, Role, RootOfTrust,
    MIN_PROVISIONING_PASSWORD, MIN_ROT_PASSWORD,
};

/// Environment variable holding the root-of-trust password.
pub const ROT_PASSWORD_ENV: &str = "OPENMSI_ROT_PASSWORD";
/// Environment variable holding the provisioning password.
pub const PROVISIONING_PASSWORD_ENV: &str = "OPENMSI_PROVISIONING_PASSWORD";

/// Where answers come from when a flag does not give them.
struct Answers {
    interactive: bool,
}

impl Answers {
    /// A line typed on the terminal, or an error naming `flag`.
    fn line(&self, prompt: &str, flag: &str) -> anyhow::Result<String> {
        if !self.interactive {
            bail!("{flag} is missing (standard input is not a terminal, so nothing is asked)");
        }
        eprint!("{prompt}");
        std::io::stderr().flush().ok();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the answer")?;
        Ok(line.trim().to_owned())
    }

    /// A password: from `file`, else the environment variable, else asked without echo.
    fn password(
        &self,
        file: Option<&Path>,
        env: &str,
        prompt: &str,
        flag: &str,
        min: usize,
    ) -> anyhow::Result<String> {
        let password = if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {flag} {}", file.display()))?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        } else if let Ok(value) = std::env::var(env) {
            value
        } else if self.interactive {
            rpassword::prompt_password(format!("{prompt} ({min}+ characters): "))?
        } else {
            bail!("the {prompt} is missing: set ${env} or pass {flag} FILE (standard input is not a terminal, so nothing is asked)");
        };
        if password.chars().count() < min {
            bail!(
                "the {prompt} must have at least {min} characters (it was {})",
                password.chars().count()
            );
        }
        Ok(password)
    }
}

/// Runs the command.
pub fn run(args: ProvisionNodeArgs) -> anyhow::Result<ExitCode> {
    let answers = Answers {
        interactive: std::io::stdin().is_terminal(),
    };
    let key_type = match args.key_type {
        Some(t) => t,
        None if answers.interactive => {
            let a = answers.line("Key type (1 = Ed25519 (default); 4 = Ed25519+SLH-DSA is not supported by openmsi)? ", "--key-type")?;
            if a.is_empty() {
                1
            } else {
                a.parse().context("key type must be a number")?
            }
        }
        None => 1,
    };
    if key_type != 1 {
        bail!("--key-type {key_type} is not supported: openmsi signs with Ed25519 only (type 1); Python nodes of type 1 interoperate");
    }
    let root = root_of_trust(&args, &answers)?;
    let node_id = match args.node_id.clone() {
        Some(id) => id,
        None => answers.line("Node ID: ", "--node-id")?,
    };
    crate::crypto::provision::check_node_id(&node_id)?;
    let role = match args.role {
        Some(role) => role,
        None => ask_role(&answers)?,
    };
    let topics = match args.topics.clone() {
        Some(t) => t,
        None => {
            let t = answers.line(
                "Space-separated list of topics this node will use (empty = all topics): ",
                "--topics",
            )?;
            if t.is_empty()
                && !yes_no(
                    &answers,
                    "Are you sure you want to allow all topics (Y/n)? ",
                    true,
                )?
            {
                bail!("no topics chosen; run again");
            }
            t
        }
    };
    let topics: Vec<String> = if topics.trim() == "all" {
        vec![]
    } else {
        topics.split_whitespace().map(str::to_owned).collect()
    };
    let pathlen = match args.pathlen {
        Some(p) => p,
        None if answers.interactive => {
            let a = answers.line(
                "Maximum pathlength (-1 for no limit; default 1): ",
                "--pathlen",
            )?;
            if a.is_empty() {
                1
            } else {
                a.parse().context("pathlength must be a number")?
            }
        }
        None => 1,
    };
    let output_dir = args
        .output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    let roots = crate::crypto::provision::root_topics(&topics);
    eprintln!(
        "Node {node_id}: role {role:?}, root topics {}, pathlength {}, files in {}",
        if roots.is_empty() {
            "all".to_owned()
        } else {
            roots.join(" ")
        },
        pathlen,
        output_dir.join(&node_id).display()
    );
    if answers.interactive
        && !args.yes
        && !yes_no(&answers, "Is all of this correct (yes/no)? ", false)?
    {
        bail!("nothing written");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let done = provision(
        &Request {
            node_id: node_id.clone(),
            role,
            topics,
            pathlen,
            root,
            output_dir,
            force: args.force,
        },
        now,
    )?;
    println!("provisioned node {node_id} in {}", done.dir.display());
    println!("  node public key: {}", hex(&done.node_public));
    println!("  root of trust:   {}", hex(&done.root_public));
    println!("  to use it: [kafkacrypto] node_id = {node_id} (with the node folder beside the config file), or config_file = {}", done.config_path.display());
    println!("  keep {node_id}.crypto and {node_id}.seed secret and backed up (losing the seed loses access to what this node produced and has not yet served)");
    if args.root_key.is_some() || args.new_root_key.is_some() {
        println!(
            "  Python nodes trust this root once this line is in their [NODE-allowlist] section:"
        );
        println!("    {}", allowlist_line("rot-openmsi", &done.root_public));
    }
    Ok(ExitCode::SUCCESS)
}

fn root_of_trust(args: &ProvisionNodeArgs, answers: &Answers) -> anyhow::Result<RootOfTrust> {
    if let Some(path) = &args.new_root_key {
        let key = write_root_key(path, args.force)?;
        eprintln!("created root key {} (public key {}): keep it offline; it signs every node of this deployment", path.display(), hex(&key.public()));
        return Ok(RootOfTrust::KeyFile(key));
    }
    if let Some(path) = &args.root_key {
        return Ok(RootOfTrust::KeyFile(read_root_key(path)?));
    }
    let root = answers.password(
        args.rot_password_file.as_deref(),
        ROT_PASSWORD_ENV,
        "root-of-trust password",
        "--rot-password-file",
        MIN_ROT_PASSWORD,
    )?;
    let provisioning = answers.password(
        args.provisioning_password_file.as_deref(),
        PROVISIONING_PASSWORD_ENV,
        "provisioning password",
        "--provisioning-password-file",
        MIN_PROVISIONING_PASSWORD,
    )?;
    Ok(RootOfTrust::Passwords { root, provisioning })
}

fn ask_role(answers: &Answers) -> anyhow::Result<Role> {
    let choice = answers.line(
        "Is this node a:\n1. Controller\n2. Producer\n3. Consumer\n4. Consumer and Producer\n? ",
        "--role",
    )?;
    let limited = |answers: &Answers| {
        yes_no(
            answers,
            "Limit the consumer to only functioning with controllers (y/N)? ",
            false,
        )
    };
    Ok(match choice.as_str() {
        "1" => Role::Controller,
        "2" => Role::Producer,
        "3" => {
            if limited(answers)? {
                Role::ConsumerLimited
            } else {
                Role::Consumer
            }
        }
        "4" => {
            if limited(answers)? {
                Role::ProdconLimited
            } else {
                Role::Prodcon
            }
        }
        other => bail!("'{other}' is not one of 1-4"),
    })
}

fn yes_no(answers: &Answers, prompt: &str, default: bool) -> anyhow::Result<bool> {
    let a = answers.line(prompt, "--yes")?.to_lowercase();
    Ok(match a.as_str() {
        "" => default,
        "y" | "yes" => true,
        _ => false,
    })
}
