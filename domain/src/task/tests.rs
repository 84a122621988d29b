use cqrs_es::test::TestFramework;
use event_schemas::{Actor, Escalation, FieldType, FormField, TaskEvent, TaskStatus, WorkflowRef};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::*;
use crate::caller::Caller;
use crate::testing::{
    T0, admin, auditor, elsewhere, later, member, member_of, operator, orchestrator,
};

type Given = TestFramework<Task>;

const TASK: Uuid = Uuid::from_u128(0x7A5C);
const ANN: Uuid = Uuid::from_u128(0xA11);
const BOB: Uuid = Uuid::from_u128(0xB0B);
const INSTANCE: Uuid = Uuid::from_u128(0x1);

fn ann() -> Caller {
    member_of(ANN, &["clerks"])
}

fn bob() -> Caller {
    member_of(BOB, &["legal"])
}

fn cmd(caller: Caller, command: TaskCommand) -> Command<TaskCommand> {
    Command::new(caller, T0, command)
}

fn workflow() -> WorkflowRef {
    WorkflowRef {
        instance_id: INSTANCE,
        definition_key: "purchase-order".into(),
        definition_version: 1,
        step_id: "review".into(),
        activation: 1,
    }
}

fn open_task(workflow: Option<WorkflowRef>) -> OpenTask {
    OpenTask {
        task_id: TASK,
        workflow,
        name: "Review request".into(),
        description: None,
        assignee: None,
        candidate_users: vec![],
        candidate_groups: vec!["clerks".into()],
        form: vec![FormField {
            id: "amount".into(),
            field_type: FieldType::Number,
            required: true,
            label: None,
        }],
        due_at: Some(later(48)),
        escalation: Some(Escalation {
            candidate_users: vec![],
            candidate_groups: vec!["leads".into()],
        }),
    }
}

fn opened_with(open: OpenTask, by: &Caller) -> TaskEvent {
    TaskEvent::TaskOpened {
        task_id: open.task_id,
        tenant_id: "acme".into(),
        workflow: open.workflow,
        name: open.name,
        description: open.description,
        assignee: open.assignee,
        candidate_users: open.candidate_users,
        candidate_groups: open.candidate_groups,
        form: open.form,
        due_at: open.due_at,
        escalation: open.escalation,
        opened_by: by.actor.clone(),
        opened_at: T0,
    }
}

/// A workflow task opened by the orchestrator.
fn opened() -> TaskEvent {
    opened_with(open_task(Some(workflow())), &orchestrator())
}

/// An ad-hoc task opened by an operator.
fn opened_ad_hoc() -> TaskEvent {
    opened_with(open_task(None), &operator())
}

fn claimed(user: Uuid) -> TaskEvent {
    TaskEvent::TaskClaimed {
        user_id: user,
        claimed_at: T0,
    }
}

fn output(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn completed() -> TaskEvent {
    TaskEvent::TaskCompleted {
        workflow: Some(workflow()),
        output: output(json!({"amount": 12000})),
        completed_by: Actor::User(ANN),
        completed_at: T0,
    }
}

fn cancelled() -> TaskEvent {
    TaskEvent::TaskCancelled {
        reason: "instance cancelled".into(),
        cancelled_by: orchestrator().actor,
        cancelled_at: T0,
    }
}

// open

#[test]
fn the_orchestrator_opens_a_workflow_task() {
    Given::with(())
        .given_no_previous_events()
        .when(cmd(
            orchestrator(),
            TaskCommand::from(open_task(Some(workflow()))),
        ))
        .then_expect_events(vec![opened()]);
}

#[test]
fn opening_an_existing_task_again_is_a_no_op() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(
            orchestrator(),
            TaskCommand::from(open_task(Some(workflow()))),
        ))
        .then_expect_events(vec![]);
}

