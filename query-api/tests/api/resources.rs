//! Single resources: shapes as DESIGN §4 names them, ETags, and tenant isolation.

use domain::Role;
use event_schemas::ApprovalDecision;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// The fields DESIGN §4 promises, present on `value`.
fn assert_fields(value: &serde_json::Value, fields: &[&str]) {
    for field in fields {
        assert!(value.get(field).is_some(), "{field} missing in {value}");
    }
}

#[tokio::test]
async fn a_task_an_approval_and_an_instance_answer_in_the_designed_shape_with_their_version_as_etag()
 {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut po = app.start(json!(5000), "PO-1", 0).await;
    po.work(
        "review",
        &member(CLERK, &["clerks"]),
        json!({"checked": true}),
        5,
    )
    .await;
    app.project().await;
    let operator = app.operator_token();

    let task = app
        .ok(&format!("/api/v1/tasks/{}", po.child("review")), &operator)
        .await;
    assert_fields(
        &task,
        &[
            "id",
            "workflow_instance_id",
            "step_id",
            "name",
            "status",
            "assignee",
            "candidate_users",
            "candidate_groups",
            "due_at",
            "overdue",
            "output",
            "version",
        ],
    );
    assert_eq!(task["status"], "completed");
    assert_eq!(task["output"], json!({"checked": true}));
    assert_eq!(task["workflow_instance_id"], po.id.to_string());
    assert_eq!(task["due_at"], "2026-03-04T09:00:00Z");
    let response = app
        .get(&format!("/api/v1/tasks/{}", po.child("review")), &operator)
        .await;
    assert_eq!(response.headers()["etag"], "\"3\"");
    let not_modified = app
        .client
        .get(app.url(&format!("/api/v1/tasks/{}", po.child("review"))))
        .bearer_auth(&operator)
        .header("if-none-match", "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);

    let approval = app
        .ok(
            &format!("/api/v1/approvals/{}", po.child("manager")),
            &operator,
        )
        .await;
    assert_fields(
        &approval,
        &[
            "id",
            "workflow_instance_id",
            "step_id",
            "name",
            "status",
            "policy",
            "approvers",
            "decisions",
            "due_at",
            "overdue",
            "version",
        ],
    );
    assert_eq!(approval["status"], "pending");
    assert_eq!(approval["policy"], "any");
    assert_eq!(approval["approvers"].as_array().unwrap().len(), 2);

    let instance = app
        .ok(&format!("/api/v1/workflow-instances/{}", po.id), &operator)
        .await;
    assert_fields(
        &instance,
        &[
            "id",
            "definition_key",
            "definition_version",
            "business_key",
            "status",
            "outcome",
            "variables",
            "open_steps",
            "started_at",
            "ended_at",
            "version",
            "timeline",
        ],
    );
    assert_eq!(instance["status"], "running");
    assert_eq!(
        instance["variables"],
        json!({"amount": 5000, "checked": true})
    );
    assert_eq!(instance["open_steps"][0]["step_id"], "manager");
    let timeline = instance["timeline"].as_array().unwrap();
    assert_eq!(timeline[0]["event_type"], "InstanceStarted");
    assert_eq!(timeline.len() as i64, instance["version"].as_i64().unwrap());
    let response = app
        .get(&format!("/api/v1/workflow-instances/{}", po.id), &operator)
        .await;
    assert_eq!(
        response.headers()["etag"],
        format!("\"{}\"", instance["version"])
    );

    po.vote("manager", MANAGERS[0], ApprovalDecision::Approve, 6)
        .await;
    app.project().await;
    let approval = app
        .ok(
            &format!("/api/v1/approvals/{}", po.child("manager")),
            &operator,
        )
        .await;
    assert_eq!(approval["status"], "approved");
    assert_eq!(
        approval["decisions"][0]["decided_by"],
        user(MANAGERS[0]).to_string()
    );
    assert_eq!(approval["decisions"][0]["decision"], "approve");
}

#[tokio::test]
async fn definitions_are_listed_by_key_with_every_version() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let renamed = domain::examples::purchase_order_json(user(FINANCE))
        .replace("\"Purchase order\"", "\"Purchase order (2)\"");
    app.publish_definition(domain::definition::Definition::from_json(&renamed).unwrap())
        .await;
    app.project().await;
    let token = app.member_token(CLERK, &["clerks"]);
    let list = app.ok("/api/v1/workflow-definitions", &token).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["key"], "purchase-order");
    assert_eq!(list["items"][0]["latest_version"], 2);
    assert_eq!(list["items"][0]["name"], "Purchase order (2)");
    assert_eq!(list["next_cursor"], serde_json::Value::Null);

    let definition = app
        .ok("/api/v1/workflow-definitions/purchase-order", &token)
        .await;
    assert_eq!(definition["latest_version"], 2);
    assert_eq!(definition["definition"]["start"], "review");
    let versions: Vec<i64> = definition["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);
    let response = app
        .get(
            "/api/v1/workflow-definitions/purchase-order/versions/1",
            &token,
        )
        .await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    let version: serde_json::Value = response.json().await.unwrap();
    assert_eq!(version["version"], 1);
    app.problem(
        "/api/v1/workflow-definitions/purchase-order/versions/3",
        &token,
        StatusCode::NOT_FOUND,
    )
    .await;
    let problem = app
        .problem(
            "/api/v1/workflow-definitions/purchase-order/versions/latest",
            &token,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert_eq!(problem["errors"][0]["field"], "n");
    app.problem(
        "/api/v1/workflow-definitions/nothing-here",
        &token,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn another_tenants_resources_are_not_found_and_its_lists_are_empty() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut po = app.start(json!(5000), "PO-1", 0).await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}), 5)
        .await;
    app.project().await;
    // an admin of another tenant, in the same groups, with the same user id as an approver
    let other = app.token(
        "globex",
        user(MANAGERS[0]),
        &[Role::Admin],
        &["clerks", "managers"],
    );
    for path in [
        format!("/api/v1/workflow-instances/{}", po.id),
        format!("/api/v1/tasks/{}", po.child("review")),
        format!("/api/v1/approvals/{}", po.child("manager")),
        "/api/v1/workflow-definitions/purchase-order".to_owned(),
    ] {
        let problem = app.problem(&path, &other, StatusCode::NOT_FOUND).await;
        assert_eq!(problem["code"], "not_found");
    }
    for path in [
        "/api/v1/workflow-instances",
        "/api/v1/tasks",
        "/api/v1/tasks?candidate_group=clerks",
        "/api/v1/approvals?approver=me",
        "/api/v1/workflow-definitions",
        "/api/v1/audit",
    ] {
        let page = app.ok(path, &other).await;
        assert_eq!(page["items"], json!([]), "{path}");
    }
    let report = app
        .ok(
            "/api/v1/reports/workflows?from=2026-03-01&to=2026-03-10",
            &other,
        )
        .await;
    assert_eq!(report["items"], json!([]));
    let export = app
        .get("/api/v1/audit/export", &other)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(export, "");
    // and the owner sees them
    let operator = app.operator_token();
    assert_eq!(
        app.ok("/api/v1/workflow-instances", &operator).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_a_401_problem() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/v1/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let problem = app
        .problem("/api/v1/tasks", "not-a-token", StatusCode::UNAUTHORIZED)
        .await;
    assert_eq!(problem["code"], "unauthorized");
}

