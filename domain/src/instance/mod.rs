//! The `WorkflowInstance` aggregate: one run of one version of a definition, and the saga
//! that moves it from step to step (the walk through the graph lives in `engine.rs`).
//!
//! The instance runs on the version it started on: every command that needs the graph
//! carries that version ([`PublishedDefinition`]) and is refused if key or version differ.
//! Tasks, approvals and timers of its steps have ids derived from (instance, step, activation),
//! activation counting how often the step was entered in this instance (loops are allowed).
//!
//! - start: operators and admins;
//! - advance (a task completed, an approval closed, a timer fired): the orchestrator (or an
//!   admin). Advancing a step activation that already advanced is a no-op, so the orchestrator
//!   may run twice;
//! - cancel: operators and admins, while running; lists the open tasks and approvals so they
//!   get cancelled;
//! - fail: the orchestrator (or an admin), while running.
//!
//! - retry an incident: operators and admins (`incident.rs`).
//!
//! A decision rule that fails to evaluate, or gives no bool, raises an incident
//! (`IncidentRaised`): that path waits for an operator to set variables and retry, the rest of
//! the instance runs on. A step missing from the definition, a loop, or no step left waiting
//! fails the instance with the reason in `InstanceFailed`. Reaching an end step completes the instance at once, even while other
//! parallel branches still wait: those are listed in `InstanceCompleted` and cancelled.

mod engine;
mod incident;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use event_schemas::workflow_instance::AGGREGATE_TYPE;
use event_schemas::{
    Actor, ApprovalOutcome, ChildKind, InstanceStatus, OpenChild, Role, StepRef,
    WorkflowInstanceEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::caller::{Caller, Command};
use crate::definition::{PublishedDefinition, StepKind};
use crate::document::{DocumentCommand, DocumentError, Documents};
use crate::error::{ErrorKind, Issue, IssueCode, Rejection};
use crate::text;
use engine::Walk;
pub use incident::Incident;

/// What can be asked of a workflow instance.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceCommand {
    /// Create the instance and walk from the definition's start.
    Start(StartInstance),
    /// A step's task, approval or timer finished: go on from there.
    Advance {
        definition: Arc<PublishedDefinition>,
        advance: Advance,
    },
    /// Stop the instance.
    Cancel { reason: String },
    /// Mark the instance failed (the runtime could not go on, e.g. a group did not resolve).
    Fail { reason: String },
    /// Set `variables` and evaluate the decision of the incident(s) at `step_id` again.
    RetryIncident {
        definition: Arc<PublishedDefinition>,
        step_id: String,
        variables: Map<String, Value>,
    },
    /// Attach or remove a document.
    Document(DocumentCommand),
}

/// Everything an instance starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct StartInstance {
    /// Chosen by the API (UUID v7 recommended); the aggregate id.
    pub instance_id: Uuid,
    pub definition: Arc<PublishedDefinition>,
    pub business_key: Option<String>,
    pub variables: Map<String, Value>,
}

/// What finished at a waiting step activation.
#[derive(Debug, Clone, PartialEq)]
pub enum Advance {
    /// The step's task was completed with `output` (merged into the variables).
    CompleteTask {
        step_id: String,
        activation: u32,
        task_id: Uuid,
        output: Map<String, Value>,
        completed_by: Actor,
    },
    /// The step's approval closed with `outcome`, which picks the route.
    CompleteApproval {
        step_id: String,
        activation: u32,
        approval_id: Uuid,
        outcome: ApprovalOutcome,
    },
    /// The step's timer is due.
    FireTimer { step_id: String, activation: u32 },
}

impl Advance {
    /// The step activation it advances.
    pub fn step(&self) -> (&str, u32) {
        match self {
            Advance::CompleteTask {
                step_id,
                activation,
                ..
            }
            | Advance::CompleteApproval {
                step_id,
                activation,
                ..
            }
            | Advance::FireTimer {
                step_id,
                activation,
            } => (step_id, *activation),
        }
    }

