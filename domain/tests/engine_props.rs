//! Property tests of the engine: random valid definitions (built from nested blocks: tasks,
//! approvals of every policy, timers, decisions, parallels, rework loops, early exits) run with
//! random task outputs, votes and completion orders.
//!
//! Invariants: the definition validates; the instance ends in exactly one outcome; no step
//! activation is opened twice; each parallel activation's join runs at most once, and exactly
//! once per completed set of arrivals; nothing is left open; no reaction fails; running the
//! orchestrator again changes nothing.
//!
//! 10,000 cases by default (`PROPTEST_CASES` overrides).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta};
use domain::approval::ApprovalCommand;
use domain::definition::Definition;
use domain::ids::step_child_id;
use domain::runtime::LocalRuntime;
use domain::task::TaskCommand;
use domain::{Caller, Role};
use event_schemas::{
    AnyEvent, ApprovalDecision, ApprovalStatus, ChildKind, InstanceStatus, StepRef, TaskStatus,
    WorkflowInstanceEvent as E,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;

const TENANT: &str = "t";
const APPROVERS: [u128; 3] = [0xA1, 0xA2, 0xA3];
const WORKER: u128 = 0x77;

#[derive(Debug, Clone)]
enum Block {
    Task,
    Approval(Value),
    Timer,
    Exit,
    Seq(Vec<Block>),
    Choice(Vec<Block>),
    Par(Vec<Block>, bool),
    Rework(Box<Block>),
}

fn block() -> impl Strategy<Value = Block> {
    let policy = prop_oneof![
        Just(json!("any")),
        Just(json!("all")),
        Just(json!("sequential")),
        Just(json!({"quorum": 2})),
    ];
    let leaf = prop_oneof![
        3 => Just(Block::Task),
        2 => policy.prop_map(Block::Approval),
        1 => Just(Block::Timer),
        1 => Just(Block::Exit),
    ];
    leaf.prop_recursive(6, 96, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Block::Seq),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Block::Choice),
            (prop::collection::vec(inner.clone(), 2..4), any::<bool>())
                .prop_map(|(branches, task_join)| Block::Par(branches, task_join)),
            inner.prop_map(|b| Block::Rework(Box::new(b))),
        ]
    })
}

#[derive(Default)]
struct Builder {
    steps: Map<String, Value>,
    count: usize,
    rejected: bool,
    aborted: bool,
    joins: Vec<(String, String)>,
}

impl Builder {
    fn fresh(&mut self, prefix: &str) -> String {
        self.count += 1;
        format!("{prefix}{}", self.count)
    }

    fn task(&mut self, next: &str) -> String {
        let id = self.fresh("t");
        self.steps.insert(
            id.clone(),
            json!({"type": "task", "candidate_groups": ["workers"], "due": "PT1H",
                   "form": [{"id": "route", "type": "integer", "required": true}], "next": next}),
        );
        id
    }

    fn compile(&mut self, block: &Block, next: &str) -> String {
        match block {
            Block::Task => self.task(next),
            Block::Approval(policy) => {
                self.rejected = true;
                let id = self.fresh("a");
                let users: Vec<String> = APPROVERS
                    .iter()
                    .map(|u| Uuid::from_u128(*u).to_string())
                    .collect();
                self.steps.insert(
                    id.clone(),
                    json!({"type": "approval", "approvers": {"users": users}, "policy": policy,
                           "approved": next, "rejected": "end_rejected"}),
                );
                id
            }
            Block::Timer => {
                let id = self.fresh("w");
                self.steps.insert(
                    id.clone(),
                    json!({"type": "timer", "duration": "PT10M", "next": next}),
                );
                id
            }
            Block::Exit => {
                self.aborted = true;
                let id = self.fresh("x");
                self.steps.insert(
                    id.clone(),
                    json!({"type": "decision", "rules": [{"when": "exit == true", "next": "end_aborted"}],
                           "default": next}),
                );
                id
            }
            Block::Seq(blocks) => blocks
                .iter()
                .rev()
                .fold(next.to_owned(), |next, b| self.compile(b, &next)),
            Block::Choice(blocks) => {
                let id = self.fresh("d");
                let entries: Vec<String> = blocks.iter().map(|b| self.compile(b, next)).collect();
                let rules: Vec<Value> = entries[1..]
                    .iter()
                    .enumerate()
                    .map(|(i, e)| json!({"when": format!("route == {}", i + 1), "next": e}))
                    .collect();
                self.steps.insert(
                    id.clone(),
                    json!({"type": "decision", "rules": rules, "default": entries[0]}),
                );
                id
            }
            Block::Par(blocks, task_join) => {
                let join = if *task_join {
                    self.task(next)
                } else {
                    let id = self.fresh("j");
                    self.steps.insert(
                        id.clone(),
                        json!({"type": "decision", "rules": [], "default": next}),
                    );
                    id
                };
                let id = self.fresh("p");
                let branches: Vec<String> = blocks.iter().map(|b| self.compile(b, &join)).collect();
                self.steps.insert(
                    id.clone(),
                    json!({"type": "parallel", "branches": branches, "join": join}),
                );
                self.joins.push((id.clone(), join));
                id
            }
            Block::Rework(inner) => {
                let check = self.fresh("r");
                let entry = self.compile(inner, &check);
                let user = Uuid::from_u128(APPROVERS[0]).to_string();
                self.steps.insert(
                    check,
                    json!({"type": "approval", "approvers": {"users": [user]}, "policy": "any",
                           "approved": next, "rejected": entry}),
                );
                entry
            }
        }
    }

