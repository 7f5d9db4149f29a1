use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tinykd::cli::Cli::parse();
    match tinykd::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
