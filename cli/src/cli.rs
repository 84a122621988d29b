//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Configuration comes from environment variables (DATABASE_URL, WORKLEDGER_LISTEN, WORKLEDGER_*)
and, optionally, a TOML file given with --config or WORKLEDGER_CONFIG. See README.md.

Exit codes:
  0  success
  1  the command failed (one line on stderr says why)
  2  bad command-line usage
  3  invalid configuration (the message names the variable)

Examples:
  workledger serve                         # API and projectors on 127.0.0.1:8080
  DATABASE_URL=postgres://db/wl workledger migrate";

/// Workledger: workflows, tasks and approvals, event-sourced.
#[derive(Debug, Parser)]
#[command(name = "workledger", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// A TOML configuration file; environment variables override it.
    #[arg(long, global = true, env = "WORKLEDGER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Workledger: every API on one listener (WORKLEDGER_LISTEN), creating the database
    /// and applying migrations first.
    #[command(
        after_help = "Example:\n  WORKLEDGER_LISTEN=0.0.0.0:8080 workledger serve\n\n\
        Stops gracefully on SIGTERM or Ctrl-C: in-flight requests finish first."
    )]
    Serve,
    /// Apply pending database migrations, then exit.
    #[command(
        after_help = "Example:\n  DATABASE_URL=postgres://postgres@db:5432/workledger workledger migrate"
    )]
    Migrate,
}
