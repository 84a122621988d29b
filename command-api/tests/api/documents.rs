use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{TestApp, fields, problem, spawn, spawn_with};

const QUOTE: &[u8] = b"%PDF-1.7 quote 114: 12,000 EUR";

/// Uploads `content` to `path` (`.../documents`) as `name` with `media_type`.
async fn upload(
    app: &TestApp,
    path: &str,
    token: &str,
    name: &str,
    media_type: Option<&str>,
    content: &[u8],
) -> Response {
    let mut request = app
        .client
        .post(app.url(path))
        .query(&[("name", name)])
        .bearer_auth(token)
        .body(content.to_vec());
    if let Some(media_type) = media_type {
        request = request.header("content-type", media_type);
    }
    request.send().await.unwrap()
}

async fn stored_contents(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    sqlx::query_as("select sha256, content from document_contents order by sha256")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_candidate_attaches_a_file_to_a_task_and_removes_it_again() {
    let app = spawn().await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let id = app.task(json!({"candidate_groups": ["clerks"]})).await;
    let path = format!("/api/v1/tasks/{id}/documents");

    let response = upload(
        &app,
        &path,
        &clerk.token,
        "quote 114.pdf",
        Some("application/pdf"),
        QUOTE,
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["etag"], "\"2\"");
    assert!(response.headers().contains_key("x-consistency-token"));
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let digest = hex::encode(Sha256::digest(QUOTE));
    let document_id = body["document_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/documents/{document_id}"));
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["name"], "quote 114.pdf");
    assert_eq!(body["media_type"], "application/pdf");
    assert_eq!(body["size"], QUOTE.len());
    assert_eq!(body["sha256"], digest);

    let events = app.events("task", &id.to_string()).await;
    let attached = &events.last().unwrap();
    assert_eq!(attached["type"], "TaskDocumentAttached");
    assert_eq!(attached["payload"]["document"]["sha256"], digest);
    assert_eq!(attached["payload"]["document"]["document_id"], document_id);
    assert_eq!(attached["payload"]["workflow_instance_id"], Value::Null);
    assert_eq!(
        attached["payload"]["attached_by"],
        format!("user:{}", clerk.id)
    );
    assert_eq!(stored_contents(&app).await, [(digest, QUOTE.to_vec())]);

    // the same file again is a second document with the same stored content, uploaded anew
    // (so `workledger documents prune` keeps it through its grace)
    sqlx::query("update document_contents set stored_at = now() - interval '1 day'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let again = upload(
        &app,
        &path,
        &clerk.token,
        "copy.pdf",
        Some("application/pdf"),
        QUOTE,
    )
    .await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(stored_contents(&app).await.len(), 1);
    let fresh: bool =
        sqlx::query_scalar("select stored_at > now() - interval '1 minute' from document_contents")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(fresh);

    // someone else may not remove it; its uploader may, once
    let colleague = app.user(&["member"], &["clerks"]).await;
    let remove = format!("/api/v1/tasks/{id}/documents/{document_id}/remove");
    let refused = problem(
        app.post(&remove, &colleague.token, Value::Null).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(refused["code"], "not_attacher");
    let removed = app
        .post(&remove, &clerk.token, json!({"reason": "wrong quote"}))
        .await;
    assert_eq!(removed.status(), StatusCode::OK);
    let events = app.events("task", &id.to_string()).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "TaskDocumentRemoved");
    assert_eq!(last["payload"]["reason"], "wrong quote");
    let twice = problem(
        app.post(&remove, &clerk.token, Value::Null).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(twice["code"], "document_not_found");
}

