//! `workledger serve` with `KAFKA_BROKERS`: what commands append over HTTP reaches Kafka.

#[path = "../../projections/tests/it/broker.rs"]
mod broker;

use std::time::Duration;

use event_store::testing::TestDatabase;
use projections::Projections;
use projections::names::KAFKA_PUBLISHER;
use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use serde_json::{Value, json};
use uuid::Uuid;
use workledger::app::Application;
use workledger::config::Config;

use broker::Broker;

#[tokio::test]
async fn serve_publishes_a_command_s_events_to_the_aggregate_type_s_topic() {
    let broker = Broker::start();
    let db = TestDatabase::new().await;
    let prefix = format!("serve{}.", Uuid::new_v4().simple());
    let mut config = Config::load(None).expect("default configuration");
    config.admin_email = Some("admin@example.com".into());
    config.admin_password = Some("a long enough password".to_owned().into());
    config.database_url = db.url().into();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.kafka_brokers = Some(broker.address());
    config.kafka_topic_prefix = prefix.clone();
    config.kafka_partitions = 2;
    config.kafka_replication = 1;
    let app = Application::build(config).await.expect("app builds");
    let address = app.address();
    let url = |path: &str| format!("http://{address}{path}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = reqwest::Client::new();
    let login = client
        .post(url("/api/v1/auth/login"))
        .json(&json!({"email": "admin@example.com", "password": "a long enough password"}));
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let login: Value = login.send().await.unwrap().json().await.unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let opened = client
        .post(url("/api/v1/tasks"))
        .bearer_auth(&token)
        .json(&json!({"name": "Send the invoice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    let task: Value = opened.json().await.unwrap();
    let task_id = task["id"].as_str().unwrap().to_owned();

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "serve-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&format!("{prefix}task")]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            // the topic may not be there yet: that is reported, not waited for
            if let Ok(message) = consumer.recv().await {
                return message;
            }
        }
    })
    .await
    .expect("the task's event within 60 s");
    assert_eq!(message.key(), Some(task_id.as_bytes()));
    let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!(value["event_type"], "TaskOpened");
    assert_eq!(value["aggregate_id"], task_id);
    assert_eq!(value["tenant_id"], "default");

    let status = Projections::status(&db.pool).await.unwrap();
    let publisher = status.iter().find(|s| s.name == KAFKA_PUBLISHER).unwrap();
    assert!(
        publisher.active && publisher.error.is_none(),
        "{publisher:?}"
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
