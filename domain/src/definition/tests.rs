use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::examples::purchase_order_json;

fn finance() -> Uuid {
    Uuid::from_u128(0xF1)
}

fn invalid(source: &str) -> Vec<Issue> {
    match Definition::from_json(source) {
        Ok(_) => panic!("accepted: {source}"),
        Err(e) => e.issues,
    }
}

fn invalid_value(value: Value) -> Vec<Issue> {
    invalid(&value.to_string())
}

/// `(step, field, code)` of every issue, for compact assertions.
fn summary(issues: &[Issue]) -> Vec<(Option<&str>, Option<&str>, IssueCode)> {
    issues
        .iter()
        .map(|i| (i.step.as_deref(), i.field.as_deref(), i.code))
        .collect()
}

fn minimal(steps: Value) -> Value {
    json!({"key": "k", "name": "K", "start": "a", "steps": steps})
}

#[test]
fn the_purchase_order_of_the_design_parses_from_json() {
    let definition = Definition::from_json(&purchase_order_json(finance())).unwrap();
    assert_eq!(definition.key(), "purchase-order");
    assert_eq!(definition.start(), "review");
    assert_eq!(definition.steps().len(), 10);
    let Some(StepKind::Approval(board)) = definition.step("board").map(|s| &s.kind) else {
        panic!("board is not an approval");
    };
    assert_eq!(board.policy, event_schemas::ApprovalPolicy::Quorum(2));
    assert_eq!(board.approvers.groups, vec!["board".to_owned()]);
    let Some(StepKind::Task(finance_step)) = definition.step("finance").map(|s| &s.kind) else {
        panic!("finance is not a task");
    };
    assert_eq!(finance_step.assignee, Some(finance()));
}

