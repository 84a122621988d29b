//! Projection and query benchmarks (issue 5), each from a second process against real
//! Workledger processes: inbox queries over a million tasks at a fixed rate, the audit export
//! over ten million entries (query API and CLI, rows/s and peak memory), and the live
//! projector lag under the command API benchmark's load. `bench/projections.sh` runs them all
//! and prints markdown for docs/benchmarks.md.

// printing the figures (stdout) and the progress (stderr) is this binary's purpose
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod client;
mod export;
mod inbox;
mod lag;
mod load;
mod seed;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sqlx::postgres::PgPoolOptions;

use client::Api;

#[derive(Debug, Parser)]
#[command(about = "Projection and query benchmarks on running Workledger processes")]
struct Args {
    /// Where to log in and send commands (`serve` or `command-api`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    #[arg(long, default_value = "admin@example.com")]
    email: String,
    /// The bootstrap admin's password.
    #[arg(long, env = "WORKLEDGER_ADMIN_PASSWORD")]
    password: String,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Tenants and their people through the command API, then the tasks' events in bulk.
    SeedTasks {
        #[arg(long, default_value_t = 4)]
        tenants: usize,
        #[arg(long, default_value_t = 1_000_000)]
        tasks: usize,
        /// Members per tenant who log in (of 200 assignees).
        #[arg(long, default_value_t = 10)]
        members: usize,
    },
    /// Open-loop inbox queries on the query API at `--query`.
    Inbox {
        #[arg(long)]
        query: String,
        #[arg(long, default_value_t = 4)]
        tenants: usize,
        #[arg(long, default_value_t = 10)]
        members: usize,
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 5)]
        warmup: u64,
    },
    /// More audit entries on a tenant's chain (bench/sql/audit_entries.sql).
    SeedAudit {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long, default_value_t = 10_000_000)]
        entries: i64,
    },
    /// The export's markdown table header.
    ExportHeader {
        #[arg(long)]
        entries: i64,
    },
    /// `GET /api/v1/audit/export?format=jsonl` from the query API at `--query` (process
    /// `--pid`) as the tenant's auditor.
    ExportHttp {
        #[arg(long)]
        query: String,
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// `workledger audit export` (the binary at `--bin`) to `--output`, removed afterwards.
    ExportCli {
        #[arg(long)]
        bin: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Live projector lag of commands sent every `--interval-ms` for `--seconds`.
    Lag {
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let login = || async {
        Api::login(
            &Api::client()?,
            &args.api,
            &args.email,
            &args.password,
            None,
        )
        .await
    };
    match &args.scenario {
        Scenario::SeedTasks {
            tenants,
            tasks,
            members,
        } => {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect(&args.database_url)
                .await?;
            seed::tasks(&login().await?, &pool, *tenants, *tasks, *members).await
        }
        Scenario::Inbox {
            query,
            tenants,
            members,
            rate,
            seconds,
            warmup,
        } => {
            inbox::run(
                &args.api, query, *tenants, *members, *rate, *seconds, *warmup,
            )
            .await
        }
        Scenario::SeedAudit { tenant, entries } => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&args.database_url)
                .await?;
            seed::audit(&pool, tenant, *entries).await
        }
        Scenario::ExportHeader { entries } => {
            export::header(*entries);
            Ok(())
        }
        Scenario::ExportHttp { query, pid, tenant } => {
            export::http(&args.api, query, tenant, *pid).await
        }
        Scenario::ExportCli { bin, output } => export::cli(bin, &args.database_url, output),
        Scenario::Lag {
            seconds,
            interval_ms,
        } => {
            lag::run(
                &login().await?,
                &args.database_url,
                *seconds,
                Duration::from_millis(*interval_ms),
            )
            .await
        }
    }
}
