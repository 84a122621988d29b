//! Projection benchmark (issues 5 and 6): a log of purchase-order instances generated through
//! the real aggregates and orchestrator reactions (`domain::runtime::LocalRuntime`), bulk-loaded
//! into the event store with full metadata, then
//!
//! - catch-up: all six read-model projectors from position zero with the real worker runtime
//!   (`Projections::all().run`), timed until every checkpoint is at the head;
//! - replay: `workledger replay --all` end to end (the release binary, swap included).
//!
//! `cargo build --release -p workledger && cargo run --release -p workledger-bench --bin projections`

// Printing the figures is this binary's purpose.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use domain::approval::ApprovalCommand;
use domain::definition::Definition;
use domain::examples::purchase_order_json;
use domain::ids::step_child_id;
use domain::runtime::{LocalRuntime, LoggedEvent};
use domain::task::TaskCommand;
use domain::{Caller, Role};
use event_schemas::{
    AnyEvent, ApprovalDecision, ApprovalEvent, EventMetadata, LogPosition, TaskEvent,
    WorkflowDefinitionEvent, WorkflowInstanceEvent,
};
use event_store::database::PoolSettings;
use event_store::{Checkpoints, GlobalLog};
use projections::{Projections, RunSettings};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The allocator of the `workledger` binary, so the in-process catch-up allocates as
/// `workledger project` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "Projector catch-up and `workledger replay --all` over a generated log")]
struct Args {
    /// Server to benchmark on (a database named --database is dropped and created there). Its
    /// query string carries over to that database's URL: no TLS on loopback by default, as
    /// the other benchmarks talk to the local Postgres (bench/*.sh).
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    server: String,
    #[arg(long, default_value = "workledger_bench_projections")]
    database: String,
    /// Events to generate (whole instances: a few more than this).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Tenants the instances are spread over.
    #[arg(long, default_value_t = 4)]
    tenants: u32,
    /// Catch-up runs (each from position zero on emptied read models).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Events per projector batch in the catch-up (the worker default unless given).
    #[arg(long)]
    batch: Option<i64>,
    /// The `workledger` binary for the replay measurement (skipped when it does not exist).
    #[arg(long, default_value = "target/release/workledger")]
    workledger: String,
    /// Keep the database and its log: generate only when it has no events yet.
    #[arg(long)]
    reuse: bool,
    /// Also measure the Kafka publisher alone from zero, publishing to these brokers
    /// (`host:port`; e.g. a `tansu broker` on loopback).
    #[arg(long)]
    kafka: Option<String>,
    /// Catch up only these projectors (comma-separated names; all six unless given).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = database(&args).await?;
    let pool = event_store::connect(
        &url,
        &PoolSettings {
            max_connections: 20,
            ..PoolSettings::default()
        },
        false,
    )
    .await?;
    event_store::migrate(&pool).await?;
    let existing: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await?;
    if existing == 0 {
        let started = Instant::now();
        let (instances, events) = generate(&pool, &args).await?;
        println!(
            "generated {events} events ({instances} purchase-order instances, {} tenants) in {:.1} s",
            args.tenants,
            started.elapsed().as_secs_f64()
        );
        sqlx::query("vacuum analyze events").execute(&pool).await?;
    }
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await?;
    let head = GlobalLog::head(&pool).await?;

    println!("\n### Catch-up: six projectors from zero over {events} log events\n");
    println!("| run | batch | time to caught up | log events/s |");
    println!("|---:|---:|---:|---:|");
    let mut settings = RunSettings::default();
    if let Some(batch) = args.batch {
        settings.batch_size = batch;
    }
    let mut projections = Projections::all();
    if !args.only.is_empty() {
        let names: Vec<&str> = args.only.iter().map(String::as_str).collect();
        projections = projections.only(&names)?;
        println!("(only {})\n", names.join(", "));
    }
    for round in 1..=args.rounds {
        reset(&pool).await?;
        let seconds = catch_up(
            &pool,
            projections.clone().with_settings(settings.clone()),
            head,
        )
        .await?;
        println!(
            "| {round} | {} | {seconds:.2} s | {:.0} |",
            settings.batch_size,
            events as f64 / seconds
        );
    }