    fn kind(&self) -> ChildKind {
        match self {
            Advance::CompleteTask { .. } => ChildKind::Task,
            Advance::CompleteApproval { .. } => ChildKind::Approval,
            Advance::FireTimer { .. } => ChildKind::Timer,
        }
    }
}

/// Why an instance command was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InstanceError {
    #[error("workflow instance not found")]
    NotFound,
    #[error("a workflow instance with this id already exists")]
    AlreadyExists,
    #[error("only {roles} may {action}")]
    MissingRole {
        action: &'static str,
        roles: &'static str,
    },
    #[error("the instance is already {}", status_name(*.status))]
    Ended { status: InstanceStatus },
    #[error(
        "the instance runs on {expected_key} version {expected_version}, not {found_key} version {found_version}"
    )]
    DefinitionMismatch {
        expected_key: String,
        expected_version: u32,
        found_key: String,
        found_version: u32,
    },
    #[error("step {step_id} was never activated {activation} time(s)")]
    UnknownActivation { step_id: String, activation: u32 },
    #[error("step {step_id} waits on a {expected:?}, not on that")]
    WrongStepKind {
        step_id: String,
        expected: ChildKind,
    },
    #[error("the timer of step {step_id} is not due before {due_at}")]
    NotDue {
        step_id: String,
        due_at: DateTime<Utc>,
    },
    #[error("no incident waits at step {step_id}")]
    NoIncident { step_id: String },
    #[error("the command is invalid: {}", crate::error::first_issue(.issues))]
    Invalid { issues: Vec<Issue> },
    #[error(transparent)]
    Document(#[from] DocumentError),
}

fn status_name(status: InstanceStatus) -> &'static str {
    match status {
        InstanceStatus::Running => "running",
        InstanceStatus::Completed => "completed",
        InstanceStatus::Cancelled => "cancelled",
        InstanceStatus::Failed => "failed",
    }
}

impl Rejection for InstanceError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::MissingRole { .. } => ErrorKind::Forbidden,
            Self::AlreadyExists
            | Self::Ended { .. }
            | Self::DefinitionMismatch { .. }
            | Self::UnknownActivation { .. }
            | Self::WrongStepKind { .. }
            | Self::NotDue { .. }
            | Self::NoIncident { .. } => ErrorKind::Conflict,
            Self::Invalid { .. } => ErrorKind::Validation,
            Self::Document(e) => e.kind(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "instance_not_found",
            Self::AlreadyExists => "instance_exists",
            Self::MissingRole { .. } => "forbidden",
            Self::Ended { .. } => "instance_ended",
            Self::DefinitionMismatch { .. } => "definition_mismatch",
            Self::UnknownActivation { .. } => "unknown_step_activation",
            Self::WrongStepKind { .. } => "wrong_step_kind",
            Self::NotDue { .. } => "timer_not_due",
            Self::NoIncident { .. } => "no_incident",
            Self::Invalid { .. } => "invalid_command",
            Self::Document(e) => e.code(),
        }
    }

    fn issues(&self) -> &[Issue] {
        match self {
            Self::Invalid { issues } => issues,
            Self::Document(e) => e.issues(),
            _ => &[],
        }
    }
}

fn invalid_if_any(issues: Vec<Issue>) -> Result<(), InstanceError> {
    if issues.is_empty() {
        Ok(())
    } else {
        Err(InstanceError::Invalid { issues })
    }
}

/// A step activation waiting on its task, approval or timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenStep {
    pub step_id: String,
    pub activation: u32,
    pub kind: ChildKind,
    /// The task, approval or timer id.
    pub child_id: Uuid,
    pub name: String,
    /// The task's or approval's due time; the timer's fire time.
    pub due_at: Option<DateTime<Utc>>,
    /// The parallel branches it runs in.
    pub scope: Vec<StepRef>,
}

/// A parallel activation waiting for its branches at the join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JoinState {
    parallel: StepRef,
    join: String,
    expected: u32,
    arrived: u32,
    /// The scope the parallel itself ran in; the join continues in it.
    scope: Vec<StepRef>,
}

