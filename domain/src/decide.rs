//! The pure side of every aggregate.

use cqrs_es::Aggregate;

use crate::approval::{Approval, ApprovalCommand, ApprovalError};
use crate::caller::Command;
use crate::instance::{InstanceCommand, InstanceError, WorkflowInstance};
use crate::task::{Task, TaskCommand, TaskError};
use crate::workflow_definition::{DefinitionCommand, WorkflowDefinition, WorkflowDefinitionError};
use event_schemas::{ApprovalEvent, TaskEvent, WorkflowDefinitionEvent, WorkflowInstanceEvent};

/// An aggregate whose command handling is a pure function of its state and the command;
/// `Aggregate::handle` only writes what `decide` returns. Lets runtimes and tests run
/// aggregates synchronously, without cqrs-es's sink.
pub trait Decide: Aggregate {
    /// The events `command` causes, or why it is rejected.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

impl Decide for WorkflowDefinition {
    fn decide(
        &self,
        command: Command<DefinitionCommand>,
    ) -> Result<Vec<WorkflowDefinitionEvent>, WorkflowDefinitionError> {
        WorkflowDefinition::decide(self, command)
    }
}

impl Decide for WorkflowInstance {
    fn decide(
        &self,
        command: Command<InstanceCommand>,
    ) -> Result<Vec<WorkflowInstanceEvent>, InstanceError> {
        WorkflowInstance::decide(self, command)
    }
}

impl Decide for Task {
    fn decide(&self, command: Command<TaskCommand>) -> Result<Vec<TaskEvent>, TaskError> {
        Task::decide(self, command)
    }
}

impl Decide for Approval {
    fn decide(
        &self,
        command: Command<ApprovalCommand>,
    ) -> Result<Vec<ApprovalEvent>, ApprovalError> {
        Approval::decide(self, command)
    }
}
