//! `workledger admin`: tenants and users without the API.

use std::process::{Command, Output};

use event_store::testing::TestDatabase;

fn workledger(db: &TestDatabase, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_workledger"))
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("WORKLEDGER_LOG", "warn")
        .env("TEST_PASSWORD", "correct horse battery staple")
        .output()
        .expect("the binary runs")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test]
async fn an_admin_creates_a_tenant_and_a_user_who_is_then_in_the_identity_tables() {
    let db = TestDatabase::new().await;
    ok(&workledger(
        &db,
        &[
            "admin",
            "create-tenant",
            "--id",
            "acme",
            "--name",
            "Acme",
            "--admin-email",
            "boss@acme.test",
            "--password-env",
            "TEST_PASSWORD",
        ],
    ));
    let out = ok(&workledger(
        &db,
        &[
            "admin",
            "create-user",
            "--tenant",
            "acme",
            "--email",
            "bob@acme.test",
            "--name",
            "Bob",
            "--roles",
            "member,operator",
            "--groups",
            "clerks",
            "--password-env",
            "TEST_PASSWORD",
        ],
    ));
    let id = out
        .split_whitespace()
        .nth(2)
        .expect("created user ID in tenant acme");
    let (tenant, roles, groups): (String, Vec<String>, Vec<String>) = sqlx::query_as(
        "select tenant_id, roles, groups from identity_users where email = 'bob@acme.test'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tenant, "acme");
    let mut roles = roles;
    roles.sort();
    assert_eq!(roles, ["member", "operator"]);
    assert_eq!(groups, ["clerks"]);
    let tenants: i64 =
        sqlx::query_scalar("select count(*) from identity_tenants where tenant_id = 'acme'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(tenants, 1);

    ok(&workledger(
        &db,
        &[
            "admin",
            "set-roles",
            "--tenant",
            "acme",
            "--user",
            id,
            "--roles",
            "designer",
        ],
    ));
    ok(&workledger(
        &db,
        &[
            "admin",
            "set-groups",
            "--tenant",
            "acme",
            "--user",
            id,
            "--groups",
            "a,b",
        ],
    ));
    let (roles, groups): (Vec<String>, Vec<String>) =
        sqlx::query_as("select roles, groups from identity_users where email = 'bob@acme.test'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(roles, ["designer"]);
    assert_eq!(groups, ["a", "b"]);

    // the password never reaches the log
    let leaked: i64 = sqlx::query_scalar(
        "select count(*) from events where payload::text like '%battery staple%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn refusals_are_one_clear_line() {
    let db = TestDatabase::new().await;
    let output = workledger(
        &db,
        &[
            "admin",
            "create-user",
            "--tenant",
            "acme",
            "--email",
            "not-an-email",
            "--name",
            "X",
            "--roles",
            "member",
            "--password-env",
            "TEST_PASSWORD",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("email"), "{stderr}");

    let output = workledger(
        &db,
        &[
            "admin",
            "create-user",
            "--tenant",
            "acme",
            "--email",
            "a@acme.test",
            "--name",
            "X",
            "--roles",
            "wizard",
            "--password-env",
            "TEST_PASSWORD",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown role \"wizard\""), "{stderr}");

    let output = workledger(
        &db,
        &[
            "admin",
            "create-user",
            "--tenant",
            "acme",
            "--email",
            "a@acme.test",
            "--name",
            "X",
            "--password-env",
            "NO_SUCH_VARIABLE",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("NO_SUCH_VARIABLE"), "{stderr}");
}
