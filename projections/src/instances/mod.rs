//! Workflow instances with their variables, the steps they wait on and their timeline
//! (`workflow_instances`, `workflow_instance_timeline`).

mod timeline;

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use event_schemas::workflow_instance::{AGGREGATE_TYPE, WorkflowInstanceEvent};
use event_schemas::{AnyEvent, RecordedEvent};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::names::INSTANCES;
use crate::projector::{
    EventFilter, ProjectionError, Projector, continued_ids, decode, meta, uuid_id,
};
use crate::rows::{self, Table};
use timeline::TimelineRow;

const INSTANCES_TABLE: Table = Table {
    name: "workflow_instances",
    columns: &[
        ("id", "uuid"),
        ("tenant_id", "text"),
        ("definition_key", "text"),
        ("definition_version", "integer"),
        ("business_key", "text"),
        ("status", "text"),
        ("outcome", "text"),
        ("variables", "jsonb"),
        ("open_steps", "jsonb"),
        ("started_at", "timestamptz"),
        ("started_by", "text"),
        ("ended_at", "timestamptz"),
        ("end_reason", "text"),
        ("failed_step", "text"),
        ("has_incident", "boolean"),
        ("version", "bigint"),
        ("updated_at", "timestamptz"),
    ],
    key: "id",
};

static UPSERT: LazyLock<String> = LazyLock::new(|| INSTANCES_TABLE.upsert_sql());

/// A step an instance waits on (an element of `open_steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenStep {
    /// `task`, `approval`, `timer`, `join` (a join waiting for parallel branches), or
    /// `incident` (a decision that could not be evaluated, waiting for an operator's retry).
    pub kind: String,
    pub step_id: String,
    pub activation: u32,
    /// The task, approval or timer id.
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub name: Option<String>,
    /// When the instance entered the step.
    pub since: DateTime<Utc>,
    /// A task's or approval's due time; a timer's firing time.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// For a join: the parallel step whose branches it waits for, and how many arrived.
    #[serde(default)]
    pub parallel_step_id: Option<String>,
    #[serde(default)]
    pub arrived: Option<u32>,
    #[serde(default)]
    pub expected: Option<u32>,
    /// For an incident: why the decision could not be evaluated.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    id: Uuid,
    tenant_id: String,
    definition_key: String,
    definition_version: i64,
    business_key: Option<String>,
    status: String,
    outcome: Option<String>,
    variables: Value,
    open_steps: Vec<OpenStep>,
    started_at: DateTime<Utc>,
    started_by: String,
    ended_at: Option<DateTime<Utc>>,
    end_reason: Option<String>,
    failed_step: Option<String>,
    /// Whether an incident is among the open steps (its own column: see migration 0019).
    has_incident: bool,
    version: i64,
    updated_at: DateTime<Utc>,
}

/// Projects `workflow_instance` events into instances and their timelines.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstancesProjector;

impl Projector for InstancesProjector {
    fn name(&self) -> &'static str {
        INSTANCES
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregates(&[AGGREGATE_TYPE])
    }

    fn tables(&self) -> &'static [&'static str] {
        &["workflow_instances", "workflow_instance_timeline"]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(tx, events))
    }
}

#[tracing::instrument(name = "project_instances", skip_all, fields(events = events.len()))]
async fn apply(tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
    let load = continued_ids(events)?;
    let mut state: HashMap<Uuid, Row> = rows::load::<Row>(tx, INSTANCES_TABLE.name, &load)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    let mut timeline = Vec::with_capacity(events.len());
    for event in events {
        let id = uuid_id(event)?;
        let meta = meta(event)?;
        let AnyEvent::WorkflowInstance(decoded) = decode(event)? else {
            return Err(ProjectionError::inconsistent(
                event,
                "not an instance event",
            ));
        };
        timeline.push(TimelineRow::of(id, event, &meta));
        if let WorkflowInstanceEvent::InstanceStarted {
            definition_key,
            definition_version,
            business_key,
            variables,
            started_by,
            started_at,
            ..
        } = decoded
        {
            state.insert(
                id,
                Row {
                    id,
                    tenant_id: meta.tenant_id.to_owned(),
                    definition_key,
                    definition_version: definition_version.into(),
                    business_key,
                    status: "running".into(),
                    outcome: None,
                    variables: Value::Object(variables),
                    open_steps: Vec::new(),
                    started_at,
                    started_by: started_by.to_string(),
                    ended_at: None,
                    end_reason: None,
                    failed_step: None,
                    has_incident: false,
                    version: event.sequence,
                    updated_at: meta.occurred_at,
                },
            );
            continue;
        }
        let Some(row) = state.get_mut(&id) else {
            return Err(ProjectionError::inconsistent(
                event,
                "the instance was never started",
            ));
        };
        row.version = event.sequence;
        row.updated_at = meta.occurred_at;
        evolve(row, decoded);
        row.has_incident = row.open_steps.iter().any(|s| s.kind == "incident");
    }
    let rows: Vec<&Row> = state.values().collect();
    rows::write(tx, &UPSERT, &rows).await?;
    timeline::insert(tx, &timeline).await?;
    Ok(())
}

