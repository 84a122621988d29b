use std::sync::Arc;

use cqrs_es::test::TestFramework;
use event_schemas::{
    Actor, ApprovalOutcome, ChildKind, InstanceStatus, OpenChild, StepRef, WorkflowInstanceEvent,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::*;
use crate::definition::Definition;
use crate::ids::step_child_id;
use crate::testing::{T0, admin, elsewhere, later, member, operator, orchestrator};

type Given = TestFramework<WorkflowInstance>;
use WorkflowInstanceEvent as E;

const ID: Uuid = Uuid::from_u128(0x1D);

/// review (task) -> route (decision on amount) -> big (approval) | small (timer PT1H)
/// -> both (parallel a, b, join j) -> j (task) -> done
fn definition() -> Arc<PublishedDefinition> {
    let value = json!({
        "key": "flow", "name": "Flow", "start": "review",
        "steps": {
            "review": {"type": "task", "name": "Review", "candidate_groups": ["clerks"], "due": "P1D", "next": "route"},
            "route": {"type": "decision", "rules": [{"when": "amount > 100", "next": "big"}], "default": "small"},
            "big": {"type": "approval", "approvers": {"groups": ["board"]}, "policy": "all",
                    "approved": "both", "rejected": "no"},
            "small": {"type": "timer", "duration": "PT1H", "next": "both"},
            "both": {"type": "parallel", "branches": ["a", "b"], "join": "j"},
            "a": {"type": "task", "next": "j"},
            "b": {"type": "task", "next": "j"},
            "j": {"type": "task", "next": "done"},
            "done": {"type": "end", "outcome": "ok"},
            "no": {"type": "end", "outcome": "refused"}
        }
    });
    Arc::new(PublishedDefinition {
        version: 3,
        definition: Definition::from_value(&value).unwrap(),
    })
}

fn vars(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn start_command(caller: Caller) -> Command<InstanceCommand> {
    Command::new(
        caller,
        T0,
        InstanceCommand::Start(StartInstance {
            instance_id: ID,
            definition: definition(),
            business_key: Some("PO-1".into()),
            variables: vars(json!({"amount": 500})),
        }),
    )
}

fn started() -> E {
    E::InstanceStarted {
        instance_id: ID,
        tenant_id: "acme".into(),
        definition_key: "flow".into(),
        definition_version: 3,
        business_key: Some("PO-1".into()),
        variables: vars(json!({"amount": 500})),
        started_by: operator().actor,
        started_at: T0,
    }
}

fn task_activated(step: &str, activation: u32, scope: Vec<StepRef>) -> E {
    let review = step == "review";
    E::TaskStepActivated {
        step_id: step.into(),
        activation,
        definition_key: "flow".into(),
        definition_version: 3,
        task_id: step_child_id(ID, step, activation),
        name: if review { "Review".into() } else { step.into() },
        description: None,
        assignee: None,
        candidate_users: vec![],
        candidate_groups: if review {
            vec!["clerks".into()]
        } else {
            vec![]
        },
        form: vec![],
        due_at: review.then(|| later(24)),
        escalation: None,
        scope,
        activated_at: T0,
    }
}

fn advance(step: &str, activation: u32, output: Value) -> Command<InstanceCommand> {
    advance_on(definition(), step, activation, output, T0)
}

/// The orchestrator completing `step`'s task at `at` on the instance of `definition`.
fn advance_on(
    definition: Arc<PublishedDefinition>,
    step: &str,
    activation: u32,
    output: Value,
    at: DateTime<Utc>,
) -> Command<InstanceCommand> {
    Command::new(
        orchestrator(),
        at,
        InstanceCommand::Advance {
            definition,
            advance: Advance::CompleteTask {
                step_id: step.into(),
                activation,
                task_id: step_child_id(ID, step, activation),
                output: vars(output),
                completed_by: Actor::User(Uuid::from_u128(5)),
            },
        },
    )
}

/// Replays `events` from scratch and returns them with the resulting state.
fn history(commands: Vec<Command<InstanceCommand>>) -> (Vec<E>, WorkflowInstance) {
    let mut state = WorkflowInstance::default();
    let mut all = Vec::new();
    for command in commands {
        for event in state.decide(command).unwrap() {
            state.apply(event.clone());
            all.push(event);
        }
    }
    (all, state)
}

#[test]
fn an_operator_starts_an_instance_which_waits_on_its_first_task() {
    Given::with(())
        .given_no_previous_events()
        .when(start_command(operator()))
        .then_expect_events(vec![started(), task_activated("review", 1, vec![])]);
}

#[test]
fn members_cannot_start_and_an_id_is_started_once() {
    Given::with(())
        .given_no_previous_events()
        .when(start_command(member(Uuid::from_u128(3))))
        .then_expect_error(InstanceError::MissingRole {
            action: "start workflow instances",
            roles: "operators and admins",
        });
    Given::with(())
        .given(vec![started()])
        .when(start_command(operator()))
        .then_expect_error(InstanceError::AlreadyExists);
}

#[test]
fn completing_a_task_merges_its_output_and_walks_decision_and_approval() {
    let events = Given::with(())
        .given(vec![started(), task_activated("review", 1, vec![])])
        .when(advance("review", 1, json!({"amount": 1000, "note": "ok"})))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(matches!(&events[0], E::TaskStepCompleted { variables, .. }
        if variables == &vars(json!({"amount": 1000, "note": "ok"}))));
    assert!(matches!(&events[1], E::DecisionTaken { rule: Some(0), next, .. } if next == "big"));
    assert!(
        matches!(&events[2], E::ApprovalStepActivated { approval_id, .. }
        if *approval_id == step_child_id(ID, "big", 1))
    );
}

#[test]
fn the_default_route_is_taken_when_no_rule_holds() {
    let events = Given::with(())
        .given(vec![started(), task_activated("review", 1, vec![])])
        .when(advance("review", 1, json!({"amount": 5})))
        .inspect_result()
        .unwrap();
    assert!(matches!(&events[1], E::DecisionTaken { rule: None, next, .. } if next == "small"));
    assert!(matches!(&events[2], E::TimerStarted { fire_at, .. } if *fire_at == later(1)));
}

fn retry(step: &str, variables: Value) -> Command<InstanceCommand> {
    retry_on(definition(), step, variables, later(1))
}

/// An operator retrying the incident at `step` at `at`, with `variables` set.
fn retry_on(
    definition: Arc<PublishedDefinition>,
    step: &str,
    variables: Value,
    at: DateTime<Utc>,
) -> Command<InstanceCommand> {
    Command::new(
        operator(),
        at,
        InstanceCommand::RetryIncident {
            definition,
            step_id: step.into(),
            variables: vars(variables),
        },
    )
}

#[test]
fn a_rule_that_cannot_be_evaluated_raises_an_incident_and_its_path_waits_there() {
    let (events, state) = history(vec![
        start_command(operator()),
        advance("review", 1, json!({"amount": "lots"})),
    ]);
    let Some(E::IncidentRaised {
        step_id,
        activation,
        reason,
        scope,
        raised_at,
    }) = events.last()
    else {
        panic!("{events:#?}");
    };
    assert_eq!((step_id.as_str(), *activation), ("route", 1));
    assert!(reason.contains("amount > 100"), "{reason}");
    assert!(scope.is_empty());
    assert_eq!(*raised_at, T0);
    assert!(!events.iter().any(|e| matches!(e, E::InstanceFailed { .. })));
    assert_eq!(state.status(), InstanceStatus::Running);
    assert!(state.open_steps().is_empty());
    assert_eq!(state.incidents().len(), 1);
    // the path keeps its activation: the retried decision is taken as route's first
    assert_eq!(state.activation_count("route"), 1);
}

#[test]
fn an_operator_sets_variables_and_retries_and_the_walk_goes_on_from_the_decision() {
    let (events, state) = history(vec![
        start_command(operator()),
        advance("review", 1, json!({"amount": "lots"})),
        retry("route", json!({"amount": 5})),
    ]);
    let retried = events
        .iter()
        .position(|e| matches!(e, E::IncidentRetried { .. }))
        .unwrap();
    let after = &events[retried..];
    assert!(
        matches!(&after[0], E::IncidentRetried { step_id, variables, retried_by, .. }
        if step_id == "route" && variables["amount"] == 5 && *retried_by == operator().actor)
    );
    assert!(
        matches!(&after[1], E::DecisionTaken { step_id, activation: 1, next, .. }
        if step_id == "route" && next == "small")
    );
    assert!(matches!(&after[2], E::TimerStarted { step_id, .. } if step_id == "small"));
    assert!(state.incidents().is_empty());
    assert_eq!(state.variables()["amount"], 5);

    // still not evaluable: recorded, and the path waits again
    let (events, state) = history(vec![
        start_command(operator()),
        advance("review", 1, json!({"amount": "lots"})),
        retry("route", json!({"amount": "more"})),
    ]);
    let n = events.len();
    assert!(matches!(&events[n - 2], E::IncidentRetried { .. }));
    assert!(matches!(&events[n - 1], E::IncidentRaised { step_id, .. } if step_id == "route"));
    assert_eq!(state.incidents().len(), 1);
}

#[test]
fn retrying_needs_an_operator_an_incident_at_the_step_and_a_running_instance() {
    let given = vec![
        started(),
        task_activated("review", 1, vec![]),
        E::TaskStepCompleted {
            step_id: "review".into(),
            activation: 1,
            task_id: step_child_id(ID, "review", 1),
            output: vars(json!({"amount": "lots"})),
            variables: vars(json!({"amount": "lots"})),
            completed_by: Actor::User(Uuid::from_u128(5)),
            completed_at: T0,
        },
        E::IncidentRaised {
            step_id: "route".into(),
            activation: 1,
            reason: "decision route: rule 0 could not be evaluated".into(),
            scope: vec![],
            raised_at: T0,
        },
    ];
    let refused = |command: Command<InstanceCommand>, given: Vec<E>| {
        Given::with(())
            .given(given)
            .when(command)
            .inspect_result()
            .unwrap_err()
    };
    let mut by_member = retry("route", json!({"amount": 5}));
    by_member.caller = member(Uuid::from_u128(7));
    assert_eq!(refused(by_member, given.clone()).code(), "forbidden");
    assert_eq!(
        refused(retry("review", json!({})), given.clone()),
        InstanceError::NoIncident {
            step_id: "review".into()
        }
    );
    let mut elsewhere_retry = retry("route", json!({}));
    elsewhere_retry.caller = elsewhere(operator());
    assert_eq!(
        refused(elsewhere_retry, given.clone()),
        InstanceError::NotFound
    );
    let mut cancelled = given;
    cancelled.push(E::InstanceCancelled {
        reason: "no longer needed".into(),
        open_children: vec![],
        cancelled_by: operator().actor,
        cancelled_at: T0,
    });
    assert_eq!(
        refused(retry("route", json!({"amount": 5})), cancelled).code(),
        "instance_ended"
    );
}

/// parallel p: branch d (a decision on x, to the join) and branch t (a task), joined at j.
fn branching() -> Arc<PublishedDefinition> {
    let value = json!({
        "key": "flow", "name": "Flow", "start": "p",
        "steps": {
            "p": {"type": "parallel", "branches": ["d", "t"], "join": "j"},
            "d": {"type": "decision", "rules": [{"when": "x > 1", "next": "j"}], "default": "j"},
            "t": {"type": "task", "next": "j"},
            "j": {"type": "task", "next": "done"},
            "done": {"type": "end", "outcome": "ok"}
        }
    });
    Arc::new(PublishedDefinition {
        version: 3,
        definition: Definition::from_value(&value).unwrap(),
    })
}

#[test]
fn an_incident_in_one_branch_leaves_the_others_running_and_its_retry_reaches_the_join() {
    let complete_t = advance_on(branching(), "t", 1, json!({}), later(2));
    let retry_d = retry_on(branching(), "d", json!({"x": 2}), later(1));
    let (events, state) = history(vec![start_of(&branching())]);
    let parallel = StepRef {
        step_id: "p".into(),
        activation: 1,
    };
    assert!(events.iter().any(|e| matches!(e,
        E::IncidentRaised { step_id, scope, .. } if step_id == "d" && *scope == [parallel.clone()])));
    assert!(events.iter().any(|e| matches!(e,
        E::TaskStepActivated { step_id, .. } if step_id == "t")));
    assert_eq!(state.status(), InstanceStatus::Running);

    let (events, state) = history(vec![start_of(&branching()), retry_d, complete_t]);
    let joined: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            E::BranchJoined { arrived, .. } => Some(*arrived),
            _ => None,
        })
        .collect();
    assert_eq!(joined, [1, 2]);
    assert!(events.iter().any(|e| matches!(e,
        E::TaskStepActivated { step_id, scope, .. } if step_id == "j" && scope.is_empty())));
    assert!(state.incidents().is_empty());
    assert_eq!(state.status(), InstanceStatus::Running);
}

