//! `workledger serve` through real HTTP: operations endpoints, request ids, problem answers,
//! and the reactors it runs when configured (Kafka, webhook).

#[path = "../../projections/tests/it/broker.rs"]
mod broker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use domain::definition::Definition;
use domain::{Caller, Role};
use event_store::testing::TestDatabase;
use orchestrator::{RequestContext, Runtime, StaticDirectory};
use projections::Projections;
use projections::names::KAFKA_PUBLISHER;
use projections::notifications::{Delivery, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};
use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use serde_json::{Value, json};
use uuid::Uuid;
use workledger::app::Application;
use workledger::config::Config;

use broker::Broker;

struct TestApp {
    address: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn config_for(database_url: &str) -> Config {
    let mut config = load_defaults();
    config.admin_email = Some("admin@example.com".into());
    config.admin_password = Some("a long enough password".to_owned().into());
    config.database_url = database_url.to_owned().into();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config
}

fn load_defaults() -> Config {
    Config::load(None).expect("default configuration")
}

async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with `configure` applied to its configuration.
async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDatabase::new().await;
    let mut config = config_for(&db.url());
    configure(&mut config);
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://{}", app.address());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        stop: Some(stop),
        _db: db,
    }
}

#[tokio::test]
async fn health_and_readiness_answer_ok_on_a_migrated_database() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }
}

#[tokio::test]
async fn readiness_fails_while_migrations_are_missing() {
    let app = spawn_app().await;
    sqlx::query("delete from _sqlx_migrations")
        .execute(&app._db.pool)
        .await
        .unwrap();
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "migrations_pending");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_clients() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-chosen-42");

    let generated = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let missing = app
        .client
        .get(format!("{}/api/v1/nothing", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["status"], 404);
    assert!(body["detail"].as_str().unwrap().contains("/api/v1/nothing"));

    let wrong = app
        .client
        .post(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["content-type"], "application/problem+json");
    assert_eq!(wrong.headers()["allow"], "GET,HEAD");
}

