use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{fields, problem, spawn};

#[tokio::test]
async fn an_operator_opens_an_ad_hoc_task_that_a_candidate_claims_comments_and_completes() {
    let app = spawn().await;
    let operator = app.user(&["operator"], &[]).await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let response = app
        .post(
            "/api/v1/tasks",
            &operator.token,
            json!({"name": "Check the invoice", "candidate_groups": ["clerks"], "due": "P2D",
                   "form": [{"id": "ok", "type": "boolean", "required": true}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();

    let claim = app
        .post(
            &format!("/api/v1/tasks/{id}/claim"),
            &clerk.token,
            Value::Null,
        )
        .await;
    assert_eq!(claim.status(), StatusCode::OK);
    assert_eq!(claim.headers()["etag"], "\"2\"");
    let comment = app
        .post(
            &format!("/api/v1/tasks/{id}/comments"),
            &clerk.token,
            json!({"text": "Looks fine"}),
        )
        .await;
    assert_eq!(comment.status(), StatusCode::OK);
    let incomplete = problem(
        app.post(
            &format!("/api/v1/tasks/{id}/complete"),
            &clerk.token,
            json!({"output": {"ok": "yes"}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&incomplete), ["output.ok"]);
    let done = app
        .post(
            &format!("/api/v1/tasks/{id}/complete"),
            &clerk.token,
            json!({"output": {"ok": true}}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let closed = problem(
        app.post(
            &format!("/api/v1/tasks/{id}/complete"),
            &clerk.token,
            json!({"output": {"ok": true}}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(closed["code"], "task_closed");

    let events = app.events("task", &id).await;
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "TaskOpened",
            "TaskClaimed",
            "TaskCommented",
            "TaskCompleted"
        ]
    );
    assert!(events[0]["payload"]["due_at"].is_string());
    assert_eq!(
        events[3]["payload"]["completed_by"],
        format!("user:{}", clerk.id)
    );
}

#[tokio::test]
async fn only_candidates_claim_only_operators_open_and_assign() {
    let app = spawn().await;
    let outsider = app.user(&["member"], &["legal"]).await;
    let id = app.task(json!({"candidate_groups": ["clerks"]})).await;
    let refused = problem(
        app.post(
            &format!("/api/v1/tasks/{id}/claim"),
            &outsider.token,
            Value::Null,
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(refused["code"], "not_a_candidate");
    let no_open = app
        .post("/api/v1/tasks", &outsider.token, json!({"name": "mine"}))
        .await;
    problem(no_open, StatusCode::FORBIDDEN).await;
    let no_assign = app
        .post(
            &format!("/api/v1/tasks/{id}/assign"),
            &outsider.token,
            json!({"user_id": outsider.id}),
        )
        .await;
    problem(no_assign, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn assigning_delegating_and_releasing_name_active_users_of_the_tenant() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let bob = app.user(&["member"], &[]).await;
    let id = app.task(json!({"candidate_groups": ["clerks"]})).await;
    let unknown = problem(
        app.post(
            &format!("/api/v1/tasks/{id}/assign"),
            &app.admin.token,
            json!({"user_id": Uuid::now_v7()}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(unknown["errors"][0]["code"], "unknown_user");
    assert_eq!(fields(&unknown), ["user_id"]);
    // a designer could not work on it: the task would be stuck with them
    let designer = app.user(&["designer"], &[]).await;
    for path in ["assign", "delegate"] {
        let refused = problem(
            app.post(
                &format!("/api/v1/tasks/{id}/{path}"),
                &app.admin.token,
                json!({"user_id": designer.id}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(refused["errors"][0]["code"], "not_a_member", "{path}");
        assert_eq!(fields(&refused), ["user_id"]);
    }
    let created = problem(
        app.post(
            "/api/v1/tasks",
            &app.admin.token,
            json!({"name": "Check", "candidate_users": [ann.id, designer.id]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&created), ["candidate_users[1]"]);

    let assigned = app
        .post(
            &format!("/api/v1/tasks/{id}/assign"),
            &app.admin.token,
            json!({"user_id": ann.id}),
        )
        .await;
    assert_eq!(assigned.status(), StatusCode::OK);
    let not_hers = problem(
        app.post(
            &format!("/api/v1/tasks/{id}/delegate"),
            &bob.token,
            json!({"user_id": bob.id}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(not_hers["code"], "not_assignee");
    let delegated = app
        .post(
            &format!("/api/v1/tasks/{id}/delegate"),
            &ann.token,
            json!({"user_id": bob.id}),
        )
        .await;
    assert_eq!(delegated.status(), StatusCode::OK);
    let released = app
        .post(
            &format!("/api/v1/tasks/{id}/release"),
            &bob.token,
            Value::Null,
        )
        .await;
    assert_eq!(released.status(), StatusCode::OK);
    let not_assigned = problem(
        app.post(
            &format!("/api/v1/tasks/{id}/release"),
            &bob.token,
            Value::Null,
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(not_assigned["code"], "task_not_assigned");
    let types: Vec<_> = app
        .events("task", &id.to_string())
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "TaskOpened",
            "TaskAssigned",
            "TaskDelegated",
            "TaskReleased"
        ]
    );

    let bad_assignee = problem(
        app.post(
            "/api/v1/tasks",
            &app.admin.token,
            json!({"name": "x", "assignee": Uuid::now_v7(),
            "candidate_users": [ann.id, Uuid::now_v7()]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&bad_assignee), ["candidate_users[1]", "assignee"]);
}

#[tokio::test]
async fn an_unknown_task_and_another_tenants_task_are_404() {
    let app = spawn().await;
    let id = app.task(json!({"candidate_groups": ["clerks"]})).await;
    let created = app
        .post(
            "/api/v1/tenants",
            &app.admin.token,
            json!({"id": "acme", "name": "Acme",
            "admin_email": "boss@acme.test", "admin_password": "acme admin password"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let boss = app
        .sign_in("boss@acme.test", "acme admin password", Some("acme"))
        .await;
    for (token, path) in [
        (&boss.token, format!("/api/v1/tasks/{id}/claim")),
        (
            &app.admin.token,
            format!("/api/v1/tasks/{}/claim", Uuid::now_v7()),
        ),
        (
            &app.admin.token,
            "/api/v1/tasks/not-a-task/claim".to_owned(),
        ),
    ] {
        let missing = problem(
            app.post(&path, token, Value::Null).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(missing["code"], "task_not_found", "{path}");
        // an `If-Match` does not tell whether the id exists, or at which version
        for if_match in ["\"0\"", "\"1\"", "\"7\""] {
            let answer = app
                .client
                .post(app.url(&path))
                .bearer_auth(token)
                .header("if-match", if_match)
                .send()
                .await
                .unwrap();
            assert!(!answer.headers().contains_key("etag"), "{path} {if_match}");
            let missing = problem(answer, StatusCode::NOT_FOUND).await;
            assert_eq!(missing["code"], "task_not_found", "{path} {if_match}");
        }
    }
}

#[tokio::test]
async fn fifty_concurrent_completions_of_one_task_give_one_200_the_rest_409_and_one_event() {
    let app = Arc::new(spawn().await);
    let ann = app.user(&["member"], &[]).await;
    let id = app.task(json!({"assignee": ann.id})).await;
    let path = format!("/api/v1/tasks/{id}/complete");
    let mut handles = Vec::new();
    for i in 0..50 {
        let app = app.clone();
        let (path, token) = (path.clone(), ann.token.clone());
        handles.push(tokio::spawn(async move {
            let response = app
                .post(&path, &token, json!({"output": {"attempt": i}}))
                .await;
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body["code"].clone())
        }));
    }
    let mut ok = 0;
    let mut conflicts = Vec::new();
    for handle in handles {
        let (status, code) = handle.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => conflicts.push(code),
            other => panic!("unexpected {other}: {code}"),
        }
    }
    assert_eq!((ok, conflicts.len()), (1, 49));
    assert!(
        conflicts
            .iter()
            .all(|c| c == "task_closed" || c == "concurrent_modification"),
        "{conflicts:?}"
    );
    assert_eq!(app.count_events("TaskCompleted").await, 1);
}

#[tokio::test]
async fn an_ad_hoc_task_takes_a_new_v7_id_once_and_never_a_workflow_steps_id() {
    let app = spawn().await;
    let id = Uuid::now_v7();
    let body = json!({"id": id, "name": "Check the invoice"});
    let created = app
        .post("/api/v1/tasks", &app.admin.token, body.clone())
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let again = problem(
        app.post("/api/v1/tasks", &app.admin.token, body).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(again["code"], "task_exists");

    // workflow tasks' ids are name-based (v5): an ad-hoc task cannot take one in advance
    let step = domain::ids::step_child_id(Uuid::now_v7(), "review", 1);
    for other in [step, Uuid::new_v4()] {
        let refused = problem(
            app.post(
                "/api/v1/tasks",
                &app.admin.token,
                json!({"id": other, "name": "Squatter"}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(refused["errors"][0]["field"], "id", "{refused}");
    }
    assert_eq!(app.events("task", &id.to_string()).await.len(), 1);
    assert!(app.events("task", &step.to_string()).await.is_empty());
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_refused_before_it_is_sent() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let app = spawn().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n{{",
        app.admin.token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = [0u8; 512];
    // the rest of the body never comes: the answer must not wait for it
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}