#[test]
fn a_parallel_opens_every_branch_and_the_join_runs_once_after_all_arrived() {
    let timer = |step: &str| {
        Command::new(
            orchestrator(),
            later(2),
            InstanceCommand::Advance {
                definition: definition(),
                advance: Advance::FireTimer {
                    step_id: step.into(),
                    activation: 1,
                },
            },
        )
    };
    let (events, state) = history(vec![
        start_command(operator()),
        advance("review", 1, json!({"amount": 5})),
        timer("small"),
    ]);
    let activated: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            E::TaskStepActivated { step_id, scope, .. } => Some((step_id.as_str(), scope.len())),
            _ => None,
        })
        .collect();
    assert_eq!(activated, vec![("review", 0), ("a", 1), ("b", 1)]);
    assert_eq!(state.open_steps().len(), 2);

    let mut state = state;
    let first = state.decide(advance("a", 1, json!({}))).unwrap();
    assert!(matches!(
        first.as_slice(),
        [
            E::TaskStepCompleted { .. },
            E::BranchJoined {
                arrived: 1,
                expected: 2,
                ..
            }
        ]
    ));
    for e in first {
        state.apply(e);
    }
    let second = state.decide(advance("b", 1, json!({}))).unwrap();
    assert!(matches!(
        second.as_slice(),
        [E::TaskStepCompleted { .. }, E::BranchJoined { arrived: 2, expected: 2, .. }, E::TaskStepActivated { step_id, scope, .. }]
            if step_id == "j" && scope.is_empty()
    ));
    for e in second {
        state.apply(e);
    }
    let done = state.decide(advance("j", 1, json!({}))).unwrap();
    assert!(matches!(done.last(), Some(E::InstanceCompleted { outcome, .. }) if outcome == "ok"));
}

