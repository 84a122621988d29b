//! `workledger replay`: rebuilding read models through the binary leaves them identical.

use std::process::Command;
use std::sync::Arc;

use domain::Role;
use event_store::testing::TestDatabase;
use event_store::{AppendNotifier, GlobalLog};
use orchestrator::{Runtime, StaticDirectory};
use projections::Projections;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

mod support;
use support::{ctx, populated, project_everything, runtime, workledger};

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
    assert!(summary.contains("events applied in"), "{summary}");
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

/// What a `like ... including all` copy does not carry: the serving table's privileges,
/// storage options and owner survive the swap.
#[tokio::test]
async fn a_replayed_table_keeps_its_privileges_storage_options_and_owner() {
    let db = populated(&["acme"], 2).await;
    // roles belong to the cluster, which other tests share: a name of this test's own
    let reader = format!("reporting_{}", uuid::Uuid::now_v7().simple());
    let setup = [
        format!("create role {reader}"),
        format!("grant select on tasks to {reader}"),
        format!("grant select, update on workflow_instances to {reader} with grant option"),
        "alter table tasks set (autovacuum_vacuum_scale_factor = 0.01, fillfactor = 90)".into(),
    ];
    for statement in &setup {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }
    let settings = |table: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<Vec<String>>, Option<String>)>(
                "select pg_get_userbyid(relowner)::text, reloptions, relacl::text from pg_class \
                 where oid = format('public.%I', $1::text)::regclass",
            )
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let before = (
        settings("tasks").await,
        settings("workflow_instances").await,
    );
    assert!(
        before.0.2.as_deref().unwrap().contains(&reader),
        "{before:?}"
    );

    let output = workledger(&db, &["replay", "--all"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let after = (
        settings("tasks").await,
        settings("workflow_instances").await,
    );
    for statement in [
        format!("revoke all on tasks, workflow_instances from {reader} cascade"),
        format!("drop role {reader}"),
    ] {
        sqlx::query(&statement).execute(&db.pool).await.unwrap();
    }
    assert_eq!(after, before);
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
        stderr.contains("serving tables of a projection that failed are untouched")
            && stderr.contains("another rebuild of tasks is running"),
        "{stderr}"
    );
    assert_eq!(rows(&db.pool, "tasks").await, before);
}

/// Every read model's rows and the live checkpoints, as JSON text.
async fn serving_state(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    let mut state = Vec::new();
    for projector in Projections::all().projectors() {
        for table in projector.tables() {
            state.push(((*table).to_owned(), rows(pool, table).await));
        }
    }
    let checkpoints: Vec<String> = sqlx::query_scalar(
        "select to_jsonb(c)::text from checkpoints c where name = any($1) order by 1",
    )
    .bind(Projections::all().names())
    .fetch_all(pool)
    .await
    .unwrap();
    state.push(("checkpoints".to_owned(), checkpoints));
    state
}

/// The event count in a replay summary (`replayed ...: N events applied in ...`).
fn replayed_events(summary: &str) -> u64 {
    let (_, rest) = summary.split_once(": ").expect(summary);
    rest.split_whitespace()
        .next()
        .unwrap()
        .parse()
        .expect(summary)
}

