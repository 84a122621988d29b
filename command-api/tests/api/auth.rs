use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use command_api::auth::Client;
use command_api::auth::sessions::SessionError;
use command_api::identity::store;
use domain::identity::{DEFAULT_TENANT, email_key};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, TestApp, problem, spawn, spawn_with};

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_anonymous("/api/v1/auth/refresh", &json!({"refresh_token": token}))
        .await
}

#[tokio::test]
async fn signing_in_gives_a_bearer_token_that_carries_the_users_roles() {
    let app = spawn().await;
    let response = app.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(body["refresh_token"].as_str().unwrap().starts_with("wlr_"));
    let claims = app
        .api
        .token_keys()
        .verify(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.tid, "default");
    assert_eq!(claims.roles, vec![domain::Role::Admin]);
    // only the hash of a refresh token is stored
    let stored: i64 =
        sqlx::query_scalar("select count(*) from auth_refresh_tokens where token_hash = $1")
            .bind(command_api::auth::sessions::token_hash(
                body["refresh_token"].as_str().unwrap(),
            ))
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn a_wrong_password_an_unknown_email_and_a_wrong_tenant_get_the_same_401() {
    let app = spawn().await;
    let mut answers = Vec::new();
    for (email, password, tenant) in [
        (ADMIN_EMAIL, "not the password at all", None),
        ("nobody@example.com", ADMIN_PASSWORD, None),
        (ADMIN_EMAIL, ADMIN_PASSWORD, Some("acme")),
    ] {
        let body = problem(
            app.login(email, password, tenant).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        answers.push((body["code"].clone(), body["detail"].clone()));
    }
    assert_eq!(answers[0].0, "invalid_credentials");
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
}

#[tokio::test]
async fn a_refresh_token_works_once_and_a_replayed_one_revokes_its_whole_family() {
    let app = spawn().await;
    let first = app.admin.refresh_token.clone();
    let response = refresh(&app, &first).await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.unwrap();
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    // the new access token works
    let ok = app
        .post(
            "/api/v1/tasks",
            rotated["access_token"].as_str().unwrap(),
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);

    let replay = problem(refresh(&app, &first).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(replay["code"], "refresh_token_reused");
    // the rotated token of the same family is dead too
    let after = problem(refresh(&app, &second).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(after["code"], "invalid_refresh_token");
    // other sessions of the user are not affected
    let other = app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert_eq!(
        refresh(&app, &other.refresh_token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn signing_out_ends_the_session_of_the_access_token_or_of_the_refresh_token() {
    let app = spawn().await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&app.admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let refused = problem(
        refresh(&app, &app.admin.refresh_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(refused["code"], "invalid_refresh_token");

    let other = app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .json(&json!({"refresh_token": other.refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        refresh(&app, &other.refresh_token).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let nothing = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    problem(nothing, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn tokens_with_alg_none_signed_with_another_key_or_missing_are_401() {
    let app = spawn().await;
    let mut claims = app.api.token_keys().verify(&app.admin.token).unwrap();
    claims.roles = vec![domain::Role::Admin];
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let unsigned = format!("{header}.{payload}.");
    let forged = api_common::TokenKeys::from_secret(&[9u8; 32])
        .unwrap()
        .issue(&claims)
        .unwrap();
    let body = json!({"name": "sneaky"});
    for token in [unsigned.as_str(), forged.as_str(), "garbage"] {
        let response = app.post("/api/v1/tasks", token, body.clone()).await;
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let refused = problem(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(refused["code"], "unauthorized");
    }
    let anonymous = app
        .client
        .post(app.url("/api/v1/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_eq!(app.count_events("TaskOpened").await, 0);
}

#[tokio::test]
async fn repeated_failures_lock_the_account_with_429_and_retry_after() {
    let app = spawn_with(|s| s.login_throttle.max_failures_per_account = 3).await;
    for _ in 0..3 {
        let wrong = app
            .login(ADMIN_EMAIL, "definitely the wrong one", None)
            .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    // locked: even the right password is refused, and so is the same email in another case
    for email in [ADMIN_EMAIL, "ADMIN@example.com"] {
        let locked = app.login(email, ADMIN_PASSWORD, None).await;
        let retry_after: u64 = locked.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=300).contains(&retry_after), "{retry_after}");
        let body = problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
        assert_eq!(body["code"], "too_many_attempts");
    }
    // an unknown account is throttled alike, so 429s reveal nothing
    for _ in 0..3 {
        app.login("ghost@example.com", "whatever it may be", None)
            .await;
    }
    assert_eq!(
        app.login("ghost@example.com", "whatever it may be", None)
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn repeated_failures_from_one_address_lock_that_address() {
    let app = spawn_with(|s| {
        s.login_throttle.max_failures_per_account = 100;
        s.login_throttle.max_failures_per_address = 3;
    })
    .await;
    for i in 0..3 {
        let email = format!("guess{i}@example.com");
        assert_eq!(
            app.login(&email, "password guess 123", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = app.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert!(locked.headers().contains_key("retry-after"));
    problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn a_successful_sign_in_clears_the_accounts_failures() {
    let app = spawn_with(|s| s.login_throttle.max_failures_per_account = 3).await;
    for _ in 0..2 {
        app.login(ADMIN_EMAIL, "definitely the wrong one", None)
            .await;
    }
    app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    for _ in 0..2 {
        app.login(ADMIN_EMAIL, "definitely the wrong one", None)
            .await;
    }
    app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
}

#[tokio::test]
async fn refreshing_picks_up_role_changes_and_a_deactivated_user_is_locked_out() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let path = format!("/api/v1/users/{}/roles", ann.id);
    let changed = app
        .put(
            &path,
            &app.admin.token,
            json!({"roles": ["member", "operator"]}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let renewed: Value = refresh(&app, &ann.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    let claims = app
        .api
        .token_keys()
        .verify(renewed["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        claims.roles,
        vec![domain::Role::Operator, domain::Role::Member]
    );

    let path = format!("/api/v1/users/{}/deactivate", ann.id);
    let deactivated = app
        .post(&path, &app.admin.token, json!({"reason": "left"}))
        .await;
    assert_eq!(deactivated.status(), StatusCode::OK);
    let refused = refresh(&app, renewed["refresh_token"].as_str().unwrap()).await;
    problem(refused, StatusCode::UNAUTHORIZED).await;
    let login = app.login(&ann.email, PASSWORD, None).await;
    assert_eq!(
        problem(login, StatusCode::UNAUTHORIZED).await["code"],
        "invalid_credentials"
    );

    let path = format!("/api/v1/users/{}/reactivate", ann.id);
    assert_eq!(
        app.post(&path, &app.admin.token, Value::Null)
            .await
            .status(),
        StatusCode::OK
    );
    app.sign_in(&ann.email, PASSWORD, None).await;
}

#[tokio::test]
async fn a_generated_signing_secret_is_stored_once_and_shared_by_every_instance() {
    let app = spawn_with(|s| s.jwt_secret = None).await;
    let second = command_api::CommandApi::build(
        app.db.pool.clone(),
        event_store::AppendNotifier::disabled(),
        command_api::CommandSettings {
            password_hashing: crate::helpers::CHEAP,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // a token of the first instance verifies on the second
    second.token_keys().verify(&app.admin.token).unwrap();
    let secrets: i64 = sqlx::query_scalar("select count(*) from auth_secrets")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(secrets, 1);
}

/// The code of the 401 refusing `token` on a command that needs only a signed-in caller (an
/// empty ad-hoc task: 422 or 403 once authenticated), or `None` when it is accepted.
async fn refusal(app: &TestApp, token: &str) -> Option<String> {
    let response = app.post("/api/v1/tasks", token, json!({})).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        let refused = problem(response, StatusCode::UNAUTHORIZED).await;
        return Some(refused["code"].as_str().unwrap().to_owned());
    }
    assert!(
        [StatusCode::UNPROCESSABLE_ENTITY, StatusCode::FORBIDDEN].contains(&response.status()),
        "{}",
        response.status()
    );
    None
}

/// Whether `token` is still accepted; when not, it must be for its ended session.
async fn accepted(app: &TestApp, token: &str) -> bool {
    let Some(code) = refusal(app, token).await else {
        return true;
    };
    assert_eq!(code, "session_ended");
    false
}

/// Whether `token` is refused for predating a change of its user's roles or groups.
async fn outdated(app: &TestApp, token: &str) -> bool {
    refusal(app, token)
        .await
        .is_some_and(|code| code == "access_changed")
}

/// Polls `ended` for up to 5 s.
async fn eventually(mut ended: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if ended().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// A second command API on the same database, signing with the same secret.
pub(crate) async fn another_instance(app: &TestApp) -> command_api::CommandApi {
    command_api::CommandApi::build(
        app.db.pool.clone(),
        event_store::AppendNotifier::disabled(),
        command_api::CommandSettings {
            jwt_secret: Some(secrecy::SecretString::from(crate::helpers::SECRET)),
            password_hashing: crate::helpers::CHEAP,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn an_access_token_stops_working_when_its_session_ends_on_every_instance() {
    let app = spawn().await;
    let second = another_instance(&app).await;

    // signed out on the first instance: refused there at once, and on the second soon after
    let session = app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert!(accepted(&app, &session.token).await);
    second.token_keys().verify(&session.token).unwrap();
    let logout = |token: String| {
        let request = app
            .client
            .post(app.url("/api/v1/auth/logout"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(logout(session.token.clone()).await, StatusCode::NO_CONTENT);
    assert!(!accepted(&app, &session.token).await);
    assert!(
        eventually(async || second.token_keys().verify(&session.token).is_err()).await,
        "the second instance learns that the session ended"
    );
    // signing out of an ended session again is no error; other sessions go on
    assert_eq!(logout(session.token.clone()).await, StatusCode::NO_CONTENT);
    assert!(accepted(&app, &app.admin.token).await);

    // a deactivated user's sessions end with it
    let ann = app.user(&["member"], &[]).await;
    assert!(accepted(&app, &ann.token).await);
    let path = format!("/api/v1/users/{}/deactivate", ann.id);
    let deactivated = app
        .post(&path, &app.admin.token, json!({"reason": "left"}))
        .await;
    assert_eq!(deactivated.status(), StatusCode::OK);
    assert!(eventually(async || !accepted(&app, &ann.token).await).await);
    assert!(eventually(async || second.token_keys().verify(&ann.token).is_err()).await);

    // a process started later loads the sessions that ended within a token lifetime
    let third = another_instance(&app).await;
    assert!(third.token_keys().verify(&session.token).is_err());
    assert!(third.token_keys().verify(&ann.token).is_err());
    third.token_keys().verify(&app.admin.token).unwrap();
}

#[tokio::test]
async fn a_change_of_roles_or_groups_refuses_the_tokens_issued_before_on_every_instance() {
    let app = spawn().await;
    let second = another_instance(&app).await;
    let ann = app.user(&["member"], &[]).await;
    let first = ann.token.clone();
    assert!(refusal(&app, &first).await.is_none());
    let outdated_on = |api: &command_api::CommandApi, token: &str| {
        matches!(
            api.token_keys().verify(token),
            Err(api_common::auth::TokenError::AccessChanged)
        )
    };
    assert!(!outdated_on(&second, &first));

    // roles changed: refused on this instance at once, on the second soon after
    let roles = format!("/api/v1/users/{}/roles", ann.id);
    let changed = app
        .put(
            &roles,
            &app.admin.token,
            json!({"roles": ["member", "designer"]}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert!(outdated(&app, &first).await);
    assert!(eventually(async || outdated_on(&second, &first)).await);

    // refreshing gives a token with the new roles, accepted everywhere
    let renewed: Value = refresh(&app, &ann.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    let designer = renewed["access_token"].as_str().unwrap().to_owned();
    assert!(refusal(&app, &designer).await.is_none());
    let claims = second.token_keys().verify(&designer).unwrap();
    assert_eq!(
        claims.roles,
        vec![domain::Role::Designer, domain::Role::Member]
    );

    // the same roles again change nothing: no event, the token goes on
    let unchanged = app
        .put(
            &roles,
            &app.admin.token,
            json!({"roles": ["designer", "member"]}),
        )
        .await;
    assert_eq!(unchanged.status(), StatusCode::OK);
    assert!(refusal(&app, &designer).await.is_none());

    // groups changed: the same
    let groups = format!("/api/v1/users/{}/groups", ann.id);
    let changed = app
        .put(&groups, &app.admin.token, json!({"groups": ["clerks"]}))
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert!(outdated(&app, &designer).await);
    assert!(eventually(async || outdated_on(&second, &designer)).await);
    let renewed: Value = refresh(&app, renewed["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let clerk = renewed["access_token"].as_str().unwrap().to_owned();
    assert!(refusal(&app, &clerk).await.is_none());
    assert_eq!(
        second.token_keys().verify(&clerk).unwrap().groups,
        vec!["clerks"]
    );

    // other users are not affected, and a process started later knows of the changes
    assert!(refusal(&app, &app.admin.token).await.is_none());
    let third = another_instance(&app).await;
    assert!(outdated_on(&third, &first));
    assert!(outdated_on(&third, &designer));
    third.token_keys().verify(&clerk).unwrap();
    third.token_keys().verify(&app.admin.token).unwrap();
}

#[tokio::test]
async fn a_refresh_after_a_role_change_the_read_model_has_not_reached_brings_it_up_first() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let before: (String, i64) = sqlx::query_as(
        "select tx_id::text, global_position from checkpoints where name = 'identity'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let path = format!("/api/v1/users/{}/roles", ann.id);
    let changed = app
        .put(
            &path,
            &app.admin.token,
            json!({"roles": ["member", "operator"]}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert!(outdated(&app, &ann.token).await);
    // as if the change's inline projection had timed out: the read model is a step behind
    sqlx::query(
        "update identity_users set roles = '{member}', access_version = 0 where user_id = $1",
    )
    .bind(ann.id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "update checkpoints set tx_id = $1::xid8, global_position = $2 where name = 'identity'",
    )
    .bind(&before.0)
    .bind(before.1)
    .execute(&app.db.pool)
    .await
    .unwrap();

    let renewed = refresh(&app, &ann.refresh_token).await;
    assert_eq!(renewed.status(), StatusCode::OK);
    let renewed: Value = renewed.json().await.unwrap();
    let token = renewed["access_token"].as_str().unwrap();
    assert!(
        accepted(&app, token).await,
        "the new token has the new roles"
    );
    let claims = app.api.token_keys().verify(token).unwrap();
    assert_eq!(
        claims.roles,
        vec![domain::Role::Operator, domain::Role::Member]
    );

    // a change this process knows of and the log does not have yet: 503, the token unused
    app.api.token_keys().access_changed(ann.id, 1_000);
    let behind = refresh(&app, renewed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(behind.headers()["retry-after"], "1");
    assert_eq!(
        problem(behind, StatusCode::SERVICE_UNAVAILABLE).await["code"],
        "identity_behind"
    );
    let used: bool = sqlx::query_scalar(
        "select bool_or(used_at is not null) from auth_refresh_tokens where token_hash = $1",
    )
    .bind(command_api::auth::sessions::token_hash(
        renewed["refresh_token"].as_str().unwrap(),
    ))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(!used, "the refresh token can be sent again");
}

/// Signs `email` in again with `user_agent`; the session's tokens.
async fn sign_in_with(app: &TestApp, email: &str, user_agent: &str) -> Value {
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("user-agent", user_agent)
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn sessions(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app
        .client
        .get(app.url("/api/v1/auth/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_user_sees_their_sessions_and_ends_one_or_all_the_others() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let laptop = sign_in_with(&app, &ann.email, "Laptop/1.0").await;
    let phone = sign_in_with(&app, &ann.email, "Phone/2.0").await;
    let laptop_token = laptop["access_token"].as_str().unwrap();

    let listed = sessions(&app, laptop_token).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0]["user_agent"], "Phone/2.0", "newest first");
    assert_eq!(listed[1]["user_agent"], "Laptop/1.0");
    assert_eq!(listed[1]["current"], true);
    assert_eq!(listed[0]["current"], false);
    assert_eq!(listed[1]["client_address"], "127.0.0.1");
    // the admin's sessions are not Ann's business
    assert!(listed.iter().all(|s| s["id"] != Value::Null));
    assert_eq!(
        listed[1]["last_used_at"], listed[1]["created_at"],
        "never refreshed yet"
    );

    // a refresh is a use of its session
    let refreshed: Value = refresh(&app, laptop["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let laptop_token = refreshed["access_token"].as_str().unwrap();
    let listed = sessions(&app, laptop_token).await;
    let used = |s: &Value| chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap()).unwrap();
    assert!(used(&listed[1]["last_used_at"]) > used(&listed[1]["created_at"]));
    assert_eq!(listed[1]["current"], true);

    // the phone is ended from the laptop; it can neither act nor refresh
    let phone_session = listed[0]["id"].as_str().unwrap();
    let path = format!("/api/v1/auth/sessions/{phone_session}/revoke");
    let ended = app.post(&path, laptop_token, Value::Null).await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert!(!accepted(&app, phone["access_token"].as_str().unwrap()).await);
    let refused = refresh(&app, phone["refresh_token"].as_str().unwrap()).await;
    problem(refused, StatusCode::UNAUTHORIZED).await;
    // again, or someone else's session, or no session at all: 404
    let again = app.post(&path, laptop_token, Value::Null).await;
    assert_eq!(
        problem(again, StatusCode::NOT_FOUND).await["code"],
        "session_not_found"
    );
    let admins = sessions(&app, &app.admin.token).await;
    let theirs = format!(
        "/api/v1/auth/sessions/{}/revoke",
        admins[0]["id"].as_str().unwrap()
    );
    problem(
        app.post(&theirs, laptop_token, Value::Null).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(accepted(&app, &app.admin.token).await);

    // every other one: the first sign-in goes, the laptop stays
    let response = app
        .post(
            "/api/v1/auth/sessions/revoke-others",
            laptop_token,
            Value::Null,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ended"], 1);
    assert!(!accepted(&app, &ann.token).await);
    assert!(accepted(&app, laptop_token).await);
    assert_eq!(sessions(&app, laptop_token).await.len(), 1);
}

#[tokio::test]
async fn the_process_that_ends_sessions_refuses_them_before_it_answers() {
    let app = spawn().await;
    // the announcement that tells every process of an ended session never comes: what is
    // refused is what the answering process noted itself
    sqlx::query("alter table auth_sessions disable trigger auth_sessions_ended")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let ann = app.user(&["member"], &[]).await;
    let bob = app.user(&["member"], &[]).await;
    let response = app
        .post(
            &format!("/api/v1/users/{}/sessions/revoke", ann.id),
            &app.admin.token,
            Value::Null,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!accepted(&app, &ann.token).await);
    let response = app
        .post(
            &format!("/api/v1/users/{}/deactivate", bob.id),
            &app.admin.token,
            Value::Null,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        refusal(&app, &bob.token).await.as_deref(),
        Some("session_ended")
    );
    let cid = app.user(&["member"], &[]).await;
    let response = app
        .put(
            &format!("/api/v1/users/{}/password", cid.id),
            &cid.token,
            json!({"password": "a brand new password", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!accepted(&app, &cid.token).await);
}

/// An admin sets a new password for `user_id`.
async fn reset_password(app: &TestApp, user_id: uuid::Uuid) {
    let reset = app
        .put(
            &format!("/api/v1/users/{user_id}/password"),
            &app.admin.token,
            json!({"password": "a brand new password"}),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::OK);
}

/// A sign-in checks the password, then opens its session: a password change or a deactivation
/// in between either ends the session or refuses it, never leaves it open.
#[tokio::test]
async fn a_sign_in_racing_a_password_change_or_a_deactivation_keeps_no_session() {
    let app = spawn().await;
    let sessions = app.api.state().sessions();
    let client = Client {
        address: None,
        user_agent: None,
    };
    let read = |email: String| {
        let pool = app.db.pool.clone();
        async move {
            store::find_login(&pool, DEFAULT_TENANT, &email_key(&email))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let live = |user_id: uuid::Uuid| {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from auth_sessions where user_id = $1 and revoked_at is null",
        )
        .bind(user_id)
        .fetch_one(&app.db.pool)
    };

    // the password changes after the sign-in read the old hash: no session is opened
    let ann = app.user(&["member"], &[]).await;
    let before = read(ann.email.clone()).await;
    let old_hash = before.password_hash.clone().unwrap();
    reset_password(&app, ann.id).await;
    assert!(matches!(
        sessions.start(&before.principal, &client, &old_hash).await,
        Err(SessionError::AccountChanged)
    ));
    assert_eq!(live(ann.id).await.unwrap(), 0);

    // a session opened with the old hash after the change was projected, just before the new
    // hash was stored (its user version is the change's, so the projector left it): the new
    // hash ends it
    let bob = app.user(&["member"], &[]).await;
    let record = read(bob.email.clone()).await;
    let hash = record.password_hash.clone().unwrap();
    let opened = sessions
        .start(&record.principal, &client, &hash)
        .await
        .unwrap();
    sqlx::query("update auth_sessions set user_version = 1000 where session_id = $1")
        .bind(opened.session_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    reset_password(&app, bob.id).await;
    assert_eq!(live(bob.id).await.unwrap(), 0);
    assert!(!accepted(&app, &opened.access_token).await);

    // a session opened between a deactivation's append and its projection (after the event's
    // time, on the version before it) is ended by the projection
    let cid = app.user(&["member"], &[]).await;
    sqlx::query(
        "update auth_sessions set created_at = now() + interval '1 minute' where user_id = $1",
    )
    .bind(cid.id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let record = read(cid.email.clone()).await;
    let response = app
        .post(
            &format!("/api/v1/users/{}/deactivate", cid.id),
            &app.admin.token,
            Value::Null,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(live(cid.id).await.unwrap(), 0);
    assert!(!accepted(&app, &cid.token).await);
    // and one whose sign-in read the account before it was deactivated is refused
    assert!(matches!(
        sessions
            .start(&record.principal, &client, &record.password_hash.unwrap())
            .await,
        Err(SessionError::AccountChanged)
    ));
}

#[tokio::test]
async fn an_admin_ends_every_session_of_a_user_and_the_log_says_who_and_why() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let bob = app.user(&["member"], &[]).await;
    let second = sign_in_with(&app, &ann.email, "Phone/2.0").await;
    let path = format!("/api/v1/users/{}/sessions/revoke", ann.id);
    let refused = app.post(&path, &bob.token, Value::Null).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let response = app
        .post(&path, &app.admin.token, json!({"reason": "laptop stolen"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!accepted(&app, &ann.token).await);
    assert!(!accepted(&app, second["access_token"].as_str().unwrap()).await);
    let refused = refresh(&app, &ann.refresh_token).await;
    problem(refused, StatusCode::UNAUTHORIZED).await;
    assert!(accepted(&app, &bob.token).await);
    let events = app.events("user", &ann.id.to_string()).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "UserSessionsEnded");
    assert_eq!(
        app.opened(&last["payload"]["reason"]).await.as_deref(),
        Some("laptop stolen")
    );
    assert_eq!(
        last["payload"]["ended_by"],
        format!("user:{}", app.admin.id)
    );
    // the password still signs in
    app.sign_in(&ann.email, PASSWORD, None).await;
}
