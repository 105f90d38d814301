use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = openmsi::cli::Cli::parse();
    if let Err(e) = openmsi::logging::init(cli.log_level.as_deref(), cli.log_file().as_deref()) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match openmsi::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Under systemd the journal files the line as an error (see logging::syslog_prefix).
            let priority = if openmsi::logging::to_journal() {
                openmsi::logging::syslog_prefix(tracing::Level::ERROR)
            } else {
                ""
            };
            eprintln!("{priority}error: {}", openmsi::app::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