    if std::path::Path::new(&args.workledger).exists() {
        println!("\n### Replay: `workledger replay --all` over {events} log events\n");
        println!("| run | wall time (incl. swap) | log events/s | summary |");
        println!("|---:|---:|---:|---|");
        for round in 1..=args.rounds {
            let started = Instant::now();
            let output = Command::new(&args.workledger)
                .args(["replay", "--all", "--restart"])
                .env("DATABASE_URL", &url)
                .env("WORKLEDGER_LOG", "warn")
                .output()
                .context("run workledger")?;
            let seconds = started.elapsed().as_secs_f64();
            ensure!(
                output.status.success(),
                "replay failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let summary = String::from_utf8_lossy(&output.stdout);
            let summary = summary.lines().next().unwrap_or("").split(';').next();
            println!(
                "| {round} | {seconds:.2} s | {:.0} | {} |",
                events as f64 / seconds,
                summary.unwrap_or("")
            );
        }
    } else {
        println!("\n(no {}: replay not measured)", args.workledger);
    }

    if let Some(brokers) = &args.kafka {
        let published: i64 =
            sqlx::query_scalar("select count(*) from events where aggregate_type = any($1)")
                .bind(&event_schemas::INTEGRATION_AGGREGATE_TYPES[..])
                .fetch_one(&pool)
                .await?;
        println!(
            "\n### Kafka publisher alone from zero over {events} log events ({published} published)\n"
        );
        println!("| run | time to caught up | events published/s |");
        println!("|---:|---:|---:|");
        for round in 1..=args.rounds {
            sqlx::query("delete from checkpoints where name = $1")
                .bind(projections::names::KAFKA_PUBLISHER)
                .execute(&pool)
                .await?;
            let mut kafka = projections::kafka::KafkaSettings::new(brokers.clone());
            kafka.topic_prefix = format!("bench{}.", Uuid::new_v4().simple());
            kafka.replication_factor = 1;
            let publisher = projections::kafka::KafkaPublisher::new(kafka)?;
            let set = Projections::from_projectors(vec![std::sync::Arc::new(publisher)])
                .with_settings(settings.clone());
            let seconds = catch_up(&pool, set, head).await?;
            println!(
                "| {round} | {seconds:.2} s | {:.0} |",
                published as f64 / seconds
            );
        }
    }
    pool.close().await;
    Ok(())
}

async fn database(args: &Args) -> anyhow::Result<String> {
    let (server, query) = match args.server.split_once('?') {
        Some((server, query)) => (server, format!("?{query}")),
        None => (args.server.as_str(), String::new()),
    };
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(server);
    let admin = PgPool::connect(&args.server)
        .await
        .context("connect to --server")?;
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(&args.database)
            .fetch_one(&admin)
            .await?;
    if !(exists && args.reuse) {
        sqlx::query(&format!(
            "drop database if exists {} with (force)",
            args.database
        ))
        .execute(&admin)
        .await?;
        sqlx::query(&format!("create database {}", args.database))
            .execute(&admin)
            .await?;
    }
    admin.close().await;
    Ok(format!("{base}/{}{query}", args.database))
}

/// Empties the read models and their checkpoints (and any rebuild left behind).
async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    let tables: Vec<&str> = Projections::all()
        .projectors()
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    sqlx::query(&format!("truncate {}", tables.join(", ")))
        .execute(pool)
        .await?;
    sqlx::query("delete from checkpoints where name = any($1) or name like 'rebuild:%'")
        .bind(Projections::all().names())
        .execute(pool)
        .await?;
    sqlx::query("delete from projector_status")
        .execute(pool)
        .await?;
    sqlx::query("vacuum analyze").execute(pool).await?;
    Ok(())
}

