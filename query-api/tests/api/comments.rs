//! `GET /api/v1/tasks/{id}/comments` and `GET /api/v1/approvals/{id}/comments`: the comments
//! of what the caller may see, oldest first, paged, their texts opened as they are served.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::TimeDelta;
use domain::Caller;
use domain::Role;
use domain::approval::ApprovalCommand;
use domain::task::TaskCommand;
use event_schemas::{ApprovalDecision, LogPosition};
use orchestrator::RequestContext;
use projections::Projections;
use projections::names::TASKS;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::*;

/// `who` comments `text` on the task of `step` of `po`, `minutes` after t0; the command's
/// consistency token.
async fn comment(po: &Po, step: &str, who: &Caller, text: &str, minutes: i64) -> LogPosition {
    let ctx = RequestContext {
        caller: who.clone(),
        at: t0() + TimeDelta::minutes(minutes),
        correlation_id: Uuid::now_v7(),
        request_id: Uuid::now_v7().to_string(),
    };
    let command = TaskCommand::Comment { text: text.into() };
    let outcome = po
        .rt
        .task(&ctx, po.child(step), command, None)
        .await
        .unwrap();
    outcome.position.unwrap()
}

/// The texts of a page's items.
fn texts(page: &Value) -> Vec<Value> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].clone())
        .collect()
}

/// A purchase order whose review task the clerk (offered it through `clerks`) and the operator
/// have commented on.
async fn commented_review(app: &TestApp) -> Po {
    app.publish().await;
    let po = app.start(json!(5000), "PO-1", 0).await;
    let clerk = member(CLERK, &["clerks"]);
    comment(&po, "review", &clerk, "the quote is attached", 1).await;
    comment(&po, "review", &operator(), "please check the total", 2).await;
    comment(&po, "review", &clerk, "checked: 5000", 3).await;
    app.project().await;
    po
}