#[test]
fn yaml_gives_the_same_definition_and_canonical_json_round_trips() {
    let from_json = Definition::from_json(&purchase_order_json(finance())).unwrap();
    let yaml = serde_yaml_ng::to_string(&from_json.to_value()).unwrap();
    let from_yaml = Definition::from_yaml(&yaml).unwrap();
    assert_eq!(from_json, from_yaml);
    let board = serde_json::to_string(&from_json.to_value()["steps"]["board"]).unwrap();
    assert!(
        board.starts_with(r#"{"type":"approval","name":"Board approval","approvers""#),
        "canonical fields are in a stable order: {board}"
    );
    let again = Definition::from_value(&from_json.to_value()).unwrap();
    assert_eq!(again, from_json);
    assert_eq!(again.to_value(), from_json.to_value());
}

#[test]
fn a_hand_written_yaml_definition_parses() {
    let yaml = r#"
key: leave
name: Leave request
start: ask
steps:
  ask:
    type: approval
    approvers: {users: ["00000000-0000-0000-0000-000000000001"]}
    policy: sequential
    due: PT8H
    approved: wait
    rejected: no
  wait: {type: timer, duration: P1D, next: yes}
  yes: {type: end, outcome: granted}
  no: {type: end, outcome: refused}
"#;
    let definition = Definition::from_yaml(yaml).unwrap();
    assert_eq!(definition.steps().len(), 4);
    assert!(definition.step("wait").unwrap().is_wait());
}

#[test]
fn syntax_errors_are_one_parse_error() {
    let issues = invalid("{\"key\": ");
    assert_eq!(summary(&issues), vec![(None, None, IssueCode::ParseError)]);
    assert!(Definition::from_yaml("key: [").is_err());
}

#[test]
fn duplicate_step_ids_and_keys_are_found_although_json_keeps_the_last() {
    let source = r#"{"key": "k", "name": "K", "start": "a", "steps": {
        "a": {"type": "task", "next": "b", "next": "b"},
        "b": {"type": "end", "outcome": "x"},
        "b": {"type": "end", "outcome": "y"}}}"#;
    let issues = invalid(source);
    assert_eq!(
        summary(&issues),
        vec![
            (Some("a"), Some("next"), IssueCode::DuplicateKey),
            (Some("b"), None, IssueCode::DuplicateStep),
        ]
    );
    let yaml = "key: k\nname: K\nstart: a\nsteps:\n  a: {type: end, outcome: x}\n  a: {type: end, outcome: y}\n";
    let issues = Definition::from_yaml(yaml).unwrap_err().issues;
    assert_eq!(
        summary(&issues),
        vec![(Some("a"), None, IssueCode::DuplicateStep)]
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_step_and_field() {
    let issues = invalid_value(json!({
        "key": "bad key!", "name": "K", "start": "a", "colour": "red",
        "steps": {
            "a": {"type": "task", "due": "two days", "next": "nowhere", "nxt": "b"},
            "b": {"type": "decision", "rules": [{"when": "amount >", "next": "c"}], "default": "c"},
            "c": {"type": "approval", "approvers": {"users": [], "groups": []}, "policy": {"quorum": 0},
                  "approved": "d", "rejected": "d"},
            "d": {"type": "teleport"},
            "e": {"type": "end", "outcome": "done"}
        }
    }));
    let found = summary(&issues);
    for expected in [
        (None, Some("colour"), IssueCode::UnknownField),
        (None, Some("key"), IssueCode::InvalidKey),
        (Some("a"), Some("nxt"), IssueCode::UnknownField),
        (Some("a"), Some("due"), IssueCode::InvalidDuration),
        (Some("a"), Some("next"), IssueCode::UnknownTarget),
        (
            Some("b"),
            Some("rules[0].when"),
            IssueCode::InvalidExpression,
        ),
        (Some("c"), Some("approvers"), IssueCode::EmptyApprovers),
        (Some("c"), Some("policy.quorum"), IssueCode::InvalidQuorum),
        (Some("d"), Some("type"), IssueCode::UnknownStepType),
    ] {
        assert!(
            found.contains(&expected),
            "{expected:?} missing from {found:?}"
        );
    }
}

#[test]
fn a_missing_start_and_missing_fields_are_named() {
    let issues = invalid_value(json!({"key": "k", "steps": {"a": {"type": "end"}}}));
    assert_eq!(
        summary(&issues),
        vec![
            (None, Some("name"), IssueCode::MissingField),
            (None, Some("start"), IssueCode::MissingField),
            (Some("a"), Some("outcome"), IssueCode::MissingField),
        ]
    );
    let issues = invalid_value(json!({"key": "k", "name": "K", "start": "zz",
                                      "steps": {"a": {"type": "end", "outcome": "x"}}}));
    assert_eq!(
        summary(&issues),
        vec![(None, Some("start"), IssueCode::UnknownTarget)]
    );
}

#[test]
fn unreachable_steps_and_steps_without_an_end_are_found() {
    let issues = invalid_value(minimal(json!({
        "a": {"type": "task", "next": "loop"},
        "loop": {"type": "task", "next": "a"},
        "orphan": {"type": "end", "outcome": "x"}
    })));
    assert_eq!(
        summary(&issues),
        vec![
            (Some("orphan"), None, IssueCode::UnreachableStep),
            (Some("a"), None, IssueCode::NoPathToEnd),
            (Some("loop"), None, IssueCode::NoPathToEnd),
        ]
    );
    let issues = invalid_value(minimal(json!({"a": {"type": "task", "next": "a"}})));
    assert_eq!(
        summary(&issues),
        vec![(None, Some("steps"), IssueCode::NoEndStep)]
    );
}

#[test]
fn parallel_branches_must_reach_their_join_and_joins_are_not_shared() {
    let issues = invalid_value(minimal(json!({
        "a": {"type": "parallel", "branches": ["x", "y", "x"], "join": "j"},
        "x": {"type": "task", "next": "j"},
        "y": {"type": "task", "next": "end"},
        "j": {"type": "task", "next": "p2"},
        "p2": {"type": "parallel", "branches": ["z"], "join": "j"},
        "z": {"type": "task", "next": "j"},
        "end": {"type": "end", "outcome": "x"}
    })));
    let found = summary(&issues);
    assert!(found.contains(&(Some("a"), Some("branches[2]"), IssueCode::DuplicateBranch)));
    assert!(found.contains(&(Some("a"), Some("branches[1]"), IssueCode::BranchNeverJoins)));
    assert!(found.contains(&(Some("p2"), Some("join"), IssueCode::InvalidJoin)));
}

#[test]
fn loops_that_never_wait_are_refused_but_loops_through_a_task_are_fine() {
    let issues = invalid_value(minimal(json!({
        "a": {"type": "decision", "rules": [{"when": "x", "next": "b"}], "default": "end"},
        "b": {"type": "decision", "rules": [], "default": "a"},
        "end": {"type": "end", "outcome": "x"}
    })));
    assert_eq!(
        summary(&issues),
        vec![
            (Some("a"), None, IssueCode::LoopWithoutWait),
            (Some("b"), None, IssueCode::LoopWithoutWait),
        ]
    );
    let goto = minimal(json!({
        "a": {"type": "task", "next": "b"},
        "b": {"type": "decision", "default": "end"},
        "end": {"type": "end", "outcome": "x"}
    }));
    assert!(
        Definition::from_json(&goto.to_string()).is_ok(),
        "rules are optional"
    );
    let rework = minimal(json!({
        "a": {"type": "task", "next": "b"},
        "b": {"type": "decision", "rules": [{"when": "!ok", "next": "a"}], "default": "end"},
        "end": {"type": "end", "outcome": "x"}
    }));
    assert!(Definition::from_json(&rework.to_string()).is_ok());
}

#[test]
fn a_quorum_larger_than_the_listed_users_is_refused_unless_groups_may_fill_it() {
    let u = |n: u128| Uuid::from_u128(n).to_string();
    let approval = |approvers: Value| {
        minimal(json!({
            "a": {"type": "approval", "approvers": approvers, "policy": {"quorum": 3},
                  "approved": "end", "rejected": "end"},
            "end": {"type": "end", "outcome": "x"}
        }))
    };
    let issues = invalid_value(approval(json!({"users": [u(1), u(2)]})));
    assert_eq!(
        summary(&issues),
        vec![(Some("a"), Some("policy.quorum"), IssueCode::InvalidQuorum)]
    );
    assert!(
        Definition::from_json(&approval(json!({"users": [u(1)], "groups": ["g"]})).to_string())
            .is_ok()
    );
}

#[test]
fn user_ids_form_fields_and_escalations_are_checked() {
    let issues = invalid_value(minimal(json!({
        "a": {"type": "task", "assignee": "bob", "candidate_users": ["x"],
              "form": [{"id": "ok", "type": "boolean"}, {"id": "ok", "type": "boolean"},
                       {"id": "1st", "type": "colour"}],
              "escalation": {"candidate_groups": ["leads"]}, "next": "end"},
        "end": {"type": "end", "outcome": "x"}
    })));
    assert_eq!(
        summary(&issues),
        vec![
            (Some("a"), Some("assignee"), IssueCode::InvalidUserId),
            (
                Some("a"),
                Some("candidate_users[0]"),
                IssueCode::InvalidUserId
            ),
            (Some("a"), Some("form[1].id"), IssueCode::DuplicateFormField),
            (Some("a"), Some("form[2].id"), IssueCode::InvalidFieldId),
            (Some("a"), Some("form[2].type"), IssueCode::InvalidValue),
            (
                Some("a"),
                Some("escalation"),
                IssueCode::EscalationWithoutDue
            ),
        ]
    );
}

#[test]
fn the_design_example_with_its_placeholder_user_is_refused_by_field() {
    let source = purchase_order_json(finance()).replace(&finance().to_string(), "USER-ID");
    let issues = invalid(&source);
    assert_eq!(
        summary(&issues),
        vec![(Some("finance"), Some("assignee"), IssueCode::InvalidUserId)]
    );
}

#[test]
fn definitions_deserialize_only_when_valid() {
    let ok: Result<Definition, _> = serde_json::from_str(&purchase_order_json(finance()));
    assert!(ok.is_ok());
    let bad: Result<Definition, _> = serde_json::from_value(json!({"key": "k"}));
    assert!(bad.is_err());
}