#[test]
fn an_id_taken_is_refused_unless_the_orchestrator_opens_the_same_step_again() {
    // an ad-hoc task sent again
    Given::with(())
        .given(vec![opened_ad_hoc()])
        .when(cmd(operator(), TaskCommand::from(open_task(None))))
        .then_expect_error(TaskError::AlreadyExists);
    // an ad-hoc task in a workflow step's place does not become the step
    Given::with(())
        .given(vec![opened_ad_hoc()])
        .when(cmd(
            orchestrator(),
            TaskCommand::from(open_task(Some(workflow()))),
        ))
        .then_expect_error(TaskError::AlreadyExists);
    // another step's task
    let mut other = workflow();
    other.activation = 2;
    Given::with(())
        .given(vec![opened()])
        .when(cmd(
            orchestrator(),
            TaskCommand::from(open_task(Some(other))),
        ))
        .then_expect_error(TaskError::AlreadyExists);
}

#[test]
fn an_operator_opens_an_ad_hoc_task_but_not_a_workflow_task() {
    Given::with(())
        .given_no_previous_events()
        .when(cmd(operator(), TaskCommand::from(open_task(None))))
        .then_expect_events(vec![opened_ad_hoc()]);
    Given::with(())
        .given_no_previous_events()
        .when(cmd(
            operator(),
            TaskCommand::from(open_task(Some(workflow()))),
        ))
        .then_expect_error(TaskError::MissingRole {
            action: "open workflow tasks",
            roles: "the orchestrator",
        });
}

#[test]
fn members_cannot_open_tasks() {
    Given::with(())
        .given_no_previous_events()
        .when(cmd(ann(), TaskCommand::from(open_task(None))))
        .then_expect_error(TaskError::MissingRole {
            action: "open tasks",
            roles: "operators and admins",
        });
}

#[test]
fn an_invalid_open_lists_every_problem() {
    let mut open = open_task(None);
    open.name = " ".into();
    open.due_at = None;
    open.form.push(open.form[0].clone());
    let issues = Given::with(())
        .given_no_previous_events()
        .when(cmd(operator(), TaskCommand::from(open)))
        .inspect_result()
        .unwrap_err();
    let codes: Vec<_> = issues.issues().iter().map(|i| i.code).collect();
    assert_eq!(
        codes,
        vec![
            IssueCode::Empty,
            IssueCode::DuplicateFormField,
            IssueCode::EscalationWithoutDue
        ]
    );
    assert_eq!(issues.kind(), ErrorKind::Validation);
}

#[test]
fn an_existing_id_in_another_tenant_is_a_conflict() {
    Given::with(())
        .given(vec![opened_ad_hoc()])
        .when(cmd(
            elsewhere(operator()),
            TaskCommand::from(open_task(None)),
        ))
        .then_expect_error(TaskError::AlreadyExists);
}

// tenancy and existence

#[test]
fn a_missing_task_and_another_tenants_task_look_the_same() {
    Given::with(())
        .given_no_previous_events()
        .when(cmd(ann(), TaskCommand::Claim))
        .then_expect_error(TaskError::NotFound);
    Given::with(())
        .given(vec![opened()])
        .when(cmd(elsewhere(ann()), TaskCommand::Claim))
        .then_expect_error(TaskError::NotFound);
}

// claim

#[test]
fn a_candidate_claims_an_unassigned_task() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(ann(), TaskCommand::Claim))
        .then_expect_events(vec![claimed(ANN)]);
}

#[test]
fn a_listed_candidate_user_may_claim_too() {
    let mut open = open_task(None);
    open.candidate_groups.clear();
    open.candidate_users = vec![BOB];
    Given::with(())
        .given(vec![opened_with(open, &operator())])
        .when(cmd(member(BOB), TaskCommand::Claim))
        .then_expect_events(vec![claimed(BOB)]);
}

#[test]
fn a_member_who_is_not_a_candidate_cannot_claim() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(bob(), TaskCommand::Claim))
        .then_expect_error(TaskError::NotACandidate);
}

