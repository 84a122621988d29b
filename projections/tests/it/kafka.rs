//! The Kafka publisher against a real Kafka-protocol broker (`tansu`, started per test on a
//! port of its own, keeping its topics in memory) and the real Postgres.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use event_schemas::IntegrationEvent;
use event_schemas::{LogPosition, identity};
use projections::kafka::{KafkaPublisher, KafkaSettings};
use projections::names::KAFKA_PUBLISHER;
use projections::{Projections, RunSettings};
use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, OwnedMessage};
use serde_json::json;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{Broker, free_port};
use crate::support::{
    CLERK, Po, append_raw_of, eventually, last_appended, member, project_with, setup,
};

/// Settings for a test: a prefix of its own, topics of 3 partitions on the one broker, and a
/// failed delivery found out within 3 s.
fn settings(brokers: &str) -> KafkaSettings {
    KafkaSettings {
        topic_prefix: format!("t{}.", Uuid::new_v4().simple()),
        partitions: 3,
        replication_factor: 1,
        delivery_timeout: Duration::from_secs(3),
        ..KafkaSettings::new(brokers)
    }
}

/// The published events of the log (every aggregate type but identity's), in log order.
async fn published_events(pool: &PgPool) -> Vec<(Uuid, String, String, i64)> {
    sqlx::query(
        "select event_id, aggregate_type, aggregate_id, sequence from events \
         where aggregate_type not in ($1, $2) order by tx_id, global_position",
    )
    .bind(identity::TENANT_AGGREGATE_TYPE)
    .bind(identity::USER_AGGREGATE_TYPE)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|row| {
        (
            row.get("event_id"),
            row.get("aggregate_type"),
            row.get("aggregate_id"),
            row.get("sequence"),
        )
    })
    .collect()
}

/// Reads `topics` from the start in a consumer group until messages of `count` different
/// events have come (or fails after 60 s).
async fn consume(brokers: &str, topics: &[String], count: usize) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", Uuid::new_v4().simple()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).unwrap();
    let mut messages = Vec::new();
    let mut events = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while events.len() < count {
        let received = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {count} events came within 60 s", events.len()));
        // a topic not there yet is reported, not waited for
        let Ok(received) = received.map(|m| m.detach()) else {
            continue;
        };
        events.insert(header(&received, "event_id"));
        messages.push(received);
    }
    messages
}

fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == key)
        .map(|h| String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap())
}

/// Runs the publisher's worker, retrying quickly, until the token is cancelled.
fn run_publisher(
    pool: &PgPool,
    publisher: KafkaPublisher,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(
        Projections::from_projectors(vec![Arc::new(publisher)])
            .with_settings(RunSettings {
                retry_min: Duration::from_millis(100),
                retry_max: Duration::from_millis(500),
                poll_interval: Duration::from_millis(100),
                ..RunSettings::default()
            })
            .run(pool.clone(), shutdown.clone()),
    );
    (shutdown, running)
}

async fn publisher_failing(pool: &PgPool) -> bool {
    let status = Projections::status(pool).await.unwrap();
    status
        .iter()
        .any(|s| s.name == KAFKA_PUBLISHER && s.active && s.error.is_some())
}

async fn caught_up(pool: &PgPool) {
    eventually(
        Duration::from_secs(60),
        "the publisher to catch up",
        || async { checkpoint(pool).await == last_appended(pool).await },
    )
    .await;
}

async fn checkpoint(pool: &PgPool) -> LogPosition {
    event_store::Checkpoints::load(pool, KAFKA_PUBLISHER)
        .await
        .unwrap()
}

