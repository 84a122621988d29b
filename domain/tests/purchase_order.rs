//! The purchase-order definition of DESIGN §3, every path, through the pure aggregates and the
//! orchestrator's reactions (the in-memory runtime).

use chrono::{DateTime, TimeDelta, Utc};
use domain::approval::ApprovalCommand;
use domain::definition::Definition;
use domain::examples::purchase_order_json;
use domain::ids::step_child_id;
use domain::instance::InstanceCommand;
use domain::runtime::{LocalRuntime, RuntimeError};
use domain::task::{TaskCommand, TaskError};
use domain::{Caller, Role};
use event_schemas::{
    AnyEvent, ApprovalDecision, ApprovalStatus, InstanceStatus, TaskStatus, WorkflowInstanceEvent,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

const TENANT: &str = "acme";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + TimeDelta::minutes(minutes)
}

fn user(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

const CLERK: u128 = 0xC1;
const MANAGERS: [u128; 2] = [0xA1, 0xA2];
const BOARD: [u128; 3] = [0xB1, 0xB2, 0xB3];
const LAWYER: u128 = 0x11;
const FINANCE: u128 = 0xF1;

fn member(n: u128, groups: &[&str]) -> Caller {
    Caller::user(TENANT, user(n), [Role::Member], groups.iter().copied())
}

fn operator() -> Caller {
    Caller::user(TENANT, user(0x0F), [Role::Operator], Vec::<String>::new())
}

fn vars(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

struct Po {
    rt: LocalRuntime,
    id: Uuid,
}

impl Po {
    /// Publishes the definition and starts one order of `amount`.
    fn start(amount: Value) -> Self {
        let mut rt = LocalRuntime::new();
        rt.set_group_members(TENANT, "managers", MANAGERS.map(user).to_vec());
        rt.set_group_members(TENANT, "board", BOARD.map(user).to_vec());
        let designer = Caller::user(TENANT, user(0xDE), [Role::Designer], Vec::<String>::new());
        let definition = Definition::from_json(&purchase_order_json(user(FINANCE))).unwrap();
        assert_eq!(rt.publish(&designer, t0(), definition).unwrap(), 1);
        let id = Uuid::from_u128(0x9001);
        let variables = vars(json!({"amount": amount, "requester": "someone"}));
        rt.start(
            &operator(),
            at(1),
            id,
            "purchase-order",
            None,
            Some("PO-1".into()),
            variables,
        )
        .unwrap();
        Po { rt, id }
    }

    fn child(&self, step: &str, activation: u32) -> Uuid {
        step_child_id(self.id, step, activation)
    }

    fn work(&mut self, step: &str, who: &Caller, output: Value) {
        let task = self.child(step, 1);
        if self.rt.task(task).unwrap().assignee().is_none() {
            self.rt
                .task_command(who, at(10), task, TaskCommand::Claim)
                .unwrap();
        }
        self.rt
            .task_command(
                who,
                at(11),
                task,
                TaskCommand::Complete {
                    output: vars(output),
                },
            )
            .unwrap();
    }

    fn vote(&mut self, step: &str, n: u128, decision: ApprovalDecision) {
        let approval = self.child(step, 1);
        self.rt
            .approval_command(
                &member(n, &[]),
                at(20),
                approval,
                ApprovalCommand::Decide {
                    decision,
                    comment: None,
                },
            )
            .unwrap();
    }

    fn status(&self) -> InstanceStatus {
        self.rt.instance(self.id).unwrap().status()
    }

    fn outcome(&self) -> Option<&str> {
        self.rt.instance(self.id).unwrap().outcome()
    }

    /// The instance's events by type name, in order.
    fn instance_trail(&self) -> Vec<String> {
        self.rt
            .events()
            .iter()
            .filter(|e| e.aggregate_id == self.id.to_string())
            .map(|e| {
                let step = match &e.event {
                    AnyEvent::WorkflowInstance(WorkflowInstanceEvent::TaskStepActivated {
                        step_id,
                        ..
                    })
                    | AnyEvent::WorkflowInstance(WorkflowInstanceEvent::ApprovalStepActivated {
                        step_id,
                        ..
                    })
                    | AnyEvent::WorkflowInstance(WorkflowInstanceEvent::DecisionTaken {
                        step_id,
                        ..
                    }) => {
                        format!("({step_id})")
                    }
                    _ => String::new(),
                };
                format!("{}{step}", e.event.event_type())
            })
            .collect()
    }

    /// No reaction was rejected, and running the orchestrator again over the whole log
    /// (as after a crash) changes nothing.
    fn assert_clean(&mut self) {
        assert!(self.rt.failures().is_empty(), "{:#?}", self.rt.failures());
        let events = self.rt.event_count();
        assert_eq!(
            self.rt.rerun_orchestrator(at(100)),
            0,
            "the orchestrator is not idempotent"
        );
        assert_eq!(self.rt.event_count(), events);
        assert!(self.rt.failures().is_empty(), "{:#?}", self.rt.failures());
    }
}

#[test]
fn a_small_order_goes_through_the_manager_and_both_checks() {
    let mut po = Po::start(json!(5000));
    let clerk = member(CLERK, &["clerks"]);
    po.work("review", &clerk, json!({"checked": true}));
    let manager = po.rt.approval(po.child("manager", 1)).unwrap();
    assert_eq!(manager.slots().len(), 2, "the managers group was resolved");
    assert!(manager.may_decide_now(user(MANAGERS[0])));
    po.vote("manager", MANAGERS[1], ApprovalDecision::Approve);

    assert_eq!(
        po.rt.task(po.child("finance", 1)).unwrap().assignee(),
        Some(user(FINANCE))
    );
    po.work("legal", &member(LAWYER, &["legal"]), json!({}));
    assert!(
        po.rt.task(po.child("archive", 1)).is_none(),
        "the join waits for finance"
    );
    po.work("finance", &member(FINANCE, &[]), json!({"budget": "ok"}));
    po.work("archive", &clerk, json!({}));

    assert_eq!(po.status(), InstanceStatus::Completed);
    assert_eq!(po.outcome(), Some("approved"));
    assert_eq!(
        po.instance_trail(),
        vec![
            "InstanceStarted",
            "TaskStepActivated(review)",
            "TaskStepCompleted",
            "DecisionTaken(route)",
            "ApprovalStepActivated(manager)",
            "ApprovalStepCompleted",
            "ParallelStarted",
            "TaskStepActivated(legal)",
            "TaskStepActivated(finance)",
            "TaskStepCompleted",
            "BranchJoined",
            "TaskStepCompleted",
            "BranchJoined",
            "TaskStepActivated(archive)",
            "TaskStepCompleted",
            "InstanceCompleted",
        ]
    );
    let variables = po.rt.instance(po.id).unwrap().variables();
    assert_eq!(variables["checked"], json!(true));
    assert_eq!(variables["budget"], json!("ok"));
    po.assert_clean();
}

#[test]
fn a_large_order_needs_two_of_three_board_members() {
    let mut po = Po::start(json!(15000));
    po.work("review", &member(CLERK, &["clerks"]), json!({}));
    assert!(po.rt.approval(po.child("manager", 1)).is_none());
    po.vote("board", BOARD[0], ApprovalDecision::Reject);
    po.vote("board", BOARD[1], ApprovalDecision::Approve);
    assert_eq!(
        po.rt.approval(po.child("board", 1)).unwrap().status(),
        ApprovalStatus::Pending
    );
    po.vote("board", BOARD[2], ApprovalDecision::Approve);
    assert_eq!(
        po.rt.approval(po.child("board", 1)).unwrap().status(),
        ApprovalStatus::Approved
    );
    po.work("legal", &member(LAWYER, &["legal"]), json!({}));
    po.work("finance", &member(FINANCE, &[]), json!({}));
    po.work("archive", &member(CLERK, &["clerks"]), json!({}));
    assert_eq!(po.outcome(), Some("approved"));
    po.assert_clean();
}

#[test]
fn the_board_rejects_as_soon_as_two_approvals_are_out_of_reach() {
    let mut po = Po::start(json!(20000));
    po.work("review", &member(CLERK, &["clerks"]), json!({}));
    po.vote("board", BOARD[0], ApprovalDecision::Reject);
    po.vote("board", BOARD[2], ApprovalDecision::Reject);
    assert_eq!(po.status(), InstanceStatus::Completed);
    assert_eq!(po.outcome(), Some("rejected"));
    let late = po.rt.approval_command(
        &member(BOARD[1], &[]),
        at(30),
        po.child("board", 1),
        ApprovalCommand::Decide {
            decision: ApprovalDecision::Approve,
            comment: None,
        },
    );
    assert!(matches!(late, Err(RuntimeError::Approval(_))));
    po.assert_clean();
}

#[test]
fn a_manager_rejection_declines_the_order() {
    let mut po = Po::start(json!(10000));
    po.work("review", &member(CLERK, &["clerks"]), json!({}));
    po.vote("manager", MANAGERS[0], ApprovalDecision::Reject);
    assert_eq!(po.outcome(), Some("rejected"));
    assert!(po.rt.task(po.child("legal", 1)).is_none());
    po.assert_clean();
}

#[test]
fn cancelling_an_order_cancels_its_open_tasks() {
    let mut po = Po::start(json!(100));
    po.work("review", &member(CLERK, &["clerks"]), json!({}));
    po.vote("manager", MANAGERS[0], ApprovalDecision::Approve);
    let (legal, finance) = (po.child("legal", 1), po.child("finance", 1));
    po.rt
        .instance_command(
            &operator(),
            at(40),
            po.id,
            InstanceCommand::Cancel {
                reason: "order withdrawn".into(),
            },
        )
        .unwrap();
    assert_eq!(po.status(), InstanceStatus::Cancelled);
    assert_eq!(po.rt.task(legal).unwrap().status(), TaskStatus::Cancelled);
    assert_eq!(po.rt.task(finance).unwrap().status(), TaskStatus::Cancelled);
    let late = po.rt.task_command(
        &member(FINANCE, &[]),
        at(41),
        finance,
        TaskCommand::Complete { output: Map::new() },
    );
    assert!(matches!(
        late,
        Err(RuntimeError::Task(TaskError::Closed {
            status: TaskStatus::Cancelled
        }))
    ));
    po.assert_clean();
}

#[test]
fn cancelling_while_an_approval_is_pending_cancels_the_approval() {
    let mut po = Po::start(json!(50000));
    po.work("review", &member(CLERK, &["clerks"]), json!({}));
    po.rt
        .instance_command(
            &operator(),
            at(40),
            po.id,
            InstanceCommand::Cancel {
                reason: "duplicate".into(),
            },
        )
        .unwrap();
    assert_eq!(
        po.rt.approval(po.child("board", 1)).unwrap().status(),
        ApprovalStatus::Cancelled
    );
    po.assert_clean();
}

#[test]
fn an_amount_the_rule_cannot_compare_raises_an_incident_an_operator_resolves() {
    let mut po = Po::start(json!("a lot"));
    po.work("review", &member(CLERK, &["clerks"]), json!({}));
    let instance = po.rt.instance(po.id).unwrap();
    assert_eq!(instance.status(), InstanceStatus::Running);
    let [incident] = instance.incidents() else {
        panic!("{:#?}", instance.incidents());
    };
    assert_eq!(incident.step_id, "route");
    assert!(
        incident.reason.contains("amount > 10000"),
        "{}",
        incident.reason
    );
    po.assert_clean();

    // a clerk may not; an operator corrects the amount and the order goes on to the board
    let definition = po.rt.definition(TENANT, "purchase-order", Some(1)).unwrap();
    let retry = |amount: Value| InstanceCommand::RetryIncident {
        definition: definition.clone(),
        step_id: "route".into(),
        variables: vars(json!({ "amount": amount })),
    };
    assert!(
        po.rt
            .instance_command(&member(CLERK, &["clerks"]), at(5), po.id, retry(json!(1)))
            .is_err()
    );
    po.rt
        .instance_command(&operator(), at(6), po.id, retry(json!(50000)))
        .unwrap();
    let instance = po.rt.instance(po.id).unwrap();
    assert!(instance.incidents().is_empty());
    assert_eq!(instance.variables()["amount"], 50000);
    assert_eq!(
        po.rt.approval(po.child("board", 1)).unwrap().status(),
        ApprovalStatus::Pending
    );
    po.assert_clean();
}

#[test]
fn a_missing_variable_raises_an_incident_too() {
    let mut rt_po = Po::start(json!(1));
    // The review's output cannot remove a variable, so start another instance without one.
    let id = Uuid::from_u128(0x9002);
    rt_po
        .rt
        .start(
            &operator(),
            at(2),
            id,
            "purchase-order",
            Some(1),
            None,
            Map::new(),
        )
        .unwrap();
    let review = step_child_id(id, "review", 1);
    let clerk = member(CLERK, &["clerks"]);
    rt_po
        .rt
        .task_command(&clerk, at(3), review, TaskCommand::Claim)
        .unwrap();
    rt_po
        .rt
        .task_command(
            &clerk,
            at(4),
            review,
            TaskCommand::Complete { output: Map::new() },
        )
        .unwrap();
    let instance = rt_po.rt.instance(id).unwrap();
    assert_eq!(instance.status(), InstanceStatus::Running);
    assert!(instance.incidents()[0].reason.contains("amount"));
}

#[test]
fn an_empty_approver_group_routes_to_rejected_instead_of_hanging() {
    let mut po = Po::start(json!(5));
    po.rt.set_group_members(TENANT, "managers", vec![]);
    po.work("review", &member(CLERK, &["clerks"]), json!({}));
    assert_eq!(
        po.rt.approval(po.child("manager", 1)).unwrap().status(),
        ApprovalStatus::Rejected
    );
    assert_eq!(po.outcome(), Some("rejected"));
    po.assert_clean();
}

#[test]
fn an_overdue_review_is_marked_when_its_timer_fires() {
    let mut po = Po::start(json!(5));
    let review = po.child("review", 1);
    let due = po.rt.task(review).unwrap().due_at().unwrap();
    assert_eq!(due, at(1) + TimeDelta::days(2));
    assert_eq!(po.rt.fire_due(due - TimeDelta::seconds(1)), 0);
    assert!(!po.rt.task(review).unwrap().is_overdue());
    assert_eq!(po.rt.fire_due(due), 1);
    assert!(po.rt.task(review).unwrap().is_overdue());
    po.assert_clean();
}

#[test]
fn another_tenant_cannot_touch_the_order() {
    let mut po = Po::start(json!(5));
    let stranger = Caller::user("globex", user(CLERK), [Role::Admin], ["clerks"]);
    let review = po.child("review", 1);
    assert!(matches!(
        po.rt
            .task_command(&stranger, at(5), review, TaskCommand::Claim),
        Err(RuntimeError::Task(TaskError::NotFound))
    ));
    assert!(matches!(
        po.rt.start(
            &stranger,
            at(5),
            Uuid::from_u128(7),
            "purchase-order",
            None,
            None,
            Map::new()
        ),
        Err(RuntimeError::DefinitionNotFound { .. })
    ));
}

#[test]
fn instances_keep_running_on_the_version_they_started_on() {
    let mut po = Po::start(json!(5));
    let designer = Caller::user(TENANT, user(0xDE), [Role::Designer], Vec::<String>::new());
    let mut v2 = Definition::from_json(&purchase_order_json(user(FINANCE)))
        .unwrap()
        .to_value();
    v2["steps"]["route"]["rules"][0]["when"] = json!("amount > 1");
    let v2 = Definition::from_value(&v2).unwrap();
    assert_eq!(po.rt.publish(&designer, at(2), v2).unwrap(), 2);
    po.work("review", &member(CLERK, &["clerks"]), json!({}));
    // Version 1 routes 5 to the manager; version 2 would have gone to the board.
    assert!(po.rt.approval(po.child("manager", 1)).is_some());
    assert_eq!(po.rt.instance(po.id).unwrap().definition_version(), 1);
    po.assert_clean();
}
