//! The login throttle under concurrent attempts, and the current password of a password change
//! counted under the same per-account key.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, PASSWORD, TestApp, problem, spawn_with};

/// The statuses of sign-ins with `bodies`, all sent at once.
async fn concurrent_logins(app: &TestApp, bodies: Vec<Value>) -> Vec<StatusCode> {
    let mut requests = tokio::task::JoinSet::new();
    for body in bodies {
        let request = app.client.post(app.url("/api/v1/auth/login")).json(&body);
        requests.spawn(async move { request.send().await.unwrap().status() });
    }
    requests.join_all().await
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// The `Retry-After` of a 429, in seconds.
fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_passwords_for_one_account_get_at_most_the_limit_of_401s() {
    let app = spawn_with(|s| {
        s.login_throttle.max_failures_per_account = 5;
        s.login_throttle.max_failures_per_address = 1000;
    })
    .await;
    let bodies = (0..40)
        .map(|i| json!({"email": ADMIN_EMAIL, "password": format!("wrong guess number {i}")}))
        .collect();
    let statuses = concurrent_logins(&app, bodies).await;
    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        35,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_passwords_from_one_address_get_at_most_the_limit_of_401s() {
    let app = spawn_with(|s| {
        s.login_throttle.max_failures_per_account = 1000;
        s.login_throttle.max_failures_per_address = 5;
    })
    .await;
    let bodies = (0..40)
        .map(
            |i| json!({"email": format!("guess{i}@example.com"), "password": "password guess 123"}),
        )
        .collect();
    let statuses = concurrent_logins(&app, bodies).await;
    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        35,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn successful_sign_ins_do_not_use_up_the_limit_of_their_address() {
    let app = spawn_with(|s| {
        s.login_throttle.max_failures_per_account = 1000;
        s.login_throttle.max_failures_per_address = 3;
    })
    .await;
    let ann = app.user(&["member"], &[]).await;
    for _ in 0..5 {
        app.sign_in(&ann.email, PASSWORD, None).await;
    }
    for i in 0..2 {
        let email = format!("guess{i}@example.com");
        assert_eq!(
            app.login(&email, "password guess 123", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    app.sign_in(&ann.email, PASSWORD, None).await;
}

#[tokio::test]
async fn wrong_current_passwords_lock_the_account_and_change_nothing() {
    let app = spawn_with(|s| {
        s.login_throttle.max_failures_per_account = 3;
        s.login_throttle.lockout = Duration::from_secs(3);
    })
    .await;
    let ann = app.user(&["member"], &[]).await;
    let path = format!("/api/v1/users/{}/password", ann.id);
    let change = |current: &str| {
        app.put(
            &path,
            &ann.token,
            json!({"password": "a brand new password", "current_password": current}),
        )
    };
    for i in 0..3 {
        let wrong = problem(
            change(&format!("wrong guess number {i}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(wrong["code"], "wrong_current_password");
    }
    // locked: a further guess, the right current password and signing in are all refused
    for locked in [
        change("wrong guess number 3").await,
        change(PASSWORD).await,
        app.login(&ann.email, PASSWORD, None).await,
    ] {
        assert!((1..=3).contains(&retry_after(&locked)));
        let body = problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
        assert_eq!(body["code"], "too_many_attempts");
    }
    let wait = retry_after(&change(PASSWORD).await);
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200)).await;

    // nothing changed: no event, the session still refreshes, the old password signs in
    let events = app.events("user", &ann.id.to_string()).await;
    assert!(
        events.iter().all(|e| e["type"] != "UserPasswordChanged"),
        "{events:?}"
    );
    let refreshed = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": ann.refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    app.sign_in(&ann.email, PASSWORD, None).await;
    assert_eq!(
        app.login(&ann.email, "a brand new password", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn failed_sign_ins_and_wrong_current_passwords_count_against_the_same_limit() {
    let app = spawn_with(|s| s.login_throttle.max_failures_per_account = 3).await;
    let ann = app.user(&["member"], &[]).await;
    let path = format!("/api/v1/users/{}/password", ann.id);
    for _ in 0..2 {
        assert_eq!(
            app.login(&ann.email, "definitely the wrong one", None)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let wrong = app
        .put(
            &path,
            &ann.token,
            json!({"password": "a brand new password", "current_password": "nope nope nope"}),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let locked = app
        .put(
            &path,
            &ann.token,
            json!({"password": "a brand new password", "current_password": PASSWORD}),
        )
        .await;
    assert!(locked.headers().contains_key("retry-after"));
    problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
}
