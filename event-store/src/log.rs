//! The global log: every event of every aggregate, in one gap-free order.
//!
//! Positions are handed out when a row is inserted, not when its transaction commits, so
//! "position > checkpoint" would skip an event whose transaction commits after a later one's.
//! The reader only takes rows of transactions older than the oldest one still running
//! (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`: all of those have ended) and orders
//! them by `(tx_id, global_position)`. Nothing can appear behind a position once it was read.

use chrono::{DateTime, Utc};
use event_schemas::{LogPosition, RecordedEvent};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("could not read the global log")]
    Read(#[from] sqlx::Error),
}

/// Reads the global log.
#[derive(Debug, Clone, Copy)]
pub struct GlobalLog;

/// The events a reader takes, by aggregate type. A reader still passes over the others (its
/// checkpoint moves past them), but their bodies are neither sent nor decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    aggregate_types: Option<Vec<String>>,
    /// The types' events are rare and have a partial index of their own ([`LogFilter::sparse`]).
    sparse: bool,
}

impl LogFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only events of these aggregate types.
    pub fn aggregate_types(types: &[&str]) -> Self {
        Self {
            aggregate_types: Some(types.iter().map(|t| (*t).to_owned()).collect()),
            sparse: false,
        }
    }

    /// Only events of these aggregate types, which are rare in the log and have a partial
    /// index on `(tx_id, global_position)` whose predicate `aggregate_type in (...)` the types
    /// imply (migration 0009's, for the identity types). A read goes straight to the next of
    /// them and passes over everything else up to the head of the log at once, however much
    /// has been appended since; a plain filter passes over `limit` events a read.
    ///
    /// # Panics
    /// When a type is not a lower-case identifier (`[a-z_]+`): the types are written into the
    /// query as literals, so that the planner can match them to the index's predicate.
    pub fn sparse(types: &[&'static str]) -> Self {
        for t in types {
            assert!(
                !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "a sparse filter's aggregate type must be [a-z_]+, not {t:?}"
            );
        }
        Self {
            sparse: true,
            ..Self::aggregate_types(types)
        }
    }

    pub fn matches(&self, aggregate_type: &str) -> bool {
        self.aggregate_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == aggregate_type))
    }
}

const COLUMNS: &str = "global_position, tx_id::text::bigint as tx_id, event_id, aggregate_type, \
     aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at";

