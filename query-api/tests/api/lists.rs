//! Lists and their filters: who sees which tasks, approvals and instances, `assignee=me`,
//! `approver=me`, and bad filters.

use domain::Role;
use domain::definition::Definition;
use event_schemas::ApprovalDecision;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

#[tokio::test]
async fn a_member_sees_the_tasks_offered_to_their_groups_and_an_operator_sees_all() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let first = app.start(json!(5000), "PO-1", 0).await;
    let second = app.start(json!(7000), "PO-2", 1).await;
    app.project().await;
    let clerk = app.member_token(CLERK, &["clerks"]);
    let lawyer = app.member_token(LAWYER, &["legal"]);

    let page = app.ok("/api/v1/tasks?status=open", &clerk).await;
    assert_eq!(
        item_ids(&page),
        [
            second.child("review").to_string(),
            first.child("review").to_string()
        ],
        "newest first"
    );
    assert_eq!(app.ok("/api/v1/tasks", &lawyer).await["items"], json!([]));
    app.problem(
        &format!("/api/v1/tasks/{}", first.child("review")),
        &lawyer,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        item_ids(&app.ok("/api/v1/tasks", &app.operator_token()).await).len(),
        2
    );
    assert_eq!(
        item_ids(
            &app.ok("/api/v1/tasks?candidate_group=clerks", &lawyer)
                .await
        )
        .len(),
        0,
        "a filter never widens what a member sees"
    );
    assert_eq!(
        item_ids(
            &app.ok("/api/v1/tasks?candidate_group=clerks", &app.auditor_token())
                .await
        )
        .len(),
        2
    );
    assert_eq!(
        item_ids(
            &app.ok("/api/v1/tasks?candidate_group=legal", &app.operator_token())
                .await
        )
        .len(),
        0
    );
    // the open inbox filters by group its own way (in index order): the same answers
    assert_eq!(
        item_ids(
            &app.ok("/api/v1/tasks?candidate_group=clerks&status=open", &clerk)
                .await
        ),
        item_ids(&page)
    );
    assert_eq!(
        item_ids(
            &app.ok(
                "/api/v1/tasks?candidate_group=legal&status=open",
                &app.operator_token()
            )
            .await
        )
        .len(),
        0
    );
}

#[tokio::test]
async fn assignee_me_lists_the_callers_tasks_and_overdue_filters_them() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut first = app.start(json!(5000), "PO-1", 0).await;
    let _second = app.start(json!(5000), "PO-2", 1).await;
    first.claim("review", &member(CLERK, &["clerks"]), 2).await;
    app.project().await;
    let clerk = app.member_token(CLERK, &["clerks"]);
    let mine = app.ok("/api/v1/tasks?assignee=me", &clerk).await;
    assert_eq!(item_ids(&mine), [first.child("review").to_string()]);
    assert_eq!(mine["items"][0]["assignee"], user(CLERK).to_string());
    let by_id = app
        .ok(
            &format!("/api/v1/tasks?assignee={}", user(CLERK)),
            &app.operator_token(),
        )
        .await;
    assert_eq!(item_ids(&by_id), item_ids(&mine));
    let other = app.member_token(0xC2, &["clerks"]);
    assert_eq!(
        app.ok("/api/v1/tasks?assignee=me", &other).await["items"],
        json!([])
    );
    assert_eq!(
        item_ids(
            &app.ok("/api/v1/tasks?overdue=false&status=open", &clerk)
                .await
        )
        .len(),
        2
    );
    assert_eq!(
        app.ok("/api/v1/tasks?overdue=true", &clerk).await["items"],
        json!([])
    );
}

