use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, User, fields, problem, spawn};

/// A workflow whose only step is an approval by `approvers` (users) under `policy`.
async fn approval_by(app: &TestApp, approvers: &[&User], policy: &str) -> (Uuid, Uuid) {
    let users: Vec<_> = approvers.iter().map(|u| u.id).collect();
    app.publish(
        &json!({"key": "sign-off", "name": "Sign-off", "start": "approve", "steps": {
        "approve": {"type": "approval", "name": "Sign off", "approvers": {"users": users},
                    "policy": policy, "approved": "yes", "rejected": "no"},
        "yes": {"type": "end", "outcome": "approved"},
        "no": {"type": "end", "outcome": "rejected"}}}),
    )
    .await;
    let instance = app.start("sign-off", json!({})).await;
    (instance, domain::ids::step_child_id(instance, "approve", 1))
}

#[tokio::test]
async fn a_member_cannot_decide_an_approval_offered_to_someone_else() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let bob = app.user(&["member"], &[]).await;
    let (instance, approval) = approval_by(&app, &[&ann], "any").await;
    let path = format!("/api/v1/approvals/{approval}/decisions");
    let refused = problem(
        app.post(&path, &bob.token, json!({"decision": "approve"}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(refused["code"], "not_an_approver");
    let invalid = problem(
        app.post(&path, &ann.token, json!({"decision": "maybe"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&invalid), ["decision"]);

    let decided = app
        .post(
            &path,
            &ann.token,
            json!({"decision": "reject", "comment": "too expensive"}),
        )
        .await;
    assert_eq!(decided.status(), StatusCode::OK);
    // the comment is stored sealed for its author, also when appended with the cascade
    let approval_events = app.events("approval", &approval.to_string()).await;
    let commented = approval_events
        .iter()
        .find(|e| e["type"] == "ApprovalCommented")
        .unwrap();
    assert_eq!(commented["payload"]["author"], format!("user:{}", ann.id));
    assert_eq!(
        app.opened(&commented["payload"]["text"]).await.as_deref(),
        Some("too expensive")
    );
    // the workflow moved on before the answer
    let events = app.events("workflow_instance", &instance.to_string()).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "InstanceCompleted");
    assert_eq!(last["payload"]["outcome"], "rejected");
    let twice = problem(
        app.post(&path, &ann.token, json!({"decision": "approve"}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(twice["code"], "approval_closed");
}

#[tokio::test]
async fn an_approver_delegates_their_vote_to_an_active_user() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let carl = app.user(&["member"], &[]).await;
    let (_, approval) = approval_by(&app, &[&ann], "any").await;
    let path = format!("/api/v1/approvals/{approval}/delegate");
    let unknown = problem(
        app.post(&path, &ann.token, json!({"user_id": Uuid::now_v7()}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(unknown["errors"][0]["code"], "unknown_user");
    let auditor = app.user(&["auditor"], &[]).await;
    let refused = problem(
        app.post(&path, &ann.token, json!({"user_id": auditor.id}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(refused["errors"][0]["code"], "not_a_member");
    let delegated = app
        .post(&path, &ann.token, json!({"user_id": carl.id}))
        .await;
    assert_eq!(delegated.status(), StatusCode::OK);
    let decisions = format!("/api/v1/approvals/{approval}/decisions");
    problem(
        app.post(&decisions, &ann.token, json!({"decision": "approve"}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let decided = app
        .post(&decisions, &carl.token, json!({"decision": "approve"}))
        .await;
    assert_eq!(decided.status(), StatusCode::OK);
    let events = app.events("approval", &approval.to_string()).await;
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "ApprovalOpened",
            "ApprovalDelegated",
            "ApprovalDecided",
            "ApprovalClosed"
        ]
    );
    assert_eq!(events[2]["payload"]["decided_by"], json!(carl.id));
}

#[tokio::test]
async fn approvals_offered_to_a_group_go_to_its_members_from_the_identity_read_model() {
    let app = spawn().await;
    let m1 = app.user(&["member"], &["managers"]).await;
    let m2 = app.user(&["member"], &["managers"]).await;
    let _other = app.user(&["member"], &["clerks"]).await;
    app.publish(
        &json!({"key": "group-ok", "name": "Group", "start": "approve", "steps": {
        "approve": {"type": "approval", "name": "Managers", "approvers": {"groups": ["managers"]},
                    "policy": "all", "approved": "yes", "rejected": "no"},
        "yes": {"type": "end", "outcome": "approved"},
        "no": {"type": "end", "outcome": "rejected"}}}),
    )
    .await;
    let instance = app.start("group-ok", json!({})).await;
    let approval = domain::ids::step_child_id(instance, "approve", 1);
    let opened = &app.events("approval", &approval.to_string()).await[0];
    let mut expected = vec![m1.id, m2.id];
    expected.sort();
    assert_eq!(opened["payload"]["approvers"], json!(expected));
    let _: Value = opened.clone();
}
