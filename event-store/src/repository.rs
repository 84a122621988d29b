//! The repository behind cqrs-es's `PersistedEventStore`: postgres-es for reads, and an append
//! of our own.
//!
//! Why the append is ours (docs/architecture.md, "Event store"):
//! - postgres-es appends with `BEGIN`, one `INSERT` per event and `COMMIT`; ours is a single
//!   statement, which on a small machine is what separates 30% from 70%+ of raw insert speed;
//! - postgres-es writes a snapshot after committing the events and can report an error for
//!   events that were in fact stored; ours writes both in one statement;
//! - for a commit that crosses a snapshot boundary, postgres-es records the snapshot as covering
//!   the commit's last event although cqrs-es built it only up to the boundary;
//! - cqrs-es gives all events of one commit the same metadata map, so each event's own
//!   `event_id` is stamped here.

use std::time::Instant;

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use event_schemas::LogPosition;
use event_schemas::metadata::EVENT_ID;
use event_schemas::personal::has_personal_data;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::connections::Connections;
use crate::notify::AppendNotifier;
use crate::personal::seal_event;

tokio::task_local! {
    /// Set by an append within [`capture_position`]: where its last event landed in the log.
    static LAST_APPEND: std::cell::Cell<Option<LogPosition>>;
}

/// Runs `append` (a cqrs-es commit) and returns, with its result, the log position of the last
/// event it appended: the consistency token, without another round trip.
pub async fn capture_position<T>(
    append: impl std::future::Future<Output = T>,
) -> (T, Option<LogPosition>) {
    LAST_APPEND
        .scope(std::cell::Cell::new(None), async {
            let result = append.await;
            (result, LAST_APPEND.with(|cell| cell.get()))
        })
        .await
}

/// An aggregate is snapshotted every this many events, so loading it never replays more.
pub const SNAPSHOT_EVERY: usize = 50;

/// The event store for one aggregate type: cqrs-es's persisted store with snapshots.
pub type EventStore<A> = PersistedEventStore<EventRepository, A>;

/// The repository behind every [`EventStore`].
pub struct EventRepository {
    inner: PostgresEventRepository,
    connections: Connections,
    notifier: AppendNotifier,
}

impl std::fmt::Debug for EventRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRepository").finish_non_exhaustive()
    }
}

impl EventRepository {
    pub fn new(pool: PgPool, notifier: AppendNotifier) -> Self {
        Self::with_connections(Connections::new(pool), notifier)
    }

    /// A repository appending through `connections` (shared with an [`crate::Executor`]'s
    /// loads).
    pub fn with_connections(connections: Connections, notifier: AppendNotifier) -> Self {
        Self {
            inner: PostgresEventRepository::new(connections.pool().clone()),
            connections,
            notifier,
        }
    }

    /// A snapshotting event store for aggregate `A` (upcasters from `event-schemas` applied).
    pub fn store<A: Aggregate>(
        pool: PgPool,
        notifier: AppendNotifier,
        upcasters: Vec<Box<dyn cqrs_es::persist::EventUpcaster>>,
    ) -> EventStore<A> {
        Self::store_on::<A>(Connections::new(pool), notifier, upcasters)
    }

    /// [`EventRepository::store`] appending through `connections`.
    pub fn store_on<A: Aggregate>(
        connections: Connections,
        notifier: AppendNotifier,
        upcasters: Vec<Box<dyn cqrs_es::persist::EventUpcaster>>,
    ) -> EventStore<A> {
        PersistedEventStore::new_snapshot_store(
            Self::with_connections(connections, notifier),
            SNAPSHOT_EVERY,
        )
        .with_upcasters(upcasters)
    }
}

const INSERT_ONE: &str = "insert into events \
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
     values ($1, $2, $3, $4, $5, $6, $7) \
     returning tx_id::text::bigint as tx_id, global_position";

const INSERT_MANY: &str = "insert into events \
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
     select $1, $2, e.* from unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
     as e(sequence, event_type, event_version, payload, metadata) \
     returning tx_id::text::bigint as tx_id, global_position";