#[tokio::test]
async fn approver_me_lists_only_the_approvals_the_caller_may_decide_now() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut po = app.start(json!(15000), "PO-1", 0).await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}), 1)
        .await;
    po.vote("board", BOARD[0], ApprovalDecision::Reject, 2)
        .await;
    // a sequential sign-off: only the first approver's turn
    let (first, second) = (user(0x51), user(0x52));
    let definition = Definition::from_json(
        &json!({
            "key": "expense", "name": "Expense", "start": "sign",
            "steps": {
                "sign": {"type": "approval", "name": "Sign-off",
                         "approvers": {"users": [first, second]}, "policy": "sequential",
                         "approved": "done", "rejected": "done"},
                "done": {"type": "end", "outcome": "finished"}
            }
        })
        .to_string(),
    )
    .unwrap();
    app.publish_definition(definition).await;
    app.rt
        .start(
            &orchestrator::RequestContext {
                caller: operator(),
                at: t0(),
                correlation_id: uuid::Uuid::now_v7(),
                request_id: "r".into(),
            },
            "expense",
            None,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    app.project().await;

    let mine = |n: u128| app.member_token(n, &[]);
    let board_of =
        |page: &serde_json::Value| item_ids(page).contains(&po.child("board").to_string());
    assert!(
        !board_of(
            &app.ok("/api/v1/approvals?approver=me", &mine(BOARD[0]))
                .await
        ),
        "already voted"
    );
    assert!(board_of(
        &app.ok("/api/v1/approvals?approver=me", &mine(BOARD[1]))
            .await
    ));
    assert!(board_of(
        &app.ok("/api/v1/approvals?approver=me", &mine(BOARD[2]))
            .await
    ));
    // a member still sees an approval they voted on, just not as theirs to decide
    assert!(board_of(
        &app.ok("/api/v1/approvals", &mine(BOARD[0])).await
    ));
    assert_eq!(
        app.ok("/api/v1/approvals", &mine(CLERK)).await["items"],
        json!([])
    );

    let sequential = app
        .ok(
            "/api/v1/approvals?approver=me",
            &app.member_token(0x51, &[]),
        )
        .await;
    assert_eq!(sequential["items"].as_array().unwrap().len(), 1);
    assert_eq!(sequential["items"][0]["policy"], "sequential");
    assert_eq!(
        app.ok(
            "/api/v1/approvals?approver=me",
            &app.member_token(0x52, &[])
        )
        .await["items"],
        json!([]),
        "not their turn yet"
    );
    let operator = app.operator_token();
    let as_operator = app
        .ok(&format!("/api/v1/approvals?approver={second}"), &operator)
        .await;
    assert_eq!(as_operator["items"], json!([]));
    assert_eq!(
        app.ok("/api/v1/approvals?status=pending", &operator).await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        app.ok("/api/v1/approvals?status=approved", &operator).await["items"],
        json!([])
    );
}

#[tokio::test]
async fn instances_are_filtered_by_status_definition_business_key_and_start_time() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut done = app.start(json!(5000), "PO-1", 0).await;
    done.approve_all(30).await;
    let running = app.start(json!(5000), "PO-2", 60).await;
    app.project().await;
    let token = app.member_token(CLERK, &["clerks"]);
    let ids = |path: &'static str| {
        let app = &app;
        let token = token.clone();
        async move { item_ids(&app.ok(path, &token).await) }
    };
    assert_eq!(
        ids("/api/v1/workflow-instances?status=running").await,
        [running.id.to_string()]
    );
    assert_eq!(
        ids("/api/v1/workflow-instances?status=completed").await,
        [done.id.to_string()]
    );
    assert_eq!(
        ids("/api/v1/workflow-instances?business_key=PO-1").await,
        [done.id.to_string()]
    );
    assert_eq!(
        ids("/api/v1/workflow-instances?definition_key=purchase-order")
            .await
            .len(),
        2
    );
    assert_eq!(
        ids("/api/v1/workflow-instances?definition_key=other")
            .await
            .len(),
        0
    );
    assert_eq!(
        ids("/api/v1/workflow-instances?started_after=2026-03-02T09:30:00Z").await,
        [running.id.to_string()]
    );
    assert_eq!(
        ids("/api/v1/workflow-instances?started_before=2026-03-02T09:30:00Z").await,
        [done.id.to_string()]
    );
    let completed = app
        .ok(&format!("/api/v1/workflow-instances/{}", done.id), &token)
        .await;
    assert_eq!(completed["outcome"], "approved");
    assert_eq!(completed["ended_at"], "2026-03-02T09:30:00Z");
}

