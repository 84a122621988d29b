//! `workledger serve` with `WORKLEDGER_WEBHOOK_URL`: a task opened over HTTP is announced to
//! a real receiver on loopback, signed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use event_store::testing::TestDatabase;
use projections::notifications::{Delivery, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};
use serde_json::{Value, json};
use workledger::app::Application;
use workledger::config::Config;

const SECRET: &str = "the serve test's webhook secret, 32+ bytes";

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receive(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    received.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn serve_notifies_the_webhook_of_a_task_offered_to_a_group() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = Router::new()
        .route("/hook", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let db = TestDatabase::new().await;
    let mut config = Config::load(None).expect("default configuration");
    config.admin_email = Some("admin@example.com".into());
    config.admin_password = Some("a long enough password".to_owned().into());
    config.database_url = db.url().into();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.webhook_url = Some(hook.into());
    config.webhook_secret = Some(SECRET.to_owned().into());
    let app = Application::build(config).await.expect("app builds");
    let address = app.address();
    let url = |path: &str| format!("http://{address}{path}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let login: Value = client
        .post(url("/api/v1/auth/login"))
        .json(&json!({"email": "admin@example.com", "password": "a long enough password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap();
    let opened = client
        .post(url("/api/v1/tasks"))
        .bearer_auth(token)
        .json(&json!({"name": "Check the delivery note", "candidate_groups": ["warehouse"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    let task: Value = opened.json().await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (headers, body) = loop {
        if let Some(first) = received.lock().unwrap().first().cloned() {
            break first;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notification within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let timestamp: i64 = headers[TIMESTAMP_HEADER].to_str().unwrap().parse().unwrap();
    assert_eq!(
        headers[SIGNATURE_HEADER].to_str().unwrap(),
        signature(SECRET.as_bytes(), timestamp, &body)
    );
    let delivery: Delivery = serde_json::from_slice(&body).unwrap();
    let notification = &delivery.notifications[0];
    assert_eq!(notification.kind, "task.offered");
    assert_eq!(notification.subject.id, task["id"].as_str().unwrap());
    assert_eq!(notification.recipients.groups, ["warehouse"]);
    assert_eq!(notification.tenant_id.as_deref(), Some("default"));
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
