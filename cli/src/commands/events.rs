//! `workledger events`: browse the global log, and an aggregate's state at a version.

use std::io::{BufWriter, Write};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use event_schemas::{AnyEvent, LogPosition, RecordedEvent};
use futures::TryStreamExt as _;
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::cli::{EventsArgs, OutputFormat};

/// Runs `workledger events`.
pub async fn run(pool: &PgPool, args: EventsArgs) -> anyhow::Result<()> {
    let aggregate = args.aggregate.as_deref().map(parse_aggregate).transpose()?;
    if let Some(version) = args.at_version {
        let Some((aggregate_type, aggregate_id)) = aggregate else {
            bail!("--at-version needs --aggregate TYPE/ID");
        };
        return print_state(pool, aggregate_type, aggregate_id, version).await;
    }
    // only what can be read (DESIGN §2, as `event_store::GlobalLog` reads): a transaction
    // still running can commit events that land before later ones in log order, and a script
    // paging with `--from` would never see them once it has passed their position
    let mut query = QueryBuilder::<Postgres>::new(
        "select global_position, tx_id::text::bigint as tx_id, event_id, aggregate_type, \
         aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at \
         from events where tx_id < pg_snapshot_xmin(pg_current_snapshot())",
    );
    if let Some((aggregate_type, aggregate_id)) = aggregate {
        query
            .push(" and aggregate_type = ")
            .push_bind(aggregate_type);
        if let Some(id) = aggregate_id {
            query.push(" and aggregate_id = ").push_bind(id);
        }
    }
    if let Some(event_type) = &args.event_type {
        query
            .push(" and event_type = ")
            .push_bind(event_type.clone());
    }
    if let Some(tenant) = &args.tenant {
        query
            .push(" and metadata ->> 'tenant_id' = ")
            .push_bind(tenant.clone());
    }
    if let Some(from) = args.from {
        query
            .push(" and (tx_id, global_position) >= (")
            .push_bind(from.tx_id.to_string())
            .push("::text::xid8, ")
            .push_bind(from.global_position)
            .push(")");
    }
    if let Some(to) = args.to {
        query
            .push(" and (tx_id, global_position) <= (")
            .push_bind(to.tx_id.to_string())
            .push("::text::xid8, ")
            .push_bind(to.global_position)
            .push(")");
    }
    if let Some(since) = args.since {
        query.push(" and recorded_at >= ").push_bind(since);
    }
    if let Some(until) = args.until {
        query.push(" and recorded_at < ").push_bind(until);
    }
    query.push(" order by events.tx_id, events.global_position");
    if let Some(limit) = args.limit {
        query.push(" limit ").push_bind(limit as i64);
    }

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.format == OutputFormat::Table {
        writeln!(
            out,
            "{:<20} {:<27} {:<12} {:<20} {:<38} {:>5}  {:<24} ACTOR",
            "POSITION", "RECORDED", "TENANT", "AGGREGATE TYPE", "AGGREGATE ID", "SEQ", "EVENT"
        )?;
    }
    let mut rows = query.build().fetch(pool);
    let mut count = 0u64;
    while let Some(row) = rows.try_next().await.context("reading the event log")? {
        let event = RecordedEvent {
            position: LogPosition {
                tx_id: row.try_get::<i64, _>("tx_id")? as u64,
                global_position: row.try_get("global_position")?,
            },
            event_id: row.try_get("event_id")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            recorded_at: row.try_get("recorded_at")?,
        };
        match args.format {
            OutputFormat::Jsonl => {
                serde_json::to_writer(&mut out, &event)?;
                writeln!(out)?;
            }
            OutputFormat::Table => {
                let meta = |key: &str| {
                    event
                        .metadata
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_owned()
                };
                writeln!(
                    out,
                    "{:<20} {:<27} {:<12} {:<20} {:<38} {:>5}  {:<24} {}",
                    event.position.to_string(),
                    event
                        .recorded_at
                        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                        .to_string(),
                    meta("tenant_id"),
                    event.aggregate_type,
                    event.aggregate_id,
                    event.sequence,
                    format!("{} v{}", event.event_type, event.event_version),
                    meta("actor"),
                )?;
            }
        }
        count += 1;
    }
    out.flush()?;
    if count == 0 {
        tracing::info!("no events matched");
    }
    Ok(())
}

