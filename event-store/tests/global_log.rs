//! The global log delivers every committed event exactly once, in an order that never lets a
//! late-committing transaction fall behind a reader's checkpoint.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use event_schemas::LogPosition;
use event_store::testing::TestDatabase;
use event_store::{Checkpoints, GlobalLog, process_batch};
use sqlx::{PgConnection, PgPool};
use support::{append, create_seen_table, store};

/// Runs one batch of the reader `name`, recording each delivered event in `seen`.
async fn deliver(pool: &PgPool, name: &str, limit: i64) -> Option<LogPosition> {
    process_batch(
        pool,
        name,
        limit,
        async |tx: &mut PgConnection, batch: &[_]| {
            for event in batch {
                let event: &event_store::RecordedEvent = event;
                sqlx::query(
                    "insert into seen (event_id, aggregate_id, sequence) values ($1, $2, $3)",
                )
                .bind(event.event_id)
                .bind(&event.aggregate_id)
                .bind(event.sequence)
                .execute(&mut *tx)
                .await?;
            }
            Ok::<_, sqlx::Error>(())
        },
    )
    .await
    .expect("batch failed")
}

/// Delivers batches until `total` events have been seen. Readability waits for every older
/// transaction in the whole Postgres cluster (other tests' included), so this waits too.
async fn deliver_all(pool: &PgPool, name: &str, limit: i64, total: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if deliver(pool, name, limit).await.is_none() {
            let count = seen(pool).await.len();
            if count >= total {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "reader stalled at {count} of {total}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Waits until `total` events are readable (see [`deliver_all`]).
async fn wait_readable(pool: &PgPool, total: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while GlobalLog::read(pool, LogPosition::START, total as i64)
        .await
        .unwrap()
        .len()
        < total
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never became readable"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn seen(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("select aggregate_id, sequence from seen order by delivered")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Inserts an event the way postgres-es does, inside a transaction the caller keeps open.
async fn insert_raw(conn: &mut PgConnection, aggregate_id: &str) {
    let mut metadata = support::metadata();
    metadata.insert("event_id".into(), uuid::Uuid::now_v7().to_string());
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) values ('Counter', $1, 1, 'Incremented', '1', $2, $3)",
    )
    .bind(aggregate_id)
    .bind(serde_json::json!({"Incremented": {"by": 1}}))
    .bind(serde_json::to_value(&metadata).unwrap())
    .execute(conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn an_append_that_took_its_position_first_but_commits_last_is_still_delivered_once() {
    let db = TestDatabase::new().await;
    create_seen_table(&db.pool).await;
    let store = store(&db.pool);

    // `slow` takes position 1 and holds its transaction open...
    let mut slow = db.pool.begin().await.unwrap();
    insert_raw(&mut slow, "slow").await;
    // ...while `fast` takes position 2 and commits.
    append(&store, "fast").await.unwrap();

    // A reader of "position > checkpoint" would deliver `fast` now and skip `slow` for ever.
    let committed: Vec<i64> = sqlx::query_scalar("select global_position from events")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(committed, vec![2], "only the later position is committed");
    assert_eq!(
        deliver(&db.pool, "reader", 100).await,
        None,
        "nothing is readable yet"
    );
    assert!(GlobalLog::has_unreadable(&db.pool).await.unwrap());

    assert!(
        !Checkpoints::is_caught_up(&db.pool, "reader").await.unwrap(),
        "two are pending"
    );

    slow.commit().await.unwrap();
    deliver_all(&db.pool, "reader", 100, 2).await;
    assert!(Checkpoints::is_caught_up(&db.pool, "reader").await.unwrap());
    assert_eq!(deliver(&db.pool, "reader", 100).await, None);
    assert_eq!(
        seen(&db.pool).await,
        vec![("slow".into(), 1), ("fast".into(), 1)],
        "delivered once each, the earlier transaction first"
    );
}

#[tokio::test]
async fn a_transaction_that_began_writing_first_is_delivered_before_a_later_one_even_with_a_higher_position()
 {
    let db = TestDatabase::new().await;
    create_seen_table(&db.pool).await;
    let store = store(&db.pool);

    // `early` gets its transaction id first, then `late` appends and commits, then `early`
    // inserts (taking the higher position) and commits.
    let mut early = db.pool.begin().await.unwrap();
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut *early)
        .await
        .unwrap();
    append(&store, "late").await.unwrap();
    insert_raw(&mut early, "early").await;
    assert_eq!(deliver(&db.pool, "reader", 100).await, None);
    early.commit().await.unwrap();

    deliver_all(&db.pool, "reader", 1, 2).await;
    assert_eq!(deliver(&db.pool, "reader", 1).await, None);
    assert_eq!(
        seen(&db.pool).await,
        vec![("early".into(), 1), ("late".into(), 1)]
    );
}

#[tokio::test]
async fn a_reader_stopped_between_batches_resumes_exactly_where_it_stopped() {
    let db = TestDatabase::new().await;
    create_seen_table(&db.pool).await;
    let store = store(&db.pool);
    for i in 0..250 {
        append(&store, &format!("agg-{}", i % 7)).await.unwrap();
    }

    wait_readable(&db.pool, 250).await;
    let first = deliver(&db.pool, "reader", 100).await.unwrap();
    assert_eq!(Checkpoints::load(&db.pool, "reader").await.unwrap(), first);
    assert_eq!(seen(&db.pool).await.len(), 100);

    // A batch that fails part-way leaves neither effects nor a moved checkpoint behind.
    let failed = process_batch(
        &db.pool,
        "reader",
        100,
        async |tx: &mut PgConnection, batch: &[_]| {
            let event: &event_store::RecordedEvent = &batch[0];
            sqlx::query("insert into seen (event_id, aggregate_id, sequence) values ($1, $2, $3)")
                .bind(event.event_id)
                .bind(&event.aggregate_id)
                .bind(event.sequence)
                .execute(&mut *tx)
                .await
                .unwrap();
            Err::<(), _>(std::io::Error::other("projector crashed"))
        },
    )
    .await;
    assert!(failed.is_err());
    assert_eq!(Checkpoints::load(&db.pool, "reader").await.unwrap(), first);
    assert_eq!(seen(&db.pool).await.len(), 100);

    // "Restart": a new reader under the same name carries on from the checkpoint.
    deliver_all(&db.pool, "reader", 100, 250).await;
    let seen = seen(&db.pool).await;
    assert_eq!(
        seen.len(),
        250,
        "every event once (the table's key forbids doubles)"
    );
    let mut last: HashMap<String, i64> = HashMap::new();
    for (aggregate, sequence) in seen {
        let previous = last.insert(aggregate.clone(), sequence).unwrap_or(0);
        assert_eq!(sequence, previous + 1, "{aggregate} delivered in order");
    }
}

#[tokio::test]
async fn eight_concurrent_appenders_of_a_thousand_events_each_are_all_seen_exactly_once() {
    const APPENDERS: usize = 8;
    const EACH: usize = 1000;
    let db = TestDatabase::with_pool_size(24).await;
    create_seen_table(&db.pool).await;

    let appenders: Vec<_> = (0..APPENDERS)
        .map(|a| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                let store = store(&pool);
                for i in 0..EACH {
                    // half the events go to a long-lived aggregate, half to fresh ones
                    let id = if i % 2 == 0 {
                        format!("appender-{a}")
                    } else {
                        format!("appender-{a}-{i}")
                    };
                    append(&store, &id).await.unwrap();
                }
            })
        })
        .collect();

    // The reader runs while the appenders append.
    let total = APPENDERS * EACH;
    deliver_all(&db.pool, "reader", 500, total).await;
    for appender in appenders {
        appender.await.unwrap();
    }
    assert_eq!(deliver(&db.pool, "reader", 500).await, None);

    let seen = seen(&db.pool).await;
    assert_eq!(seen.len(), total);
    let mut last: HashMap<String, i64> = HashMap::new();
    for (aggregate, sequence) in seen {
        let previous = last.insert(aggregate.clone(), sequence).unwrap_or(0);
        assert_eq!(sequence, previous + 1, "{aggregate} delivered in order");
    }
}