#[tokio::test]
async fn a_token_whose_session_ended_elsewhere_is_refused() {
    let app = TestApp::spawn().await;
    let token = app.operator_token();
    let claims = app.keys.verify(&token).unwrap();
    sqlx::query("insert into auth_sessions (session_id, user_id, tenant_id) values ($1, $2, $3)")
        .bind(claims.sid)
        .bind(claims.sub)
        .bind(TENANT)
        .execute(app.pool())
        .await
        .unwrap();
    assert_eq!(
        app.get("/api/v1/tasks", &token).await.status(),
        StatusCode::OK
    );
    // ended by another process (a command API instance signing the user out)
    sqlx::query("update auth_sessions set revoked_at = now(), revoked_reason = 'logout' where session_id = $1")
        .bind(claims.sid)
        .execute(app.pool())
        .await
        .unwrap();
    refused_soon(&app, &token, "session_ended", "sign in again").await;
    // the user's other sessions are not affected
    assert_eq!(
        app.get("/api/v1/tasks", &app.operator_token())
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_issued_before_its_users_roles_changed_elsewhere_is_refused() {
    let app = TestApp::spawn().await;
    let token = app.operator_token();
    let mut claims = app.keys.verify(&token).unwrap();
    sqlx::query(
        "insert into identity_users (user_id, tenant_id, email, email_key, display_name, \
         roles, version, created_at, updated_at) \
         values ($1, $2, 'ann@example.com', 'ann@example.com', 'Ann', '{operator}', 1, now(), now())",
    )
    .bind(claims.sub)
    .bind(TENANT)
    .execute(app.pool())
    .await
    .unwrap();
    assert_eq!(
        app.get("/api/v1/tasks", &token).await.status(),
        StatusCode::OK
    );
    // changed by another process (the identity projector of a command API instance)
    sqlx::query(
        "update identity_users set roles = '{member}', version = 2, access_version = 2, \
         access_changed_at = now() where user_id = $1",
    )
    .bind(claims.sub)
    .execute(app.pool())
    .await
    .unwrap();
    refused_soon(&app, &token, "access_changed", "refresh it").await;
    // a token issued after the change is accepted
    claims.access_version = 2;
    claims.roles = vec![Role::Member];
    let renewed = app.keys.issue(&claims).unwrap();
    assert_eq!(
        app.get("/api/v1/tasks", &renewed).await.status(),
        StatusCode::OK
    );
}

/// Polls with `token` for up to 5 s until it is refused: a 401 problem with `code`, whose detail
/// gives `advice`.
async fn refused_soon(app: &TestApp, token: &str, code: &str, advice: &str) {
    for _ in 0..100 {
        if app.get("/api/v1/tasks", token).await.status() != StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let problem = app
        .problem("/api/v1/tasks", token, StatusCode::UNAUTHORIZED)
        .await;
    assert_eq!(problem["code"], code, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(advice), "{problem}");
}

#[tokio::test]
async fn every_query_route_is_documented_with_bearer_security_and_problems() {
    let keys = api_common::TokenKeys::from_secret(&[1u8; 32]).unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://localhost/unused")
        .unwrap();
    let state = query_api::QueryState::new(pool, keys, query_api::QuerySettings::default());
    let (_, doc) = query_api::router(state).split_for_parts();
    let doc = serde_json::to_value(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/workflow-definitions",
        "/api/v1/workflow-definitions/{key}",
        "/api/v1/workflow-definitions/{key}/versions/{n}",
        "/api/v1/workflow-instances",
        "/api/v1/workflow-instances/{id}",
        "/api/v1/tasks",
        "/api/v1/tasks/{id}",
        "/api/v1/tasks/{id}/comments",
        "/api/v1/approvals",
        "/api/v1/approvals/{id}",
        "/api/v1/approvals/{id}/comments",
        "/api/v1/reports/workflows",
        "/api/v1/reports/tasks",
        "/api/v1/audit",
        "/api/v1/audit/export",
    ] {
        let get = &paths[path]["get"];
        assert!(get.is_object(), "{path} is documented");
        assert_eq!(get["security"], json!([{"bearer": []}]), "{path}");
        assert!(get["responses"]["401"].is_object(), "{path} documents 401");
    }
    let tasks = &paths["/api/v1/tasks"]["get"]["parameters"];
    let names: Vec<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "assignee",
        "candidate_group",
        "status",
        "overdue",
        "limit",
        "cursor",
        "X-Consistency-Token",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
}