/// `TYPE` or `TYPE/ID`.
fn parse_aggregate(text: &str) -> anyhow::Result<(String, Option<String>)> {
    match text.split_once('/') {
        Some((t, id)) if !t.is_empty() && !id.is_empty() => Ok((t.to_owned(), Some(id.to_owned()))),
        None if !text.is_empty() => Ok((text.to_owned(), None)),
        _ => bail!("--aggregate takes TYPE or TYPE/ID, e.g. task/0195a0c4-...; got {text:?}"),
    }
}

/// Prints the state of one aggregate after its first `version` events, as JSON.
async fn print_state(
    pool: &PgPool,
    aggregate_type: String,
    aggregate_id: Option<String>,
    version: i64,
) -> anyhow::Result<()> {
    let Some(aggregate_id) = aggregate_id else {
        bail!("--at-version needs one aggregate: --aggregate TYPE/ID");
    };
    let rows = sqlx::query(
        "select event_type, event_version, payload from events \
         where aggregate_type = $1 and aggregate_id = $2 and sequence <= $3 order by sequence",
    )
    .bind(&aggregate_type)
    .bind(&aggregate_id)
    .bind(version)
    .fetch_all(pool)
    .await
    .context("reading the aggregate's events")?;
    if rows.is_empty() {
        bail!("{aggregate_type}/{aggregate_id} has no events");
    }
    if (rows.len() as i64) < version {
        bail!(
            "{aggregate_type}/{aggregate_id} is at version {}, not {version}",
            rows.len()
        );
    }
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let event_type: String = row.try_get("event_type")?;
        let decoded = AnyEvent::decode(
            &aggregate_type,
            &event_type,
            &row.try_get::<String, _>("event_version")?,
            row.try_get("payload")?,
        )
        .with_context(|| format!("decoding {event_type}"))?
        .with_context(|| {
            format!("aggregate type {aggregate_type:?} is not one Workledger knows")
        })?;
        events.push(decoded);
    }
    let state = fold_any(&aggregate_type, events)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    serde_json::to_writer_pretty(&mut out, &state)?;
    writeln!(out)?;
    Ok(())
}

fn fold_any(aggregate_type: &str, events: Vec<AnyEvent>) -> anyhow::Result<Value> {
    use event_schemas::{approval, task, workflow_definition, workflow_instance};
    Ok(match aggregate_type {
        workflow_definition::AGGREGATE_TYPE => {
            fold::<domain::WorkflowDefinition>(events, |e| match e {
                AnyEvent::WorkflowDefinition(e) => Some(e),
                _ => None,
            })?
        }
        workflow_instance::AGGREGATE_TYPE => {
            fold::<domain::WorkflowInstance>(events, |e| match e {
                AnyEvent::WorkflowInstance(e) => Some(e),
                _ => None,
            })?
        }
        task::AGGREGATE_TYPE => fold::<domain::Task>(events, |e| match e {
            AnyEvent::Task(e) => Some(e),
            _ => None,
        })?,
        approval::AGGREGATE_TYPE => fold::<domain::Approval>(events, |e| match e {
            AnyEvent::Approval(e) => Some(e),
            _ => None,
        })?,
        other => bail!("no state view for aggregate type {other:?}"),
    })
}

fn fold<A: Aggregate>(
    events: Vec<AnyEvent>,
    extract: fn(AnyEvent) -> Option<A::Event>,
) -> anyhow::Result<Value> {
    let mut aggregate = A::default();
    for event in events {
        let event = extract(event).context("an event of another aggregate type")?;
        aggregate.apply(event);
    }
    Ok(serde_json::to_value(&aggregate)?)
}

/// Parses `--at-version`: an aggregate's first event is its version 1.
pub fn parse_version(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(version) if version >= 1 => Ok(version),
        Ok(_) => Err("a version is 1 or more (an aggregate's first event is version 1)".into()),
        Err(e) => Err(format!("expected a whole number of 1 or more ({e})")),
    }
}

/// Parses `--since`/`--until`: RFC 3339.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-11-26T09:00:00Z ({e})"))
}