#[test]
fn a_member_who_is_not_a_candidate_learns_nothing_of_the_assignee() {
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(bob(), TaskCommand::Claim))
        .then_expect_error(TaskError::NotACandidate);
}

#[test]
fn claiming_a_task_assigned_to_someone_else_is_a_conflict_and_to_oneself_a_no_op() {
    Given::with(())
        .given(vec![opened(), claimed(BOB)])
        .when(cmd(ann(), TaskCommand::Claim))
        .then_expect_error(TaskError::AlreadyAssigned { assignee: BOB });
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(ann(), TaskCommand::Claim))
        .then_expect_events(vec![]);
}

#[test]
fn auditors_and_services_cannot_claim() {
    let mut clerk_auditor = auditor();
    clerk_auditor.groups = vec!["clerks".into()];
    Given::with(())
        .given(vec![opened()])
        .when(cmd(clerk_auditor, TaskCommand::Claim))
        .then_expect_error(TaskError::MissingRole {
            action: "work on tasks",
            roles: "members",
        });
    Given::with(())
        .given(vec![opened()])
        .when(cmd(orchestrator(), TaskCommand::Claim))
        .then_expect_error(TaskError::MissingRole {
            action: "claim tasks",
            roles: "people",
        });
}

// release

#[test]
fn the_assignee_releases_a_task() {
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(ann(), TaskCommand::Release))
        .then_expect_events(vec![TaskEvent::TaskReleased {
            user_id: ANN,
            released_by: Actor::User(ANN),
            released_at: T0,
        }]);
}

#[test]
fn only_the_assignee_or_an_operator_releases() {
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(member_of(BOB, &["clerks"]), TaskCommand::Release))
        .then_expect_error(TaskError::NotAssignee);
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(operator(), TaskCommand::Release))
        .inspect_result()
        .unwrap();
    Given::with(())
        .given(vec![opened()])
        .when(cmd(ann(), TaskCommand::Release))
        .then_expect_error(TaskError::NotAssigned);
}

// assign

#[test]
fn an_operator_assigns_and_reassigns() {
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(operator(), TaskCommand::Assign { user_id: BOB }))
        .then_expect_events(vec![TaskEvent::TaskAssigned {
            user_id: BOB,
            previous_assignee: Some(ANN),
            assigned_by: operator().actor,
            assigned_at: T0,
        }]);
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(operator(), TaskCommand::Assign { user_id: ANN }))
        .then_expect_events(vec![]);
}

#[test]
fn members_cannot_assign() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(ann(), TaskCommand::Assign { user_id: ANN }))
        .then_expect_error(TaskError::MissingRole {
            action: "assign tasks",
            roles: "operators and admins",
        });
}

// delegate

#[test]
fn the_assignee_delegates_and_it_is_recorded() {
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(ann(), TaskCommand::Delegate { user_id: BOB }))
        .then_expect_events(vec![TaskEvent::TaskDelegated {
            from_user_id: ANN,
            to_user_id: BOB,
            delegated_by: Actor::User(ANN),
            delegated_at: T0,
        }]);
}

#[test]
fn delegation_needs_the_assignee_an_assignment_and_another_user() {
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(bob(), TaskCommand::Delegate { user_id: BOB }))
        .then_expect_error(TaskError::NotAssignee);
    Given::with(())
        .given(vec![opened()])
        .when(cmd(ann(), TaskCommand::Delegate { user_id: BOB }))
        .then_expect_error(TaskError::NotAssigned);
    let same = Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(ann(), TaskCommand::Delegate { user_id: ANN }))
        .inspect_result()
        .unwrap_err();
    assert_eq!(same.code(), "invalid_command");
}

#[test]
fn the_delegate_may_then_complete() {
    let delegated = TaskEvent::TaskDelegated {
        from_user_id: ANN,
        to_user_id: BOB,
        delegated_by: Actor::User(ANN),
        delegated_at: T0,
    };
    Given::with(())
        .given(vec![opened(), claimed(ANN), delegated])
        .when(cmd(
            member(BOB),
            TaskCommand::Complete {
                output: output(json!({"amount": 5})),
            },
        ))
        .inspect_result()
        .unwrap();
}

