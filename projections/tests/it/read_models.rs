//! Every read model after each purchase-order path, built from the real runtime's events.

use chrono::{DateTime, TimeDelta, Utc};
use domain::instance::InstanceCommand;
use event_schemas::ApprovalDecision;
use orchestrator::TimerWorker;
use projections::audit::{AuditEntry, ChainVerifier};
use projections::{Projections, RunSettings};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::*;

async fn row(pool: &PgPool, table: &str, id: Uuid) -> Value {
    sqlx::query_scalar(&format!("select to_jsonb(t) from {table} t where id = $1"))
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("no {table} row {id}: {e}"))
}

fn ts(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .unwrap()
        .with_timezone(&Utc)
}

fn ids(value: &Value) -> Vec<Uuid> {
    serde_json::from_value(value.clone()).unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The instance's events by type, in order.
async fn trail(pool: &PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("select event_type from events where aggregate_id = $1 order by sequence")
        .bind(id.to_string())
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The report counters of `day` for the purchase order.
async fn report_day(pool: &PgPool, day: &str) -> Value {
    sqlx::query_scalar(
        "select to_jsonb(t) - 'tenant_id' - 'definition_key' - 'day' from workflow_report_days t \
         where definition_key = 'purchase-order' and day = $1::date",
    )
    .bind(day)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn audit_entries(pool: &PgPool) -> Vec<AuditEntry> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "select jsonb_build_object('event_id', event_id, \
             'position', tx_id::text || '.' || global_position::text, 'tenant_id', tenant_id, \
             'chain_seq', chain_seq, 'aggregate_type', aggregate_type, \
             'aggregate_id', aggregate_id, 'sequence', sequence, 'event_type', event_type, \
             'event_version', event_version, 'actor', actor, \
             'occurred_at', to_char(occurred_at at time zone 'UTC', \
                                    'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             'payload', payload, 'prev_hash', encode(prev_hash, 'hex'), \
             'hash', encode(hash, 'hex')) \
         from audit_entries order by tenant_id, chain_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| serde_json::from_value(r).unwrap())
        .collect()
}

async fn assert_audit_complete(pool: &PgPool) {
    let entries = audit_entries(pool).await;
    let events = count(pool, "select count(*) from events").await;
    assert_eq!(entries.len() as i64, events, "one audit entry per event");
    let mut verifier = ChainVerifier::new();
    for entry in &entries {
        verifier.push(entry).unwrap();
    }
}

/// Rebuilding from the log, with other batch sizes, gives the same rows.
async fn assert_rebuild_reproduces(pool: &PgPool) {
    let before = dump_all(pool).await;
    for batch_size in [1, 7] {
        reset(pool).await;
        let projections = Projections::all().with_settings(RunSettings {
            batch_size,
            ..RunSettings::default()
        });
        project_with(&projections, pool).await;
        assert_eq!(dump_all(pool).await, before, "batch size {batch_size}");
    }
}

#[tokio::test]
async fn the_manager_path_fills_every_read_model_step_by_step() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    let po = Po::start(&rt, json!(5000), "PO-1").await;
    project(pool).await;

    let definition: Value = sqlx::query_scalar(
        "select to_jsonb(t) from workflow_definitions t where key = 'purchase-order'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(definition["version"], 1);
    assert_eq!(definition["tenant_id"], TENANT);
    assert_eq!(definition["definition"]["start"], "review");

    let instance = row(pool, "workflow_instances", po.id).await;
    assert_eq!(instance["status"], "running");
    assert_eq!(instance["business_key"], "PO-1");
    assert_eq!(instance["variables"], json!({"amount": 5000}));
    let open = instance["open_steps"].as_array().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["kind"], "task");
    assert_eq!(open[0]["step_id"], "review");
    assert_eq!(open[0]["id"], po.child("review").to_string());
    assert_eq!(ts(&open[0]["due_at"]), t0() + TimeDelta::days(2));

    let review = row(pool, "tasks", po.child("review")).await;
    assert_eq!(review["status"], "open");
    assert_eq!(review["assignee"], Value::Null);
    assert_eq!(review["candidate_groups"], json!(["clerks"]));
    assert_eq!(review["workflow_instance_id"], po.id.to_string());
    assert_eq!(review["step_id"], "review");
    assert_eq!(ts(&review["due_at"]), t0() + TimeDelta::days(2));
    assert_eq!(review["overdue"], false);
    assert_eq!(review["version"], 1);

    let clerk = member(CLERK, &["clerks"]);
    po.work("review", &clerk, json!({"checked": true}), 10)
        .await;
    project(pool).await;
    let review = row(pool, "tasks", po.child("review")).await;
    assert_eq!(review["status"], "completed");
    assert_eq!(review["assignee"], user(CLERK).to_string());
    assert_eq!(review["output"], json!({"checked": true}));
    assert_eq!(review["version"], 3, "opened, claimed, completed");
    let manager = row(pool, "approvals", po.child("manager")).await;
    assert_eq!(manager["status"], "pending");
    assert_eq!(manager["policy"], "any");
    assert_eq!(ids(&manager["approvers"]), MANAGERS.map(user).to_vec());
    assert_eq!(ids(&manager["awaiting"]), MANAGERS.map(user).to_vec());
    let instance = row(pool, "workflow_instances", po.id).await;
    assert_eq!(
        instance["variables"],
        json!({"amount": 5000, "checked": true})
    );
    assert_eq!(instance["open_steps"][0]["kind"], "approval");

    po.vote("manager", MANAGERS[1], ApprovalDecision::Approve, 20)
        .await;
    po.work("legal", &member(LAWYER, &["legal"]), json!({}), 30)
        .await;
    project(pool).await;
    let manager = row(pool, "approvals", po.child("manager")).await;
    assert_eq!(manager["status"], "approved");
    assert_eq!(manager["outcome"], "approved");
    assert_eq!(manager["awaiting"], json!([]));
    assert_eq!(manager["approvals_count"], 1);
    assert_eq!(
        manager["decisions"][0]["approver"],
        user(MANAGERS[1]).to_string()
    );
    assert_eq!(manager["decisions"][0]["decision"], "approve");
    let finance = row(pool, "tasks", po.child("finance")).await;
    assert_eq!(finance["assignee"], user(FINANCE).to_string());
    let open = row(pool, "workflow_instances", po.id).await["open_steps"].clone();
    let kinds: Vec<(&str, &str)> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["kind"].as_str().unwrap(), s["step_id"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("task", "finance"), ("join", "archive")]);
    assert_eq!(open[1]["arrived"], 1);
    assert_eq!(open[1]["expected"], 2);

    po.work(
        "finance",
        &member(FINANCE, &[]),
        json!({"budget": "ok"}),
        40,
    )
    .await;
    po.work("archive", &clerk, json!({}), 50).await;
    project(pool).await;
    let instance = row(pool, "workflow_instances", po.id).await;
    assert_eq!(instance["status"], "completed");
    assert_eq!(instance["outcome"], "approved");
    assert_eq!(instance["open_steps"], json!([]));
    assert_eq!(instance["variables"]["budget"], "ok");
    assert_eq!(ts(&instance["ended_at"]), t0() + TimeDelta::minutes(50));
    assert_eq!(
        instance["version"],
        trail(pool, po.id).await.len(),
        "the ETag is the aggregate's version"
    );
    let timeline: Vec<String> = sqlx::query_scalar(
        "select event_type from workflow_instance_timeline where instance_id = $1 order by sequence",
    )
    .bind(po.id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(timeline, trail(pool, po.id).await);

    assert_eq!(
        report_day(pool, "2026-03-02").await,
        json!({"started": 1, "completed": 1, "cancelled": 0, "failed": 0, "sla_breaches": 0})
    );
    let (outcome, completed): (String, i64) =
        sqlx::query_as("select outcome, completed from workflow_report_outcomes")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((outcome.as_str(), completed), ("approved", 1));
    let cycle: f64 = sqlx::query_scalar(
        "select cycle_seconds from workflow_report_instances where instance_id = $1",
    )
    .bind(po.id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(cycle, 3000.0);

    assert_audit_complete(pool).await;
    assert_rebuild_reproduces(pool).await;
}

#[tokio::test]
async fn a_board_quorum_records_every_vote_in_order() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    let po = Po::start(&rt, json!(15000), "PO-2").await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}), 5)
        .await;
    po.vote("board", BOARD[0], ApprovalDecision::Reject, 10)
        .await;
    project(pool).await;
    let board = row(pool, "approvals", po.child("board")).await;
    assert_eq!(board["status"], "pending");
    assert_eq!(board["policy"], json!({"quorum": 2}));
    assert_eq!(
        ids(&board["awaiting"]),
        vec![user(BOARD[1]), user(BOARD[2])]
    );
    assert_eq!(board["rejections_count"], 1);

    po.vote("board", BOARD[1], ApprovalDecision::Approve, 11)
        .await;
    po.vote("board", BOARD[2], ApprovalDecision::Approve, 12)
        .await;
    project(pool).await;
    let board = row(pool, "approvals", po.child("board")).await;
    assert_eq!(board["status"], "approved");
    assert_eq!(board["close_reason"], "decided");
    assert_eq!(
        (
            board["approvals_count"].clone(),
            board["rejections_count"].clone()
        ),
        (json!(2), json!(1))
    );
    let deciders: Vec<&str> = board["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decided_by"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = BOARD.map(|b| user(b).to_string()).to_vec();
    assert_eq!(deciders, expected);
    let votes = board["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 3);
    assert_eq!(votes[0]["decision"], "reject");
    let legal = row(pool, "tasks", po.child("legal")).await;
    assert_eq!(legal["status"], "open");
    assert_eq!(legal["candidate_groups"], json!(["legal"]));
    assert_audit_complete(pool).await;
}

#[tokio::test]
async fn a_board_rejection_ends_the_order_declined_in_every_read_model() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    let po = Po::start(&rt, json!(20000), "PO-3").await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}), 5)
        .await;
    po.vote("board", BOARD[0], ApprovalDecision::Reject, 10)
        .await;
    po.vote("board", BOARD[2], ApprovalDecision::Reject, 15)
        .await;
    project(pool).await;
    let board = row(pool, "approvals", po.child("board")).await;
    assert_eq!(board["status"], "rejected");
    assert_eq!(board["awaiting"], json!([]));
    let instance = row(pool, "workflow_instances", po.id).await;
    assert_eq!(instance["status"], "completed");
    assert_eq!(instance["outcome"], "rejected");
    let outcome: String = sqlx::query_scalar("select outcome from workflow_report_outcomes")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(outcome, "rejected");
    assert_eq!(
        count(pool, "select count(*) from tasks where step_id = 'legal'").await,
        0
    );
    assert_audit_complete(pool).await;
}

