//! Events of the `workflow_instance` aggregate (id: a UUID).
//!
//! The instance is the orchestrator's saga: besides its lifecycle it records every step it
//! enters, so a reader can rebuild the timeline and the open steps without the definition.
//! Task, approval and timer ids are derived from (instance id, step id, activation).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::Actor;
use crate::types::{
    ApprovalOutcome, ApprovalPolicy, ApproverSpec, DocumentFile, Escalation, FormField, OpenChild,
    StepRef,
};

/// The aggregate type under which these events are stored.
pub const AGGREGATE_TYPE: &str = "workflow_instance";

/// Something that happened to a workflow instance.
///
/// `scope` lists the parallel-step activations whose branch a step runs in (outermost first);
/// it is empty outside parallel branches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum WorkflowInstanceEvent {
    /// The instance was created; the steps it enters follow as their own events.
    InstanceStarted {
        instance_id: Uuid,
        tenant_id: String,
        definition_key: String,
        definition_version: u32,
        business_key: Option<String>,
        variables: Map<String, Value>,
        started_by: Actor,
        started_at: DateTime<Utc>,
    },
    /// A decision step chose its next step: `rule` is the index of the first rule whose `when`
    /// held, `None` when the default was taken.
    DecisionTaken {
        step_id: String,
        activation: u32,
        rule: Option<u32>,
        next: String,
        decided_at: DateTime<Utc>,
    },
    /// A parallel step started all its branches; `join` runs once all of them reached it.
    ParallelStarted {
        step_id: String,
        activation: u32,
        branches: Vec<String>,
        join: String,
        scope: Vec<StepRef>,
        started_at: DateTime<Utc>,
    },
    /// A branch of `parallel` reached `join_step_id`: `arrived` of `expected` so far; the join
    /// step is entered when they are equal.
    BranchJoined {
        join_step_id: String,
        parallel: StepRef,
        arrived: u32,
        expected: u32,
        joined_at: DateTime<Utc>,
    },
    /// A task step was entered; the orchestrator opens task `task_id`.
    TaskStepActivated {
        step_id: String,
        activation: u32,
        /// Repeated from `InstanceStarted` so the orchestrator can react to this event alone.
        definition_key: String,
        definition_version: u32,
        task_id: Uuid,
        name: String,
        description: Option<String>,
        assignee: Option<Uuid>,
        candidate_users: Vec<Uuid>,
        candidate_groups: Vec<String>,
        form: Vec<FormField>,
        due_at: Option<DateTime<Utc>>,
        escalation: Option<Escalation>,
        scope: Vec<StepRef>,
        activated_at: DateTime<Utc>,
    },
    /// An approval step was entered; the orchestrator resolves the groups and opens approval
    /// `approval_id`.
    ApprovalStepActivated {
        step_id: String,
        activation: u32,
        /// Repeated from `InstanceStarted` so the orchestrator can react to this event alone.
        definition_key: String,
        definition_version: u32,
        approval_id: Uuid,
        name: String,
        description: Option<String>,
        approvers: ApproverSpec,
        policy: ApprovalPolicy,
        due_at: Option<DateTime<Utc>>,
        scope: Vec<StepRef>,
        activated_at: DateTime<Utc>,
    },
    /// A timer step was entered; it fires at `fire_at`.
    TimerStarted {
        step_id: String,
        activation: u32,
        /// Repeated from `InstanceStarted` so the orchestrator can react to this event alone.
        definition_key: String,
        definition_version: u32,
        timer_id: Uuid,
        fire_at: DateTime<Utc>,
        scope: Vec<StepRef>,
        started_at: DateTime<Utc>,
    },
    /// The task of a step was completed; `output` was merged (top level) into the variables,
    /// giving `variables`.
    TaskStepCompleted {
        step_id: String,
        activation: u32,
        task_id: Uuid,
        output: Map<String, Value>,
        variables: Map<String, Value>,
        completed_by: Actor,
        completed_at: DateTime<Utc>,
    },
    /// The approval of a step closed with `outcome`.
    ApprovalStepCompleted {
        step_id: String,
        activation: u32,
        approval_id: Uuid,
        outcome: ApprovalOutcome,
        completed_at: DateTime<Utc>,
    },
    /// A timer step's wait is over.
    TimerFired {
        step_id: String,
        activation: u32,
        timer_id: Uuid,
        fired_at: DateTime<Utc>,
    },
    /// A file was attached to the instance (its content is stored by digest, outside the log).
    InstanceDocumentAttached {
        document: DocumentFile,
        attached_by: Actor,
        attached_at: DateTime<Utc>,
    },
    /// An attached file was taken off the instance; its events (and content) stay for the
    /// audit.
    InstanceDocumentRemoved {
        document_id: Uuid,
        reason: Option<String>,
        removed_by: Actor,
        removed_at: DateTime<Utc>,
    },
    /// An end step was reached. Steps still waiting (other parallel branches) are listed in
    /// `cancelled_children`; their tasks and approvals get cancelled.
    InstanceCompleted {
        outcome: String,
        end_step_id: String,
        cancelled_children: Vec<OpenChild>,
        completed_at: DateTime<Utc>,
    },
    /// The instance was cancelled; the tasks and approvals in `open_children` get cancelled.
    InstanceCancelled {
        reason: String,
        open_children: Vec<OpenChild>,
        cancelled_by: Actor,
        cancelled_at: DateTime<Utc>,
    },
    /// A rule of decision `step_id` could not be evaluated on the instance's variables (one is
    /// missing, of the wrong type, or the rule gives no boolean). The path through the
    /// decision waits there, in `scope`, for an operator to set variables and retry it
    /// ([`WorkflowInstanceEvent::IncidentRetried`]); the instance's other paths run on.
    IncidentRaised {
        step_id: String,
        /// The decision's activation, reserved for the path: its retry is taken as this one.
        activation: u32,
        reason: String,
        scope: Vec<StepRef>,
        raised_at: DateTime<Utc>,
    },
    /// `retried_by` set `variables` (merged into the instance's, as a task's output is) and
    /// retried the decision of the incident at `step_id`: its evaluation follows, as a
    /// `DecisionTaken` or another `IncidentRaised`.
    IncidentRetried {
        step_id: String,
        variables: Map<String, Value>,
        retried_by: Actor,
        retried_at: DateTime<Utc>,
    },
    /// The instance cannot go on (e.g. a step missing from its definition, more steps passed
    /// without waiting than the engine allows, no step left waiting, or failed by the
    /// orchestrator or an admin); the tasks and approvals in `open_children` get cancelled.
    InstanceFailed {
        reason: String,
        step_id: Option<String>,
        open_children: Vec<OpenChild>,
        failed_by: Actor,
        failed_at: DateTime<Utc>,
    },
}

event_names!(WorkflowInstanceEvent {
    InstanceStarted => "1",
    DecisionTaken => "1",
    ParallelStarted => "1",
    BranchJoined => "1",
    TaskStepActivated => "1",
    ApprovalStepActivated => "1",
    TimerStarted => "1",
    TaskStepCompleted => "1",
    ApprovalStepCompleted => "1",
    TimerFired => "1",
    InstanceCompleted => "1",
    InstanceCancelled => "1",
    InstanceFailed => "1",
    IncidentRaised => "1",
    IncidentRetried => "1",
    InstanceDocumentAttached => "1",
    InstanceDocumentRemoved => "1",
});
