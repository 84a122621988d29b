//! Events of several aggregates, of any types, appended in one statement: a command and the
//! cascade it triggered commit together, in one transaction and one round trip, instead of one
//! commit per aggregate. Every append of the command path goes through here (the repository's
//! too), and through [`crate::group`], which puts the appends of commands that arrive together
//! into one statement.
//!
//! Each aggregate's events are checked as a single append's are: its next sequence numbers must
//! still be free (the primary key), or nothing at all is appended and the caller learns of the
//! conflict. Rows are inserted in the order they were staged, so the log keeps each
//! aggregate's events in sequence order and a cascade's events in the order they were decided.

use std::collections::HashMap;
use std::time::Instant;

use cqrs_es::persist::SerializedEvent;
use event_schemas::LogPosition;
use event_schemas::metadata::EVENT_ID;
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

use crate::connections::{Connections, session_ended};
use crate::group;
use crate::notify::AppendNotifier;
use crate::personal::seal_event;

// one event of one aggregate, no snapshot (a comment, say): a plain `values` insert costs
// Postgres less than the `unnest` below
const APPEND_ONE: &str = "\
insert into events
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
values ($1, $2, $3, $4, $5, $6, $7)
returning tx_id::text::bigint as tx_id, global_position";

// the events in staging order (`with ordinality`), and the snapshots of the aggregates whose
// new version crossed a multiple of the snapshot size; the snapshot is a cache: the newest
// wins and it never fails the append. Identity values are drawn as the rows are inserted, so
// the positions in ascending order are the events in staging order.
const APPEND: &str = "\
with appended as (
    insert into events
        (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    select aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
    from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[],
                $7::jsonb[]) with ordinality
        as e(aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
             metadata, ord)
    order by ord
    returning tx_id, global_position),
snapshot as (
    insert into snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
    select * from unnest($8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::jsonb[])
    on conflict (aggregate_type, aggregate_id) do update
    set last_sequence = excluded.last_sequence, current_snapshot = excluded.current_snapshot,
        payload = excluded.payload
    where snapshots.last_sequence < excluded.last_sequence)
select tx_id::text::bigint as tx_id, global_position from appended order by global_position";

/// Why [`Appends::commit`] appended nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another command appended one of the aggregates' next sequence numbers first (or waited
    /// on this one for another of them: a deadlock Postgres ended). Nothing was appended.
    #[error("another command changed one of the aggregates at the same time")]
    Conflict,
    /// The store failed. When the connection was lost waiting for the answer, the append may
    /// have committed.
    #[error("the event store failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An aggregate's new snapshot: its state as of `last_sequence`.
#[derive(Debug)]
struct Snapshot {
    aggregate_type: &'static str,
    aggregate_id: String,
    last_sequence: i64,
    current_snapshot: i64,
    payload: Value,
}

/// The events to append together, column by column, in staging order.
#[derive(Debug, Default)]
pub struct Appends {
    aggregate_types: Vec<&'static str>,
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    event_versions: Vec<String>,
    payloads: Vec<Value>,
    metadata: Vec<Value>,
    snapshots: Vec<Snapshot>,
}

impl Appends {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events are staged.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// Notes in `committed` the last sequence number each aggregate reached with these events.
    pub(crate) fn note_committed(&self, committed: &mut HashMap<(&'static str, String), i64>) {
        for (ty, id, sequence) in self.events() {
            let last = committed.entry((ty, id.to_owned())).or_insert(sequence);
            *last = (*last).max(sequence);
        }
    }

    /// The staged events' aggregates and sequence numbers.
    pub(crate) fn events(&self) -> impl Iterator<Item = (&'static str, &str, i64)> {
        self.aggregate_types
            .iter()
            .zip(&self.aggregate_ids)
            .zip(&self.sequences)
            .map(|((ty, id), sequence)| (*ty, id.as_str(), *sequence))
    }

    /// Stages one event; `metadata` gets an `event_id` of its own.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        aggregate_type: &'static str,
        aggregate_id: &str,
        sequence: usize,
        event_type: String,
        event_version: String,
        payload: Value,
        metadata: &HashMap<String, String>,
    ) {
        let mut map: serde_json::Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        map.insert(EVENT_ID.into(), Value::String(Uuid::now_v7().to_string()));
        self.aggregate_types.push(aggregate_type);
        self.aggregate_ids.push(aggregate_id.to_owned());
        self.sequences.push(sequence as i64);
        self.event_types.push(event_type);
        self.event_versions.push(event_version);
        self.payloads.push(payload);
        self.metadata.push(Value::Object(map));
    }

