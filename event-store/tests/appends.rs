//! Appends: snapshots stay exact across commits of any size, and a lost race is a conflict
//! that stores nothing.

mod support;

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventRepository};
use cqrs_es::{AggregateError, EventStore as _};
use event_store::testing::TestDatabase;
use event_store::{AppendNotifier, EventRepository, SNAPSHOT_EVERY};
use support::{Counter, CounterEvent, metadata, store};

fn increments(from: u64, count: u64) -> Vec<CounterEvent> {
    (from..from + count)
        .map(|by| CounterEvent::Incremented { by })
        .collect()
}

#[tokio::test]
async fn an_aggregate_loads_the_same_from_snapshots_as_from_its_whole_history() {
    let db = TestDatabase::new().await;
    let store = store(&db.pool);
    // commits of 1, 7 and 13 events cross the snapshot boundary at every possible offset
    let mut expected = 0;
    let mut by = 1;
    for round in 0..30 {
        let size = [1, 7, 13][round % 3];
        let context = store.load_aggregate("c").await.unwrap();
        assert_eq!(context.aggregate.value, expected, "after {round} commits");
        let events = increments(by, size);
        expected += events
            .iter()
            .map(|CounterEvent::Incremented { by }| by)
            .sum::<u64>();
        by += size;
        store.commit(events, context, metadata()).await.unwrap();
    }
    let reloaded = store.load_aggregate("c").await.unwrap();
    assert_eq!(reloaded.aggregate.value, expected);

    let (last_sequence, snapshots): (i64, i64) = sqlx::query_as(
        "select last_sequence, (select count(*) from snapshots) from snapshots where aggregate_id = 'c'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(snapshots, 1, "one snapshot row per aggregate");
    assert_eq!(last_sequence % SNAPSHOT_EVERY as i64, 0);
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(events as usize, reloaded.current_sequence);
}

#[tokio::test]
async fn a_commit_that_lost_the_race_is_a_conflict_and_stores_nothing() {
    let db = TestDatabase::new().await;
    let store = store(&db.pool);
    store
        .commit(
            increments(1, 1),
            store.load_aggregate("c").await.unwrap(),
            metadata(),
        )
        .await
        .unwrap();
    // two commands loaded version 1; the first one's two events win
    let first = store.load_aggregate("c").await.unwrap();
    let second = store.load_aggregate("c").await.unwrap();
    store
        .commit(increments(2, 2), first, metadata())
        .await
        .unwrap();
    let lost = store.commit(increments(10, 3), second, metadata()).await;
    assert!(
        matches!(lost, Err(AggregateError::AggregateConflict)),
        "{lost:?}"
    );
    assert_eq!(
        store.load_aggregate("c").await.unwrap().aggregate.value,
        1 + 2 + 3
    );
}

#[tokio::test]
async fn a_stale_snapshot_never_replaces_a_newer_one() {
    let db = TestDatabase::new().await;
    let repo = EventRepository::new(db.pool.clone(), AppendNotifier::disabled());
    let store = store(&db.pool);
    for _ in 0..(2 * SNAPSHOT_EVERY) {
        let context = store.load_aggregate("c").await.unwrap();
        store
            .commit(increments(1, 1), context, metadata())
            .await
            .unwrap();
    }
    let snapshot = repo.get_snapshot::<Counter>("c").await.unwrap().unwrap();
    assert_eq!(snapshot.current_sequence, 2 * SNAPSHOT_EVERY);
    // a writer still holding the first snapshot's context commits past the boundary again
    let stale = EventStoreAggregateContext {
        aggregate_id: "c".to_owned(),
        aggregate: Counter { value: 0 },
        current_sequence: 2 * SNAPSHOT_EVERY,
        current_snapshot: Some(1),
    };
    store
        .commit(increments(1, 1), stale, metadata())
        .await
        .unwrap();
    let after = repo.get_snapshot::<Counter>("c").await.unwrap().unwrap();
    assert_eq!(
        after.current_sequence,
        2 * SNAPSHOT_EVERY,
        "kept the newer snapshot"
    );
}
