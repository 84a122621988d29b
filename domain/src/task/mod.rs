//! The `Task` aggregate: a piece of human work, opened by the orchestrator for a workflow
//! step (id derived from the step, see [`crate::ids::step_child_id`]) or ad hoc by an operator.
//!
//! Who may do what:
//! - open: the orchestrator for workflow tasks; operators and admins for ad-hoc tasks;
//! - claim: a member who is a candidate (listed user, or in a candidate group), when unassigned;
//! - release: the assignee, operators, admins;
//! - assign: operators and admins;
//! - delegate: the assignee (or an admin) hands the task to another user;
//! - complete: the assignee (or an admin), with output valid against the form;
//! - comment, attach documents: the assignee, candidates, operators, admins, while open;
//! - remove a document: whoever attached it, operators, admins, while open;
//! - cancel: operators and admins for ad-hoc tasks; workflow tasks end with their instance;
//! - mark overdue: the timer service (and admins), once the due time has passed.
//!
//! Services act with full rights. Commands the orchestrator may repeat are idempotent: opening
//! an existing task, cancelling a closed one, marking an already overdue or closed one.
//! Anything else on a completed or cancelled task is rejected.

mod form;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use event_schemas::task::AGGREGATE_TYPE;
use event_schemas::{Escalation, FormField, Role, TaskEvent, TaskStatus, WorkflowRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::caller::{Caller, Command};
use crate::document::{DocumentCommand, DocumentError, Documents};
use crate::error::{ErrorKind, Issue, IssueCode, Rejection};
use crate::text;

pub use form::check_output;

/// What can be asked of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCommand {
    /// Create the task (a no-op if it exists).
    Open(Box<OpenTask>),
    /// Take the unassigned task (a candidate).
    Claim,
    /// Give the task back to its candidates.
    Release,
    /// Make `user_id` the assignee (operators).
    Assign { user_id: Uuid },
    /// Hand the task to `user_id` (the assignee).
    Delegate { user_id: Uuid },
    /// Finish the task with `output`, checked against the form.
    Complete { output: Map<String, Value> },
    /// Add a comment.
    Comment { text: String },
    /// Attach or remove a document.
    Document(DocumentCommand),
    /// Cancel the task.
    Cancel { reason: String },
    /// The due time passed: mark the task overdue and apply its escalation.
    MarkOverdue,
}

impl From<OpenTask> for TaskCommand {
    fn from(open: OpenTask) -> Self {
        TaskCommand::Open(Box::new(open))
    }
}

/// Everything a new task is opened with.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenTask {
    pub task_id: Uuid,
    /// `None` for an ad-hoc task.
    pub workflow: Option<WorkflowRef>,
    pub name: String,
    pub description: Option<String>,
    pub assignee: Option<Uuid>,
    pub candidate_users: Vec<Uuid>,
    pub candidate_groups: Vec<String>,
    pub form: Vec<FormField>,
    pub due_at: Option<DateTime<Utc>>,
    pub escalation: Option<Escalation>,
}

/// Why a task command was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    #[error("task not found")]
    NotFound,
    #[error("a task with this id already exists")]
    AlreadyExists,
    #[error("only {roles} may {action}")]
    MissingRole {
        action: &'static str,
        roles: &'static str,
    },
    #[error("the task is not offered to you")]
    NotACandidate,
    #[error("the task is assigned to someone else")]
    NotAssignee,
    #[error("only people involved in the task may comment on it")]
    NotInvolved,
    #[error("the task is already {}", status_name(*.status))]
    Closed { status: TaskStatus },
    #[error("the task is already assigned to {assignee}")]
    AlreadyAssigned { assignee: Uuid },
    #[error("the task is not assigned to anyone; claim it first")]
    NotAssigned,
    #[error("the task belongs to workflow instance {instance_id}; cancel the instance instead")]
    WorkflowManaged { instance_id: Uuid },
    #[error("the task has no due time")]
    NoDueTime,
    #[error("the task is not due before {due_at}")]
    NotDue { due_at: DateTime<Utc> },
    #[error("the command is invalid: {}", crate::error::first_issue(.issues))]
    Invalid { issues: Vec<Issue> },
    #[error(transparent)]
    Document(#[from] DocumentError),
}

fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Open => "open",
        TaskStatus::Completed => "completed",
        TaskStatus::Cancelled => "cancelled",
    }
}

impl Rejection for TaskError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::MissingRole { .. }
            | Self::NotACandidate
            | Self::NotAssignee
            | Self::NotInvolved => ErrorKind::Forbidden,
            Self::AlreadyExists
            | Self::Closed { .. }
            | Self::AlreadyAssigned { .. }
            | Self::NotAssigned
            | Self::WorkflowManaged { .. }
            | Self::NoDueTime
            | Self::NotDue { .. } => ErrorKind::Conflict,
            Self::Invalid { .. } => ErrorKind::Validation,
            Self::Document(e) => e.kind(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "task_not_found",
            Self::AlreadyExists => "task_exists",
            Self::MissingRole { .. } => "forbidden",
            Self::NotACandidate => "not_a_candidate",
            Self::NotAssignee => "not_assignee",
            Self::NotInvolved => "not_involved",
            Self::Closed { .. } => "task_closed",
            Self::AlreadyAssigned { .. } => "task_already_assigned",
            Self::NotAssigned => "task_not_assigned",
            Self::WorkflowManaged { .. } => "task_managed_by_workflow",
            Self::NoDueTime => "task_has_no_due_time",
            Self::NotDue { .. } => "task_not_due",
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

fn invalid(issues: Vec<Issue>) -> Result<(), TaskError> {
    if issues.is_empty() {
        Ok(())
    } else {
        Err(TaskError::Invalid { issues })
    }
}

const WORK: TaskError = TaskError::MissingRole {
    action: "work on tasks",
    roles: "members",
};

/// A task's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    id: Option<Uuid>,
    tenant_id: String,
    workflow: Option<WorkflowRef>,
    name: String,
    description: Option<String>,
    status: TaskStatus,
    assignee: Option<Uuid>,
    candidate_users: Vec<Uuid>,
    candidate_groups: Vec<String>,
    form: Vec<FormField>,
    due_at: Option<DateTime<Utc>>,
    escalation: Option<Escalation>,
    overdue: bool,
    output: Option<Map<String, Value>>,
    /// Added with documents: snapshots taken before have none.
    #[serde(default)]
    documents: Documents,
}

impl Task {
    /// The id, once opened.
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// The tenant, once opened.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The workflow step it belongs to; `None` for ad-hoc tasks.
    pub fn workflow(&self) -> Option<&WorkflowRef> {
        self.workflow.as_ref()
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// open, completed or cancelled.
    pub fn status(&self) -> TaskStatus {
        self.status
    }

    /// Who works on it now, if anyone.
    pub fn assignee(&self) -> Option<Uuid> {
        self.assignee
    }

    /// Users it is offered to.
    pub fn candidate_users(&self) -> &[Uuid] {
        &self.candidate_users
    }

    /// Groups it is offered to.
    pub fn candidate_groups(&self) -> &[String] {
        &self.candidate_groups
    }

    /// The fields its output is checked against.
    pub fn form(&self) -> &[FormField] {
        &self.form
    }

    /// When it becomes overdue, if ever.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        self.due_at
    }

    /// Whether it was marked overdue (an SLA breach).
    pub fn is_overdue(&self) -> bool {
        self.overdue
    }

    /// The output it was completed with.
    pub fn output(&self) -> Option<&Map<String, Value>> {
        self.output.as_ref()
    }

    /// Whether `caller` is among the candidates (by user id or group).
    pub fn is_candidate(&self, caller: &Caller) -> bool {
        caller
            .person()
            .is_some_and(|u| self.candidate_users.contains(&u))
            || caller.in_any_group(&self.candidate_groups)
    }

