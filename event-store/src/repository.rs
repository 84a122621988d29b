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
//!   `event_id` is stamped here;
//! - ours seals personal data and joins the group commit ([`crate::appends`],
//!   [`crate::group`]), as every append of the command path does.

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use event_schemas::LogPosition;
use event_schemas::metadata::EVENT_ID;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::appends::{AppendError, Appends};
use crate::connections::Connections;
use crate::notify::AppendNotifier;

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
        let mut appends = Appends::new();
        for event in events {
            appends.push_serialized(A::TYPE, event, stamped_metadata(event));
        }
        if let Some((aggregate_id, payload, current_snapshot)) = snapshot_update {
            let last = events[events.len() - 1].sequence;
            let covered = last - last % SNAPSHOT_EVERY;
            appends.push_snapshot(A::TYPE, &aggregate_id, covered, current_snapshot, payload);
        }
        match appends.commit(&self.connections, &self.notifier).await {
            Ok(position) => {
                if let Some(position) = position {
                    let _ = LAST_APPEND.try_with(|cell| cell.set(Some(position)));
                }
                Ok(())
            }
            Err(AppendError::Conflict) => Err(PersistenceError::OptimisticLockError),
            Err(AppendError::Store(error)) => Err(PersistenceError::UnknownError(error)),
        }
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