#[tokio::test]
async fn with_a_metrics_token_metrics_need_it() {
    let app = spawn_app_with(|config| {
        config.metrics_token = Some("the scraper's own token".into());
    })
    .await;
    let url = format!("{}/metrics", app.address);
    for authorization in [
        None,
        Some("Bearer the wrong token"),
        Some("the scraper's own token"),
    ] {
        let mut request = app.client.get(&url);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "unauthorized");
    }
    let response = app
        .client
        .get(&url)
        .bearer_auth("the scraper's own token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("# TYPE"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = spawn_app().await;
    app.client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("workledger_http_requests_total")
                && l.contains("route=\"/healthz\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );
    assert!(text.contains("workledger_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn the_openapi_document_and_docs_page_are_served() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["info"]["title"], "Workledger");
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/auth/login",
        "/api/v1/workflow-instances",
        "/api/v1/tasks/{id}/complete",
        "/api/v1/approvals/{id}/decisions",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    let docs = app
        .client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("openapi"));
}

#[tokio::test]
async fn serve_creates_a_missing_database_and_stops_gracefully() {
    let server = TestDatabase::new().await;
    let fresh = format!("{}_fresh", server.name);
    let url = server.url().replace(&server.name, &fresh);
    let app = Application::build(config_for(&url))
        .await
        .expect("creates the database");
    let address = format!("http://{}", app.address());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let ready = reqwest::get(format!("{address}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops promptly")
        .unwrap()
        .unwrap();
    let mut admin: sqlx::PgConnection = sqlx::Connection::connect(&server.url()).await.unwrap();
    sqlx::query(&format!("drop database {fresh} with (force)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// A client that sends half a request head holds nothing for long: its connection is closed
/// after the header timeout, and a shutdown meanwhile waits for it no longer than that, not
/// for the whole grace.
#[tokio::test]
async fn a_half_sent_request_is_cut_off_after_the_header_timeout_shutdown_or_not() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let db = TestDatabase::new().await;
    let mut config = config_for(&db.url());
    config.header_timeout = Duration::from_secs(1);
    config.shutdown_grace = Duration::from_secs(30);
    let app = Application::build(config).await.unwrap();
    let address = app.address();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let half_sent = || async {
        let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        socket
    };

    let mut socket = half_sent().await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("the connection is closed after the header timeout")
        .unwrap();

    let _held = half_sent().await;
    let ready = reqwest::get(format!("http://{address}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops once the half-sent request is cut off, well within its grace")
        .unwrap()
        .unwrap();
}

/// A runtime of its own on `app`'s database, writing beside `serve`.
fn writer(app: &TestApp) -> Runtime {
    Runtime::new(
        app._db.pool.clone(),
        event_store::AppendNotifier::spawn(app._db.pool.clone()),
        Arc::new(StaticDirectory::new()),
    )
}

/// A request of a user of tenant `acme` with `roles`.
fn ctx(roles: Vec<Role>) -> RequestContext {
    RequestContext {
        caller: Caller::user("acme", uuid::Uuid::now_v7(), roles, Vec::<String>::new()),
        at: chrono::Utc::now(),
        correlation_id: uuid::Uuid::now_v7(),
        request_id: "test".into(),
    }
}

#[tokio::test]
async fn serve_runs_the_orchestrator_that_finishes_cascades_from_the_log() {
    let app = spawn_app().await;
    // a writer that does not cascade (as if it crashed right after its command)
    let writer = writer(&app).without_cascade();
    let definition = Definition::from_json(
        r#"{"key": "one-task", "name": "One task", "start": "work",
            "steps": {"work": {"type": "task", "name": "Work", "candidate_groups": ["clerks"], "next": "done"},
                      "done": {"type": "end", "outcome": "done"}}}"#,
    )
    .unwrap();
    writer
        .publish(&ctx(vec![Role::Designer]), definition)
        .await
        .unwrap();
    let started = writer
        .start(
            &ctx(vec![Role::Operator]),
            "one-task",
            None,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        started.appended, 2,
        "started and the first step activated, no task yet"
    );

    let task = domain::ids::step_child_id(started.id.parse().unwrap(), "work", 1);
    eventually("serve to open the task", async || {
        writer.load_task(task).await.unwrap().1 > 0
    })
    .await;
}

/// Polls `done` every 20 ms until it holds; fails naming `what` after 30 s.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_incident_is_counted_on_metrics_by_the_process_manager_of_serve() {
    let app = spawn_app().await;
    let writer = writer(&app);
    // a decision on `amount` that a text cannot satisfy: the start raises an incident
    let definition = Definition::from_json(
        r#"{"key": "routed", "name": "Routed", "start": "check",
            "steps": {"check": {"type": "decision", "rules": [{"when": "amount > 100", "next": "done"}],
                                "default": "done"},
                      "done": {"type": "end", "outcome": "ok"}}}"#,
    )
    .unwrap();
    writer
        .publish(&ctx(vec![Role::Designer]), definition)
        .await
        .unwrap();
    let mut variables = serde_json::Map::new();
    variables.insert("amount".into(), json!("lots"));
    writer
        .start(&ctx(vec![Role::Operator]), "routed", None, None, variables)
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = app
            .client
            .get(format!("{}/metrics", app.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text
            .lines()
            .any(|l| l == "workledger_incidents_raised_total 1")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the incident was never counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_waits_for_a_command_whose_client_gave_up_to_store_its_answer() {
    let db = TestDatabase::new().await;
    let app = Application::build(config_for(&db.url()))
        .await
        .expect("app builds");
    let address = format!("http://{}", app.address());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let pool = db.pool.clone();
    let app = TestApp {
        address,
        client: reqwest::Client::new(),
        stop: None,
        _db: db,
    };
    let token = admin_login(&app).await["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();
    // appends wait behind this lock, so the command is still running when its client gives up
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("lock table events in exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let client = tokio::spawn(
        app.client
            .post(format!("{}/api/v1/tasks", app.address))
            .bearer_auth(token)
            .header("idempotency-key", "at-shutdown")
            .json(&json!({"name": "Opened while stopping"}))
            .send(),
    );
    eventually(
        "the command to hold its key and wait at its append",
        async || {
            sqlx::query_scalar(
                "select exists (select from idempotency_keys where key = 'at-shutdown') \
                    and exists (select from pg_stat_activity \
                                where datname = current_database() and wait_event_type = 'Lock')",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        },
    )
    .await;
    client.abort();
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !running.is_finished(),
        "stopped with a command still running"
    );
    blocker.rollback().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops once the command is done")
        .unwrap()
        .unwrap();
    let stored: Option<i16> = sqlx::query_scalar(
        "select response_status from idempotency_keys where key = 'at-shutdown'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, Some(201), "the answer is stored for the retry");
    let opened: i64 =
        sqlx::query_scalar("select count(*) from events where event_type = 'TaskOpened'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(opened, 1);
}

/// The bootstrap admin's login answer.
async fn admin_login(app: &TestApp) -> Value {
    login(app, "admin@example.com", "a long enough password").await
}

/// A login's answer.
async fn login(app: &TestApp, email: &str, password: &str) -> Value {
    app.client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Opens an ad-hoc task as the bootstrap admin; its id.
async fn open_task(app: &TestApp, body: Value) -> String {
    let token = admin_login(app).await["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();
    let opened = app
        .client
        .post(format!("{}/api/v1/tasks", app.address))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    let task: Value = opened.json().await.unwrap();
    task["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_bootstrap_admin_logs_in_publishes_and_starts_an_instance_over_http() {
    let app = spawn_app().await;
    let url = |path: &str| format!("{}{path}", app.address);
    let login = admin_login(&app).await;
    let token = login["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();
    assert_eq!(login["token_type"], "Bearer");

    let published = app
        .client
        .post(url("/api/v1/workflow-definitions"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"key": "one-task", "name": "One task", "start": "work",
            "steps": {"work": {"type": "task", "name": "Work", "candidate_groups": ["clerks"], "next": "done"},
                      "done": {"type": "end", "outcome": "done"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);

    let started = app
        .client
        .post(url("/api/v1/workflow-instances"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"definition_key": "one-task", "variables": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    assert!(started.headers().contains_key("x-consistency-token"));
    assert!(started.headers().contains_key("etag"));

    let anonymous = app
        .client
        .post(url("/api/v1/workflow-instances"))
        .json(&serde_json::json!({"definition_key": "one-task"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Users are created and changed by the command API and read back from the query API, each
/// read waiting for the identity projection behind it.
#[tokio::test]
async fn an_admin_reads_back_the_user_they_created_and_its_changes_on_serve() {
    let app = spawn_app().await;
    let url = |path: &str| format!("{}{path}", app.address);
    let admin = admin_login(&app).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = app
        .client
        .post(url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"email": "Ann@Example.com", "display_name": "Ann", "password": "a long password for ann",
            "roles": ["member"], "groups": ["clerks"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let token = created.headers()["x-consistency-token"].clone();
    let ann: Value = created.json().await.unwrap();
    let ann_path = url(&format!("/api/v1/users/{}", ann["id"].as_str().unwrap()));
    let read = |path: String, bearer: String, token: reqwest::header::HeaderValue| {
        let client = app.client.clone();
        async move {
            let response = client
                .get(path)
                .bearer_auth(bearer)
                .header("x-consistency-token", token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let user = read(ann_path.clone(), admin.clone(), token).await;
    assert_eq!(user["email"], "Ann@Example.com");
    assert_eq!(user["roles"], json!(["member"]));
    assert_eq!(user["version"], ann["version"]);

    let changed = app
        .client
        .put(format!("{ann_path}/roles"))
        .bearer_auth(&admin)
        .json(&json!({"roles": ["member", "operator"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let token = changed.headers()["x-consistency-token"].clone();
    let listed = read(
        url("/api/v1/users?role=operator"),
        admin.clone(),
        token.clone(),
    )
    .await;
    assert_eq!(listed["items"][0]["id"], ann["id"]);

    let ann_login = login(&app, "ann@example.com", "a long password for ann").await;
    let me = read(
        url("/api/v1/users/me"),
        ann_login["access_token"].as_str().unwrap().to_owned(),
        token,
    )
    .await;
    assert_eq!(me["id"], ann["id"]);
    // in the roles' own order (admin, designer, operator, member, auditor)
    assert_eq!(me["roles"], json!(["operator", "member"]));
}

/// `docs/openapi.json` is the document the app serves; `UPDATE_OPENAPI=1` rewrites it.
#[tokio::test]
async fn the_committed_openapi_document_is_the_one_served() {
    let app = spawn_app().await;
    let served: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&served).unwrap() + "\n").unwrap();
    }
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
            .unwrap_or_default();
    assert!(
        committed == served,
        "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo nextest run -p workledger openapi`"
    );
}

#[tokio::test]
async fn serve_publishes_a_command_s_events_to_the_aggregate_type_s_topic() {
    let broker = Broker::start();
    let prefix = format!("serve{}.", Uuid::new_v4().simple());
    let app = spawn_app_with(|config| {
        config.kafka_brokers = Some(broker.address());
        config.kafka_topic_prefix = prefix.clone();
        config.kafka_partitions = 2;
        config.kafka_replication = 1;
    })
    .await;
    let task_id = open_task(&app, json!({"name": "Send the invoice"})).await;

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

    let status = Projections::status(&app._db.pool).await.unwrap();
    let publisher = status.iter().find(|s| s.name == KAFKA_PUBLISHER).unwrap();
    assert!(
        publisher.active && publisher.error.is_none(),
        "{publisher:?}"
    );
}

const WEBHOOK_SECRET: &str = "the serve test's webhook secret, 32+ bytes";

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
    let app = spawn_app_with(|config| {
        config.webhook_url = Some(hook.into());
        config.webhook_secret = Some(WEBHOOK_SECRET.to_owned().into());
    })
    .await;
    let task_id = open_task(
        &app,
        json!({"name": "Check the delivery note", "candidate_groups": ["warehouse"]}),
    )
    .await;

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
        signature(WEBHOOK_SECRET.as_bytes(), timestamp, &body)
    );
    let delivery: Delivery = serde_json::from_slice(&body).unwrap();
    let notification = &delivery.notifications[0];
    assert_eq!(notification.kind, "task.offered");
    assert_eq!(notification.subject.id, task_id);
    assert_eq!(notification.recipients.groups, ["warehouse"]);
    assert_eq!(notification.tenant_id.as_deref(), Some("default"));
}