#[tokio::test]
async fn a_member_sees_only_the_instances_they_take_part_in() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut first = app.start(json!(5000), "PO-1", 0).await;
    let second = app.start(json!(7000), "PO-2", 1).await;
    first
        .work("review", &member(CLERK, &["clerks"]), json!({}), 10)
        .await;
    app.project().await;
    let both = [second.id.to_string(), first.id.to_string()];
    let sees = |token: String| {
        let app = &app;
        async move { item_ids(&app.ok("/api/v1/workflow-instances", &token).await) }
    };
    let instance = |po: &Po| format!("/api/v1/workflow-instances/{}", po.id);

    // the review tasks are offered to the clerks' group
    assert_eq!(sees(app.member_token(CLERK, &["clerks"])).await, both);
    // a manager is an approver of the first order's approval only (resolved from the group)
    let manager = app.member_token(MANAGERS[1], &[]);
    assert_eq!(sees(manager.clone()).await, [first.id.to_string()]);
    app.ok(&instance(&first), &manager).await;
    app.problem(&instance(&second), &manager, StatusCode::NOT_FOUND)
        .await;
    // nothing is offered to legal yet, nor to someone of another group or a designer
    let lawyer = app.member_token(LAWYER, &["legal"]);
    for token in [
        lawyer.clone(),
        app.member_token(0x77, &["warehouse"]),
        app.token(TENANT, user(0xDE), &[Role::Designer], &[]),
    ] {
        assert_eq!(sees(token.clone()).await, Vec::<String>::new());
        for po in [&first, &second] {
            app.problem(&instance(po), &token, StatusCode::NOT_FOUND)
                .await;
        }
        assert_eq!(
            item_ids(
                &app.ok("/api/v1/workflow-instances?business_key=PO-1", &token)
                    .await
            ),
            Vec::<String>::new(),
            "a filter never widens what a member sees"
        );
    }
    assert_eq!(sees(app.operator_token()).await, both);
    assert_eq!(sees(app.auditor_token()).await, both);

    // approved: the checks open, to the legal group and to the finance officer by name
    first
        .vote("manager", MANAGERS[0], ApprovalDecision::Approve, 20)
        .await;
    app.project().await;
    assert_eq!(sees(lawyer.clone()).await, [first.id.to_string()]);
    assert_eq!(
        app.ok(&instance(&first), &lawyer).await["id"],
        first.id.to_string()
    );
    assert_eq!(
        sees(app.member_token(FINANCE, &[])).await,
        [first.id.to_string()]
    );
    // the manager who did not vote still sees the approval they held, and so its instance
    assert_eq!(sees(manager).await, [first.id.to_string()]);
}

/// `/api/v1/{list}?cursor=...` with `json` as the cursor.
fn forged_cursor(json: &str, list: &str) -> String {
    use base64::Engine as _;
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    format!("/api/v1/{list}?cursor={cursor}")
}

