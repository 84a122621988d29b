//! The command path: load an aggregate, check the expected version, let it decide, append.
//!
//! Loading takes one round trip (the snapshot and the events after it in one statement), and
//! recently used aggregates stay in memory: a cached state is only a guess, checked by the
//! append itself (the next sequence number must still be free), so a stale entry costs a
//! conflict and a fresh load, never a wrong decision.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, EventUpcaster, SerializedEvent};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore as _};
use event_schemas::{EventMetadata, LogPosition};
use lru::LruCache;
use serde_json::Value;
use sqlx::{PgPool, Row};

use crate::connections::Connections;
use crate::notify::AppendNotifier;
use crate::repository::{EventRepository, EventStore, SNAPSHOT_EVERY, capture_position};

mod plan;

pub use plan::Planned;

/// How often a command that lost an optimistic race is decided again on the new state. One
/// command per aggregate commits per append statement (`crate::group`), so a burst of
/// commands on one aggregate goes through one a round: the budget covers bursts of about this
/// many.
const RACE_RETRIES: usize = 16;

/// Aggregates kept in memory per aggregate type.
pub const CACHED_AGGREGATES: usize = 10_000;

/// Why a command did not take effect. Nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Rejected(E),
    /// The caller expected another version (`If-Match`).
    #[error("the aggregate is at version {actual}, not the expected {expected}")]
    VersionMismatch { expected: usize, actual: usize },
    /// Another command appended first and deciding again was not allowed or kept losing.
    #[error("another command changed the aggregate at the same time")]
    Conflict,
    /// The store failed (connection, serialization, ...).
    #[error("the event store failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What a command did.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The events it appended (none when the command changed nothing, e.g. a repeat).
    pub events: Vec<EventEnvelope<A>>,
    /// The aggregate's version afterwards.
    pub version: usize,
    /// Where its last event is in the global log: the consistency token.
    pub position: Option<LogPosition>,
}

/// An aggregate's state at a version, as loaded or as left by the last command.
#[derive(Debug, Clone)]
struct Loaded<A> {
    aggregate: A,
    version: usize,
    /// cqrs-es's snapshot counter (how many snapshots were taken).
    snapshot: Option<usize>,
}

/// Executes commands against aggregates of type `A`.
pub struct Executor<A: Aggregate> {
    store: EventStore<A>,
    connections: Connections,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    cache: Mutex<LruCache<String, Loaded<A>>>,
    notifier: AppendNotifier,
}

impl<A: Aggregate> std::fmt::Debug for Executor<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("aggregate_type", &A::TYPE)
            .finish()
    }
}