/// A workflow instance's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowInstance {
    id: Option<Uuid>,
    tenant_id: String,
    definition_key: String,
    definition_version: u32,
    business_key: Option<String>,
    status: InstanceStatus,
    outcome: Option<String>,
    failure: Option<String>,
    variables: Map<String, Value>,
    activations: BTreeMap<String, u32>,
    open: Vec<OpenStep>,
    joins: Vec<JoinState>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    /// Added with documents: snapshots taken before have neither (an old instance's starter
    /// then attaches as an operator would, or not at all).
    #[serde(default)]
    started_by: Option<Actor>,
    #[serde(default)]
    documents: Documents,
    /// Added with incidents: snapshots taken before have none.
    #[serde(default)]
    incidents: Vec<Incident>,
}

impl WorkflowInstance {
    /// The id, once started.
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// The tenant, once started.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The definition key it runs.
    pub fn definition_key(&self) -> &str {
        &self.definition_key
    }

    /// The definition version it runs (fixed at start).
    pub fn definition_version(&self) -> u32 {
        self.definition_version
    }

    /// The caller's own reference (e.g. an order number).
    pub fn business_key(&self) -> Option<&str> {
        self.business_key.as_deref()
    }

    /// running, completed, cancelled or failed.
    pub fn status(&self) -> InstanceStatus {
        self.status
    }

    /// The end step's outcome, once completed.
    pub fn outcome(&self) -> Option<&str> {
        self.outcome.as_deref()
    }

    /// Why it failed, once failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The variables: the start variables with every task output merged in.
    pub fn variables(&self) -> &Map<String, Value> {
        &self.variables
    }

    /// The step activations waiting now.
    pub fn open_steps(&self) -> &[OpenStep] {
        &self.open
    }

    /// How often `step_id` was entered.
    pub fn activation_count(&self, step_id: &str) -> u32 {
        self.activations.get(step_id).copied().unwrap_or(0)
    }

    /// When it started.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }

