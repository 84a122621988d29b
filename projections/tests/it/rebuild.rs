//! Rebuilding projections into new tables and swapping them in, with the live projector
//! running; a failed rebuild changes nothing.

use std::sync::Arc;
use std::time::Duration;

use event_schemas::RecordedEvent;
use futures::future::BoxFuture;
use projections::{
    EventFilter, ProjectionError, Projections, Projector, RebuildError, RunSettings,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::support::*;

async fn index_names(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select tablename || '.' || indexname from pg_indexes where schemaname = 'public' \
         order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn leftovers(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select (select count(*) from pg_namespace where nspname like 'rebuild_%') \
              + (select count(*) from checkpoints where name like 'rebuild:%')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rebuild_swaps_fresh_tables_in_while_the_live_projectors_keep_running() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    for n in 0..3 {
        let po = Po::start(&rt, json!(1000 * n), &format!("PO-{n}")).await;
        po.work("review", &member(CLERK, &["clerks"]), json!({}), 5)
            .await;
    }
    project(pool).await;
    let before = dump_all(pool).await;
    let indexes = index_names(pool).await;
    // damage the live read models: the rebuild repairs them
    sqlx::query("update tasks set name = 'tampered'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("delete from audit_entries where chain_seq = 2")
        .execute(pool)
        .await
        .unwrap();

    let stop = CancellationToken::new();
    let live = tokio::spawn(
        Projections::all()
            .with_settings(RunSettings {
                poll_interval: Duration::from_millis(50),
                ..RunSettings::default()
            })
            .run(pool.clone(), stop.clone()),
    );
    let mut batches = 0;
    let rebuilt = Projections::all()
        .with_settings(RunSettings {
            batch_size: 7,
            ..RunSettings::default()
        })
        .rebuild(pool, |_, progress| {
            batches += 1;
            assert!(progress.events > 0 || progress.position <= progress.head);
        })
        .await
        .unwrap();
    assert!(rebuilt > 0);
    assert!(batches > 6, "progress after every batch");
    assert_eq!(dump_all(pool).await, before, "rebuilt exactly");
    assert_eq!(index_names(pool).await, indexes, "indexes keep their names");
    assert_eq!(leftovers(pool).await, 0);

    // the live projectors go on writing into the swapped-in tables
    let po = Po::start(&rt, json!(5000), "PO-after").await;
    eventually(
        Duration::from_secs(10),
        "the live projector to go on",
        || async {
            sqlx::query_scalar::<_, i64>("select count(*) from tasks where id = $1")
                .bind(po.child("review"))
                .fetch_one(pool)
                .await
                .unwrap()
                == 1
        },
    )
    .await;
    stop.cancel();
    live.await.unwrap();
}

/// Fails every batch.
#[derive(Debug)]
struct Broken(Arc<dyn Projector>);

impl Projector for Broken {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn filter(&self) -> EventFilter {
        self.0.filter()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.0.tables()
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            self.0.apply(tx, events).await?;
            Err(ProjectionError::Inconsistent {
                event: Box::new(projections::EventRef::of(&events[0])),
                reason: "broken on purpose".into(),
            })
        })
    }
}

#[tokio::test]
async fn a_failed_rebuild_leaves_the_live_tables_as_they_were() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    Po::start(&rt, json!(5000), "PO-1").await;
    project(pool).await;
    let before = dump_all(pool).await;
    let tasks = Projections::all().only(&["tasks"]).unwrap();
    let broken =
        Projections::from_projectors(vec![Arc::new(Broken(tasks.projectors()[0].clone()))]);
    let error = broken.rebuild(pool, |_, _| {}).await.unwrap_err();
    assert!(matches!(error, RebuildError::Projection(_)), "{error}");
    assert_eq!(dump_all(pool).await, before);
    assert_eq!(leftovers(pool).await, 0);
}
