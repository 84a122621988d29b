use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    workledger::run(workledger::cli::Cli::parse())
}
