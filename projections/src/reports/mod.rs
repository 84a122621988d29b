//! The workflow report: per tenant, definition and UTC day, instances started, completed (by
//! outcome), cancelled and failed, SLA breaches, and each instance's cycle time so that
//! percentiles are computed exactly at query time (`workflow_report_*`).
//!
//! Days are the UTC dates of the events' own times: an instance counts as started on the day
//! it started and as completed on the day it ended. An SLA breach is a task or approval of one
//! of the definition's instances becoming overdue, counted on the day it was marked.

mod tables;

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use event_schemas::approval::{self, ApprovalEvent};
use event_schemas::task::{self, TaskEvent};
use event_schemas::workflow_instance::{self, WorkflowInstanceEvent};
use event_schemas::{AnyEvent, RecordedEvent};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::names::WORKFLOW_REPORTS;
use crate::projector::{EventFilter, ProjectionError, Projector, decode, meta, uuid_id};
use crate::rows;
use tables::{
    ADD_DAYS, ADD_OUTCOMES, ChildRow, DayRow, INSERT_CHILDREN, InstanceRow, OutcomeRow,
    UPSERT_INSTANCES,
};

/// The events the report needs.
const INSTANCE_EVENTS: &[&str] = &[
    "InstanceStarted",
    "InstanceCompleted",
    "InstanceCancelled",
    "InstanceFailed",
    "TaskStepActivated",
    "ApprovalStepActivated",
];

/// Projects the workflow report.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkflowReportsProjector;

impl Projector for WorkflowReportsProjector {
    fn name(&self) -> &'static str {
        WORKFLOW_REPORTS
    }

    fn filter(&self) -> EventFilter {
        let mut events = INSTANCE_EVENTS.to_vec();
        events.extend(["TaskOverdue", "ApprovalOverdue"]);
        EventFilter::events(
            &[
                workflow_instance::AGGREGATE_TYPE,
                task::AGGREGATE_TYPE,
                approval::AGGREGATE_TYPE,
            ],
            &events,
        )
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "workflow_report_days",
            "workflow_report_outcomes",
            "workflow_report_instances",
            "workflow_report_children",
        ]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(tx, events))
    }
}

/// A batch's changes, gathered in memory and written with one statement per table.
#[derive(Default)]
struct Changes {
    days: HashMap<(String, String, NaiveDate), DayRow>,
    outcomes: HashMap<(String, String, NaiveDate, String), i64>,
    instances: HashMap<Uuid, InstanceRow>,
    children: Vec<ChildRow>,
}

impl Changes {
    fn day(&mut self, tenant: &str, key: &str, at: DateTime<Utc>) -> &mut DayRow {
        let day = at.date_naive();
        self.days
            .entry((tenant.to_owned(), key.to_owned(), day))
            .or_insert_with(|| DayRow {
                tenant_id: tenant.to_owned(),
                definition_key: key.to_owned(),
                day,
                ..DayRow::default()
            })
    }
}

