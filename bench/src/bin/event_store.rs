//! Event-store benchmark (issue 2): append throughput at several concurrencies, beside
//! pgbench's single-row insert TPS on the same database in the same run, and the global log
//! reader's throughput over a large log.
//!
//! `cargo run --release -p workledger-bench --bin event_store -- --help`

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cqrs_es::EventStore as _;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventStoreAggregateContext;
use event_store::database::PoolSettings;
use event_store::{AppendNotifier, EventRepository, GlobalLog, LogPosition, process_batch};
use sqlx::PgPool;
use workledger_bench::pgbench::{self, EVENTS_SCRIPT, PLAIN_SCRIPT};
use workledger_bench::{Ticker, median, metadata, process_cpu_seconds, quantile};

#[derive(Debug, Parser)]
struct Args {
    /// Server to benchmark on (a database named --database is dropped and created there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    server: String,
    #[arg(long, default_value = "workledger_bench")]
    database: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Appender counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Alternating pgbench/event-store rounds per concurrency; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Events in the log for the reader measurement.
    #[arg(long, default_value_t = 1_000_000)]
    reader_events: i64,
    /// Events per reader batch.
    #[arg(long, default_value_t = 5_000)]
    batch: i64,
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = recreate_database(&args).await?;
    let pool = event_store::connect(
        &url,
        &PoolSettings {
            max_connections: 40,
            ..PoolSettings::default()
        },
        false,
    )
    .await?;
    event_store::migrate(&pool).await?;
    sqlx::query(
        "create table pgbench_events (id bigint generated always as identity primary key, \
         aggregate_id text not null, payload jsonb not null, metadata jsonb not null, \
         recorded_at timestamptz not null default now())",
    )
    .execute(&pool)
    .await?;

    println!(
        "## Appends: one event per transaction, {} s each, median of {} alternating rounds\n",
        args.seconds, args.rounds
    );
    println!(
        "| appenders | pgbench: event row into `events` TPS | pgbench: row into a plain table TPS \
         | event store appends/s | vs pgbench `events` | append p50 | append p99 | client CPU per append |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &c in &args.concurrency {
        // pgbench and the store alternate, so drift on a shared machine hits both alike
        let plain_table = pgbench::tps(&database_url(&args), c, args.seconds, PLAIN_SCRIPT)?;
        let mut same_table = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..args.rounds {
            same_table.push(pgbench::tps(
                &database_url(&args),
                c,
                args.seconds,
                EVENTS_SCRIPT,
            )?);
            let cpu_before = process_cpu_seconds();
            let (count, rate, p50, p99) =
                appends(&pool, c, Duration::from_secs(args.seconds)).await?;
            let cpu = process_cpu_seconds() - cpu_before;
            ours.push((rate, p50, p99, cpu * 1e6 / count as f64));
        }
        let pgbench = median(same_table.clone());
        ours.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (rate, p50, p99, cpu_per_append) = ours[ours.len() / 2];
        println!(
            "| {c} | {pgbench:.0} | {plain_table:.0} | {rate:.0} | {:.0}% | {:.2} ms | {:.2} ms | {cpu_per_append:.0} µs |",
            100.0 * rate / pgbench,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        );
    }

    println!(
        "\n## Global log reader over {} events\n",
        args.reader_events
    );
    fill_log(&pool, args.reader_events).await?;
    let (read_rate, checkpointed_rate) = read_log(&pool, args.batch).await?;
    println!("| reader | events/s |\n|---|---:|");
    println!(
        "| `GlobalLog::read`, batches of {} | {read_rate:.0} |",
        args.batch
    );
    println!(
        "| `process_batch` (read + checkpoint per batch, in one transaction) | {checkpointed_rate:.0} |"
    );
    pool.close().await;
    Ok(())
}

fn database_url(args: &Args) -> String {
    let base = args
        .server
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&args.server);
    format!("{base}/{}", args.database)
}

