//! Two-factor sign-in: enrolment and confirmation, sign-in with one-time and recovery codes
//! that each work once, replacing recovery codes, turning it off, and the throttle.

use command_api::auth::two_factor::TotpKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, User, fields, problem, spawn, spawn_with};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn path(user: &User, rest: &str) -> String {
    format!("/api/v1/users/{}/two-factor{rest}", user.id)
}

async fn login_with(app: &TestApp, user: &User, code: Option<&str>) -> reqwest::Response {
    let mut body = json!({"email": user.email, "password": PASSWORD});
    if let Some(code) = code {
        body["one_time_code"] = json!(code);
    }
    app.client
        .post(app.url("/api/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The problem answered to `POST path` with `body`, checked to have `status`.
async fn refused(app: &TestApp, path: &str, token: &str, body: Value, status: StatusCode) -> Value {
    problem(app.post(path, token, body).await, status).await
}

async fn refused_login(app: &TestApp, user: &User, code: Option<&str>) -> String {
    let response = login_with(app, user, code).await;
    let body = problem(response, StatusCode::UNAUTHORIZED).await;
    body["code"].as_str().unwrap().to_owned()
}

/// Turns on `user`'s two-factor sign-in: their key and recovery codes.
async fn enable(app: &TestApp, user: &User) -> (TotpKey, Vec<String>) {
    let response = app
        .post(
            &path(user, ""),
            &user.token,
            json!({"current_password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let enrolment: Value = response.json().await.unwrap();
    let key = TotpKey::from_base32(enrolment["secret"].as_str().unwrap()).unwrap();
    let response = app
        .post(
            &path(user, "/confirm"),
            &user.token,
            json!({"one_time_code": key.code(now())}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let codes = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (key, codes)
}

#[tokio::test]
async fn a_user_turns_on_two_factor_sign_in_and_each_code_signs_in_once() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;

    let missing = refused(
        &app,
        &path(&ann, ""),
        &ann.token,
        json!({}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&missing), ["current_password"]);
    let wrong = refused(
        &app,
        &path(&ann, ""),
        &ann.token,
        json!({"current_password": "not the password at all"}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(wrong["code"], "wrong_current_password");

    // an Idempotency-Key is not a way to keep the key in the database
    let response = app
        .client
        .post(app.url(&path(&ann, "")))
        .bearer_auth(&ann.token)
        .header("Idempotency-Key", "enrol-1")
        .json(&json!({"current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let enrolment: Value = response.json().await.unwrap();
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let stored: i64 = sqlx::query_scalar("select count(*) from idempotency_keys")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Workledger:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert_eq!(
        (
            &enrolment["algorithm"],
            &enrolment["digits"],
            &enrolment["period"]
        ),
        (&json!("SHA1"), &json!(6), &json!(30))
    );
    let key = TotpKey::from_base32(&secret).unwrap();

    // not confirmed yet: the password alone still signs in
    assert_eq!(login_with(&app, &ann, None).await.status(), StatusCode::OK);

    // a code five minutes away is not the current one
    let wrong = refused(
        &app,
        &path(&ann, "/confirm"),
        &ann.token,
        json!({"one_time_code": key.code(now() + 300)}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(wrong["code"], "invalid_one_time_code");
    assert_eq!(fields(&wrong), ["one_time_code"]);
    assert_eq!(app.count_events("UserTwoFactorEnabled").await, 0);

    let confirmed_with = key.code(now());
    let response = app
        .post(
            &path(&ann, "/confirm"),
            &ann.token,
            json!({"one_time_code": confirmed_with}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-consistency-token"));
    let body: Value = response.json().await.unwrap();
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    assert_eq!(body["id"], ann.id.to_string());

    let events = app.events("user", &ann.id.to_string()).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "UserTwoFactorEnabled");
    assert_eq!(
        last["payload"]["enabled_by"],
        json!(format!("user:{}", ann.id))
    );
    // neither the key nor a recovery code is in the log
    let log: String = sqlx::query_scalar("select string_agg(payload::text, ' ') from events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(!log.contains(&secret));
    assert!(codes.iter().all(|c| !log.contains(c.as_str())));

    assert_eq!(refused_login(&app, &ann, None).await, "two_factor_required");
    // the confirmation's code is used up
    assert_eq!(
        refused_login(&app, &ann, Some(&confirmed_with)).await,
        "invalid_one_time_code"
    );
    let next = key.code(now() + 30);
    let response = login_with(&app, &ann, Some(&next)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        refused_login(&app, &ann, Some(&next)).await,
        "invalid_one_time_code"
    );
    // a recovery code, however it is typed, once
    let typed = codes[3].to_uppercase().replace('-', " ");
    assert_eq!(
        login_with(&app, &ann, Some(&typed)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        refused_login(&app, &ann, Some(&codes[3])).await,
        "invalid_one_time_code"
    );
    assert_eq!(
        refused_login(&app, &ann, Some("nope0-nope0")).await,
        "invalid_one_time_code"
    );

    // on already: starting again is refused (turn it off first)
    let again = refused(
        &app,
        &path(&ann, ""),
        &ann.token,
        json!({"current_password": PASSWORD}),
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(again["code"], "two_factor_enabled");
}

#[tokio::test]
async fn only_the_user_turns_it_on_and_another_tenants_admin_cannot_find_them() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let bob = app.user(&["member"], &[]).await;
    let response = app
        .post(
            &path(&ann, ""),
            &bob.token,
            json!({"current_password": PASSWORD}),
        )
        .await;
    assert_eq!(
        problem(response, StatusCode::FORBIDDEN).await["code"],
        "forbidden"
    );
    let response = app
        .post(
            &path(&ann, ""),
            &app.admin.token,
            json!({"current_password": crate::helpers::ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let not_started = refused(
        &app,
        &path(&ann, "/confirm"),
        &ann.token,
        json!({"one_time_code": "123456"}),
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(not_started["code"], "two_factor_not_started");

    let response = app
        .post(
            "/api/v1/tenants",
            &app.admin.token,
            json!({"id": "acme", "name": "Acme Corp", "admin_email": "boss@acme.test",
                   "admin_password": "acme admin password"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let boss = app
        .sign_in("boss@acme.test", "acme admin password", Some("acme"))
        .await;
    enable(&app, &ann).await;
    let response = app
        .post(&path(&ann, "/disable"), &boss.token, Value::Null)
        .await;
    assert_eq!(
        problem(response, StatusCode::NOT_FOUND).await["code"],
        "user_not_found"
    );
    assert_eq!(refused_login(&app, &ann, None).await, "two_factor_required");
}

#[tokio::test]
async fn recovery_codes_are_replaced_and_it_is_turned_off_by_the_user_or_an_admin() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let bob = app.user(&["member"], &[]).await;
    let (_key, old_codes) = enable(&app, &ann).await;

    let missing = refused(
        &app,
        &path(&ann, "/recovery-codes"),
        &ann.token,
        json!({}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&missing), ["current_password"]);
    let response = app
        .post(
            &path(&ann, "/recovery-codes"),
            &ann.token,
            json!({"current_password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let new_codes: Vec<&str> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(new_codes.len(), 10);
    assert_eq!(app.count_events("UserRecoveryCodesReplaced").await, 1);
    assert_eq!(
        refused_login(&app, &ann, Some(&old_codes[0])).await,
        "invalid_one_time_code"
    );
    assert_eq!(
        login_with(&app, &ann, Some(new_codes[0])).await.status(),
        StatusCode::OK
    );

    // not by a colleague, not by oneself without the password
    let response = app
        .post(&path(&ann, "/disable"), &bob.token, Value::Null)
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let wrong = refused(
        &app,
        &path(&ann, "/disable"),
        &ann.token,
        json!({"current_password": "not the password at all"}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(wrong["code"], "wrong_current_password");
    let too_long = refused(
        &app,
        &path(&ann, "/disable"),
        &app.admin.token,
        json!({"reason": "x".repeat(1001)}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&too_long), ["reason"]);
    assert_eq!(app.count_events("UserTwoFactorDisabled").await, 0);

    // an admin, for a lost phone
    let response = app
        .post(
            &path(&ann, "/disable"),
            &app.admin.token,
            json!({"reason": "lost the phone"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let events = app.events("user", &ann.id.to_string()).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "UserTwoFactorDisabled");
    assert_eq!(
        app.opened(&last["payload"]["reason"]).await.as_deref(),
        Some("lost the phone")
    );
    assert_eq!(
        last["payload"]["disabled_by"],
        json!(format!("user:{}", app.admin.id))
    );
    let left: i64 = sqlx::query_scalar(
        "select (select count(*) from identity_two_factor) + (select count(*) from identity_recovery_codes)",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    assert_eq!(login_with(&app, &ann, None).await.status(), StatusCode::OK);
    let shown: bool = sqlx::query_scalar(
        "select two_factor_enabled_at is not null from identity_users where user_id = $1",
    )
    .bind(ann.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(!shown);

    // off already: nothing more is recorded; and the user may turn it on and off again
    let response = app
        .post(&path(&ann, "/disable"), &app.admin.token, Value::Null)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.count_events("UserTwoFactorDisabled").await, 1);
    enable(&app, &ann).await;
    let response = app
        .post(
            &path(&ann, "/disable"),
            &ann.token,
            json!({"current_password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.count_events("UserTwoFactorDisabled").await, 2);
    assert_eq!(login_with(&app, &ann, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn wrong_codes_count_against_the_account_and_the_password_alone_does_not_reset_them() {
    let app = spawn_with(|s| {
        s.login_throttle.max_failures_per_account = 3;
        s.login_throttle.max_failures_per_address = 1000;
    })
    .await;
    let ann = app.user(&["member"], &[]).await;
    let (key, _codes) = enable(&app, &ann).await;
    let wrong = key.code(now() + 600);
    for _ in 0..2 {
        assert_eq!(
            refused_login(&app, &ann, Some(&wrong)).await,
            "invalid_one_time_code"
        );
    }
    // the right password without a code neither fails nor forgets the two failures, at
    // sign-in nor at the enrolment routes that take a password
    assert_eq!(refused_login(&app, &ann, None).await, "two_factor_required");
    let enrol = app
        .post_anonymous(
            "/api/v1/auth/two-factor",
            &json!({"email": ann.email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(enrol.status(), StatusCode::CONFLICT);
    // the third failure is admitted and locks the account
    assert_eq!(
        refused_login(&app, &ann, Some(&wrong)).await,
        "invalid_one_time_code"
    );
    let response = login_with(&app, &ann, Some(&key.code(now() + 30))).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_tenant_that_requires_two_factor_sign_in_has_its_users_enrol_before_they_sign_in() {
    let app = spawn().await;
    let ann = app.user(&["member"], &[]).await;
    let policy = "/api/v1/tenants/default/two-factor-policy";
    // its admins only; another tenant's is not found
    let not_admin = problem(
        app.put(policy, &ann.token, json!({"required": true})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(not_admin["code"], "forbidden");
    let other = problem(
        app.put(
            "/api/v1/tenants/acme/two-factor-policy",
            &app.admin.token,
            json!({"required": true}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(other["code"], "tenant_not_found");
    let set = app
        .put(policy, &app.admin.token, json!({"required": true}))
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    let events = app.events("tenant", "default").await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "TenantTwoFactorPolicyChanged");
    assert_eq!(last["payload"]["required"], true);
    assert_eq!(
        last["payload"]["changed_by"],
        format!("user:{}", app.admin.id)
    );
    // the same again changes nothing
    let again = app
        .put(policy, &app.admin.token, json!({"required": true}))
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(app.events("tenant", "default").await.len(), events.len());

    // without an authenticator: no sign-in, and the session's refresh ends it
    let response = login_with(&app, &ann, None).await;
    let body = problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(body["code"], "two_factor_enrolment_required");
    let refreshed = app
        .post_anonymous(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": ann.refresh_token}),
        )
        .await;
    let body = problem(refreshed, StatusCode::FORBIDDEN).await;
    assert_eq!(body["code"], "two_factor_enrolment_required");
    let sessions = app
        .client
        .get(app.url("/api/v1/auth/sessions"))
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(sessions.status(), StatusCode::UNAUTHORIZED);

    // enrolling takes the password, checked as a sign-in
    let credentials = json!({"email": ann.email, "password": PASSWORD});
    let wrong = app
        .post_anonymous(
            "/api/v1/auth/two-factor",
            &json!({"email": ann.email, "password": "not the password"}),
        )
        .await;
    assert_eq!(
        problem(wrong, StatusCode::UNAUTHORIZED).await["code"],
        "invalid_credentials"
    );
    let enrolment: Value = app
        .post_anonymous("/api/v1/auth/two-factor", &credentials)
        .await
        .json()
        .await
        .unwrap();
    let key = TotpKey::from_base32(enrolment["secret"].as_str().unwrap()).unwrap();
    let mut confirm = credentials.clone();
    confirm["one_time_code"] = json!(key.code(now()));
    let confirmed = app
        .post_anonymous("/api/v1/auth/two-factor/confirm", &confirm)
        .await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let confirmed: Value = confirmed.json().await.unwrap();
    assert_eq!(confirmed["recovery_codes"].as_array().unwrap().len(), 10);
    let signed_in = login_with(&app, &ann, Some(&key.code(now() + 30))).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let token: Value = signed_in.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();

    // nor can they turn it off themselves while the tenant requires it
    let off = refused(
        &app,
        &path(&ann, "/disable"),
        token,
        json!({"current_password": PASSWORD}),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(off["code"], "two_factor_required_by_tenant");
    // once no longer required, they can
    let unset = app
        .put(policy, &app.admin.token, json!({"required": false}))
        .await;
    assert_eq!(unset.status(), StatusCode::OK);
    let off = app
        .post(
            &path(&ann, "/disable"),
            token,
            json!({"current_password": PASSWORD}),
        )
        .await;
    assert_eq!(off.status(), StatusCode::OK);
}
