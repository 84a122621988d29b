//! Every aggregate's events behind one type, decoded from what the global log stores.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

use crate::RecordedEvent;
use crate::approval::{self, ApprovalEvent};
use crate::identity::{self, TenantEvent, UserEvent};
use crate::task::{self, TaskEvent};
use crate::workflow_definition::{self, WorkflowDefinitionEvent};
use crate::workflow_instance::{self, WorkflowInstanceEvent};

/// The aggregate types whose events this crate defines.
pub const AGGREGATE_TYPES: [&str; 6] = [
    workflow_definition::AGGREGATE_TYPE,
    workflow_instance::AGGREGATE_TYPE,
    task::AGGREGATE_TYPE,
    approval::AGGREGATE_TYPE,
    identity::TENANT_AGGREGATE_TYPE,
    identity::USER_AGGREGATE_TYPE,
];

/// The event types of `aggregate_type` (what a projector subscribes to), or `None` for an
/// aggregate type this crate does not define.
pub fn event_types(aggregate_type: &str) -> Option<&'static [&'static str]> {
    match aggregate_type {
        workflow_definition::AGGREGATE_TYPE => Some(WorkflowDefinitionEvent::EVENT_TYPES),
        workflow_instance::AGGREGATE_TYPE => Some(WorkflowInstanceEvent::EVENT_TYPES),
        task::AGGREGATE_TYPE => Some(TaskEvent::EVENT_TYPES),
        approval::AGGREGATE_TYPE => Some(ApprovalEvent::EVENT_TYPES),
        identity::TENANT_AGGREGATE_TYPE => Some(TenantEvent::EVENT_TYPES),
        identity::USER_AGGREGATE_TYPE => Some(UserEvent::EVENT_TYPES),
        _ => None,
    }
}

/// The upcasters that turn older stored versions into the current ones, for cqrs-es's event
/// repository (`PostgresEventRepository::with_upcasters`) and for [`AnyEvent::decode`].
///
/// Empty while every event type is at its first version. A changed shape gets a new
/// `event_version` and a `SemanticVersionEventUpcaster` here, tested against stored JSON of the
/// old version (see the golden samples in this crate's tests).
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    Vec::new()
}

/// Why a stored event could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("aggregate type {aggregate_type:?} has no event type {event_type:?}")]
    UnknownEventType {
        aggregate_type: String,
        event_type: String,
    },
    #[error(
        "event {event_type} version {version:?} is not readable (current: {current}) and no upcaster takes it"
    )]
    UnsupportedVersion {
        event_type: String,
        version: String,
        current: &'static str,
    },
    #[error("payload of {event_type} does not match its stored type")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("payload is tagged {found:?} but stored as {event_type:?}")]
    TagMismatch { event_type: String, found: String },
}

/// An event of any of Workledger's aggregates: the workflow ones and identity.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    WorkflowDefinition(WorkflowDefinitionEvent),
    WorkflowInstance(WorkflowInstanceEvent),
    Task(TaskEvent),
    Approval(ApprovalEvent),
    Tenant(TenantEvent),
    User(UserEvent),
}

