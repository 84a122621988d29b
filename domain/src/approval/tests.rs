use cqrs_es::test::TestFramework;
use event_schemas::{
    Actor, ApprovalCloseReason, ApprovalDecision, ApprovalEvent, ApprovalOutcome, ApprovalPolicy,
    ApprovalStatus, WorkflowRef,
};
use uuid::Uuid;

use super::*;
use crate::caller::Caller;
use crate::testing::{T0, admin, elsewhere, later, member, operator, orchestrator};

type Given = TestFramework<Approval>;

const APPROVAL: Uuid = Uuid::from_u128(0xA99);
const INSTANCE: Uuid = Uuid::from_u128(0x1);
const A: Uuid = Uuid::from_u128(0xA);
const B: Uuid = Uuid::from_u128(0xB);
const C: Uuid = Uuid::from_u128(0xC);
const D: Uuid = Uuid::from_u128(0xD);

fn workflow() -> WorkflowRef {
    WorkflowRef {
        instance_id: INSTANCE,
        definition_key: "purchase-order".into(),
        definition_version: 1,
        step_id: "board".into(),
        activation: 1,
    }
}

fn open_approval(policy: ApprovalPolicy, approvers: Vec<Uuid>) -> OpenApproval {
    OpenApproval {
        approval_id: APPROVAL,
        workflow: Some(workflow()),
        name: "Board approval".into(),
        description: None,
        policy,
        approvers,
        due_at: Some(later(24)),
    }
}

fn opened(policy: ApprovalPolicy, approvers: &[Uuid]) -> ApprovalEvent {
    let awaiting = match policy {
        ApprovalPolicy::Sequential => approvers[..1].to_vec(),
        _ => approvers.to_vec(),
    };
    ApprovalEvent::ApprovalOpened {
        approval_id: APPROVAL,
        tenant_id: "acme".into(),
        workflow: Some(workflow()),
        name: "Board approval".into(),
        description: None,
        policy,
        approvers: approvers.to_vec(),
        due_at: Some(later(24)),
        awaiting,
        opened_by: orchestrator().actor,
        opened_at: T0,
    }
}

fn vote(user: Uuid, decision: ApprovalDecision) -> Command<ApprovalCommand> {
    Command::new(
        member(user),
        T0,
        ApprovalCommand::Decide {
            decision,
            comment: None,
        },
    )
}

fn decided(user: Uuid, decision: ApprovalDecision, awaiting: &[Uuid]) -> ApprovalEvent {
    ApprovalEvent::ApprovalDecided {
        approver: user,
        decided_by: user,
        decision,
        awaiting: awaiting.to_vec(),
        decided_at: T0,
    }
}

fn closed(outcome: ApprovalOutcome, approvals: u32, rejections: u32) -> ApprovalEvent {
    ApprovalEvent::ApprovalClosed {
        workflow: Some(workflow()),
        outcome,
        reason: ApprovalCloseReason::Decided,
        approvals,
        rejections,
        closed_at: T0,
    }
}

use ApprovalDecision::{Approve, Reject};
use ApprovalOutcome::{Approved, Rejected};

// open

#[test]
fn the_orchestrator_opens_with_resolved_approvers_and_duplicates_dropped() {
    Given::with(())
        .given_no_previous_events()
        .when(Command::new(
            orchestrator(),
            T0,
            ApprovalCommand::Open(open_approval(ApprovalPolicy::Any, vec![A, B, A])),
        ))
        .then_expect_events(vec![opened(ApprovalPolicy::Any, &[A, B])]);
}

#[test]
fn opening_again_is_a_no_op_and_another_tenant_gets_a_conflict() {
    let open = || ApprovalCommand::Open(open_approval(ApprovalPolicy::Any, vec![A]));
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A])])
        .when(Command::new(orchestrator(), T0, open()))
        .then_expect_events(vec![]);
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A])])
        .when(Command::new(elsewhere(orchestrator()), T0, open()))
        .then_expect_error(ApprovalError::AlreadyExists);
}

#[test]
fn people_cannot_open_workflow_approvals_and_members_no_approvals_at_all() {
    let mut ad_hoc = open_approval(ApprovalPolicy::Any, vec![A]);
    ad_hoc.workflow = None;
    Given::with(())
        .given_no_previous_events()
        .when(Command::new(
            admin(),
            T0,
            ApprovalCommand::Open(open_approval(ApprovalPolicy::Any, vec![A])),
        ))
        .then_expect_error(ApprovalError::MissingRole {
            action: "open workflow approvals",
            roles: "the orchestrator",
        });
    Given::with(())
        .given_no_previous_events()
        .when(Command::new(
            member(A),
            T0,
            ApprovalCommand::Open(ad_hoc.clone()),
        ))
        .then_expect_error(ApprovalError::MissingRole {
            action: "open approvals",
            roles: "operators and admins",
        });
    let events = Given::with(())
        .given_no_previous_events()
        .when(Command::new(operator(), T0, ApprovalCommand::Open(ad_hoc)))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 1);
}

