//! One batch of a projector: lock its checkpoint, read the next events it is interested in,
//! apply them, advance the checkpoint, commit. All in one transaction.
//!
//! This is `event_store::process_batch` with the projector's [`EventFilter`] pushed into the log
//! query: a projector that reads a few event types does not fetch and decode the whole log. When
//! the read returns fewer events than asked for, nothing else of interest is readable, so the
//! checkpoint moves on to the head of the log (taken in the same statement, hence the same
//! snapshot): an uninterested projector still counts as caught up, and its next read starts
//! there rather than rescanning.
//!
//! Batches commit with `synchronous_commit = off`: a read model is derived data, and a commit
//! lost in a crash is lost together with its checkpoint, so the events are simply projected
//! again.

use chrono::{DateTime, Utc};
use event_schemas::{LogPosition, RecordedEvent};
use event_store::{BatchError, Checkpoints, LogError};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Acquire, PgConnection, Row};
use uuid::Uuid;

use crate::feed::Feed;
use crate::projector::{EventFilter, ProjectionError, Projector};

/// What a committed batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// The checkpoint after the batch.
    pub position: LogPosition,
    /// Events applied (0 when only the checkpoint moved on past uninteresting events).
    pub events: usize,
    /// Whether the read stopped at the head of the readable log (fewer events than asked
    /// for). Not `events < limit`: a batch taken from a shared read holds only this
    /// projector's share of it.
    pub caught_up: bool,
}

/// The events after `after` that pass `filter`, and the head of the readable log, both as of
/// one snapshot.
pub(crate) struct Read {
    pub events: Vec<RecordedEvent>,
    pub head: Option<LogPosition>,
}

const READ: &str = "\
with head as (
    select tx_id, global_position from events
    where tx_id < pg_snapshot_xmin(pg_current_snapshot())
    order by tx_id desc, global_position desc
    limit 1
), batch as (
    select * from events
    where (tx_id, global_position) > ($1::text::xid8, $2)
      and tx_id < pg_snapshot_xmin(pg_current_snapshot())
      and ($3::text[] is null or aggregate_type = any($3))
      and ($4::text[] is null or event_type = any($4))
    order by tx_id, global_position
    limit $5
)
select head.tx_id::text::bigint as head_tx_id, head.global_position as head_position,
       batch.tx_id::text::bigint as tx_id, batch.global_position, batch.event_id,
       batch.aggregate_type, batch.aggregate_id, batch.sequence, batch.event_type,
       batch.event_version, batch.payload, batch.recorded_at,
       batch.metadata->>'tenant_id' as tenant_id, batch.metadata->>'actor' as actor,
       batch.metadata->>'occurred_at' as occurred_at
from head left join batch on true
order by batch.tx_id, batch.global_position";

pub(crate) async fn read(
    conn: &mut PgConnection,
    after: LogPosition,
    filter: &EventFilter,
    limit: i64,
) -> Result<Read, sqlx::Error> {
    let rows = sqlx::query(READ)
        .bind(after.tx_id.to_string())
        .bind(after.global_position)
        .bind(filter.aggregate_types.as_deref())
        .bind(filter.event_types.as_deref())
        .bind(limit)
        .fetch_all(conn)
        .await?;
    let mut head = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if head.is_none() {
            head = Some(LogPosition {
                tx_id: row.try_get::<i64, _>("head_tx_id")? as u64,
                global_position: row.try_get("head_position")?,
            });
        }
        if let Some(event) = decode_row(row)? {
            events.push(event);
        }
    }
    Ok(Read { events, head })
}

/// The metadata keys read models use (`crate::projector::meta`): a projector's events carry
/// only these, not the whole stored map (the rest is for tracing, and reading and decoding it
/// was a good part of the cost of a read).
const PROJECTED_METADATA: [&str; 3] = ["tenant_id", "actor", "occurred_at"];

