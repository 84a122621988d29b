//! `workledger events`: the log as a table or JSON lines, filters, and state at a version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::Role;
use domain::definition::Definition;
use domain::task::TaskCommand;
use event_store::AppendNotifier;
use event_store::testing::TestDatabase;
use orchestrator::{Runtime, StaticDirectory};
use uuid::Uuid;

mod support;
use support::{ONE_TASK, ctx, stdout, workledger};

/// A database with one instance whose task was claimed: returns it and the task id.
async fn populated() -> (TestDatabase, Uuid, Uuid) {
    let db = TestDatabase::new().await;
    let rt = Runtime::new(
        db.pool.clone(),
        AppendNotifier::disabled(),
        Arc::new(StaticDirectory::new()),
    );
    rt.publish(
        &ctx("acme", vec![Role::Designer], &[]),
        Definition::from_json(ONE_TASK).unwrap(),
    )
    .await
    .unwrap();
    let started = rt
        .start(
            &ctx("acme", vec![Role::Operator], &[]),
            "one-task",
            None,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    let instance: Uuid = started.id.parse().unwrap();
    let task = domain::ids::step_child_id(instance, "work", 1);
    rt.task(
        &ctx("acme", vec![Role::Member], &["clerks"]),
        task,
        TaskCommand::Claim,
        None,
    )
    .await
    .unwrap();
    readable(&db).await;
    (db, instance, task)
}

/// Waits until every stored event of `db` is readable: `events` shows only those, and another
/// test's transaction anywhere in the cluster can hold them back for a moment.
async fn readable(db: &TestDatabase) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unreadable: i64 = sqlx::query_scalar(
            "select count(*) from events where tx_id >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if unreadable == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the events never became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends one event of the aggregate `probe/ID` through `executor` (a transaction left open,
/// or the pool).
async fn insert_probe<'c>(executor: impl sqlx::PgExecutor<'c>, id: &str) {
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         values ('probe', $1, 1, 'Probed', '1', '{}', jsonb_build_object( \
             'event_id', gen_random_uuid(), 'tenant_id', 'acme', 'actor', 'service:test', \
             'correlation_id', gen_random_uuid(), 'causation_id', gen_random_uuid(), \
             'request_id', 'test', 'occurred_at', now()))",
    )
    .bind(id)
    .execute(executor)
    .await
    .unwrap();
}