#[test]
fn an_approval_without_approvers_is_rejected_at_once() {
    let mut expected_open = opened(ApprovalPolicy::All, &[]);
    if let ApprovalEvent::ApprovalOpened { awaiting, .. } = &mut expected_open {
        awaiting.clear();
    }
    Given::with(())
        .given_no_previous_events()
        .when(Command::new(
            orchestrator(),
            T0,
            ApprovalCommand::Open(open_approval(ApprovalPolicy::All, vec![])),
        ))
        .then_expect_events(vec![
            expected_open,
            ApprovalEvent::ApprovalClosed {
                workflow: Some(workflow()),
                outcome: Rejected,
                reason: ApprovalCloseReason::NoApprovers,
                approvals: 0,
                rejections: 0,
                closed_at: T0,
            },
        ]);
}

#[test]
fn an_approval_with_fewer_approvers_than_its_quorum_is_rejected_at_once() {
    let events = Given::with(())
        .given_no_previous_events()
        .when(Command::new(
            orchestrator(),
            T0,
            ApprovalCommand::Open(open_approval(ApprovalPolicy::Quorum(2), vec![A])),
        ))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        events.as_slice(),
        [
            ApprovalEvent::ApprovalOpened { awaiting, .. },
            ApprovalEvent::ApprovalClosed {
                outcome: Rejected,
                reason: ApprovalCloseReason::NotEnoughApprovers,
                ..
            }
        ] if awaiting.is_empty()
    ));
}

#[test]
fn a_quorum_of_zero_is_invalid() {
    let error = Given::with(())
        .given_no_previous_events()
        .when(Command::new(
            orchestrator(),
            T0,
            ApprovalCommand::Open(open_approval(ApprovalPolicy::Quorum(0), vec![A])),
        ))
        .inspect_result()
        .unwrap_err();
    assert_eq!(error.issues()[0].code, IssueCode::InvalidQuorum);
}

// policies

#[test]
fn any_the_first_decision_decides() {
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A, B])])
        .when(vote(B, Approve))
        .then_expect_events(vec![decided(B, Approve, &[]), closed(Approved, 1, 0)]);
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A, B])])
        .when(vote(A, Reject))
        .then_expect_events(vec![decided(A, Reject, &[]), closed(Rejected, 0, 1)]);
}

#[test]
fn all_waits_for_everyone_and_one_rejection_rejects() {
    let p = ApprovalPolicy::All;
    Given::with(())
        .given(vec![opened(p, &[A, B])])
        .when(vote(A, Approve))
        .then_expect_events(vec![decided(A, Approve, &[B])]);
    Given::with(())
        .given(vec![opened(p, &[A, B]), decided(A, Approve, &[B])])
        .when(vote(B, Approve))
        .then_expect_events(vec![decided(B, Approve, &[]), closed(Approved, 2, 0)]);
    Given::with(())
        .given(vec![opened(p, &[A, B, C]), decided(A, Approve, &[B, C])])
        .when(vote(C, Reject))
        .then_expect_events(vec![decided(C, Reject, &[]), closed(Rejected, 1, 1)]);
}

#[test]
fn a_quorum_approves_at_n_and_rejects_once_n_is_out_of_reach() {
    let p = ApprovalPolicy::Quorum(2);
    Given::with(())
        .given(vec![opened(p, &[A, B, C]), decided(A, Approve, &[B, C])])
        .when(vote(C, Approve))
        .then_expect_events(vec![decided(C, Approve, &[]), closed(Approved, 2, 0)]);
    Given::with(())
        .given(vec![opened(p, &[A, B, C]), decided(A, Reject, &[B, C])])
        .when(vote(B, Approve))
        .then_expect_events(vec![decided(B, Approve, &[C])]);
    Given::with(())
        .given(vec![opened(p, &[A, B, C]), decided(A, Reject, &[B, C])])
        .when(vote(B, Reject))
        .then_expect_events(vec![decided(B, Reject, &[]), closed(Rejected, 0, 2)]);
}

#[test]
fn sequential_approvers_decide_in_the_listed_order() {
    let p = ApprovalPolicy::Sequential;
    Given::with(())
        .given(vec![opened(p, &[A, B])])
        .when(vote(B, Approve))
        .then_expect_error(ApprovalError::NotYourTurn);
    Given::with(())
        .given(vec![opened(p, &[A, B])])
        .when(vote(A, Approve))
        .then_expect_events(vec![decided(A, Approve, &[B])]);
    Given::with(())
        .given(vec![opened(p, &[A, B]), decided(A, Approve, &[B])])
        .when(vote(B, Approve))
        .then_expect_events(vec![decided(B, Approve, &[]), closed(Approved, 2, 0)]);
    Given::with(())
        .given(vec![opened(p, &[A, B, C])])
        .when(vote(A, Reject))
        .then_expect_events(vec![decided(A, Reject, &[]), closed(Rejected, 0, 1)]);
}