#[tokio::test]
async fn every_event_carries_its_own_id_and_the_full_metadata() {
    let db = TestDatabase::new().await;
    let store = store(&db.pool);
    // one command, three events: cqrs-es shares one metadata map; ids must still differ
    let mut context = cqrs_es::EventStore::load_aggregate(&store, "multi")
        .await
        .unwrap();
    let events = vec![
        support::CounterEvent::Incremented { by: 1 },
        support::CounterEvent::Incremented { by: 2 },
        support::CounterEvent::Incremented { by: 3 },
    ];
    cqrs_es::AggregateContext::aggregate(&mut context);
    cqrs_es::EventStore::commit(&store, events, context, support::metadata())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let batch = loop {
        let batch = GlobalLog::read(&db.pool, LogPosition::START, 10)
            .await
            .unwrap();
        if !batch.is_empty() || tokio::time::Instant::now() > deadline {
            break batch;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(batch.len(), 3);
    let ids: std::collections::HashSet<_> = batch.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 3);
    for event in &batch {
        let map: HashMap<String, String> = serde_json::from_value(event.metadata.clone()).unwrap();
        let meta = event_schemas::EventMetadata::from_map(&map).unwrap();
        assert_eq!(meta.event_id, event.event_id);
        assert_eq!(meta.tenant_id, "default");
    }
    assert_eq!(GlobalLog::head(&db.pool).await.unwrap(), batch[2].position);
    assert_eq!(
        GlobalLog::position_of(&db.pool, "Counter", "multi", 2)
            .await
            .unwrap(),
        Some(batch[1].position)
    );

    // an append without the required metadata is refused by the table itself
    let bare = sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) values ('Counter', 'bare', 1, 'Incremented', '1', '{}', '{}')",
    )
    .execute(&db.pool)
    .await;
    assert!(bare.is_err());
}