fn projected_metadata(row: &PgRow) -> Result<Value, sqlx::Error> {
    let mut metadata = serde_json::Map::with_capacity(PROJECTED_METADATA.len());
    for key in PROJECTED_METADATA {
        if let Some(value) = row.try_get::<Option<String>, _>(key)? {
            metadata.insert(key.to_owned(), Value::String(value));
        }
    }
    Ok(Value::Object(metadata))
}

fn decode_row(row: &PgRow) -> Result<Option<RecordedEvent>, sqlx::Error> {
    let Some(tx_id) = row.try_get::<Option<i64>, _>("tx_id")? else {
        return Ok(None);
    };
    Ok(Some(RecordedEvent {
        position: LogPosition {
            tx_id: tx_id as u64,
            global_position: row.try_get("global_position")?,
        },
        event_id: row.try_get::<Uuid, _>("event_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get::<Value, _>("payload")?,
        metadata: projected_metadata(row)?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
    }))
}

/// Runs one batch of `projector` under the checkpoint `name` (its own name, or another one
/// for a rebuild) on `conn`: `Ok(None)` when there was nothing to read.
///
/// Either the batch's writes and the new checkpoint commit together, or neither does.
pub async fn run_batch(
    conn: &mut PgConnection,
    name: &str,
    projector: &dyn Projector,
    limit: i64,
) -> Result<Option<Batch>, BatchError<ProjectionError>> {
    run(conn, name, projector, Source::Own(limit.max(1))).await
}

/// [`run_batch`] taking its events from `feed` (a read shared with the set's other
/// projectors) instead of reading them itself.
pub(crate) async fn run_fed_batch(
    conn: &mut PgConnection,
    name: &str,
    projector: &dyn Projector,
    feed: &Feed,
) -> Result<Option<Batch>, BatchError<ProjectionError>> {
    run(conn, name, projector, Source::Feed(feed)).await
}

enum Source<'a> {
    /// Read up to this many events of the projector's own.
    Own(i64),
    Feed(&'a Feed),
}

async fn run(
    conn: &mut PgConnection,
    name: &str,
    projector: &dyn Projector,
    source: Source<'_>,
) -> Result<Option<Batch>, BatchError<ProjectionError>> {
    let filter = projector.filter();
    if let Source::Feed(feed) = &source {
        feed.wait_turn(name).await;
    }
    let mut tx = conn.begin().await?;
    // Read models are derived data: a commit lost in a crash takes its checkpoint with it and
    // is projected again, so a projector need not wait for the WAL flush.
    sqlx::query("set local synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let after = Checkpoints::lock(&mut tx, name).await?;
    let own;
    let shared;
    let (events, end, caught_up): (Vec<&RecordedEvent>, LogPosition, bool) = match source {
        Source::Own(limit) => {
            own = read(&mut tx, after, &filter, limit)
                .await
                .map_err(LogError::Read)?;
            let head = own.head.unwrap_or(LogPosition::START).max(after);
            let end = match own.events.last() {
                // fewer events than asked for: nothing else of interest is readable up to
                // the head
                Some(last) if (own.events.len() as i64) < limit => last.position.max(head),
                Some(last) => last.position,
                None => head,
            };
            let caught_up = (own.events.len() as i64) < limit;
            (own.events.iter().collect(), end, caught_up)
        }
        Source::Feed(feed) => {
            shared = feed
                .next(&mut tx, name, after)
                .await
                .map_err(LogError::Read)?;
            (
                shared.events(&filter, after),
                shared.end.max(after),
                !shared.full,
            )
        }
    };
    if end <= after {
        tx.rollback().await?;
        return Ok(None);
    }
    if !events.is_empty() {
        projector
            .apply(&mut tx, &events)
            .await
            .map_err(BatchError::Apply)?;
    }
    Checkpoints::save(&mut *tx, name, end).await?;
    tx.commit().await?;
    if let Source::Feed(feed) = &source {
        feed.passed(name, end);
    }
    Ok(Some(Batch {
        position: end,
        events: events.len(),
        caught_up,
    }))
}