    /// Stages one of cqrs-es's events, whose `metadata` already carries its `event_id` (the
    /// repository's).
    pub(crate) fn push_serialized(
        &mut self,
        aggregate_type: &'static str,
        event: &SerializedEvent,
        metadata: Value,
    ) {
        self.aggregate_types.push(aggregate_type);
        self.aggregate_ids.push(event.aggregate_id.clone());
        self.sequences.push(event.sequence as i64);
        self.event_types.push(event.event_type.clone());
        self.event_versions.push(event.event_version.clone());
        self.payloads.push(event.payload.clone());
        self.metadata.push(metadata);
    }

    /// Stages an aggregate's snapshot as of `last_sequence` (cqrs-es's `current_snapshot`
    /// counter with it).
    pub(crate) fn push_snapshot(
        &mut self,
        aggregate_type: &'static str,
        aggregate_id: &str,
        last_sequence: usize,
        current_snapshot: usize,
        payload: Value,
    ) {
        self.snapshots.push(Snapshot {
            aggregate_type,
            aggregate_id: aggregate_id.to_owned(),
            last_sequence: last_sequence as i64,
            current_snapshot: current_snapshot as i64,
            payload,
        });
    }

    /// Appends every staged event (and snapshot) in one statement, wakes the log readers, and
    /// answers where the last event landed in the log (the consistency token). Nothing staged:
    /// nothing is sent, and `None`. Personal data is sealed first (`crate::personal`); the
    /// statement may carry other commands' appends too ([`crate::group`]), but commits,
    /// conflicts and fails for this one exactly as if it ran alone.
    #[tracing::instrument(name = "append_together", skip_all, fields(events = self.len()))]
    pub async fn commit(
        mut self,
        connections: &Connections,
        notifier: &AppendNotifier,
    ) -> Result<Option<LogPosition>, AppendError> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut counts: Vec<(&'static str, u64)> = Vec::new();
        for ty in &self.aggregate_types {
            match counts.iter_mut().find(|(t, _)| t == ty) {
                Some((_, n)) => *n += 1,
                None => counts.push((ty, 1)),
            }
        }
        let started = Instant::now();
        let result = match self.seal(connections).await {
            Ok(()) => group::append(connections, self).await,
            Err(error) => Err(error),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(AppendError::Conflict) => "conflict",
            Err(AppendError::Store(_)) => "error",
        };
        metrics::histogram!("workledger_append_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        if result.is_ok() {
            for (ty, n) in counts {
                metrics::counter!("workledger_events_appended_total", "aggregate_type" => ty)
                    .increment(n);
            }
            notifier.notify();
        }
        result
    }

    /// Seals the personal fields of every staged event with their person's key.
    async fn seal(&mut self, connections: &Connections) -> Result<(), AppendError> {
        for i in 0..self.len() {
            seal_event(
                connections,
                self.aggregate_types[i],
                &self.aggregate_ids[i],
                &self.event_types[i],
                &self.metadata[i],
                &mut self.payloads[i],
            )
            .await
            .map_err(|e| AppendError::Store(Box::new(e)))?;
        }
        Ok(())
    }
}

/// How a statement carrying one or more commands' appends ended.
#[derive(Debug)]
pub(crate) enum Inserted {
    /// Committed: every event's position, in staging order (the parts one after another).
    Committed(Vec<LogPosition>),
    /// Postgres refused the statement and rolled it back (a taken sequence number, a
    /// deadlock, a constraint): nothing of it was appended.
    Refused(sqlx::Error),
    /// The statement did not answer (no connection, or the connection failed on the way): it
    /// may have committed.
    Failed(sqlx::Error),
}