    fn definition(block: &Block) -> (Value, Vec<(String, String)>) {
        let mut b = Builder::default();
        let start = b.compile(block, "end_ok");
        b.steps.insert(
            "end_ok".into(),
            json!({"type": "end", "outcome": "approved"}),
        );
        if b.rejected {
            b.steps.insert(
                "end_rejected".into(),
                json!({"type": "end", "outcome": "rejected"}),
            );
        }
        if b.aborted {
            b.steps.insert(
                "end_aborted".into(),
                json!({"type": "end", "outcome": "aborted"}),
            );
        }
        let value =
            json!({"key": "generated", "name": "Generated", "start": start, "steps": b.steps});
        (value, b.joins)
    }
}

/// Choices drawn from proptest; once used up, everything goes forward (approve, route 0), so
/// every run terminates.
struct Choices {
    values: Vec<u8>,
    next: usize,
}

impl Choices {
    fn take(&mut self) -> Option<u8> {
        let value = self.values.get(self.next).copied();
        self.next += 1;
        value
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

const ID: Uuid = Uuid::from_u128(0x1);

fn run(definition: Value, choices: Vec<u8>) -> LocalRuntime {
    let mut rt = LocalRuntime::new();
    let admin = Caller::user(
        TENANT,
        Uuid::from_u128(0xAD),
        [Role::Admin],
        Vec::<String>::new(),
    );
    let definition = Definition::from_json(&definition.to_string())
        .unwrap_or_else(|e| panic!("a generated definition is invalid: {:#?}", e.issues));
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    rt.publish(&admin, t0, definition).unwrap();
    let variables = json!({"route": 0, "exit": false})
        .as_object()
        .cloned()
        .unwrap_or_default();
    rt.start(&admin, t0, ID, "generated", None, None, variables)
        .unwrap();

    let mut now = t0;
    let mut choices = Choices {
        values: choices,
        next: 0,
    };
    let worker = Caller::user(TENANT, Uuid::from_u128(WORKER), [Role::Member], ["workers"]);
    for _ in 0..5_000 {
        let instance = rt.instance(ID).unwrap();
        if instance.status() != InstanceStatus::Running {
            return rt;
        }
        let open = instance.open_steps().to_vec();
        assert!(!open.is_empty(), "a running instance waits on nothing");
        let pick = choices.take().map_or(0, |c| usize::from(c) % open.len());
        let step = &open[pick];
        now += TimeDelta::minutes(1);
        match step.kind {
            ChildKind::Task => {
                let task = step.child_id;
                if rt.task(task).unwrap().assignee().is_none() {
                    rt.task_command(&worker, now, task, TaskCommand::Claim)
                        .unwrap();
                }
                let c = choices.take();
                let output = json!({"route": c.map_or(0, |c| c % 3), "exit": c.is_some_and(|c| c % 11 == 0)});
                let output = output.as_object().cloned().unwrap_or_default();
                rt.task_command(&worker, now, task, TaskCommand::Complete { output })
                    .unwrap();
            }
            ChildKind::Approval => {
                let approval = rt.approval(step.child_id).expect("the approval was opened");
                let awaiting = approval.awaiting();
                assert!(
                    !awaiting.is_empty(),
                    "an open approval step nobody may decide"
                );
                let c = choices.take();
                let voter = awaiting[c.map_or(0, |c| usize::from(c) % awaiting.len())];
                let decision = match c {
                    Some(c) if c % 3 == 0 => ApprovalDecision::Reject,
                    _ => ApprovalDecision::Approve,
                };
                let caller = Caller::user(TENANT, voter, [Role::Member], Vec::<String>::new());
                let command = ApprovalCommand::Decide {
                    decision,
                    comment: None,
                };
                rt.approval_command(&caller, now, step.child_id, command)
                    .unwrap();
            }
            ChildKind::Timer => {
                now = now.max(step.due_at.unwrap());
                assert!(rt.fire_due(now) >= 1);
            }
        }
    }
    panic!("the instance did not end after 5000 moves");
}

fn check(rt: &mut LocalRuntime, joins: &[(String, String)]) {
    assert!(rt.failures().is_empty(), "{:#?}", rt.failures());
    let instance_events: Vec<&E> = rt
        .events()
        .iter()
        .filter_map(|e| match &e.event {
            AnyEvent::WorkflowInstance(ev) => Some(ev),
            _ => None,
        })
        .collect();

    // Exactly one end, and it is the last thing that happened to the instance.
    let ends = instance_events
        .iter()
        .filter(|e| {
            matches!(
                e,
                E::InstanceCompleted { .. }
                    | E::InstanceCancelled { .. }
                    | E::InstanceFailed { .. }
            )
        })
        .count();
    assert_eq!(ends, 1);
    let Some(E::InstanceCompleted { outcome, .. }) = instance_events.last() else {
        panic!("did not complete: {:?}", instance_events.last());
    };
    assert!(["approved", "rejected", "aborted"].contains(&outcome.as_str()));
    assert_eq!(rt.instance(ID).unwrap().status(), InstanceStatus::Completed);

    // No step activation is entered twice; child ids are the derived ones.
    let mut entered: HashSet<(String, u32)> = HashSet::new();
    let mut children = HashSet::new();
    for event in &instance_events {
        let (step, activation, child) = match event {
            E::TaskStepActivated {
                step_id,
                activation,
                task_id,
                ..
            } => (step_id, *activation, Some(*task_id)),
            E::ApprovalStepActivated {
                step_id,
                activation,
                approval_id,
                ..
            } => (step_id, *activation, Some(*approval_id)),
            E::TimerStarted {
                step_id,
                activation,
                timer_id,
                ..
            } => (step_id, *activation, Some(*timer_id)),
            E::DecisionTaken {
                step_id,
                activation,
                ..
            }
            | E::ParallelStarted {
                step_id,
                activation,
                ..
            } => (step_id, *activation, None),
            _ => continue,
        };
        assert!(
            entered.insert((step.clone(), activation)),
            "{step} #{activation} entered twice"
        );
        if let Some(child) = child {
            assert_eq!(child, step_child_id(ID, step, activation));
            assert!(children.insert(child));
        }
    }

    // Each parallel activation's join fires at most once, and the join step is entered exactly
    // once per firing.
    let mut fired: HashMap<StepRef, usize> = HashMap::new();
    for event in &instance_events {
        if let E::BranchJoined {
            parallel,
            arrived,
            expected,
            ..
        } = event
        {
            assert!(arrived <= expected);
            if arrived == expected {
                *fired.entry(parallel.clone()).or_default() += 1;
            }
        }
    }
    assert!(
        fired.values().all(|&n| n == 1),
        "a join fired twice: {fired:?}"
    );
    for (parallel, join) in joins {
        let firings = fired.keys().filter(|p| &p.step_id == parallel).count();
        let join_entries = entered.iter().filter(|(s, _)| s == join).count();
        assert_eq!(firings, join_entries, "join {join} of {parallel}");
    }

    // Nothing is left open.
    for event in rt.events() {
        match &event.event {
            AnyEvent::Task(event_schemas::TaskEvent::TaskOpened { task_id, .. }) => {
                assert_ne!(rt.task(*task_id).unwrap().status(), TaskStatus::Open);
            }
            AnyEvent::Approval(event_schemas::ApprovalEvent::ApprovalOpened {
                approval_id,
                ..
            }) => {
                assert_ne!(
                    rt.approval(*approval_id).unwrap().status(),
                    ApprovalStatus::Pending
                );
            }
            _ => {}
        }
    }

    // The log-driven orchestrator running again over everything changes nothing.
    let later = DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default();
    assert_eq!(rt.rerun_orchestrator(later), 0);
    assert!(rt.failures().is_empty(), "{:#?}", rt.failures());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_valid_definition_runs_to_exactly_one_outcome(
        block in block(),
        choices in prop::collection::vec(any::<u8>(), 0..160),
    ) {
        let (definition, joins) = Builder::definition(&block);
        let mut rt = run(definition, choices);
        check(&mut rt, &joins);
    }

    #[test]
    fn removing_any_step_is_reported_by_step_or_field(block in block(), victim in any::<prop::sample::Index>()) {
        let (mut definition, _) = Builder::definition(&block);
        let steps = definition["steps"].as_object_mut().unwrap();
        let ids: Vec<String> = steps.keys().cloned().collect();
        let removed = ids[victim.index(ids.len())].clone();
        steps.remove(&removed);
        match Definition::from_json(&definition.to_string()) {
            Ok(_) => panic!("removing {removed} went unnoticed"),
            Err(e) => {
                prop_assert!(!e.issues.is_empty());
                prop_assert!(e.issues.iter().all(|i| i.step.is_some() || i.field.is_some()));
            }
        }
    }
}