    /// Decides a command: the events it causes, or why it is rejected.
    pub fn decide(&self, command: Command<TaskCommand>) -> Result<Vec<TaskEvent>, TaskError> {
        let Command {
            caller,
            at,
            command,
        } = command;
        if let TaskCommand::Open(open) = command {
            return self.open(caller, at, *open);
        }
        if self.id.is_none() || self.tenant_id != caller.tenant_id {
            return Err(TaskError::NotFound);
        }
        match command {
            TaskCommand::Open(_) => Ok(Vec::new()),
            TaskCommand::Claim => self.claim(&caller, at),
            TaskCommand::Release => self.release(&caller, at),
            TaskCommand::Assign { user_id } => self.assign(&caller, at, user_id),
            TaskCommand::Delegate { user_id } => self.delegate(&caller, at, user_id),
            TaskCommand::Complete { output } => self.complete(&caller, at, output),
            TaskCommand::Comment { text } => self.comment(&caller, at, text),
            TaskCommand::Document(command) => self.document(&caller, at, command),
            TaskCommand::Cancel { reason } => self.cancel(&caller, at, reason),
            TaskCommand::MarkOverdue => self.mark_overdue(&caller, at),
        }
    }

    fn open(
        &self,
        caller: Caller,
        at: DateTime<Utc>,
        open: OpenTask,
    ) -> Result<Vec<TaskEvent>, TaskError> {
        if open.workflow.is_some() && !caller.is_service() {
            return Err(TaskError::MissingRole {
                action: "open workflow tasks",
                roles: "the orchestrator",
            });
        }
        if !caller.acts_as(Role::Operator) {
            return Err(TaskError::MissingRole {
                action: "open tasks",
                roles: "operators and admins",
            });
        }
        if self.id.is_some() {
            // The orchestrator derives a workflow task's id from its instance and step, so it
            // may open the same task twice: that changes nothing. Any other open of an id
            // taken (an ad-hoc task's id sent again, or a task in a workflow step's place) is
            // refused.
            let same_step = open.workflow.is_some() && open.workflow == self.workflow;
            return if self.tenant_id == caller.tenant_id && same_step {
                Ok(Vec::new())
            } else {
                Err(TaskError::AlreadyExists)
            };
        }
        let mut issues = Vec::new();
        text::check_name(&open.name, "name", &mut issues);
        if let Some(description) = &open.description {
            text::check_length(
                description,
                "description",
                text::MAX_DESCRIPTION,
                &mut issues,
            );
        }
        for (i, group) in open.candidate_groups.iter().enumerate() {
            text::check_name(group, &format!("candidate_groups[{i}]"), &mut issues);
        }
        for (i, field) in open.form.iter().enumerate() {
            if !crate::definition::valid_field_id(&field.id) {
                issues.push(Issue::field(
                    format!("form[{i}].id"),
                    IssueCode::InvalidFieldId,
                    "a field id is an identifier: letters, digits and '_'",
                ));
            } else if open.form[..i].iter().any(|f| f.id == field.id) {
                issues.push(Issue::field(
                    format!("form[{i}].id"),
                    IssueCode::DuplicateFormField,
                    format!("field {:?} is listed twice", field.id),
                ));
            }
        }
        if open.escalation.is_some() && open.due_at.is_none() {
            issues.push(Issue::field(
                "escalation",
                IssueCode::EscalationWithoutDue,
                "an escalation applies when the task is overdue: give it a due time",
            ));
        }
        invalid(issues)?;
        Ok(vec![TaskEvent::TaskOpened {
            task_id: open.task_id,
            tenant_id: caller.tenant_id,
            workflow: open.workflow,
            name: open.name,
            description: open.description,
            assignee: open.assignee,
            candidate_users: dedup(open.candidate_users),
            candidate_groups: dedup(open.candidate_groups),
            form: open.form,
            due_at: open.due_at,
            escalation: open.escalation,
            opened_by: caller.actor,
            opened_at: at,
        }])
    }

    fn ensure_open(&self) -> Result<(), TaskError> {
        match self.status {
            TaskStatus::Open => Ok(()),
            status => Err(TaskError::Closed { status }),
        }
    }

    fn claim(&self, caller: &Caller, at: DateTime<Utc>) -> Result<Vec<TaskEvent>, TaskError> {
        let Some(user) = caller.person() else {
            return Err(TaskError::MissingRole {
                action: "claim tasks",
                roles: "people",
            });
        };
        if !caller.acts_as(Role::Member) {
            return Err(WORK);
        }
        // who is not offered the task learns nothing of its state or assignee
        if self.assignee != Some(user) && !self.is_candidate(caller) && !caller.is_privileged() {
            return Err(TaskError::NotACandidate);
        }
        self.ensure_open()?;
        match self.assignee {
            Some(assignee) if assignee == user => return Ok(Vec::new()),
            Some(assignee) => return Err(TaskError::AlreadyAssigned { assignee }),
            None => {}
        }
        Ok(vec![TaskEvent::TaskClaimed {
            user_id: user,
            claimed_at: at,
        }])
    }