fn evolve(row: &mut Row, event: WorkflowInstanceEvent) {
    use WorkflowInstanceEvent as E;
    match event {
        // documents have a read model of their own; the timeline shows them
        E::InstanceStarted { .. }
        | E::DecisionTaken { .. }
        | E::ParallelStarted { .. }
        | E::InstanceDocumentAttached { .. }
        | E::InstanceDocumentRemoved { .. } => {}
        E::BranchJoined {
            join_step_id,
            parallel,
            arrived,
            expected,
            joined_at,
        } => {
            let existing = row.open_steps.iter().position(|s| {
                s.kind == "join"
                    && s.step_id == join_step_id
                    && s.parallel_step_id.as_deref() == Some(parallel.step_id.as_str())
                    && s.activation == parallel.activation
            });
            if arrived >= expected {
                if let Some(i) = existing {
                    row.open_steps.remove(i);
                }
            } else if let Some(i) = existing {
                row.open_steps[i].arrived = Some(arrived);
            } else {
                row.open_steps.push(OpenStep {
                    kind: "join".into(),
                    step_id: join_step_id,
                    activation: parallel.activation,
                    id: None,
                    name: None,
                    since: joined_at,
                    due_at: None,
                    parallel_step_id: Some(parallel.step_id),
                    arrived: Some(arrived),
                    expected: Some(expected),
                    reason: None,
                });
            }
        }
        E::TaskStepActivated {
            step_id,
            activation,
            task_id,
            name,
            due_at,
            activated_at,
            ..
        } => row.open_steps.push(child(
            "task",
            step_id,
            activation,
            task_id,
            name,
            activated_at,
            due_at,
        )),
        E::ApprovalStepActivated {
            step_id,
            activation,
            approval_id,
            name,
            due_at,
            activated_at,
            ..
        } => row.open_steps.push(child(
            "approval",
            step_id,
            activation,
            approval_id,
            name,
            activated_at,
            due_at,
        )),
        E::TimerStarted {
            step_id,
            activation,
            timer_id,
            fire_at,
            started_at,
            ..
        } => row.open_steps.push(OpenStep {
            kind: "timer".into(),
            step_id,
            activation,
            id: Some(timer_id),
            name: None,
            since: started_at,
            due_at: Some(fire_at),
            parallel_step_id: None,
            arrived: None,
            expected: None,
            reason: None,
        }),
        E::TaskStepCompleted {
            task_id, variables, ..
        } => {
            row.open_steps.retain(|s| s.id != Some(task_id));
            row.variables = Value::Object(variables);
        }
        E::ApprovalStepCompleted { approval_id, .. } => {
            row.open_steps.retain(|s| s.id != Some(approval_id));
        }
        E::TimerFired { timer_id, .. } => row.open_steps.retain(|s| s.id != Some(timer_id)),
        E::IncidentRaised {
            step_id,
            activation,
            reason,
            raised_at,
            ..
        } => row.open_steps.push(OpenStep {
            kind: "incident".into(),
            step_id,
            activation,
            id: None,
            name: None,
            since: raised_at,
            due_at: None,
            parallel_step_id: None,
            arrived: None,
            expected: None,
            reason: Some(reason),
        }),
        E::IncidentRetried {
            step_id, variables, ..
        } => {
            row.open_steps
                .retain(|s| !(s.kind == "incident" && s.step_id == step_id));
            if let Value::Object(current) = &mut row.variables {
                current.extend(variables);
            }
        }
        E::InstanceCompleted {
            outcome,
            completed_at,
            ..
        } => {
            row.status = "completed".into();
            row.outcome = Some(outcome);
            row.ended_at = Some(completed_at);
            row.open_steps.clear();
        }
        E::InstanceCancelled {
            reason,
            cancelled_at,
            ..
        } => {
            row.status = "cancelled".into();
            row.end_reason = Some(reason);
            row.ended_at = Some(cancelled_at);
            row.open_steps.clear();
        }
        E::InstanceFailed {
            reason,
            step_id,
            failed_at,
            ..
        } => {
            row.status = "failed".into();
            row.end_reason = Some(reason);
            row.failed_step = step_id;
            row.ended_at = Some(failed_at);
            row.open_steps.clear();
        }
    }
}

fn child(
    kind: &str,
    step_id: String,
    activation: u32,
    id: Uuid,
    name: String,
    since: DateTime<Utc>,
    due_at: Option<DateTime<Utc>>,
) -> OpenStep {
    OpenStep {
        kind: kind.into(),
        step_id,
        activation,
        id: Some(id),
        name: Some(name),
        since,
        due_at,
        parallel_step_id: None,
        arrived: None,
        expected: None,
        reason: None,
    }
}
