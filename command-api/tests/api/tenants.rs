use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, fields, problem, spawn};

#[tokio::test]
async fn an_admin_of_the_default_tenant_creates_a_tenant_whose_admin_signs_in_there_only() {
    let app = spawn().await;
    let response = app
        .post(
            "/api/v1/tenants",
            &app.admin.token,
            json!({"id": "acme", "name": "Acme Corp", "admin_email": "boss@acme.test",
                   "admin_password": "acme admin password"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "acme");
    let boss = app
        .sign_in("boss@acme.test", "acme admin password", Some("acme"))
        .await;
    assert_eq!(body["admin_user_id"], boss.id.to_string());
    assert_eq!(
        app.login("boss@acme.test", "acme admin password", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let events = app.events("tenant", "acme").await;
    assert_eq!(events[0]["type"], "TenantCreated");
    assert_eq!(events[0]["metadata"]["tenant_id"], "acme");
    assert_eq!(
        events[0]["payload"]["created_by"],
        format!("user:{}", app.admin.id)
    );

    // the same email may exist in another tenant
    let same = app
        .post(
            "/api/v1/users",
            &boss.token,
            json!({"email": ADMIN_EMAIL,
        "display_name": "Twin", "password": PASSWORD, "roles": ["member"]}),
        )
        .await;
    assert_eq!(same.status(), StatusCode::CREATED);

    // only admins of the default tenant create tenants
    let by_acme = problem(
        app.post(
            "/api/v1/tenants",
            &boss.token,
            json!({"id": "globex", "name": "Globex",
            "admin_email": "g@globex.test", "admin_password": "globex admin password"}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(by_acme["code"], "forbidden");
    let again = problem(
        app.post(
            "/api/v1/tenants",
            &app.admin.token,
            json!({"id": "acme", "name": "Acme 2",
            "admin_email": "x@acme.test", "admin_password": "another long password"}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(again["code"], "tenant_exists");
    let invalid = problem(
        app.post(
            "/api/v1/tenants",
            &app.admin.token,
            json!({"id": "Not/OK", "name": "",
            "admin_email": "nope", "admin_password": "short"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        fields(&invalid),
        ["id", "name", "admin_email", "admin_password"]
    );
}

#[tokio::test]
async fn another_tenants_user_and_a_malformed_user_id_are_404() {
    let app = spawn().await;
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
        format!("/api/v1/users/{}/roles", app.admin.id),
        format!("/api/v1/users/{}/roles", Uuid::now_v7()),
        "/api/v1/users/not-a-uuid/roles".to_owned(),
    ] {
        let missing = problem(
            app.put(&path, &boss.token, json!({"roles": ["member"]}))
                .await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(missing["code"], "user_not_found", "{path}");
    }
}

#[tokio::test]
async fn the_first_admin_is_created_once() {
    let app = spawn().await;
    let again = app
        .api
        .bootstrap_admin("second@example.com", &SecretString::from(ADMIN_PASSWORD))
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(app.count_events("UserCreated").await, 1);
    assert_eq!(app.count_events("TenantCreated").await, 1);
}

#[tokio::test]
async fn retrying_a_tenant_whose_admin_was_never_created_completes_it() {
    let app = spawn().await;
    // the tenant exists, its admin does not (a failure between the two steps)
    let tenants: event_store::Executor<domain::Tenant> = event_store::Executor::new(
        app.db.pool.clone(),
        event_store::AppendNotifier::disabled(),
        event_schemas::upcasters(),
    );
    let metadata = event_schemas::EventMetadata {
        event_id: Uuid::nil(),
        tenant_id: "acme".into(),
        actor: event_schemas::Actor::User(app.admin.id),
        correlation_id: Uuid::now_v7(),
        causation_id: "test".into(),
        request_id: "test".into(),
        occurred_at: chrono::Utc::now(),
    };
    let caller = domain::Caller::user(
        "default",
        app.admin.id,
        [domain::Role::Admin],
        Vec::<String>::new(),
    );
    let command = domain::Command::new(
        caller,
        chrono::Utc::now(),
        domain::TenantCommand::Create {
            tenant_id: "acme".into(),
            name: "Acme".into(),
        },
    );
    tenants
        .execute("acme", command, &metadata, None, &())
        .await
        .unwrap();

    let body = json!({"id": "acme", "name": "Acme", "admin_email": "boss@acme.test",
                      "admin_password": "acme admin password"});
    let retried = app
        .post("/api/v1/tenants", &app.admin.token, body.clone())
        .await;
    assert_eq!(retried.status(), StatusCode::CREATED);
    app.sign_in("boss@acme.test", "acme admin password", Some("acme"))
        .await;
    assert_eq!(app.events("tenant", "acme").await.len(), 1);
    // now it is complete: a second attempt is a conflict
    let again = problem(
        app.post("/api/v1/tenants", &app.admin.token, body).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(again["code"], "tenant_exists");
}
