use domain::Role;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::{AUDITOR, CLERK, LAWYER, MANAGERS, TestApp, item_ids, member, operator, user};

const QUOTE: &[u8] = b"quote 114: 12,000 EUR";
const CONTRACT: &[u8] = b"signed contract";

#[tokio::test]
async fn documents_are_seen_by_whoever_sees_their_task_or_instance() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let clerk = member(CLERK, &["clerks"]);
    let mut po = app.start(json!(500), "PO-1", 0).await;
    let quote = po
        .attach(Some("review"), &clerk, "quote.txt", QUOTE, 1)
        .await;
    let contract = po
        .attach(None, &operator(), "contract.txt", CONTRACT, 2)
        .await;
    po.work("review", &clerk, json!({}), 3).await;
    let mut other = app.start(json!(700), "PO-2", 4).await;
    let elsewhere = other
        .attach(Some("review"), &clerk, "other.txt", b"other", 5)
        .await;
    app.project().await;

    let of_po = format!("/api/v1/documents?workflow_instance_id={}", po.id);
    let newest_first = [contract.to_string(), quote.to_string()];
    // the clerk worked its task; the manager holds its approval; the auditor sees everything
    let clerk_token = app.member_token(CLERK, &["clerks"]);
    let manager_token = app.member_token(MANAGERS[0], &["managers"]);
    for token in [&clerk_token, &manager_token, &app.auditor_token()] {
        assert_eq!(item_ids(&app.ok(&of_po, token).await), newest_first);
    }
    let page = app.ok(&of_po, &manager_token).await;
    let listed = &page["items"][1];
    assert_eq!(listed["task_id"], po.child("review").to_string());
    assert_eq!(listed["name"], "quote.txt");
    assert_eq!(listed["size"], QUOTE.len());
    assert_eq!(listed["sha256"], hex::encode(Sha256::digest(QUOTE)));
    assert_eq!(listed["attached_by"], format!("user:{}", user(CLERK)));
    let of_task = format!("/api/v1/documents?task_id={}", po.child("review"));
    assert_eq!(
        item_ids(&app.ok(&of_task, &clerk_token).await),
        [quote.to_string()]
    );
    // everything the clerk may see, paged
    let first = app.ok("/api/v1/documents?limit=2", &clerk_token).await;
    assert_eq!(
        item_ids(&first),
        [elsewhere.to_string(), contract.to_string()]
    );
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .ok(
            &format!("/api/v1/documents?limit=2&cursor={cursor}"),
            &clerk_token,
        )
        .await;
    assert_eq!(item_ids(&second), [quote.to_string()]);
    assert!(second["next_cursor"].is_null());

    // someone not involved sees none of it, and another tenant's caller neither
    let lawyer = app.member_token(LAWYER, &["legal"]);
    let globex = app.token("globex", user(AUDITOR), &[Role::Auditor], &[]);
    for token in [&lawyer, &globex] {
        assert!(item_ids(&app.ok(&of_po, token).await).is_empty());
        for path in [
            format!("/api/v1/documents/{quote}"),
            format!("/api/v1/documents/{quote}/content"),
        ] {
            let missing = app.problem(&path, token, StatusCode::NOT_FOUND).await;
            assert_eq!(missing["code"], "not_found", "{path}");
        }
    }
    let unknown = app
        .problem(
            "/api/v1/documents?task_id=x",
            &clerk_token,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert_eq!(unknown["errors"][0]["field"], "task_id");
}

#[tokio::test]
async fn content_is_served_as_an_attachment_checked_against_its_digest() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let clerk = member(CLERK, &["clerks"]);
    let mut po = app.start(json!(500), "PO-1", 0).await;
    let quote = po
        .attach(Some("review"), &clerk, "Angebot Müller.txt", QUOTE, 1)
        .await;
    app.project().await;
    let token = app.member_token(CLERK, &["clerks"]);

    let document = app.get(&format!("/api/v1/documents/{quote}"), &token).await;
    assert_eq!(document.status(), StatusCode::OK);
    assert_eq!(document.headers()["etag"], "\"1\"");
    let path = format!("/api/v1/documents/{quote}/content");
    let response = app.get(&path, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let digest = Sha256::digest(QUOTE);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["etag"], format!("\"{}\"", hex::encode(digest)));
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"Angebot M_ller.txt\"; \
         filename*=UTF-8''Angebot%20M%C3%BCller.txt"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("sandbox")
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), QUOTE);
    let cached = app
        .client
        .get(app.url(&path))
        .bearer_auth(&token)
        .header("if-none-match", headers["etag"].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(headers["accept-ranges"], "bytes");

    // one byte range, as a PDF viewer asks for it; one past the end is a 416
    let ranged = |range: &'static str, if_range: Option<String>| {
        let mut request = app
            .client
            .get(app.url(&path))
            .bearer_auth(&token)
            .header("range", range);
        if let Some(validator) = if_range {
            request = request.header("if-range", validator);
        }
        request.send()
    };
    let part = ranged("bytes=0-3", None).await.unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 0-3/{}", QUOTE.len())
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &QUOTE[..4]);
    let tail = ranged("bytes=-5", None).await.unwrap();
    assert_eq!(
        tail.bytes().await.unwrap().as_ref(),
        &QUOTE[QUOTE.len() - 5..]
    );
    let changed = ranged("bytes=0-3", Some("\"another version\"".into()))
        .await
        .unwrap();
    assert_eq!(
        changed.status(),
        StatusCode::OK,
        "If-Range of another version: all of it"
    );
    let past = ranged("bytes=100000-", None).await.unwrap();
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{}", QUOTE.len())
    );

    // content changed behind the API's back is refused, not served
    sqlx::query("update document_contents set content = 'tampered'")
        .execute(app.pool())
        .await
        .unwrap();
    let corrupted = app
        .problem(&path, &token, StatusCode::INTERNAL_SERVER_ERROR)
        .await;
    assert_eq!(corrupted["code"], "document_corrupted");
}

#[tokio::test]
async fn a_removed_document_is_listed_only_on_request_and_its_content_is_gone() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut po = app.start(json!(500), "PO-1", 0).await;
    let contract = po
        .attach(None, &operator(), "contract.txt", CONTRACT, 1)
        .await;
    let draft = po.attach(None, &operator(), "draft.txt", b"draft", 2).await;
    // one removal projected in a later batch than its attachment, one in the same
    app.project().await;
    po.remove(None, &operator(), contract).await;
    app.project().await;
    po.remove(None, &operator(), draft).await;
    let short_lived = po.attach(None, &operator(), "final.txt", b"final", 3).await;
    po.remove(None, &operator(), short_lived).await;
    app.project().await;
    let token = app.operator_token();

    let of_po = format!("/api/v1/documents?workflow_instance_id={}", po.id);
    assert!(item_ids(&app.ok(&of_po, &token).await).is_empty());
    let all = app
        .ok(&format!("{of_po}&include_removed=true"), &token)
        .await;
    assert_eq!(
        item_ids(&all),
        [
            short_lived.to_string(),
            draft.to_string(),
            contract.to_string()
        ]
    );
    let removed = &all["items"][2];
    assert_eq!(removed["removal_reason"], "superseded");
    assert_eq!(removed["removed_by"], format!("user:{}", user(0x0F)));
    assert_eq!(removed["version"], 2);
    let gone = app
        .problem(
            &format!("/api/v1/documents/{contract}/content"),
            &token,
            StatusCode::GONE,
        )
        .await;
    assert_eq!(gone["code"], "document_removed");
}
