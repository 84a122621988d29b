//! Rebuilding projections into new tables and swapping them in, with the live projector
//! running; a failed rebuild changes nothing.

use std::sync::Arc;
use std::time::Duration;

use event_schemas::LogPosition;
use event_schemas::RecordedEvent;
use futures::future::BoxFuture;
use projections::{
    EventFilter, ProjectionError, Projections, Projector, RebuildError, RebuildOptions, RunSettings,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Every index of the serving tables, by name and definition (a rebuild builds most of them
/// anew at the end: they must come back the same, under the same names).
async fn index_names(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select tablename || '.' || indexname || ': ' || indexdef from pg_indexes \
         where schemaname = 'public' order by 1",
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
    reviewed_orders(&rt, pool, 3).await;
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
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            self.0.apply(tx, events).await?;
            Err(ProjectionError::Inconsistent {
                event: Box::new(projections::EventRef::of(events[0])),
                reason: "broken on purpose".into(),
            })
        })
    }
}

#[tokio::test]
async fn a_failed_rebuild_leaves_the_live_tables_as_they_were_and_the_next_one_resumes_it() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    Po::start(&rt, json!(5000), "PO-1").await;
    project(pool).await;
    let before = dump_all(pool).await;
    let tasks = Projections::all().only(&["tasks"]).unwrap();
    let broken =
        Projections::from_projectors(vec![Arc::new(Broken(tasks.projectors()[0].clone()))]);
    let error = broken.rebuild(pool, |_, _| {}).await.unwrap_err();
    assert!(matches!(error, RebuildError::Projection { .. }), "{error}");
    assert_eq!(dump_all(pool).await, before);
    // the copy stays, to be resumed (its checkpoint is created by its first committed batch)
    assert_eq!(leftovers(pool).await, 1);

    let mut resumed_from = Vec::new();
    tasks
        .rebuild(pool, |_, p| resumed_from.push(p.resumed_from))
        .await
        .unwrap();
    assert_eq!(dump_all(pool).await, before);
    assert_eq!(leftovers(pool).await, 0);
    // nothing had committed: it went on from the start
    assert!(!resumed_from.is_empty());
    assert!(resumed_from.iter().all(|p| *p == LogPosition::START));
}

#[tokio::test]
async fn when_one_projector_of_a_set_fails_the_error_names_the_ones_swapped_in() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    Po::start(&rt, json!(5000), "PO-1").await;
    project(pool).await;
    let before = dump_all(pool).await;
    let one = |name: &str| Projections::all().only(&[name]).unwrap().projectors()[0].clone();
    let (tasks, instances) = (one("tasks"), one("instances"));
    let set = Projections::from_projectors(vec![Arc::new(Broken(tasks)), instances]);
    let error = set.rebuild(pool, |_, _| {}).await.unwrap_err();
    let RebuildError::Partial { swapped, failed } = &error else {
        panic!("not a partial failure: {error}");
    };
    assert_eq!(swapped, &["instances".to_owned()]);
    assert!(
        matches!(**failed, RebuildError::Projection { .. }),
        "{failed}"
    );
    assert!(
        error
            .to_string()
            .contains("instances were rebuilt and swapped in")
    );
    // the swapped-in copy is identical, the failed one's live table untouched
    assert_eq!(dump_all(pool).await, before);
    assert_eq!(leftovers(pool).await, 1);
}

/// `n` purchase orders, each reviewed, projected by the live projectors.
async fn reviewed_orders(rt: &Arc<orchestrator::Runtime>, pool: &PgPool, n: u32) {
    for n in 0..n {
        let po = Po::start(rt, json!(1000 * n), &format!("PO-{n}")).await;
        let clerk = member(CLERK, &["clerks"]);
        po.attach("review", &clerk, "quote.pdf", 4).await;
        po.work("review", &clerk, json!({}), 5).await;
    }
    project(pool).await;
}

/// Keeps swaps from happening while `tx` is open: a swap drops the live tables, which a share
/// lock keeps from happening (and the copies' `like` and everything else a rebuild does before
/// its swap do not conflict with it). No transaction id is taken, so no event anywhere in the
/// cluster is held back from being readable.
async fn hold_swaps(tx: &mut PgConnection, set: &Projections) {
    let tables: Vec<&str> = set
        .projectors()
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    sqlx::query(&format!("lock table {} in share mode", tables.join(", ")))
        .execute(&mut *tx)
        .await
        .unwrap();
}

/// A rebuild of `set` in a task of its own.
fn spawn_rebuild(pool: &PgPool, set: &Projections) -> tokio::task::JoinHandle<Result<u64, String>> {
    let (set, pool) = (set.clone(), pool.clone());
    tokio::spawn(async move {
        set.rebuild(&pool, |_, _| {})
            .await
            .map_err(|e| e.to_string())
    })
}

