//! The `Approval` aggregate: approvers (user ids, groups already resolved) voting under a
//! policy (see [`policy`]).
//!
//! - open: the orchestrator for workflow approvals (id derived from the step), operators and
//!   admins for ad-hoc ones. Opening an existing approval is a no-op. An approval that opens
//!   with no approvers, or with fewer than its quorum, is rejected at once
//!   (`ApprovalClosed{reason: no_approvers | not_enough_approvers}`): it never hangs, and the
//!   workflow takes its `rejected` route.
//! - decide: a member holding an open vote, when the policy lets them vote now (for
//!   `sequential`: their turn). One vote per approver. A comment is recorded in an event of
//!   its own. Admins vote only on a vote they hold (an admin may delegate a vote to
//!   themselves first, which is recorded).
//! - delegate: the holder of an open vote hands it to a user who holds no vote on this
//!   approval yet; admins may move anyone's open vote.
//! - cancel: operators and admins for ad-hoc approvals; workflow approvals end with their
//!   instance (the orchestrator cancels them).
//! - mark overdue: the timer service (and admins), once the due time passed.
//!
//! Anything after closing is rejected, except the orchestrator's repeatable commands.

pub mod policy;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use event_schemas::approval::AGGREGATE_TYPE;
use event_schemas::{
    ApprovalCloseReason, ApprovalDecision, ApprovalEvent, ApprovalOutcome, ApprovalPolicy,
    ApprovalStatus, Role, WorkflowRef,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::caller::{Caller, Command};
use crate::error::{ErrorKind, Issue, IssueCode, Rejection};
use crate::text;

pub use policy::Slot;

/// What can be asked of an approval.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalCommand {
    /// Create the approval (a no-op if it exists).
    Open(OpenApproval),
    /// Cast the caller's vote.
    Decide {
        decision: ApprovalDecision,
        comment: Option<String>,
    },
    /// Hand an open vote to `user_id`: the caller's own, or (admins) the one `from_user_id`
    /// holds.
    Delegate {
        user_id: Uuid,
        from_user_id: Option<Uuid>,
    },
    /// Cancel the approval.
    Cancel { reason: String },
    /// The due time passed: mark the approval overdue.
    MarkOverdue,
}

/// Everything a new approval is opened with.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenApproval {
    pub approval_id: Uuid,
    pub workflow: Option<WorkflowRef>,
    pub name: String,
    pub description: Option<String>,
    pub policy: ApprovalPolicy,
    /// Resolved approvers in policy order (duplicates are dropped).
    pub approvers: Vec<Uuid>,
    pub due_at: Option<DateTime<Utc>>,
}

/// Why an approval command was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApprovalError {
    #[error("approval not found")]
    NotFound,
    #[error("an approval with this id already exists")]
    AlreadyExists,
    #[error("only {roles} may {action}")]
    MissingRole {
        action: &'static str,
        roles: &'static str,
    },
    #[error("you hold no vote on this approval")]
    NotAnApprover,
    #[error("this vote was already cast")]
    AlreadyDecided,
    #[error("it is not your turn yet: approvers decide in the listed order")]
    NotYourTurn,
    #[error("{user_id} already holds a vote on this approval")]
    AlreadyApprover { user_id: Uuid },
    #[error("the approval is already {}", status_name(*.status))]
    Closed { status: ApprovalStatus },
    #[error("the approval belongs to workflow instance {instance_id}; cancel the instance instead")]
    WorkflowManaged { instance_id: Uuid },
    #[error("the approval has no due time")]
    NoDueTime,
    #[error("the approval is not due before {due_at}")]
    NotDue { due_at: DateTime<Utc> },
    #[error("the command is invalid: {}", crate::error::first_issue(.issues))]
    Invalid { issues: Vec<Issue> },
}

fn status_name(status: ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Pending => "pending",
        ApprovalStatus::Approved => "approved",
        ApprovalStatus::Rejected => "rejected",
        ApprovalStatus::Cancelled => "cancelled",
    }
}

impl Rejection for ApprovalError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::MissingRole { .. } | Self::NotAnApprover => ErrorKind::Forbidden,
            Self::AlreadyExists
            | Self::AlreadyDecided
            | Self::NotYourTurn
            | Self::AlreadyApprover { .. }
            | Self::Closed { .. }
            | Self::WorkflowManaged { .. }
            | Self::NoDueTime
            | Self::NotDue { .. } => ErrorKind::Conflict,
            Self::Invalid { .. } => ErrorKind::Validation,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "approval_not_found",
            Self::AlreadyExists => "approval_exists",
            Self::MissingRole { .. } => "forbidden",
            Self::NotAnApprover => "not_an_approver",
            Self::AlreadyDecided => "already_decided",
            Self::NotYourTurn => "not_your_turn",
            Self::AlreadyApprover { .. } => "already_an_approver",
            Self::Closed { .. } => "approval_closed",
            Self::WorkflowManaged { .. } => "approval_managed_by_workflow",
            Self::NoDueTime => "approval_has_no_due_time",
            Self::NotDue { .. } => "approval_not_due",
            Self::Invalid { .. } => "invalid_command",
        }
    }

    fn issues(&self) -> &[Issue] {
        match self {
            Self::Invalid { issues } => issues,
            _ => &[],
        }
    }
}