#[tokio::test]
async fn a_filtered_reader_takes_only_its_events_and_passes_over_the_rest() {
    let db = TestDatabase::new().await;
    create_seen_table(&db.pool).await;
    let store = store(&db.pool);
    for i in 0..10 {
        append(&store, &format!("c-{i}")).await.unwrap();
    }
    wait_readable(&db.pool, 10).await;
    let nothing = event_store::LogFilter::aggregate_types(&["Other"]);
    let mut applied = 0;
    let moved = event_store::process_batch_matching(
        &db.pool,
        "picky",
        100,
        &nothing,
        async |_: &mut PgConnection, batch: &[event_store::RecordedEvent]| {
            applied += batch.len();
            Ok::<_, std::io::Error>(())
        },
    )
    .await
    .unwrap();
    assert_eq!(applied, 0, "nothing matched, apply was not called");
    assert!(moved.is_some(), "but the checkpoint passed over all ten");
    assert!(Checkpoints::is_caught_up(&db.pool, "picky").await.unwrap());

    let counters = event_store::LogFilter::aggregate_types(&["Counter"]);
    let (taken, last) = GlobalLog::read_matching(&db.pool, LogPosition::START, 4, &counters)
        .await
        .unwrap();
    assert_eq!(taken.len(), 4);
    assert_eq!(last, Some(taken[3].position));
    assert!(
        taken
            .iter()
            .all(|e| !e.payload.is_null() && !e.metadata.is_null())
    );
}

