//! The purchase-order definition of DESIGN §3 on the real event store: every path with the
//! cascade on the command path, and the log-driven orchestrator crashing after every reaction.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use domain::approval::ApprovalCommand;
use domain::definition::Definition;
use domain::examples::purchase_order_json;
use domain::ids::step_child_id;
use domain::instance::InstanceCommand;
use domain::task::TaskCommand;
use domain::{Caller, Role};
use event_schemas::{ApprovalDecision, ApprovalStatus, InstanceStatus, TaskStatus};
use event_store::testing::TestDatabase;
use event_store::{AppendNotifier, Checkpoints};
use orchestrator::{
    PROCESS_MANAGER, ProcessManager, RequestContext, Runtime, StaticDirectory, TimerWorker,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

const TENANT: &str = "acme";
const CLERK: u128 = 0xC1;
const MANAGERS: [u128; 2] = [0xA1, 0xA2];
const BOARD: [u128; 3] = [0xB1, 0xB2, 0xB3];
const LAWYER: u128 = 0x11;
const FINANCE: u128 = 0xF1;

fn user(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn member(n: u128, groups: &[&str]) -> Caller {
    Caller::user(TENANT, user(n), [Role::Member], groups.iter().copied())
}

fn ctx(caller: Caller, at: DateTime<Utc>) -> RequestContext {
    RequestContext {
        caller,
        at,
        correlation_id: Uuid::now_v7(),
        request_id: Uuid::now_v7().to_string(),
    }
}

fn vars(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn directory() -> Arc<StaticDirectory> {
    let directory = StaticDirectory::new();
    directory.set(TENANT, "managers", MANAGERS.map(user).to_vec());
    directory.set(TENANT, "board", BOARD.map(user).to_vec());
    Arc::new(directory)
}

struct Po {
    db: TestDatabase,
    rt: Arc<Runtime>,
    id: Uuid,
    t0: DateTime<Utc>,
    /// With no cascade on the command path, the process manager (crashing after every
    /// reaction and restarting) does all the orchestration.
    crashy: bool,
}

impl Po {
    async fn start(amount: Value, crashy: bool) -> Self {
        // warnings (a reaction that did not take effect) show in a failing test's output
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let db = TestDatabase::new().await;
        let t0 = Utc::now();
        let mut runtime = Runtime::new(db.pool.clone(), AppendNotifier::disabled(), directory());
        if crashy {
            runtime = runtime.without_cascade();
        }
        let rt = Arc::new(runtime);
        let designer = Caller::user(TENANT, user(0xDE), [Role::Designer], Vec::<String>::new());
        let definition = Definition::from_json(&purchase_order_json(user(FINANCE))).unwrap();
        let published = rt.publish(&ctx(designer, t0), definition).await.unwrap();
        assert_eq!(published.version, 1);
        let operator = Caller::user(TENANT, user(0x0F), [Role::Operator], Vec::<String>::new());
        let started = rt
            .start(
                &ctx(operator, t0),
                "purchase-order",
                None,
                Some("PO-1".into()),
                vars(json!({"amount": amount, "requester": "someone"})),
            )
            .await
            .unwrap();
        let po = Po {
            id: started.id.parse().unwrap(),
            db,
            rt,
            t0,
            crashy,
        };
        po.settle().await;
        po
    }

    /// Without the inline cascade: runs the process manager to the end of the log, crashing
    /// it after 0, 1, 2, ... reactions of every batch and restarting it (a new runtime, caches
    /// gone) each time.
    async fn settle(&self) {
        if !self.crashy {
            return;
        }
        let mut crash_at = 0;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the orchestrator never caught up"
            );
            let restarted = Arc::new(
                Runtime::new(
                    self.db.pool.clone(),
                    AppendNotifier::disabled(),
                    directory(),
                )
                .without_cascade(),
            );
            let pm = ProcessManager::new(restarted)
                .with_batch(1)
                .crash_after(crash_at);
            match pm.step().await {
                Err(event_store::BatchError::Apply(orchestrator::ProcessError::Stopped(_))) => {
                    crash_at += 1;
                }
                Err(other) => panic!("the orchestrator failed: {other}"),
                Ok(Some(_)) => crash_at = 0,
                Ok(None) => {
                    if Checkpoints::is_caught_up(&self.db.pool, PROCESS_MANAGER)
                        .await
                        .unwrap()
                    {
                        return;
                    }
                    // other tests' transactions keep fresh events unreadable for a moment
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn child(&self, step: &str) -> Uuid {
        step_child_id(self.id, step, 1)
    }

    async fn work(&self, step: &str, who: &Caller, output: Value) {
        let task = self.child(step);
        let (state, _) = self.rt.load_task(task).await.unwrap();
        assert_eq!(state.status(), TaskStatus::Open, "{step} is open");
        let at = self.t0 + TimeDelta::minutes(10);
        if state.assignee().is_none() {
            self.rt
                .task(&ctx(who.clone(), at), task, TaskCommand::Claim, None)
                .await
                .unwrap();
        }
        let done = self
            .rt
            .task(
                &ctx(who.clone(), at),
                task,
                TaskCommand::Complete {
                    output: vars(output),
                },
                None,
            )
            .await
            .unwrap();
        assert!(done.position.is_some());
        self.settle().await;
    }

    async fn vote(&self, step: &str, n: u128, decision: ApprovalDecision) {
        let command = ApprovalCommand::Decide {
            decision,
            comment: None,
        };
        let at = self.t0 + TimeDelta::minutes(20);
        self.rt
            .approval(&ctx(member(n, &[]), at), self.child(step), command, None)
            .await
            .unwrap();
        self.settle().await;
    }

    async fn status(&self) -> (InstanceStatus, Option<String>) {
        let (instance, _) = self.rt.load_instance(self.id).await.unwrap();
        (instance.status(), instance.outcome().map(str::to_owned))
    }

    async fn exists(&self, step: &str) -> bool {
        self.rt.load_task(self.child(step)).await.unwrap().1 > 0
            || self.rt.load_approval(self.child(step)).await.unwrap().1 > 0
    }

    /// The instance's events by type, in order.
    async fn trail(&self) -> Vec<String> {
        sqlx::query_scalar(
            "select event_type from events where aggregate_id = $1 order by sequence",
        )
        .bind(self.id.to_string())
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// No task or approval was opened twice, and no event type repeats where it must not.
    async fn assert_nothing_doubled(&self) {
        let doubled: Vec<(String, String, i64)> = sqlx::query_as(
            "select aggregate_id, event_type, count(*) from events \
             where event_type in ('TaskOpened', 'ApprovalOpened', 'TaskCompleted', \
                                  'ApprovalClosed', 'InstanceCompleted', 'InstanceStarted') \
             group by 1, 2 having count(*) > 1",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        assert!(doubled.is_empty(), "{doubled:?}");
    }
}

async fn manager_path(crashy: bool) -> Vec<String> {
    let po = Po::start(json!(5000), crashy).await;
    let clerk = member(CLERK, &["clerks"]);
    po.work("review", &clerk, json!({"checked": true})).await;
    let (manager, _) = po.rt.load_approval(po.child("manager")).await.unwrap();
    assert_eq!(manager.slots().len(), 2, "the managers group was resolved");
    po.vote("manager", MANAGERS[1], ApprovalDecision::Approve)
        .await;
    po.work("legal", &member(LAWYER, &["legal"]), json!({}))
        .await;
    assert!(!po.exists("archive").await, "the join waits for finance");
    po.work("finance", &member(FINANCE, &[]), json!({"budget": "ok"}))
        .await;
    po.work("archive", &clerk, json!({})).await;
    assert_eq!(
        po.status().await,
        (InstanceStatus::Completed, Some("approved".into()))
    );
    let (instance, _) = po.rt.load_instance(po.id).await.unwrap();
    assert_eq!(instance.variables()["budget"], json!("ok"));
    po.assert_nothing_doubled().await;
    po.trail().await
}

#[tokio::test]
async fn the_manager_path_ends_approved_with_the_cascade_on_the_command_path() {
    let trail = manager_path(false).await;
    assert_eq!(trail.first().map(String::as_str), Some("InstanceStarted"));
    assert_eq!(trail.last().map(String::as_str), Some("InstanceCompleted"));
}

#[tokio::test]
async fn the_orchestrator_crashing_after_every_reaction_ends_the_instance_the_same() {
    let inline = manager_path(false).await;
    let crashy = manager_path(true).await;
    assert_eq!(crashy, inline);
}

#[tokio::test]
async fn a_large_order_needs_two_of_three_board_members() {
    let po = Po::start(json!(15000), false).await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}))
        .await;
    assert!(!po.exists("manager").await);
    po.vote("board", BOARD[0], ApprovalDecision::Reject).await;
    po.vote("board", BOARD[1], ApprovalDecision::Approve).await;
    assert!(!po.exists("legal").await, "one approval is not a quorum");
    po.vote("board", BOARD[2], ApprovalDecision::Approve).await;
    po.work("legal", &member(LAWYER, &["legal"]), json!({}))
        .await;
    po.work("finance", &member(FINANCE, &[]), json!({})).await;
    po.work("archive", &member(CLERK, &["clerks"]), json!({}))
        .await;
    assert_eq!(
        po.status().await,
        (InstanceStatus::Completed, Some("approved".into()))
    );
    po.assert_nothing_doubled().await;
}

#[tokio::test]
async fn a_board_rejection_ends_the_order_declined_even_when_the_orchestrator_crashes() {
    let po = Po::start(json!(20000), true).await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}))
        .await;
    po.vote("board", BOARD[0], ApprovalDecision::Reject).await;
    po.vote("board", BOARD[2], ApprovalDecision::Reject).await;
    assert_eq!(
        po.status().await,
        (InstanceStatus::Completed, Some("rejected".into()))
    );
    assert!(!po.exists("legal").await);
    po.assert_nothing_doubled().await;
}

#[tokio::test]
async fn cancelling_an_instance_cancels_its_open_tasks() {
    let po = Po::start(json!(5000), false).await;
    let operator = Caller::user(TENANT, user(0x0F), [Role::Operator], Vec::<String>::new());
    po.rt
        .instance(
            &ctx(operator, po.t0 + TimeDelta::minutes(5)),
            po.id,
            InstanceCommand::Cancel {
                reason: "duplicate order".into(),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(po.status().await.0, InstanceStatus::Cancelled);
    let (review, _) = po.rt.load_task(po.child("review")).await.unwrap();
    assert_eq!(review.status(), TaskStatus::Cancelled);
}

#[tokio::test]
async fn a_decision_that_cannot_be_evaluated_waits_on_an_incident_until_retried() {
    let po = Po::start(json!("a lot"), false).await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}))
        .await;
    let (instance, _) = po.rt.load_instance(po.id).await.unwrap();
    assert_eq!(instance.status(), InstanceStatus::Running);
    assert_eq!(instance.incidents()[0].step_id, "route");
    let trail = po.trail().await;
    assert_eq!(trail.last().map(String::as_str), Some("IncidentRaised"));
    let raised: Value = sqlx::query_scalar(
        "select payload from events where aggregate_id = $1 and event_type = 'IncidentRaised'",
    )
    .bind(po.id.to_string())
    .fetch_one(&po.db.pool)
    .await
    .unwrap();
    assert!(
        raised.to_string().contains("amount > 10000"),
        "the failing rule is named: {raised}"
    );
    // the process manager has nothing to do for it
    let pm = ProcessManager::new(po.rt.clone());
    while pm.step().await.unwrap().is_some() {}
    assert_eq!(po.trail().await, trail);

    po.rt
        .retry_incident(
            &ctx(
                Caller::user(TENANT, user(0x0F), [Role::Operator], Vec::<String>::new()),
                po.t0 + TimeDelta::minutes(9),
            ),
            po.id,
            "route".into(),
            vars(json!({"amount": 50000})),
            None,
        )
        .await
        .unwrap();
    let (instance, _) = po.rt.load_instance(po.id).await.unwrap();
    assert!(instance.incidents().is_empty());
    // the board's approval was opened with the retry, before it answered
    let (board, _) = po
        .rt
        .load_approval(step_child_id(po.id, "board", 1))
        .await
        .unwrap();
    assert_eq!(board.status(), ApprovalStatus::Pending);
}

