//! The command path: versions, rejections, lost races and consistency tokens.

mod support;

use std::sync::Arc;

use event_store::testing::TestDatabase;
use event_store::{
    AppendError, AppendNotifier, Appends, ExecuteError, Executor, GlobalLog, Planned,
    SNAPSHOT_EVERY,
};
use support::{Counter, NO_CHANGE, typed_metadata};

fn executor(db: &TestDatabase) -> Executor<Counter> {
    Executor::new(db.pool.clone(), AppendNotifier::disabled(), vec![])
}

async fn event_count(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_command_appends_its_events_and_answers_version_and_log_position() {
    let db = TestDatabase::new().await;
    let executor = executor(&db);
    let first = executor
        .execute("c", 5, &typed_metadata(), None, &())
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.events.len(), 1);
    let second = executor
        .execute("c", 2, &typed_metadata(), Some(1), &())
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(
        second.position,
        GlobalLog::position_of(&db.pool, "Counter", "c", 2)
            .await
            .unwrap()
    );
    assert!(second.position > first.position);
}

#[tokio::test]
async fn a_rejected_command_appends_nothing() {
    let db = TestDatabase::new().await;
    let result = executor(&db)
        .execute("c", 0, &typed_metadata(), None, &())
        .await;
    assert!(
        matches!(result, Err(ExecuteError::Rejected(_))),
        "{result:?}"
    );
    assert_eq!(event_count(&db).await, 0);
}

