use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, fields, problem, spawn};

pub fn hello() -> Value {
    json!({"key": "hello", "name": "Hello", "start": "greet", "steps": {
        "greet": {"type": "task", "name": "Say hello", "candidate_groups": ["staff"], "next": "done"},
        "done": {"type": "end", "outcome": "greeted"}}})
}

async fn publish_yaml(app: &TestApp, token: &str, yaml: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/workflow-definitions"))
        .bearer_auth(token)
        .header("content-type", "application/yaml")
        .body(yaml.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_designer_publishes_json_then_yaml_and_the_same_content_again_changes_nothing() {
    let app = spawn().await;
    let designer = app.user(&["designer"], &[]).await;
    let first = app
        .post("/api/v1/workflow-definitions", &designer.token, hello())
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(
        first.headers()["location"],
        "/api/v1/workflow-definitions/hello/versions/1"
    );
    let body: Value = first.json().await.unwrap();
    assert_eq!(
        (body["id"].as_str(), body["version"].as_u64()),
        (Some("hello"), Some(1))
    );

    let yaml = "key: hello\nname: Hello again\nstart: greet\nsteps:\n  greet:\n    type: task\n    name: Say hello\n    candidate_groups: [staff]\n    next: done\n  done:\n    type: end\n    outcome: greeted\n";
    let second = publish_yaml(&app, &designer.token, yaml).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.headers()["etag"], "\"2\"");
    let repeat = publish_yaml(&app, &designer.token, yaml).await;
    assert_eq!(repeat.status(), StatusCode::OK);
    assert_eq!(repeat.headers()["etag"], "\"2\"");
    let body: Value = repeat.json().await.unwrap();
    assert!(body["consistency_token"].is_string());
    assert_eq!(
        app.events("workflow_definition", "default/hello")
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn an_invalid_definition_is_422_naming_every_broken_step() {
    let app = spawn().await;
    let mut definition = hello();
    definition["steps"]["greet"]["next"] = json!("nowhere");
    definition["steps"]["done"] = json!({"type": "teleport"});
    let refused = problem(
        app.post("/api/v1/workflow-definitions", &app.admin.token, definition)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(refused["code"], "invalid_definition");
    let fields = fields(&refused);
    assert!(
        fields.contains(&"steps.greet.next".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.iter().any(|f| f.starts_with("steps.done")),
        "{fields:?}"
    );

    let broken_yaml = problem(
        publish_yaml(&app, &app.admin.token, "key: [unclosed").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(broken_yaml["errors"][0]["code"], "parse_error");
    let xml = app
        .client
        .post(app.url("/api/v1/workflow-definitions"))
        .bearer_auth(&app.admin.token)
        .header("content-type", "application/xml")
        .body("<definition/>")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(xml, StatusCode::UNSUPPORTED_MEDIA_TYPE).await["code"],
        "unsupported_media_type"
    );
}

#[tokio::test]
async fn members_and_operators_may_not_publish() {
    let app = spawn().await;
    for roles in [&["member"][..], &["operator"][..]] {
        let user = app.user(roles, &[]).await;
        let refused = problem(
            app.post("/api/v1/workflow-definitions", &user.token, hello())
                .await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(refused["code"], "forbidden");
    }
}

#[tokio::test]
async fn an_operator_starts_an_instance_whose_first_task_exists_when_it_answers() {
    let app = spawn().await;
    app.publish(&hello()).await;
    let operator = app.user(&["operator"], &[]).await;
    let response = app
        .post(
            "/api/v1/workflow-instances",
            &operator.token,
            json!({"definition_key": "hello", "business_key": "HB-1", "variables": {"who": "world"}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        body["consistency_token"].as_str().map(|t| t.contains('.')),
        Some(true)
    );
    let task = domain::ids::step_child_id(id, "greet", 1);
    let opened = app.events("task", &task.to_string()).await;
    assert_eq!(opened[0]["type"], "TaskOpened");
    assert_eq!(opened[0]["payload"]["candidate_groups"], json!(["staff"]));
    let started = app.events("workflow_instance", &id.to_string()).await;
    assert_eq!(
        started[0]["payload"]["started_by"],
        format!("user:{}", operator.id)
    );

    let member = app.user(&["member"], &[]).await;
    let refused = app
        .post(
            "/api/v1/workflow-instances",
            &member.token,
            json!({"definition_key": "hello"}),
        )
        .await;
    problem(refused, StatusCode::FORBIDDEN).await;
    let unknown = problem(
        app.post(
            "/api/v1/workflow-instances",
            &operator.token,
            json!({"definition_key": "nope"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(unknown["code"], "definition_not_found");
    assert_eq!(fields(&unknown), ["definition_key"]);
    let typo = problem(
        app.post(
            "/api/v1/workflow-instances",
            &operator.token,
            json!({"definition_kee": "hello"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(typo["code"], "validation_failed");
}

#[tokio::test]
async fn cancelling_with_a_stale_if_match_is_412_and_with_the_current_one_works_once() {
    let app = spawn().await;
    app.publish(&hello()).await;
    let id = app.start("hello", json!({})).await;
    let path = format!("/api/v1/workflow-instances/{id}/cancel");
    let (_, version) = app.api.runtime().load_instance(id).await.unwrap();
    let stale = app
        .client
        .post(app.url(&path))
        .bearer_auth(&app.admin.token)
        .header("if-match", format!("\"{}\"", version + 5))
        .json(&json!({"reason": "duplicate"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.headers()["etag"], format!("\"{version}\"").as_str());
    assert_eq!(
        problem(stale, StatusCode::PRECONDITION_FAILED).await["code"],
        "precondition_failed"
    );

    let current = app
        .client
        .post(app.url(&path))
        .bearer_auth(&app.admin.token)
        .header("if-match", version.to_string())
        .json(&json!({"reason": "duplicate"}))
        .send()
        .await
        .unwrap();
    assert_eq!(current.status(), StatusCode::OK);
    let again = problem(
        app.post(&path, &app.admin.token, json!({"reason": "again"}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(again["code"], "instance_ended");
    // the open task was cancelled with it
    let task = domain::ids::step_child_id(id, "greet", 1);
    let events = app.events("task", &task.to_string()).await;
    assert_eq!(events.last().unwrap()["type"], "TaskCancelled");

    let malformed = app
        .client
        .post(app.url(&path))
        .bearer_auth(&app.admin.token)
        .header("if-match", "W/\"1\"")
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(malformed, StatusCode::BAD_REQUEST).await["code"],
        "invalid_if_match"
    );
}

#[tokio::test]
async fn another_tenants_instance_is_404() {
    let app = spawn().await;
    app.publish(&hello()).await;
    let id = app.start("hello", json!({})).await;
    let created = app
        .post(
            "/api/v1/tenants",
            &app.admin.token,
            json!({"id": "acme", "name": "Acme", "admin_email": "boss@acme.test",
                   "admin_password": "acme admin password"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let boss = app
        .sign_in("boss@acme.test", "acme admin password", Some("acme"))
        .await;
    for path in [
        format!("/api/v1/workflow-instances/{id}/cancel"),
        "/api/v1/workflow-instances/42/cancel".to_owned(),
    ] {
        let missing = problem(
            app.post(&path, &boss.token, json!({"reason": "mine now"}))
                .await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(missing["code"], "instance_not_found");
    }
    // acme cannot start default's definition either
    let unknown = app
        .post(
            "/api/v1/workflow-instances",
            &boss.token,
            json!({"definition_key": "hello"}),
        )
        .await;
    problem(unknown, StatusCode::UNPROCESSABLE_ENTITY).await;
}