// complete

#[test]
fn the_assignee_completes_with_valid_output() {
    Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(
            ann(),
            TaskCommand::Complete {
                output: output(json!({"amount": 12000})),
            },
        ))
        .then_expect_events(vec![completed()]);
}

#[test]
fn output_is_checked_against_the_form() {
    let error = Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(
            ann(),
            TaskCommand::Complete {
                output: output(json!({"amount": "lots"})),
            },
        ))
        .inspect_result()
        .unwrap_err();
    assert_eq!(
        error.issues(),
        &[Issue::field(
            "amount",
            IssueCode::InvalidType,
            "amount must be a number"
        )]
    );
    let error = Given::with(())
        .given(vec![opened(), claimed(ANN)])
        .when(cmd(ann(), TaskCommand::Complete { output: Map::new() }))
        .inspect_result()
        .unwrap_err();
    assert_eq!(error.issues()[0].code, IssueCode::Required);
}

#[test]
fn completing_needs_the_assignment() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(ann(), TaskCommand::Complete { output: Map::new() }))
        .then_expect_error(TaskError::NotAssigned);
    Given::with(())
        .given(vec![opened(), claimed(BOB)])
        .when(cmd(ann(), TaskCommand::Complete { output: Map::new() }))
        .then_expect_error(TaskError::NotAssignee);
}

#[test]
fn an_admin_may_complete_an_unassigned_task() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(
            admin(),
            TaskCommand::Complete {
                output: output(json!({"amount": 1})),
            },
        ))
        .inspect_result()
        .unwrap();
}

#[test]
fn nothing_but_idempotent_service_calls_works_after_completion() {
    let after = || Given::with(()).given(vec![opened(), claimed(ANN), completed()]);
    let closed = TaskError::Closed {
        status: TaskStatus::Completed,
    };
    after()
        .when(cmd(ann(), TaskCommand::Complete { output: Map::new() }))
        .then_expect_error(closed.clone());
    after()
        .when(cmd(ann(), TaskCommand::Release))
        .then_expect_error(closed.clone());
    after()
        .when(cmd(operator(), TaskCommand::Assign { user_id: BOB }))
        .then_expect_error(closed.clone());
    after()
        .when(cmd(
            ann(),
            TaskCommand::Comment {
                text: "late".into(),
            },
        ))
        .then_expect_error(closed.clone());
    after()
        .when(cmd(
            operator(),
            TaskCommand::Cancel {
                reason: "no".into(),
            },
        ))
        .then_expect_error(closed);
    after()
        .when(cmd(
            orchestrator(),
            TaskCommand::Cancel {
                reason: "instance cancelled".into(),
            },
        ))
        .then_expect_events(vec![]);
    after()
        .when(Command::new(
            orchestrator(),
            later(100),
            TaskCommand::MarkOverdue,
        ))
        .then_expect_events(vec![]);
    assert_eq!(
        TaskError::Closed {
            status: TaskStatus::Completed
        }
        .to_string(),
        "the task is already completed"
    );
}

// comment

#[test]
fn candidates_and_assignees_comment_in_an_event_of_its_own() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(
            ann(),
            TaskCommand::Comment {
                text: "on it".into(),
            },
        ))
        .then_expect_events(vec![TaskEvent::TaskCommented {
            author: Actor::User(ANN),
            text: "on it".into(),
            commented_at: T0,
        }]);
}

#[test]
fn outsiders_and_blank_comments_are_refused() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(bob(), TaskCommand::Comment { text: "hi".into() }))
        .then_expect_error(TaskError::NotInvolved);
    let error = Given::with(())
        .given(vec![opened()])
        .when(cmd(ann(), TaskCommand::Comment { text: "  ".into() }))
        .inspect_result()
        .unwrap_err();
    assert_eq!(error.issues()[0].code, IssueCode::Empty);
}