async fn recreate_database(args: &Args) -> anyhow::Result<String> {
    let admin = PgPool::connect(&args.server)
        .await
        .context("connect to --server")?;
    sqlx::query(&format!(
        "drop database if exists {} with (force)",
        args.database
    ))
    .execute(&admin)
    .await?;
    sqlx::query(&format!("create database {}", args.database))
        .execute(&admin)
        .await?;
    admin.close().await;
    let base = args
        .server
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&args.server);
    Ok(format!("{base}/{}", args.database))
}

/// `appenders` tasks, each appending one event per transaction to its own aggregate through
/// cqrs-es and postgres-es (snapshots every 50 events included), for `duration`.
async fn appends(
    pool: &PgPool,
    appenders: usize,
    duration: Duration,
) -> anyhow::Result<(usize, f64, Duration, Duration)> {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let store =
                    EventRepository::store::<Ticker>(pool, AppendNotifier::disabled(), vec![]);
                let id = format!("appender-{a}-{}", uuid::Uuid::now_v7());
                let mut sequence = 0usize;
                let mut snapshot = None;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    // the aggregate stays in memory between commands, as a command handler
                    // holding it would; the append itself is what is measured
                    let mut context = EventStoreAggregateContext {
                        aggregate_id: id.clone(),
                        aggregate: Ticker {
                            ticks: sequence as u64,
                        },
                        current_sequence: sequence,
                        current_snapshot: snapshot,
                    };
                    let sink = EventSink::default();
                    cqrs_es::Aggregate::handle(&mut context.aggregate, (), &(), &sink)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    store
                        .commit(sink.collect().await, context, metadata())
                        .await
                        .map_err(|e| anyhow::anyhow!("append failed: {e}"))?;
                    sequence += 1;
                    if sequence.is_multiple_of(event_store::SNAPSHOT_EVERY) {
                        snapshot = Some(snapshot.unwrap_or(0) + 1);
                    }
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let count = latencies.len();
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let p50 = quantile(&mut latencies, 0.50);
    let p99 = quantile(&mut latencies, 0.99);
    Ok((count, rate, p50, p99))
}

/// Bulk-loads `count` events of realistic size (a thousand aggregates, full metadata).
async fn fill_log(pool: &PgPool, count: i64) -> anyhow::Result<()> {
    let chunk = 100_000;
    let mut done = 0;
    while done < count {
        let n = chunk.min(count - done);
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             select 'BenchLog', 'agg-' || (i % 1000), $1 + i / 1000 + 1, 'Ticked', '1', \
                    jsonb_build_object('Ticked', jsonb_build_object('note', 'benchmark event ' || i)), \
                    jsonb_build_object('event_id', gen_random_uuid(), 'tenant_id', 'bench', \
                        'actor', 'service:bench', 'correlation_id', gen_random_uuid(), \
                        'causation_id', 'bench', 'request_id', 'bench', 'occurred_at', now()) \
             from generate_series(0, $2 - 1) as i",
        )
        .bind(done / 1000)
        .bind(n)
        .execute(pool)
        .await?;
        done += n;
    }
    sqlx::query("vacuum analyze events").execute(pool).await?;
    Ok(())
}

async fn read_log(pool: &PgPool, batch: i64) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let mut after = LogPosition::START;
    let mut read = 0usize;
    loop {
        let events = GlobalLog::read(pool, after, batch).await?;
        let Some(last) = events.last() else { break };
        after = last.position;
        read += events.len();
    }
    let read_rate = read as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut applied = 0usize;
    loop {
        let mut n = 0;
        let moved = process_batch(pool, "bench-reader", batch, async |_, events: &[_]| {
            n = events.len();
            Ok::<_, std::io::Error>(())
        })
        .await?;
        if moved.is_none() {
            break;
        }
        applied += n;
    }
    let checkpointed_rate = applied as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(
        read == applied,
        "the two readers disagree: {read} vs {applied}"
    );
    Ok((read_rate, checkpointed_rate))
}
