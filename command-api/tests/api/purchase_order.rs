//! DESIGN §3's purchase order, end to end over HTTP.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, User, spawn};

async fn ok(app: &TestApp, path: String, user: &User, body: Value) {
    let response = app.post(&path, &user.token, body).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{path}: {:?}",
        response.text().await
    );
}

#[tokio::test]
async fn a_purchase_order_runs_from_publication_to_completion_over_http() {
    let app = spawn().await;
    let designer = app.user(&["designer"], &[]).await;
    let operator = app.user(&["operator"], &[]).await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let manager = app.user(&["member"], &["managers"]).await;
    let lawyer = app.user(&["member"], &["legal"]).await;
    let finance = app.user(&["member"], &[]).await;

    let definition: Value =
        serde_json::from_str(&domain::examples::purchase_order_json(finance.id)).unwrap();
    let published = app
        .post("/api/v1/workflow-definitions", &designer.token, definition)
        .await;
    assert_eq!(published.status(), StatusCode::CREATED);
    let started = app
        .post(
            "/api/v1/workflow-instances",
            &operator.token,
            json!({"definition_key": "purchase-order", "business_key": "PO-1",
                   "variables": {"amount": 5000}}),
        )
        .await;
    assert_eq!(started.status(), StatusCode::CREATED);
    let started: Value = started.json().await.unwrap();
    let instance: Uuid = started["id"].as_str().unwrap().parse().unwrap();
    let step = |id: &str| domain::ids::step_child_id(instance, id, 1);

    let review = step("review");
    ok(
        &app,
        format!("/api/v1/tasks/{review}/claim"),
        &clerk,
        Value::Null,
    )
    .await;
    ok(
        &app,
        format!("/api/v1/tasks/{review}/complete"),
        &clerk,
        json!({"output": {"checked": true}}),
    )
    .await;
    // amount <= 10000: the manager approves
    let approval = step("manager");
    ok(
        &app,
        format!("/api/v1/approvals/{approval}/decisions"),
        &manager,
        json!({"decision": "approve"}),
    )
    .await;
    let legal = step("legal");
    ok(
        &app,
        format!("/api/v1/tasks/{legal}/claim"),
        &lawyer,
        Value::Null,
    )
    .await;
    ok(
        &app,
        format!("/api/v1/tasks/{legal}/complete"),
        &lawyer,
        Value::Null,
    )
    .await;
    ok(
        &app,
        format!("/api/v1/tasks/{}/complete", step("finance")),
        &finance,
        Value::Null,
    )
    .await;
    let archive = step("archive");
    ok(
        &app,
        format!("/api/v1/tasks/{archive}/claim"),
        &clerk,
        Value::Null,
    )
    .await;
    ok(
        &app,
        format!("/api/v1/tasks/{archive}/complete"),
        &clerk,
        Value::Null,
    )
    .await;

    let events = app.events("workflow_instance", &instance.to_string()).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "InstanceCompleted");
    assert_eq!(last["payload"]["outcome"], "approved");
    assert_eq!(last["payload"]["end_step_id"], "done");
    // one correlation id ties each request's cascade together
    assert!(
        events
            .iter()
            .all(|e| e["metadata"]["tenant_id"] == "default")
    );
    let (state, _) = app.api.runtime().load_instance(instance).await.unwrap();
    assert_eq!(state.variables()["checked"], json!(true));
}
