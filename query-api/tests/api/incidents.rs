//! Instances with an incident (a decision that could not be evaluated): shown among their open
//! steps and found with `?incident=true`.

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn an_operator_finds_the_instances_waiting_on_an_incident_and_sees_it_go_once_retried() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let clerk = member(CLERK, &["clerks"]);
    let mut stuck = app.start(json!("a lot"), "PO-STUCK", 0).await;
    stuck.work("review", &clerk, json!({}), 1).await;
    let mut fine = app.start(json!(50), "PO-FINE", 2).await;
    fine.work("review", &clerk, json!({}), 3).await;
    app.project().await;
    let operator = app.operator_token();

    let detail = app
        .ok(
            &format!("/api/v1/workflow-instances/{}", stuck.id),
            &operator,
        )
        .await;
    assert_eq!(detail["status"], "running");
    let open = detail["open_steps"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{detail}");
    assert_eq!(open[0]["kind"], "incident");
    assert_eq!(open[0]["step_id"], "route");
    assert!(
        open[0]["reason"]
            .as_str()
            .unwrap()
            .contains("amount > 10000"),
        "{detail}"
    );
    let timeline: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(timeline.last(), Some(&"IncidentRaised"));

    let business_keys = |page: Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["business_key"].as_str().unwrap().to_owned())
            .collect()
    };
    let with = app
        .ok("/api/v1/workflow-instances?incident=true", &operator)
        .await;
    assert_eq!(business_keys(with), ["PO-STUCK"]);
    let without = app
        .ok("/api/v1/workflow-instances?incident=false", &operator)
        .await;
    assert_eq!(business_keys(without), ["PO-FINE"]);
    app.problem(
        "/api/v1/workflow-instances?incident=maybe",
        &operator,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    // the amount corrected and the decision retried: the incident is gone, the order goes on
    app.rt
        .retry_incident(
            &ctx(crate::support::operator(), t0() + TimeDelta::minutes(5)),
            stuck.id,
            "route".into(),
            vars(json!({"amount": 500})),
            None,
        )
        .await
        .unwrap();
    app.project().await;
    let detail = app
        .ok(
            &format!("/api/v1/workflow-instances/{}", stuck.id),
            &operator,
        )
        .await;
    assert_eq!(detail["variables"]["amount"], 500);
    let kinds: Vec<&str> = detail["open_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["approval"]);
    let with = app
        .ok("/api/v1/workflow-instances?incident=true", &operator)
        .await;
    assert!(business_keys(with).is_empty());
}
