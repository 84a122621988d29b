//! Command-line arguments.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use event_schemas::LogPosition;

const AFTER_HELP: &str = "\
Configuration comes from environment variables (DATABASE_URL, WORKLEDGER_LISTEN, WORKLEDGER_*)
and, optionally, a TOML file given with --config or WORKLEDGER_CONFIG. See README.md.

Exit codes:
  0  success
  1  the command failed (one line on stderr says why)
  2  bad command-line usage
  3  invalid configuration (the message names the variable)
  4  `status`: a projector is failing

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
    /// Only the command API (plus operations routes), for scaling out.
    #[command(name = "command-api")]
    CommandApi,
    /// Only the query API (plus operations routes), for scaling out.
    #[command(name = "query-api")]
    QueryApi,
    /// Only the background workers: orchestrator, timers, projectors (plus operations routes
    /// for probes and metrics), for scaling out.
    Project,
    /// Each projector's position, lag and error, and the log's size.
    #[command(
        after_help = "Examples:\n  workledger status\n  workledger status --format json\n\n\
        Exit code 4 when a projector is failing (for scripts and health checks)."
    )]
    Status {
        #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
        format: StatusFormat,
    },
    /// Apply pending database migrations, then exit.
    #[command(
        after_help = "Example:\n  DATABASE_URL=postgres://postgres@db:5432/workledger workledger migrate"
    )]
    Migrate,
    /// Print the event log (filtered), or one aggregate's state at a version.
    #[command(after_help = EVENTS_HELP)]
    Events(EventsArgs),
}

const EVENTS_HELP: &str = "\
Positions are written TX.POSITION (as consistency tokens and in the POSITION column); the log is
ordered by them.

Examples:
  workledger events --limit 20                                  # the first 20 events
  workledger events --aggregate task/0195a0c4-...               # one aggregate's history
  workledger events --type ApprovalDecided --tenant acme --format jsonl
  workledger events --from 7301.1200 --since 2026-11-01T00:00:00Z
  workledger events --aggregate workflow_instance/0195... --at-version 3   # its state then";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line, every stored field.
    Jsonl,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// An aggregate type (`task`) or one aggregate (`task/ID`).
    #[arg(long, value_name = "TYPE[/ID]")]
    pub aggregate: Option<String>,
    /// Only events of this type (e.g. `TaskCompleted`).
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    pub event_type: Option<String>,
    /// Only events of this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// From this log position on (inclusive).
    #[arg(long, value_name = "TX.POSITION")]
    pub from: Option<LogPosition>,
    /// Up to this log position (inclusive).
    #[arg(long, value_name = "TX.POSITION")]
    pub to: Option<LogPosition>,
    /// Recorded at or after this time (RFC 3339).
    #[arg(long, value_parser = crate::commands::events::parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Recorded before this time (RFC 3339).
    #[arg(long, value_parser = crate::commands::events::parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// With `--aggregate TYPE/ID`: print the aggregate's state after its first N events.
    #[arg(long, value_name = "N")]
    pub at_version: Option<i64>,
}