/// Runs the real worker runtime until every projector's checkpoint of `projections` is at
/// `head`.
async fn catch_up(
    pool: &PgPool,
    projections: Projections,
    head: LogPosition,
) -> anyhow::Result<f64> {
    let names = projections.names();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let workers = tokio::spawn(projections.run(pool.clone(), stop.clone()));
    let deadline = started + Duration::from_secs(3600);
    let mut last_check = Instant::now();
    loop {
        let mut behind = false;
        for name in &names {
            if Checkpoints::load(pool, name).await? < head {
                behind = true;
                break;
            }
        }
        if !behind {
            break;
        }
        ensure!(Instant::now() < deadline, "the projectors did not catch up");
        if last_check.elapsed() > Duration::from_secs(5) {
            last_check = Instant::now();
            let failure: Option<(String, Option<String>)> = sqlx::query_as(
                "select name, error from projector_status where error is not null limit 1",
            )
            .fetch_optional(pool)
            .await?;
            if let Some((name, error)) = failure {
                anyhow::bail!("{name} failed: {error:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    workers.await?;
    Ok(seconds)
}

fn person(tenant: &str, n: u128, roles: &[Role], groups: &[&str]) -> Caller {
    Caller::user(
        tenant,
        Uuid::from_u128(n),
        roles.iter().copied(),
        groups.iter().copied(),
    )
}

fn vars(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// Events are generated this many instances at a time (one runtime each, so memory stays
/// flat) and inserted in one statement per chunk.
const CHUNK: u32 = 500;

/// Runs purchase orders through the domain until `args.events` events were recorded, writing
/// them to the log as the command path would (one row per event, full metadata).
async fn generate(pool: &PgPool, args: &Args) -> anyhow::Result<(u32, u64)> {
    let t0: DateTime<Utc> = DateTime::from_timestamp(1_800_000_000, 0).context("clock")?;
    let tenants: Vec<String> = (0..args.tenants).map(|t| format!("tenant-{t}")).collect();
    let mut written = 0u64;
    let mut instance = 0u32;
    let mut first = true;
    while written < args.events {
        let mut rt = LocalRuntime::new();
        for tenant in &tenants {
            let ids = |ns: &[u128]| ns.iter().map(|n| Uuid::from_u128(*n)).collect();
            rt.set_group_members(tenant, "managers", ids(&[0xA1, 0xA2]));
            rt.set_group_members(tenant, "board", ids(&[0xB1, 0xB2, 0xB3]));
            let designer = person(tenant, 0xDE, &[Role::Designer], &[]);
            let definition = Definition::from_json(&purchase_order_json(Uuid::from_u128(0xF1)))?;
            rt.publish(&designer, t0, definition)?;
        }
        for _ in 0..CHUNK {
            let tenant = &tenants[(instance % args.tenants) as usize];
            run_order(&mut rt, tenant, t0, instance)?;
            instance += 1;
        }
        ensure!(
            rt.failures().is_empty(),
            "reactions failed: {:?}",
            rt.failures()
        );
        // every runtime publishes the definitions again: only the first chunk keeps them
        let events: Vec<&LoggedEvent> = rt
            .events()
            .iter()
            .filter(|e| first || !matches!(e.event, AnyEvent::WorkflowDefinition(_)))
            .collect();
        first = false;
        written += insert(pool, &events).await?;
    }
    Ok((instance, written))
}

/// One purchase order end to end, as the engine benchmark runs it: a quarter go to the board.
fn run_order(rt: &mut LocalRuntime, tenant: &str, t0: DateTime<Utc>, i: u32) -> anyhow::Result<()> {
    let finance = person(tenant, 0xF1, &[Role::Member], &[]);
    let clerk = person(tenant, 0xC1, &[Role::Member], &["clerks"]);
    let lawyer = person(tenant, 0x11, &[Role::Member], &["legal"]);
    let manager = person(tenant, 0xA2, &[Role::Member], &[]);
    let board = [0xB1, 0xB3].map(|n| person(tenant, n, &[Role::Member], &[]));
    let operator = person(tenant, 0x0F, &[Role::Operator], &[]);
    // an order a minute: the reports span a few weeks of days
    let at = t0 + TimeDelta::minutes(i64::from(i));
    let later = |minutes: i64| at + TimeDelta::minutes(minutes);
    let id = Uuid::from_u128(u128::from(i) + 1);
    let child = |step: &str| step_child_id(id, step, 1);
    let amount = if i.is_multiple_of(4) { 25_000 } else { 800 };
    rt.start(
        &operator,
        at,
        id,
        "purchase-order",
        None,
        Some(format!("PO-{i}")),
        vars(json!({"amount": amount, "cost_centre": i % 17})),
    )?;
    let empty = || TaskCommand::Complete { output: Map::new() };
    rt.task_command(&clerk, later(1), child("review"), TaskCommand::Claim)?;
    rt.task_command(
        &clerk,
        later(5),
        child("review"),
        TaskCommand::Complete {
            output: vars(json!({"checked": true})),
        },
    )?;
    let approve = || ApprovalCommand::Decide {
        decision: ApprovalDecision::Approve,
        comment: Some("fine".into()),
    };
    if amount > 10_000 {
        rt.approval_command(&board[0], later(30), child("board"), approve())?;
        rt.approval_command(&board[1], later(45), child("board"), approve())?;
    } else {
        rt.approval_command(&manager, later(20), child("manager"), approve())?;
    }
    rt.task_command(&lawyer, later(60), child("legal"), TaskCommand::Claim)?;
    rt.task_command(&lawyer, later(90), child("legal"), empty())?;
    rt.task_command(&finance, later(120), child("finance"), empty())?;
    rt.task_command(&clerk, later(150), child("archive"), TaskCommand::Claim)?;
    rt.task_command(&clerk, later(160), child("archive"), empty())?;
    Ok(())
}

/// The stored payload and version of an event (cqrs-es's externally tagged JSON).
fn body(event: &AnyEvent) -> anyhow::Result<(&'static str, &'static str, Value)> {
    let (version, payload) = match event {
        AnyEvent::WorkflowDefinition(e) => (
            WorkflowDefinitionEvent::current_version(e.type_name()),
            serde_json::to_value(e)?,
        ),
        AnyEvent::WorkflowInstance(e) => (
            WorkflowInstanceEvent::current_version(e.type_name()),
            serde_json::to_value(e)?,
        ),
        AnyEvent::Task(e) => (
            TaskEvent::current_version(e.type_name()),
            serde_json::to_value(e)?,
        ),
        AnyEvent::Approval(e) => (
            ApprovalEvent::current_version(e.type_name()),
            serde_json::to_value(e)?,
        ),
        other => anyhow::bail!("unexpected {}", other.event_type()),
    };
    Ok((event.event_type(), version.unwrap_or("1"), payload))
}

/// Inserts `events` in log order, numbering each aggregate's events from 1.
async fn insert(pool: &PgPool, events: &[&LoggedEvent]) -> anyhow::Result<u64> {
    let mut sequences: HashMap<(&str, &str), i64> = HashMap::new();
    let n = events.len();
    let mut aggregate_types = Vec::with_capacity(n);
    let mut aggregate_ids = Vec::with_capacity(n);
    let mut seqs = Vec::with_capacity(n);
    let mut event_types = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let correlation = Uuid::now_v7();
    for event in events {
        let sequence = sequences
            .entry((event.aggregate_type, event.aggregate_id.as_str()))
            .or_insert(0);
        *sequence += 1;
        let (event_type, version, payload) = body(&event.event)?;
        let meta = EventMetadata {
            event_id: Uuid::now_v7(),
            tenant_id: event.tenant_id.clone(),
            actor: event.actor.clone(),
            correlation_id: correlation,
            causation_id: "bench".into(),
            request_id: "bench".into(),
            occurred_at: event.at,
        };
        aggregate_types.push(event.aggregate_type);
        aggregate_ids.push(event.aggregate_id.as_str());
        seqs.push(*sequence);
        event_types.push(event_type);
        versions.push(version);
        payloads.push(payload.to_string());
        metadata.push(serde_json::to_string(&meta.to_map(true))?);
    }
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) \
         select t, i, s, e, v, p::jsonb, m::jsonb \
         from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
                     $7::text[]) with ordinality as r(t, i, s, e, v, p, m, ord) \
         order by ord",
    )
    .bind(&aggregate_types)
    .bind(&aggregate_ids)
    .bind(&seqs)
    .bind(&event_types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadata)
    .execute(pool)
    .await?;
    Ok(n as u64)
}
