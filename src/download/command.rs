//! Running the user's commands around a delivery (`--validate`, `--on-file`): never through a
//! shell, with the file's facts in environment variables and its path as a separate argument,
//! so a hostile file name (`;`, `$()`, spaces, newlines) is only ever data. A command that wants
//! a shell asks for one itself (`--validate "sh -c 'jq . \"$1\"' check"`).

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Output kept from a command, from its end (what usually says what went wrong).
const OUTPUT_TAIL: usize = 4096;

/// A parsed command line: program and arguments, split like a POSIX shell splits words
/// (quotes and backslashes), without any expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCommand {
    /// What the user wrote, for messages.
    pub text: String,
    program: String,
    args: Vec<String>,
}

/// Why a command given to a flag cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{flag} {text:?}: unbalanced quotes")]
    UnbalancedQuotes { flag: String, text: String },
    #[error("{flag}: the command is empty")]
    Empty { flag: String },
}

impl UserCommand {
    /// Splits `text` into words; fails on unbalanced quotes or an empty command.
    pub fn parse(flag: &str, text: &str) -> Result<Self, CommandError> {
        let words = shlex::split(text).ok_or_else(|| CommandError::UnbalancedQuotes {
            flag: flag.to_string(),
            text: text.to_string(),
        })?;
        let mut words = words.into_iter();
        let program = words.next().ok_or_else(|| CommandError::Empty {
            flag: flag.to_string(),
        })?;
        Ok(Self {
            text: text.to_string(),
            program,
            args: words.collect(),
        })
    }

    /// The program to run.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Its arguments.
    pub fn args(&self) -> &[String] {
        &self.args
    }
}

/// The facts about one delivered file a command receives.
#[derive(Debug, Clone)]
pub struct FileFacts<'a> {
    /// Where the file is now (the staged copy for validation, the final path afterwards).
    pub path: &'a Path,
    /// Its path relative to the output folder, `/`-separated.
    pub relative: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-512.
    pub sha512: &'a str,
    /// The topic it came from.
    pub topic: &'a str,
}

/// How a command ended.
#[derive(Debug)]
pub struct Ran {
    /// Exit status; None when it was killed for taking too long.
    pub status: Option<ExitStatus>,
    /// The last bytes of its standard output and error, interleaved as they were read (its
    /// standard error only, when its output was captured).
    pub output_tail: String,
    /// Its whole standard output, when it was asked for ([`Capture::Stdout`]).
    pub stdout: Option<CapturedOutput>,
    /// How long it ran.
    pub took: Duration,
}

impl Ran {
    /// True for exit code 0 within the time allowed.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// "exit code N", "killed by signal N" or "timed out".
    pub fn describe(&self) -> String {
        match self.status {
            None => format!("timed out after {:.1} s", self.took.as_secs_f64()),
            Some(s) => match s.code() {
                Some(code) => format!("exit code {code}"),
                None => format!("ended by a signal ({s})"),
            },
        }
    }
}

/// What a command's standard output is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Only the tail, with standard error, for the log.
    Tail,
    /// The whole of it, up to this many bytes (a result message); standard error is the tail.
    Stdout(usize),
}

/// A command's whole standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapturedOutput {
    /// Every byte.
    Whole(Vec<u8>),
    /// More than the limit was written (the rest was read and dropped).
    TooLong,
}

/// Runs `command` with `facts.path` appended as its last argument and the facts in
/// `OPENMSI_FILE`, `OPENMSI_RELATIVE_PATH`, `OPENMSI_SIZE`, `OPENMSI_SHA512`, `OPENMSI_TOPIC`
/// (plus `extra` variables), standard input closed, for at most `timeout` (then it is killed).
pub fn run(
    command: &UserCommand,
    facts: &FileFacts<'_>,
    extra: &[(&str, String)],
    timeout: Duration,
    capture: Capture,
) -> std::io::Result<Ran> {
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .arg(facts.path)
        .env("OPENMSI_FILE", facts.path)
        .env("OPENMSI_RELATIVE_PATH", facts.relative)
        .env("OPENMSI_SIZE", facts.size.to_string())
        .env("OPENMSI_SHA512", facts.sha512)
        .env("OPENMSI_TOPIC", facts.topic);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    run_command(cmd, timeout, capture)
}