// who may vote

#[test]
fn one_vote_per_approver_and_none_for_outsiders() {
    let p = ApprovalPolicy::All;
    Given::with(())
        .given(vec![opened(p, &[A, B]), decided(A, Approve, &[B])])
        .when(vote(A, Reject))
        .then_expect_error(ApprovalError::AlreadyDecided);
    Given::with(())
        .given(vec![opened(p, &[A, B])])
        .when(vote(D, Approve))
        .then_expect_error(ApprovalError::NotAnApprover);
    Given::with(())
        .given(vec![opened(p, &[A, B])])
        .when(Command::new(
            admin(),
            T0,
            ApprovalCommand::Decide {
                decision: Approve,
                comment: None,
            },
        ))
        .then_expect_error(ApprovalError::NotAnApprover);
}

#[test]
fn a_decision_after_closing_is_rejected() {
    Given::with(())
        .given(vec![
            opened(ApprovalPolicy::Any, &[A, B]),
            decided(A, Approve, &[]),
            closed(Approved, 1, 0),
        ])
        .when(vote(B, Reject))
        .then_expect_error(ApprovalError::Closed {
            status: ApprovalStatus::Approved,
        });
}

#[test]
fn a_comment_goes_into_its_own_event() {
    Given::with(())
        .given(vec![opened(ApprovalPolicy::All, &[A, B])])
        .when(Command::new(
            member(A),
            T0,
            ApprovalCommand::Decide {
                decision: Approve,
                comment: Some("fine by me".into()),
            },
        ))
        .then_expect_events(vec![
            decided(A, Approve, &[B]),
            ApprovalEvent::ApprovalCommented {
                author: Actor::User(A),
                text: "fine by me".into(),
                commented_at: T0,
            },
        ]);
}

#[test]
fn another_tenant_sees_no_approval() {
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A])])
        .when(Command::new(
            elsewhere(member(A)),
            T0,
            ApprovalCommand::Decide {
                decision: Approve,
                comment: None,
            },
        ))
        .then_expect_error(ApprovalError::NotFound);
}

// delegation

fn delegate(caller: Caller, to: Uuid, from: Option<Uuid>) -> Command<ApprovalCommand> {
    Command::new(
        caller,
        T0,
        ApprovalCommand::Delegate {
            user_id: to,
            from_user_id: from,
        },
    )
}

fn delegated(approver: Uuid, to: Uuid, by: &Caller, awaiting: &[Uuid]) -> ApprovalEvent {
    ApprovalEvent::ApprovalDelegated {
        approver,
        from_user_id: approver,
        to_user_id: to,
        delegated_by: by.actor.clone(),
        awaiting: awaiting.to_vec(),
        delegated_at: T0,
    }
}

#[test]
fn an_approver_delegates_and_the_delegate_decides_in_their_place() {
    let p = ApprovalPolicy::Sequential;
    Given::with(())
        .given(vec![opened(p, &[A, B])])
        .when(delegate(member(A), D, None))
        .then_expect_events(vec![delegated(A, D, &member(A), &[D])]);
    Given::with(())
        .given(vec![opened(p, &[A, B]), delegated(A, D, &member(A), &[D])])
        .when(vote(D, Approve))
        .then_expect_events(vec![ApprovalEvent::ApprovalDecided {
            approver: A,
            decided_by: D,
            decision: Approve,
            awaiting: vec![B],
            decided_at: T0,
        }]);
    Given::with(())
        .given(vec![opened(p, &[A, B]), delegated(A, D, &member(A), &[D])])
        .when(vote(A, Approve))
        .then_expect_error(ApprovalError::NotAnApprover);
}

#[test]
fn delegation_targets_must_be_new_and_someone_else() {
    Given::with(())
        .given(vec![opened(ApprovalPolicy::All, &[A, B])])
        .when(delegate(member(A), B, None))
        .then_expect_error(ApprovalError::AlreadyApprover { user_id: B });
    let error = Given::with(())
        .given(vec![opened(ApprovalPolicy::All, &[A, B])])
        .when(delegate(member(A), A, None))
        .inspect_result()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Validation);
    Given::with(())
        .given(vec![
            opened(ApprovalPolicy::All, &[A, B]),
            decided(A, Approve, &[B]),
        ])
        .when(delegate(member(A), D, None))
        .then_expect_error(ApprovalError::AlreadyDecided);
    Given::with(())
        .given(vec![opened(ApprovalPolicy::All, &[A, B])])
        .when(delegate(member(C), D, None))
        .then_expect_error(ApprovalError::NotAnApprover);
}