#[tokio::test]
async fn a_due_date_becomes_a_durable_timer_that_marks_the_task_overdue_once() {
    let po = Po::start(json!(5000), false).await;
    // the process manager sees the same events again: the timer is still stored once
    let pm = ProcessManager::new(po.rt.clone());
    while pm.step().await.unwrap().is_some() {}
    let timers: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("select timer_id, due_at from timers where fired_at is null")
            .fetch_all(&po.db.pool)
            .await
            .unwrap();
    assert_eq!(timers.len(), 1, "review is due in two days");
    assert_eq!(
        timers[0].1.timestamp(),
        (po.t0 + TimeDelta::days(2)).timestamp()
    );

    let worker = TimerWorker::new(po.rt.clone());
    assert_eq!(
        worker.fire_due(po.t0 + TimeDelta::days(1)).await.unwrap(),
        0,
        "not due yet"
    );
    assert_eq!(
        worker.fire_due(po.t0 + TimeDelta::days(3)).await.unwrap(),
        1
    );
    assert_eq!(
        worker.fire_due(po.t0 + TimeDelta::days(4)).await.unwrap(),
        0,
        "fired once"
    );
    let (review, _) = po.rt.load_task(po.child("review")).await.unwrap();
    assert!(review.is_overdue());
    let overdue: i64 =
        sqlx::query_scalar("select count(*) from events where event_type = 'TaskOverdue'")
            .fetch_one(&po.db.pool)
            .await
            .unwrap();
    assert_eq!(overdue, 1);
}

