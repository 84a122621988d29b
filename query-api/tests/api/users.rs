//! `GET /api/v1/users[/{id}|/me]`: the tenant's users for its admins, and every caller's own.

use domain::Role;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::support::*;

const ADMIN: u128 = 0xAD0;

/// One row of the identity read model, as the identity projector writes it.
async fn add_user(
    app: &TestApp,
    tenant: &str,
    n: u128,
    email: &str,
    roles: &[&str],
    groups: &[&str],
    status: &str,
) {
    sqlx::query(
        "insert into identity_users (user_id, tenant_id, email, email_key, display_name, roles, \
         groups, status, version, created_at, updated_at) \
         values ($1, $2, $3, lower($3), 'User ' || $3, $4, $5, $6, 3, now(), now())",
    )
    .bind(user(n))
    .bind(tenant)
    .bind(email)
    .bind(roles)
    .bind(groups)
    .bind(status)
    .execute(app.pool())
    .await
    .unwrap();
}

async fn seed(app: &TestApp) {
    add_user(
        app,
        TENANT,
        ADMIN,
        "admin@acme.test",
        &["admin"],
        &[],
        "active",
    )
    .await;
    add_user(
        app,
        TENANT,
        0x1,
        "Dora@acme.test",
        &["member"],
        &["clerks"],
        "active",
    )
    .await;
    add_user(
        app,
        TENANT,
        0x2,
        "bea@acme.test",
        &["member", "operator"],
        &["clerks", "managers"],
        "active",
    )
    .await;
    add_user(
        app,
        TENANT,
        0x3,
        "carl@acme.test",
        &["member"],
        &["managers"],
        "deactivated",
    )
    .await;
    add_user(
        app,
        TENANT,
        0x4,
        "ann@acme.test",
        &["auditor"],
        &[],
        "active",
    )
    .await;
    add_user(
        app,
        "globex",
        0x5,
        "abe@globex.test",
        &["member"],
        &["clerks"],
        "active",
    )
    .await;
}

fn admin_token(app: &TestApp) -> String {
    app.token(TENANT, user(ADMIN), &[Role::Admin], &[])
}

fn emails(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect()
}

/// The emails of every item of `list`, paged `limit` at a time.
async fn every_email(app: &TestApp, list: &str, limit: usize, token: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut path = format!("{list}?limit={limit}");
    loop {
        let page = app.ok(&path, token).await;
        assert!(page["items"].as_array().unwrap().len() <= limit);
        seen.extend(emails(&page).into_iter().map(str::to_owned));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{list}?limit={limit}&cursor={cursor}"),
            None => return seen,
        }
    }
}

#[tokio::test]
async fn an_admin_pages_through_the_tenants_users_by_email_and_filters_them() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let token = admin_token(&app);

    let seen = every_email(&app, "/api/v1/users", 2, &token).await;
    // every user of the tenant once, ignoring case; none of another tenant's
    assert_eq!(
        seen,
        [
            "admin@acme.test",
            "ann@acme.test",
            "bea@acme.test",
            "carl@acme.test",
            "Dora@acme.test"
        ]
    );

    let bea = &app
        .ok("/api/v1/users?email=%20BEA@acme.test%20", &token)
        .await["items"][0];
    assert_eq!(bea["id"], user(0x2).to_string());
    assert_eq!(bea["tenant_id"], TENANT);
    assert_eq!(bea["display_name"], "User bea@acme.test");
    assert_eq!(bea["roles"], serde_json::json!(["member", "operator"]));
    assert_eq!(bea["groups"], serde_json::json!(["clerks", "managers"]));
    assert_eq!(bea["status"], "active");
    assert_eq!(bea["version"], 3);
    assert!(bea["password_changed_at"].is_null());
    assert_eq!(bea["two_factor"], false);
    assert_eq!(bea["email_notifications"], "all");
    assert!(bea["two_factor_enabled_at"].is_null());
    assert!(bea.get("password_hash").is_none() && bea.get("email_key").is_none());

    // Dora signs in with a second factor
    sqlx::query(
        "update identity_users set two_factor_enabled_at = now() where email = 'Dora@acme.test'",
    )
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query(
        "insert into identity_recovery_codes (user_id, code_hash, used_at) \
         values ($1, '\\x01', null), ($1, '\\x02', now())",
    )
    .bind(user(0x1))
    .execute(app.pool())
    .await
    .unwrap();
    let dora = &app.ok("/api/v1/users?email=dora@acme.test", &token).await["items"][0];
    assert_eq!(dora["two_factor"], true);
    assert_eq!(dora["recovery_codes_left"], 1, "one unused of two");
    assert!(bea["recovery_codes_left"].is_null());
    assert!(dora["two_factor_enabled_at"].is_string());

    for (query, expected) in [
        ("group=managers", vec!["bea@acme.test", "carl@acme.test"]),
        (
            "role=member&status=active",
            vec!["bea@acme.test", "Dora@acme.test"],
        ),
        ("status=deactivated", vec!["carl@acme.test"]),
        ("group=managers&role=operator", vec!["bea@acme.test"]),
        ("email=abe@globex.test", vec![]),
        ("group=nobody", vec![]),
        ("two_factor=true", vec!["Dora@acme.test"]),
        (
            "two_factor=false&role=member",
            vec!["bea@acme.test", "carl@acme.test"],
        ),
    ] {
        let page = app.ok(&format!("/api/v1/users?{query}"), &token).await;
        assert_eq!(emails(&page), expected, "?{query}");
    }
}

