//! The command path: load an aggregate, check the expected version, let it decide, append.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventUpcaster;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore as _};
use event_schemas::{EventMetadata, LogPosition};
use sqlx::PgPool;

use crate::notify::AppendNotifier;
use crate::repository::{EventRepository, EventStore, capture_position};

/// How often a command that lost an optimistic race is decided again on the new state.
const RACE_RETRIES: usize = 5;

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

/// Executes commands against aggregates of type `A`.
pub struct Executor<A: Aggregate> {
    store: EventStore<A>,
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
    A: Aggregate,
    A::Error: 'static,
{
    pub fn new(
        pool: PgPool,
        notifier: AppendNotifier,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> Self {
        Self {
            store: EventRepository::store::<A>(pool, notifier, upcasters),
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
            match self
                .try_once(id, command.clone(), &metadata, expected_version, services)
                .await
            {
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
    /// has no events).
    pub async fn load(&self, id: &str) -> Result<(A, usize), ExecuteError<A::Error>> {
        let context = self.store.load_aggregate(id).await.map_err(store_error)?;
        Ok((context.aggregate, context.current_sequence))
    }

    /// The events of aggregate `id`, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<EventEnvelope<A>>, ExecuteError<A::Error>> {
        self.store.load_events(id).await.map_err(store_error)
    }

    async fn try_once(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
        expected_version: Option<usize>,
        services: &A::Services,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let mut context = self.store.load_aggregate(id).await.map_err(store_error)?;
        let version = context.current_sequence;
        if let Some(expected) = expected_version
            && expected != version
        {
            return Err(ExecuteError::VersionMismatch {
                expected,
                actual: version,
            });
        }
        let sink = EventSink::default();
        context
            .aggregate()
            .handle(command, services, &sink)
            .await
            .map_err(ExecuteError::Rejected)?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Executed {
                events: Vec::new(),
                version,
                position: None,
            });
        }
        let (committed, position) =
            capture_position(self.store.commit(events, context, metadata.clone())).await;
        let committed = committed.map_err(store_error)?;
        Ok(Executed {
            version: committed.last().map_or(version, |e| e.sequence),
            events: committed,
            position,
        })
    }
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