#[tracing::instrument(name = "project_workflow_reports", skip_all, fields(events = events.len()))]
async fn apply(tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
    let mut decoded = Vec::with_capacity(events.len());
    for &event in events {
        decoded.push((event, meta(event)?, decode(event)?));
    }
    let mut changes = Changes::default();
    load(tx, &decoded, &mut changes).await?;
    let known_children: HashMap<Uuid, ChildRow> = {
        let overdue: Vec<Uuid> = decoded
            .iter()
            .filter(|(_, _, e)| {
                matches!(
                    e,
                    AnyEvent::Task(TaskEvent::TaskOverdue { .. })
                        | AnyEvent::Approval(ApprovalEvent::ApprovalOverdue { .. })
                )
            })
            .map(|(event, _, _)| uuid_id(event))
            .collect::<Result<_, _>>()?;
        sqlx::query_as::<_, (Uuid, String, String)>(
            "select id, tenant_id, definition_key from workflow_report_children \
             where id = any($1)",
        )
        .bind(&overdue)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(id, tenant_id, definition_key)| {
            (
                id,
                ChildRow {
                    id,
                    tenant_id,
                    definition_key,
                },
            )
        })
        .collect()
    };
    for (event, meta, decoded) in decoded {
        use WorkflowInstanceEvent as I;
        match decoded {
            AnyEvent::WorkflowInstance(I::InstanceStarted {
                instance_id,
                definition_key,
                started_at,
                ..
            }) => {
                changes
                    .day(meta.tenant_id, &definition_key, started_at)
                    .started += 1;
                changes.instances.insert(
                    instance_id,
                    InstanceRow {
                        instance_id,
                        tenant_id: meta.tenant_id.to_owned(),
                        definition_key,
                        started_at,
                        ended_at: None,
                        status: "running".into(),
                        outcome: None,
                        cycle_seconds: None,
                    },
                );
            }
            AnyEvent::WorkflowInstance(
                I::InstanceCompleted {
                    completed_at: at, ..
                }
                | I::InstanceCancelled {
                    cancelled_at: at, ..
                }
                | I::InstanceFailed { failed_at: at, .. },
            ) => {
                let id = uuid_id(event)?;
                let (status, outcome) = match &decoded {
                    AnyEvent::WorkflowInstance(I::InstanceCompleted { outcome, .. }) => {
                        ("completed", Some(outcome.clone()))
                    }
                    AnyEvent::WorkflowInstance(I::InstanceCancelled { .. }) => ("cancelled", None),
                    _ => ("failed", None),
                };
                end(&mut changes, event, id, status, outcome, at)?;
            }
            AnyEvent::WorkflowInstance(I::TaskStepActivated {
                task_id: id,
                definition_key,
                ..
            })
            | AnyEvent::WorkflowInstance(I::ApprovalStepActivated {
                approval_id: id,
                definition_key,
                ..
            }) => changes.children.push(ChildRow {
                id,
                tenant_id: meta.tenant_id.to_owned(),
                definition_key,
            }),
            AnyEvent::Task(TaskEvent::TaskOverdue { marked_at, .. })
            | AnyEvent::Approval(ApprovalEvent::ApprovalOverdue { marked_at, .. }) => {
                let id = uuid_id(event)?;
                let child = changes
                    .children
                    .iter()
                    .find(|c| c.id == id)
                    .or_else(|| known_children.get(&id))
                    .map(|c| (c.tenant_id.clone(), c.definition_key.clone()));
                // an ad-hoc task or approval belongs to no workflow: not in this report
                if let Some((tenant, key)) = child {
                    changes.day(&tenant, &key, marked_at).sla_breaches += 1;
                }
            }
            other => {
                return Err(ProjectionError::inconsistent(
                    event,
                    format!("the workflow report does not read {}", other.event_type()),
                ));
            }
        }
    }
    let days: Vec<&DayRow> = changes.days.values().collect();
    let outcomes: Vec<OutcomeRow> = changes
        .outcomes
        .into_iter()
        .map(
            |((tenant_id, definition_key, day, outcome), completed)| OutcomeRow {
                tenant_id,
                definition_key,
                day,
                outcome,
                completed,
            },
        )
        .collect();
    let instances: Vec<&InstanceRow> = changes.instances.values().collect();
    rows::write(tx, &ADD_DAYS, &days).await?;
    rows::write(tx, &ADD_OUTCOMES, &outcomes).await?;
    rows::write(tx, &UPSERT_INSTANCES, &instances).await?;
    rows::write(tx, &INSERT_CHILDREN, &changes.children).await?;
    Ok(())
}

/// Loads the report rows of instances that end in this batch but started before it.
async fn load(
    tx: &mut PgConnection,
    decoded: &[(&RecordedEvent, crate::projector::Meta<'_>, AnyEvent)],
    changes: &mut Changes,
) -> Result<(), ProjectionError> {
    let started: Vec<&str> = decoded
        .iter()
        .filter(|(_, _, e)| {
            matches!(
                e,
                AnyEvent::WorkflowInstance(WorkflowInstanceEvent::InstanceStarted { .. })
            )
        })
        .map(|(event, _, _)| event.aggregate_id.as_str())
        .collect();
    let mut ended = Vec::new();
    for (event, _, decoded) in decoded {
        if matches!(
            decoded,
            AnyEvent::WorkflowInstance(
                WorkflowInstanceEvent::InstanceCompleted { .. }
                    | WorkflowInstanceEvent::InstanceCancelled { .. }
                    | WorkflowInstanceEvent::InstanceFailed { .. }
            )
        ) && !started.contains(&event.aggregate_id.as_str())
        {
            ended.push(uuid_id(event)?);
        }
    }
    if ended.is_empty() {
        return Ok(());
    }
    let rows: Vec<sqlx::types::Json<InstanceRow>> = sqlx::query_scalar(
        "select to_jsonb(t) from workflow_report_instances t where instance_id = any($1)",
    )
    .bind(&ended)
    .fetch_all(&mut *tx)
    .await?;
    for sqlx::types::Json(row) in rows {
        changes.instances.insert(row.instance_id, row);
    }
    Ok(())
}

fn end(
    changes: &mut Changes,
    event: &RecordedEvent,
    id: Uuid,
    status: &str,
    outcome: Option<String>,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let Some(row) = changes.instances.get_mut(&id) else {
        return Err(ProjectionError::inconsistent(
            event,
            "the instance was never started",
        ));
    };
    row.status = status.to_owned();
    row.ended_at = Some(at);
    row.outcome = outcome.clone();
    if status == "completed" {
        let cycle = (at - row.started_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        row.cycle_seconds = Some(cycle.max(0.0));
    }
    let (tenant, key) = (row.tenant_id.clone(), row.definition_key.clone());
    let day = changes.day(&tenant, &key, at);
    match status {
        "completed" => day.completed += 1,
        "cancelled" => day.cancelled += 1,
        _ => day.failed += 1,
    }
    if let Some(outcome) = outcome {
        *changes
            .outcomes
            .entry((tenant, key, at.date_naive(), outcome))
            .or_default() += 1;
    }
    Ok(())
}
