//! Approvals and the progress of their policy (`approvals`): approvers, who holds each vote,
//! decisions in order, and who may decide now (`awaiting`, carried by the events). Also the
//! approvals' comments (`approval_comments`), their text as stored: sealed for its author,
//! opened only as it is served.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use event_schemas::approval::{AGGREGATE_TYPE, ApprovalEvent};
use event_schemas::{
    AnyEvent, ApprovalCloseReason, ApprovalDecision, ApprovalOutcome, RecordedEvent,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::comments::{self, Comment, Of};
use crate::names::APPROVALS;
use crate::projector::{
    EventFilter, ProjectionError, Projector, continued_ids, decode, meta, uuid_id,
};
use crate::rows::{self, Table};

const TABLE: Table = Table {
    name: "approvals",
    columns: &[
        ("id", "uuid"),
        ("tenant_id", "text"),
        ("workflow_instance_id", "uuid"),
        ("definition_key", "text"),
        ("step_id", "text"),
        ("activation", "integer"),
        ("name", "text"),
        ("description", "text"),
        ("status", "text"),
        ("policy", "jsonb"),
        ("approvers", "uuid[]"),
        ("votes", "jsonb"),
        ("decisions", "jsonb"),
        ("awaiting", "uuid[]"),
        ("participants", "uuid[]"),
        ("outcome", "text"),
        ("close_reason", "text"),
        ("approvals_count", "integer"),
        ("rejections_count", "integer"),
        ("due_at", "timestamptz"),
        ("overdue", "boolean"),
        ("overdue_at", "timestamptz"),
        ("opened_at", "timestamptz"),
        ("opened_by", "text"),
        ("closed_at", "timestamptz"),
        ("cancel_reason", "text"),
        ("version", "bigint"),
        ("updated_at", "timestamptz"),
    ],
    key: "id",
};

static UPSERT: LazyLock<String> = LazyLock::new(|| TABLE.upsert_sql());

/// One approver's vote: who holds it (after delegation) and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: Uuid,
    pub holder: Uuid,
    pub decision: Option<ApprovalDecision>,
}

/// A decision, in the order decisions were cast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The approver whose vote it is.
    pub approver: Uuid,
    /// Who cast it (the holder of the vote).
    pub decided_by: Uuid,
    pub decision: ApprovalDecision,
    pub decided_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    id: Uuid,
    tenant_id: String,
    workflow_instance_id: Option<Uuid>,
    definition_key: Option<String>,
    step_id: Option<String>,
    activation: Option<i64>,
    name: String,
    description: Option<String>,
    status: String,
    policy: Value,
    approvers: Vec<Uuid>,
    votes: Vec<Vote>,
    decisions: Vec<Decision>,
    awaiting: Vec<Uuid>,
    participants: Vec<Uuid>,
    outcome: Option<ApprovalOutcome>,
    close_reason: Option<ApprovalCloseReason>,
    approvals_count: i64,
    rejections_count: i64,
    due_at: Option<DateTime<Utc>>,
    overdue: bool,
    overdue_at: Option<DateTime<Utc>>,
    opened_at: DateTime<Utc>,
    opened_by: String,
    closed_at: Option<DateTime<Utc>>,
    cancel_reason: Option<String>,
    version: i64,
    updated_at: DateTime<Utc>,
}

/// Projects `approval` events.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApprovalsProjector;

impl Projector for ApprovalsProjector {
    fn name(&self) -> &'static str {
        APPROVALS
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregates(&[AGGREGATE_TYPE])
    }

    fn tables(&self) -> &'static [&'static str] {
        &["approvals", "approval_comments"]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(tx, events))
    }
}

#[tracing::instrument(name = "project_approvals", skip_all, fields(events = events.len()))]
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
        let AnyEvent::Approval(decoded) = decode(event)? else {
            return Err(ProjectionError::inconsistent(
                event,
                "not an approval event",
            ));
        };
        if let ApprovalEvent::ApprovalOpened {
            workflow,
            name,
            description,
            policy,
            approvers,
            due_at,
            awaiting,
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
                    step_id: workflow.as_ref().map(|w| w.step_id.clone()),
                    activation: workflow.as_ref().map(|w| w.activation.into()),
                    name,
                    description,
                    status: "pending".into(),
                    policy: serde_json::to_value(policy).unwrap_or(Value::Null),
                    votes: approvers
                        .iter()
                        .map(|a| Vote {
                            approver: *a,
                            holder: *a,
                            decision: None,
                        })
                        .collect(),
                    participants: approvers.clone(),
                    approvers,
                    decisions: Vec::new(),
                    awaiting,
                    outcome: None,
                    close_reason: None,
                    approvals_count: 0,
                    rejections_count: 0,
                    due_at,
                    overdue: false,
                    overdue_at: None,
                    opened_at,
                    opened_by: opened_by.to_string(),
                    closed_at: None,
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
                "the approval was never opened",
            ));
        };
        row.version = event.sequence;
        row.updated_at = meta.occurred_at;
        match decoded {
            ApprovalEvent::ApprovalCommented {
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
    comments::insert(tx, Of::Approvals, &comments).await?;
    Ok(())
}

fn participate(row: &mut Row, user: Uuid) {
    if !row.participants.contains(&user) {
        row.participants.push(user);
    }
}

fn evolve(row: &mut Row, event: ApprovalEvent) {
    match event {
        // comments are rows of their own (`apply`)
        ApprovalEvent::ApprovalOpened { .. } | ApprovalEvent::ApprovalCommented { .. } => {}
        ApprovalEvent::ApprovalDecided {
            approver,
            decided_by,
            decision,
            awaiting,
            decided_at,
        } => {
            if let Some(vote) = row.votes.iter_mut().find(|v| v.approver == approver) {
                vote.decision = Some(decision);
            }
            row.decisions.push(Decision {
                approver,
                decided_by,
                decision,
                decided_at,
            });
            match decision {
                ApprovalDecision::Approve => row.approvals_count += 1,
                ApprovalDecision::Reject => row.rejections_count += 1,
            }
            row.awaiting = awaiting;
            participate(row, decided_by);
        }
        ApprovalEvent::ApprovalDelegated {
            approver,
            to_user_id,
            awaiting,
            ..
        } => {
            if let Some(vote) = row.votes.iter_mut().find(|v| v.approver == approver) {
                vote.holder = to_user_id;
            }
            row.awaiting = awaiting;
            participate(row, to_user_id);
        }
        ApprovalEvent::ApprovalClosed {
            outcome,
            reason,
            approvals,
            rejections,
            closed_at,
            ..
        } => {
            row.status = match outcome {
                ApprovalOutcome::Approved => "approved",
                ApprovalOutcome::Rejected => "rejected",
            }
            .into();
            row.outcome = Some(outcome);
            row.close_reason = Some(reason);
            row.approvals_count = approvals.into();
            row.rejections_count = rejections.into();
            row.awaiting.clear();
            row.closed_at = Some(closed_at);
        }
        ApprovalEvent::ApprovalCancelled {
            reason,
            cancelled_at,
            ..
        } => {
            row.status = "cancelled".into();
            row.cancel_reason = Some(reason);
            row.awaiting.clear();
            row.closed_at = Some(cancelled_at);
        }
        ApprovalEvent::ApprovalOverdue { marked_at, .. } => {
            row.overdue = true;
            row.overdue_at = Some(marked_at);
        }
    }
}