    /// When it completed, was cancelled or failed.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.ended_at
    }

    fn open_children(&self) -> Vec<OpenChild> {
        self.open
            .iter()
            .map(|o| OpenChild {
                kind: o.kind,
                id: o.child_id,
                step_id: o.step_id.clone(),
                activation: o.activation,
            })
            .collect()
    }

    /// Decides a command: the events it causes, or why it is rejected.
    pub fn decide(
        &self,
        command: Command<InstanceCommand>,
    ) -> Result<Vec<WorkflowInstanceEvent>, InstanceError> {
        let Command {
            caller,
            at,
            command,
        } = command;
        if let InstanceCommand::Start(start) = command {
            return self.start(caller, at, start);
        }
        if self.id.is_none() || self.tenant_id != caller.tenant_id {
            return Err(InstanceError::NotFound);
        }
        match command {
            InstanceCommand::Start(_) => Ok(Vec::new()),
            InstanceCommand::Advance {
                definition,
                advance,
            } => self.advance(&caller, at, &definition, advance),
            InstanceCommand::Cancel { reason } => self.cancel(caller, at, reason),
            InstanceCommand::Fail { reason } => self.fail(caller, at, reason),
            InstanceCommand::Document(command) => self.document(&caller, at, command),
            InstanceCommand::RetryIncident {
                definition,
                step_id,
                variables,
            } => self.retry_incident(&caller, at, &definition, step_id, variables),
        }
    }

    fn start(
        &self,
        caller: Caller,
        at: DateTime<Utc>,
        start: StartInstance,
    ) -> Result<Vec<WorkflowInstanceEvent>, InstanceError> {
        if !caller.acts_as(Role::Operator) {
            return Err(InstanceError::MissingRole {
                action: "start workflow instances",
                roles: "operators and admins",
            });
        }
        if self.id.is_some() {
            return Err(InstanceError::AlreadyExists);
        }
        let mut issues = Vec::new();
        if let Some(key) = &start.business_key {
            text::check_name(key, "business_key", &mut issues);
        }
        invalid_if_any(issues)?;
        let definition = &start.definition.definition;
        let mut walk = Walk::new(definition, self.clone(), at, caller.actor.clone());
        walk.emit(WorkflowInstanceEvent::InstanceStarted {
            instance_id: start.instance_id,
            tenant_id: caller.tenant_id,
            definition_key: definition.key().to_owned(),
            definition_version: start.definition.version,
            business_key: start.business_key,
            variables: start.variables,
            started_by: caller.actor,
            started_at: at,
        });
        walk.go_to(definition.start(), Vec::new());
        Ok(walk.run())
    }

    fn advance(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        published: &PublishedDefinition,
        advance: Advance,
    ) -> Result<Vec<WorkflowInstanceEvent>, InstanceError> {
        if !caller.is_privileged() {
            return Err(InstanceError::MissingRole {
                action: "advance workflow instances",
                roles: "the orchestrator and admins",
            });
        }
        self.check_definition(published)?;
        let (step_id, activation) = advance.step();
        let Some(open) = self
            .open
            .iter()
            .find(|o| o.step_id == step_id && o.activation == activation)
        else {
            // Already advanced (the orchestrator ran twice, or the instance ended meanwhile).
            return if activation >= 1 && activation <= self.activation_count(step_id) {
                Ok(Vec::new())
            } else {
                Err(InstanceError::UnknownActivation {
                    step_id: step_id.to_owned(),
                    activation,
                })
            };
        };
        if advance.kind() != open.kind {
            return Err(InstanceError::WrongStepKind {
                step_id: step_id.to_owned(),
                expected: open.kind,
            });
        }
        let open = open.clone();
        let definition = &published.definition;
        let mut walk = Walk::new(definition, self.clone(), at, caller.actor.clone());
        let kind = definition.step(&open.step_id).map(|s| &s.kind);
        let next = match (advance, kind) {
            (
                Advance::CompleteTask {
                    task_id,
                    output,
                    completed_by,
                    ..
                },
                Some(StepKind::Task(task)),
            ) => {
                if task_id != open.child_id {
                    return Err(wrong_child("task_id"));
                }
                let mut variables = self.variables.clone();
                variables.extend(output.clone());
                walk.emit(WorkflowInstanceEvent::TaskStepCompleted {
                    step_id: open.step_id.clone(),
                    activation,
                    task_id,
                    output,
                    variables,
                    completed_by,
                    completed_at: at,
                });
                task.next.as_str()
            }
            (
                Advance::CompleteApproval {
                    approval_id,
                    outcome,
                    ..
                },
                Some(StepKind::Approval(approval)),
            ) => {
                if approval_id != open.child_id {
                    return Err(wrong_child("approval_id"));
                }
                walk.emit(WorkflowInstanceEvent::ApprovalStepCompleted {
                    step_id: open.step_id.clone(),
                    activation,
                    approval_id,
                    outcome,
                    completed_at: at,
                });
                match outcome {
                    ApprovalOutcome::Approved => approval.approved.as_str(),
                    ApprovalOutcome::Rejected => approval.rejected.as_str(),
                }
            }
            (Advance::FireTimer { .. }, Some(StepKind::Timer(timer))) => {
                if let Some(due_at) = open.due_at.filter(|due| at < *due) {
                    return Err(InstanceError::NotDue {
                        step_id: open.step_id,
                        due_at,
                    });
                }
                walk.emit(WorkflowInstanceEvent::TimerFired {
                    step_id: open.step_id.clone(),
                    activation,
                    timer_id: open.child_id,
                    fired_at: at,
                });
                timer.next.as_str()
            }
            _ => {
                walk.fail(
                    format!(
                        "step {:?} is not a {:?} step in the definition",
                        open.step_id, open.kind
                    ),
                    Some(&open.step_id),
                );
                return Ok(walk.run());
            }
        };
        walk.go_to(next, open.scope);
        Ok(walk.run())
    }

    /// Documents: its starter (a member or operator), operators and admins attach while it
    /// runs; whoever attached one, operators and admins remove it.
    fn document(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        command: DocumentCommand,
    ) -> Result<Vec<WorkflowInstanceEvent>, InstanceError> {
        if self.status != InstanceStatus::Running {
            return Err(InstanceError::Ended {
                status: self.status,
            });
        }
        match command {
            DocumentCommand::Attach(document) => {
                let starter =
                    self.started_by.as_ref() == Some(&caller.actor) && caller.acts_as(Role::Member);
                if !starter && !caller.acts_as(Role::Operator) {
                    return Err(InstanceError::MissingRole {
                        action: "attach documents to this workflow instance",
                        roles: "its starter, operators and admins",
                    });
                }
                self.documents.check_attach(&document)?;
                Ok(vec![WorkflowInstanceEvent::InstanceDocumentAttached {
                    document,
                    attached_by: caller.actor.clone(),
                    attached_at: at,
                }])
            }
            DocumentCommand::Remove {
                document_id,
                reason,
            } => {
                self.documents
                    .check_remove(caller, document_id, reason.as_deref())?;
                Ok(vec![WorkflowInstanceEvent::InstanceDocumentRemoved {
                    document_id,
                    reason,
                    removed_by: caller.actor.clone(),
                    removed_at: at,
                }])
            }
        }
    }

    fn cancel(
        &self,
        caller: Caller,
        at: DateTime<Utc>,
        reason: String,
    ) -> Result<Vec<WorkflowInstanceEvent>, InstanceError> {
        if !caller.acts_as(Role::Operator) {
            return Err(InstanceError::MissingRole {
                action: "cancel workflow instances",
                roles: "operators and admins",
            });
        }
        if self.status != InstanceStatus::Running {
            return Err(InstanceError::Ended {
                status: self.status,
            });
        }
        let mut issues = Vec::new();
        text::check_name(&reason, "reason", &mut issues);
        invalid_if_any(issues)?;
        Ok(vec![WorkflowInstanceEvent::InstanceCancelled {
            reason,
            open_children: self.open_children(),
            cancelled_by: caller.actor,
            cancelled_at: at,
        }])
    }

    fn fail(
        &self,
        caller: Caller,
        at: DateTime<Utc>,
        reason: String,
    ) -> Result<Vec<WorkflowInstanceEvent>, InstanceError> {
        if !caller.is_privileged() {
            return Err(InstanceError::MissingRole {
                action: "fail workflow instances",
                roles: "the orchestrator and admins",
            });
        }
        if self.status != InstanceStatus::Running {
            return if caller.is_service() {
                Ok(Vec::new())
            } else {
                Err(InstanceError::Ended {
                    status: self.status,
                })
            };
        }
        let mut issues = Vec::new();
        text::check_length(&reason, "reason", text::MAX_REASON, &mut issues);
        if reason.trim().is_empty() {
            issues.push(Issue::field("reason", IssueCode::Empty, "give a reason"));
        }
        invalid_if_any(issues)?;
        Ok(vec![WorkflowInstanceEvent::InstanceFailed {
            reason,
            step_id: None,
            open_children: self.open_children(),
            failed_by: caller.actor,
            failed_at: at,
        }])
    }

    /// Refuses a definition other than the one the instance runs on.
    fn check_definition(&self, published: &PublishedDefinition) -> Result<(), InstanceError> {
        if published.key() != self.definition_key || published.version != self.definition_version {
            return Err(InstanceError::DefinitionMismatch {
                expected_key: self.definition_key.clone(),
                expected_version: self.definition_version,
                found_key: published.key().to_owned(),
                found_version: published.version,
            });
        }
        Ok(())
    }

    fn activated(&mut self, step_id: &str, activation: u32) {
        let count = self.activations.entry(step_id.to_owned()).or_default();
        *count = (*count).max(activation);
    }

    fn close_step(&mut self, step_id: &str, activation: u32) {
        self.open
            .retain(|o| !(o.step_id == step_id && o.activation == activation));
    }

    fn end(&mut self, status: InstanceStatus, at: DateTime<Utc>) {
        self.status = status;
        self.open.clear();
        self.joins.clear();
        self.incidents.clear();
        self.ended_at = Some(at);
    }
}