#[tokio::test]
async fn bad_uploads_are_refused_naming_what_is_wrong_and_store_nothing() {
    let app = spawn_with(|settings| settings.document_limit = 4096).await;
    let clerk = app.user(&["member"], &["clerks"]).await;
    let outsider = app.user(&["member"], &["legal"]).await;
    let id = app.task(json!({"candidate_groups": ["clerks"]})).await;
    let path = format!("/api/v1/tasks/{id}/documents");
    let pdf = Some("application/pdf");

    for (name, media_type, content, field) in [
        ("", pdf, QUOTE, "name"),
        ("../../etc/passwd", pdf, QUOTE, "name"),
        ("quote.pdf", Some("pdf"), QUOTE, "Content-Type"),
        (
            "quote.pdf",
            Some("multipart/form-data; boundary=x"),
            QUOTE,
            "Content-Type",
        ),
        ("quote.pdf", pdf, b"".as_slice(), "body"),
    ] {
        let refused = problem(
            upload(&app, &path, &clerk.token, name, media_type, content).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&refused), [field], "{name:?} {media_type:?}");
    }
    let no_name = problem(
        app.client
            .post(app.url(&path))
            .bearer_auth(&clerk.token)
            .body(QUOTE.to_vec())
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&no_name), ["name"]);
    let too_large = problem(
        upload(&app, &path, &clerk.token, "big.bin", None, &[7u8; 5000]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(too_large["code"], "body_too_large");
    // a file within the document limit but over the JSON body limit is fine
    let small = upload(&app, &path, &clerk.token, "ok.bin", None, &[7u8; 4000]).await;
    assert_eq!(small.status(), StatusCode::CREATED);
    let body: Value = small.json().await.unwrap();
    assert_eq!(body["media_type"], "application/octet-stream");

    let before = stored_contents(&app).await.len();
    let not_involved = problem(
        upload(
            &app,
            &path,
            &outsider.token,
            "quote.pdf",
            pdf,
            b"other bytes",
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(not_involved["code"], "not_involved");
    let unknown = problem(
        upload(
            &app,
            &format!("/api/v1/tasks/{}/documents", Uuid::now_v7()),
            &clerk.token,
            "quote.pdf",
            pdf,
            b"other bytes",
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(unknown["code"], "task_not_found");
    let anonymous = app
        .client
        .post(app.url(&path))
        .query(&[("name", "quote.pdf")])
        .body(b"other bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(stored_contents(&app).await.len(), before);
    assert_eq!(app.count_events("TaskDocumentAttached").await, 1);
}

#[tokio::test]
async fn another_tenants_task_is_404_and_a_closed_task_takes_no_documents() {
    let app = spawn().await;
    let id = app.task(json!({"candidate_groups": ["clerks"]})).await;
    let created = app
        .post(
            "/api/v1/tenants",
            &app.admin.token,
            json!({"id": "acme", "name": "Acme",
            "admin_email": "boss@acme.test", "admin_password": "acme admin password"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let boss = app
        .sign_in("boss@acme.test", "acme admin password", Some("acme"))
        .await;
    let path = format!("/api/v1/tasks/{id}/documents");
    let missing = problem(
        upload(&app, &path, &boss.token, "a.txt", Some("text/plain"), b"hi").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(missing["code"], "task_not_found");

    let completed = app
        .post(
            &format!("/api/v1/tasks/{id}/complete"),
            &app.admin.token,
            json!({"output": {}}),
        )
        .await;
    assert_eq!(completed.status(), StatusCode::OK);
    let closed = problem(
        upload(
            &app,
            &path,
            &app.admin.token,
            "a.txt",
            Some("text/plain"),
            b"hi",
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(closed["code"], "task_closed");
    assert!(stored_contents(&app).await.is_empty());
}

#[tokio::test]
async fn an_instances_starter_and_operators_attach_to_it_and_a_retried_upload_attaches_once() {
    let app = spawn().await;
    app.publish(&json!({
        "key": "review", "name": "Review", "start": "check",
        "steps": {
            "check": {"type": "task", "candidate_groups": ["clerks"], "next": "done"},
            "done": {"type": "end", "outcome": "ok"}
        }
    }))
    .await;
    let instance = app.start("review", json!({})).await;
    let path = format!("/api/v1/workflow-instances/{instance}/documents");
    let member = app.user(&["member"], &["clerks"]).await;
    let refused = problem(
        upload(
            &app,
            &path,
            &member.token,
            "a.txt",
            Some("text/plain"),
            b"hi",
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(refused["code"], "forbidden");

    let send_as = |name: &str, media_type: &str| {
        app.client
            .post(app.url(&path))
            .query(&[("name", name)])
            .bearer_auth(&app.admin.token)
            .header("content-type", media_type)
            .header("idempotency-key", "upload-1")
            .body("signed".as_bytes().to_vec())
            .send()
    };
    let send = || send_as("contract.txt", "text/plain; charset=utf-8");
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let replayed = send().await.unwrap();
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["document_id"], first["document_id"]);
    assert_eq!(app.count_events("InstanceDocumentAttached").await, 1);
    // the same key and file under another name, or as another media type, is another request
    for (name, media_type) in [
        ("other.txt", "text/plain; charset=utf-8"),
        ("contract.txt", "application/pdf"),
    ] {
        let other = problem(
            send_as(name, media_type).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(
            other["code"], "idempotency_key_reused",
            "{name} {media_type}"
        );
    }
    assert_eq!(first["media_type"], "text/plain; charset=utf-8");

    let remove = format!(
        "/api/v1/workflow-instances/{instance}/documents/{}/remove",
        first["document_id"].as_str().unwrap()
    );
    let removed = app.post(&remove, &app.admin.token, Value::Null).await;
    assert_eq!(removed.status(), StatusCode::OK);
    assert_eq!(app.count_events("InstanceDocumentRemoved").await, 1);
}