/// Appends `count` events in one transaction: `workflow_instance` events, but every
/// `every`-th a `user` event (the kind migration 0009's partial index holds).
async fn append_raw(pool: &PgPool, count: i64, every: i64) {
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         select case when n % $2 = 0 then 'user' else 'workflow_instance' end, 'a-' || n, 1, \
                'Happened', '1', '{}', \
                jsonb_build_object('event_id', gen_random_uuid(), 'tenant_id', 't', \
                    'actor', 'a', 'correlation_id', gen_random_uuid(), 'causation_id', 'c', \
                    'request_id', 'r', 'occurred_at', now()) \
         from generate_series(1, $1) as n",
    )
    .bind(count)
    .bind(every)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_sparse_reader_goes_straight_to_its_events_and_past_the_rest_to_the_head() {
    let db = TestDatabase::new().await;
    append_raw(&db.pool, 10_000, 4_000).await; // users at 4,000 and 8,000
    wait_readable(&db.pool, 10_000).await;
    let users = event_store::LogFilter::sparse(&["user"]);
    let head = GlobalLog::head(&db.pool).await.unwrap();

    // a full read stops at its last event
    let (taken, last) = GlobalLog::read_matching(&db.pool, LogPosition::START, 1, &users)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].aggregate_id, "a-4000");
    assert!(!taken[0].payload.is_null() && !taken[0].metadata.is_null());
    assert_eq!(last, Some(taken[0].position));

    // a short one has taken everything up to the head: the checkpoint goes there
    let (taken, last) = GlobalLog::read_matching(&db.pool, last.unwrap(), 500, &users)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].aggregate_id, "a-8000");
    assert_eq!(last, Some(head));
    assert!(head > taken[0].position);

    // nothing more: nothing read, as for a plain reader at the head
    let (taken, last) = GlobalLog::read_matching(&db.pool, head, 500, &users)
        .await
        .unwrap();
    assert!(taken.is_empty());
    assert_eq!(last, None);

    // a plain filter of the same type passes over 500 a read, and has taken none of them yet
    let plain = event_store::LogFilter::aggregate_types(&["user"]);
    let (taken, last) = GlobalLog::read_matching(&db.pool, LogPosition::START, 500, &plain)
        .await
        .unwrap();
    let all = GlobalLog::read(&db.pool, LogPosition::START, 500)
        .await
        .unwrap();
    assert!(taken.is_empty());
    assert_eq!(last, Some(all[499].position));

    // one batch of 500 passes over all 10,000
    let mut applied = Vec::new();
    let moved = event_store::process_batch_matching(
        &db.pool,
        "identity-like",
        500,
        &users,
        async |_: &mut PgConnection, batch: &[event_store::RecordedEvent]| {
            applied.extend(batch.iter().map(|e| e.aggregate_id.clone()));
            Ok::<_, std::io::Error>(())
        },
    )
    .await
    .unwrap();
    assert_eq!(applied, ["a-4000", "a-8000"]);
    assert_eq!(moved, Some(head));
    assert!(
        Checkpoints::is_caught_up(&db.pool, "identity-like")
            .await
            .unwrap()
    );
}

#[tokio::test]
#[should_panic(expected = "must be [a-z_]+")]
async fn a_sparse_filter_refuses_a_type_it_could_not_quote() {
    let _ = event_store::LogFilter::sparse(&["user') or ('1' = '1"]);
}

/// How often the sparse reader's partial index (migration 0009) has been scanned, once this
/// connection's own counts are in the statistics.
async fn identity_index_scans(conn: &mut PgConnection) -> i64 {
    sqlx::query("select pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "select idx_scan from pg_stat_user_indexes where indexrelname = 'events_identity_log'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_sparse_reader_reads_through_its_partial_index_and_a_plain_one_walks_the_log() {
    let db = TestDatabase::new().await;
    append_raw(&db.pool, 10_000, 4_000).await;
    wait_readable(&db.pool, 10_000).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let before = identity_index_scans(&mut conn).await;
    let users = event_store::LogFilter::sparse(&["user"]);
    let (taken, _) = GlobalLog::read_matching(&mut *conn, LogPosition::START, 500, &users)
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);
    let after_sparse = identity_index_scans(&mut conn).await;
    assert!(
        after_sparse > before,
        "the sparse read's predicate must be the partial index's ({before} -> {after_sparse})"
    );
    let plain = event_store::LogFilter::aggregate_types(&["user"]);
    GlobalLog::read_matching(&mut *conn, LogPosition::START, 500, &plain)
        .await
        .unwrap();
    assert_eq!(identity_index_scans(&mut conn).await, after_sparse);
}