/// Appends `events` (all of one aggregate) with their `metadata` and, when given, the
/// aggregate's new snapshot, in one statement.
pub(crate) async fn append(
    connections: &Connections,
    aggregate_type: &str,
    events: &[SerializedEvent],
    metadata: &[Value],
    snapshot: Option<(String, Value, usize)>,
) -> Result<(), PersistenceError> {
    // personal fields are stored sealed with their person's key (`crate::personal`)
    let mut sealed: Vec<Option<Value>> = Vec::with_capacity(events.len());
    for (event, metadata) in events.iter().zip(metadata) {
        if !has_personal_data(aggregate_type, &event.event_type) {
            sealed.push(None);
            continue;
        }
        let mut payload = event.payload.clone();
        seal_event(
            connections,
            aggregate_type,
            &event.aggregate_id,
            &event.event_type,
            metadata,
            &mut payload,
        )
        .await
        .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        sealed.push(Some(payload));
    }
    let payload = |i: usize| sealed[i].as_ref().unwrap_or(&events[i].payload);
    let first = &events[0];
    let insert = if events.len() == 1 {
        INSERT_ONE
    } else {
        INSERT_MANY
    };
    let sql = match snapshot {
        None => insert.to_owned(),
        // the snapshot is a cache: keep the newest, never fail the append over it
        Some(_) => format!(
            "with appended as ({insert}), \
             snapshot as (insert into snapshots \
                 (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
                 values ($1, $2, $8, $9, $10) \
                 on conflict (aggregate_type, aggregate_id) do update \
                 set last_sequence = excluded.last_sequence, \
                     current_snapshot = excluded.current_snapshot, payload = excluded.payload \
                 where snapshots.last_sequence < excluded.last_sequence) \
             select tx_id, global_position from appended"
        ),
    };
    let mut query = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(&first.aggregate_id);
    query = if events.len() == 1 {
        query
            .bind(first.sequence as i64)
            .bind(&first.event_type)
            .bind(&first.event_version)
            .bind(payload(0))
            .bind(&metadata[0])
    } else {
        query
            .bind(events.iter().map(|e| e.sequence as i64).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.event_version.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind((0..events.len()).map(payload).collect::<Vec<_>>())
            .bind(metadata.iter().collect::<Vec<_>>())
    };
    if let Some((_, payload, current_snapshot)) = snapshot {
        // cqrs-es builds a snapshot up to the last multiple of the snapshot size in the commit
        let last = events[events.len() - 1].sequence;
        let covered = last - last % SNAPSHOT_EVERY;
        query = query
            .bind(covered as i64)
            .bind(current_snapshot as i64)
            .bind(payload);
    }
    let mut conn = connections
        .acquire()
        .await
        .map_err(|e| PersistenceError::ConnectionError(Box::new(e)))?;
    let answer = query.fetch_all(&mut *conn).await;
    conn.keep_after(&answer);
    match answer {
        Ok(rows) => {
            let last = rows
                .iter()
                .filter_map(|row| {
                    Some(LogPosition {
                        tx_id: row.try_get::<i64, _>("tx_id").ok()? as u64,
                        global_position: row.try_get("global_position").ok()?,
                    })
                })
                .max();
            if let Some(position) = last {
                // the command path reads it back as the consistency token
                let _ = LAST_APPEND.try_with(|cell| cell.set(Some(position)));
            }
            Ok(())
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            // another command appended this aggregate's next sequence first
            Err(PersistenceError::OptimisticLockError)
        }
        Err(e @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut)) => {
            Err(PersistenceError::ConnectionError(Box::new(e)))
        }
        Err(e) => Err(PersistenceError::UnknownError(Box::new(e))),
    }
}

/// The event's metadata with its own id, keeping everything else of the commit's metadata.
fn stamped_metadata(event: &SerializedEvent) -> Value {
    let mut metadata = event.metadata.clone();
    match &mut metadata {
        Value::Object(map) => {
            map.insert(EVENT_ID.into(), Value::String(Uuid::now_v7().to_string()));
        }
        other => *other = serde_json::json!({ EVENT_ID: Uuid::now_v7().to_string() }),
    }
    metadata
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    #[tracing::instrument(name = "append", skip_all, fields(aggregate_type = A::TYPE, events = events.len()))]
    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if events.is_empty() {
            return Ok(());
        }
        let metadata: Vec<Value> = events.iter().map(stamped_metadata).collect();
        let started = Instant::now();
        let result = append(
            &self.connections,
            A::TYPE,
            events,
            &metadata,
            snapshot_update,
        )
        .await;
        let outcome = match &result {
            Ok(()) => "ok",
            Err(PersistenceError::OptimisticLockError) => "conflict",
            Err(_) => "error",
        };
        metrics::histogram!("workledger_append_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        if result.is_ok() {
            metrics::counter!("workledger_events_appended_total", "aggregate_type" => A::TYPE)
                .increment(events.len() as u64);
            self.notifier.notify();
        }
        result
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}
