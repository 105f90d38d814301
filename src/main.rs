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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
