//! `workledger replay`: rebuilding read models through the binary leaves them identical.

use std::process::Command;
use std::sync::Arc;

use domain::Role;
use event_store::AppendNotifier;
use event_store::testing::TestDatabase;
use orchestrator::{Runtime, StaticDirectory};
use projections::Projections;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

mod support;
use support::{ctx, populated, project_everything, workledger};

/// Every row of `table` as JSON text, in a stable order.
async fn rows(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(&format!(
        "select to_jsonb(t)::text from {table} t order by 1"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

const TABLES: [&str; 5] = [
    "workflow_definitions",
    "workflow_instances",
    "tasks",
    "audit_entries",
    "audit_chain_heads",
];

#[tokio::test]
async fn replaying_every_projection_leaves_the_read_models_identical() {
    let db = populated(&["acme"], 4).await;
    let mut before = Vec::new();
    for table in TABLES {
        let r = rows(&db.pool, table).await;
        assert!(!r.is_empty(), "{table} is populated");
        before.push(r);
    }
    let output = workledger(&db, &["replay", "--all"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.contains("events/s"), "{summary}");
    assert!(summary.contains("swapped tables:") && summary.contains("audit_entries"));
    // not a terminal: plain progress lines
    assert!(stderr.contains("events/s"), "{stderr}");
    for (table, expected) in TABLES.iter().zip(before) {
        assert_eq!(rows(&db.pool, table).await, expected, "{table}");
    }
    let leftovers: i64 =
        sqlx::query_scalar("select count(*) from pg_namespace where nspname like 'rebuild_%'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn replaying_one_projection_rebuilds_only_its_tables() {
    let db = populated(&["acme"], 4).await;
    let before = rows(&db.pool, "tasks").await;
    let output = workledger(&db, &["replay", "--projection", "tasks"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.contains("replayed tasks:"), "{summary}");
    assert!(!summary.contains("audit_entries"), "{summary}");
    assert_eq!(rows(&db.pool, "tasks").await, before);
}

#[tokio::test]
async fn an_unknown_projection_is_a_usage_error_listing_the_valid_names() {
    let db = TestDatabase::new().await;
    let output = workledger(&db, &["replay", "--projection", "nope"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("\"nope\"") && stderr.contains("approvals"),
        "{stderr}"
    );
}

#[tokio::test]
async fn replay_needs_a_projection_or_all() {
    let db = TestDatabase::new().await;
    let output = workledger(&db, &["replay"]);
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_during_live_traffic_ends_identical_to_a_fresh_build() {
    let db = populated(&["acme"], 4).await;
    let live = CancellationToken::new();
    let workers = tokio::spawn(Projections::all().run(db.pool.clone(), live.clone()));
    let traffic_done = CancellationToken::new();
    let traffic = {
        let pool = db.pool.clone();
        let done = traffic_done.clone();
        tokio::spawn(async move {
            let rt = Runtime::new(
                pool,
                AppendNotifier::disabled(),
                Arc::new(StaticDirectory::new()),
            );
            let mut started = 0;
            while !done.is_cancelled() || started < 5 {
                rt.start(
                    &ctx("acme", vec![Role::Operator], &[]),
                    "one-task",
                    None,
                    None,
                    Default::default(),
                )
                .await
                .unwrap();
                started += 1;
            }
            started
        })
    };
    let url = db.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_workledger"))
            .args(["replay", "--all"])
            .env("DATABASE_URL", url)
            .env("WORKLEDGER_LOG", "warn")
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap();
    traffic_done.cancel();
    let started = traffic.await.unwrap();
    assert!(started >= 5);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    live.cancel();
    workers.await.unwrap();
    project_everything(&db.pool).await;
    let instances: i64 = sqlx::query_scalar("select count(*) from workflow_instances")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        instances,
        4 + started,
        "every instance is in the read model"
    );

    let mut after_live = Vec::new();
    for table in TABLES {
        after_live.push(rows(&db.pool, table).await);
    }
    // a fresh build with no traffic
    let output = workledger(&db, &["replay", "--all"]);
    assert!(output.status.success());
    for (table, expected) in TABLES.iter().zip(after_live) {
        assert_eq!(rows(&db.pool, table).await, expected, "{table}");
    }
}

#[tokio::test]
async fn a_rebuild_that_cannot_run_fails_in_one_line_and_leaves_the_serving_tables_alone() {
    let db = populated(&["acme"], 4).await;
    let before = rows(&db.pool, "tasks").await;
    // another rebuild of tasks holds its lock
    let mut other = db.pool.acquire().await.unwrap();
    sqlx::query("select pg_advisory_lock($1)")
        .bind(projections::lock_key("rebuild:tasks"))
        .execute(&mut *other)
        .await
        .unwrap();
    let output = workledger(&db, &["replay", "--projection", "tasks"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("serving tables are untouched")
            && stderr.contains("another rebuild of tasks is running"),
        "{stderr}"
    );
    assert_eq!(rows(&db.pool, "tasks").await, before);
}
