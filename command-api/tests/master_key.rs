//! With a master key installed (`WORKLEDGER_MASTER_KEY`), the personal data keys and the
//! two-factor secrets the command API stores are wrapped with it, and everything that reads
//! them still works. A test binary of its own: the master key is installed once per process.

#[allow(dead_code, unused_imports)]
#[path = "api/helpers.rs"]
mod helpers;

use command_api::auth::two_factor::TotpKey;
use event_store::master_key::{self, MasterKey, MasterKeys};
use reqwest::StatusCode;
use serde_json::{Value, json};

use helpers::{PASSWORD, TestApp, spawn};

/// Signs in with a password and a one-time code.
async fn sign_in(app: &TestApp, email: &str, code: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD, "one_time_code": code}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn stored_secrets_are_wrapped_with_the_master_key_and_still_serve() {
    let keys = MasterKeys::new(Some(MasterKey::from_bytes(&[42; 32])), Vec::new());
    assert!(master_key::install(Some(keys.clone())));
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;

    // ann's email address and name are sealed with her key, which is stored wrapped
    let (tenant, stored): (String, Vec<u8>) =
        sqlx::query_as("select tenant_id, key from personal_keys where user_id = $1")
            .bind(ann.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 72, "wrapped, not the bare 32 bytes");
    assert!(keys.is_current(&stored));
    let owner = master_key::personal_key_owner(&tenant, ann.id);
    assert_eq!(keys.unwrap(&stored, &owner).unwrap().len(), 32);
    // ... and the read model shows her email opened with it
    let email: String = sqlx::query_scalar("select email from identity_users where user_id = $1")
        .bind(ann.id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(email, ann.email);

    // the generated access-token signing secret too (the test app has one configured: a
    // server without one generates it), and it reads back the same
    let generated = command_api::load_keys(&app.db.pool, None).await.unwrap();
    let again = command_api::load_keys(&app.db.pool, None).await.unwrap();
    let post = reqwest::Method::POST;
    assert_eq!(
        generated.fingerprints.of(&post, "/x", b"{}"),
        again.fingerprints.of(&post, "/x", b"{}")
    );
    let signing: Vec<u8> = sqlx::query_scalar("select secret from auth_secrets")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(signing.len(), 64 + 40);
    assert!(keys.is_current(&signing));

    // her authenticator key is stored wrapped too, and signs her in
    let path = format!("/api/v1/users/{}/two-factor", ann.id);
    let response = app
        .post(&path, &ann.token, json!({"current_password": PASSWORD}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let enrolment: Value = response.json().await.unwrap();
    let key = TotpKey::from_base32(enrolment["secret"].as_str().unwrap()).unwrap();
    let stored: Vec<u8> =
        sqlx::query_scalar("select secret from identity_two_factor where user_id = $1")
            .bind(ann.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(keys.is_current(&stored));
    assert!(
        !stored.windows(key.bytes().len()).any(|w| w == key.bytes()),
        "the authenticator key is not stored in clear"
    );
    let now = chrono::Utc::now().timestamp();
    let response = app
        .post(
            &format!("{path}/confirm"),
            &ann.token,
            json!({"one_time_code": key.code(now)}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let login = sign_in(&app, &ann.email, &key.code(now + 30)).await;
    assert_eq!(login.status(), StatusCode::OK);

    // a wrapped secret copied onto another person's row does not open
    let bob = app.user(&["member"], &[]).await;
    sqlx::query(
        "update identity_two_factor set user_id = $2, confirmed_at = now() where user_id = $1",
    )
    .bind(ann.id)
    .bind(bob.id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let login = sign_in(&app, &bob.email, &key.code(now + 60)).await;
    assert_ne!(
        login.status(),
        StatusCode::OK,
        "another person's wrapped key signed in"
    );
}
