//! The projector runtime: batches that die half-way, two workers on one projector, take-over,
//! and a failing event that stops a projector until it gets past it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use event_schemas::RecordedEvent;
use event_store::Checkpoints;
use event_store::testing::TestDatabase;
use futures::future::BoxFuture;
use projections::{EventFilter, ProjectionError, Projections, Projector, RunSettings, run_batch};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::*;

/// Applies the real projector to the first half of a batch, then hangs: the task running it
/// is aborted there, as if the process died in the middle of a batch.
#[derive(Debug)]
struct DiesHalfway {
    inner: Arc<dyn Projector>,
    reached: Arc<Notify>,
}

impl Projector for DiesHalfway {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn filter(&self) -> EventFilter {
        self.inner.filter()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let half = events.len().div_ceil(2);
            self.inner.apply(tx, &events[..half]).await?;
            self.reached.notify_one();
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_projector_stopped_in_the_middle_of_a_batch_resumes_with_nothing_lost_or_doubled() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    for n in 0..6 {
        let po = Po::start(&rt, json!(1000 * n), &format!("PO-{n}")).await;
        let clerk = member(CLERK, &["clerks"]);
        po.attach("review", &clerk, &format!("quote-{n}.pdf"), 4)
            .await;
        po.work("review", &clerk, json!({"n": n}), 5).await;
    }
    wait_readable(pool).await;
    // every projector dies half-way through its first batch of 16
    for projector in Projections::all().projectors() {
        let reached = Arc::new(Notify::new());
        let dying = DiesHalfway {
            inner: projector.clone(),
            reached: reached.clone(),
        };
        let task_pool = pool.clone();
        let mut task = tokio::spawn(async move {
            let mut conn = task_pool.acquire().await.unwrap();
            run_batch(&mut conn, dying.name(), &dying, 16)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        tokio::select! {
            () = reached.notified() => {}
            ended = &mut task => panic!("{}: the batch ended instead of dying: {ended:?}", projector.name()),
        }
        task.abort();
        let _ = task.await;
        assert_eq!(
            Checkpoints::load(pool, projector.name()).await.unwrap(),
            event_schemas::LogPosition::START,
            "{}: nothing of the dead batch committed",
            projector.name()
        );
    }
    // resumed with small batches, so batch boundaries fall elsewhere than before
    let resumed = Projections::all().with_settings(RunSettings {
        batch_size: 5,
        ..RunSettings::default()
    });
    project_with(&resumed, pool).await;
    let after_crash = dump_all(pool).await;
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await
        .unwrap();
    let audited: i64 = sqlx::query_scalar("select count(*) from audit_entries")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(audited, events, "each event audited exactly once");
    let tasks: i64 = sqlx::query_scalar("select count(*) from tasks where status = 'completed'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(tasks, 6);
    reset(pool).await;
    project(pool).await;
    assert_eq!(
        dump_all(pool).await,
        after_crash,
        "same as an uninterrupted run"
    );
}

/// Records which worker applied each `test` event; fails on a poisoned one while `poisoned`.
#[derive(Debug)]
struct Recorder {
    worker: &'static str,
    poisoned: Arc<AtomicBool>,
}

impl Projector for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::aggregates(&["test"])
    }
    fn tables(&self) -> &'static [&'static str] {
        &["recorded"]
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for event in events {
                if event.payload["Ping"]["poison"] == json!(true)
                    && self.poisoned.load(Ordering::SeqCst)
                {
                    // a database error names no event: the runtime has to pin it down
                    sqlx::query("select 'poisoned'::int")
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
            // a primary key: an event applied twice would fail the batch
            sqlx::query("insert into recorded (event_id, worker) select unnest($1::uuid[]), $2")
                .bind(&ids)
                .bind(self.worker)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }
}

async fn recorder_db() -> TestDatabase {
    let db = TestDatabase::new().await;
    sqlx::query("create table recorded (event_id uuid primary key, worker text not null)")
        .execute(&db.pool)
        .await
        .unwrap();
    db
}

fn fast() -> RunSettings {
    RunSettings {
        batch_size: 50,
        poll_interval: Duration::from_millis(50),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        takeover_interval: Duration::from_millis(50),
        heartbeat: Duration::from_millis(50),
        ..RunSettings::default()
    }
}

fn spawn_worker(
    pool: &PgPool,
    worker: &'static str,
    poisoned: Arc<AtomicBool>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let projections = Projections::from_projectors(vec![Arc::new(Recorder { worker, poisoned })])
        .with_settings(fast());
    let stop = CancellationToken::new();
    let handle = tokio::spawn(projections.run(pool.clone(), stop.clone()));
    (stop, handle)
}

async fn recorded(pool: &PgPool) -> Vec<(Uuid, String)> {
    sqlx::query_as("select event_id, worker from recorded")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_workers_never_project_the_same_events_and_one_takes_over_when_the_other_dies() {
    let db = recorder_db().await;
    let pool = &db.pool;
    let never = Arc::new(AtomicBool::new(false));
    let (_stop_a, a) = spawn_worker(pool, "a", never.clone());
    // let `a` take the lock first
    eventually(
        Duration::from_secs(10),
        "worker a to hold the lock",
        || async {
            sqlx::query_scalar::<_, bool>(
                "select exists(select 1 from projector_status \
             where name = 'recorder' and worker is not null)",
            )
            .fetch_one(pool)
            .await
            .unwrap()
        },
    )
    .await;
    let (stop_b, b) = spawn_worker(pool, "b", never.clone());
    let mut appended = Vec::new();
    for _ in 0..10 {
        appended.extend(append_raw(pool, TENANT, 30, None).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually(Duration::from_secs(20), "300 events recorded", || async {
        recorded(pool).await.len() == appended.len()
    })
    .await;
    assert!(
        recorded(pool).await.iter().all(|(_, w)| w == "a"),
        "only the lock holder projects"
    );

    // `a` dies: its task and its lock connection are gone; `b` takes over
    a.abort();
    let _ = a.await;
    appended.extend(append_raw(pool, TENANT, 100, None).await);
    eventually(Duration::from_secs(20), "b to take over", || async {
        recorded(pool).await.len() == appended.len()
    })
    .await;
    let rows = recorded(pool).await;
    let mut seen: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    seen.sort();
    let mut expected = appended.clone();
    expected.sort();
    assert_eq!(seen, expected, "every event exactly once");
    assert_eq!(rows.iter().filter(|(_, w)| w == "b").count(), 100);
    stop_b.cancel();
    b.await.unwrap();
}

#[tokio::test]
async fn a_failing_event_stops_the_projector_there_and_is_reported_until_it_gets_past() {
    let db = recorder_db().await;
    let pool = &db.pool;
    let ids = append_raw(pool, TENANT, 9, Some(5)).await;
    let poisoned = Arc::new(AtomicBool::new(true));
    let (stop, worker) = spawn_worker(pool, "a", poisoned.clone());
    eventually(
        Duration::from_secs(10),
        "the failure to be recorded",
        || async {
            Projections::status(pool)
                .await
                .unwrap()
                .iter()
                .any(|s| s.name == "recorder" && s.error.is_some())
        },
    )
    .await;
    let status = Projections::status(pool).await.unwrap();
    let recorder = status.iter().find(|s| s.name == "recorder").unwrap();
    let error = recorder.error.as_ref().unwrap();
    assert_eq!(error.event_id, Some(ids[5]));
    assert_eq!(error.event_type.as_deref(), Some("Ping"));
    assert!(error.message.contains("poisoned"), "{}", error.message);
    assert!(
        recorder.lag_events >= 4,
        "the poisoned event and the ones after it"
    );
    let mut done: Vec<Uuid> = recorded(pool).await.into_iter().map(|(id, _)| id).collect();
    done.sort();
    let mut before = ids[..5].to_vec();
    before.sort();
    assert_eq!(
        done, before,
        "everything before the failing event, nothing after it"
    );
    // it keeps retrying the same event, never skipping it
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorded(pool).await.len(), 5);

    poisoned.store(false, Ordering::SeqCst);
    eventually(
        Duration::from_secs(10),
        "the projector to get past",
        || async { recorded(pool).await.len() == 9 },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the failure to be cleared",
        || async {
            Projections::status(pool)
                .await
                .unwrap()
                .iter()
                .any(|s| s.name == "recorder" && s.error.is_none() && s.lag_events == 0)
        },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn status_lists_every_read_model_with_its_lag_before_it_ever_ran() {
    let db = TestDatabase::new().await;
    append_raw(&db.pool, TENANT, 3, None).await;
    let status = Projections::status(&db.pool).await.unwrap();
    let names: Vec<&str> = status.iter().map(|s| s.name.as_str()).collect();
    for name in Projections::all().names() {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let tasks = status.iter().find(|s| s.name == "tasks").unwrap();
    assert!(tasks.read_model);
    assert!(!tasks.active);
    // readable once every older transaction of the cluster has ended
    eventually(
        Duration::from_secs(10),
        "the events to be readable",
        || async {
            let status = Projections::status(&db.pool).await.unwrap();
            status
                .iter()
                .any(|s| s.name == "tasks" && s.lag_events == 3)
        },
    )
    .await;
}

/// Takes every event and writes nothing: beside the recorder, it makes the set's shared read
/// fetch events the recorder does not take.
#[derive(Debug)]
struct TakesEverything;

impl Projector for TakesEverything {
    fn name(&self) -> &'static str {
        "takes_everything"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }
    fn apply<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        _events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A projector that takes only part of each shared read still has a backlog: it must go on at
/// once rather than wait for a notification as if it were caught up (it waited the poll
/// interval per batch, about 1,000 events/s on a long log).
#[tokio::test]
async fn a_projector_taking_part_of_each_shared_read_catches_up_without_waiting_between_batches() {
    let db = recorder_db().await;
    let pool = &db.pool;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.extend(append_raw(pool, TENANT, 20, None).await);
        append_raw_of(pool, "other", TENANT, 30, None).await;
    }
    wait_readable(pool).await;
    let projections = Projections::from_projectors(vec![
        Arc::new(Recorder {
            worker: "a",
            poisoned: Arc::new(AtomicBool::new(false)),
        }),
        Arc::new(TakesEverything),
    ])
    .with_settings(RunSettings {
        // each shared read of 50 events holds about 20 of the recorder's
        batch_size: 50,
        // a batch that waited for a wake-up would wait this long: nothing else comes
        poll_interval: Duration::from_secs(600),
        ..fast()
    });
    let stop = CancellationToken::new();
    let worker = tokio::spawn(projections.run(pool.clone(), stop.clone()));
    eventually(
        Duration::from_secs(60),
        "the recorder to catch up",
        || async { recorded(pool).await.len() == ids.len() },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
}

/// Sessions of this database listening for appended events.
async fn listeners(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity \
         where datname = current_database() and query ilike 'listen%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_aborted_run_leaves_no_listener_behind() {
    let (db, _rt) = setup().await;
    let pool = &db.pool;
    let never = CancellationToken::new();
    let run = tokio::spawn(Projections::all().run(pool.clone(), never.clone()));
    eventually(Duration::from_secs(10), "the run to listen", || async {
        listeners(pool).await > 0
    })
    .await;
    run.abort();
    let _ = run.await;
    eventually(Duration::from_secs(10), "its listener to go", || async {
        listeners(pool).await == 0
    })
    .await;
    assert!(!never.is_cancelled());
}

/// Panics in its first batch (a bug in a projector), then records as [`Recorder`] does.
#[derive(Debug)]
struct PanicsOnce {
    panicked: AtomicBool,
}

impl Projector for PanicsOnce {
    fn name(&self) -> &'static str {
        "panics_once"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::aggregates(&["test"])
    }
    fn tables(&self) -> &'static [&'static str] {
        &["recorded"]
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
            sqlx::query("insert into recorded (event_id, worker) select unnest($1::uuid[]), 'w'")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            assert!(
                self.panicked.swap(true, Ordering::SeqCst),
                "a bug in the projector, after it wrote"
            );
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_worker_that_panicked_starts_again_and_projects_every_event_once() {
    let db = recorder_db().await;
    let pool = &db.pool;
    let mut appended = append_raw(pool, TENANT, 40, None).await;
    let projector = Arc::new(PanicsOnce {
        panicked: AtomicBool::new(false),
    });
    let projections = Projections::from_projectors(vec![projector.clone()]).with_settings(fast());
    let stop = CancellationToken::new();
    let run = tokio::spawn(projections.run(pool.clone(), stop.clone()));
    appended.extend(append_raw(pool, TENANT, 10, None).await);
    eventually(Duration::from_secs(20), "every event recorded", || async {
        recorded(pool).await.len() == appended.len()
    })
    .await;
    assert!(projector.panicked.load(Ordering::SeqCst));
    let mut seen: Vec<Uuid> = recorded(pool).await.iter().map(|(id, _)| *id).collect();
    seen.sort();
    appended.sort();
    assert_eq!(
        seen, appended,
        "the batch that panicked rolled back; every event once"
    );
    stop.cancel();
    run.await.unwrap();
}