    fn release(&self, caller: &Caller, at: DateTime<Utc>) -> Result<Vec<TaskEvent>, TaskError> {
        if !caller.acts_as_any(&[Role::Member, Role::Operator]) {
            return Err(WORK);
        }
        self.ensure_open()?;
        let Some(assignee) = self.assignee else {
            return Err(TaskError::NotAssigned);
        };
        if caller.person() != Some(assignee) && !caller.acts_as(Role::Operator) {
            return Err(TaskError::NotAssignee);
        }
        Ok(vec![TaskEvent::TaskReleased {
            user_id: assignee,
            released_by: caller.actor.clone(),
            released_at: at,
        }])
    }

    fn assign(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        user_id: Uuid,
    ) -> Result<Vec<TaskEvent>, TaskError> {
        if !caller.acts_as(Role::Operator) {
            return Err(TaskError::MissingRole {
                action: "assign tasks",
                roles: "operators and admins",
            });
        }
        self.ensure_open()?;
        if self.assignee == Some(user_id) {
            return Ok(Vec::new());
        }
        Ok(vec![TaskEvent::TaskAssigned {
            user_id,
            previous_assignee: self.assignee,
            assigned_by: caller.actor.clone(),
            assigned_at: at,
        }])
    }

    fn delegate(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        user_id: Uuid,
    ) -> Result<Vec<TaskEvent>, TaskError> {
        if !caller.acts_as(Role::Member) {
            return Err(WORK);
        }
        self.ensure_open()?;
        let Some(assignee) = self.assignee else {
            return Err(TaskError::NotAssigned);
        };
        if caller.person() != Some(assignee) && !caller.is_privileged() {
            return Err(TaskError::NotAssignee);
        }
        if user_id == assignee {
            return Err(TaskError::Invalid {
                issues: vec![Issue::field(
                    "user_id",
                    IssueCode::InvalidValue,
                    "the task is already assigned to this user",
                )],
            });
        }
        Ok(vec![TaskEvent::TaskDelegated {
            from_user_id: assignee,
            to_user_id: user_id,
            delegated_by: caller.actor.clone(),
            delegated_at: at,
        }])
    }

    fn complete(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        output: Map<String, Value>,
    ) -> Result<Vec<TaskEvent>, TaskError> {
        if !caller.acts_as(Role::Member) {
            return Err(WORK);
        }
        self.ensure_open()?;
        if !caller.is_privileged() {
            match self.assignee {
                None => return Err(TaskError::NotAssigned),
                Some(assignee) if caller.person() != Some(assignee) => {
                    return Err(TaskError::NotAssignee);
                }
                Some(_) => {}
            }
        }
        invalid(check_output(&self.form, &output))?;
        Ok(vec![TaskEvent::TaskCompleted {
            workflow: self.workflow.clone(),
            output,
            completed_by: caller.actor.clone(),
            completed_at: at,
        }])
    }

    fn comment(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        text: String,
    ) -> Result<Vec<TaskEvent>, TaskError> {
        self.ensure_open()?;
        self.ensure_involved(caller)?;
        let mut issues = Vec::new();
        text::check_comment(&text, &mut issues);
        invalid(issues)?;
        Ok(vec![TaskEvent::TaskCommented {
            author: caller.actor.clone(),
            text,
            commented_at: at,
        }])
    }

    /// Operators, and members who are its assignee or a candidate.
    fn ensure_involved(&self, caller: &Caller) -> Result<(), TaskError> {
        let involved = caller.acts_as(Role::Operator)
            || (caller.acts_as(Role::Member)
                && (caller.person().is_some_and(|u| self.assignee == Some(u))
                    || self.is_candidate(caller)));
        if involved {
            Ok(())
        } else {
            Err(TaskError::NotInvolved)
        }
    }

