//! `workledger admin`: tenants and users without the API.

use std::process::{Command, Output};

use event_store::master_key::{MasterKey, MasterKeys};
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

/// `workledger admin ARGS...` with `--tenant acme`-style pairs written inline.
fn admin(db: &TestDatabase, args: &str) -> Output {
    let args: Vec<&str> = std::iter::once("admin")
        .chain(args.split_whitespace())
        .collect();
    workledger(db, &args)
}

async fn credentials(db: &TestDatabase, email: &str) -> (String, String, bool) {
    sqlx::query_as(
        "select c.password_hash, u.status, u.password_changed_at is not null \
         from identity_users u join identity_credentials c using (user_id) where u.email = $1",
    )
    .bind(email)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_operator_finds_users_and_tenants_and_resets_deactivates_and_reactivates_a_user() {
    let db = TestDatabase::new().await;
    ok(&admin(
        &db,
        "create-tenant --id acme --name Acme --admin-email boss@acme.test --password-env TEST_PASSWORD",
    ));
    ok(&admin(
        &db,
        "create-user --tenant acme --email Bob@Acme.test --name Bob --roles member --groups clerks,night --password-env TEST_PASSWORD",
    ));
    ok(&admin(
        &db,
        "create-user --tenant acme --email amy@acme.test --name Amy --roles auditor --password-env TEST_PASSWORD",
    ));

    let table = ok(&admin(&db, "users --tenant acme"));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID "), "{table}");
    for header in ["EMAIL", "NAME", "STATUS", "ROLES", "GROUPS"] {
        assert!(lines[0].contains(header), "{table}");
    }
    // by email address, ignoring case
    assert!(lines[1].contains("amy@acme.test") && lines[1].contains("auditor"));
    assert!(lines[2].contains("Bob@Acme.test") && lines[2].contains("clerks,night"));
    assert!(lines[3].contains("boss@acme.test") && lines[3].contains("admin"));
    assert_eq!(lines.last(), Some(&"3 users"));

    let bob: serde_json::Value = serde_json::from_str(
        ok(&admin(
            &db,
            "users --tenant acme --email bob@acme.test --format jsonl",
        ))
        .trim(),
    )
    .unwrap();
    assert_eq!(bob["display_name"], "Bob");
    assert_eq!(bob["status"], "active");
    let id = bob["id"].as_str().unwrap().to_owned();
    let clerks = ok(&admin(
        &db,
        "users --tenant acme --group clerks --format jsonl",
    ));
    assert_eq!(clerks.lines().count(), 1, "{clerks}");

    let tenants = ok(&admin(&db, "tenants --format jsonl"));
    let acme = tenants
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|t| t["id"] == "acme")
        .expect("acme is listed");
    assert_eq!(acme["name"], "Acme");
    assert_eq!(acme["users"], 3);
    assert_eq!(acme["two_factor_required"], false);
    assert!(
        ok(&admin(&db, "tenants"))
            .lines()
            .any(|l| l.starts_with("acme ") && l.contains(" optional "))
    );
    // the default tenant (the bootstrap admin's) is one from its first user on
    ok(&admin(
        &db,
        "create-user --tenant default --email root@example.test --name Root --roles admin --password-env TEST_PASSWORD",
    ));
    let tenants = ok(&admin(&db, "tenants"));
    assert!(
        tenants
            .lines()
            .any(|l| l.starts_with("default ") && l.ends_with(" 1")),
        "{tenants}"
    );
    let defaults = ok(&admin(&db, "users --tenant default"));
    assert!(defaults.ends_with("\n1 user\n"), "{defaults}");

    // a reset
    let (hash, _, changed) = credentials(&db, "Bob@Acme.test").await;
    assert!(!changed);
    let reset = Command::new(env!("CARGO_BIN_EXE_workledger"))
        .args([
            "admin",
            "set-password",
            "--tenant",
            "acme",
            "--user",
            &id,
            "--password-env",
            "NEW_PW",
        ])
        .env("DATABASE_URL", db.url())
        .env("WORKLEDGER_LOG", "warn")
        .env("NEW_PW", "another long password")
        .output()
        .unwrap();
    assert!(ok(&reset).contains("ended their sessions"));
    let (new_hash, _, changed) = credentials(&db, "Bob@Acme.test").await;
    assert_ne!(new_hash, hash);
    assert!(changed);

    ok(&admin(
        &db,
        &format!("deactivate --tenant acme --user {id} --reason left"),
    ));
    assert_eq!(credentials(&db, "Bob@Acme.test").await.1, "deactivated");
    let deactivated = ok(&admin(&db, "users --tenant acme --email bob@acme.test"));
    assert!(deactivated.contains("deactivated"), "{deactivated}");
    ok(&admin(
        &db,
        &format!("reactivate --tenant acme --user {id}"),
    ));
    assert_eq!(credentials(&db, "Bob@Acme.test").await.1, "active");

    // refusals: one line each, exit 1
    for args in [
        "users --tenant nowhere".to_owned(),
        format!("deactivate --tenant globex --user {id}"),
        format!("reactivate --tenant acme --user {}", uuid::Uuid::now_v7()),
    ] {
        let output = admin(&db, &args);
        assert_eq!(output.status.code(), Some(1), "{args}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args}: {stderr}");
    }
    assert!(
        String::from_utf8_lossy(&admin(&db, "users --tenant nowhere").stderr)
            .contains("no tenant \"nowhere\"")
    );
}

