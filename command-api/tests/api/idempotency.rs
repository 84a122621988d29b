use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use axum::http::Method;
use command_api::idempotency::Fingerprints;

use crate::helpers::{SECRET, TestApp, problem, spawn};

async fn with_key(app: &TestApp, token: &str, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/tasks"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_first_response_and_runs_nothing() {
    let app = spawn().await;
    let body = json!({"name": "Pay the invoice"});
    let first = with_key(&app, &app.admin.token, "key-1", body.clone()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let etag = first.headers()["etag"].clone();
    let token = first.headers()["x-consistency-token"].clone();
    let location = first.headers()["location"].clone();
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.unwrap();

    let retry = with_key(&app, &app.admin.token, "key-1", body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["etag"], etag);
    assert_eq!(retry.headers()["x-consistency-token"], token);
    assert_eq!(retry.headers()["location"], location);
    assert_eq!(retry.headers()["content-type"], "application/json");
    assert!(retry.headers().contains_key("x-request-id"));
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry, first);
    assert_eq!(app.count_events("TaskOpened").await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_other_users_keys_are_their_own() {
    let app = spawn().await;
    let first = with_key(&app, &app.admin.token, "key-2", json!({"name": "One"})).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let reused = problem(
        with_key(&app, &app.admin.token, "key-2", json!({"name": "Two"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(reused["code"], "idempotency_key_reused");

    let operator = app.user(&["operator"], &[]).await;
    let theirs = with_key(&app, &operator.token, "key-2", json!({"name": "One"})).await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    assert!(!theirs.headers().contains_key("idempotent-replayed"));
    assert_eq!(app.count_events("TaskOpened").await, 2);

    let bad = app
        .client
        .post(app.url("/api/v1/tasks"))
        .bearer_auth(&app.admin.token)
        .header("idempotency-key", "")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(bad, StatusCode::BAD_REQUEST).await["code"],
        "invalid_idempotency_key"
    );
}

#[tokio::test]
async fn a_duplicate_of_a_request_still_running_is_refused_not_executed() {
    let app = spawn().await;
    let body = json!({"name": "Slow one"});
    // what the middleware stores while the first request runs: the key, held by a lease
    let fingerprint = Fingerprints::from_secret(SECRET.as_bytes()).of(
        &Method::POST,
        "/api/v1/tasks",
        &serde_json::to_vec(&body).unwrap(),
    );
    sqlx::query(
        "insert into idempotency_keys (tenant_id, user_id, key, request_hash, locked_until, expires_at) \
         values ('default', $1, 'busy', $2, now() + interval '1 minute', now() + interval '1 day')",
    )
    .bind(app.admin.id)
    .bind(&fingerprint)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let duplicate = with_key(&app, &app.admin.token, "busy", body.clone()).await;
    assert_eq!(duplicate.headers()["retry-after"], "1");
    let refused = problem(duplicate, StatusCode::CONFLICT).await;
    assert_eq!(refused["code"], "idempotency_key_in_progress");
    assert_eq!(app.count_events("TaskOpened").await, 0);

    // once the lease has run out (the first request died), a retry takes the key over
    sqlx::query("update idempotency_keys set locked_until = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let retry = with_key(&app, &app.admin.token, "busy", body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(app.count_events("TaskOpened").await, 1);
}

/// Polls `done` until it holds, for at most 10 s.
async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_request_given_up_while_its_command_runs_still_stores_the_answer_for_the_retry() {
    let app = spawn().await;
    let body = json!({"name": "Given up"});
    // appends wait behind this lock, so the command is still running when its client gives up
    let mut blocker = app.db.pool.begin().await.unwrap();
    sqlx::query("lock table events in exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let request = app
        .client
        .post(app.url("/api/v1/tasks"))
        .bearer_auth(&app.admin.token)
        .header("idempotency-key", "given-up")
        .json(&body)
        .send();
    let client = tokio::spawn(request);
    // the request holds its key and its append waits on the lock: then its client gives up
    wait_until("the command to wait at its append", || async {
        let waiting: bool = sqlx::query_scalar(
            "select exists (select from idempotency_keys where key = 'given-up') \
                    and exists (select from pg_stat_activity \
                                where datname = current_database() and wait_event_type = 'Lock')",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        waiting
    })
    .await;
    client.abort();
    assert!(client.await.unwrap_err().is_cancelled());
    let meanwhile = problem(
        with_key(&app, &app.admin.token, "given-up", body.clone()).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(meanwhile["code"], "idempotency_key_in_progress");
    blocker.rollback().await.unwrap();

    // the command goes on without its client and stores its answer
    wait_until("the given-up request's answer to be stored", || async {
        let stored: Option<bool> = sqlx::query_scalar(
            "select response_status is not null from idempotency_keys where key = 'given-up'",
        )
        .fetch_optional(&app.db.pool)
        .await
        .unwrap();
        stored == Some(true)
    })
    .await;
    let retry = with_key(&app, &app.admin.token, "given-up", body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(app.count_events("TaskOpened").await, 1);
}

#[tokio::test]
async fn final_answers_are_replayed_conflicts_release_the_key_and_expired_keys_are_swept() {
    let app = spawn().await;
    let someone = app.user(&["member"], &[]).await;
    let id = app.task(json!({"assignee": someone.id})).await;
    // a task nobody holds yet: claiming it would succeed but for a stale `If-Match`
    let free = app.task(json!({})).await;
    let send_to = |task: Uuid, key: &'static str, if_match: &'static str| {
        app.client
            .post(app.url(&format!("/api/v1/tasks/{task}/claim")))
            .bearer_auth(&app.admin.token)
            .header("idempotency-key", key)
            .header("if-match", if_match)
            .send()
    };
    let send = |key, if_match| send_to(id, key, if_match);
    // a 412 is final for its request: stored and replayed
    let stale = send_to(free, "k-stale", "\"7\"").await.unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let replayed = send_to(free, "k-stale", "\"7\"").await.unwrap();
    assert_eq!(replayed.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let kept: i64 = sqlx::query_scalar("select count(*) from idempotency_keys")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(kept, 1);
    // a conflict may resolve: the key is released and a retry runs the command again
    for _ in 0..2 {
        let conflict = send("k-409", "\"1\"").await.unwrap();
        assert!(!conflict.headers().contains_key("idempotent-replayed"));
        assert_eq!(
            problem(conflict, StatusCode::CONFLICT).await["code"],
            "task_already_assigned"
        );
    }

    sqlx::query("update idempotency_keys set expires_at = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let swept = command_api::maintenance::sweep(&app.db.pool, std::time::Duration::from_secs(900))
        .await
        .unwrap();
    assert_eq!(swept.idempotency_keys, 1);
}

fn sha256_of_request(path: &str, body: &Value) -> Vec<u8> {
    Sha256::new()
        .chain_update(format!("POST\n{path}\n"))
        .chain_update(serde_json::to_vec(body).unwrap())
        .finalize()
        .to_vec()
}

#[tokio::test]
async fn a_fingerprint_of_a_body_with_a_password_cannot_be_checked_against_guesses() {
    let app = spawn().await;
    let path = "/api/v1/users";
    let body = json!({
        "email": "new.clerk@example.com",
        "display_name": "New Clerk",
        "password": "a password nobody guesses",
        "roles": ["member"],
    });
    let created = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.admin.token)
        .header("idempotency-key", "new-user")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let (stored, keyed): (Vec<u8>, bool) = sqlx::query_as(
        "select request_hash, request_hash_keyed from idempotency_keys where key = 'new-user'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(keyed);
    // a reader of the table who knows the body but for its password cannot test a guess...
    assert_ne!(stored, sha256_of_request(path, &body));
    // ...without the server's secret
    let with_secret = Fingerprints::from_secret(SECRET.as_bytes()).of(
        &Method::POST,
        path,
        &serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(stored, with_secret);
    let another_secret = Fingerprints::from_secret(b"another secret, also 32 or more bytes").of(
        &Method::POST,
        path,
        &serde_json::to_vec(&body).unwrap(),
    );
    assert_ne!(stored, another_secret);
}

#[tokio::test]
async fn a_key_stored_with_a_plain_hash_before_keyed_fingerprints_is_still_recognised() {
    let app = spawn().await;
    let path = "/api/v1/tasks";
    let body = json!({"name": "Stored by the earlier version"});
    let response_body = serde_json::to_vec(&json!({"id": Uuid::now_v7()})).unwrap();
    sqlx::query(
        "insert into idempotency_keys (tenant_id, user_id, key, request_hash, request_hash_keyed, \
             response_status, response_headers, response_body, expires_at) \
         values ('default', $1, 'old', $2, false, 201, \
                 '{\"content-type\": \"application/json\"}', $3, now() + interval '1 day')",
    )
    .bind(app.admin.id)
    .bind(sha256_of_request(path, &body))
    .bind(&response_body)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let retry = with_key(&app, &app.admin.token, "old", body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(
        retry.bytes().await.unwrap().as_ref(),
        response_body.as_slice()
    );
    let other = with_key(&app, &app.admin.token, "old", json!({"name": "Another"})).await;
    assert_eq!(
        problem(other, StatusCode::UNPROCESSABLE_ENTITY).await["code"],
        "idempotency_key_reused"
    );
    assert_eq!(app.count_events("TaskOpened").await, 0);
}