#[test]
fn advancing_the_same_step_activation_twice_is_a_no_op() {
    Given::with(())
        .given(vec![
            started(),
            task_activated("review", 1, vec![]),
            E::TaskStepCompleted {
                step_id: "review".into(),
                activation: 1,
                task_id: step_child_id(ID, "review", 1),
                output: Map::new(),
                variables: vars(json!({"amount": 500})),
                completed_by: Actor::User(Uuid::from_u128(5)),
                completed_at: T0,
            },
        ])
        .when(advance("review", 1, json!({})))
        .then_expect_events(vec![]);
}

#[test]
fn advancing_an_activation_that_never_was_is_rejected() {
    Given::with(())
        .given(vec![started(), task_activated("review", 1, vec![])])
        .when(advance("review", 2, json!({})))
        .then_expect_error(InstanceError::UnknownActivation {
            step_id: "review".into(),
            activation: 2,
        });
}

#[test]
fn advances_must_match_the_step_kind_child_and_definition_version() {
    let approval = Command::new(
        orchestrator(),
        T0,
        InstanceCommand::Advance {
            definition: definition(),
            advance: Advance::CompleteApproval {
                step_id: "review".into(),
                activation: 1,
                approval_id: Uuid::nil(),
                outcome: ApprovalOutcome::Approved,
            },
        },
    );
    Given::with(())
        .given(vec![started(), task_activated("review", 1, vec![])])
        .when(approval)
        .then_expect_error(InstanceError::WrongStepKind {
            step_id: "review".into(),
            expected: ChildKind::Task,
        });
    let mut other_version = (*definition()).clone();
    other_version.version = 4;
    let mismatched = Command::new(
        orchestrator(),
        T0,
        InstanceCommand::Advance {
            definition: Arc::new(other_version),
            advance: Advance::FireTimer {
                step_id: "small".into(),
                activation: 1,
            },
        },
    );
    Given::with(())
        .given(vec![started(), task_activated("review", 1, vec![])])
        .when(mismatched)
        .then_expect_error(InstanceError::DefinitionMismatch {
            expected_key: "flow".into(),
            expected_version: 3,
            found_key: "flow".into(),
            found_version: 4,
        });
    let mut wrong_task = advance("review", 1, json!({}));
    if let InstanceCommand::Advance {
        advance: Advance::CompleteTask { task_id, .. },
        ..
    } = &mut wrong_task.command
    {
        *task_id = Uuid::nil();
    }
    let error = Given::with(())
        .given(vec![started(), task_activated("review", 1, vec![])])
        .when(wrong_task)
        .inspect_result()
        .unwrap_err();
    assert_eq!(error.code(), "invalid_command");
}