    fn document(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        command: DocumentCommand,
    ) -> Result<Vec<TaskEvent>, TaskError> {
        self.ensure_open()?;
        match command {
            DocumentCommand::Attach(document) => {
                self.ensure_involved(caller)?;
                self.documents.check_attach(&document)?;
                Ok(vec![TaskEvent::TaskDocumentAttached {
                    document,
                    workflow_instance_id: self.workflow.as_ref().map(|w| w.instance_id),
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
                Ok(vec![TaskEvent::TaskDocumentRemoved {
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
        caller: &Caller,
        at: DateTime<Utc>,
        reason: String,
    ) -> Result<Vec<TaskEvent>, TaskError> {
        match self.status {
            TaskStatus::Cancelled => return Ok(Vec::new()),
            // A task completed just before its instance was cancelled: nothing to undo.
            TaskStatus::Completed if caller.is_service() => return Ok(Vec::new()),
            _ => self.ensure_open()?,
        }
        if let Some(workflow) = &self.workflow
            && !caller.is_service()
        {
            return Err(TaskError::WorkflowManaged {
                instance_id: workflow.instance_id,
            });
        }
        if !caller.acts_as(Role::Operator) {
            return Err(TaskError::MissingRole {
                action: "cancel tasks",
                roles: "operators and admins",
            });
        }
        let mut issues = Vec::new();
        text::check_length(&reason, "reason", text::MAX_REASON, &mut issues);
        invalid(issues)?;
        Ok(vec![TaskEvent::TaskCancelled {
            reason,
            cancelled_by: caller.actor.clone(),
            cancelled_at: at,
        }])
    }

    fn mark_overdue(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
    ) -> Result<Vec<TaskEvent>, TaskError> {
        if !caller.is_privileged() {
            return Err(TaskError::MissingRole {
                action: "mark tasks overdue",
                roles: "the timer service and admins",
            });
        }
        // The timer may fire after the task was finished, or twice.
        if self.status != TaskStatus::Open || self.overdue {
            return Ok(Vec::new());
        }
        let Some(due_at) = self.due_at else {
            return Err(TaskError::NoDueTime);
        };
        if at < due_at {
            return Err(TaskError::NotDue { due_at });
        }
        Ok(vec![TaskEvent::TaskOverdue {
            due_at,
            escalation: self.escalation.clone(),
            marked_at: at,
        }])
    }
}

fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

impl Aggregate for Task {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = Command<TaskCommand>;
    type Event = TaskEvent;
    type Error = TaskError;
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
        match event {
            TaskEvent::TaskOpened {
                task_id,
                tenant_id,
                workflow,
                name,
                description,
                assignee,
                candidate_users,
                candidate_groups,
                form,
                due_at,
                escalation,
                ..
            } => {
                *self = Task {
                    id: Some(task_id),
                    tenant_id,
                    workflow,
                    name,
                    description,
                    status: TaskStatus::Open,
                    assignee,
                    candidate_users,
                    candidate_groups,
                    form,
                    due_at,
                    escalation,
                    overdue: false,
                    output: None,
                    documents: Documents::default(),
                };
            }
            TaskEvent::TaskClaimed { user_id, .. }
            | TaskEvent::TaskAssigned { user_id, .. }
            | TaskEvent::TaskDelegated {
                to_user_id: user_id,
                ..
            } => self.assignee = Some(user_id),
            TaskEvent::TaskReleased { .. } => self.assignee = None,
            TaskEvent::TaskCompleted { output, .. } => {
                self.status = TaskStatus::Completed;
                self.output = Some(output);
            }
            TaskEvent::TaskCancelled { .. } => self.status = TaskStatus::Cancelled,
            TaskEvent::TaskCommented { .. } => {}
            TaskEvent::TaskDocumentAttached {
                document,
                attached_by,
                ..
            } => self.documents.attached(&document, &attached_by),
            TaskEvent::TaskDocumentRemoved { document_id, .. } => {
                self.documents.removed(document_id);
            }
            TaskEvent::TaskOverdue { escalation, .. } => {
                self.overdue = true;
                if let Some(escalation) = escalation {
                    for user in escalation.candidate_users {
                        if !self.candidate_users.contains(&user) {
                            self.candidate_users.push(user);
                        }
                    }
                    for group in escalation.candidate_groups {
                        if !self.candidate_groups.contains(&group) {
                            self.candidate_groups.push(group);
                        }
                    }
                }
            }
        }
    }
}
