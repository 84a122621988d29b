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
  5  `audit verify`: the export was tampered with

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
    /// Each projector's position, lag and error, the log's size, and how many instances wait
    /// on an incident.
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
    /// Rebuild projections from the start of the log into new tables and swap them in, with
    /// no downtime (safe while `serve` runs).
    #[command(after_help = REPLAY_HELP)]
    Replay(ReplayArgs),
    /// Export the audit trail with a manifest, or verify an export.
    #[command(subcommand, after_help = AUDIT_HELP)]
    Audit(AuditCommand),
    /// Tenants, users, roles and groups, without the API (e.g. when it is unreachable).
    #[command(subcommand, after_help = ADMIN_HELP)]
    Admin(AdminCommand),
    /// Stored document contents: delete what no document needs any more.
    #[command(subcommand)]
    Documents(DocumentsCommand),
}

const PRUNE_HELP: &str = "\
Deletes stored contents that no attached document refers to: those whose upload's command was
refused after the upload (rare), and, with --removed-before, those of documents removed before
that time (a retention period ended). Which content belongs to which document is read from the
event log itself, not from a read model that may lag. Contents stored within --grace are kept
(an upload whose command is still on its way). The events keep each file's name, size and
digest: the audit trail still proves what was attached; a removed document's download already
answers 410.

Examples:
  workledger documents prune --dry-run
  workledger documents prune
  workledger documents prune --removed-before 2026-01-01   # removed documents' files too";

/// `workledger documents ...`
#[derive(Debug, Subcommand)]
pub enum DocumentsCommand {
    /// Delete stored contents no document needs (print them with --dry-run).
    #[command(after_help = PRUNE_HELP)]
    Prune(PruneArgs),
}

/// What `documents prune` deletes.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also the contents of documents removed before this time (RFC 3339, or a date: midnight
    /// UTC), unless a document not removed by then has the same content.
    #[arg(long, value_name = "TIME", value_parser = crate::commands::documents::parse_day_or_time)]
    pub removed_before: Option<DateTime<Utc>>,
    /// Keep contents stored more recently than this (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// Print what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

const REPLAY_HELP: &str = "\
The live tables keep serving during the rebuild; each projection's new tables are swapped in
with one transaction. Projections rebuilt together share each read of the log.

A failed or interrupted rebuild (an error, Ctrl-C, a killed process, a lost connection) changes
nothing that serves. It leaves its copy behind (schema rebuild_NAME, checkpoint rebuild:NAME),
and the next replay of that projection resumes from where it stopped (\"resuming NAME from
TX.POSITION\" on stderr). A copy made under another migration or another version of workledger
is not resumed: the replay starts that projection over. --restart always starts over.

Exit codes:
  0  rebuilt and swapped in
  1  the rebuild failed (a failed projection's serving tables are untouched; run it again to resume)
  2  bad usage, or an unknown projection (the message lists the valid names)

Examples:
  workledger replay --projection tasks
  workledger replay --all
  workledger replay --all --restart    # discard what an interrupted rebuild left";

/// Which projections `replay` rebuilds, and whether to start over.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub which: ReplayWhich,
    /// Start from the start of the log even when an interrupted rebuild left a copy to resume.
    #[arg(long)]
    pub restart: bool,
}

/// One projection or all of them.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ReplayWhich {
    /// One projection: definitions, instances, tasks, approvals, workflow_reports, audit or
    /// documents.
    #[arg(long, value_name = "NAME")]
    pub projection: Option<String>,
    /// Every projection, together (one read of the log for all).
    #[arg(long)]
    pub all: bool,
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
    /// With `--aggregate TYPE/ID`: print the aggregate's state after its first N events (N >= 1).
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = crate::commands::events::parse_version
    )]
    pub at_version: Option<i64>,
}

const AUDIT_HELP: &str = "\
Exit codes:
  0  exported / the export is intact
  1  the command failed (e.g. the database or the file cannot be read)
  2  bad usage
  5  `verify`: the export was tampered with (the line names the first bad entry)

