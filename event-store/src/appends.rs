//! Events of several aggregates, of any types, appended in one statement: a command and the
//! cascade it triggered commit together, in one transaction and one round trip, instead of one
//! commit per aggregate.
//!
//! Each aggregate's events are checked as a single append's are: its next sequence numbers must
//! still be free (the primary key), or nothing at all is appended and the caller learns of the
//! conflict. Rows are inserted in the order they were staged, so the log keeps each
//! aggregate's events in sequence order and a cascade's events in the order they were decided.

use std::collections::HashMap;
use std::time::Instant;

use event_schemas::LogPosition;
use event_schemas::metadata::EVENT_ID;
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

use cqrs_es::persist::{PersistenceError, SerializedEvent};

use crate::connections::Connections;
use crate::notify::AppendNotifier;
use crate::personal::seal_event;
use crate::repository::{append, capture_position};

// the events in staging order (`with ordinality`), and the snapshots of the aggregates whose
// new version crossed a multiple of the snapshot size; the snapshot is a cache: the newest
// wins and it never fails the append
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
select tx_id::text::bigint as tx_id, global_position
from appended order by global_position desc limit 1";

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
    /// nothing is sent, and `None`.
    #[tracing::instrument(name = "append_together", skip_all, fields(events = self.len()))]
    pub async fn commit(
        self,
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
        let result = if self.one_aggregate() {
            self.send_one(connections).await
        } else {
            self.send(connections).await
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

    /// Whether every staged event is of one aggregate.
    fn one_aggregate(&self) -> bool {
        let same = |i: usize| {
            self.aggregate_types[i] == self.aggregate_types[0]
                && self.aggregate_ids[i] == self.aggregate_ids[0]
        };
        (1..self.len()).all(same) && self.snapshots.len() <= 1
    }

    /// One aggregate's events (a command whose cascade touched nothing else, such as a
    /// comment): the repository's own append, whose plain `values` insert of one event costs
    /// Postgres less than the `unnest` of several aggregates' columns.
    async fn send_one(self, connections: &Connections) -> Result<Option<LogPosition>, AppendError> {
        let aggregate_type = self.aggregate_types[0];
        let snapshot = self
            .snapshots
            .into_iter()
            .next()
            .map(|s| (s.aggregate_id, s.payload, s.current_snapshot as usize));
        let events: Vec<SerializedEvent> = self
            .aggregate_ids
            .into_iter()
            .zip(self.sequences)
            .zip(self.event_types.into_iter().zip(self.event_versions))
            .zip(self.payloads)
            .map(|(((id, sequence), (event_type, version)), payload)| {
                SerializedEvent::new(
                    id,
                    sequence as usize,
                    aggregate_type.to_owned(),
                    event_type,
                    version,
                    payload,
                    Value::Null,
                )
            })
            .collect();
        let appended = append(
            connections,
            aggregate_type,
            &events,
            &self.metadata,
            snapshot,
        );
        match capture_position(appended).await {
            (Ok(()), position) => Ok(position),
            (Err(PersistenceError::OptimisticLockError), _) => Err(AppendError::Conflict),
            (
                Err(
                    PersistenceError::ConnectionError(e)
                    | PersistenceError::DeserializationError(e)
                    | PersistenceError::UnknownError(e),
                ),
                _,
            ) => Err(AppendError::Store(e)),
        }
    }

    async fn send(mut self, connections: &Connections) -> Result<Option<LogPosition>, AppendError> {
        // personal fields are stored sealed with their person's key (`crate::personal`)
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
        let snapshots = &self.snapshots;
        let query = sqlx::query(APPEND)
            .bind(&self.aggregate_types)
            .bind(&self.aggregate_ids)
            .bind(&self.sequences)
            .bind(&self.event_types)
            .bind(&self.event_versions)
            .bind(&self.payloads)
            .bind(&self.metadata)
            .bind(
                snapshots
                    .iter()
                    .map(|s| s.aggregate_type)
                    .collect::<Vec<_>>(),
            )
            .bind(
                snapshots
                    .iter()
                    .map(|s| s.aggregate_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                snapshots
                    .iter()
                    .map(|s| s.last_sequence)
                    .collect::<Vec<_>>(),
            )
            .bind(
                snapshots
                    .iter()
                    .map(|s| s.current_snapshot)
                    .collect::<Vec<_>>(),
            )
            .bind(snapshots.iter().map(|s| &s.payload).collect::<Vec<_>>());
        let store = |e: sqlx::Error| AppendError::Store(Box::new(e));
        let mut conn = connections.acquire().await.map_err(store)?;
        let answer = query.fetch_optional(&mut *conn).await;
        conn.keep_after(&answer);
        match answer {
            Ok(Some(row)) => Ok(Some(LogPosition {
                tx_id: row.try_get::<i64, _>("tx_id").map_err(store)? as u64,
                global_position: row.try_get("global_position").map_err(store)?,
            })),
            Ok(None) => Ok(None),
            // another command appended one of the aggregates' next sequence numbers first; or
            // two commands whose cascades touch the same aggregates in opposite orders waited
            // on each other and Postgres ended this one (a deadlock): rolled back either way
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("23505" | "40P01" | "40001")) =>
            {
                Err(AppendError::Conflict)
            }
            Err(e) => Err(store(e)),
        }
    }
}
