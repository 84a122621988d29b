use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, fields, problem, spawn};

fn new_user(email: &str) -> Value {
    json!({"email": email, "display_name": "Ann Example", "password": PASSWORD,
           "roles": ["member"], "groups": ["clerks"]})
}

#[tokio::test]
async fn an_admin_creates_a_user_who_then_signs_in_and_the_log_holds_no_password() {
    let app = spawn().await;
    let response = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            new_user("Ann@Example.com"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let token = response.headers()["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["version"], 1);
    assert_eq!(body["consistency_token"], token.as_str());

    let events = app.events("user", &id).await;
    assert_eq!(events.len(), 1);
    let created = &events[0];
    assert_eq!(created["type"], "UserCreated");
    // personal data is sealed for the user (DESIGN §2)
    assert_eq!(
        app.opened(&created["payload"]["email"]).await.as_deref(),
        Some("Ann@Example.com")
    );
    assert_eq!(
        app.opened(&created["payload"]["display_name"])
            .await
            .as_deref(),
        Some("Ann Example")
    );
    assert_eq!(created["payload"]["roles"], json!(["member"]));
    assert_eq!(
        created["payload"]["created_by"],
        format!("user:{}", app.admin.id)
    );
    assert_eq!(created["metadata"]["tenant_id"], "default");
    let stored = created.to_string();
    assert!(!stored.contains("argon2") && !stored.contains(PASSWORD));
    let hash: String =
        sqlx::query_scalar("select password_hash from identity_credentials where user_id = $1")
            .bind(Uuid::parse_str(&id).unwrap())
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    // the email is matched ignoring case
    let ann = app.sign_in("ann@EXAMPLE.com", PASSWORD, None).await;
    assert_eq!(ann.id.to_string(), id);
}

#[tokio::test]
async fn creating_users_needs_the_admin_role_and_valid_fields() {
    let app = spawn().await;
    let member = app.user(&["member"], &[]).await;
    let refused = problem(
        app.post("/api/v1/users", &member.token, new_user("x@example.com"))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(refused["code"], "forbidden");

    let invalid = problem(
        app.post(
            "/api/v1/users",
            &app.admin.token,
            json!({"email": "not-an-email", "display_name": "", "password": "short",
                   "roles": ["member"], "groups": [" spaced "]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(invalid["code"], "validation_failed");
    assert_eq!(
        fields(&invalid),
        ["email", "display_name", "password", "groups[0]"]
    );

    let bad_role = problem(
        app.post(
            "/api/v1/users",
            &app.admin.token,
            json!({"email": "r@example.com", "display_name": "R", "password": PASSWORD,
                   "roles": ["root"]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&bad_role), ["roles[0]"]);
    assert_eq!(app.count_events("UserCreated").await, 2);
}

#[tokio::test]
async fn an_email_address_is_unique_in_its_tenant_ignoring_case() {
    let app = spawn().await;
    let first = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            new_user("bob@example.com"),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let taken = problem(
        app.post(
            "/api/v1/users",
            &app.admin.token,
            new_user("BOB@example.com"),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(taken["code"], "email_taken");
    assert_eq!(fields(&taken), ["email"]);
}

#[tokio::test]
async fn replacing_roles_and_groups_records_who_granted_what_to_whom() {
    let app = spawn().await;
    let ann = app.user(&["member", "operator"], &["clerks"]).await;
    let roles = app
        .put(
            &format!("/api/v1/users/{}/roles", ann.id),
            &app.admin.token,
            json!({"roles": ["member", "designer"]}),
        )
        .await;
    assert_eq!(roles.status(), StatusCode::OK);
    assert_eq!(roles.headers()["etag"], "\"2\"");
    let groups = app
        .put(
            &format!("/api/v1/users/{}/groups", ann.id),
            &app.admin.token,
            json!({"groups": ["legal", "clerks"]}),
        )
        .await;
    assert_eq!(groups.status(), StatusCode::OK);
    // the same set again changes nothing
    let again = app
        .put(
            &format!("/api/v1/users/{}/groups", ann.id),
            &app.admin.token,
            json!({"groups": ["clerks", "legal"]}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["etag"], "\"3\"");
    assert!(again.headers().contains_key("x-consistency-token"));

    let events = app.events("user", &ann.id.to_string()).await;
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["UserCreated", "UserRolesChanged", "UserGroupsChanged"]
    );
    let granted = &events[1]["payload"];
    assert_eq!(granted["granted"], json!(["designer"]));
    assert_eq!(granted["revoked"], json!(["operator"]));
    assert_eq!(granted["changed_by"], format!("user:{}", app.admin.id));
    assert_eq!(events[2]["payload"]["added"], json!(["legal"]));

    // the read model (what tokens and group lookups use) follows at once
    let (roles, groups): (Vec<String>, Vec<String>) =
        sqlx::query_as("select roles, groups from identity_users where user_id = $1")
            .bind(ann.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(roles, ["designer", "member"]);
    assert_eq!(groups, ["clerks", "legal"]);
}

#[tokio::test]
async fn an_admin_cannot_revoke_their_own_admin_role_and_members_cannot_grant_roles() {
    let app = spawn().await;
    let own = problem(
        app.put(
            &format!("/api/v1/users/{}/roles", app.admin.id),
            &app.admin.token,
            json!({"roles": ["member"]}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(own["code"], "self_lockout");
    let member = app.user(&["member"], &[]).await;
    let refused = problem(
        app.put(
            &format!("/api/v1/users/{}/roles", member.id),
            &member.token,
            json!({"roles": ["admin"]}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(refused["code"], "forbidden");
}

#[tokio::test]
async fn users_change_their_own_password_with_the_current_one_and_lose_their_sessions() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let path = format!("/api/v1/users/{}/password", ann.id);
    let wrong = problem(
        app.put(
            &path,
            &ann.token,
            json!({"password": "a brand new password", "current_password": "nope nope nope"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&wrong), ["current_password"]);
    let missing = problem(
        app.put(
            &path,
            &ann.token,
            json!({"password": "a brand new password"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&missing), ["current_password"]);

    let changed = app
        .put(
            &path,
            &ann.token,
            json!({"password": "a brand new password", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(
        app.login(&ann.email, PASSWORD, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.sign_in(&ann.email, "a brand new password", None).await;
    let old_session = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": ann.refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(old_session.status(), StatusCode::UNAUTHORIZED);

    // admins reset without the current password; members cannot touch others'
    let reset = app
        .put(
            &path,
            &app.admin.token,
            json!({"password": "reset by the admin!"}),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::OK);
    let bob = app.user(&["member"], &[]).await;
    problem(
        app.put(
            &path,
            &bob.token,
            json!({"password": "bob was here, sorry"}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let events = app.events("user", &ann.id.to_string()).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "UserPasswordChanged")
            .count(),
        2
    );
}

#[tokio::test]
async fn the_background_projector_rebuilds_the_identity_read_model_from_the_log() {
    let app = spawn().await;
    let ann = app.user(&["member"], &["clerks"]).await;
    app.forget_identity_read_model().await;
    assert_eq!(
        app.login(&ann.email, PASSWORD, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.run_identity_projector_until("select count(*) = 2 from identity_users")
        .await;
    let again = app.sign_in(&ann.email, PASSWORD, None).await;
    let claims = app.api.token_keys().verify(&again.token).unwrap();
    assert_eq!(claims.groups, ["clerks"]);
}

#[tokio::test]
async fn concurrent_creations_with_one_email_create_one_user() {
    let app = std::sync::Arc::new(spawn().await);
    let attempts = (0..8).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let email = if i % 2 == 0 {
                "dup@example.com"
            } else {
                "DUP@example.com"
            };
            app.post("/api/v1/users", &app.admin.token, new_user(email))
                .await
                .status()
        })
    });
    let mut statuses = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        statuses.push(attempt.await.unwrap());
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let taken = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, taken), (1, 7), "{statuses:?}");
    assert_eq!(app.count_events("UserCreated").await, 2);
}

#[tokio::test]
async fn users_choose_their_email_notifications_and_admins_may_choose_for_them() {
    let app = spawn().await;
    let ann = app.user(&["member"], &["clerks"]).await;
    let bob = app.user(&["member"], &[]).await;
    let path = format!("/api/v1/users/{}/notifications", ann.id);
    let response = app.put(&path, &ann.token, json!({"email": "direct"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stored: String =
        sqlx::query_scalar("select email_notifications from identity_users where user_id = $1")
            .bind(ann.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        stored, "direct",
        "the read model has it when the command answers"
    );
    // the same again changes nothing
    let response = app.put(&path, &ann.token, json!({"email": "direct"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.count_events("UserNotificationsChanged").await, 1);

    let invalid = problem(
        app.put(&path, &ann.token, json!({"email": "sometimes"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&invalid), ["email"]);
    let response = app.put(&path, &bob.token, json!({"email": "none"})).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = app
        .put(&path, &app.admin.token, json!({"email": "none"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let events = app.events("user", &ann.id.to_string()).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "UserNotificationsChanged");
    assert_eq!(last["payload"]["email"], "none");
    assert_eq!(
        last["payload"]["changed_by"],
        format!("user:{}", app.admin.id)
    );
}
