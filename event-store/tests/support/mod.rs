#![allow(dead_code)] // each test binary uses a different part

//! A minimal aggregate for exercising the event store without the workflow domain.

use std::collections::HashMap;

use chrono::Utc;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventStore as _};
use event_schemas::{Actor, EventMetadata};
use event_store::{AppendNotifier, EventRepository, EventStore};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// A command the counter accepts without appending anything.
pub const NO_CHANGE: u64 = u64::MAX;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counter {
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Incremented { by: u64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Incremented".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("counter rejected the command")]
pub struct CounterError;

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = u64;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    /// `0` is refused; [`NO_CHANGE`] is accepted and changes nothing.
    async fn handle(
        &mut self,
        by: u64,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CounterError> {
        match by {
            0 => Err(CounterError),
            NO_CHANGE => Ok(()),
            by => {
                sink.write(CounterEvent::Incremented { by }, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: CounterEvent) {
        match event {
            CounterEvent::Incremented { by } => self.value += by,
        }
    }
}

pub fn metadata() -> HashMap<String, String> {
    typed_metadata().to_map(false)
}

pub fn typed_metadata() -> EventMetadata {
    EventMetadata {
        event_id: Uuid::nil(),
        tenant_id: "default".into(),
        actor: Actor::Service("test".into()),
        correlation_id: Uuid::now_v7(),
        causation_id: "test".into(),
        request_id: "test".into(),
        occurred_at: Utc::now(),
    }
}

pub fn store(pool: &PgPool) -> EventStore<Counter> {
    EventRepository::store::<Counter>(pool.clone(), AppendNotifier::disabled(), vec![])
}

/// Appends one `Incremented` event to `id` through cqrs-es, in a transaction of its own.
pub async fn append(
    store: &EventStore<Counter>,
    id: &str,
) -> Result<(), AggregateError<CounterError>> {
    let mut context = store.load_aggregate(id).await?;
    let sink = EventSink::default();
    cqrs_es::AggregateContext::aggregate(&mut context)
        .handle(1, &(), &sink)
        .await
        .map_err(AggregateError::UserError)?;
    store
        .commit(sink.collect().await, context, metadata())
        .await?;
    Ok(())
}

/// A table the test readers write their effects to: a duplicate delivery fails its insert.
pub async fn create_seen_table(pool: &PgPool) {
    sqlx::query(
        "create table seen (event_id uuid primary key, aggregate_id text not null, \
         sequence bigint not null, delivered bigserial)",
    )
    .execute(pool)
    .await
    .unwrap();
}