fn wrong_child(field: &str) -> InstanceError {
    InstanceError::Invalid {
        issues: vec![Issue::field(
            field,
            IssueCode::InvalidValue,
            "not the id this step activation waits on",
        )],
    }
}

impl Aggregate for WorkflowInstance {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = Command<InstanceCommand>;
    type Event = WorkflowInstanceEvent;
    type Error = InstanceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use WorkflowInstanceEvent as E;
        match event {
            E::InstanceStarted {
                instance_id,
                tenant_id,
                definition_key,
                definition_version,
                business_key,
                variables,
                started_by,
                started_at,
            } => {
                *self = WorkflowInstance {
                    id: Some(instance_id),
                    tenant_id,
                    definition_key,
                    definition_version,
                    business_key,
                    variables,
                    started_at: Some(started_at),
                    started_by: Some(started_by),
                    ..WorkflowInstance::default()
                };
            }
            E::DecisionTaken {
                step_id,
                activation,
                ..
            } => self.activated(&step_id, activation),
            E::ParallelStarted {
                step_id,
                activation,
                branches,
                join,
                scope,
                ..
            } => {
                self.activated(&step_id, activation);
                self.joins.push(JoinState {
                    parallel: StepRef {
                        step_id,
                        activation,
                    },
                    join,
                    expected: u32::try_from(branches.len()).unwrap_or(u32::MAX),
                    arrived: 0,
                    scope,
                });
            }
            E::BranchJoined {
                parallel,
                arrived,
                expected,
                ..
            } => {
                if arrived >= expected {
                    self.joins.retain(|g| g.parallel != parallel);
                } else if let Some(group) = self.joins.iter_mut().find(|g| g.parallel == parallel) {
                    group.arrived = arrived;
                }
            }
            E::TaskStepActivated {
                step_id,
                activation,
                task_id,
                name,
                due_at,
                scope,
                ..
            } => {
                self.activated(&step_id, activation);
                self.open.push(OpenStep {
                    step_id,
                    activation,
                    kind: ChildKind::Task,
                    child_id: task_id,
                    name,
                    due_at,
                    scope,
                });
            }
            E::ApprovalStepActivated {
                step_id,
                activation,
                approval_id,
                name,
                due_at,
                scope,
                ..
            } => {
                self.activated(&step_id, activation);
                self.open.push(OpenStep {
                    step_id,
                    activation,
                    kind: ChildKind::Approval,
                    child_id: approval_id,
                    name,
                    due_at,
                    scope,
                });
            }
            E::TimerStarted {
                step_id,
                activation,
                timer_id,
                fire_at,
                scope,
                ..
            } => {
                self.activated(&step_id, activation);
                self.open.push(OpenStep {
                    name: step_id.clone(),
                    step_id,
                    activation,
                    kind: ChildKind::Timer,
                    child_id: timer_id,
                    due_at: Some(fire_at),
                    scope,
                });
            }
            E::TaskStepCompleted {
                step_id,
                activation,
                variables,
                ..
            } => {
                self.close_step(&step_id, activation);
                self.variables = variables;
            }
            E::ApprovalStepCompleted {
                step_id,
                activation,
                ..
            }
            | E::TimerFired {
                step_id,
                activation,
                ..
            } => self.close_step(&step_id, activation),
            E::InstanceCompleted {
                outcome,
                completed_at,
                ..
            } => {
                self.outcome = Some(outcome);
                self.end(InstanceStatus::Completed, completed_at);
            }
            E::InstanceCancelled { cancelled_at, .. } => {
                self.end(InstanceStatus::Cancelled, cancelled_at);
            }
            E::InstanceFailed {
                reason, failed_at, ..
            } => {
                self.failure = Some(reason);
                self.end(InstanceStatus::Failed, failed_at);
            }
            E::IncidentRaised {
                step_id,
                activation,
                reason,
                scope,
                raised_at,
            } => self.incident_raised(Incident {
                step_id,
                activation,
                reason,
                scope,
                raised_at,
            }),
            E::IncidentRetried {
                step_id, variables, ..
            } => self.incident_retried(&step_id, variables),
            E::InstanceDocumentAttached {
                document,
                attached_by,
                ..
            } => self.documents.attached(&document, &attached_by),
            E::InstanceDocumentRemoved { document_id, .. } => {
                self.documents.removed(document_id);
            }
        }
    }
}