// documents

fn quote() -> event_schemas::DocumentFile {
    event_schemas::DocumentFile {
        document_id: Uuid::from_u128(0xD0C),
        name: "quote.pdf".into(),
        media_type: "application/pdf".into(),
        size: 3,
        sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
    }
}

fn attach() -> TaskCommand {
    TaskCommand::Document(DocumentCommand::Attach(quote()))
}

fn attached_by(caller: &Caller) -> TaskEvent {
    TaskEvent::TaskDocumentAttached {
        document: quote(),
        workflow_instance_id: Some(INSTANCE),
        attached_by: caller.actor.clone(),
        attached_at: T0,
    }
}

#[test]
fn those_who_may_comment_attach_documents_with_the_tasks_instance() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(ann(), attach()))
        .then_expect_events(vec![attached_by(&ann())]);
    Given::with(())
        .given(vec![opened()])
        .when(cmd(bob(), attach()))
        .then_expect_error(TaskError::NotInvolved);
    Given::with(())
        .given(vec![opened(), attached_by(&ann())])
        .when(cmd(operator(), attach()))
        .then_expect_error(TaskError::Document(DocumentError::AlreadyAttached {
            document_id: quote().document_id,
        }));
}

#[test]
fn the_attacher_or_an_operator_removes_a_document_while_the_task_is_open() {
    let remove = || {
        TaskCommand::Document(DocumentCommand::Remove {
            document_id: quote().document_id,
            reason: Some("wrong quote".into()),
        })
    };
    let removed = |caller: &Caller| TaskEvent::TaskDocumentRemoved {
        document_id: quote().document_id,
        reason: Some("wrong quote".into()),
        removed_by: caller.actor.clone(),
        removed_at: T0,
    };
    Given::with(())
        .given(vec![opened(), attached_by(&ann())])
        .when(cmd(ann(), remove()))
        .then_expect_events(vec![removed(&ann())]);
    Given::with(())
        .given(vec![opened(), attached_by(&ann())])
        .when(cmd(operator(), remove()))
        .then_expect_events(vec![removed(&operator())]);
    Given::with(())
        .given(vec![opened(), attached_by(&operator())])
        .when(cmd(ann(), remove()))
        .then_expect_error(TaskError::Document(DocumentError::NotAttacher));
    Given::with(())
        .given(vec![opened(), attached_by(&ann()), removed(&ann())])
        .when(cmd(ann(), remove()))
        .then_expect_error(TaskError::Document(DocumentError::NotFound {
            document_id: quote().document_id,
        }));
    let cancelled = TaskEvent::TaskCancelled {
        reason: "instance cancelled".into(),
        cancelled_by: orchestrator().actor,
        cancelled_at: T0,
    };
    Given::with(())
        .given(vec![opened(), attached_by(&ann()), cancelled])
        .when(cmd(ann(), remove()))
        .then_expect_error(TaskError::Closed {
            status: TaskStatus::Cancelled,
        });
}

// cancel

#[test]
fn an_operator_cancels_an_ad_hoc_task_and_repeating_it_is_a_no_op() {
    let cancel = || {
        cmd(
            operator(),
            TaskCommand::Cancel {
                reason: "not needed".into(),
            },
        )
    };
    Given::with(())
        .given(vec![opened_ad_hoc()])
        .when(cancel())
        .then_expect_events(vec![TaskEvent::TaskCancelled {
            reason: "not needed".into(),
            cancelled_by: operator().actor,
            cancelled_at: T0,
        }]);
    Given::with(())
        .given(vec![opened_ad_hoc(), cancelled()])
        .when(cancel())
        .then_expect_events(vec![]);
}

