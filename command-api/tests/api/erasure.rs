//! Personal data sealed per person, and erasing a person (DESIGN §2, crypto-shredding).

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{ADMIN_EMAIL, PASSWORD, TestApp, User, problem, spawn};

/// Every stored event (id and payload), in log order.
async fn stored(app: &TestApp) -> Vec<(Uuid, String)> {
    sqlx::query_as("select event_id, payload::text from events order by tx_id, global_position")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

/// Every stored payload, as one text.
async fn whole_log(app: &TestApp) -> String {
    stored(app)
        .await
        .into_iter()
        .map(|(_, payload)| payload)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn deactivate(app: &TestApp, user: &User) {
    let response = app
        .post(
            &format!("/api/v1/users/{}/deactivate", user.id),
            &app.admin.token,
            json!({"reason": "left the company"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Deactivates `user`, then erases them as the admin.
async fn deactivate_and_erase(app: &TestApp, user: &User) {
    deactivate(app, user).await;
    let erased = app
        .post(&erase_path(user.id), &app.admin.token, Value::Null)
        .await;
    assert_eq!(erased.status(), StatusCode::OK);
}

fn erase_path(user: Uuid) -> String {
    format!("/api/v1/users/{user}/erase")
}

#[tokio::test]
async fn names_emails_reasons_and_comments_are_stored_sealed_for_their_person() {
    let app = spawn().await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let task = app.task(json!({"candidate_groups": ["clerks"]})).await;
    let comment = app
        .post(
            &format!("/api/v1/tasks/{task}/comments"),
            &clerk.token,
            json!({"text": "Call Ms Fairfax about the invoice"}),
        )
        .await;
    assert_eq!(comment.status(), StatusCode::OK);
    deactivate(&app, &clerk).await;

    let log = whole_log(&app).await;
    for clear in [
        clerk.email.as_str(),
        "Test User",
        "Call Ms Fairfax",
        "left the company",
        ADMIN_EMAIL,
        ADMIN_NAME,
    ] {
        assert!(!log.contains(clear), "{clear:?} is stored in clear");
    }
    let commented = app.events("task", &task.to_string()).await;
    let commented = commented.last().unwrap();
    assert_eq!(commented["type"], "TaskCommented");
    assert_eq!(commented["payload"]["author"], format!("user:{}", clerk.id));
    assert_eq!(
        app.opened(&commented["payload"]["text"]).await.as_deref(),
        Some("Call Ms Fairfax about the invoice")
    );
    let sealed_for = |value: &Value| {
        event_schemas::personal::Sealed::parse(value.as_str().unwrap())
            .unwrap()
            .subject
    };
    assert_eq!(sealed_for(&commented["payload"]["text"]), clerk.id);
    let user_events = app.events("user", &clerk.id.to_string()).await;
    assert_eq!(sealed_for(&user_events[0]["payload"]["email"]), clerk.id);
    assert_eq!(
        app.opened(&user_events.last().unwrap()["payload"]["reason"])
            .await
            .as_deref(),
        Some("left the company")
    );
}

/// The bootstrap admin's display name.
const ADMIN_NAME: &str = "Administrator";

#[tokio::test]
async fn an_admin_erases_a_deactivated_user_whose_data_then_opens_nowhere_while_the_log_stays_whole()
 {
    let app = spawn().await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let task = app.task(json!({"candidate_groups": ["clerks"]})).await;
    app.post(
        &format!("/api/v1/tasks/{task}/comments"),
        &clerk.token,
        json!({"text": "my phone is 555-0100"}),
    )
    .await;
    deactivate(&app, &clerk).await;
    let before = stored(&app).await;

    let erased = app
        .post(&erase_path(clerk.id), &app.admin.token, Value::Null)
        .await;
    assert_eq!(erased.status(), StatusCode::OK);
    let body: Value = erased.json().await.unwrap();
    assert_eq!(body["id"], clerk.id.to_string());

    // nothing stored was rewritten: one event more, the rest as it was
    let after = stored(&app).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(app.count_events("UserErased").await, 1);
    let user_events = app.events("user", &clerk.id.to_string()).await;
    let last = user_events.last().unwrap();
    assert_eq!(last["type"], "UserErased");
    assert_eq!(
        last["payload"]["erased_by"],
        format!("user:{}", app.admin.id)
    );

    // what was sealed for them no longer opens: email, name, reason, comment
    assert_eq!(app.opened(&user_events[0]["payload"]["email"]).await, None);
    assert_eq!(
        app.opened(&user_events[0]["payload"]["display_name"]).await,
        None
    );
    let comment = app.events("task", &task.to_string()).await;
    assert_eq!(
        app.opened(&comment.last().unwrap()["payload"]["text"])
            .await,
        None
    );
    let key: (Option<Vec<u8>>, bool) =
        sqlx::query_as("select key, erased_at is not null from personal_keys where user_id = $1")
            .bind(clerk.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(key, (None, true));

    // the read model and everything kept outside the log forget them
    let row: (String, String, String, bool) = sqlx::query_as(
        "select email, email_key, display_name, erased_at is not null from identity_users \
         where user_id = $1",
    )
    .bind(clerk.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, "");
    assert_eq!(row.1, format!("erased:{}", clerk.id));
    assert_eq!(row.2, "");
    assert!(row.3);
    for table in ["identity_credentials", "identity_email_claims"] {
        let left: i64 =
            sqlx::query_scalar(&format!("select count(*) from {table} where user_id = $1"))
                .bind(clerk.id)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(left, 0, "{table}");
    }

    // their sessions keep only that they ended (where and with what they signed in is gone)
    let sessions: (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where revoked_at is null or client_address is not null \
                                            or user_agent is not null) \
         from auth_sessions where user_id = $1",
    )
    .bind(clerk.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sessions, (1, 0));

    // they cannot sign in, and their address may be given to someone new
    let login = app.login(&clerk.email, PASSWORD, None).await;
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
    let again = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            json!({"email": clerk.email, "display_name": "New Clerk", "password": PASSWORD,
                   "roles": ["member"], "groups": []}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_active_user_is_not_erased_and_an_erased_one_not_twice() {
    let app = spawn().await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let active = problem(
        app.post(&erase_path(clerk.id), &app.admin.token, Value::Null)
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(active["code"], "user_active");
    assert_eq!(app.count_events("UserErased").await, 0);
    let key: Option<Vec<u8>> =
        sqlx::query_scalar("select key from personal_keys where user_id = $1")
            .bind(clerk.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(key.is_some(), "the refused erasure kept the key");

    deactivate_and_erase(&app, &clerk).await;
    let twice = problem(
        app.post(&erase_path(clerk.id), &app.admin.token, Value::Null)
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(twice["code"], "user_erased");
    let reactivate = problem(
        app.post(
            &format!("/api/v1/users/{}/reactivate", clerk.id),
            &app.admin.token,
            Value::Null,
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(reactivate["code"], "user_erased");
    assert_eq!(app.count_events("UserErased").await, 1);
}

#[tokio::test]
async fn only_an_admin_of_the_users_tenant_erases() {
    let app = spawn().await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let operator = app.user(&["operator"], &[]).await;
    deactivate(&app, &clerk).await;
    let forbidden = problem(
        app.post(&erase_path(clerk.id), &operator.token, Value::Null)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(forbidden["code"], "forbidden");

    let other_admin = app.other_tenant_admin().await;
    let hidden = problem(
        app.post(&erase_path(clerk.id), &other_admin.token, Value::Null)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(hidden["code"], "user_not_found");
    assert_eq!(app.count_events("UserErased").await, 0);
}

#[tokio::test]
async fn an_identity_read_model_rebuilt_after_an_erasure_keeps_the_person_forgotten() {
    let app = spawn().await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let kept = app.user(&["member"], &["clerks"]).await;
    deactivate_and_erase(&app, &clerk).await;
    app.forget_identity_read_model().await;
    app.run_identity_projector_until(&format!(
        "select exists (select from identity_users where user_id = '{}' and erased_at is not null)",
        clerk.id
    ))
    .await;
    let row: (String, String, bool) = sqlx::query_as(
        "select email, display_name, erased_at is not null from identity_users \
         where user_id = $1",
    )
    .bind(clerk.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(row, (String::new(), String::new(), true));
    // everyone else's data opens as before
    let name: String =
        sqlx::query_scalar("select display_name from identity_users where user_id = $1")
            .bind(kept.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(name, "Test User");
    app.sign_in(&kept.email, PASSWORD, None).await;
}

#[tokio::test]
async fn a_process_started_after_an_erasure_still_refuses_the_erased_users_tokens() {
    let app = spawn().await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    deactivate_and_erase(&app, &clerk).await;
    let later = crate::auth::another_instance(&app).await;
    assert!(later.token_keys().verify(&clerk.token).is_err());
    later.token_keys().verify(&app.admin.token).unwrap();
}

#[tokio::test]
async fn a_password_change_that_lands_after_an_erasure_stores_no_hash() {
    use command_api::identity::store::replace_password;
    let app = spawn().await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let kept = app.user(&["member"], &["clerks"]).await;
    deactivate_and_erase(&app, &clerk).await;
    // as a password change decided before the erasure and stored after it would
    assert!(
        !replace_password(&app.db.pool, clerk.id, "$argon2id$late")
            .await
            .unwrap()
    );
    assert!(
        replace_password(&app.db.pool, kept.id, "$argon2id$new")
            .await
            .unwrap()
    );
    let hashes: Vec<(Uuid, String)> = sqlx::query_as(
        "select user_id, password_hash from identity_credentials where user_id = any($1)",
    )
    .bind(vec![clerk.id, kept.id])
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(hashes, [(kept.id, "$argon2id$new".to_owned())]);
}
