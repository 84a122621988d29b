//! The stored shape of Workledger's events: the metadata envelope every event carries, the
//! event enums of each aggregate with their stable type names and versions, and the upcasters
//! that read older stored versions; and the integration events other systems receive, with
//! their JSON Schemas ([`integration`]).
//!
//! Everything here is part of the storage contract: a changed shape is a new `event_version`
//! plus an upcaster, never an edit of what is already stored.
//!
//! Events are externally tagged (`{"TaskClaimed": {...}}`), as cqrs-es deserializes a payload
//! alone; the tag equals the stored `event_type`.

#[macro_use]
mod macros;

pub mod any;
pub mod approval;
pub mod envelope;
pub mod identity;
pub mod integration;
pub mod metadata;
pub mod personal;
pub mod task;
pub mod types;
pub mod workflow_definition;
pub mod workflow_instance;

#[cfg(test)]
mod golden;

pub use any::{AGGREGATE_TYPES, AnyEvent, DecodeError, event_types, upcasters};
pub use approval::ApprovalEvent;
pub use envelope::{LogPosition, RecordedEvent};
pub use identity::{TenantEvent, UserEvent};
pub use integration::{INTEGRATION_AGGREGATE_TYPES, IntegrationEvent};
pub use metadata::{Actor, EventMetadata, MetadataError};
pub use task::TaskEvent;
pub use types::{
    ApprovalCloseReason, ApprovalDecision, ApprovalOutcome, ApprovalPolicy, ApprovalStatus,
    ApproverSpec, ChildKind, DocumentFile, Escalation, FieldType, FormField, InstanceStatus,
    OpenChild, Role, StepRef, TaskStatus, UnknownRole, WorkflowRef,
};
pub use workflow_definition::WorkflowDefinitionEvent;
pub use workflow_instance::WorkflowInstanceEvent;