#[tokio::test]
async fn a_member_who_sees_a_task_reads_its_comments_oldest_first_with_their_text() {
    let app = TestApp::spawn().await;
    let po = commented_review(&app).await;
    let clerk = app.member_token(CLERK, &["clerks"]);

    let page = app
        .ok(
            &format!("/api/v1/tasks/{}/comments", po.child("review")),
            &clerk,
        )
        .await;
    assert_eq!(page["next_cursor"], Value::Null);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{page}");
    let (clerk_id, operator_id) = (user(CLERK), user(OPERATOR));
    assert_eq!(
        items[0],
        json!({
            "sequence": items[0]["sequence"],
            "author": format!("user:{clerk_id}"),
            "author_id": clerk_id,
            "text": "the quote is attached",
            "erased": false,
            "commented_at": "2026-03-02T09:01:00Z",
        })
    );
    assert_eq!(items[1]["author"], format!("user:{operator_id}"));
    assert_eq!(items[1]["author_id"], operator_id.to_string());
    assert_eq!(items[2]["commented_at"], "2026-03-02T09:03:00Z");
    assert_eq!(
        texts(&page),
        [
            "the quote is attached",
            "please check the total",
            "checked: 5000"
        ]
    );
    let sequences: Vec<i64> = items
        .iter()
        .map(|c| c["sequence"].as_i64().unwrap())
        .collect();
    assert!(
        sequences.is_sorted() && sequences[0] < sequences[2],
        "{sequences:?}"
    );

    // the read model keeps them sealed: the API opened them
    let stored: Vec<String> = sqlx::query_scalar("select text from task_comments")
        .fetch_all(app.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    assert!(
        stored.iter().all(|t| t.starts_with("sealed:v1:")),
        "{stored:?}"
    );
}

#[tokio::test]
async fn paging_through_a_tasks_comments_with_the_cursor_visits_each_comment_once() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let po = app.start(json!(5000), "PO-1", 0).await;
    let clerk = member(CLERK, &["clerks"]);
    let written: Vec<String> = (1..=5).map(|n| format!("comment {n}")).collect();
    for (minutes, text) in (1..).zip(&written) {
        comment(&po, "review", &clerk, text, minutes).await;
    }
    app.project().await;
    let token = app.member_token(CLERK, &["clerks"]);

    let path = format!("/api/v1/tasks/{}/comments?limit=2", po.child("review"));
    let mut read = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("{path}&cursor={cursor}"),
            None => path.clone(),
        };
        let page = app.ok(&url, &token).await;
        pages += 1;
        assert!(page["items"].as_array().unwrap().len() <= 2, "{page}");
        read.extend(texts(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(read, written);
    assert_eq!(pages, 3);
    // a cursor of another list (the tasks', newest first by opening) is refused, naming it
    let foreign = URL_SAFE_NO_PAD.encode(format!(r#"["2026-03-02T09:00:00Z","{}"]"#, po.id));
    let problem = app
        .problem(
            &format!("{path}&cursor={foreign}"),
            &token,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert_eq!(problem["errors"][0]["field"], "cursor", "{problem}");
}

#[tokio::test]
async fn comments_of_another_tenants_or_an_unseen_task_or_approval_are_not_found_as_their_get_is() {
    let app = TestApp::spawn().await;
    let mut po = commented_review(&app).await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}), 4)
        .await;
    app.project().await;
    // an admin of another tenant, in the same groups, with the same user id as an approver
    let other_tenant = app.token(
        "globex",
        user(MANAGERS[0]),
        &[Role::Admin],
        &["clerks", "managers"],
    );
    // a member of the tenant offered neither
    let outsider = app.member_token(0x99, &["sales"]);
    for resource in [
        format!("/api/v1/tasks/{}", po.child("review")),
        format!("/api/v1/approvals/{}", po.child("manager")),
    ] {
        for token in [&other_tenant, &outsider] {
            app.problem(&resource, token, StatusCode::NOT_FOUND).await;
            let problem = app
                .problem(
                    &format!("{resource}/comments"),
                    token,
                    StatusCode::NOT_FOUND,
                )
                .await;
            assert_eq!(problem["code"], "not_found");
        }
    }
    // nor is a task that does not exist
    app.problem(
        &format!("/api/v1/tasks/{}/comments", Uuid::now_v7()),
        &app.operator_token(),
        StatusCode::NOT_FOUND,
    )
    .await;
    // while those who see them read them
    let page = app
        .ok(
            &format!("/api/v1/approvals/{}/comments", po.child("manager")),
            &app.member_token(MANAGERS[1], &[]),
        )
        .await;
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn a_comment_whose_author_was_erased_reads_as_erased_and_the_others_still_open() {
    let app = TestApp::spawn().await;
    let po = commented_review(&app).await;
    let erased = sqlx::query(
        "update personal_keys set key = null, erased_at = now() \
         where tenant_id = $1 and user_id = $2",
    )
    .bind(TENANT)
    .bind(user(OPERATOR))
    .execute(app.pool())
    .await
    .unwrap();
    assert_eq!(erased.rows_affected(), 1);

    let page = app
        .ok(
            &format!("/api/v1/tasks/{}/comments", po.child("review")),
            &app.member_token(CLERK, &["clerks"]),
        )
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(
        texts(&page),
        [
            json!("the quote is attached"),
            Value::Null,
            json!("checked: 5000")
        ]
    );
    let erased: Vec<bool> = items
        .iter()
        .map(|c| c["erased"].as_bool().unwrap())
        .collect();
    assert_eq!(erased, [false, true, false]);
    // who wrote it and when stay
    assert_eq!(items[1]["author"], format!("user:{}", user(OPERATOR)));
    assert_eq!(items[1]["commented_at"], "2026-03-02T09:02:00Z");
}

#[tokio::test]
async fn a_comment_stored_in_clear_before_sealing_existed_is_withheld_once_its_author_is_erased() {
    let app = TestApp::spawn().await;
    let po = commented_review(&app).await;
    // as a comment appended before migration 0018 reads: plain text
    let respelled =
        sqlx::query("update task_comments set text = 'written in clear' where author = $1")
            .bind(format!("user:{}", user(CLERK)))
            .execute(app.pool())
            .await
            .unwrap();
    assert_eq!(respelled.rows_affected(), 2);
    let path = format!("/api/v1/tasks/{}/comments", po.child("review"));
    let clerk = app.member_token(CLERK, &["clerks"]);
    let page = app.ok(&path, &clerk).await;
    assert_eq!(
        texts(&page),
        [
            json!("written in clear"),
            json!("please check the total"),
            json!("written in clear")
        ]
    );
    sqlx::query(
        "update personal_keys set key = null, erased_at = now() \
         where tenant_id = $1 and user_id = $2",
    )
    .bind(TENANT)
    .bind(user(CLERK))
    .execute(app.pool())
    .await
    .unwrap();
    let page = app.ok(&path, &clerk).await;
    assert_eq!(
        texts(&page),
        [Value::Null, json!("please check the total"), Value::Null]
    );
}

#[tokio::test]
async fn an_approvals_comments_given_with_decisions_are_read_by_its_approvers() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut po = app.start(json!(5000), "PO-1", 0).await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}), 1)
        .await;
    let manager = member(MANAGERS[0], &[]);
    let ctx = RequestContext {
        caller: manager,
        at: t0() + TimeDelta::minutes(2),
        correlation_id: Uuid::now_v7(),
        request_id: Uuid::now_v7().to_string(),
    };
    let decide = ApprovalCommand::Decide {
        decision: ApprovalDecision::Approve,
        comment: Some("within budget".into()),
    };
    po.rt
        .approval(&ctx, po.child("manager"), decide, None)
        .await
        .unwrap();
    app.project().await;

    let path = format!("/api/v1/approvals/{}/comments", po.child("manager"));
    for token in [
        app.member_token(MANAGERS[1], &[]),
        app.member_token(MANAGERS[0], &[]),
        app.auditor_token(),
    ] {
        let page = app.ok(&path, &token).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{page}");
        assert_eq!(items[0]["text"], "within budget");
        assert_eq!(items[0]["author"], format!("user:{}", user(MANAGERS[0])));
        assert_eq!(items[0]["author_id"], user(MANAGERS[0]).to_string());
        assert_eq!(items[0]["erased"], false);
        assert_eq!(items[0]["commented_at"], "2026-03-02T09:02:00Z");
    }
}

#[tokio::test]
async fn a_comment_is_read_with_the_consistency_token_of_its_command_once_projected() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let po = app.start(json!(5000), "PO-1", 0).await;
    app.project().await;
    let position = comment(&po, "review", &member(CLERK, &["clerks"]), "just now", 1).await;

    let request = app
        .client
        .get(app.url(&format!("/api/v1/tasks/{}/comments", po.child("review"))))
        .bearer_auth(app.member_token(CLERK, &["clerks"]))
        .header("x-consistency-token", position.to_string())
        .send();
    let started = Instant::now();
    let stop = CancellationToken::new();
    let projector = {
        let (stop, pool) = (stop.clone(), app.pool().clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Projections::all()
                .only(&[TASKS])
                .unwrap()
                .run(pool, stop)
                .await;
        })
    };
    let response = request.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
    let page: Value = response.json().await.unwrap();
    assert_eq!(texts(&page), ["just now"]);
    stop.cancel();
    projector.await.unwrap();
}