#[tokio::test]
async fn a_cancelled_order_cancels_its_task_in_the_inbox_and_counts_in_the_report() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    let po = Po::start(&rt, json!(5000), "PO-4").await;
    rt.instance(
        &ctx(operator(), t0() + TimeDelta::minutes(5)),
        po.id,
        InstanceCommand::Cancel {
            reason: "duplicate order".into(),
        },
        None,
    )
    .await
    .unwrap();
    project(pool).await;
    let instance = row(pool, "workflow_instances", po.id).await;
    assert_eq!(instance["status"], "cancelled");
    assert_eq!(instance["end_reason"], "duplicate order");
    assert_eq!(instance["open_steps"], json!([]));
    let review = row(pool, "tasks", po.child("review")).await;
    assert_eq!(review["status"], "cancelled");
    assert_eq!(
        report_day(pool, "2026-03-02").await,
        json!({"started": 1, "completed": 0, "cancelled": 1, "failed": 0, "sla_breaches": 0})
    );
    assert_audit_complete(pool).await;
}

#[tokio::test]
async fn an_order_whose_decision_cannot_be_evaluated_shows_its_incident_until_retried() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    let po = Po::start(&rt, json!("a lot"), "PO-5").await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}), 5)
        .await;
    project(pool).await;
    let instance = row(pool, "workflow_instances", po.id).await;
    assert_eq!(instance["status"], "running");
    let open = instance["open_steps"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{instance}");
    assert_eq!(open[0]["kind"], "incident");
    assert_eq!(open[0]["step_id"], "route");
    assert!(
        open[0]["reason"]
            .as_str()
            .unwrap()
            .contains("amount > 10000")
    );
    assert_eq!(report_day(pool, "2026-03-02").await["failed"], 0);
    assert_audit_complete(pool).await;
    assert_rebuild_reproduces(pool).await;
}

#[tokio::test]
async fn an_overdue_review_is_flagged_and_counted_as_an_sla_breach() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    let po = Po::start(&rt, json!(5000), "PO-6").await;
    let fired = TimerWorker::new(rt.clone())
        .fire_due(t0() + TimeDelta::days(3))
        .await
        .unwrap();
    assert_eq!(fired, 1);
    project(pool).await;
    let review = row(pool, "tasks", po.child("review")).await;
    assert_eq!(review["overdue"], true);
    assert_eq!(ts(&review["overdue_at"]), t0() + TimeDelta::days(3));
    assert_eq!(report_day(pool, "2026-03-05").await["sla_breaches"], 1);
    assert_eq!(report_day(pool, "2026-03-02").await["started"], 1);
    assert_audit_complete(pool).await;
    assert_rebuild_reproduces(pool).await;
}