fn invalid_if_any(issues: Vec<Issue>) -> Result<(), ApprovalError> {
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApprovalError::Invalid { issues })
    }
}

const VOTE: ApprovalError = ApprovalError::MissingRole {
    action: "decide approvals",
    roles: "members",
};

/// An approval's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    id: Option<Uuid>,
    tenant_id: String,
    workflow: Option<WorkflowRef>,
    name: String,
    policy: Option<ApprovalPolicy>,
    status: ApprovalStatus,
    slots: Vec<Slot>,
    due_at: Option<DateTime<Utc>>,
    overdue: bool,
}

impl Approval {
    /// The id, once opened.
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// The tenant, once opened.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The workflow step it belongs to; `None` for ad-hoc approvals.
    pub fn workflow(&self) -> Option<&WorkflowRef> {
        self.workflow.as_ref()
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy, once opened.
    pub fn policy(&self) -> Option<ApprovalPolicy> {
        self.policy
    }

    /// pending, approved, rejected or cancelled.
    pub fn status(&self) -> ApprovalStatus {
        self.status
    }

    /// The approvers' places with their current holders and votes.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// When it becomes overdue, if ever.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        self.due_at
    }

    /// Whether it was marked overdue (an SLA breach).
    pub fn is_overdue(&self) -> bool {
        self.overdue
    }

    /// The users who may vote right now.
    pub fn awaiting(&self) -> Vec<Uuid> {
        match (self.status, self.policy) {
            (ApprovalStatus::Pending, Some(policy)) => policy::awaiting(policy, &self.slots),
            _ => Vec::new(),
        }
    }

    /// Whether `user` may vote right now (what `approver=me` lists).
    pub fn may_decide_now(&self, user: Uuid) -> bool {
        self.awaiting().contains(&user)
    }

    /// Decides a command: the events it causes, or why it is rejected.
    pub fn decide(
        &self,
        command: Command<ApprovalCommand>,
    ) -> Result<Vec<ApprovalEvent>, ApprovalError> {
        let Command {
            caller,
            at,
            command,
        } = command;
        if let ApprovalCommand::Open(open) = command {
            return self.open(caller, at, open);
        }
        if self.id.is_none() || self.tenant_id != caller.tenant_id {
            return Err(ApprovalError::NotFound);
        }
        match command {
            ApprovalCommand::Open(_) => Ok(Vec::new()),
            ApprovalCommand::Decide { decision, comment } => {
                self.vote(&caller, at, decision, comment)
            }
            ApprovalCommand::Delegate {
                user_id,
                from_user_id,
            } => self.delegate(&caller, at, user_id, from_user_id),
            ApprovalCommand::Cancel { reason } => self.cancel(&caller, at, reason),
            ApprovalCommand::MarkOverdue => self.mark_overdue(&caller, at),
        }
    }