#[test]
fn a_timer_does_not_fire_early() {
    let (events, _) = history(vec![
        start_command(operator()),
        advance("review", 1, json!({"amount": 5})),
    ]);
    let early = Command::new(
        orchestrator(),
        T0,
        InstanceCommand::Advance {
            definition: definition(),
            advance: Advance::FireTimer {
                step_id: "small".into(),
                activation: 1,
            },
        },
    );
    Given::with(())
        .given(events)
        .when(early)
        .then_expect_error(InstanceError::NotDue {
            step_id: "small".into(),
            due_at: later(1),
        });
}

#[test]
fn only_the_orchestrator_and_admins_advance() {
    let mut by_operator = advance("review", 1, json!({}));
    by_operator.caller = operator();
    Given::with(())
        .given(vec![started(), task_activated("review", 1, vec![])])
        .when(by_operator)
        .then_expect_error(InstanceError::MissingRole {
            action: "advance workflow instances",
            roles: "the orchestrator and admins",
        });
}

#[test]
fn cancelling_lists_the_open_children() {
    let cancel = |caller| {
        Command::new(
            caller,
            T0,
            InstanceCommand::Cancel {
                reason: "duplicate".into(),
            },
        )
    };
    Given::with(())
        .given(vec![started(), task_activated("review", 1, vec![])])
        .when(cancel(operator()))
        .then_expect_events(vec![E::InstanceCancelled {
            reason: "duplicate".into(),
            open_children: vec![OpenChild {
                kind: ChildKind::Task,
                id: step_child_id(ID, "review", 1),
                step_id: "review".into(),
                activation: 1,
            }],
            cancelled_by: operator().actor,
            cancelled_at: T0,
        }]);
    Given::with(())
        .given(vec![started(), task_activated("review", 1, vec![])])
        .when(cancel(member(Uuid::from_u128(9))))
        .then_expect_error(InstanceError::MissingRole {
            action: "cancel workflow instances",
            roles: "operators and admins",
        });
    let cancelled = E::InstanceCancelled {
        reason: "duplicate".into(),
        open_children: vec![],
        cancelled_by: operator().actor,
        cancelled_at: T0,
    };
    Given::with(())
        .given(vec![started(), cancelled])
        .when(cancel(admin()))
        .then_expect_error(InstanceError::Ended {
            status: InstanceStatus::Cancelled,
        });
    let error = Given::with(())
        .given(vec![started()])
        .when(Command::new(
            operator(),
            T0,
            InstanceCommand::Cancel { reason: " ".into() },
        ))
        .inspect_result()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Validation);
}

