//! postgres-es's repository, wrapped: every appended event is stamped with its own `event_id`,
//! counted, timed, and wakes the global log's readers.
//!
//! cqrs-es gives all events of one commit the same metadata map, so a per-event id cannot come
//! from the caller; it is stamped here, just before postgres-es writes the rows.

use std::time::Instant;

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream,
    SerializedEvent, SerializedSnapshot,
};
use event_schemas::metadata::EVENT_ID;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::notify::AppendNotifier;

/// An aggregate is snapshotted every this many events, so loading it never replays more.
pub const SNAPSHOT_EVERY: usize = 50;

/// The event store for one aggregate type: cqrs-es's persisted store with snapshots.
pub type EventStore<A> = PersistedEventStore<EventRepository, A>;

/// The repository behind every [`EventStore`].
pub struct EventRepository {
    inner: PostgresEventRepository,
    notifier: AppendNotifier,
}

impl std::fmt::Debug for EventRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRepository").finish_non_exhaustive()
    }
}

impl EventRepository {
    pub fn new(pool: PgPool, notifier: AppendNotifier) -> Self {
        Self {
            inner: PostgresEventRepository::new(pool),
            notifier,
        }
    }

    /// A snapshotting event store for aggregate `A` (upcasters from `event-schemas` applied).
    pub fn store<A: Aggregate>(
        pool: PgPool,
        notifier: AppendNotifier,
        upcasters: Vec<Box<dyn cqrs_es::persist::EventUpcaster>>,
    ) -> EventStore<A> {
        PersistedEventStore::new_snapshot_store(Self::new(pool, notifier), SNAPSHOT_EVERY)
            .with_upcasters(upcasters)
    }
}

/// Gives each event its own id, keeping everything else of the commit's metadata.
fn stamp(event: &SerializedEvent) -> SerializedEvent {
    let mut event = event.clone();
    match &mut event.metadata {
        Value::Object(map) => {
            map.insert(EVENT_ID.into(), Value::String(Uuid::now_v7().to_string()));
        }
        other => *other = serde_json::json!({ EVENT_ID: Uuid::now_v7().to_string() }),
    }
    event
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
        let stamped: Vec<SerializedEvent> = events.iter().map(stamp).collect();
        let started = Instant::now();
        let result = self.inner.persist::<A>(&stamped, snapshot_update).await;
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