impl GlobalLog {
    /// Up to `limit` events after `after`, in log order; empty when the reader is caught up
    /// with everything that can be read now.
    pub async fn read<'c>(
        executor: impl PgExecutor<'c>,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let sql = format!(
            "select {COLUMNS} from events \
             where (tx_id, global_position) > ($1::text::xid8, $2) \
               and tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             order by events.tx_id, events.global_position \
             limit $3"
        );
        let rows = sqlx::query(&sql)
            .bind(after.tx_id.to_string())
            .bind(after.global_position)
            .bind(limit)
            .fetch_all(executor)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Up to `limit` events after `after` are passed over; those `filter` takes are returned in
    /// full, with the position of the last event passed over (where a reader's checkpoint
    /// goes). `None` when nothing was readable.
    pub async fn read_matching<'c>(
        executor: impl PgExecutor<'c>,
        after: LogPosition,
        limit: i64,
        filter: &LogFilter,
    ) -> Result<(Vec<RecordedEvent>, Option<LogPosition>), LogError> {
        let Some(types) = &filter.aggregate_types else {
            let events = Self::read(executor, after, limit).await?;
            let last = events.last().map(|e| e.position);
            return Ok((events, last));
        };
        if filter.sparse {
            return Self::read_sparse(executor, after, limit, types).await;
        }
        let sql = "select global_position, tx_id::text::bigint as tx_id, event_id, aggregate_type, \
                   aggregate_id, sequence, event_type, event_version, recorded_at, \
                   aggregate_type = any($4) as taken, \
                   case when aggregate_type = any($4) then payload end as payload, \
                   case when aggregate_type = any($4) then metadata end as metadata \
             from events \
             where (tx_id, global_position) > ($1::text::xid8, $2) \
               and tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             order by events.tx_id, events.global_position \
             limit $3";
        let rows = sqlx::query(sql)
            .bind(after.tx_id.to_string())
            .bind(after.global_position)
            .bind(limit)
            .bind(types)
            .fetch_all(executor)
            .await?;
        let last = rows.last().map(position).transpose()?;
        let mut taken = Vec::new();
        for row in &rows {
            if row.try_get::<bool, _>("taken")? {
                taken.push(decode(row)?);
            }
        }
        Ok((taken, last))
    }

    /// [`Self::read_matching`] for a [`LogFilter::sparse`] filter: the next `limit` events of
    /// `types` through their partial index and, in the same statement (the same snapshot, so
    /// that nothing becomes readable in between), the head of the log. When fewer than
    /// `limit` were taken, every event of `types` up to the head was, and the reader's
    /// checkpoint goes to the head.
    async fn read_sparse<'c>(
        executor: impl PgExecutor<'c>,
        after: LogPosition,
        limit: i64,
        types: &[String],
    ) -> Result<(Vec<RecordedEvent>, Option<LogPosition>), LogError> {
        // checked [a-z_]+ by `LogFilter::sparse`
        let literals = types
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "with head as ( \
                 select tx_id::text::bigint as head_tx_id, global_position as head_position \
                 from events where tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 order by events.tx_id desc, events.global_position desc limit 1), \
             taken as ( \
                 select {COLUMNS} from events \
                 where aggregate_type in ({literals}) \
                   and (tx_id, global_position) > ($1::text::xid8, $2) \
                   and tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 order by events.tx_id, events.global_position \
                 limit $3) \
             select head.*, taken.* from head left join taken on true"
        );
        let rows = sqlx::query(&sql)
            .bind(after.tx_id.to_string())
            .bind(after.global_position)
            .bind(limit)
            .fetch_all(executor)
            .await?;
        let Some(first) = rows.first() else {
            return Ok((Vec::new(), None)); // an empty log
        };
        let head = LogPosition {
            tx_id: first.try_get::<i64, _>("head_tx_id")? as u64,
            global_position: first.try_get("head_position")?,
        };
        let mut taken = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<Option<Uuid>, _>("event_id")?.is_some() {
                taken.push(decode(row)?);
            }
        }
        // no `order by` on the join (Postgres would copy and sort every row): SQL promises no
        // order without one, so sorted here, one pass over a run already in order
        taken.sort_unstable_by_key(|event| event.position);
        let last = if taken.len() as i64 >= limit {
            taken.last().map(|e| e.position)
        } else if head > after {
            Some(head)
        } else {
            None // caught up
        };
        Ok((taken, last))
    }

    /// Whether events exist that are not readable yet because a transaction older than theirs
    /// is still running: a reader that finds nothing should look again soon rather than sleep.
    ///
    /// Compares the newest event's transaction with the snapshot's horizon: one step down the
    /// log-order index (`exists (... where tx_id >= pg_snapshot_xmin(...))` is not an index
    /// condition, and scanned the whole log on every call).
    pub async fn has_unreadable<'c>(executor: impl PgExecutor<'c>) -> Result<bool, LogError> {
        Ok(sqlx::query_scalar(
            "select coalesce((select tx_id from events order by tx_id desc limit 1) \
                             >= pg_snapshot_xmin(pg_current_snapshot()), false)",
        )
        .fetch_one(executor)
        .await?)
    }

    /// The position of the last readable event, or [`LogPosition::START`] for an empty log.
    pub async fn head<'c>(executor: impl PgExecutor<'c>) -> Result<LogPosition, LogError> {
        let row = sqlx::query(
            "select tx_id::text::bigint as tx_id, global_position from events \
             where tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             order by events.tx_id desc, events.global_position desc limit 1",
        )
        .fetch_optional(executor)
        .await?;
        Ok(match row {
            Some(row) => position(&row)?,
            None => LogPosition::START,
        })
    }

    /// One stored event by its aggregate and sequence, readable or not.
    pub async fn event_at<'c>(
        executor: impl PgExecutor<'c>,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<RecordedEvent>, LogError> {
        let sql = format!(
            "select {COLUMNS} from events \
             where aggregate_type = $1 and aggregate_id = $2 and sequence = $3"
        );
        let row = sqlx::query(&sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(sequence)
            .fetch_optional(executor)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// The log position of one stored event, whether or not it is readable yet: the
    /// consistency token of the command that appended it.
    pub async fn position_of<'c>(
        executor: impl PgExecutor<'c>,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<LogPosition>, LogError> {
        let row = sqlx::query(
            "select tx_id::text::bigint as tx_id, global_position from events \
             where aggregate_type = $1 and aggregate_id = $2 and sequence = $3",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_optional(executor)
        .await?;
        row.as_ref().map(position).transpose()
    }
}

fn position(row: &PgRow) -> Result<LogPosition, LogError> {
    let tx_id: i64 = row.try_get("tx_id")?;
    Ok(LogPosition {
        // xid8 values are below 2^63 in practice (and Postgres itself caps them there)
        tx_id: tx_id as u64,
        global_position: row.try_get("global_position")?,
    })
}

fn decode(row: &PgRow) -> Result<RecordedEvent, LogError> {
    Ok(RecordedEvent {
        position: position(row)?,
        event_id: row.try_get::<Uuid, _>("event_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get::<Value, _>("payload")?,
        metadata: row.try_get::<Value, _>("metadata")?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
    })
}