#[tokio::test]
async fn each_workflow_event_reaches_its_aggregate_types_topic_keyed_by_aggregate_with_headers() {
    let broker = Broker::start();
    let (db, rt) = setup().await;
    let po = Po::start(&rt, json!(1200), "PO-1").await;
    po.work(
        "review",
        &member(CLERK, &["clerks"]),
        json!({"checked": true}),
        5,
    )
    .await;
    // an identity event: names and emails are not published
    append_raw_of(&db.pool, identity::USER_AGGREGATE_TYPE, "acme", 1, None).await;
    let expected = published_events(&db.pool).await;
    assert!(expected.len() > 5, "{expected:?}");

    // time enough for a busy machine: this test expects no failed delivery
    let settings = KafkaSettings {
        delivery_timeout: Duration::from_secs(30),
        ..settings(&broker.address())
    };
    let publisher = KafkaPublisher::new(settings.clone()).unwrap();
    let topics = publisher.topics();
    let publishing = Projections::from_projectors(vec![Arc::new(publisher)]);
    // another test's transaction can hold the log back for a moment: wait for it all
    project_with(&publishing, &db.pool).await;
    assert_eq!(checkpoint(&db.pool).await, last_appended(&db.pool).await);

    let messages = consume(&broker.address(), &topics, expected.len()).await;
    let by_id: HashMap<Uuid, &OwnedMessage> = messages
        .iter()
        .map(|m| (header(m, "event_id").unwrap().parse().unwrap(), m))
        .collect();
    assert_eq!(messages.len(), expected.len(), "each event once");
    let stored: Vec<event_schemas::RecordedEvent> =
        event_store::GlobalLog::read(&db.pool, LogPosition::START, 10_000)
            .await
            .unwrap();
    let identity_types = [
        identity::TENANT_AGGREGATE_TYPE,
        identity::USER_AGGREGATE_TYPE,
    ];
    for event in stored
        .iter()
        .filter(|e| !identity_types.contains(&e.aggregate_type.as_str()))
    {
        let message = by_id
            .get(&event.event_id)
            .unwrap_or_else(|| panic!("{} was not published", event.event_id));
        assert_eq!(message.topic(), settings.topic(&event.aggregate_type));
        assert_eq!(message.key(), Some(event.aggregate_id.as_bytes()));
        assert_eq!(header(message, "event_type").unwrap(), event.event_type);
        assert_eq!(
            header(message, "event_version").unwrap(),
            event.event_version
        );
        assert_eq!(header(message, "tenant_id").unwrap(), "acme");
        assert_eq!(
            header(message, "correlation_id"),
            event.metadata["correlation_id"].as_str().map(str::to_owned)
        );
        let value: IntegrationEvent = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(value.event_id, event.event_id);
        assert_eq!(value.position, event.position);
        assert_eq!(value.sequence, event.sequence);
        assert_eq!(value.payload, event.payload);
        assert_eq!(value.actor.as_deref(), event.metadata["actor"].as_str());
        assert_eq!(
            value.causation_id.as_deref(),
            event.metadata["causation_id"].as_str()
        );
    }
    // an aggregate's events arrive in their order (one partition per key)
    let mut last: HashMap<String, i64> = HashMap::new();
    for message in &messages {
        let value: IntegrationEvent = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let previous = last.insert(value.aggregate_id.clone(), value.sequence);
        assert!(
            previous.is_none_or(|p| p < value.sequence),
            "{} came out of order",
            value.event_id
        );
    }
    drop(broker);
}

#[tokio::test]
async fn nothing_moves_while_no_broker_answers_and_everything_goes_once_one_does() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let (db, rt) = setup().await;
    let po = Po::start(&rt, json!(800), "PO-2").await;
    po.work(
        "review",
        &member(CLERK, &["clerks"]),
        json!({"checked": true}),
        5,
    )
    .await;
    let expected = published_events(&db.pool).await;

    let publisher = KafkaPublisher::new(settings(&brokers)).unwrap();
    let topics = publisher.topics();
    let (shutdown, running) = run_publisher(&db.pool, publisher);
    // no broker: the publisher fails, says so, and its checkpoint stays where it was
    eventually(Duration::from_secs(30), "the publisher's failure", || {
        publisher_failing(&db.pool)
    })
    .await;
    assert_eq!(checkpoint(&db.pool).await, LogPosition::START);

    // the broker comes up: everything is delivered and the checkpoint moves on
    let broker = Broker::start_on(port);
    caught_up(&db.pool).await;
    eventually(
        Duration::from_secs(10),
        "the failure to be cleared",
        || async {
            let status = Projections::status(&db.pool).await.unwrap();
            status
                .iter()
                .any(|s| s.name == KAFKA_PUBLISHER && s.error.is_none())
        },
    )
    .await;

    // at least once: every event is there (a repeat would be dropped by event_id)
    let messages = consume(&broker.address(), &topics, expected.len()).await;
    let delivered: HashSet<Uuid> = messages
        .iter()
        .map(|m| header(m, "event_id").unwrap().parse().unwrap())
        .collect();
    let wanted: HashSet<Uuid> = expected.iter().map(|(id, ..)| *id).collect();
    assert_eq!(delivered, wanted);
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_broker_lost_and_replaced_midway_gets_every_later_event_once_it_is_back() {
    let port = free_port();
    let first = Broker::start_on(port);
    let (db, rt) = setup().await;
    Po::start(&rt, json!(300), "PO-3").await;
    let publisher = KafkaPublisher::new(settings(&first.address())).unwrap();
    let topics = publisher.topics();
    let (shutdown, running) = run_publisher(&db.pool, publisher);
    caught_up(&db.pool).await;
    let before = published_events(&db.pool).await.len();

    // the broker goes away (with its topics: it kept them in memory) while events come
    drop(first);
    let po = Po::start(&rt, json!(450), "PO-4").await;
    po.work(
        "review",
        &member(CLERK, &["clerks"]),
        json!({"checked": true}),
        5,
    )
    .await;
    let after: Vec<Uuid> = published_events(&db.pool).await[before..]
        .iter()
        .map(|(id, ..)| *id)
        .collect();
    eventually(Duration::from_secs(30), "the publisher's failure", || {
        publisher_failing(&db.pool)
    })
    .await;

    // a new, empty broker on the same address: the topics are made again and the events
    // that were not acknowledged are delivered
    let second = Broker::start_on(port);
    caught_up(&db.pool).await;
    let messages = consume(&second.address(), &topics, after.len()).await;
    let delivered: HashSet<Uuid> = messages
        .iter()
        .map(|m| header(m, "event_id").unwrap().parse().unwrap())
        .collect();
    assert_eq!(delivered, after.iter().copied().collect::<HashSet<_>>());
    shutdown.cancel();
    running.await.unwrap();
}