    fn open(
        &self,
        caller: Caller,
        at: DateTime<Utc>,
        open: OpenApproval,
    ) -> Result<Vec<ApprovalEvent>, ApprovalError> {
        if open.workflow.is_some() && !caller.is_service() {
            return Err(ApprovalError::MissingRole {
                action: "open workflow approvals",
                roles: "the orchestrator",
            });
        }
        if !caller.acts_as(Role::Operator) {
            return Err(ApprovalError::MissingRole {
                action: "open approvals",
                roles: "operators and admins",
            });
        }
        if self.id.is_some() {
            return if self.tenant_id == caller.tenant_id {
                Ok(Vec::new())
            } else {
                Err(ApprovalError::AlreadyExists)
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
        if open.policy == ApprovalPolicy::Quorum(0) {
            issues.push(Issue::field(
                "policy",
                IssueCode::InvalidQuorum,
                "a quorum is at least 1",
            ));
        }
        invalid_if_any(issues)?;
        let mut approvers: Vec<Uuid> = Vec::with_capacity(open.approvers.len());
        for approver in open.approvers {
            if !approvers.contains(&approver) {
                approvers.push(approver);
            }
        }
        let slots: Vec<Slot> = approvers
            .iter()
            .map(|&a| Slot {
                approver: a,
                holder: a,
                decision: None,
            })
            .collect();
        let reason = match open.policy {
            _ if approvers.is_empty() => Some(ApprovalCloseReason::NoApprovers),
            ApprovalPolicy::Quorum(n) if usize::try_from(n).is_ok_and(|n| n > approvers.len()) => {
                Some(ApprovalCloseReason::NotEnoughApprovers)
            }
            _ => None,
        };
        let awaiting = match reason {
            Some(_) => Vec::new(),
            None => policy::awaiting(open.policy, &slots),
        };
        let mut events = vec![ApprovalEvent::ApprovalOpened {
            approval_id: open.approval_id,
            tenant_id: caller.tenant_id,
            workflow: open.workflow.clone(),
            name: open.name,
            description: open.description,
            policy: open.policy,
            approvers,
            due_at: open.due_at,
            awaiting,
            opened_by: caller.actor,
            opened_at: at,
        }];
        if let Some(reason) = reason {
            events.push(ApprovalEvent::ApprovalClosed {
                workflow: open.workflow,
                outcome: ApprovalOutcome::Rejected,
                reason,
                approvals: 0,
                rejections: 0,
                closed_at: at,
            });
        }
        Ok(events)
    }

    fn ensure_pending(&self) -> Result<(), ApprovalError> {
        match self.status {
            ApprovalStatus::Pending => Ok(()),
            status => Err(ApprovalError::Closed { status }),
        }
    }

    fn vote(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        decision: ApprovalDecision,
        comment: Option<String>,
    ) -> Result<Vec<ApprovalEvent>, ApprovalError> {
        let Some(user) = caller.person() else {
            return Err(ApprovalError::MissingRole {
                action: "decide approvals",
                roles: "people",
            });
        };
        if !caller.acts_as(Role::Member) {
            return Err(VOTE);
        }
        self.ensure_pending()?;
        let Some(index) = self
            .slots
            .iter()
            .position(|s| s.holder == user && s.decision.is_none())
        else {
            return Err(if self.slots.iter().any(|s| s.holder == user) {
                ApprovalError::AlreadyDecided
            } else {
                ApprovalError::NotAnApprover
            });
        };
        let policy = self.policy.unwrap_or(ApprovalPolicy::Any);
        if !policy::awaiting(policy, &self.slots).contains(&user) {
            return Err(ApprovalError::NotYourTurn);
        }
        let comment = comment.filter(|c| !c.trim().is_empty());
        if let Some(comment) = &comment {
            let mut issues = Vec::new();
            text::check_length(comment, "comment", text::MAX_COMMENT, &mut issues);
            invalid_if_any(issues)?;
        }
        let mut slots = self.slots.clone();
        slots[index].decision = Some(decision);
        let outcome = policy::outcome(policy, &slots);
        let mut events = vec![ApprovalEvent::ApprovalDecided {
            approver: slots[index].approver,
            decided_by: user,
            decision,
            awaiting: policy::awaiting(policy, &slots),
            decided_at: at,
        }];
        if let Some(text) = comment {
            events.push(ApprovalEvent::ApprovalCommented {
                author: caller.actor.clone(),
                text,
                commented_at: at,
            });
        }
        if let Some(outcome) = outcome {
            let tally = |d| slots.iter().filter(|s| s.decision == Some(d)).count();
            events.push(ApprovalEvent::ApprovalClosed {
                workflow: self.workflow.clone(),
                outcome,
                reason: ApprovalCloseReason::Decided,
                approvals: u32::try_from(tally(ApprovalDecision::Approve)).unwrap_or(u32::MAX),
                rejections: u32::try_from(tally(ApprovalDecision::Reject)).unwrap_or(u32::MAX),
                closed_at: at,
            });
        }
        Ok(events)
    }

    fn delegate(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        user_id: Uuid,
        from_user_id: Option<Uuid>,
    ) -> Result<Vec<ApprovalEvent>, ApprovalError> {
        if !caller.acts_as(Role::Member) {
            return Err(ApprovalError::MissingRole {
                action: "delegate approvals",
                roles: "members",
            });
        }
        self.ensure_pending()?;
        let own = caller.person();
        let from = match (from_user_id, own) {
            (Some(from), Some(me)) if from == me => from,
            (Some(from), _) if caller.is_privileged() => from,
            (Some(_), _) => {
                return Err(ApprovalError::MissingRole {
                    action: "delegate someone else's vote",
                    roles: "admins",
                });
            }
            (None, Some(me)) => me,
            (None, None) => {
                return Err(ApprovalError::Invalid {
                    issues: vec![Issue::field(
                        "from_user_id",
                        IssueCode::MissingField,
                        "name the user whose vote is delegated",
                    )],
                });
            }
        };
        let Some(index) = self
            .slots
            .iter()
            .position(|s| s.holder == from && s.decision.is_none())
        else {
            return Err(if self.slots.iter().any(|s| s.holder == from) {
                ApprovalError::AlreadyDecided
            } else {
                ApprovalError::NotAnApprover
            });
        };
        if user_id == from {
            return Err(ApprovalError::Invalid {
                issues: vec![Issue::field(
                    "user_id",
                    IssueCode::InvalidValue,
                    "a vote cannot be delegated to its holder",
                )],
            });
        }
        if self.slots.iter().any(|s| s.holder == user_id) {
            return Err(ApprovalError::AlreadyApprover { user_id });
        }
        let mut slots = self.slots.clone();
        slots[index].holder = user_id;
        let policy = self.policy.unwrap_or(ApprovalPolicy::Any);
        Ok(vec![ApprovalEvent::ApprovalDelegated {
            approver: slots[index].approver,
            from_user_id: from,
            to_user_id: user_id,
            delegated_by: caller.actor.clone(),
            awaiting: policy::awaiting(policy, &slots),
            delegated_at: at,
        }])
    }

    fn cancel(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        reason: String,
    ) -> Result<Vec<ApprovalEvent>, ApprovalError> {
        match self.status {
            ApprovalStatus::Cancelled => return Ok(Vec::new()),
            ApprovalStatus::Approved | ApprovalStatus::Rejected if caller.is_service() => {
                return Ok(Vec::new());
            }
            _ => self.ensure_pending()?,
        }
        if let Some(workflow) = &self.workflow
            && !caller.is_service()
        {
            return Err(ApprovalError::WorkflowManaged {
                instance_id: workflow.instance_id,
            });
        }
        if !caller.acts_as(Role::Operator) {
            return Err(ApprovalError::MissingRole {
                action: "cancel approvals",
                roles: "operators and admins",
            });
        }
        let mut issues = Vec::new();
        text::check_length(&reason, "reason", text::MAX_REASON, &mut issues);
        invalid_if_any(issues)?;
        Ok(vec![ApprovalEvent::ApprovalCancelled {
            reason,
            cancelled_by: caller.actor.clone(),
            cancelled_at: at,
        }])
    }

    fn mark_overdue(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
    ) -> Result<Vec<ApprovalEvent>, ApprovalError> {
        if !caller.is_privileged() {
            return Err(ApprovalError::MissingRole {
                action: "mark approvals overdue",
                roles: "the timer service and admins",
            });
        }
        if self.status != ApprovalStatus::Pending || self.overdue {
            return Ok(Vec::new());
        }
        let Some(due_at) = self.due_at else {
            return Err(ApprovalError::NoDueTime);
        };
        if at < due_at {
            return Err(ApprovalError::NotDue { due_at });
        }
        Ok(vec![ApprovalEvent::ApprovalOverdue {
            due_at,
            marked_at: at,
        }])
    }
}

impl Aggregate for Approval {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = Command<ApprovalCommand>;
    type Event = ApprovalEvent;
    type Error = ApprovalError;
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
            ApprovalEvent::ApprovalOpened {
                approval_id,
                tenant_id,
                workflow,
                name,
                policy,
                approvers,
                due_at,
                ..
            } => {
                *self = Approval {
                    id: Some(approval_id),
                    tenant_id,
                    workflow,
                    name,
                    policy: Some(policy),
                    status: ApprovalStatus::Pending,
                    slots: approvers
                        .into_iter()
                        .map(|a| Slot {
                            approver: a,
                            holder: a,
                            decision: None,
                        })
                        .collect(),
                    due_at,
                    overdue: false,
                };
            }
            ApprovalEvent::ApprovalDecided {
                approver, decision, ..
            } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.approver == approver) {
                    slot.decision = Some(decision);
                }
            }
            ApprovalEvent::ApprovalDelegated {
                approver,
                to_user_id,
                ..
            } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.approver == approver) {
                    slot.holder = to_user_id;
                }
            }
            ApprovalEvent::ApprovalCommented { .. } => {}
            ApprovalEvent::ApprovalClosed { outcome, .. } => {
                self.status = match outcome {
                    ApprovalOutcome::Approved => ApprovalStatus::Approved,
                    ApprovalOutcome::Rejected => ApprovalStatus::Rejected,
                };
            }
            ApprovalEvent::ApprovalCancelled { .. } => self.status = ApprovalStatus::Cancelled,
            ApprovalEvent::ApprovalOverdue { .. } => self.overdue = true,
        }
    }
}