#[tokio::test]
async fn a_command_that_changes_nothing_appends_nothing_and_keeps_the_version() {
    let db = TestDatabase::new().await;
    let executor = executor(&db);
    executor
        .execute("c", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    let same = executor
        .execute("c", NO_CHANGE, &typed_metadata(), None, &())
        .await
        .unwrap();
    assert!(same.events.is_empty());
    assert_eq!(same.version, 1);
    assert_eq!(same.position, None);
    assert_eq!(event_count(&db).await, 1);
}

#[tokio::test]
async fn a_stale_expected_version_is_refused_with_both_versions() {
    let db = TestDatabase::new().await;
    let executor = executor(&db);
    executor
        .execute("c", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    executor
        .execute("c", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    let stale = executor
        .execute("c", 1, &typed_metadata(), Some(1), &())
        .await;
    assert!(
        matches!(
            stale,
            Err(ExecuteError::VersionMismatch {
                expected: 1,
                actual: 2
            })
        ),
        "{stale:?}"
    );
    assert_eq!(event_count(&db).await, 2);
}

#[tokio::test]
async fn concurrent_commands_without_an_expected_version_all_take_effect() {
    let db = TestDatabase::new().await;
    let executor = Arc::new(executor(&db));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let executor = executor.clone();
            tokio::spawn(
                async move { executor.execute("c", 1, &typed_metadata(), None, &()).await },
            )
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        // a lost race is decided again on the new state; a few may still give up
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ExecuteError::Conflict) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(event_count(&db).await, ok);
    assert!(ok >= 10, "retries let most of them through, got {ok}");
}

#[tokio::test]
async fn concurrent_commands_expecting_the_same_version_let_exactly_one_win() {
    let db = TestDatabase::new().await;
    let executor = Arc::new(executor(&db));
    executor
        .execute("c", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let executor = executor.clone();
            tokio::spawn(async move {
                executor
                    .execute("c", 1, &typed_metadata(), Some(1), &())
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(ExecuteError::Conflict | ExecuteError::VersionMismatch { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(event_count(&db).await, 2);
}

#[tokio::test]
async fn commands_across_snapshot_boundaries_keep_the_exact_state() {
    let db = TestDatabase::new().await;
    // the counter's events add up, so applying one twice would show
    let executor = executor(&db);
    let mut expected = 0;
    for by in 1..=130u64 {
        executor
            .execute("c", by, &typed_metadata(), None, &())
            .await
            .unwrap();
        expected += by;
    }
    // a fresh executor (no cache) loads from the latest snapshot and the events after it
    let (fresh, version) = executor_fresh(&db).load("c").await.unwrap();
    assert_eq!(version, 130);
    assert_eq!(fresh.value, expected);
    let snapshot: serde_json::Value =
        sqlx::query_scalar("select payload from snapshots where aggregate_id = 'c'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        snapshot["value"],
        (1..=100u64).sum::<u64>(),
        "the snapshot at 100 is exact"
    );
}

#[tokio::test]
async fn a_stale_cached_state_costs_a_retry_not_a_wrong_decision() {
    let db = TestDatabase::new().await;
    let ours = executor(&db);
    let theirs = executor_fresh(&db); // another process
    ours.execute("c", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    theirs
        .execute("c", 10, &typed_metadata(), None, &())
        .await
        .unwrap();
    // our cache says version 1; the append finds sequence 2 taken, reloads and decides again
    let done = ours
        .execute("c", 100, &typed_metadata(), None, &())
        .await
        .unwrap();
    assert_eq!(done.version, 3);
    assert_eq!(executor_fresh(&db).load("c").await.unwrap().0.value, 111);
    // with an expected version the stale cache is not trusted either
    theirs
        .execute("c", 1000, &typed_metadata(), None, &())
        .await
        .unwrap();
    let current = ours
        .execute("c", 1, &typed_metadata(), Some(4), &())
        .await
        .unwrap();
    assert_eq!(current.version, 5);
}

fn executor_fresh(db: &TestDatabase) -> Executor<Counter> {
    Executor::new(db.pool.clone(), AppendNotifier::disabled(), vec![])
}

#[tokio::test]
async fn a_refusal_decided_on_a_stale_cached_state_is_decided_again_on_the_stored_one() {
    let db = TestDatabase::new().await;
    let ours = executor(&db);
    let theirs = executor_fresh(&db);
    // our cache holds version 1 (value 1)
    ours.execute("c", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    // the counter refuses `0` only... use NO_CHANGE, which is a no-op on any state: a no-op
    // decided on the cached state is checked against the store, which has moved on
    theirs
        .execute("c", 5, &typed_metadata(), None, &())
        .await
        .unwrap();
    let same = ours
        .execute("c", NO_CHANGE, &typed_metadata(), None, &())
        .await
        .unwrap();
    assert_eq!(
        same.version, 2,
        "the answer comes from the stored state, not the stale cache"
    );
    // and the cache now holds the stored state: the next change lands at version 3 at once
    let next = ours
        .execute("c", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    assert_eq!(next.version, 3);
}

/// Plans `commands` on aggregate `id` in `appends`, each on the state the last one left.
async fn plan_all(
    executor: &Executor<Counter>,
    appends: &mut Appends,
    id: &str,
    commands: &[u64],
    assume_new: bool,
) -> Planned<Counter> {
    let mut planned = executor.begin(id, None, assume_new).await.unwrap();
    for by in commands {
        executor
            .plan(&mut planned, appends, *by, &typed_metadata(), None, &())
            .await
            .unwrap();
    }
    executor.finish(&planned, appends).unwrap();
    planned
}

#[tokio::test]
async fn commands_planned_on_several_aggregates_append_together_in_decision_order() {
    let db = TestDatabase::new().await;
    let executor = executor(&db);
    executor
        .execute("a", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    let mut appends = Appends::new();
    let mut a = executor.begin("a", None, false).await.unwrap();
    let mut b = executor.begin("b", None, true).await.unwrap();
    let first = executor
        .plan(&mut a, &mut appends, 2, &typed_metadata(), None, &())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, 2, "a's next sequence");
    executor
        .plan(&mut b, &mut appends, 10, &typed_metadata(), None, &())
        .await
        .unwrap();
    executor
        .plan(&mut a, &mut appends, 3, &typed_metadata(), None, &())
        .await
        .unwrap();
    assert_eq!((a.version(), b.version()), (3, 1));
    let position = appends
        .commit(executor.connections(), executor.notifier())
        .await
        .unwrap()
        .expect("a position");
    executor.committed(a);
    executor.committed(b);
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "select aggregate_id, sequence, tx_id::text from events order by global_position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let order: Vec<(&str, i64)> = rows.iter().map(|(id, s, _)| (id.as_str(), *s)).collect();
    assert_eq!(order, [("a", 1), ("a", 2), ("b", 1), ("a", 3)]);
    assert_eq!(rows[1].2, rows[3].2, "one transaction");
    assert_ne!(rows[0].2, rows[1].2);
    assert_eq!(
        Some(position),
        GlobalLog::position_of(&db.pool, "Counter", "a", 3)
            .await
            .unwrap()
    );
    // the next command goes on from the committed state
    let next = executor
        .execute("a", 4, &typed_metadata(), None, &())
        .await
        .unwrap();
    assert_eq!(next.version, 4);
    assert_eq!(executor_fresh(&db).load("a").await.unwrap().0.value, 10);
}

#[tokio::test]
async fn plans_that_lose_a_race_append_nothing_of_any_aggregate() {
    let db = TestDatabase::new().await;
    let ours = executor(&db);
    let theirs = executor_fresh(&db);
    // a guess that `new` has no events yet, and a cached state of `old` that goes stale
    ours.execute("old", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    theirs
        .execute("new", 5, &typed_metadata(), None, &())
        .await
        .unwrap();
    let mut appends = Appends::new();
    plan_all(&ours, &mut appends, "fresh", &[1], true).await;
    plan_all(&ours, &mut appends, "new", &[7], true).await;
    let lost = appends.commit(ours.connections(), ours.notifier()).await;
    assert!(matches!(lost, Err(AppendError::Conflict)), "{lost:?}");
    theirs
        .execute("old", 2, &typed_metadata(), None, &())
        .await
        .unwrap();
    let mut appends = Appends::new();
    plan_all(&ours, &mut appends, "fresh", &[1], true).await;
    plan_all(&ours, &mut appends, "old", &[3], false).await;
    let lost = appends.commit(ours.connections(), ours.notifier()).await;
    assert!(matches!(lost, Err(AppendError::Conflict)), "{lost:?}");
    assert_eq!(event_count(&db).await, 3, "nothing of either plan");
    assert_eq!(theirs.load("fresh").await.unwrap().1, 0);
}

#[tokio::test]
async fn plans_across_snapshot_boundaries_keep_the_exact_state() {
    let db = TestDatabase::new().await;
    let executor = executor(&db);
    let mut expected = 0;
    let mut by = 1u64;
    // plans of 1, 7 and 13 events cross the snapshot boundary at different offsets; the first
    // ones are of `c` alone (one aggregate's append), the later ones have another aggregate
    // beside it (the append of several), each round another one
    for round in 0..30u64 {
        let size = [1, 7, 13][round as usize % 3];
        let commands: Vec<u64> = (by..by + size).collect();
        by += size;
        expected += commands.iter().sum::<u64>();
        let mut appends = Appends::new();
        let planned = plan_all(&executor, &mut appends, "c", &commands, false).await;
        let other = (round >= 10).then_some(format!("other-{round}"));
        let beside = match &other {
            Some(id) => Some(plan_all(&executor, &mut appends, id, &[round], true).await),
            None => None,
        };
        appends
            .commit(executor.connections(), executor.notifier())
            .await
            .unwrap();
        executor.committed(planned);
        if let Some(beside) = beside {
            executor.committed(beside);
        }
        let (fresh, version) = executor_fresh(&db).load("c").await.unwrap();
        assert_eq!(fresh.value, expected, "after {round} plans");
        assert_eq!(version as u64, by - 1);
        if let Some(id) = other {
            let (other, version) = executor_fresh(&db).load(&id).await.unwrap();
            assert_eq!((other.value, version), (round, 1));
        }
    }
    let (last_sequence, current_snapshot, payload): (i64, i64, serde_json::Value) = sqlx::query_as(
        "select last_sequence, current_snapshot, payload from snapshots \
             where aggregate_id = 'c'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(by > 200, "{by}");
    assert_eq!(
        last_sequence as u64,
        (by - 1) - (by - 1) % SNAPSHOT_EVERY as u64
    );
    assert_eq!(
        current_snapshot,
        last_sequence / SNAPSHOT_EVERY as i64,
        "one snapshot per boundary crossed"
    );
    assert_eq!(
        payload["value"],
        (1..=last_sequence as u64).sum::<u64>(),
        "the snapshot is the state at its sequence"
    );
}

/// An executor whose command path runs one append statement at a time, so that appends
/// committed together queue behind it and go to Postgres as one group.
fn grouping_executor(db: &TestDatabase) -> Executor<Counter> {
    let connections = event_store::connections::Connections::with_limits(db.pool.clone(), 4, 1);
    Executor::on(connections, AppendNotifier::disabled(), vec![])
}

/// Plans each of `plans` (aggregate, commands, whether it is new) into appends of its own,
/// then commits them all at once on `executor`'s command path.
async fn commit_together(
    executor: &Executor<Counter>,
    plans: &[(&str, &[u64], bool)],
) -> Vec<Result<Option<event_store::LogPosition>, AppendError>> {
    let mut staged = Vec::new();
    for (id, commands, assume_new) in plans {
        let mut appends = Appends::new();
        plan_all(executor, &mut appends, id, commands, *assume_new).await;
        staged.push(appends);
    }
    futures::future::join_all(
        staged
            .into_iter()
            .map(|appends| appends.commit(executor.connections(), executor.notifier())),
    )
    .await
}

#[tokio::test]
async fn appends_committed_together_share_one_statement_and_each_learns_its_own_position() {
    let db = TestDatabase::new().await;
    let executor = grouping_executor(&db);
    let ids: Vec<String> = (0..40).map(|i| format!("g{i}")).collect();
    let plans: Vec<(&str, &[u64], bool)> = ids
        .iter()
        .map(|id| (id.as_str(), &[1, 2][..], true))
        .collect();
    let answers = commit_together(&executor, &plans).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let position = answer.unwrap();
        let id = format!("g{i}");
        assert_eq!(
            position,
            GlobalLog::position_of(&db.pool, "Counter", &id, 2)
                .await
                .unwrap(),
            "{id} is answered with its own last event"
        );
        let first = GlobalLog::position_of(&db.pool, "Counter", &id, 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            first.global_position + 1,
            position.unwrap().global_position,
            "{id}'s events are next to each other in the log"
        );
    }
    let (events, transactions): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct tx_id) from events")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(events, 80);
    assert!(
        transactions < 40,
        "the queued appends went to Postgres together ({transactions} transactions)"
    );
}

#[tokio::test]
async fn a_group_with_a_lost_race_fails_only_that_command_and_the_rest_still_go_together() {
    let db = TestDatabase::new().await;
    let ours = grouping_executor(&db);
    let theirs = executor_fresh(&db);
    ours.execute("x", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    // another process takes x's next sequence number; ours still has x at version 1 cached
    theirs
        .execute("x", 2, &typed_metadata(), None, &())
        .await
        .unwrap();
    let answers = commit_together(
        &ours,
        &[
            ("a", &[3], true),
            ("b", &[3], true),
            ("x", &[3], false),
            ("d", &[3], true),
        ],
    )
    .await;
    let [a, b, x, d] = <[_; 4]>::try_from(answers).unwrap();
    assert!(matches!(x, Err(AppendError::Conflict)), "{x:?}");
    let (a, b, d) = (
        a.unwrap().unwrap(),
        b.unwrap().unwrap(),
        d.unwrap().unwrap(),
    );
    assert_eq!(
        a.tx_id, b.tx_id,
        "the half without the lost race went together"
    );
    assert_ne!(a.tx_id, d.tx_id);
    assert_eq!(executor_fresh(&db).load("x").await.unwrap().0.value, 3);
    assert_eq!(event_count(&db).await, 5, "x's two, a's, b's and d's");
}

#[tokio::test]
async fn two_commands_on_one_aggregate_never_share_a_statement() {
    let db = TestDatabase::new().await;
    let executor = grouping_executor(&db);
    executor
        .execute("x", 1, &typed_metadata(), None, &())
        .await
        .unwrap();
    // two plans for x's next sequence number, with one for y between them
    let answers = commit_together(
        &executor,
        &[("x", &[2], false), ("y", &[5], true), ("x", &[3], false)],
    )
    .await;
    let [first, other, second] = <[_; 3]>::try_from(answers).unwrap();
    assert!(matches!(second, Err(AppendError::Conflict)), "{second:?}");
    let (first, other) = (first.unwrap().unwrap(), other.unwrap().unwrap());
    assert_eq!(
        first.tx_id, other.tx_id,
        "the second plan for x waited for the next statement instead of failing this one"
    );
    let fresh = executor_fresh(&db);
    assert_eq!(fresh.load("x").await.unwrap().0.value, 3, "1 + 2, not + 3");
    assert_eq!(fresh.load("y").await.unwrap().0.value, 5);
    assert_eq!(event_count(&db).await, 3);
}