#[test]
fn its_starter_and_operators_attach_documents_while_it_runs() {
    let starter = member(Uuid::from_u128(7));
    let started_by_member = E::InstanceStarted {
        instance_id: ID,
        tenant_id: "acme".into(),
        definition_key: "flow".into(),
        definition_version: 3,
        business_key: None,
        variables: Map::new(),
        started_by: starter.actor.clone(),
        started_at: T0,
    };
    let file = event_schemas::DocumentFile {
        document_id: Uuid::from_u128(0xD0C),
        name: "quote.pdf".into(),
        media_type: "application/pdf".into(),
        size: 3,
        sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
    };
    let attach = |caller| {
        Command::new(
            caller,
            T0,
            InstanceCommand::Document(DocumentCommand::Attach(file.clone())),
        )
    };
    let attached = |caller: &Caller| E::InstanceDocumentAttached {
        document: file.clone(),
        attached_by: caller.actor.clone(),
        attached_at: T0,
    };
    Given::with(())
        .given(vec![started_by_member.clone()])
        .when(attach(starter.clone()))
        .then_expect_events(vec![attached(&starter)]);
    Given::with(())
        .given(vec![started_by_member.clone()])
        .when(attach(operator()))
        .then_expect_events(vec![attached(&operator())]);
    Given::with(())
        .given(vec![started()])
        .when(attach(member(Uuid::from_u128(8))))
        .then_expect_error(InstanceError::MissingRole {
            action: "attach documents to this workflow instance",
            roles: "its starter, operators and admins",
        });
    let cancelled = E::InstanceCancelled {
        reason: "duplicate".into(),
        open_children: vec![],
        cancelled_by: operator().actor,
        cancelled_at: T0,
    };
    Given::with(())
        .given(vec![started_by_member.clone(), cancelled])
        .when(attach(starter.clone()))
        .then_expect_error(InstanceError::Ended {
            status: InstanceStatus::Cancelled,
        });
    let remove = |caller| {
        Command::new(
            caller,
            T0,
            InstanceCommand::Document(DocumentCommand::Remove {
                document_id: file.document_id,
                reason: None,
            }),
        )
    };
    Given::with(())
        .given(vec![started_by_member.clone(), attached(&operator())])
        .when(remove(starter.clone()))
        .then_expect_error(InstanceError::Document(DocumentError::NotAttacher));
    Given::with(())
        .given(vec![started_by_member, attached(&starter)])
        .when(remove(starter.clone()))
        .then_expect_events(vec![E::InstanceDocumentRemoved {
            document_id: file.document_id,
            reason: None,
            removed_by: starter.actor.clone(),
            removed_at: T0,
        }]);
}