#[test]
fn only_admins_move_someone_elses_vote() {
    Given::with(())
        .given(vec![opened(ApprovalPolicy::All, &[A, B])])
        .when(delegate(member(C), D, Some(A)))
        .then_expect_error(ApprovalError::MissingRole {
            action: "delegate someone else's vote",
            roles: "admins",
        });
    Given::with(())
        .given(vec![opened(ApprovalPolicy::All, &[A, B])])
        .when(delegate(admin(), D, Some(A)))
        .then_expect_events(vec![delegated(A, D, &admin(), &[D, B])]);
}

// cancel and overdue

fn cancelled(by: &Caller) -> ApprovalEvent {
    ApprovalEvent::ApprovalCancelled {
        reason: "instance cancelled".into(),
        cancelled_by: by.actor.clone(),
        cancelled_at: T0,
    }
}

fn cancel(caller: Caller) -> Command<ApprovalCommand> {
    Command::new(
        caller,
        T0,
        ApprovalCommand::Cancel {
            reason: "instance cancelled".into(),
        },
    )
}

#[test]
fn workflow_approvals_are_cancelled_by_the_orchestrator_only_and_idempotently() {
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A])])
        .when(cancel(operator()))
        .then_expect_error(ApprovalError::WorkflowManaged {
            instance_id: INSTANCE,
        });
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A])])
        .when(cancel(orchestrator()))
        .then_expect_events(vec![cancelled(&orchestrator())]);
    Given::with(())
        .given(vec![
            opened(ApprovalPolicy::Any, &[A]),
            cancelled(&orchestrator()),
        ])
        .when(cancel(orchestrator()))
        .then_expect_events(vec![]);
    Given::with(())
        .given(vec![
            opened(ApprovalPolicy::Any, &[A]),
            cancelled(&orchestrator()),
        ])
        .when(vote(A, Approve))
        .then_expect_error(ApprovalError::Closed {
            status: ApprovalStatus::Cancelled,
        });
}

#[test]
fn ad_hoc_approvals_are_cancelled_by_operators() {
    let mut open = opened(ApprovalPolicy::Any, &[A]);
    if let ApprovalEvent::ApprovalOpened { workflow, .. } = &mut open {
        *workflow = None;
    }
    Given::with(())
        .given(vec![open.clone()])
        .when(cancel(operator()))
        .then_expect_events(vec![cancelled(&operator())]);
    Given::with(())
        .given(vec![open])
        .when(cancel(member(A)))
        .then_expect_error(ApprovalError::MissingRole {
            action: "cancel approvals",
            roles: "operators and admins",
        });
}

#[test]
fn a_pending_approval_past_its_due_time_is_marked_overdue_once() {
    let mark = |at| Command::new(orchestrator(), at, ApprovalCommand::MarkOverdue);
    let overdue = ApprovalEvent::ApprovalOverdue {
        due_at: later(24),
        marked_at: later(25),
    };
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A])])
        .when(mark(later(25)))
        .then_expect_events(vec![overdue.clone()]);
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A]), overdue])
        .when(mark(later(26)))
        .then_expect_events(vec![]);
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A])])
        .when(mark(later(23)))
        .then_expect_error(ApprovalError::NotDue { due_at: later(24) });
    Given::with(())
        .given(vec![opened(ApprovalPolicy::Any, &[A])])
        .when(Command::new(
            member(A),
            later(25),
            ApprovalCommand::MarkOverdue,
        ))
        .then_expect_error(ApprovalError::MissingRole {
            action: "mark approvals overdue",
            roles: "the timer service and admins",
        });
}

#[test]
fn may_decide_now_follows_turns_delegations_and_closing() {
    let mut approval = Approval::default();
    approval.apply(opened(ApprovalPolicy::Sequential, &[A, B]));
    assert!(approval.may_decide_now(A));
    assert!(!approval.may_decide_now(B));
    approval.apply(delegated(A, D, &member(A), &[D]));
    assert!(approval.may_decide_now(D));
    assert!(!approval.may_decide_now(A));
    approval.apply(ApprovalEvent::ApprovalDecided {
        approver: A,
        decided_by: D,
        decision: Approve,
        awaiting: vec![B],
        decided_at: T0,
    });
    assert!(approval.may_decide_now(B));
    approval.apply(decided(B, Reject, &[]));
    approval.apply(closed(Rejected, 1, 1));
    assert!(!approval.may_decide_now(B));
    assert_eq!(approval.status(), ApprovalStatus::Rejected);
}