Examples:
  workledger audit export --format jsonl --tenant acme -o acme.jsonl
  WORKLEDGER_AUDIT_SIGNING_KEY=$(cat seed.b64) workledger audit export --format csv -o all.csv
  workledger audit verify acme.jsonl
  workledger audit verify all.csv --public-key <base64 Ed25519 public key>";

/// `workledger audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write the audit trail (one hash chain per tenant) to FILE, streaming, with
    /// FILE.manifest.json beside it and, with a signing key, FILE.manifest.sig.
    #[command(after_help = AUDIT_HELP)]
    Export(ExportArgs),
    /// Recompute the chains of an export and check its manifest (and signature); exit 5 and
    /// name the first bad entry when it was tampered with.
    #[command(after_help = AUDIT_HELP)]
    Verify(VerifyArgs),
}

/// How an audit export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    /// One JSON object per line.
    Jsonl,
    /// A header, then one record per entry (payload as JSON text).
    Csv,
}

impl AuditFormat {
    /// The name written in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditFormat::Jsonl => "jsonl",
            AuditFormat::Csv => "csv",
        }
    }
}

/// `workledger audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value_t = AuditFormat::Jsonl)]
    pub format: AuditFormat,
    /// Entries that occurred at or after this time (RFC 3339).
    #[arg(long, value_parser = crate::commands::events::parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Entries that occurred before this time (RFC 3339).
    #[arg(long, value_parser = crate::commands::events::parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Only this tenant's chain (every tenant's otherwise).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// A file holding a base64 32-byte Ed25519 seed to sign the manifest with (else
    /// WORKLEDGER_AUDIT_SIGNING_KEY, else unsigned).
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

/// `workledger audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The exported file (its manifest is FILE.manifest.json).
    pub file: PathBuf,
    /// The base64 Ed25519 public key to check the signature with (the manifest's otherwise);
    /// with it, a missing signature is tampering.
    #[arg(long, value_name = "B64")]
    pub public_key: Option<String>,
}

const ADMIN_HELP: &str = "\
These act directly on the database through the identity module, as the service `cli-admin`;
passwords come from --password-env (the name of an environment variable), never the command line.

Exit codes:
  0  done
  1  refused or failed (one line says why, e.g. the email is taken)
  2  bad usage

Examples:
  export PW=...    # the password, read from the variable --password-env names
  workledger admin create-tenant --id acme --name Acme --admin-email a@acme.test --password-env PW
  workledger admin create-user --tenant acme --email bob@acme.test --name Bob \\
      --roles member --groups clerks --password-env PW
  workledger admin set-roles --tenant acme --user 0195... --roles member,designer
  workledger admin set-groups --tenant acme --user 0195... --groups clerks,managers
  workledger admin users --tenant acme --email bob@acme.test   # find a user's id
  workledger admin users --tenant acme --group clerks --format jsonl
  workledger admin set-password --tenant acme --user 0195... --password-env PW   # a reset
  workledger admin deactivate --tenant acme --user 0195... --reason \"left the company\"
  workledger admin erase-user --tenant acme --user 0195...   # after deactivate; for good
  workledger admin tenants";