/// Runs `cmd` with its output captured as `capture` says, for at most `timeout`.
pub fn run_command(mut cmd: Command, timeout: Duration, capture: Capture) -> std::io::Result<Ran> {
    let started = Instant::now();
    // One pipe for both streams keeps their order; a captured standard output gets a pipe of
    // its own, each read by its own thread, so neither can block the child on a full pipe.
    let (mut reader, writer) = std::io::pipe()?;
    let stdout_reader = match capture {
        Capture::Tail => {
            cmd.stdout(writer.try_clone()?);
            None
        }
        Capture::Stdout(limit) => {
            let (out_reader, out_writer) = std::io::pipe()?;
            cmd.stdout(out_writer);
            Some((out_reader, limit))
        }
    };
    let mut child = cmd.stdin(Stdio::null()).stderr(writer).spawn()?;
    // Our copies of the write ends are gone (moved into the Command, dropped with it), so the
    // readers see the end of the output once the child and its own children are done.
    drop(cmd);
    let stdout_collector = stdout_reader.map(|(mut out, limit)| {
        std::thread::spawn(move || {
            let mut whole: Vec<u8> = Vec::new();
            let mut buf = [0u8; 8192];
            let mut too_long = false;
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if whole.len() + n > limit {
                    too_long = true;
                    whole = Vec::new();
                } else if !too_long {
                    whole.extend_from_slice(&buf[..n]);
                }
            }
            if too_long {
                CapturedOutput::TooLong
            } else {
                CapturedOutput::Whole(whole)
            }
        })
    });
    let collector = std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * OUTPUT_TAIL {
                tail.drain(..tail.len() - OUTPUT_TAIL);
            }
        }
        let start = tail.len().saturating_sub(OUTPUT_TAIL);
        String::from_utf8_lossy(&tail[start..]).into_owned()
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    // A grandchild that keeps the pipe open must not hang us: wait briefly, then give up on the
    // rest of the output.
    let output_tail = wait_joined(collector, Duration::from_secs(2)).unwrap_or_default();
    // Output cut short by such a grandchild counts as too long: it is not the whole output.
    let stdout = stdout_collector
        .map(|c| wait_joined(c, Duration::from_secs(2)).unwrap_or(CapturedOutput::TooLong));
    Ok(Ran {
        status,
        output_tail,
        stdout,
        took,
    })
}

fn wait_joined<T>(handle: std::thread::JoinHandle<T>, limit: Duration) -> Option<T> {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.join().ok()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn facts(path: &Path) -> FileFacts<'_> {
        FileFacts {
            path,
            relative: "a/b.json",
            size: 3,
            sha512: "00",
            topic: "t",
        }
    }

    #[test]
    fn words_are_split_without_expansion() {
        let c = UserCommand::parse("--on-file", r#"sh -c 'echo "$1"' x"#).unwrap();
        assert_eq!(c.program, "sh");
        assert_eq!(c.args, ["-c", r#"echo "$1""#, "x"]);
        assert!(UserCommand::parse("--on-file", "").is_err());
        assert!(UserCommand::parse("--on-file", "echo 'open").is_err());
    }

    #[test]
    fn a_hostile_file_name_is_one_argument_and_never_run() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pwned");
        let name = format!(
            "x; touch {0} $(touch {0}) `touch {0}`\nnext",
            marker.display()
        );
        let path = dir.path().join(&name);
        let c = UserCommand::parse("--on-file", "printf [%s]").unwrap();
        let ran = run(
            &c,
            &facts(&path),
            &[],
            Duration::from_secs(10),
            Capture::Tail,
        )
        .unwrap();
        assert!(ran.succeeded(), "{ran:?}");
        assert_eq!(ran.output_tail, format!("[{}]", path.display()));
        assert!(!marker.exists());
    }

    #[test]
    fn a_captured_output_is_kept_whole_apart_from_errors_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let c = UserCommand::parse(
            "--on-file",
            r#"sh -c 'printf "{\"n\": 1}\n"; echo oops >&2' r"#,
        )
        .unwrap();
        let ran = run(
            &c,
            &facts(&path),
            &[],
            Duration::from_secs(10),
            Capture::Stdout(100),
        )
        .unwrap();
        assert!(ran.succeeded(), "{ran:?}");
        assert_eq!(
            ran.stdout,
            Some(CapturedOutput::Whole(b"{\"n\": 1}\n".to_vec()))
        );
        assert_eq!(ran.output_tail.trim(), "oops");
        let big = UserCommand::parse("--on-file", "sh -c 'head -c 5000 /dev/zero' r").unwrap();
        let ran = run(
            &big,
            &facts(&path),
            &[],
            Duration::from_secs(10),
            Capture::Stdout(4096),
        )
        .unwrap();
        assert_eq!(ran.stdout, Some(CapturedOutput::TooLong));
    }

    #[test]
    fn failures_timeouts_and_output_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let c = UserCommand::parse(
            "--validate",
            "sh -c 'echo bad: $OPENMSI_RELATIVE_PATH; exit 3' v",
        )
        .unwrap();
        let ran = run(
            &c,
            &facts(&path),
            &[],
            Duration::from_secs(10),
            Capture::Tail,
        )
        .unwrap();
        assert!(!ran.succeeded());
        assert_eq!(ran.describe(), "exit code 3");
        assert_eq!(ran.output_tail.trim(), "bad: a/b.json");
        let slow = UserCommand::parse("--validate", "sh -c 'sleep 30' slow").unwrap();
        let ran = run(
            &slow,
            &facts(&path),
            &[],
            Duration::from_millis(200),
            Capture::Tail,
        )
        .unwrap();
        assert!(ran.status.is_none());
        assert!(ran.took < Duration::from_secs(5));
        assert!(ran.describe().starts_with("timed out"));
    }
}