#[tokio::test]
async fn an_operator_turns_off_the_two_factor_sign_in_of_a_user_who_lost_their_phone() {
    use command_api::auth::throttle::Throttle;
    use command_api::auth::two_factor::TotpKey;
    use command_api::{Identity, PasswordHashing, ThrottleSettings};
    use secrecy::{ExposeSecret, SecretString};

    let db = TestDatabase::new().await;
    ok(&admin(
        &db,
        "create-user --tenant default --email ann@example.test --name Ann --roles member --password-env TEST_PASSWORD",
    ));
    let ann: serde_json::Value = serde_json::from_str(
        ok(&admin(
            &db,
            "users --tenant default --email ann@example.test --format jsonl",
        ))
        .trim(),
    )
    .unwrap();
    assert_eq!(ann["two_factor"], false);
    let id: uuid::Uuid = ann["id"].as_str().unwrap().parse().unwrap();

    // Ann turns it on herself, as the API would
    let identity = Identity::new(
        db.pool.clone(),
        event_store::AppendNotifier::disabled(),
        PasswordHashing::OWASP,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    let throttle = Throttle::new(db.pool.clone(), ThrottleSettings::default());
    let ctx = orchestrator::RequestContext {
        caller: domain::Caller::user("default", id, [domain::Role::Member], Vec::<String>::new()),
        at: chrono::Utc::now(),
        correlation_id: uuid::Uuid::now_v7(),
        request_id: "test".into(),
    };
    let enrolment = identity
        .begin_two_factor(
            &ctx,
            &throttle,
            id,
            Some(SecretString::from("correct horse battery staple")),
        )
        .await
        .unwrap();
    let key = TotpKey::from_base32(enrolment.secret.expose_secret()).unwrap();
    let code = SecretString::from(key.code(chrono::Utc::now().timestamp()));
    identity
        .confirm_two_factor(&ctx, id, &code, None)
        .await
        .unwrap();
    let table = ok(&admin(
        &db,
        "users --tenant default --email ann@example.test",
    ));
    assert!(table.lines().next().unwrap().contains("2FA"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains(" on "), "{table}");

    let out = ok(&admin(
        &db,
        &format!("end-sessions --tenant default --user {id} --reason laptop-stolen"),
    ));
    assert!(out.contains("ended every session"), "{out}");
    let ended: String = sqlx::query_scalar(
        "select payload->'UserSessionsEnded'->>'reason' from events \
         where event_type = 'UserSessionsEnded'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(opened(&db, &ended).await, "laptop-stolen");
    let out = ok(&admin(
        &db,
        &format!("disable-two-factor --tenant default --user {id} --reason lost-phone"),
    ));
    assert!(out.contains("turned off two-factor sign-in"), "{out}");
    let table = ok(&admin(
        &db,
        "users --tenant default --email ann@example.test",
    ));
    assert!(table.lines().nth(1).unwrap().contains(" off "), "{table}");
    let (actor, reason): (String, String) = sqlx::query_as(
        "select metadata->>'actor', payload->'UserTwoFactorDisabled'->>'reason' from events \
         where event_type = 'UserTwoFactorDisabled'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), opened(&db, &reason).await.as_str()),
        ("service:cli-admin", "lost-phone")
    );
    // deactivated, then erased for good: what was sealed for them no longer opens
    ok(&admin(
        &db,
        &format!("deactivate --tenant default --user {id}"),
    ));
    let out = ok(&admin(
        &db,
        &format!("erase-user --tenant default --user {id}"),
    ));
    assert!(out.contains("erased"), "{out}");
    let mut conn = db.pool.acquire().await.unwrap();
    let gone = event_store::personal::open_all(&mut conn, "default", id, &[reason.as_str()])
        .await
        .unwrap();
    assert_eq!(gone, [None]);
    let again = ok(&admin(
        &db,
        &format!("erase-user --tenant default --user {id}"),
    ));
    assert!(again.contains("nothing left to drop"), "{again}");
    // a restored backup of the keys brings the key back: erasing again drops it
    sqlx::query("update personal_keys set key = $2, erased_at = null where user_id = $1")
        .bind(id)
        .bind(vec![7u8; 32])
        .execute(&db.pool)
        .await
        .unwrap();
    let again = ok(&admin(
        &db,
        &format!("erase-user --tenant default --user {id}"),
    ));
    assert!(again.contains("dropped their key again"), "{again}");
    let key: Option<Vec<u8>> =
        sqlx::query_scalar("select key from personal_keys where user_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(key, None);
    // another tenant's user is not found
    let output = admin(
        &db,
        &format!("disable-two-factor --tenant globex --user {id}"),
    );
    assert_eq!(output.status.code(), Some(1));
}

/// A personal field as stored (sealed, DESIGN §2), opened with its person's key.
async fn opened(db: &TestDatabase, stored: &str) -> String {
    db.opened("default", stored)
        .await
        .expect("the key opens it")
}

fn workledger_with(db: &TestDatabase, keys: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_workledger"));
    command
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("WORKLEDGER_LOG", "warn")
        .env("TEST_PASSWORD", "correct horse battery staple")
        .env_remove("WORKLEDGER_MASTER_KEY")
        .env_remove("WORKLEDGER_MASTER_KEY_PREVIOUS");
    for (name, value) in keys {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

/// The error of a run that exited with `code` (1: failed; 3: a configuration error).
fn failed(output: &Output, code: i32) -> String {
    assert_eq!(output.status.code(), Some(code), "{output:?}");
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// The key ids (bytes 5-12 of a wrapped key) of the stored personal data keys; `None` for
/// one stored unwrapped.
async fn stored_key_ids(db: &TestDatabase) -> Vec<Option<Vec<u8>>> {
    sqlx::query_scalar(
        "select case when octet_length(key) = 72 then substr(key, 5, 8) end \
         from personal_keys where key is not null order by user_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn stored_secrets_are_wrapped_with_the_master_key_rotated_and_a_wrong_key_refused() {
    let db = TestDatabase::new().await;
    let old = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let new = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let create_user = |email: &'static str| {
        [
            "admin",
            "create-user",
            "--tenant",
            "default",
            "--email",
            email,
            "--name",
            "Bob",
            "--roles",
            "member",
            "--password-env",
            "TEST_PASSWORD",
        ]
    };
    // before any master key: stored as they are (and a signing secret a server generated)
    ok(&workledger_with(&db, &[], &create_user("bob@example.com")));
    assert_eq!(stored_key_ids(&db).await, [None]);
    let signing = vec![7u8; 64];
    sqlx::query("insert into auth_secrets (name, secret) values ('access_token_signing_key', $1)")
        .bind(&signing)
        .execute(&db.pool)
        .await
        .unwrap();

    // with one: new keys wrapped, the old one still read; wrap-secrets wraps the rest
    let with_old = [("WORKLEDGER_MASTER_KEY", old)];
    ok(&workledger_with(
        &db,
        &with_old,
        &create_user("carol@example.com"),
    ));
    let ids = stored_key_ids(&db).await;
    assert_eq!(ids.iter().filter(|id| id.is_some()).count(), 1, "{ids:?}");
    let status = ok(&workledger_with(&db, &with_old, &["status"]));
    assert!(
        status.contains(
            "1 stored secrets wrapped with WORKLEDGER_MASTER_KEY, 0 with another key, 2 unwrapped \
             (run `workledger admin wrap-secrets`)"
        ),
        "{status}"
    );
    let out = ok(&workledger_with(&db, &with_old, &["admin", "wrap-secrets"]));
    assert!(
        out.contains("wrapped 1 personal data keys, 0 two-factor secrets and 1 server secrets"),
        "{out}"
    );
    let stored: Vec<u8> = sqlx::query_scalar("select secret from auth_secrets")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let old_keys = MasterKeys::new(
        Some(MasterKey::from_base64(old, "test").unwrap()),
        Vec::new(),
    );
    assert!(old_keys.is_current(&stored));
    let owner = event_store::master_key::signing_secret_owner("access_token_signing_key");
    assert_eq!(
        *old_keys.unwrap(&stored, &owner).unwrap(),
        signing,
        "the same secret, wrapped"
    );
    let ids = stored_key_ids(&db).await;
    let old_id = ids[0].clone().expect("wrapped");
    assert!(ids.iter().all(|id| id.as_ref() == Some(&old_id)), "{ids:?}");
    let users = ok(&workledger_with(
        &db,
        &with_old,
        &["admin", "users", "--tenant", "default"],
    ));
    assert!(users.contains("bob@example.com") && users.contains("carol@example.com"));
    let status: serde_json::Value = serde_json::from_str(&ok(&workledger_with(
        &db,
        &with_old,
        &["status", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(
        status["secrets"],
        serde_json::json!({"wrapped_current": 3, "wrapped_other": 0, "unwrapped": 0})
    );

    // without the key, or with another one, nothing starts
    for keys in [vec![], vec![("WORKLEDGER_MASTER_KEY", new)]] {
        let error = failed(
            &workledger_with(&db, &keys, &["admin", "users", "--tenant", "default"]),
            1,
        );
        assert!(error.contains("WORKLEDGER_MASTER_KEY"), "{error}");
    }
    // a malformed key is named, its value never printed
    let error = failed(
        &workledger_with(
            &db,
            &[("WORKLEDGER_MASTER_KEY", "c2hvcnQ=")],
            &["admin", "users", "--tenant", "default"],
        ),
        3,
    );
    assert!(
        error.contains("WORKLEDGER_MASTER_KEY") && !error.contains("c2hvcnQ="),
        "{error}"
    );
    let error = failed(&workledger_with(&db, &[], &["admin", "wrap-secrets"]), 1);
    assert!(error.contains("WORKLEDGER_MASTER_KEY"), "{error}");

    // rotation: the new key with the old one beside it, then the new key alone
    let rotating = [
        ("WORKLEDGER_MASTER_KEY", new),
        ("WORKLEDGER_MASTER_KEY_PREVIOUS", old),
    ];
    let out = ok(&workledger_with(&db, &rotating, &["admin", "wrap-secrets"]));
    assert!(
        out.contains("wrapped 2 personal data keys, 0 two-factor secrets and 1 server secrets"),
        "{out}"
    );
    let ids = stored_key_ids(&db).await;
    assert!(
        ids.iter()
            .all(|id| id.is_some() && id.as_ref() != Some(&old_id)),
        "{ids:?}"
    );
    let with_new = [("WORKLEDGER_MASTER_KEY", new)];
    ok(&workledger_with(
        &db,
        &with_new,
        &create_user("dan@example.com"),
    ));
    let users = ok(&workledger_with(
        &db,
        &with_new,
        &["admin", "users", "--tenant", "default"],
    ));
    assert!(users.contains("bob@example.com") && users.contains("dan@example.com"));
    let out = ok(&workledger_with(&db, &with_new, &["admin", "wrap-secrets"]));
    assert!(out.contains("wrapped 0 personal data keys"), "{out}");
    assert!(
        out.contains("every stored secret is wrapped with it now"),
        "{out}"
    );
    // a process given the key only to open (the first step of turning one on, or of a
    // rotation) reads what is wrapped and wraps nothing new
    let opening = [("WORKLEDGER_MASTER_KEY_PREVIOUS", new)];
    let users = ok(&workledger_with(
        &db,
        &opening,
        &["admin", "users", "--tenant", "default"],
    ));
    assert!(users.contains("dan@example.com"));
    ok(&workledger_with(
        &db,
        &opening,
        &create_user("erin@example.com"),
    ));
    assert_eq!(
        stored_key_ids(&db)
            .await
            .iter()
            .filter(|id| id.is_none())
            .count(),
        1
    );
    let status = ok(&workledger_with(&db, &opening, &["status"]));
    assert!(
        status.contains(
            "0 stored secrets wrapped with WORKLEDGER_MASTER_KEY, 4 with another key, 1 unwrapped\n"
        ),
        "{status}"
    );
    let error = failed(
        &workledger_with(&db, &opening, &["admin", "wrap-secrets"]),
        1,
    );
    assert!(
        error.contains("WORKLEDGER_MASTER_KEY is not set"),
        "{error}"
    );
}
