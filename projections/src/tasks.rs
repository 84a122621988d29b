//! The task inbox (`tasks`): assignee, candidates, due time, overdue flag, output, status.
//! The task report is computed from it at query time. Also the tasks' comments
//! (`task_comments`), their text as stored: sealed for its author, opened only as it is served.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use event_schemas::task::{AGGREGATE_TYPE, TaskEvent};
use event_schemas::{AnyEvent, RecordedEvent};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::comments::{self, Comment, Of};
use crate::names::TASKS;
use crate::projector::{
    EventFilter, ProjectionError, Projector, continued_ids, decode, meta, uuid_id,
};
use crate::rows::{self, Table};

const TABLE: Table = Table {
    name: "tasks",
    columns: &[
        ("id", "uuid"),
        ("tenant_id", "text"),
        ("workflow_instance_id", "uuid"),
        ("definition_key", "text"),
        ("definition_version", "integer"),
        ("step_id", "text"),
        ("activation", "integer"),
        ("name", "text"),
        ("description", "text"),
        ("status", "text"),
        ("assignee", "uuid"),
        ("candidate_users", "uuid[]"),
        ("candidate_groups", "text[]"),
        ("form", "jsonb"),
        ("due_at", "timestamptz"),
        ("overdue", "boolean"),
        ("overdue_at", "timestamptz"),
        ("output", "jsonb"),
        ("opened_at", "timestamptz"),
        ("opened_by", "text"),
        ("closed_at", "timestamptz"),
        ("completed_by", "text"),
        ("cancel_reason", "text"),
        ("version", "bigint"),
        ("updated_at", "timestamptz"),
    ],
    key: "id",
};

static UPSERT: LazyLock<String> = LazyLock::new(|| TABLE.upsert_sql());

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    id: Uuid,
    tenant_id: String,
    workflow_instance_id: Option<Uuid>,
    definition_key: Option<String>,
    definition_version: Option<i64>,
    step_id: Option<String>,
    activation: Option<i64>,
    name: String,
    description: Option<String>,
    status: String,
    assignee: Option<Uuid>,
    candidate_users: Vec<Uuid>,
    candidate_groups: Vec<String>,
    form: Value,
    due_at: Option<DateTime<Utc>>,
    overdue: bool,
    overdue_at: Option<DateTime<Utc>>,
    output: Option<Value>,
    opened_at: DateTime<Utc>,
    opened_by: String,
    closed_at: Option<DateTime<Utc>>,
    completed_by: Option<String>,
    cancel_reason: Option<String>,
    version: i64,
    updated_at: DateTime<Utc>,
}

/// Projects `task` events into the inbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct TasksProjector;

impl Projector for TasksProjector {
    fn name(&self) -> &'static str {
        TASKS
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregates(&[AGGREGATE_TYPE])
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tasks", "task_comments"]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(tx, events))
    }
}

#[tracing::instrument(name = "project_tasks", skip_all, fields(events = events.len()))]
async fn apply(tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
    let load = continued_ids(events)?;
    let mut state: HashMap<Uuid, Row> = rows::load::<Row>(tx, TABLE.name, &load)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    let mut comments = Vec::new();
    for event in events {
        let id = uuid_id(event)?;
        let meta = meta(event)?;
        let AnyEvent::Task(decoded) = decode(event)? else {
            return Err(ProjectionError::inconsistent(event, "not a task event"));
        };
        if let TaskEvent::TaskOpened {
            workflow,
            name,
            description,
            assignee,
            candidate_users,
            candidate_groups,
            form,
            due_at,
            opened_by,
            opened_at,
            ..
        } = decoded
        {
            state.insert(
                id,
                Row {
                    id,
                    tenant_id: meta.tenant_id.to_owned(),
                    workflow_instance_id: workflow.as_ref().map(|w| w.instance_id),
                    definition_key: workflow.as_ref().map(|w| w.definition_key.clone()),
                    definition_version: workflow.as_ref().map(|w| w.definition_version.into()),
                    step_id: workflow.as_ref().map(|w| w.step_id.clone()),
                    activation: workflow.as_ref().map(|w| w.activation.into()),
                    name,
                    description,
                    status: "open".into(),
                    assignee,
                    candidate_users,
                    candidate_groups,
                    form: serde_json::to_value(form).unwrap_or(Value::Array(Vec::new())),
                    due_at,
                    overdue: false,
                    overdue_at: None,
                    output: None,
                    opened_at,
                    opened_by: opened_by.to_string(),
                    closed_at: None,
                    completed_by: None,
                    cancel_reason: None,
                    version: event.sequence,
                    updated_at: meta.occurred_at,
                },
            );
            continue;
        }
        let Some(row) = state.get_mut(&id) else {
            return Err(ProjectionError::inconsistent(
                event,
                "the task was never opened",
            ));
        };
        row.version = event.sequence;
        row.updated_at = meta.occurred_at;
        match decoded {
            TaskEvent::TaskCommented {
                author,
                text,
                commented_at,
            } => comments.push(Comment {
                on: id,
                sequence: event.sequence,
                tenant_id: meta.tenant_id,
                author: author.to_string(),
                text,
                commented_at,
            }),
            other => evolve(row, other),
        }
    }
    let rows: Vec<&Row> = state.values().collect();
    rows::write(tx, &UPSERT, &rows).await?;
    comments::insert(tx, Of::Tasks, &comments).await?;
    Ok(())
}

fn evolve(row: &mut Row, event: TaskEvent) {
    match event {
        // comments are rows of their own (`apply`), documents have a read model of their own
        TaskEvent::TaskOpened { .. }
        | TaskEvent::TaskCommented { .. }
        | TaskEvent::TaskDocumentAttached { .. }
        | TaskEvent::TaskDocumentRemoved { .. } => {}
        TaskEvent::TaskClaimed { user_id, .. }
        | TaskEvent::TaskAssigned { user_id, .. }
        | TaskEvent::TaskDelegated {
            to_user_id: user_id,
            ..
        } => row.assignee = Some(user_id),
        TaskEvent::TaskReleased { .. } => row.assignee = None,
        TaskEvent::TaskCompleted {
            output,
            completed_by,
            completed_at,
            ..
        } => {
            row.status = "completed".into();
            row.output = Some(Value::Object(output));
            row.completed_by = Some(completed_by.to_string());
            row.closed_at = Some(completed_at);
        }
        TaskEvent::TaskCancelled {
            reason,
            cancelled_at,
            ..
        } => {
            row.status = "cancelled".into();
            row.cancel_reason = Some(reason);
            row.closed_at = Some(cancelled_at);
        }
        TaskEvent::TaskOverdue {
            escalation,
            marked_at,
            ..
        } => {
            row.overdue = true;
            row.overdue_at = Some(marked_at);
            // the escalation's users and groups became candidates too
            if let Some(escalation) = escalation {
                for user in escalation.candidate_users {
                    if !row.candidate_users.contains(&user) {
                        row.candidate_users.push(user);
                    }
                }
                for group in escalation.candidate_groups {
                    if !row.candidate_groups.contains(&group) {
                        row.candidate_groups.push(group);
                    }
                }
            }
        }
    }
}
