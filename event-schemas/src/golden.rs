//! Golden samples: stored JSON of every event type at its current version. They protect the
//! storage contract: if one of these stops decoding, or decodes and re-encodes differently,
//! stored events would break. Add a sample for each new event type; when a shape changes, keep
//! the old sample (under its old version) and test its upcaster.

use serde_json::{Value, json};

use crate::any::{AGGREGATE_TYPES, AnyEvent, DecodeError, event_types};

const U1: &str = "0190e4b4-0000-7000-8000-000000000001";
const U2: &str = "0190e4b4-0000-7000-8000-000000000002";
const U3: &str = "0190e4b4-0000-7000-8000-000000000003";
const AT: &str = "2026-11-26T10:00:00Z";
const DUE: &str = "2026-11-28T10:00:00Z";

fn workflow_ref() -> Value {
    json!({"instance_id": U1, "definition_key": "purchase-order", "definition_version": 3,
           "step_id": "review", "activation": 1})
}

fn document() -> Value {
    json!({"document_id": U2, "name": "quote.pdf", "media_type": "application/pdf",
           "size": 48213,
           "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"})
}

/// `(aggregate_type, event_type, payload)` for every event type.
pub(crate) fn samples() -> Vec<(&'static str, &'static str, Value)> {
    let user = format!("user:{U2}");
    let service = "service:orchestrator";
    let scope = json!([{"step_id": "checks", "activation": 1}]);
    let child = json!({"kind": "task", "id": U3, "step_id": "legal", "activation": 1});
    vec![
        (
            "workflow_definition",
            "WorkflowDefinitionPublished",
            json!({"WorkflowDefinitionPublished": {
            "tenant_id": "acme", "key": "purchase-order", "version": 1, "name": "Purchase order",
            "definition": {"key": "purchase-order", "name": "Purchase order", "start": "done",
                           "steps": {"done": {"type": "end", "outcome": "approved"}}},
            "published_by": user, "published_at": AT}}),
        ),
        (
            "workflow_instance",
            "InstanceStarted",
            json!({"InstanceStarted": {
            "instance_id": U1, "tenant_id": "acme", "definition_key": "purchase-order",
            "definition_version": 1, "business_key": "PO-1", "variables": {"amount": 12000},
            "started_by": user, "started_at": AT}}),
        ),
        (
            "workflow_instance",
            "DecisionTaken",
            json!({"DecisionTaken": {
            "step_id": "route", "activation": 1, "rule": 0, "next": "board", "decided_at": AT}}),
        ),
        (
            "workflow_instance",
            "ParallelStarted",
            json!({"ParallelStarted": {
            "step_id": "checks", "activation": 1, "branches": ["legal", "finance"],
            "join": "archive", "scope": [], "started_at": AT}}),
        ),
        (
            "workflow_instance",
            "BranchJoined",
            json!({"BranchJoined": {
            "join_step_id": "archive", "parallel": {"step_id": "checks", "activation": 1},
            "arrived": 1, "expected": 2, "joined_at": AT}}),
        ),
        (
            "workflow_instance",
            "TaskStepActivated",
            json!({"TaskStepActivated": {
            "step_id": "legal", "activation": 1, "definition_key": "purchase-order",
            "definition_version": 1, "task_id": U3, "name": "Legal check",
            "description": null, "assignee": null, "candidate_users": [U2],
            "candidate_groups": ["legal"],
            "form": [{"id": "ok", "type": "boolean", "required": true, "label": "Compliant?"}],
            "due_at": DUE, "escalation": {"candidate_users": [], "candidate_groups": ["leads"]},
            "scope": scope, "activated_at": AT}}),
        ),
        (
            "workflow_instance",
            "ApprovalStepActivated",
            json!({"ApprovalStepActivated": {
            "step_id": "board", "activation": 1, "definition_key": "purchase-order",
            "definition_version": 1, "approval_id": U3, "name": "Board approval",
            "description": null, "approvers": {"users": [U2], "groups": ["board"]},
            "policy": {"quorum": 2}, "due_at": null, "scope": [], "activated_at": AT}}),
        ),
        (
            "workflow_instance",
            "TimerStarted",
            json!({"TimerStarted": {
            "step_id": "cool-off", "activation": 2, "definition_key": "purchase-order",
            "definition_version": 1, "timer_id": U3, "fire_at": DUE,
            "scope": [], "started_at": AT}}),
        ),
        (
            "workflow_instance",
            "TaskStepCompleted",
            json!({"TaskStepCompleted": {
            "step_id": "review", "activation": 1, "task_id": U3, "output": {"ok": true},
            "variables": {"amount": 12000, "ok": true}, "completed_by": user,
            "completed_at": AT}}),
        ),
        (
            "workflow_instance",
            "ApprovalStepCompleted",
            json!({"ApprovalStepCompleted": {
            "step_id": "board", "activation": 1, "approval_id": U3, "outcome": "approved",
            "completed_at": AT}}),
        ),
        (
            "workflow_instance",
            "TimerFired",
            json!({"TimerFired": {
            "step_id": "cool-off", "activation": 2, "timer_id": U3, "fired_at": DUE}}),
        ),
        (
            "workflow_instance",
            "InstanceCompleted",
            json!({"InstanceCompleted": {
            "outcome": "approved", "end_step_id": "done", "cancelled_children": [child],
            "completed_at": AT}}),
        ),
        (
            "workflow_instance",
            "InstanceDocumentAttached",
            json!({"InstanceDocumentAttached": {
            "document": document(), "attached_by": user, "attached_at": AT}}),
        ),
        (
            "workflow_instance",
            "InstanceDocumentRemoved",
            json!({"InstanceDocumentRemoved": {
            "document_id": U2, "reason": null, "removed_by": user, "removed_at": AT}}),
        ),
        (
            "workflow_instance",
            "InstanceCancelled",
            json!({"InstanceCancelled": {
            "reason": "duplicate order", "open_children": [child], "cancelled_by": user,
            "cancelled_at": AT}}),
        ),
        (
            "workflow_instance",
            "InstanceFailed",
            json!({"InstanceFailed": {
            "reason": "rule 0 of step route failed: Undeclared reference to 'amount'",
            "step_id": "route", "open_children": [], "failed_by": service, "failed_at": AT}}),
        ),
        (
            "workflow_instance",
            "IncidentRaised",
            json!({"IncidentRaised": {
            "step_id": "route", "activation": 1,
            "reason": "decision route: rule 0 (`amount > 10000`) could not be evaluated: No such key: amount",
            "scope": [{"step_id": "checks", "activation": 1}], "raised_at": AT}}),
        ),
        (
            "workflow_instance",
            "IncidentRetried",
            json!({"IncidentRetried": {
            "step_id": "route", "variables": {"amount": 12000}, "retried_by": user, "retried_at": AT}}),
        ),
        (
            "task",
            "TaskOpened",
            json!({"TaskOpened": {
            "task_id": U3, "tenant_id": "acme", "workflow": workflow_ref(), "name": "Review request",
            "description": "Check the order", "assignee": null, "candidate_users": [],
            "candidate_groups": ["clerks"],
            "form": [{"id": "amount", "type": "number", "required": false, "label": null}],
            "due_at": DUE, "escalation": null, "opened_by": service, "opened_at": AT}}),
        ),
        (
            "task",
            "TaskClaimed",
            json!({"TaskClaimed": {"user_id": U2, "claimed_at": AT}}),
        ),
        (
            "task",
            "TaskReleased",
            json!({"TaskReleased": {
            "user_id": U2, "released_by": user, "released_at": AT}}),
        ),
        (
            "task",
            "TaskAssigned",
            json!({"TaskAssigned": {
            "user_id": U2, "previous_assignee": U1, "assigned_by": user, "assigned_at": AT}}),
        ),
        (
            "task",
            "TaskDelegated",
            json!({"TaskDelegated": {
            "from_user_id": U2, "to_user_id": U1, "delegated_by": user, "delegated_at": AT}}),
        ),
        (
            "task",
            "TaskCompleted",
            json!({"TaskCompleted": {
            "workflow": workflow_ref(), "output": {"amount": 12000}, "completed_by": user,
            "completed_at": AT}}),
        ),
        (
            "task",
            "TaskCancelled",
            json!({"TaskCancelled": {
            "reason": "workflow instance cancelled", "cancelled_by": service,
            "cancelled_at": AT}}),
        ),
        (
            "task",
            "TaskCommented",
            json!({"TaskCommented": {
            "author": user, "text": "Looks fine", "commented_at": AT}}),
        ),
        (
            "task",
            "TaskDocumentAttached",
            json!({"TaskDocumentAttached": {
            "document": document(), "workflow_instance_id": U1, "attached_by": user,
            "attached_at": AT}}),
        ),
        (
            "task",
            "TaskDocumentRemoved",
            json!({"TaskDocumentRemoved": {
            "document_id": U2, "reason": "wrong quote", "removed_by": user, "removed_at": AT}}),
        ),
        (
            "task",
            "TaskOverdue",
            json!({"TaskOverdue": {
            "due_at": DUE, "escalation": {"candidate_users": [U1], "candidate_groups": []},
            "marked_at": DUE}}),
        ),
        (
            "approval",
            "ApprovalOpened",
            json!({"ApprovalOpened": {
            "approval_id": U3, "tenant_id": "acme", "workflow": workflow_ref(),
            "name": "Board approval", "description": null, "policy": "sequential",
            "approvers": [U1, U2], "due_at": null, "awaiting": [U1], "opened_by": service,
            "opened_at": AT}}),
        ),
        (
            "approval",
            "ApprovalDecided",
            json!({"ApprovalDecided": {
            "approver": U1, "decided_by": U1, "decision": "approve", "awaiting": [U2],
            "decided_at": AT}}),
        ),
        (
            "approval",
            "ApprovalCommented",
            json!({"ApprovalCommented": {
            "author": user, "text": "ok by me", "commented_at": AT}}),
        ),
        (
            "approval",
            "ApprovalDelegated",
            json!({"ApprovalDelegated": {
            "approver": U2, "from_user_id": U2, "to_user_id": U3, "delegated_by": user,
            "awaiting": [U3], "delegated_at": AT}}),
        ),
        (
            "approval",
            "ApprovalClosed",
            json!({"ApprovalClosed": {
            "workflow": null, "outcome": "rejected", "reason": "not_enough_approvers",
            "approvals": 0, "rejections": 0, "closed_at": AT}}),
        ),
        (
            "approval",
            "ApprovalCancelled",
            json!({"ApprovalCancelled": {
            "reason": "workflow instance cancelled", "cancelled_by": service,
            "cancelled_at": AT}}),
        ),
        (
            "approval",
            "ApprovalOverdue",
            json!({"ApprovalOverdue": {
            "due_at": DUE, "marked_at": DUE}}),
        ),
        (
            "tenant",
            "TenantCreated",
            json!({"TenantCreated": {
            "tenant_id": "acme", "name": "Acme Corp", "created_by": user, "created_at": AT}}),
        ),
        (
            "tenant",
            "TenantTwoFactorPolicyChanged",
            json!({"TenantTwoFactorPolicyChanged": {
            "required": true, "changed_by": user, "changed_at": AT}}),
        ),
        (
            "user",
            "UserCreated",
            json!({"UserCreated": {
            "user_id": U1, "tenant_id": "acme", "email": "Ann@Example.com",
            "display_name": "Ann Example", "roles": ["member", "operator"],
            "groups": ["clerks"], "created_by": user, "created_at": AT}}),
        ),
        (
            "user",
            "UserRolesChanged",
            json!({"UserRolesChanged": {
            "roles": ["member", "designer"], "granted": ["designer"], "revoked": ["operator"],
            "changed_by": user, "changed_at": AT}}),
        ),
        (
            "user",
            "UserGroupsChanged",
            json!({"UserGroupsChanged": {
            "groups": ["clerks", "legal"], "added": ["legal"], "removed": [],
            "changed_by": user, "changed_at": AT}}),
        ),
        (
            "user",
            "UserPasswordChanged",
            json!({"UserPasswordChanged": {"changed_by": user, "changed_at": AT}}),
        ),
        (
            "user",
            "UserDeactivated",
            json!({"UserDeactivated": {
            "reason": "left the company", "deactivated_by": user, "deactivated_at": AT}}),
        ),
        (
            "user",
            "UserReactivated",
            json!({"UserReactivated": {"reactivated_by": service, "reactivated_at": AT}}),
        ),
        (
            "user",
            "UserTwoFactorEnabled",
            json!({"UserTwoFactorEnabled": {"enabled_by": user, "enabled_at": AT}}),
        ),
        (
            "user",
            "UserTwoFactorDisabled",
            json!({"UserTwoFactorDisabled": {
            "reason": "lost the phone", "disabled_by": user, "disabled_at": AT}}),
        ),
        (
            "user",
            "UserRecoveryCodesReplaced",
            json!({"UserRecoveryCodesReplaced": {"replaced_by": user, "replaced_at": AT}}),
        ),
        (
            "user",
            "UserSessionsEnded",
            json!({"UserSessionsEnded": {"reason": "laptop stolen", "ended_by": user, "ended_at": AT}}),
        ),
        (
            "user",
            "UserNotificationsChanged",
            json!({"UserNotificationsChanged": {"email": "direct", "changed_by": user, "changed_at": AT}}),
        ),
        (
            "user",
            "UserErased",
            json!({"UserErased": {"erased_by": user, "erased_at": AT}}),
        ),
    ]
}