#[test]
fn the_orchestrator_fails_a_running_instance_and_repeating_it_is_a_no_op() {
    let fail = || {
        Command::new(
            orchestrator(),
            T0,
            InstanceCommand::Fail {
                reason: "group board unknown".into(),
            },
        )
    };
    let failed = E::InstanceFailed {
        reason: "group board unknown".into(),
        step_id: None,
        open_children: vec![],
        failed_by: orchestrator().actor,
        failed_at: T0,
    };
    Given::with(())
        .given(vec![started()])
        .when(fail())
        .then_expect_events(vec![failed.clone()]);
    Given::with(())
        .given(vec![started(), failed])
        .when(fail())
        .then_expect_events(vec![]);
    Given::with(())
        .given(vec![started()])
        .when(Command::new(
            operator(),
            T0,
            InstanceCommand::Fail { reason: "x".into() },
        ))
        .then_expect_error(InstanceError::MissingRole {
            action: "fail workflow instances",
            roles: "the orchestrator and admins",
        });
}

#[test]
fn another_tenants_instance_looks_missing() {
    Given::with(())
        .given(vec![started()])
        .when(Command::new(
            elsewhere(operator()),
            T0,
            InstanceCommand::Cancel { reason: "x".into() },
        ))
        .then_expect_error(InstanceError::NotFound);
    Given::with(())
        .given_no_previous_events()
        .when(Command::new(
            operator(),
            T0,
            InstanceCommand::Cancel { reason: "x".into() },
        ))
        .then_expect_error(InstanceError::NotFound);
}

