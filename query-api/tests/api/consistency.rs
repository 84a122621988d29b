//! `X-Consistency-Token`: reading your own writes, bounded.

use std::time::{Duration, Instant};

use projections::Projections;
use query_api::QuerySettings;
use reqwest::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test]
async fn a_request_with_a_consistency_token_waits_for_the_projection_then_answers() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let po = app.start(json!(5000), "PO-1", 0).await;
    let token = app.operator_token();
    let path = format!("/api/v1/workflow-instances/{}", po.id);
    // without the token the instance is not there yet: nothing projects
    app.problem(&path, &token, reqwest::StatusCode::NOT_FOUND)
        .await;

    let request = app
        .client
        .get(app.url(&path))
        .bearer_auth(&token)
        .header("x-consistency-token", po.position.to_string())
        .send();
    let started = Instant::now();
    let stop = CancellationToken::new();
    let pool = app.pool().clone();
    let projectors = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Projections::all().run(pool, stop).await;
        })
    };
    let response = request.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
    let instance: serde_json::Value = response.json().await.unwrap();
    assert_eq!(instance["status"], "running");
    // the task opened by the same command's cascade is covered by the same token
    let task = app
        .client
        .get(app.url(&format!("/api/v1/tasks/{}", po.child("review"))))
        .bearer_auth(&token)
        .header("x-consistency-token", po.position.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(task.status(), StatusCode::OK);
    stop.cancel();
    projectors.await.unwrap();
}

#[tokio::test]
async fn a_consistency_token_not_reached_in_time_is_a_503_problem_with_retry_after() {
    let app = TestApp::with_settings(QuerySettings {
        consistency_wait: Duration::from_millis(200),
        ..QuerySettings::default()
    })
    .await;
    app.publish().await;
    let po = app.start(json!(5000), "PO-1", 0).await;
    let started = Instant::now();
    let response = app
        .client
        .get(app.url("/api/v1/tasks"))
        .bearer_auth(app.operator_token())
        .header("x-consistency-token", po.position.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "consistency_timeout");
    assert!(problem["detail"].as_str().unwrap().contains("tasks"));
}

#[tokio::test]
async fn a_malformed_consistency_token_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/v1/tasks"))
        .bearer_auth(app.operator_token())
        .header("x-consistency-token", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_consistency_token");
}