/// Starts a rebuild of `set` and stops it (drops it, as a killed process would stop) once
/// every copy has caught up with the live position, while it waits to swap (see
/// [`hold_swaps`]). Returns once its sessions are gone.
async fn interrupted_rebuild(pool: &PgPool, set: &Projections) {
    let mut holder = pool.begin().await.unwrap();
    hold_swaps(&mut holder, set).await;
    let mut rebuild = spawn_rebuild(pool, set);
    eventually(
        Duration::from_secs(20),
        "the copies to catch up",
        || async {
            let caught_up: i64 = sqlx::query_scalar(
                "select count(*) from checkpoints s join checkpoints l \
             on s.name = 'rebuild:' || l.name \
             where (s.tx_id, s.global_position) >= (l.tx_id, l.global_position)",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            caught_up == set.names().len() as i64
        },
    )
    .await;
    // the copies build their indexes under the live names, side by side: names a build picked
    // for itself would clash (`tasks_list` and `tasks_open` cover the same columns)
    let live_indexes = || async {
        sqlx::query_scalar::<_, String>(
            "select p.tablename || '.' || p.indexname from pg_indexes p \
             where p.schemaname = 'public' and exists (select 1 from pg_tables t \
               where t.schemaname like 'rebuild_%' and t.tablename = p.tablename) \
             order by 1",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    };
    let copy_indexes = || async {
        sqlx::query_scalar::<_, String>(
            "select tablename || '.' || indexname from pg_indexes \
             where schemaname like 'rebuild_%' order by 1",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    };
    eventually(
        Duration::from_secs(20),
        "the copies to build their indexes",
        || async { copy_indexes().await.len() == live_indexes().await.len() },
    )
    .await;
    assert_eq!(copy_indexes().await, live_indexes().await);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut rebuild)
            .await
            .is_err(),
        "the rebuild waits to swap"
    );
    rebuild.abort();
    let _ = rebuild.await;
    holder.rollback().await.unwrap();
    let keys: Vec<i64> = set
        .names()
        .iter()
        .map(|n| projections::lock_key(&format!("rebuild:{n}")))
        .collect();
    eventually(
        Duration::from_secs(20),
        "the rebuild's sessions to end",
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from pg_locks where locktype = 'advisory' and objsubid = 1 \
                 and ((classid::bigint << 32) | objid::bigint) = any($1)",
            )
            .bind(&keys)
            .fetch_one(pool)
            .await
            .unwrap()
                == 0
        },
    )
    .await;
}

#[tokio::test]
async fn an_interrupted_rebuild_resumes_where_it_stopped_unless_told_to_start_over() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    reviewed_orders(&rt, pool, 4).await;
    let before = dump_all(pool).await;
    let set = Projections::all().with_settings(RunSettings {
        batch_size: 5,
        ..RunSettings::default()
    });

    interrupted_rebuild(pool, &set).await;
    assert_eq!(dump_all(pool).await, before, "nothing swapped");
    assert_eq!(
        leftovers(pool).await,
        14,
        "seven copies and checkpoints stay"
    );
    // resumed: everything had been projected, only the swaps are left
    let mut starts = std::collections::HashMap::new();
    let applied = set
        .rebuild(pool, |name, p| {
            starts.insert(name.to_owned(), p.resumed_from);
        })
        .await
        .unwrap();
    assert_eq!(applied, 0, "nothing projected twice");
    assert_eq!(starts.len(), set.names().len());
    assert!(
        starts.values().all(|p| *p > LogPosition::START),
        "{starts:?}"
    );
    assert_eq!(dump_all(pool).await, before);
    assert_eq!(leftovers(pool).await, 0);

    // a copy made under another migration (or another version) is started over
    interrupted_rebuild(pool, &set).await;
    sqlx::query("comment on schema rebuild_tasks is 'workledger rebuild copy; migration 1'")
        .execute(pool)
        .await
        .unwrap();
    let mut starts = std::collections::HashMap::new();
    set.rebuild(pool, |name, p| {
        starts.insert(name.to_owned(), p.resumed_from);
    })
    .await
    .unwrap();
    assert_eq!(starts.len(), set.names().len());
    for (name, start) in &starts {
        // tasks starts over; the others resume
        assert_eq!(name == "tasks", *start == LogPosition::START, "{starts:?}");
    }
    assert_eq!(dump_all(pool).await, before);

    // and so is every copy when told to
    interrupted_rebuild(pool, &set).await;
    let mut starts = std::collections::HashMap::new();
    set.rebuild_with(pool, RebuildOptions { restart: true }, |name, p| {
        starts.insert(name.to_owned(), p.resumed_from);
    })
    .await
    .unwrap();
    assert_eq!(starts.len(), set.names().len());
    assert!(starts.values().all(|p| *p == LogPosition::START));
    assert_eq!(dump_all(pool).await, before);
    assert_eq!(leftovers(pool).await, 0);
}

#[tokio::test]
async fn a_swap_kept_from_its_tables_lets_go_of_the_log_and_tries_again() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    reviewed_orders(&rt, pool, 2).await;
    let before = dump_all(pool).await;
    let set = Projections::all();
    // a long query holds the live tables: the swaps wait for them
    let mut holder = pool.begin().await.unwrap();
    hold_swaps(&mut holder, &set).await;
    let rebuild = spawn_rebuild(pool, &set);
    eventually(
        Duration::from_secs(20),
        "a swap to wait for its tables",
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from pg_locks where not granted and locktype = 'relation' \
             and mode = 'AccessExclusiveLock'",
            )
            .fetch_one(pool)
            .await
            .unwrap()
                > 0
        },
    )
    .await;
    // a transaction that commits meanwhile becomes readable: the waiting swaps do not hold
    // the log back (a swap holds a transaction id, and waits for its tables 1 s at most)
    let mut tx = pool.begin().await.unwrap();
    let xid: String = sqlx::query_scalar("select pg_current_xact_id()::text")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the transaction to be readable",
        || async {
            sqlx::query_scalar::<_, bool>(
                "select $1::xid8 < pg_snapshot_xmin(pg_current_snapshot())",
            )
            .bind(&xid)
            .fetch_one(pool)
            .await
            .unwrap()
        },
    )
    .await;
    assert!(!rebuild.is_finished(), "the swaps still wait");
    // once the tables are free, the next attempt swaps
    holder.rollback().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), rebuild)
        .await
        .expect("the rebuild ends once the tables are free")
        .unwrap()
        .unwrap();
    assert_eq!(dump_all(pool).await, before);
    assert_eq!(leftovers(pool).await, 0);
}
