//! Incidents: a decision that cannot be evaluated parks its path until an operator sets the
//! variables it needs and retries it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, problem, spawn};

/// check (decision on `amount`) -> big (task) | small (task) -> done
fn routed() -> Value {
    json!({"key": "routed", "name": "Routed", "start": "check", "steps": {
        "check": {"type": "decision", "rules": [{"when": "amount > 100", "next": "big"}],
                  "default": "small"},
        "big": {"type": "task", "name": "Big one", "candidate_groups": ["clerks"], "next": "done"},
        "small": {"type": "task", "name": "Small one", "candidate_groups": ["clerks"], "next": "done"},
        "done": {"type": "end", "outcome": "ok"}}})
}

fn retry_path(instance: Uuid, step: &str) -> String {
    format!("/api/v1/workflow-instances/{instance}/incidents/{step}/retry")
}

async fn event_types(app: &TestApp, instance: Uuid) -> Vec<String> {
    app.events("workflow_instance", &instance.to_string())
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_operator_sets_the_missing_variable_and_the_instance_goes_on_before_the_answer() {
    let app = spawn().await;
    app.publish(&routed()).await;
    let instance = app.start("routed", json!({"amount": "lots"})).await;
    assert_eq!(
        event_types(&app, instance).await,
        ["InstanceStarted", "IncidentRaised"]
    );
    let raised = &app.events("workflow_instance", &instance.to_string()).await[1];
    assert_eq!(raised["payload"]["step_id"], "check");
    assert!(
        raised["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("amount > 100")
    );

    let operator = app.user(&["operator"], &[]).await;
    let retried = app
        .post(
            &retry_path(instance, "check"),
            &operator.token,
            json!({"variables": {"amount": 500}}),
        )
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(retried.headers()["etag"], "\"5\"");
    assert_eq!(
        event_types(&app, instance).await,
        [
            "InstanceStarted",
            "IncidentRaised",
            "IncidentRetried",
            "DecisionTaken",
            "TaskStepActivated"
        ]
    );
    let events = app.events("workflow_instance", &instance.to_string()).await;
    assert_eq!(events[2]["payload"]["variables"], json!({"amount": 500}));
    assert_eq!(
        events[2]["payload"]["retried_by"],
        format!("user:{}", operator.id)
    );
    assert_eq!(events[4]["payload"]["step_id"], "big");
    // the task of the step it went on to exists already
    let task = domain::ids::step_child_id(instance, "big", 1);
    assert_eq!(app.events("task", &task.to_string()).await.len(), 1);
}

#[tokio::test]
async fn a_retry_needs_an_operator_an_incident_at_the_step_and_the_callers_tenant() {
    let app = spawn().await;
    app.publish(&routed()).await;
    let instance = app.start("routed", json!({})).await;
    let member = app.user(&["member"], &["clerks"]).await;
    let forbidden = problem(
        app.post(&retry_path(instance, "check"), &member.token, Value::Null)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(forbidden["code"], "forbidden");
    let none = problem(
        app.post(&retry_path(instance, "big"), &app.admin.token, Value::Null)
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(none["code"], "no_incident");

    // retried with nothing set, the rule still cannot be evaluated: raised again
    let again = app
        .post(
            &retry_path(instance, "check"),
            &app.admin.token,
            Value::Null,
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        event_types(&app, instance).await,
        [
            "InstanceStarted",
            "IncidentRaised",
            "IncidentRetried",
            "IncidentRaised"
        ]
    );

    let boss = app.other_tenant_admin().await;
    let hidden = problem(
        app.post(&retry_path(instance, "check"), &boss.token, Value::Null)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(hidden["code"], "instance_not_found");
    let invalid = problem(
        app.post(
            &retry_path(instance, "check"),
            &app.admin.token,
            json!({"variables": [1, 2]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(invalid["code"], "validation_failed");
    assert_eq!(crate::helpers::fields(&invalid), ["variables"]);
    assert_eq!(event_types(&app, instance).await.len(), 4);
}