/// Waits for `check` (polling), failing after a deadline that only guards against a hang.
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_halfway_changes_nothing_that_serves_and_the_next_one_resumes_it() {
    let db = populated(&["acme"], 150).await;
    let before = serving_state(&db.pool).await;
    let live: i64 = sqlx::query_scalar("select count(*) from checkpoints where name = any($1)")
        .bind(Projections::all().names())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let projectors = Projections::all().names().len() as i64;
    assert_eq!(live, projectors);

    // The copies cannot be swapped in while the live tables are share-locked (a swap drops
    // them; nothing before it conflicts): the replay projects everything readable, then waits
    // there, where it is killed. No timing involved. (A lock table takes no transaction id, so
    // no event anywhere in the cluster is held back from being readable meanwhile.)
    let mut holder = db.pool.begin().await.unwrap();
    let tables: Vec<&str> = Projections::all()
        .projectors()
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    sqlx::query(&format!("lock table {} in share mode", tables.join(", ")))
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut replay = Command::new(env!("CARGO_BIN_EXE_workledger"))
        .args(["replay", "--all"])
        .env("DATABASE_URL", db.url())
        .env("WORKLEDGER_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let copies_at_live = "select count(*) from checkpoints s join checkpoints l \
         on s.name = 'rebuild:' || l.name \
         where (s.tx_id, s.global_position) >= (l.tx_id, l.global_position)";
    wait_for("every copy to reach the live position", || async {
        sqlx::query_scalar::<_, i64>(copies_at_live)
            .fetch_one(&db.pool)
            .await
            .unwrap()
            == projectors
    })
    .await;
    // more of the log arrives meanwhile: the killed replay has applied some of it, not all
    let rt = runtime(&db);
    for _ in 0..40 {
        rt.start(
            &ctx("acme", vec![Role::Operator], &[]),
            "one-task",
            None,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    }
    assert_eq!(replay.try_wait().unwrap(), None, "the replay waits to swap");
    replay.kill().unwrap(); // SIGKILL
    let killed = replay.wait_with_output().unwrap();
    assert!(!killed.status.success());
    let progress = String::from_utf8_lossy(&killed.stderr);
    assert!(progress.contains("events/s"), "{progress}");
    assert!(killed.stdout.is_empty(), "no summary: it did not finish");
    holder.rollback().await.unwrap();
    // the killed process's sessions end once they notice (their advisory locks go with them)
    let keys: Vec<i64> = Projections::all()
        .names()
        .iter()
        .map(|n| projections::lock_key(&format!("rebuild:{n}")))
        .collect();
    wait_for("the killed replay's sessions to end", || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_locks where locktype = 'advisory' and objsubid = 1 \
             and ((classid::bigint << 32) | objid::bigint) = any($1)",
        )
        .bind(&keys)
        .fetch_one(&db.pool)
        .await
        .unwrap()
            == 0
    })
    .await;

    assert_eq!(
        serving_state(&db.pool).await,
        before,
        "the serving tables and live checkpoints are exactly as before"
    );
    let scratch: i64 = sqlx::query_scalar(
        "select count(*) from checkpoints where name like 'rebuild:%' and global_position > 0",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(scratch, projectors, "each copy kept how far it got");

    // what arrived meanwhile must be readable, or the resumed replay would swap without it
    // (another test's transaction in the cluster can hold it back for a moment)
    wait_for("the whole log to be readable", || async {
        let head = GlobalLog::head(&db.pool).await.unwrap();
        let last: (i64, i64) = sqlx::query_as(
            "select tx_id::text::bigint, global_position from events \
             order by tx_id desc, global_position desc limit 1",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (head.tx_id as i64, head.global_position) == last
    })
    .await;
    let resumed = workledger(&db, &["replay", "--all"]);
    let stderr = String::from_utf8_lossy(&resumed.stderr).into_owned();
    let resumed = support::stdout(&resumed);
    for name in Projections::all().names() {
        assert!(
            stderr.contains(&format!("resuming {name} from ")),
            "{stderr}"
        );
    }
    let resumed_events = replayed_events(&resumed);
    let after_resume = serving_state(&db.pool).await;
    let leftovers: i64 = sqlx::query_scalar(
        "select (select count(*) from pg_namespace where nspname like 'rebuild_%') \
              + (select count(*) from checkpoints where name like 'rebuild:%')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);

    // a fresh build from the start of the log gives the same read models
    let fresh = support::stdout(&workledger(&db, &["replay", "--all", "--restart"]));
    let fresh_events = replayed_events(&fresh);
    assert!(
        resumed_events > 0 && resumed_events < fresh_events,
        "the resumed replay went on from where the killed one stopped: \
         {resumed_events} of {fresh_events} events"
    );
    let instances: i64 = sqlx::query_scalar("select count(*) from workflow_instances")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(instances, 190);
    // the fresh build moved the live checkpoints' `updated_at` only
    let strip = |state: Vec<(String, Vec<String>)>| {
        state
            .into_iter()
            .filter(|(table, _)| table != "checkpoints")
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(serving_state(&db.pool).await), strip(after_resume));
}

/// A swap attempt that is rolled back (here the live tables stay in use) has applied events
/// inside its transaction; the next attempt applies them again, and the summary counts them
/// once. The order of things is forced with locks: the swap waits for the live checkpoint row
/// while the events it must catch up with are not readable yet, they become readable as it
/// gets the row, and its `drop table` then waits out its lock timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_attempt_rolled_back_does_not_count_its_events_twice() {
    // another test's transaction anywhere in the cluster can keep the events unreadable
    // inside the first attempt too (it then applies nothing): try again on a fresh database
    for _ in 0..5 {
        let db = populated(&["acme"], 3).await;
        let Some(counted) = replay_with_a_rolled_back_swap(&db).await else {
            continue;
        };
        let fresh = support::stdout(&workledger(
            &db,
            &["replay", "--projection", "tasks", "--restart"],
        ));
        let events = replayed_events(&fresh);
        let tasks: i64 = sqlx::query_scalar("select count(*) from tasks")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(tasks, 6, "every task is in the swapped-in table");
        assert_eq!(
            counted, events,
            "the summary counts each event once (a fresh build applies {events})"
        );
        return;
    }
    panic!("no swap attempt applied events and was rolled back in 5 tries");
}

/// `replay --projection tasks` on `db` (three instances started), with a first swap attempt
/// that applies three new instances' events inside its transaction and is rolled back: the
/// events its summary counts, `None` when the attempt did not go that way.
async fn replay_with_a_rolled_back_swap(db: &TestDatabase) -> Option<u64> {
    // the live checkpoint row held by a transaction with an id: what is appended from now on
    // is not readable until it ends
    let mut live = db.pool.begin().await.unwrap();
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut *live)
        .await
        .unwrap();
    sqlx::query("select 1 from checkpoints where name = 'tasks' for update")
        .execute(&mut *live)
        .await
        .unwrap();
    let rt = runtime(db);
    for _ in 0..3 {
        rt.start(
            &ctx("acme", vec![Role::Operator], &[]),
            "one-task",
            None,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    }
    // as if the live worker had projected them: the swap has to catch up with them
    let (tx_id, global_position): (i64, i64) = sqlx::query_as(
        "select tx_id::text::bigint, global_position from events \
         order by tx_id desc, global_position desc limit 1",
    )
    .fetch_one(&mut *live)
    .await
    .unwrap();
    sqlx::query(
        "update checkpoints set tx_id = $1::text::xid8, global_position = $2 where name = 'tasks'",
    )
    .bind(tx_id.to_string())
    .bind(global_position)
    .execute(&mut *live)
    .await
    .unwrap();
    // the live table in use: the swap's `drop table` times out (a lock table takes no
    // transaction id)
    let mut reader = db.pool.begin().await.unwrap();
    sqlx::query("lock table tasks in access share mode")
        .execute(&mut *reader)
        .await
        .unwrap();

    let replay = Command::new(env!("CARGO_BIN_EXE_workledger"))
        .args(["replay", "--projection", "tasks"])
        .env("DATABASE_URL", db.url())
        .env("WORKLEDGER_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let waiting_on = |query: &'static str| async move {
        sqlx::query_scalar::<_, bool>(
            "select exists (select 1 from pg_stat_activity where datname = current_database() \
             and wait_event_type = 'Lock' and query like $1)",
        )
        .bind(query)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    // whether the copy's committed checkpoint has reached the new events
    let copy_caught_up = || async {
        sqlx::query_scalar::<_, bool>(
            "select (tx_id, global_position) >= ($1::text::xid8, $2) from checkpoints \
             where name = 'rebuild:tasks'",
        )
        .bind(tx_id.to_string())
        .bind(global_position)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .unwrap_or(false)
    };
    wait_for("the swap to wait for the live checkpoint", || {
        waiting_on("insert into checkpoints as c%")
    })
    .await;
    live.commit().await.unwrap();
    // the swap gets to `drop table` only with the copy at the live position: when the copy's
    // committed checkpoint is still behind, it got there inside the transaction
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let applied_inside = loop {
        let dropping = waiting_on("drop table public.tasks%").await;
        let caught_up = copy_caught_up().await;
        if dropping || caught_up {
            break dropping && !caught_up;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: the swap to drop the live table or catch up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // the attempt times out and rolls back; the next one catches up outside the transaction
    wait_for("the copy to catch up", copy_caught_up).await;
    reader.rollback().await.unwrap();
    let output = tokio::task::spawn_blocking(move || replay.wait_with_output().unwrap())
        .await
        .unwrap();
    let counted = replayed_events(&support::stdout(&output));
    applied_inside.then_some(counted)
}
