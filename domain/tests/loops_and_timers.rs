//! Loops, timers, sequential approvals with delegation, and ad-hoc tasks, through the
//! in-memory runtime.

use chrono::{DateTime, TimeDelta, Utc};
use domain::approval::ApprovalCommand;
use domain::definition::Definition;
use domain::ids::step_child_id;
use domain::runtime::LocalRuntime;
use domain::task::{OpenTask, TaskCommand};
use domain::{Caller, Role};
use event_schemas::{ApprovalDecision, InstanceStatus, TaskStatus};
use serde_json::{Map, json};
use uuid::Uuid;

const TENANT: &str = "acme";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + TimeDelta::minutes(minutes)
}

fn member(n: u128) -> Caller {
    Caller::user(TENANT, Uuid::from_u128(n), [Role::Member], ["writers"])
}

fn admin() -> Caller {
    Caller::user(
        TENANT,
        Uuid::from_u128(0xAD),
        [Role::Admin],
        Vec::<String>::new(),
    )
}

fn runtime_with(definition: serde_json::Value) -> LocalRuntime {
    let mut rt = LocalRuntime::new();
    let definition = Definition::from_json(&definition.to_string()).unwrap();
    rt.publish(&admin(), t0(), definition).unwrap();
    rt
}

const ID: Uuid = Uuid::from_u128(0x55);

#[test]
fn a_rework_loop_gives_every_round_its_own_activation_and_ids() {
    let boss = Uuid::from_u128(0xB);
    let mut rt = runtime_with(json!({
        "key": "doc", "name": "Document", "start": "write",
        "steps": {
            "write": {"type": "task", "candidate_groups": ["writers"], "next": "check"},
            "check": {"type": "approval", "approvers": {"users": [boss.to_string()]}, "policy": "any",
                      "approved": "done", "rejected": "write"},
            "done": {"type": "end", "outcome": "published"}
        }
    }));
    rt.start(&admin(), at(1), ID, "doc", None, None, Map::new())
        .unwrap();
    for round in 1..=3u32 {
        let task = step_child_id(ID, "write", round);
        rt.task_command(&member(1), at(2), task, TaskCommand::Claim)
            .unwrap();
        rt.task_command(
            &member(1),
            at(3),
            task,
            TaskCommand::Complete { output: Map::new() },
        )
        .unwrap();
        let decision = if round < 3 {
            ApprovalDecision::Reject
        } else {
            ApprovalDecision::Approve
        };
        let approval = step_child_id(ID, "check", round);
        rt.approval_command(
            &Caller::user(TENANT, boss, [Role::Member], Vec::<String>::new()),
            at(4),
            approval,
            ApprovalCommand::Decide {
                decision,
                comment: Some(format!("round {round}")),
            },
        )
        .unwrap();
    }
    let instance = rt.instance(ID).unwrap();
    assert_eq!(instance.outcome(), Some("published"));
    assert_eq!(instance.activation_count("write"), 3);
    assert_eq!(
        rt.task(step_child_id(ID, "write", 2)).unwrap().status(),
        TaskStatus::Completed
    );
    assert!(rt.failures().is_empty());
    assert_eq!(rt.rerun_orchestrator(at(9)), 0);
}

#[test]
fn a_timer_step_waits_until_it_is_due() {
    let mut rt = runtime_with(json!({
        "key": "cool", "name": "Cool-off", "start": "wait",
        "steps": {
            "wait": {"type": "timer", "duration": "PT30M", "next": "done"},
            "done": {"type": "end", "outcome": "cooled"}
        }
    }));
    rt.start(&admin(), at(0), ID, "cool", None, None, Map::new())
        .unwrap();
    assert_eq!(rt.pending_timers().count(), 1);
    assert_eq!(rt.fire_due(at(29)), 0);
    assert_eq!(rt.instance(ID).unwrap().status(), InstanceStatus::Running);
    assert_eq!(rt.fire_due(at(30)), 1);
    assert_eq!(rt.instance(ID).unwrap().outcome(), Some("cooled"));
    assert!(rt.failures().is_empty());
}

#[test]
fn a_sequential_chain_with_a_delegated_vote() {
    let (a, b, c) = (
        Uuid::from_u128(0xA),
        Uuid::from_u128(0xB),
        Uuid::from_u128(0xC),
    );
    let mut rt = runtime_with(json!({
        "key": "chain", "name": "Chain", "start": "sign",
        "steps": {
            "sign": {"type": "approval", "approvers": {"users": [a.to_string(), b.to_string()]},
                     "policy": "sequential", "due": "P1D", "approved": "yes", "rejected": "no"},
            "yes": {"type": "end", "outcome": "signed"},
            "no": {"type": "end", "outcome": "refused"}
        }
    }));
    rt.start(&admin(), at(0), ID, "chain", None, None, Map::new())
        .unwrap();
    let approval = step_child_id(ID, "sign", 1);
    let person = |u| Caller::user(TENANT, u, [Role::Member], Vec::<String>::new());
    let vote = |decision| ApprovalCommand::Decide {
        decision,
        comment: None,
    };
    assert!(
        rt.approval_command(&person(b), at(1), approval, vote(ApprovalDecision::Approve))
            .is_err()
    );
    rt.approval_command(
        &person(a),
        at(1),
        approval,
        ApprovalCommand::Delegate {
            user_id: c,
            from_user_id: None,
        },
    )
    .unwrap();
    assert!(rt.approval(approval).unwrap().may_decide_now(c));
    rt.approval_command(&person(c), at(2), approval, vote(ApprovalDecision::Approve))
        .unwrap();
    assert!(rt.approval(approval).unwrap().may_decide_now(b));
    rt.approval_command(&person(b), at(3), approval, vote(ApprovalDecision::Approve))
        .unwrap();
    assert_eq!(rt.instance(ID).unwrap().outcome(), Some("signed"));
    // The overdue timer fires after the approval closed: nothing happens.
    assert_eq!(rt.fire_due(at(60 * 25)), 1);
    assert!(!rt.approval(approval).unwrap().is_overdue());
    assert!(rt.failures().is_empty());
}

#[test]
fn ad_hoc_tasks_live_without_an_instance() {
    let mut rt = LocalRuntime::new();
    let operator = Caller::user(
        TENANT,
        Uuid::from_u128(0x0F),
        [Role::Operator],
        Vec::<String>::new(),
    );
    let task = Uuid::from_u128(0x7);
    let open = OpenTask {
        task_id: task,
        workflow: None,
        name: "Call the supplier".into(),
        description: None,
        assignee: Some(Uuid::from_u128(1)),
        candidate_users: vec![],
        candidate_groups: vec![],
        form: vec![],
        due_at: None,
        escalation: None,
    };
    rt.task_command(&operator, at(0), task, TaskCommand::from(open))
        .unwrap();
    rt.task_command(
        &member(1),
        at(1),
        task,
        TaskCommand::Complete { output: Map::new() },
    )
    .unwrap();
    assert_eq!(rt.task(task).unwrap().status(), TaskStatus::Completed);
    assert!(rt.task(task).unwrap().workflow().is_none());
    assert_eq!(
        rt.event_count(),
        2,
        "completing an ad-hoc task advances nothing"
    );
}
