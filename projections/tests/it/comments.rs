//! The comments of tasks and approvals (`task_comments`, `approval_comments`): one row per
//! comment event, the text as stored (sealed for its author), also where migration 0018's
//! backfill got there first.

use chrono::{DateTime, TimeDelta, Utc};
use domain::approval::ApprovalCommand;
use domain::task::TaskCommand;
use event_schemas::ApprovalDecision;
use event_schemas::personal::SEALED_PREFIX;
use projections::Projections;
use projections::names::{APPROVALS, TASKS};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::*;

/// Migration 0018's backfill of the comments tables from the log, as it runs on upgrade.
fn backfill_sql() -> &'static str {
    let migration = include_str!("../../../migrations/0018_personal_keys.sql");
    let start = migration
        .find("insert into task_comments")
        .expect("the migration backfills task_comments");
    let end = migration
        .find("-- When the person was erased")
        .expect("the backfill is followed by the identity column");
    &migration[start..end]
}

/// A comments row, or what the log says it should be.
type CommentRow = (Uuid, i64, String, String, String, DateTime<Utc>);

/// The rows of `table` (keyed by `key`), in order.
async fn comment_rows(pool: &PgPool, table: &str, key: &str) -> Vec<CommentRow> {
    sqlx::query_as(&format!(
        "select {key}, sequence, tenant_id, author, text, commented_at from {table} \
         order by {key}, sequence"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The comment events of `event_type` in the log, as comments rows, in order.
async fn logged(pool: &PgPool, event_type: &str) -> Vec<CommentRow> {
    sqlx::query_as(
        "select aggregate_id::uuid, sequence, metadata ->> 'tenant_id', \
                payload -> $1 ->> 'author', payload -> $1 ->> 'text', \
                (payload -> $1 ->> 'commented_at')::timestamptz \
         from events where event_type = $1 order by aggregate_id::uuid, sequence",
    )
    .bind(event_type)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A purchase order whose review task has two comments by the clerk and whose manager
/// approval one, given with the manager's decision.
async fn commented_order(pool: &PgPool) -> Po {
    let rt = runtime(pool);
    publish(&rt).await;
    let po = Po::start(&rt, serde_json::json!(5000), "PO-1").await;
    let clerk = member(CLERK, &["clerks"]);
    for (minutes, text) in [(1, "the quote is attached"), (2, "checked twice")] {
        rt.task(
            &ctx(clerk.clone(), t0() + TimeDelta::minutes(minutes)),
            po.child("review"),
            TaskCommand::Comment { text: text.into() },
            None,
        )
        .await
        .unwrap();
    }
    po.work("review", &clerk, serde_json::json!({}), 3).await;
    rt.approval(
        &ctx(member(MANAGERS[0], &[]), t0() + TimeDelta::minutes(4)),
        po.child("manager"),
        ApprovalCommand::Decide {
            decision: ApprovalDecision::Approve,
            comment: Some("fine by me".into()),
        },
        None,
    )
    .await
    .unwrap();
    po
}

/// Both comments tables hold each comment of the log once, exactly as the log holds it.
async fn assert_comments_as_logged(pool: &PgPool, po: &Po) {
    let tasks = comment_rows(pool, "task_comments", "task_id").await;
    assert_eq!(tasks, logged(pool, "TaskCommented").await);
    assert_eq!(tasks.len(), 2);
    let approvals = comment_rows(pool, "approval_comments", "approval_id").await;
    assert_eq!(approvals, logged(pool, "ApprovalCommented").await);
    assert_eq!(approvals.len(), 1);

    let clerk = format!("user:{}", user(CLERK));
    for (row, at) in tasks.iter().zip([1, 2]) {
        assert_eq!(row.0, po.child("review"));
        assert_eq!(row.2, TENANT);
        assert_eq!(row.3, clerk);
        assert_eq!(row.5, t0() + TimeDelta::minutes(at));
    }
    assert!(tasks[0].1 < tasks[1].1, "{tasks:?}");
    let approval = &approvals[0];
    assert_eq!(approval.0, po.child("manager"));
    assert_eq!(approval.3, format!("user:{}", user(MANAGERS[0])));
    // sealed for the author, as stored: never opened by the projector
    for (row, author) in tasks
        .iter()
        .map(|r| (r, CLERK))
        .chain(approvals.iter().map(|r| (r, MANAGERS[0])))
    {
        let sealed_for = format!("{SEALED_PREFIX}{}:", user(author));
        assert!(row.4.starts_with(&sealed_for), "{row:?}");
        for clear in ["quote", "checked", "fine"] {
            assert!(!row.4.contains(clear), "{row:?}");
        }
    }
}

#[tokio::test]
async fn each_comment_of_a_task_and_an_approval_lands_once_with_its_text_as_stored() {
    let db = event_store::testing::TestDatabase::new().await;
    let pool = &db.pool;
    let po = commented_order(pool).await;
    project(pool).await;
    assert_comments_as_logged(pool, &po).await;

    // a rebuild fills the comments tables anew, the same
    Projections::all()
        .only(&[TASKS, APPROVALS])
        .unwrap()
        .rebuild(pool, |_, _| {})
        .await
        .unwrap();
    assert_comments_as_logged(pool, &po).await;
}

#[tokio::test]
async fn comments_the_migration_backfilled_are_kept_once_when_the_projectors_meet_them_again() {
    let db = event_store::testing::TestDatabase::new().await;
    let pool = &db.pool;
    let po = commented_order(pool).await;
    // the upgrade: the backfill copies the comments of the log before the projectors reach them
    sqlx::raw_sql(backfill_sql()).execute(pool).await.unwrap();
    assert_comments_as_logged(pool, &po).await;
    project(pool).await;
    assert_comments_as_logged(pool, &po).await;

    // and every batch applied again over them (the checkpoints forgotten)
    sqlx::query("delete from checkpoints where name = any($1)")
        .bind([TASKS, APPROVALS])
        .execute(pool)
        .await
        .unwrap();
    project(pool).await;
    assert_comments_as_logged(pool, &po).await;
}
