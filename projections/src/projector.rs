//! What a projector is: a name (its checkpoint), the events it reads, the tables it owns, and a
//! batch-at-a-time `apply` that runs inside the transaction that also advances its checkpoint.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use event_schemas::{
    AnyEvent, ApprovalEvent, DecodeError, LogPosition, RecordedEvent, TaskEvent,
    WorkflowDefinitionEvent, WorkflowInstanceEvent,
};
use futures::future::BoxFuture;
use serde::Deserialize as _;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// Which events of the global log a projector reads. Filtering happens in the log query, so a
/// projector interested in a handful of event types does not pay for reading the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events of these aggregate types (`None`: any).
    pub aggregate_types: Option<Vec<String>>,
    /// Only events of these event types (`None`: any).
    pub event_types: Option<Vec<String>>,
}

impl EventFilter {
    /// Every event of every aggregate type, including types this build does not know.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every event of the given aggregate types.
    pub fn aggregates(types: &[&str]) -> Self {
        Self {
            aggregate_types: Some(types.iter().map(|t| (*t).to_owned()).collect()),
            event_types: None,
        }
    }

    /// Only the given event types of the given aggregate types.
    pub fn events(aggregates: &[&str], events: &[&str]) -> Self {
        Self {
            aggregate_types: Some(aggregates.iter().map(|t| (*t).to_owned()).collect()),
            event_types: Some(events.iter().map(|t| (*t).to_owned()).collect()),
        }
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.aggregate_types
            .as_ref()
            .is_none_or(|types| types.contains(&event.aggregate_type))
            && self
                .event_types
                .as_ref()
                .is_none_or(|types| types.contains(&event.event_type))
    }
}

/// A read-model projector.
///
/// `apply` gets a batch of events in log order (only those passing [`Projector::filter`]; by
/// reference, as the batch is usually one read shared by the process's projectors) and
/// the open transaction in which the runtime then advances the projector's checkpoint: its
/// writes and the checkpoint commit together, so each event takes effect exactly once. It must
/// not commit, and should write in bulk (a statement per table per batch, not per event).
///
/// An event's `metadata` holds only the keys projectors use (`tenant_id`, `actor`,
/// `occurred_at`, `correlation_id`, `causation_id`), not the whole stored map.
///
/// A projector must use event data only (never the clock), so a rebuild reproduces its tables
/// exactly, and must name its tables without a schema (a rebuild projects into copies through
/// the `search_path`).
pub trait Projector: Send + Sync + fmt::Debug + 'static {
    /// The projector's name: its checkpoint row and its metrics label.
    fn name(&self) -> &'static str;

    /// The events it reads.
    fn filter(&self) -> EventFilter;

    /// The tables it writes (and only it writes), for rebuilds.
    fn tables(&self) -> &'static [&'static str];

    /// Whether `apply` delivers outside the database (a publisher to a broker) rather than
    /// writing tables: it then gets a connection with no transaction open, and the checkpoint
    /// is saved only once it has returned (at least once: a crash in between delivers the
    /// batch again). A read model's `apply` runs in the checkpoint's transaction (the default).
    fn external(&self) -> bool {
        false
    }

    /// Applies a batch of events.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

/// The event a projection failed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub position: LogPosition,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
}

impl EventRef {
    pub fn of(event: &RecordedEvent) -> Self {
        Self {
            position: event.position,
            event_id: event.event_id,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            event_type: event.event_type.clone(),
        }
    }
}

impl fmt::Display for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} of {}/{} at {}",
            self.event_type, self.event_id, self.aggregate_type, self.aggregate_id, self.position
        )
    }
}

