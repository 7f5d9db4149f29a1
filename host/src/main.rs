use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tinykd::children::install_signal_handlers();
    let cli = tinykd::cli::Cli::parse();
    match tinykd::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (message, hint, code) = tinykd::failure::describe(&e);
            eprintln!("error: {message}");
            eprintln!("hint: {hint}");
            ExitCode::from(code)
        }
    }
}
