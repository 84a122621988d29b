//! The audit trail over HTTP: auditors only, entries with their chain hashes, and an export
//! that streams every entry and verifies on its own.

use projections::audit::{AuditEntry, ChainVerifier, GENESIS};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

async fn audit_app() -> (TestApp, Po) {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut po = app.start(json!(5000), "PO-1", 0).await;
    po.approve_all(10).await;
    let _other = app.start(json!(9000), "PO-2", 20).await;
    app.project().await;
    (app, po)
}

async fn tenant_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from events where metadata->>'tenant_id' = 'acme'")
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_audit_trail_is_for_auditors_and_each_entry_carries_its_chain_hash() {
    let (app, po) = audit_app().await;
    let member = app.member_token(CLERK, &["clerks"]);
    let problem = app
        .problem("/api/v1/audit", &member, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(problem["code"], "forbidden");
    app.problem(
        "/api/v1/audit/export",
        &app.operator_token(),
        StatusCode::FORBIDDEN,
    )
    .await;

    let auditor = app.auditor_token();
    let first = app.ok("/api/v1/audit?limit=5", &auditor).await;
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["chain_seq"], 1);
    assert_eq!(items[0]["prev_hash"], hex::encode(GENESIS));
    assert_eq!(items[0]["event_type"], "WorkflowDefinitionPublished");
    assert_eq!(items[1]["prev_hash"], items[0]["hash"]);
    for field in [
        "event_id",
        "position",
        "aggregate_type",
        "aggregate_id",
        "event_type",
        "event_version",
        "tenant_id",
        "actor",
        "occurred_at",
        "payload",
        "prev_hash",
        "hash",
    ] {
        assert!(items[0].get(field).is_some(), "{field}");
    }
    // paging the whole trail gives one verifiable chain
    let mut verifier = ChainVerifier::new();
    let mut cursor = first["next_cursor"].as_str().map(str::to_owned);
    for item in items {
        verifier
            .push(&serde_json::from_value::<AuditEntry>(item.clone()).unwrap())
            .unwrap();
    }
    while let Some(c) = cursor {
        let page = app
            .ok(&format!("/api/v1/audit?limit=7&cursor={c}"), &auditor)
            .await;
        for item in page["items"].as_array().unwrap() {
            verifier
                .push(&serde_json::from_value::<AuditEntry>(item.clone()).unwrap())
                .unwrap();
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    let chains = verifier.finish();
    assert_eq!(chains[0].entries as i64, tenant_events(&app).await);

    let of_instance = app
        .ok(
            &format!(
                "/api/v1/audit?aggregate_type=workflow_instance&aggregate_id={}&limit=500",
                po.id
            ),
            &auditor,
        )
        .await;
    let types: Vec<&str> = of_instance["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"InstanceStarted"));
    assert_eq!(types.last(), Some(&"InstanceCompleted"));
    let by_clerk = app
        .ok(
            &format!("/api/v1/audit?actor={}&limit=500", user(CLERK)),
            &auditor,
        )
        .await;
    let by_clerk = by_clerk["items"].as_array().unwrap();
    assert!(!by_clerk.is_empty());
    assert!(
        by_clerk
            .iter()
            .all(|i| i["actor"] == format!("user:{}", user(CLERK)))
    );
    let later = app
        .ok(
            "/api/v1/audit?from=2026-03-02T09:20:00Z&limit=500",
            &auditor,
        )
        .await;
    assert!(
        later["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["occurred_at"].as_str().unwrap() >= "2026-03-02T09:20:00.000000Z")
    );
    assert_eq!(later["items"][0]["event_type"], "InstanceStarted");
}

#[tokio::test]
async fn the_audit_export_streams_every_entry_with_its_hashes_as_json_lines_and_csv() {
    let (app, _po) = audit_app().await;
    let auditor = app.auditor_token();
    let response = app.get("/api/v1/audit/export?format=jsonl", &auditor).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let count: i64 = response.headers()["x-audit-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len() as i64, count);
    assert_eq!(count, tenant_events(&app).await);
    let mut verifier = ChainVerifier::new();
    let mut entries = Vec::new();
    for line in &lines {
        let entry: AuditEntry = serde_json::from_str(line).unwrap();
        verifier.push(&entry).unwrap();
        entries.push(entry);
    }
    let chain = &verifier.finish()[0];
    assert_eq!(chain.first_prev_hash, hex::encode(GENESIS));
    assert_eq!(chain.last_hash, entries.last().unwrap().hash);

    // the same entries as CSV
    let csv_body = app
        .get("/api/v1/audit/export?format=csv", &auditor)
        .await
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv_body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(headers.len(), 14);
    assert_eq!(&headers[13], "hash");
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), entries.len());
    let mut csv_verifier = ChainVerifier::new();
    for (record, entry) in records.iter().zip(&entries) {
        let fields: Vec<&str> = record.iter().collect();
        let from_csv = AuditEntry::from_record(&fields).unwrap();
        assert_eq!(&from_csv, entry, "the CSV record is the same entry");
        csv_verifier.push(&from_csv).unwrap();
    }
    assert_eq!(csv_verifier.finish()[0].last_hash, chain.last_hash);

    // a time range is a contiguous stretch of the chain that verifies on its own
    let response = app
        .get("/api/v1/audit/export?from=2026-03-02T09:20:00Z", &auditor)
        .await;
    let first: i64 = response.headers()["x-audit-first-seq"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first > 1);
    let body = response.text().await.unwrap();
    let mut verifier = ChainVerifier::new();
    for line in body.lines() {
        verifier.push(&serde_json::from_str(line).unwrap()).unwrap();
    }
    let stretch = &verifier.finish()[0];
    assert_eq!(stretch.first_seq, first);
    assert_eq!(stretch.last_seq, count);
    assert_eq!(stretch.first_prev_hash, entries[(first - 2) as usize].hash);
}

#[tokio::test]
async fn a_long_export_is_streamed_in_batches_that_chain_across_their_boundaries() {
    let app = TestApp::with_settings(query_api::QuerySettings {
        export_batch: 3,
        ..query_api::QuerySettings::default()
    })
    .await;
    app.publish().await;
    for n in 0..4 {
        app.start(json!(100 * n), &format!("PO-{n}"), n).await;
    }
    app.project().await;
    let body = app
        .get("/api/v1/audit/export", &app.auditor_token())
        .await
        .text()
        .await
        .unwrap();
    let mut verifier = ChainVerifier::new();
    for line in body.lines() {
        verifier.push(&serde_json::from_str(line).unwrap()).unwrap();
    }
    assert_eq!(
        verifier.finish()[0].entries as i64,
        tenant_events(&app).await
    );
}