/// Why a projector could not apply a batch. Nothing of the batch took effect.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("cannot decode {event}")]
    Decode {
        event: Box<EventRef>,
        #[source]
        source: Box<DecodeError>,
    },
    #[error("{event} has no valid `{key}` in its metadata")]
    Metadata {
        event: Box<EventRef>,
        key: &'static str,
    },
    #[error("{event} does not fit the read model: {reason}")]
    Inconsistent {
        event: Box<EventRef>,
        reason: String,
    },
    #[error("writing the read model failed")]
    Storage(#[from] sqlx::Error),
    /// A publisher could not deliver `event` (the first of its batch that failed); the
    /// batch is delivered again.
    #[error("delivering {event} failed")]
    Delivery {
        event: Box<EventRef>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ProjectionError {
    /// The event the projection failed on, when the failure is pinned to one.
    pub fn event(&self) -> Option<&EventRef> {
        match self {
            ProjectionError::Decode { event, .. }
            | ProjectionError::Metadata { event, .. }
            | ProjectionError::Inconsistent { event, .. }
            | ProjectionError::Delivery { event, .. } => Some(event.as_ref()),
            ProjectionError::Storage(_) => None,
        }
    }

    /// Whether the event at fault is found by applying the batch's events one at a time
    /// (a read-model write that failed for one of them). A failed delivery already names its
    /// event and is most often the broker's, not the event's: the batch is retried whole.
    pub(crate) fn needs_search(&self) -> bool {
        !matches!(self, ProjectionError::Delivery { .. })
    }

    /// A delivery of `event` (and those after it in its batch) that failed for `source`.
    pub(crate) fn delivery(
        event: &RecordedEvent,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ProjectionError::Delivery {
            event: Box::new(EventRef::of(event)),
            source: Box::new(source),
        }
    }

    pub(crate) fn inconsistent(event: &RecordedEvent, reason: impl Into<String>) -> Self {
        ProjectionError::Inconsistent {
            event: Box::new(EventRef::of(event)),
            reason: reason.into(),
        }
    }
}

/// Decodes one of the workflow aggregates' events; any other aggregate type is an error for a
/// projector that asked for workflow events only.
///
/// An event at its type's current version is deserialized straight from the stored JSON;
/// older versions go through [`AnyEvent::from_recorded`] and its upcasters.
pub(crate) fn decode(event: &RecordedEvent) -> Result<AnyEvent, ProjectionError> {
    use event_schemas::{approval, task, workflow_definition, workflow_instance};
    let current = match event.aggregate_type.as_str() {
        workflow_definition::AGGREGATE_TYPE => {
            WorkflowDefinitionEvent::current_version(&event.event_type)
        }
        workflow_instance::AGGREGATE_TYPE => {
            WorkflowInstanceEvent::current_version(&event.event_type)
        }
        task::AGGREGATE_TYPE => TaskEvent::current_version(&event.event_type),
        approval::AGGREGATE_TYPE => ApprovalEvent::current_version(&event.event_type),
        _ => None,
    };
    if current != Some(event.event_version.as_str()) {
        return match AnyEvent::from_recorded(event) {
            Ok(Some(decoded)) => Ok(decoded),
            Ok(None) => Err(ProjectionError::inconsistent(
                event,
                format!(
                    "aggregate type {:?} is not a workflow aggregate",
                    event.aggregate_type
                ),
            )),
            Err(source) => Err(ProjectionError::Decode {
                event: Box::new(EventRef::of(event)),
                source: Box::new(source),
            }),
        };
    }
    let payload = &event.payload;
    let decoded: Result<AnyEvent, serde_json::Error> = match event.aggregate_type.as_str() {
        workflow_definition::AGGREGATE_TYPE => {
            WorkflowDefinitionEvent::deserialize(payload).map(AnyEvent::WorkflowDefinition)
        }
        workflow_instance::AGGREGATE_TYPE => {
            WorkflowInstanceEvent::deserialize(payload).map(AnyEvent::WorkflowInstance)
        }
        task::AGGREGATE_TYPE => TaskEvent::deserialize(payload).map(AnyEvent::Task),
        _ => ApprovalEvent::deserialize(payload).map(AnyEvent::Approval),
    };
    let decoded = decoded.map_err(|source| ProjectionError::Decode {
        event: Box::new(EventRef::of(event)),
        source: Box::new(DecodeError::Payload {
            event_type: event.event_type.clone(),
            source,
        }),
    })?;
    if decoded.event_type() != event.event_type {
        return Err(ProjectionError::Decode {
            event: Box::new(EventRef::of(event)),
            source: Box::new(DecodeError::TagMismatch {
                event_type: event.event_type.clone(),
                found: decoded.event_type().to_owned(),
            }),
        });
    }
    Ok(decoded)
}

/// The metadata every read model needs, read straight from the stored map.
#[derive(Debug, Clone)]
pub(crate) struct Meta<'a> {
    pub tenant_id: &'a str,
    pub actor: &'a str,
    /// Truncated to microseconds, as Postgres stores it.
    pub occurred_at: DateTime<Utc>,
}

pub(crate) fn meta(event: &RecordedEvent) -> Result<Meta<'_>, ProjectionError> {
    let get = |key: &'static str| {
        event
            .metadata
            .get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ProjectionError::Metadata {
                event: Box::new(EventRef::of(event)),
                key,
            })
    };
    let occurred_at = DateTime::parse_from_rfc3339(get("occurred_at")?)
        .map_err(|_| ProjectionError::Metadata {
            event: Box::new(EventRef::of(event)),
            key: "occurred_at",
        })?
        .with_timezone(&Utc)
        .trunc_subsecs(6);
    Ok(Meta {
        tenant_id: get("tenant_id")?,
        actor: get("actor")?,
        occurred_at,
    })
}

/// The aggregate id of a workflow instance, task or approval event, as a UUID.
pub(crate) fn uuid_id(event: &RecordedEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id).map_err(|_| {
        ProjectionError::inconsistent(
            event,
            format!("aggregate id {:?} is not a UUID", event.aggregate_id),
        )
    })
}

/// The ids of the aggregates a batch continues rather than starts (their first event, sequence
/// 1, is not in it): the rows to load before applying the batch.
pub(crate) fn continued_ids(events: &[&RecordedEvent]) -> Result<Vec<Uuid>, ProjectionError> {
    let started: std::collections::HashSet<&str> = events
        .iter()
        .filter(|e| e.sequence == 1)
        .map(|e| e.aggregate_id.as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    for event in events {
        if !started.contains(event.aggregate_id.as_str())
            && seen.insert(event.aggregate_id.as_str())
        {
            ids.push(uuid_id(event)?);
        }
    }
    Ok(ids)
}
