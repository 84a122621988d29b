//! Workledger's domain: aggregates, commands, events -> state, the workflow definition model and
//! the engine. Pure: no I/O, no clock, no async runtime.
//!
//! - [`definition`]: the definition format (DESIGN §3), parsed from JSON or YAML and validated
//!   as a whole ([`definition::Definition::from_json`], `from_yaml`).
//! - Aggregates (cqrs-es 0.5, `type Services = ()`): [`WorkflowDefinition`] (id
//!   `"{tenant}/{key}"`), [`WorkflowInstance`], [`Task`], [`Approval`] (UUID ids; see [`ids`]).
//!   Each takes a [`Command<C>`](Command) (the [`Caller`], the instant, the command) and has a
//!   pure `decide` ([`Decide`]); `Aggregate::handle` only writes what it returns.
//! - [`identity`]: the [`Tenant`] and [`User`] aggregates (roles, groups, activation).
//! - Rejections: one `thiserror` enum per aggregate implementing [`Rejection`]: its
//!   [`ErrorKind`] maps to 404 / 403 / 409 / 422, with a machine `code` and field- or
//!   step-level [`Issue`]s. Another tenant's aggregate is `NotFound`, like a missing one.
//! - [`orchestrator`]: the saga's decisions, from one event to the [`Reaction`]s it causes.
//! - [`runtime::LocalRuntime`]: everything above wired together in memory, for tests and the
//!   engine benchmark; the reference for the real runtime.

pub mod approval;
pub mod caller;
mod decide;
pub mod definition;
pub mod document;
pub mod error;
pub mod examples;
pub mod identity;
pub mod ids;
pub mod instance;
pub mod orchestrator;
pub mod runtime;
pub mod task;
mod text;
pub mod workflow_definition;

#[cfg(test)]
mod testing;

pub use approval::{Approval, ApprovalCommand, ApprovalError};
pub use caller::{Caller, Command};
pub use decide::Decide;
pub use document::{DocumentCommand, DocumentError};
pub use error::{ErrorKind, Issue, IssueCode, Rejection};
pub use event_schemas::{Actor, Role};
pub use identity::{Tenant, TenantCommand, TenantError, User, UserCommand, UserError};
pub use instance::{Advance, InstanceCommand, InstanceError, StartInstance, WorkflowInstance};
pub use orchestrator::{Reaction, react, react_to_recorded};
pub use runtime::LocalRuntime;
pub use task::{Task, TaskCommand, TaskError};
pub use workflow_definition::{DefinitionCommand, WorkflowDefinition, WorkflowDefinitionError};
