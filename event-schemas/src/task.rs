//! Events of the `task` aggregate (id: a UUID; derived from the workflow step for workflow
//! tasks, chosen by the caller for ad-hoc tasks).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::Actor;
use crate::types::{DocumentFile, Escalation, FormField, WorkflowRef};

/// The aggregate type under which these events are stored.
pub const AGGREGATE_TYPE: &str = "task";

/// Something that happened to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum TaskEvent {
    /// The task exists and is open, assigned to `assignee` or offered to its candidates.
    TaskOpened {
        task_id: Uuid,
        tenant_id: String,
        /// `None` for an ad-hoc task.
        workflow: Option<WorkflowRef>,
        name: String,
        description: Option<String>,
        assignee: Option<Uuid>,
        candidate_users: Vec<Uuid>,
        candidate_groups: Vec<String>,
        form: Vec<FormField>,
        due_at: Option<DateTime<Utc>>,
        escalation: Option<Escalation>,
        opened_by: Actor,
        opened_at: DateTime<Utc>,
    },
    /// A candidate took the unassigned task: `user_id` is now its assignee.
    TaskClaimed {
        user_id: Uuid,
        claimed_at: DateTime<Utc>,
    },
    /// The assignee `user_id` was removed; the task is unassigned again.
    TaskReleased {
        user_id: Uuid,
        released_by: Actor,
        released_at: DateTime<Utc>,
    },
    /// An operator or admin made `user_id` the assignee.
    TaskAssigned {
        user_id: Uuid,
        previous_assignee: Option<Uuid>,
        assigned_by: Actor,
        assigned_at: DateTime<Utc>,
    },
    /// The assignee handed the task to `to_user_id`, now its assignee.
    TaskDelegated {
        from_user_id: Uuid,
        to_user_id: Uuid,
        delegated_by: Actor,
        delegated_at: DateTime<Utc>,
    },
    /// The task was completed with `output` (checked against its form).
    TaskCompleted {
        /// Repeated from `TaskOpened` so the orchestrator can react to this event alone.
        workflow: Option<WorkflowRef>,
        output: Map<String, Value>,
        completed_by: Actor,
        completed_at: DateTime<Utc>,
    },
    /// The task was cancelled (for a workflow task: its instance ended).
    TaskCancelled {
        reason: String,
        cancelled_by: Actor,
        cancelled_at: DateTime<Utc>,
    },
    /// A comment. Free text is personal data, hence an event of its own.
    TaskCommented {
        author: Actor,
        text: String,
        commented_at: DateTime<Utc>,
    },
    /// A file was attached to the task (its content is stored by digest, outside the log).
    TaskDocumentAttached {
        document: DocumentFile,
        /// The task's workflow instance, repeated from `TaskOpened` so the instance's
        /// documents can be listed from this event alone; `None` for an ad-hoc task.
        workflow_instance_id: Option<Uuid>,
        attached_by: Actor,
        attached_at: DateTime<Utc>,
    },
    /// An attached file was taken off the task; its events (and content) stay for the audit.
    TaskDocumentRemoved {
        document_id: Uuid,
        reason: Option<String>,
        removed_by: Actor,
        removed_at: DateTime<Utc>,
    },
    /// The task passed its due time while open (an SLA breach); `escalation`, when present,
    /// was applied: its users and groups became candidates too.
    TaskOverdue {
        due_at: DateTime<Utc>,
        escalation: Option<Escalation>,
        marked_at: DateTime<Utc>,
    },
}

event_names!(TaskEvent {
    TaskOpened => "1",
    TaskClaimed => "1",
    TaskReleased => "1",
    TaskAssigned => "1",
    TaskDelegated => "1",
    TaskCompleted => "1",
    TaskCancelled => "1",
    TaskCommented => "1",
    TaskOverdue => "1",
    TaskDocumentAttached => "1",
    TaskDocumentRemoved => "1",
});