/// Appends `parts` (sealed) in one statement, in one transaction.
pub(crate) async fn insert(connections: &Connections, parts: &[&Appends]) -> Inserted {
    let events: usize = parts.iter().map(|p| p.len()).sum();
    let query = match parts {
        [one] if one.len() == 1 && one.snapshots.is_empty() => sqlx::query(APPEND_ONE)
            .bind(one.aggregate_types[0])
            .bind(&one.aggregate_ids[0])
            .bind(one.sequences[0])
            .bind(&one.event_types[0])
            .bind(&one.event_versions[0])
            .bind(&one.payloads[0])
            .bind(&one.metadata[0]),
        _ => {
            let snapshots = || parts.iter().flat_map(|p| &p.snapshots);
            sqlx::query(APPEND)
                .bind(strings(parts, |p| &p.aggregate_types))
                .bind(strings(parts, |p| &p.aggregate_ids))
                .bind(
                    parts
                        .iter()
                        .flat_map(|p| p.sequences.iter().copied())
                        .collect::<Vec<i64>>(),
                )
                .bind(strings(parts, |p| &p.event_types))
                .bind(strings(parts, |p| &p.event_versions))
                .bind(parts.iter().flat_map(|p| &p.payloads).collect::<Vec<_>>())
                .bind(parts.iter().flat_map(|p| &p.metadata).collect::<Vec<_>>())
                .bind(snapshots().map(|s| s.aggregate_type).collect::<Vec<_>>())
                .bind(
                    snapshots()
                        .map(|s| s.aggregate_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(snapshots().map(|s| s.last_sequence).collect::<Vec<_>>())
                .bind(snapshots().map(|s| s.current_snapshot).collect::<Vec<_>>())
                .bind(snapshots().map(|s| &s.payload).collect::<Vec<_>>())
        }
    };
    let mut conn = match connections.acquire().await {
        Ok(conn) => conn,
        Err(error) => return Inserted::Failed(error),
    };
    let answer = query.fetch_all(&mut *conn).await;
    conn.keep_after(&answer);
    match answer {
        Ok(rows) => {
            let positions: Result<Vec<LogPosition>, sqlx::Error> = rows
                .iter()
                .map(|row| {
                    Ok(LogPosition {
                        tx_id: row.try_get::<i64, _>("tx_id")? as u64,
                        global_position: row.try_get("global_position")?,
                    })
                })
                .collect();
            match positions {
                Ok(positions) if positions.len() == events => Inserted::Committed(positions),
                Ok(positions) => Inserted::Failed(sqlx::Error::Protocol(format!(
                    "the append answered {} positions for {events} events",
                    positions.len()
                ))),
                Err(error) => Inserted::Failed(error),
            }
        }
        Err(error @ sqlx::Error::Database(_)) if !session_ended(&error) => Inserted::Refused(error),
        Err(error) => Inserted::Failed(error),
    }
}

/// One text column of every part, one part after another.
fn strings<'a, S: AsRef<str> + 'a>(
    parts: &[&'a Appends],
    column: impl Fn(&'a Appends) -> &'a Vec<S>,
) -> Vec<&'a str> {
    parts
        .iter()
        .flat_map(|p| column(p).iter().map(AsRef::as_ref))
        .collect()
}

/// What one command learns of a statement that carried only its appends.
pub(crate) fn alone(inserted: Inserted) -> Result<Option<LogPosition>, AppendError> {
    match inserted {
        Inserted::Committed(positions) => Ok(positions.last().copied()),
        // another command appended one of the aggregates' next sequence numbers first; or two
        // commands whose cascades touch the same aggregates in opposite orders waited on each
        // other and Postgres ended this one (a deadlock): rolled back either way
        Inserted::Refused(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("23505" | "40P01" | "40001")) =>
        {
            Err(AppendError::Conflict)
        }
        Inserted::Refused(error) | Inserted::Failed(error) => {
            Err(AppendError::Store(Box::new(error)))
        }
    }
}