#[test]
fn every_stored_sample_decodes_and_encodes_back_to_the_same_json() {
    for (aggregate_type, event_type, payload) in samples() {
        let event = AnyEvent::decode(aggregate_type, event_type, "1", payload.clone())
            .unwrap_or_else(|e| panic!("{event_type}: {e}"))
            .unwrap_or_else(|| panic!("{event_type}: not decoded"));
        assert_eq!(event.event_type(), event_type);
        assert_eq!(event.aggregate_type(), aggregate_type);
        let encoded = match &event {
            AnyEvent::WorkflowDefinition(e) => serde_json::to_value(e),
            AnyEvent::WorkflowInstance(e) => serde_json::to_value(e),
            AnyEvent::Task(e) => serde_json::to_value(e),
            AnyEvent::Approval(e) => serde_json::to_value(e),
            AnyEvent::Tenant(e) => serde_json::to_value(e),
            AnyEvent::User(e) => serde_json::to_value(e),
        }
        .unwrap();
        assert_eq!(encoded, payload, "{event_type} re-encodes differently");
    }
}

#[test]
fn every_event_type_has_a_golden_sample_and_every_sample_a_listed_type() {
    let samples = samples();
    for aggregate_type in AGGREGATE_TYPES {
        for event_type in event_types(aggregate_type).unwrap() {
            assert!(
                samples
                    .iter()
                    .any(|(a, e, _)| a == &aggregate_type && e == event_type),
                "no golden sample for {aggregate_type}/{event_type}"
            );
        }
    }
    for (aggregate_type, event_type, _) in &samples {
        assert!(event_types(aggregate_type).unwrap().contains(event_type));
    }
}