#[test]
fn workflow_tasks_are_cancelled_through_their_instance_only() {
    Given::with(())
        .given(vec![opened()])
        .when(cmd(admin(), TaskCommand::Cancel { reason: "x".into() }))
        .then_expect_error(TaskError::WorkflowManaged {
            instance_id: INSTANCE,
        });
    Given::with(())
        .given(vec![opened()])
        .when(cmd(
            orchestrator(),
            TaskCommand::Cancel {
                reason: "instance cancelled".into(),
            },
        ))
        .then_expect_events(vec![cancelled()]);
}

#[test]
fn members_cannot_cancel_and_a_cancelled_task_refuses_work() {
    Given::with(())
        .given(vec![opened_ad_hoc()])
        .when(cmd(ann(), TaskCommand::Cancel { reason: "x".into() }))
        .then_expect_error(TaskError::MissingRole {
            action: "cancel tasks",
            roles: "operators and admins",
        });
    Given::with(())
        .given(vec![opened(), cancelled()])
        .when(cmd(ann(), TaskCommand::Claim))
        .then_expect_error(TaskError::Closed {
            status: TaskStatus::Cancelled,
        });
}

// overdue

#[test]
fn a_due_task_is_marked_overdue_and_escalated_once() {
    let overdue = TaskEvent::TaskOverdue {
        due_at: later(48),
        escalation: Some(Escalation {
            candidate_users: vec![],
            candidate_groups: vec!["leads".into()],
        }),
        marked_at: later(48),
    };
    Given::with(())
        .given(vec![opened()])
        .when(Command::new(
            orchestrator(),
            later(48),
            TaskCommand::MarkOverdue,
        ))
        .then_expect_events(vec![overdue.clone()]);
    Given::with(())
        .given(vec![opened(), overdue.clone()])
        .when(Command::new(
            orchestrator(),
            later(49),
            TaskCommand::MarkOverdue,
        ))
        .then_expect_events(vec![]);
    // The escalation made the leads candidates.
    Given::with(())
        .given(vec![opened(), overdue])
        .when(cmd(member_of(BOB, &["leads"]), TaskCommand::Claim))
        .then_expect_events(vec![claimed(BOB)]);
}

#[test]
fn overdue_marking_checks_the_clock_the_due_time_and_the_caller() {
    Given::with(())
        .given(vec![opened()])
        .when(Command::new(
            orchestrator(),
            later(47),
            TaskCommand::MarkOverdue,
        ))
        .then_expect_error(TaskError::NotDue { due_at: later(48) });
    let mut no_due = open_task(None);
    no_due.due_at = None;
    no_due.escalation = None;
    Given::with(())
        .given(vec![opened_with(no_due, &operator())])
        .when(cmd(orchestrator(), TaskCommand::MarkOverdue))
        .then_expect_error(TaskError::NoDueTime);
    Given::with(())
        .given(vec![opened()])
        .when(Command::new(
            operator(),
            later(50),
            TaskCommand::MarkOverdue,
        ))
        .then_expect_error(TaskError::MissingRole {
            action: "mark tasks overdue",
            roles: "the timer service and admins",
        });
}

#[test]
fn state_follows_the_events() {
    let mut task = Task::default();
    for event in [opened(), claimed(ANN), completed()] {
        task.apply(event);
    }
    assert_eq!(task.id(), Some(TASK));
    assert_eq!(task.status(), TaskStatus::Completed);
    assert_eq!(task.assignee(), Some(ANN));
    assert_eq!(task.output(), Some(&output(json!({"amount": 12000}))));
    assert_eq!(task.workflow(), Some(&workflow()));
}

#[test]
fn every_rejection_maps_to_an_http_class() {
    let cases = [
        (TaskError::NotFound, 404),
        (TaskError::NotACandidate, 403),
        (TaskError::NotAssignee, 403),
        (
            TaskError::Closed {
                status: TaskStatus::Cancelled,
            },
            409,
        ),
        (TaskError::NotAssigned, 409),
        (TaskError::Invalid { issues: vec![] }, 422),
    ];
    for (error, status) in cases {
        assert_eq!(error.kind().http_status(), status, "{error}");
    }
}