impl AnyEvent {
    /// The aggregate type the event belongs to.
    pub fn aggregate_type(&self) -> &'static str {
        match self {
            AnyEvent::WorkflowDefinition(_) => workflow_definition::AGGREGATE_TYPE,
            AnyEvent::WorkflowInstance(_) => workflow_instance::AGGREGATE_TYPE,
            AnyEvent::Task(_) => task::AGGREGATE_TYPE,
            AnyEvent::Approval(_) => approval::AGGREGATE_TYPE,
            AnyEvent::Tenant(_) => identity::TENANT_AGGREGATE_TYPE,
            AnyEvent::User(_) => identity::USER_AGGREGATE_TYPE,
        }
    }

    /// The stable event type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            AnyEvent::WorkflowDefinition(e) => e.type_name(),
            AnyEvent::WorkflowInstance(e) => e.type_name(),
            AnyEvent::Task(e) => e.type_name(),
            AnyEvent::Approval(e) => e.type_name(),
            AnyEvent::Tenant(e) => e.type_name(),
            AnyEvent::User(e) => e.type_name(),
        }
    }

    /// Decodes a stored payload, upcasting older versions first.
    ///
    /// `Ok(None)` for an aggregate type this crate does not define, so a reader of the global
    /// log can skip them.
    pub fn decode(
        aggregate_type: &str,
        event_type: &str,
        event_version: &str,
        payload: Value,
    ) -> Result<Option<AnyEvent>, DecodeError> {
        let Some(types) = event_types(aggregate_type) else {
            return Ok(None);
        };
        if !types.contains(&event_type) {
            return Err(DecodeError::UnknownEventType {
                aggregate_type: aggregate_type.to_owned(),
                event_type: event_type.to_owned(),
            });
        }
        let stored = SerializedEvent::new(
            String::new(),
            0,
            aggregate_type.to_owned(),
            event_type.to_owned(),
            event_version.to_owned(),
            payload,
            Value::Null,
        );
        let event = upcasters().iter().fold(stored, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        });
        let current = current_version(aggregate_type, event_type).unwrap_or("1");
        if event.event_version != current {
            return Err(DecodeError::UnsupportedVersion {
                event_type: event_type.to_owned(),
                version: event_version.to_owned(),
                current,
            });
        }
        let payload_error = |source| DecodeError::Payload {
            event_type: event_type.to_owned(),
            source,
        };
        let decoded = match aggregate_type {
            workflow_definition::AGGREGATE_TYPE => AnyEvent::WorkflowDefinition(
                serde_json::from_value(event.payload).map_err(payload_error)?,
            ),
            workflow_instance::AGGREGATE_TYPE => AnyEvent::WorkflowInstance(
                serde_json::from_value(event.payload).map_err(payload_error)?,
            ),
            task::AGGREGATE_TYPE => {
                AnyEvent::Task(serde_json::from_value(event.payload).map_err(payload_error)?)
            }
            identity::TENANT_AGGREGATE_TYPE => {
                AnyEvent::Tenant(serde_json::from_value(event.payload).map_err(payload_error)?)
            }
            identity::USER_AGGREGATE_TYPE => {
                AnyEvent::User(serde_json::from_value(event.payload).map_err(payload_error)?)
            }
            _ => AnyEvent::Approval(serde_json::from_value(event.payload).map_err(payload_error)?),
        };
        if decoded.event_type() != event_type {
            return Err(DecodeError::TagMismatch {
                event_type: event_type.to_owned(),
                found: decoded.event_type().to_owned(),
            });
        }
        Ok(Some(decoded))
    }

    /// Decodes an event read from the global log (see [`AnyEvent::decode`]).
    pub fn from_recorded(event: &RecordedEvent) -> Result<Option<AnyEvent>, DecodeError> {
        Self::decode(
            &event.aggregate_type,
            &event.event_type,
            &event.event_version,
            event.payload.clone(),
        )
    }
}

fn current_version(aggregate_type: &str, event_type: &str) -> Option<&'static str> {
    match aggregate_type {
        workflow_definition::AGGREGATE_TYPE => WorkflowDefinitionEvent::current_version(event_type),
        workflow_instance::AGGREGATE_TYPE => WorkflowInstanceEvent::current_version(event_type),
        task::AGGREGATE_TYPE => TaskEvent::current_version(event_type),
        approval::AGGREGATE_TYPE => ApprovalEvent::current_version(event_type),
        identity::TENANT_AGGREGATE_TYPE => TenantEvent::current_version(event_type),
        identity::USER_AGGREGATE_TYPE => UserEvent::current_version(event_type),
        _ => None,
    }
}

impl From<WorkflowDefinitionEvent> for AnyEvent {
    fn from(event: WorkflowDefinitionEvent) -> Self {
        AnyEvent::WorkflowDefinition(event)
    }
}

impl From<WorkflowInstanceEvent> for AnyEvent {
    fn from(event: WorkflowInstanceEvent) -> Self {
        AnyEvent::WorkflowInstance(event)
    }
}

impl From<TaskEvent> for AnyEvent {
    fn from(event: TaskEvent) -> Self {
        AnyEvent::Task(event)
    }
}

impl From<ApprovalEvent> for AnyEvent {
    fn from(event: ApprovalEvent) -> Self {
        AnyEvent::Approval(event)
    }
}

impl From<TenantEvent> for AnyEvent {
    fn from(event: TenantEvent) -> Self {
        AnyEvent::Tenant(event)
    }
}

impl From<UserEvent> for AnyEvent {
    fn from(event: UserEvent) -> Self {
        AnyEvent::User(event)
    }
}