#[test]
fn cqrs_es_sees_the_stable_type_and_version() {
    use cqrs_es::DomainEvent;
    for (aggregate_type, event_type, payload) in samples() {
        let event = AnyEvent::decode(aggregate_type, event_type, "1", payload)
            .unwrap()
            .unwrap();
        let (ty, version) = match &event {
            AnyEvent::WorkflowDefinition(e) => (e.event_type(), e.event_version()),
            AnyEvent::WorkflowInstance(e) => (e.event_type(), e.event_version()),
            AnyEvent::Task(e) => (e.event_type(), e.event_version()),
            AnyEvent::Approval(e) => (e.event_type(), e.event_version()),
            AnyEvent::Tenant(e) => (e.event_type(), e.event_version()),
            AnyEvent::User(e) => (e.event_type(), e.event_version()),
        };
        assert_eq!((ty.as_str(), version.as_str()), (event_type, "1"));
    }
}

#[test]
fn foreign_aggregates_are_skipped_and_bad_rows_are_named() {
    assert!(
        AnyEvent::decode("invoice", "InvoiceIssued", "1", json!({}))
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        AnyEvent::decode("task", "TaskExploded", "1", json!({})),
        Err(DecodeError::UnknownEventType { .. })
    ));
    assert!(matches!(
        AnyEvent::decode("task", "TaskClaimed", "2", json!({})),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    assert!(matches!(
        AnyEvent::decode(
            "task",
            "TaskClaimed",
            "1",
            json!({"TaskClaimed": {"user_id": 7}})
        ),
        Err(DecodeError::Payload { .. })
    ));
    let released = json!({"TaskReleased": {"user_id": U2, "released_by": "service:x",
                                           "released_at": AT}});
    assert!(matches!(
        AnyEvent::decode("task", "TaskClaimed", "1", released),
        Err(DecodeError::TagMismatch { .. })
    ));
}