/// `workledger admin ...`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a tenant and its first admin.
    #[command(name = "create-tenant", after_help = ADMIN_HELP)]
    CreateTenant {
        /// The tenant id (2-63 of a-z, 0-9, '-').
        #[arg(long)]
        id: String,
        /// Its display name.
        #[arg(long)]
        name: String,
        /// The first admin's email.
        #[arg(long)]
        admin_email: String,
        /// The first admin's display name.
        #[arg(long, default_value = "Administrator")]
        admin_name: String,
        /// The environment variable holding the admin's password.
        #[arg(long, value_name = "VAR")]
        password_env: String,
    },
    /// Create a user in a tenant.
    #[command(name = "create-user", after_help = ADMIN_HELP)]
    CreateUser {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Roles, comma-separated (admin, designer, operator, member, auditor, ...).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// The environment variable holding the password.
        #[arg(long, value_name = "VAR")]
        password_env: String,
    },
    /// Replace a user's roles.
    #[command(name = "set-roles", after_help = ADMIN_HELP)]
    SetRoles {
        #[arg(long)]
        tenant: String,
        /// The user's id.
        #[arg(long)]
        user: uuid::Uuid,
        /// Roles, comma-separated (empty for none).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Replace a user's groups.
    #[command(name = "set-groups", after_help = ADMIN_HELP)]
    SetGroups {
        #[arg(long)]
        tenant: String,
        /// The user's id.
        #[arg(long)]
        user: uuid::Uuid,
        /// Groups, comma-separated (empty for none).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Set a user's password (a reset: their sessions end).
    #[command(name = "set-password", after_help = ADMIN_HELP)]
    SetPassword {
        #[arg(long)]
        tenant: String,
        /// The user's id.
        #[arg(long)]
        user: uuid::Uuid,
        /// The environment variable holding the new password.
        #[arg(long, value_name = "VAR")]
        password_env: String,
    },
    /// Stop a user from signing in and end their sessions.
    #[command(after_help = ADMIN_HELP)]
    Deactivate {
        #[arg(long)]
        tenant: String,
        /// The user's id.
        #[arg(long)]
        user: uuid::Uuid,
        /// Why (kept in the log and the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// End every session of a user (a stolen laptop): their tokens stop working; their
    /// password still signs in.
    #[command(name = "end-sessions", after_help = ADMIN_HELP)]
    EndSessions {
        #[arg(long)]
        tenant: String,
        /// The user's id.
        #[arg(long)]
        user: uuid::Uuid,
        /// Why (kept in the log and the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Forget a deactivated user for good (the right to erasure): their key is destroyed, so
    /// their email address, name, the reasons recorded about them and their comments no
    /// longer open (read models, log, audit trail, exports, Kafka; backups taken before hold
    /// the key until they expire). Their user id and who did what stay; the audit chain still
    /// verifies. Cannot be undone. Run on a user erased before, it drops their key again
    /// (after a restored backup brought it back).
    #[command(name = "erase-user", after_help = ADMIN_HELP)]
    EraseUser {
        #[arg(long)]
        tenant: String,
        /// The user's id (deactivate them first).
        #[arg(long)]
        user: uuid::Uuid,
    },
    /// Turn off a user's two-factor sign-in (for a lost authenticator and recovery codes):
    /// they sign in with their password alone until they turn it on again.
    #[command(name = "disable-two-factor", after_help = ADMIN_HELP)]
    DisableTwoFactor {
        #[arg(long)]
        tenant: String,
        /// The user's id.
        #[arg(long)]
        user: uuid::Uuid,
        /// Why (kept in the log and the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a deactivated user sign in again.
    #[command(after_help = ADMIN_HELP)]
    Reactivate {
        #[arg(long)]
        tenant: String,
        /// The user's id.
        #[arg(long)]
        user: uuid::Uuid,
    },
    /// List a tenant's users by email address.
    #[command(after_help = ADMIN_HELP)]
    Users {
        #[arg(long)]
        tenant: String,
        /// Only the user with this email address (ignoring case).
        #[arg(long)]
        email: Option<String>,
        /// Only the users in this group.
        #[arg(long)]
        group: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// List the tenants, with their number of users.
    #[command(after_help = ADMIN_HELP)]
    Tenants {
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Wrap every stored personal data key, two-factor secret and generated token signing
    /// secret with WORKLEDGER_MASTER_KEY:
    /// those stored before a master key was configured, and those wrapped with a key
    /// WORKLEDGER_MASTER_KEY_PREVIOUS names (a rotation). Safe while Workledger runs; run it
    /// again after an interruption.
    #[command(name = "wrap-secrets", after_help = WRAP_HELP)]
    WrapSecrets,
}

const WRAP_HELP: &str = "\
Exit codes:
  0  done (every stored secret is wrapped with WORKLEDGER_MASTER_KEY)
  1  failed (one line says why, e.g. WORKLEDGER_MASTER_KEY is not set)
  2  bad usage

Examples:
  # first time: generate a key, keep it in your secret store, configure every process with it
  export WORKLEDGER_MASTER_KEY=$(openssl rand -base64 32)
  workledger admin wrap-secrets
  # rotation: the new key, the old one beside it until this has run
  export WORKLEDGER_MASTER_KEY=<new> WORKLEDGER_MASTER_KEY_PREVIOUS=<old>
  workledger admin wrap-secrets";
