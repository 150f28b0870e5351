//! `tandemctl`: entry point; parses the command line and runs one command, or the
//! interactive prompt when there is none. Must stay thin: logic lives in the library.

use std::process::ExitCode;

use clap::Parser as _;
use tandem_cli::commands::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        None => tandem_cli::interactive::run(&cli.global),
        Some(command) => run(&cli.global, command, &mut std::io::stdout()),
    };
    match code {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => ExitCode::from(u8::try_from(n).unwrap_or(1)),
        Err(e) => {
            eprintln!("tandemctl: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
