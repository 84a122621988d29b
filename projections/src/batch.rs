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
//! again. A projector that delivers outside the database (the Kafka publisher, the webhook
//! notifier) runs its batch with no transaction open and saves its checkpoint afterwards
//! ([`Projector::external`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use event_schemas::{LogPosition, RecordedEvent};
use event_store::{BatchError, Checkpoints, LogError};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Acquire, PgConnection, Row};
use uuid::Uuid;

use crate::feed::{Feed, Slice};
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
       batch.metadata->>'occurred_at' as occurred_at,
       batch.metadata->>'correlation_id' as correlation_id,
       batch.metadata->>'causation_id' as causation_id
from head left join batch on true";

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
    // The join hands the batch over in the order it was read, but SQL promises no order
    // without `order by`, and one on the join's result made Postgres copy and sort every row
    // (payload included) of every read. Sorted here instead (positions are unique): a run
    // already in order is one pass of comparisons.
    events.sort_unstable_by_key(|event| event.position);
    Ok(Read { events, head })
}

/// The metadata keys projectors use (read models `crate::projector::meta`, the publisher the
/// correlation and causation ids too): a projector's events carry only these, not the whole
/// stored map (the rest is for tracing, and reading and decoding it was a good part of the
/// cost of a read).
const PROJECTED_METADATA: [&str; 5] = [
    "tenant_id",
    "actor",
    "occurred_at",
    "correlation_id",
    "causation_id",
];

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

impl Source<'_> {
    /// A batch committed up to `end`: the feed learns that `name` has passed it.
    fn committed(&self, name: &str, end: LogPosition, events: usize, caught_up: bool) -> Batch {
        if let Source::Feed(feed) = self {
            feed.passed(name, end);
        }
        Batch {
            position: end,
            events,
            caught_up,
        }
    }
}

/// What a batch read, and the events it holds for the projector.
enum Taken {
    /// Read for this projector alone, with the limit it was read with.
    Own(Read, i64),
    Shared(Arc<Slice>),
}

impl Taken {
    async fn read(
        conn: &mut PgConnection,
        name: &str,
        after: LogPosition,
        filter: &EventFilter,
        source: &Source<'_>,
    ) -> Result<Self, sqlx::Error> {
        Ok(match source {
            Source::Own(limit) => Taken::Own(read(conn, after, filter, *limit).await?, *limit),
            Source::Feed(feed) => Taken::Shared(feed.next(conn, name, after).await?),
        })
    }

    /// The projector's events, where a reader that passed them stands, and whether the read
    /// stopped at the head of the readable log.
    fn batch(
        &self,
        filter: &EventFilter,
        after: LogPosition,
    ) -> (Vec<&RecordedEvent>, LogPosition, bool) {
        match self {
            Taken::Own(own, limit) => {
                let head = own.head.unwrap_or(LogPosition::START).max(after);
                let caught_up = (own.events.len() as i64) < *limit;
                let end = match own.events.last() {
                    // fewer events than asked for: nothing else of interest is readable up
                    // to the head
                    Some(last) if caught_up => last.position.max(head),
                    Some(last) => last.position,
                    None => head,
                };
                (own.events.iter().collect(), end, caught_up)
            }
            Taken::Shared(shared) => (
                shared.events(filter, after),
                shared.end.max(after),
                !shared.full,
            ),
        }
    }
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
    if projector.external() {
        return run_outside_transaction(conn, name, projector, &filter, source).await;
    }
    let mut tx = conn.begin().await?;
    // Read models are derived data: a commit lost in a crash takes its checkpoint with it and
    // is projected again, so a projector need not wait for the WAL flush.
    sqlx::query("set local synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let after = Checkpoints::lock(&mut tx, name).await?;
    let taken = Taken::read(&mut tx, name, after, &filter, &source)
        .await
        .map_err(LogError::Read)?;
    let (events, end, caught_up) = taken.batch(&filter, after);
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
    Ok(Some(source.committed(name, end, events.len(), caught_up)))
}

/// A batch of a projector that delivers outside the database ([`Projector::external`]): read
/// and applied with no transaction open, the checkpoint saved once `apply` has returned (for a
/// publisher: once the broker has acknowledged every event). A transaction held open meanwhile
/// would hold back every reader of the log, which ends below the oldest running transaction.
///
/// The worker's advisory lock makes it the only writer of the checkpoint; should another
/// have moved it meanwhile (an unlocked catch-up), it is never moved back. A crash between the
/// delivery and the checkpoint delivers the batch again: at least once, never skipped.
async fn run_outside_transaction(
    conn: &mut PgConnection,
    name: &str,
    projector: &dyn Projector,
    filter: &EventFilter,
    source: Source<'_>,
) -> Result<Option<Batch>, BatchError<ProjectionError>> {
    let after = Checkpoints::load(&mut *conn, name).await?;
    let taken = Taken::read(conn, name, after, filter, &source)
        .await
        .map_err(LogError::Read)?;
    let (events, end, caught_up) = taken.batch(filter, after);
    if end <= after {
        return Ok(None);
    }
    if !events.is_empty() {
        projector
            .apply(conn, &events)
            .await
            .map_err(BatchError::Apply)?;
    }
    let mut tx = conn.begin().await?;
    if Checkpoints::lock(&mut tx, name).await? < end {
        Checkpoints::save(&mut *tx, name, end).await?;
    }
    tx.commit().await?;
    Ok(Some(source.committed(name, end, events.len(), caught_up)))
}