#[tokio::test]
async fn everyone_reads_themselves_and_only_an_admin_reads_others() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let dora = app.token(TENANT, user(0x1), &[Role::Member], &["clerks"]);

    let me = app.get("/api/v1/users/me", &dora).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.headers()["etag"], "\"3\"");
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["email"], "Dora@acme.test");
    assert_eq!(me["groups"], serde_json::json!(["clerks"]));
    // by id too, and not again when the version is the one the client has
    let by_id = format!("/api/v1/users/{}", user(0x1));
    assert_eq!(app.ok(&by_id, &dora).await, me);
    let unchanged = app
        .client
        .get(app.url(&by_id))
        .bearer_auth(&dora)
        .header("if-none-match", "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);

    // a member: no list, and another user is one that does not exist
    let problem = app
        .problem("/api/v1/users", &dora, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(problem["code"], "forbidden");
    let bea = format!("/api/v1/users/{}", user(0x2));
    app.problem(&bea, &dora, StatusCode::NOT_FOUND).await;

    // an admin reads any user of the tenant, and none of another tenant
    let admin = admin_token(&app);
    assert_eq!(app.ok(&bea, &admin).await["email"], "bea@acme.test");
    let abe = format!("/api/v1/users/{}", user(0x5));
    app.problem(&abe, &admin, StatusCode::NOT_FOUND).await;
    let missing = format!("/api/v1/users/{}", Uuid::now_v7());
    app.problem(&missing, &admin, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn bad_parameters_are_named() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let admin = admin_token(&app);
    for (path, field) in [
        ("/api/v1/users/not-a-uuid", "id"),
        ("/api/v1/users?role=boss", "role"),
        ("/api/v1/users?status=gone", "status"),
        ("/api/v1/users?limit=0", "limit"),
        ("/api/v1/users?cursor=nonsense", "cursor"),
        ("/api/v1/users?name=ann", "name"),
    ] {
        let problem = app
            .problem(path, &admin, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
        assert_eq!(problem["errors"][0]["field"], field, "{path}: {problem}");
    }
    let response = app
        .client
        .get(app.url("/api/v1/users/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn anyone_finds_the_active_colleagues_of_their_tenant_in_the_directory() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let dora = app.token(TENANT, user(0x1), &[Role::Member], &["clerks"]);

    let seen = every_email(&app, "/api/v1/directory", 3, &dora).await;
    // by name ("User admin@...", ...), ignoring case; not the deactivated, not another tenant's
    assert_eq!(
        seen,
        [
            "admin@acme.test",
            "ann@acme.test",
            "bea@acme.test",
            "Dora@acme.test"
        ]
    );
    let page = app.ok("/api/v1/directory?q=bea", &dora).await;
    let bea = &page["items"][0];
    let mut keys: Vec<&str> = bea
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["display_name", "email", "groups", "id"],
        "no roles or status"
    );
    assert_eq!(bea["id"], user(0x2).to_string());
    assert_eq!(bea["groups"], serde_json::json!(["clerks", "managers"]));

    for (query, expected) in [
        ("q=DORA", vec!["Dora@acme.test"]),
        ("q=%20bea%40ACME%20", vec!["bea@acme.test"]),
        ("group=managers", vec!["bea@acme.test"]),
        (
            "q=user&group=clerks",
            vec!["bea@acme.test", "Dora@acme.test"],
        ),
        ("q=%25", vec![]),
        ("q=_", vec![]),
        ("q=globex", vec![]),
    ] {
        let page = app.ok(&format!("/api/v1/directory?{query}"), &dora).await;
        assert_eq!(emails(&page), expected, "?{query}");
    }
    let long = format!("/api/v1/directory?q={}", "x".repeat(201));
    let problem = app
        .problem(&long, &dora, StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    assert_eq!(problem["errors"][0]["field"], "q");
    app.problem(
        "/api/v1/directory?role=admin",
        &dora,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let response = app
        .client
        .get(app.url("/api/v1/directory"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_default_tenants_admins_list_every_tenant_and_nobody_else_does() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    sqlx::query(
        "insert into identity_tenants (tenant_id, name, created_at) \
         values ('acme', 'Acme Corp', now()), ('globex', 'Globex', now())",
    )
    .execute(app.pool())
    .await
    .unwrap();
    add_user(
        &app,
        "default",
        0xD0,
        "root@example.test",
        &["admin"],
        &[],
        "active",
    )
    .await;
    let root = app.token("default", user(0xD0), &[Role::Admin], &[]);
    let page = app.ok("/api/v1/tenants", &root).await;
    let tenants: Vec<(&str, &str, i64)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap(),
                t["name"].as_str().unwrap(),
                t["users"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tenants,
        [
            ("acme", "Acme Corp", 5),
            ("default", "default", 1),
            ("globex", "Globex", 1)
        ]
    );
    // an admin of another tenant, a member of the default one: 403
    app.problem("/api/v1/tenants", &admin_token(&app), StatusCode::FORBIDDEN)
        .await;
    let member = app.token("default", user(0xD1), &[Role::Member], &[]);
    app.problem("/api/v1/tenants", &member, StatusCode::FORBIDDEN)
        .await;
}