#[test]
fn a_branch_that_reaches_an_end_completes_the_instance_and_cancels_the_other_branches() {
    let value = json!({
        "key": "race", "name": "Race", "start": "p",
        "steps": {
            "p": {"type": "parallel", "branches": ["slow", "quick"], "join": "j"},
            "slow": {"type": "task", "next": "j"},
            "quick": {"type": "decision", "rules": [{"when": "abort", "next": "stop"}], "default": "j"},
            "j": {"type": "task", "next": "done"},
            "stop": {"type": "end", "outcome": "aborted"},
            "done": {"type": "end", "outcome": "ok"}
        }
    });
    let published = Arc::new(PublishedDefinition {
        version: 1,
        definition: Definition::from_value(&value).unwrap(),
    });
    let start = Command::new(
        operator(),
        T0,
        InstanceCommand::Start(StartInstance {
            instance_id: ID,
            definition: published,
            business_key: None,
            variables: vars(json!({"abort": true})),
        }),
    );
    let events = WorkflowInstance::default().decide(start).unwrap();
    let Some(E::InstanceCompleted {
        outcome,
        cancelled_children,
        ..
    }) = events.last()
    else {
        panic!("{events:#?}");
    };
    assert_eq!(outcome, "aborted");
    assert_eq!(
        cancelled_children,
        &vec![OpenChild {
            kind: ChildKind::Task,
            id: step_child_id(ID, "slow", 1),
            step_id: "slow".into(),
            activation: 1,
        }]
    );
    assert!(matches!(&events[2], E::TaskStepActivated { scope, .. } if *scope == scope_of_p()));
}

fn scope_of_p() -> Vec<StepRef> {
    vec![StepRef {
        step_id: "p".into(),
        activation: 1,
    }]
}

#[test]
fn two_paths_parked_at_one_decision_keep_their_own_activations_and_a_retry_resumes_both() {
    // parallel p: branches a and b (tasks) both go through decision d, then join at j
    let value = json!({
        "key": "flow", "name": "Flow", "start": "p",
        "steps": {
            "p": {"type": "parallel", "branches": ["a", "b"], "join": "j"},
            "a": {"type": "task", "next": "d"},
            "b": {"type": "task", "next": "d"},
            "d": {"type": "decision", "rules": [{"when": "x > 1", "next": "j"}], "default": "j"},
            "j": {"type": "task", "next": "done"},
            "done": {"type": "end", "outcome": "ok"}
        }
    });
    let definition = Arc::new(PublishedDefinition {
        version: 3,
        definition: Definition::from_value(&value).unwrap(),
    });
    let complete = |step: &str| advance_on(definition.clone(), step, 1, json!({}), later(1));
    let retry = retry_on(definition.clone(), "d", json!({"x": 2}), later(2));
    let (events, state) = history(vec![start_of(&definition), complete("a"), complete("b")]);
    let raised: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            E::IncidentRaised { activation, .. } => Some(*activation),
            _ => None,
        })
        .collect();
    assert_eq!(raised, [1, 2]);
    assert_eq!(state.incidents().len(), 2);

    let (_, before) = history(vec![start_of(&definition), complete("a"), complete("b")]);
    let mut after = before.clone();
    let events = after.decide(retry).unwrap();
    for event in &events {
        after.apply(event.clone());
    }
    let taken: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            E::DecisionTaken { activation, .. } => Some(*activation),
            _ => None,
        })
        .collect();
    assert_eq!(taken, [1, 2]);
    assert!(after.incidents().is_empty());
    assert!(events.iter().any(|e| matches!(e,
        E::TaskStepActivated { step_id, .. } if step_id == "j")));
}

fn start_of(definition: &Arc<PublishedDefinition>) -> Command<InstanceCommand> {
    Command::new(
        operator(),
        T0,
        InstanceCommand::Start(StartInstance {
            instance_id: ID,
            definition: definition.clone(),
            business_key: None,
            variables: Map::new(),
        }),
    )
}
