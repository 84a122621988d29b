//! Events of the `approval` aggregate (id: a UUID derived from the workflow step).
//!
//! `awaiting` lists the users who may decide right after the event (for `sequential`, only the
//! approver whose turn it is), so the `approver=me` query needs no policy logic.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Actor;
use crate::types::{
    ApprovalCloseReason, ApprovalDecision, ApprovalOutcome, ApprovalPolicy, WorkflowRef,
};

/// The aggregate type under which these events are stored.
pub const AGGREGATE_TYPE: &str = "approval";

/// Something that happened to an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum ApprovalEvent {
    /// The approval is pending with the resolved `approvers` (user ids, in policy order).
    ApprovalOpened {
        approval_id: Uuid,
        tenant_id: String,
        /// `None` for an ad-hoc approval.
        workflow: Option<WorkflowRef>,
        name: String,
        description: Option<String>,
        policy: ApprovalPolicy,
        approvers: Vec<Uuid>,
        due_at: Option<DateTime<Utc>>,
        awaiting: Vec<Uuid>,
        opened_by: Actor,
        opened_at: DateTime<Utc>,
    },
    /// `decided_by` voted in the place of `approver` (the same user unless the vote was
    /// delegated).
    ApprovalDecided {
        approver: Uuid,
        decided_by: Uuid,
        decision: ApprovalDecision,
        awaiting: Vec<Uuid>,
        decided_at: DateTime<Utc>,
    },
    /// A comment given with a decision. Free text is personal data, hence an event of its own.
    ApprovalCommented {
        author: Actor,
        text: String,
        commented_at: DateTime<Utc>,
    },
    /// The vote of `approver`, held by `from_user_id`, now belongs to `to_user_id`.
    ApprovalDelegated {
        approver: Uuid,
        from_user_id: Uuid,
        to_user_id: Uuid,
        delegated_by: Actor,
        awaiting: Vec<Uuid>,
        delegated_at: DateTime<Utc>,
    },
    /// The approval is settled: `outcome` routes the workflow.
    ApprovalClosed {
        /// Repeated from `ApprovalOpened` so the orchestrator can react to this event alone.
        workflow: Option<WorkflowRef>,
        outcome: ApprovalOutcome,
        reason: ApprovalCloseReason,
        approvals: u32,
        rejections: u32,
        closed_at: DateTime<Utc>,
    },
    /// The approval was cancelled (for a workflow approval: its instance ended).
    ApprovalCancelled {
        reason: String,
        cancelled_by: Actor,
        cancelled_at: DateTime<Utc>,
    },
    /// The approval passed its due time while pending (an SLA breach).
    ApprovalOverdue {
        due_at: DateTime<Utc>,
        marked_at: DateTime<Utc>,
    },
}

event_names!(ApprovalEvent {
    ApprovalOpened => "1",
    ApprovalDecided => "1",
    ApprovalCommented => "1",
    ApprovalDelegated => "1",
    ApprovalClosed => "1",
    ApprovalCancelled => "1",
    ApprovalOverdue => "1",
});