#[tokio::test]
async fn bad_filters_are_422_problems_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let token = app.token(TENANT, user(1), &[Role::Admin], &[]);
    for (path, field) in [
        ("/api/v1/tasks?status=finished", "status"),
        ("/api/v1/tasks?overdue=maybe", "overdue"),
        ("/api/v1/tasks?assignee=someone", "assignee"),
        ("/api/v1/tasks?limit=0", "limit"),
        ("/api/v1/tasks?limit=501", "limit"),
        ("/api/v1/tasks?limit=many", "limit"),
        ("/api/v1/tasks?cursor=not-ours", "cursor"),
        ("/api/v1/tasks?asignee=me", "asignee"),
        ("/api/v1/approvals?approver=nobody", "approver"),
        (
            "/api/v1/workflow-instances?started_after=yesterday",
            "started_after",
        ),
        ("/api/v1/workflow-instances?status=paused", "status"),
        ("/api/v1/tasks/not-a-uuid", "id"),
        ("/api/v1/reports/workflows?bucket=month", "bucket"),
        (
            "/api/v1/reports/workflows?from=2026-03-10&to=2026-03-01",
            "from",
        ),
        ("/api/v1/reports/tasks?group_by=team", "group_by"),
        ("/api/v1/audit?from=noon", "from"),
        ("/api/v1/audit/export?format=xml", "format"),
        // Postgres stores no NUL character and no year outside its range: refused up front
        (
            "/api/v1/workflow-instances?business_key=%00",
            "business_key",
        ),
        ("/api/v1/tasks?candidate_group=a%00b", "candidate_group"),
        ("/api/v1/audit?actor=x%00", "actor"),
        (
            "/api/v1/workflow-instances?started_after=-5000-01-01",
            "started_after",
        ),
        ("/api/v1/audit?from=10000-01-01", "from"),
        ("/api/v1/audit/export?to=-0001-12-31T00:00:00Z", "to"),
        ("/api/v1/reports/workflows?to=-262143-01-01", "to"),
        ("/api/v1/reports/tasks?to=-262143-01-01", "to"),
    ] {
        let problem = app
            .problem(path, &token, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
        assert_eq!(problem["code"], "validation_failed", "{path}");
        assert_eq!(problem["errors"][0]["field"], field, "{path}: {problem}");
    }
    // cursors forged with what ours never hold
    for (list, key) in [
        (
            "tasks",
            r#"["-5000-01-01T00:00:00Z","00000000-0000-0000-0000-000000000001"]"#,
        ),
        ("workflow-definitions", r#""a\u0000""#),
    ] {
        let path = forged_cursor(key, list);
        let problem = app
            .problem(&path, &token, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
        assert_eq!(problem["errors"][0]["field"], "cursor", "{path}: {problem}");
    }
}

#[tokio::test]
async fn a_path_that_is_not_utf8_is_a_400_problem_and_a_nul_key_matches_nothing() {
    let app = TestApp::spawn().await;
    let token = app.token(TENANT, user(1), &[Role::Admin], &[]);
    for path in ["/api/v1/tasks/%FF", "/api/v1/workflow-definitions/%FF"] {
        let problem = app.problem(path, &token, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem["code"], "bad_request", "{path}");
        assert!(
            problem["detail"].as_str().unwrap().contains("UTF-8"),
            "{problem}"
        );
    }
    // a key with a NUL character cannot exist; Postgres refuses to compare one
    let problem = app
        .problem(
            "/api/v1/workflow-definitions/a%00b",
            &token,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert_eq!(problem["errors"][0]["code"], "invalid_value", "{problem}");
}

/// The id of the `n`th instance of [`many_instances`].
fn nth(n: u128) -> String {
    Uuid::from_u128(0x1_0000_0000 + n).to_string()
}

/// `count` instances of the tenant, one a second from t0 (the `n`th started n seconds in),
/// started by someone else, straight into the read model.
async fn many_instances(app: &TestApp, count: i64) {
    sqlx::query(
        "insert into workflow_instances (id, tenant_id, definition_key, definition_version, \
         status, variables, open_steps, started_at, started_by, version, updated_at) \
         select ('00000000-0000-0000-0000-' || lpad(to_hex(4294967296 + i), 12, '0'))::uuid, \
                $1, 'po', 1, 'running', '{}', '[]', $2 + i * interval '1 second', \
                'user:00000000-0000-0000-0000-0000000000ee', 1, now() \
         from generate_series(0, $3 - 1) i",
    )
    .bind(TENANT)
    .bind(t0())
    .bind(count)
    .execute(app.pool())
    .await
    .unwrap();
}

/// A task of instance `n` in the read model.
async fn task_of(app: &TestApp, n: u128, assignee: Option<Uuid>, users: &[Uuid], groups: &[&str]) {
    sqlx::query(
        "insert into tasks (id, tenant_id, workflow_instance_id, name, status, assignee, \
         candidate_users, candidate_groups, form, overdue, opened_at, opened_by, version, \
         updated_at) \
         values ($1, $2, $3::uuid, 'Review', 'open', $4, $5, $6, '[]', false, now(), 'system', 1, now())",
    )
    .bind(Uuid::now_v7())
    .bind(TENANT)
    .bind(nth(n))
    .bind(assignee)
    .bind(users)
    .bind(groups)
    .execute(app.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn a_member_who_takes_part_in_few_of_many_instances_pages_through_exactly_those() {
    let app = TestApp::spawn().await;
    // more than the newest instances checked one by one (2,000): the older ones a member
    // takes part in are found through the tasks, approvals and starters instead
    many_instances(&app, 2_500).await;
    let me = user(0x5A);
    let exec = |sql: String| {
        let pool = app.pool().clone();
        async move { sqlx::query(&sql).execute(&pool).await.unwrap() }
    };
    exec(format!(
        "update workflow_instances set started_by = 'user:{me}' where id = '{}'",
        nth(3)
    ))
    .await;
    task_of(&app, 10, None, &[], &["night"]).await;
    task_of(&app, 30, Some(me), &[], &[]).await;
    task_of(&app, 2_400, None, &[me], &[]).await;
    // offered to another group, or assigned to someone else: not the member's
    task_of(&app, 40, None, &[], &["day"]).await;
    task_of(&app, 60, Some(user(0x77)), &[], &["day"]).await;
    sqlx::query(
        "insert into approvals (id, tenant_id, workflow_instance_id, name, status, policy, \
         approvers, votes, decisions, awaiting, participants, approvals_count, \
         rejections_count, overdue, opened_at, opened_by, version, updated_at) \
         values ($1, $2, $3::uuid, 'Approve', 'approved', '\"any\"', $4, '[]', '[]', '{}', $4, \
                 1, 0, false, now(), 'system', 1, now())",
    )
    .bind(Uuid::now_v7())
    .bind(TENANT)
    .bind(nth(20))
    .bind(vec![me])
    .execute(app.pool())
    .await
    .unwrap();
    exec(format!(
        "update workflow_instances set status = 'completed' where id = '{}'",
        nth(20)
    ))
    .await;
    // another tenant's instance the same person started is no business of this tenant's
    exec(format!(
        "insert into workflow_instances (id, tenant_id, definition_key, definition_version, \
         status, variables, open_steps, started_at, started_by, version, updated_at) \
         values ('{}', 'globex', 'po', 1, 'running', '{{}}', '[]', now(), 'user:{me}', 1, now())",
        Uuid::now_v7()
    ))
    .await;

    let token = app.member_token(0x5A, &["night"]);
    let mut seen = Vec::new();
    let mut path = "/api/v1/workflow-instances?limit=2".to_owned();
    loop {
        let page = app.ok(&path, &token).await;
        seen.extend(item_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/workflow-instances?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, [nth(2_400), nth(30), nth(20), nth(10), nth(3)]);
    // with a filter, and for the first page at once
    let completed = app
        .ok("/api/v1/workflow-instances?status=completed", &token)
        .await;
    assert_eq!(item_ids(&completed), [nth(20)]);
    let first = app.ok("/api/v1/workflow-instances", &token).await;
    assert_eq!(item_ids(&first).len(), 5);
    assert!(first["next_cursor"].is_null());
    // whoever sees every instance pages through all of them
    let operator = app
        .ok(
            "/api/v1/workflow-instances?limit=500",
            &app.operator_token(),
        )
        .await;
    assert_eq!(item_ids(&operator)[0], nth(2_499));
}