impl<A> Executor<A>
where
    A: Aggregate + Clone,
    A::Error: 'static,
{
    pub fn new(
        pool: PgPool,
        notifier: AppendNotifier,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> Self {
        Self::on(Connections::new(pool), notifier, upcasters)
    }

    /// An executor loading and appending through `connections` (shared with the executors of
    /// the other aggregate types of a runtime).
    pub fn on(
        connections: Connections,
        notifier: AppendNotifier,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> Self {
        Self {
            store: EventRepository::store_on::<A>(
                connections.clone(),
                notifier.clone(),
                Vec::new(),
            ),
            notifier,
            connections,
            upcasters,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHED_AGGREGATES).expect("not zero"),
            )),
        }
    }

    /// Decides `command` on the current state of aggregate `id` and appends the events.
    ///
    /// With `expected_version`, a stale caller gets [`ExecuteError::VersionMismatch`] and a
    /// lost race [`ExecuteError::Conflict`]. Without it, a lost race is decided again on the
    /// new state (commands are functions of state, so this is safe), a few times.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        expected_version: Option<usize>,
        services: &A::Services,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let metadata = metadata.to_map(false);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // boxed: loading, deciding and appending hold a lot of state across their awaits,
            // which would otherwise sit in every caller's future
            let attempt_once =
                Box::pin(self.try_once(id, command.clone(), &metadata, expected_version, services));
            match attempt_once.await {
                Err(ExecuteError::Conflict)
                    if expected_version.is_none() && attempt <= RACE_RETRIES =>
                {
                    metrics::counter!("workledger_command_retries_total", "aggregate_type" => A::TYPE)
                        .increment(1);
                }
                result => return result,
            }
        }
    }

    /// The current state and version of aggregate `id` (the default state at version 0 when it
    /// has no events), read from the store.
    pub async fn load(&self, id: &str) -> Result<(A, usize), ExecuteError<A::Error>> {
        let loaded = self.load_stored(id).await?;
        Ok((loaded.aggregate, loaded.version))
    }

    /// The events of aggregate `id`, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<EventEnvelope<A>>, ExecuteError<A::Error>> {
        self.store.load_events(id).await.map_err(store_error)
    }

    /// The state `command` is decided on (the cached one, or as stored) and what it decided;
    /// a refusal or no-op decided on a cached state is decided again on the stored state when
    /// that moved on.
    async fn decide_current(
        &self,
        id: &str,
        command: A::Command,
        expected_version: Option<usize>,
        services: &A::Services,
    ) -> Result<(Loaded<A>, Decided<A>), ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let hit = self.take_cached(id, expected_version);
        let from_cache = hit.is_some();
        let mut loaded = match hit {
            Some(hit) => hit,
            None => self.load_stored(id).await?,
        };
        let mut decided = decide(command.clone(), &loaded, expected_version, services).await;
        // a refusal or a no-op appends nothing, so nothing has checked the state it was
        // decided on: decide again if the stored state has moved on (asking for the version
        // first, an index-only read, and loading only when it did)
        if from_cache
            && matches!(decided, Decided::Refused(_) | Decided::Unchanged)
            && self.stored_version(id).await? != loaded.version
        {
            loaded = self.load_stored(id).await?;
            decided = decide(command, &loaded, expected_version, services).await;
        }
        Ok((loaded, decided))
    }

    async fn try_once(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
        expected_version: Option<usize>,
        services: &A::Services,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let (loaded, decided) = self
            .decide_current(id, command, expected_version, services)
            .await?;
        match decided {
            Decided::Mismatch { expected, actual } => {
                self.remember(id, loaded);
                Err(ExecuteError::VersionMismatch { expected, actual })
            }
            Decided::Refused(error) => {
                self.remember(id, loaded);
                Err(ExecuteError::Rejected(error))
            }
            Decided::Unchanged => {
                let version = loaded.version;
                self.remember(id, loaded);
                Ok(Executed {
                    events: Vec::new(),
                    version,
                    position: None,
                })
            }
            Decided::Changed {
                events,
                before,
                after,
            } => {
                let count = events.len();
                let Loaded {
                    version, snapshot, ..
                } = loaded;
                let context = EventStoreAggregateContext {
                    aggregate_id: id.to_owned(),
                    aggregate: before,
                    current_sequence: version,
                    current_snapshot: snapshot,
                };
                let (committed, position) =
                    capture_position(self.store.commit(events, context, metadata.clone())).await;
                let committed = committed.map_err(store_error)?;
                let new_version = version + count;
                // cqrs-es took a snapshot when the commit crossed a multiple of its size
                let snapshot = if new_version / SNAPSHOT_EVERY > version / SNAPSHOT_EVERY {
                    Some(snapshot.map_or(1, |n| n + 1))
                } else {
                    snapshot
                };
                self.remember(
                    id,
                    Loaded {
                        aggregate: after,
                        version: new_version,
                        snapshot,
                    },
                );
                Ok(Executed {
                    version: new_version,
                    events: committed,
                    position,
                })
            }
        }
    }

    /// The connections this executor appends through (for an [`Appends`] it commits).
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The notifier this executor wakes log readers with.
    pub fn notifier(&self) -> &AppendNotifier {
        &self.notifier
    }

    /// Takes the cached state of `id` out while a command uses it (a concurrent command on the
    /// same aggregate loads its own, and the append decides between them); none when it is not
    /// at `expected_version`.
    fn take_cached(&self, id: &str, expected_version: Option<usize>) -> Option<Loaded<A>> {
        let hit = self
            .cache()
            .pop(id)
            .filter(|hit| expected_version.is_none_or(|v| v == hit.version));
        metrics::counter!("workledger_aggregate_cache_total",
            "result" => if hit.is_some() { "hit" } else { "miss" })
        .increment(1);
        hit
    }

    /// Caches `loaded` unless a newer state of the aggregate is cached already.
    fn remember(&self, id: &str, loaded: Loaded<A>) {
        let mut cache = self.cache();
        if cache
            .peek(id)
            .is_none_or(|cached| cached.version < loaded.version)
        {
            cache.put(id.to_owned(), loaded);
        }
    }

    /// The stored version of aggregate `id` (0 when it has no events): an index-only read.
    pub async fn stored_version(&self, id: &str) -> Result<usize, ExecuteError<A::Error>> {
        let version = sqlx::query_scalar(
            "select coalesce(max(sequence), 0) from events \
             where aggregate_type = $1 and aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(id);
        let mut conn = self.connections.acquire().await.map_err(store_failure)?;
        let answer = version.fetch_one(&mut *conn).await;
        conn.keep_after(&answer);
        let version: i64 = answer.map_err(store_failure)?;
        Ok(version as usize)
    }

    /// The latest snapshot and the events after it, in one statement.
    async fn load_stored(&self, id: &str) -> Result<Loaded<A>, ExecuteError<A::Error>> {
        let rows = sqlx::query(
            "with snapshot as ( \
                 select last_sequence, current_snapshot, payload from snapshots \
                 where aggregate_type = $1 and aggregate_id = $2) \
             select 0 as part, last_sequence as sequence, current_snapshot, \
                    null::text as event_type, null::text as event_version, payload \
             from snapshot \
             union all \
             select 1, e.sequence, null, e.event_type, e.event_version, e.payload \
             from events e \
             where e.aggregate_type = $1 and e.aggregate_id = $2 \
               and e.sequence > coalesce((select last_sequence from snapshot), 0) \
             order by 1, 2",
        )
        .bind(A::TYPE)
        .bind(id);
        let mut conn = self.connections.acquire().await.map_err(store_failure)?;
        let answer = rows.fetch_all(&mut *conn).await;
        conn.keep_after(&answer);
        let rows = answer.map_err(store_failure)?;
        let mut loaded = Loaded {
            aggregate: A::default(),
            version: 0,
            snapshot: None,
        };
        for row in rows {
            let sequence = row.try_get::<i64, _>("sequence").map_err(store_failure)? as usize;
            let payload: Value = row.try_get("payload").map_err(store_failure)?;
            if row.try_get::<i32, _>("part").map_err(store_failure)? == 0 {
                let Ok(aggregate) = serde_json::from_value(payload) else {
                    // an older shape of the aggregate: replay its whole history instead
                    return self.load_from_history(id).await;
                };
                loaded.aggregate = aggregate;
                loaded.version = sequence;
                loaded.snapshot = Some(
                    row.try_get::<i64, _>("current_snapshot")
                        .map_err(store_failure)? as usize,
                );
                continue;
            }
            let event = self.decode(
                id,
                sequence,
                row.try_get("event_type").map_err(store_failure)?,
                row.try_get("event_version").map_err(store_failure)?,
                payload,
            )?;
            loaded.aggregate.apply(event);
            loaded.version = sequence;
        }
        Ok(loaded)
    }

    async fn load_from_history(&self, id: &str) -> Result<Loaded<A>, ExecuteError<A::Error>> {
        let context = self.store.load_aggregate(id).await.map_err(store_error)?;
        Ok(Loaded {
            aggregate: context.aggregate,
            version: context.current_sequence,
            snapshot: context.current_snapshot,
        })
    }

    fn decode(
        &self,
        id: &str,
        sequence: usize,
        event_type: String,
        event_version: String,
        payload: Value,
    ) -> Result<A::Event, ExecuteError<A::Error>> {
        let mut event = SerializedEvent::new(
            id.to_owned(),
            sequence,
            A::TYPE.to_owned(),
            event_type,
            event_version,
            payload,
            Value::Null,
        );
        for upcaster in &self.upcasters {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                event = upcaster.upcast(event);
            }
        }
        serde_json::from_value(event.payload).map_err(|e| ExecuteError::Store(Box::new(e)))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LruCache<String, Loaded<A>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an aggregate decided on one state.
enum Decided<A: Aggregate> {
    Mismatch {
        expected: usize,
        actual: usize,
    },
    Refused(A::Error),
    Unchanged,
    Changed {
        events: Vec<A::Event>,
        /// The state the command was decided on (cqrs-es builds snapshots from it).
        before: A,
        /// The state with the new events applied.
        after: A,
    },
}

async fn decide<A: Aggregate + Clone>(
    command: A::Command,
    loaded: &Loaded<A>,
    expected_version: Option<usize>,
    services: &A::Services,
) -> Decided<A> {
    let mut after = loaded.aggregate.clone();
    let sink = EventSink::default();
    let handled = after.handle(command, services, &sink).await;
    // A command the aggregate refuses is refused whatever version it expected (RFC 9110
    // §13.2.1: preconditions count only for a request that would otherwise succeed), so a
    // stale or made-up `If-Match` on another tenant's id is its 404, not a 412 that tells the
    // id exists and its version.
    if let Err(error) = handled {
        return Decided::Refused(error);
    }
    if let Some(expected) = expected_version
        && expected != loaded.version
    {
        return Decided::Mismatch {
            expected,
            actual: loaded.version,
        };
    }
    let events = sink.collect().await;
    if events.is_empty() {
        return Decided::Unchanged;
    }
    Decided::Changed {
        events,
        before: loaded.aggregate.clone(),
        after,
    }
}

fn store_failure<E: std::error::Error + 'static>(error: sqlx::Error) -> ExecuteError<E> {
    ExecuteError::Store(Box::new(error))
}

fn store_error<E: std::error::Error + 'static>(error: AggregateError<E>) -> ExecuteError<E> {
    match error {
        AggregateError::AggregateConflict => ExecuteError::Conflict,
        AggregateError::UserError(e) => ExecuteError::Rejected(e),
        AggregateError::DatabaseConnectionError(e)
        | AggregateError::DeserializationError(e)
        | AggregateError::UnexpectedError(e) => ExecuteError::Store(e),
    }
}