#[tokio::test]
async fn the_process_manager_passes_over_events_whose_reactions_the_cascade_carried_out() {
    let po = Po::start(json!(5000), false).await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}))
        .await;
    let stored: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&po.db.pool)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let events = loop {
        let events =
            event_store::GlobalLog::read(&po.db.pool, event_store::LogPosition::START, 10_000)
                .await
                .unwrap();
        if events.len() as i64 == stored {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log never became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let reacting: Vec<_> = events
        .iter()
        .filter(|e| !domain::react_to_recorded(e).unwrap().is_empty())
        .collect();
    assert!(reacting.len() >= 4, "{reacting:?}");
    for event in &reacting {
        assert!(
            po.rt.has_reacted_to(event),
            "{} {} was not marked done",
            event.event_type,
            event.aggregate_id
        );
        assert!(!po.rt.has_reacted_to(event), "asked once, then forgotten");
    }
    // the marks are taken now: a process manager going over the log sends every reaction
    // again, and the commands change nothing
    let before = po.trail().await;
    while ProcessManager::new(po.rt.clone())
        .step()
        .await
        .unwrap()
        .is_some()
    {}
    assert_eq!(po.trail().await, before);
    po.assert_nothing_doubled().await;
}

/// How many transactions appended the events of the request with `correlation_id`, and how
/// many events they were.
async fn transactions_of(db: &TestDatabase, correlation_id: Uuid) -> (i64, i64) {
    sqlx::query_as(
        "select count(distinct tx_id), count(*) from events \
         where metadata ->> 'correlation_id' = $1",
    )
    .bind(correlation_id.to_string())
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_command_and_its_cascade_commit_in_one_transaction() {
    let po = Po::start(json!(5000), false).await;
    let clerk = member(CLERK, &["clerks"]);
    let at = po.t0 + TimeDelta::minutes(5);
    let review = po.child("review");
    po.rt
        .task(&ctx(clerk.clone(), at), review, TaskCommand::Claim, None)
        .await
        .unwrap();
    let complete = ctx(clerk, at);
    let done = po
        .rt
        .task(
            &complete,
            review,
            TaskCommand::Complete { output: Map::new() },
            None,
        )
        .await
        .unwrap();
    // the task's completion, the instance's advance and the manager approval's opening
    let (transactions, events) = transactions_of(&po.db, complete.correlation_id).await;
    assert_eq!(transactions, 1);
    assert!(events >= 3, "{events} events");
    assert_eq!(done.appended as i64, events);
    // the consistency token is the last of them
    let last: (String, i64) = sqlx::query_as(
        "select tx_id::text, global_position from events \
         where metadata ->> 'correlation_id' = $1 order by global_position desc limit 1",
    )
    .bind(complete.correlation_id.to_string())
    .fetch_one(&po.db.pool)
    .await
    .unwrap();
    let position = done.position.expect("a position");
    assert_eq!((position.tx_id.to_string(), position.global_position), last);
    assert!(po.exists("manager").await);
}

#[tokio::test]
async fn a_cascade_decided_on_a_stale_state_runs_again_step_by_step_with_nothing_lost() {
    // `po.rt` claims the review and keeps the task in memory; another process comments on it,
    // so `po.rt`'s completion (and the cascade behind it) is decided on a stale task
    let po = Po::start(json!(5000), false).await;
    let other = Runtime::new(po.db.pool.clone(), AppendNotifier::disabled(), directory());
    let clerk = member(CLERK, &["clerks"]);
    let at = po.t0 + TimeDelta::minutes(5);
    let review = po.child("review");
    po.rt
        .task(&ctx(clerk.clone(), at), review, TaskCommand::Claim, None)
        .await
        .unwrap();
    let comment = TaskCommand::Comment {
        text: "checked the quote".into(),
    };
    other
        .task(&ctx(clerk.clone(), at), review, comment, None)
        .await
        .unwrap();
    let complete = ctx(clerk, at);
    let done = po
        .rt
        .task(
            &complete,
            review,
            TaskCommand::Complete { output: Map::new() },
            None,
        )
        .await
        .unwrap();
    // the append together found the task's next sequence taken and appended nothing; step by
    // step, on the stored task, each step appended on its own
    let (transactions, events) = transactions_of(&po.db, complete.correlation_id).await;
    assert!(transactions > 1, "{transactions} transaction(s)");
    assert_eq!(done.appended as i64, events);
    let (task, version) = po.rt.load_task(review).await.unwrap();
    assert_eq!((task.status(), version), (TaskStatus::Completed, 4));
    assert_eq!(done.version, 4);
    assert!(po.exists("manager").await);
    po.assert_nothing_doubled().await;
    po.vote("manager", MANAGERS[0], ApprovalDecision::Approve)
        .await;
    po.work("legal", &member(LAWYER, &["legal"]), json!({}))
        .await;
    po.work("finance", &member(FINANCE, &[]), json!({})).await;
    po.work("archive", &member(CLERK, &["clerks"]), json!({}))
        .await;
    assert_eq!(
        po.status().await,
        (InstanceStatus::Completed, Some("approved".into()))
    );
    po.assert_nothing_doubled().await;
}

#[tokio::test]
async fn an_instance_starts_on_the_latest_version_even_one_another_process_published() {
    let po = Po::start(json!(5000), false).await;
    let (first, _) = po.rt.load_instance(po.id).await.unwrap();
    assert_eq!(first.definition_version(), 1);
    let other = Runtime::new(po.db.pool.clone(), AppendNotifier::disabled(), directory());
    let designer = Caller::user(TENANT, user(0xDE), [Role::Designer], Vec::<String>::new());
    // an identical definition would be no new version
    let renamed = purchase_order_json(user(FINANCE)).replace("Purchase order", "Purchase order 2");
    let definition = Definition::from_json(&renamed).unwrap();
    let published = other
        .publish(&ctx(designer, po.t0), definition)
        .await
        .unwrap();
    assert_eq!(published.version, 2);
    let operator = Caller::user(TENANT, user(0x0F), [Role::Operator], Vec::<String>::new());
    let started = po
        .rt
        .start(
            &ctx(operator, po.t0),
            "purchase-order",
            None,
            None,
            vars(json!({"amount": 10})),
        )
        .await
        .unwrap();
    let (second, _) = po
        .rt
        .load_instance(started.id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(second.definition_version(), 2);
}
