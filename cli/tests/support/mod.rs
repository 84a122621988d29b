//! What the CLI tests share: workflow data in a fresh database, and the real binary.
#![allow(dead_code)] // each test binary uses a different part

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use domain::definition::Definition;
use domain::{Caller, Role};
use event_schemas::LogPosition;
use event_store::AppendNotifier;
use event_store::testing::TestDatabase;
use orchestrator::{RequestContext, Runtime, StaticDirectory};
use projections::Projections;
use sqlx::PgPool;
use uuid::Uuid;

/// A workflow of one task offered to `clerks`.
pub const ONE_TASK: &str = r#"{"key": "one-task", "name": "One task", "start": "work",
    "steps": {"work": {"type": "task", "name": "Work", "candidate_groups": ["clerks"], "next": "done"},
              "done": {"type": "end", "outcome": "done"}}}"#;

/// A request by a new user of `tenant` with `roles` and `groups`.
pub fn ctx(tenant: &str, roles: Vec<Role>, groups: &[&str]) -> RequestContext {
    RequestContext {
        caller: Caller::user(tenant, Uuid::now_v7(), roles, groups.iter().copied()),
        at: chrono::Utc::now(),
        correlation_id: Uuid::now_v7(),
        request_id: "test".into(),
    }
}

/// The workflow runtime on `db`, with no groups.
pub fn runtime(db: &TestDatabase) -> Runtime {
    Runtime::new(
        db.pool.clone(),
        AppendNotifier::disabled(),
        Arc::new(StaticDirectory::new()),
    )
}

/// [`ONE_TASK`] published in every one of `tenants`, `instances` of it started in the first,
/// and every read model projected.
pub async fn populated(tenants: &[&str], instances: usize) -> TestDatabase {
    let db = TestDatabase::new().await;
    let rt = runtime(&db);
    for tenant in tenants {
        rt.publish(
            &ctx(tenant, vec![Role::Designer], &[]),
            Definition::from_json(ONE_TASK).unwrap(),
        )
        .await
        .unwrap();
    }
    for _ in 0..instances {
        rt.start(
            &ctx(tenants[0], vec![Role::Operator], &[]),
            "one-task",
            None,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    }
    project_everything(&db.pool).await;
    db
}

/// Projects up to the last stored event (other tests' transactions in the same cluster can
/// hold events back from being readable for a moment).
pub async fn project_everything(pool: &PgPool) {
    let (tx_id, global_position): (i64, i64) = sqlx::query_as(
        "select tx_id::text::bigint, global_position from events \
         order by tx_id desc, global_position desc limit 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let target = LogPosition {
        tx_id: tx_id as u64,
        global_position,
    };
    Projections::all()
        .catch_up_to(pool, target, Duration::from_secs(30))
        .await
        .unwrap();
}

/// Runs `workledger ARGS` on `db`.
pub fn workledger(db: &TestDatabase, args: &[&str]) -> Output {
    workledger_with_env(db, args, &[])
}

/// Runs `workledger ARGS` on `db` with extra environment variables.
pub fn workledger_with_env(db: &TestDatabase, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_workledger"));
    command
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("WORKLEDGER_LOG", "warn")
        .env_remove("WORKLEDGER_AUDIT_SIGNING_KEY");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the binary runs")
}

/// The standard output of a command that must have succeeded.
pub fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}