/// The aggregate ids and positions `events --format jsonl ARGS` prints, in its order.
fn listed(db: &TestDatabase, args: &[&str]) -> Vec<(String, String)> {
    let mut all = vec!["events", "--format", "jsonl"];
    all.extend_from_slice(args);
    stdout(&workledger(db, &all))
        .lines()
        .map(|l| {
            let event: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                event["aggregate_id"].as_str().unwrap().to_owned(),
                event["position"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_log_prints_as_a_table_in_log_order() {
    let (db, _, _) = populated().await;
    let text = stdout(&workledger(&db, &["events"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("POSITION"));
    assert!(lines[1].contains("workflow_definition") && lines[1].contains("acme"));
    assert!(lines.iter().any(|l| l.contains("TaskClaimed v1")));
    assert_eq!(
        lines.len(),
        1 + 5,
        "header + published, started, activated, opened, claimed: {text}"
    );
}

#[tokio::test]
async fn filters_narrow_the_log_and_jsonl_carries_every_field() {
    let (db, _, task) = populated().await;
    let text = stdout(&workledger(
        &db,
        &[
            "events",
            "--aggregate",
            &format!("task/{task}"),
            "--format",
            "jsonl",
        ],
    ));
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event_type"], "TaskOpened");
    assert_eq!(events[1]["event_type"], "TaskClaimed");
    for field in [
        "position",
        "event_id",
        "payload",
        "metadata",
        "recorded_at",
        "sequence",
    ] {
        assert!(!events[1][field].is_null(), "{field}");
    }
    let position = events[1]["position"].as_str().unwrap();
    let from = stdout(&workledger(
        &db,
        &["events", "--from", position, "--format", "jsonl"],
    ));
    assert_eq!(
        from.lines().count(),
        1,
        "--from is inclusive and nothing follows"
    );
    let other_tenant = stdout(&workledger(
        &db,
        &["events", "--tenant", "globex", "--format", "jsonl"],
    ));
    assert_eq!(other_tenant, "");
    let by_type = stdout(&workledger(
        &db,
        &["events", "--type", "TaskClaimed", "--format", "jsonl"],
    ));
    assert_eq!(by_type.lines().count(), 1);
}

#[tokio::test]
async fn an_aggregate_prints_its_state_at_a_version() {
    let (db, _, task) = populated().await;
    let at = |v: &str| {
        let text = stdout(&workledger(
            &db,
            &[
                "events",
                "--aggregate",
                &format!("task/{task}"),
                "--at-version",
                v,
            ],
        ));
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let opened = at("1");
    let claimed = at("2");
    assert_ne!(opened, claimed);
    assert!(claimed.to_string().contains("assignee"), "{claimed}");

    let beyond = workledger(
        &db,
        &[
            "events",
            "--aggregate",
            &format!("task/{task}"),
            "--at-version",
            "9",
        ],
    );
    assert!(!beyond.status.success());
    let message = String::from_utf8_lossy(&beyond.stderr);
    assert!(message.contains("is at version 2, not 9"), "{message}");
}

#[tokio::test]
async fn bad_arguments_are_one_clear_line_and_a_nonzero_exit() {
    let (db, _, _) = populated().await;
    let bad = workledger(&db, &["events", "--from", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("TX.POSITION"));
    let no_id = workledger(&db, &["events", "--aggregate", "task", "--at-version", "1"]);
    assert_eq!(no_id.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&no_id.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
}

#[tokio::test]
async fn status_lists_every_projector_with_its_lag_and_fails_on_a_stopped_one() {
    let (db, _, _) = populated().await;
    // lag counts readable events: wait until other databases' transactions let all five through
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while event_store::GlobalLog::read(&db.pool, event_store::LogPosition::START, 100)
        .await
        .unwrap()
        .len()
        < 5
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the events never became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let text = stdout(&workledger(&db, &["status"]));
    for name in [
        "definitions",
        "instances",
        "tasks",
        "approvals",
        "workflow_reports",
        "audit",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {text}"));
        assert!(
            line.contains(" 5 ") || line.contains(" 5  "),
            "5 events of lag: {line}"
        );
    }
    assert!(text.contains("5 events in the log"));
    assert!(text.contains("0 instances wait on an incident"), "{text}");
    sqlx::query(
        "insert into workflow_instances (id, tenant_id, definition_key, definition_version, \
             status, variables, open_steps, started_at, started_by, version, updated_at, \
             has_incident) \
         values (gen_random_uuid(), 'default', 'po', 1, 'running', '{}', \
                 '[{\"kind\": \"incident\"}]', now(), 'service:test', 2, now(), true)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let text = stdout(&workledger(&db, &["status"]));
    assert!(text.contains("1 instances wait on an incident"), "{text}");

    sqlx::query(
        "insert into projector_status (name, error, error_tx_id, error_position, failed_since, attempts) \
         values ('tasks', 'payload of TaskOpened does not match', 1, 4, now(), 3)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let failing = workledger(&db, &["status", "--format", "json"]);
    assert_eq!(failing.status.code(), Some(4));
    let body: serde_json::Value = serde_json::from_slice(&failing.stdout).unwrap();
    assert_eq!(body["instances_with_incidents"], 1);
    let tasks = body["projectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tasks")
        .unwrap();
    assert!(
        tasks["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TaskOpened")
    );
}

/// Positions are handed out at insert, not commit: an event committed while an older
/// transaction is still open is not shown until that one ends, when the older one's event
/// lands before it in log order. A script paging with `--from LAST` sees both.
#[tokio::test]
async fn events_behind_a_running_transaction_are_shown_once_it_has_ended_in_log_order() {
    let (db, _, _) = populated().await;
    let before = listed(&db, &[]);
    let (_, last) = before.last().unwrap().clone();

    let mut older = db.pool.begin().await.unwrap();
    insert_probe(&mut *older, "older").await;
    insert_probe(&db.pool, "newer").await;
    let ids = |events: &[(String, String)]| -> Vec<String> {
        events.iter().map(|(id, _)| id.clone()).collect()
    };
    assert_eq!(
        listed(&db, &[]),
        before,
        "the newer event waits for the older transaction"
    );
    assert_eq!(
        listed(&db, &["--from", &last]),
        before[before.len() - 1..],
        "--from LAST: only the last event, nothing after it yet"
    );

    older.commit().await.unwrap();
    readable(&db).await;
    let after = listed(&db, &[]);
    assert_eq!(after.len(), before.len() + 2, "{after:?}");
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(
        ids(&after[before.len()..]),
        ["older", "newer"],
        "the older transaction's event comes first in log order"
    );
    // paging on from the last position printed before misses neither
    assert_eq!(
        ids(&listed(&db, &["--from", &last])[1..]),
        ["older", "newer"]
    );
}

#[tokio::test]
async fn a_version_below_1_is_a_usage_error() {
    let (db, _, task) = populated().await;
    for version in ["0", "-1"] {
        let output = workledger(
            &db,
            &[
                "events",
                "--aggregate",
                &format!("task/{task}"),
                "--at-version",
                version,
            ],
        );
        assert_eq!(output.status.code(), Some(2), "--at-version {version}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("1 or more"), "{stderr}");
        assert!(!stderr.contains("has no events"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}
