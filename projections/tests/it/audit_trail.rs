//! The audit trail: every event of every aggregate type, one hash chain per tenant, and
//! tampering with the stored entries is detected.

use projections::audit::{AuditEntry, ChainVerifier, GENESIS, Problem};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::*;

async fn entries(pool: &PgPool) -> Vec<AuditEntry> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "select jsonb_build_object('event_id', event_id, \
             'position', tx_id::text || '.' || global_position::text, 'tenant_id', tenant_id, \
             'chain_seq', chain_seq, 'aggregate_type', aggregate_type, \
             'aggregate_id', aggregate_id, 'sequence', sequence, 'event_type', event_type, \
             'event_version', event_version, 'actor', actor, \
             'occurred_at', to_char(occurred_at at time zone 'UTC', \
                                    'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             'payload', payload, 'prev_hash', encode(prev_hash, 'hex'), \
             'hash', encode(hash, 'hex')) \
         from audit_entries order by tenant_id, chain_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| serde_json::from_value(r).unwrap())
        .collect()
}

fn verify(entries: &[AuditEntry]) -> Result<(), projections::audit::ChainError> {
    let mut verifier = ChainVerifier::new();
    for entry in entries {
        verifier.push(entry)?;
    }
    Ok(())
}

#[tokio::test]
async fn the_audit_chain_covers_every_event_per_tenant_and_detects_tampering() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    let po = Po::start(&rt, json!(5000), "PO-1").await;
    po.work(
        "review",
        &member(CLERK, &["clerks"]),
        json!({"note": "ünïcode \"quoted\""}),
        5,
    )
    .await;
    // events of an aggregate type this build does not decode (identity's, say) and of another
    // tenant are audited too
    append_raw(pool, "globex", 3, None).await;
    project(pool).await;

    let all = entries(pool).await;
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(all.len() as i64, events);
    verify(&all).unwrap();
    let globex: Vec<&AuditEntry> = all.iter().filter(|e| e.tenant_id == "globex").collect();
    assert_eq!(globex.len(), 3);
    assert_eq!(globex[0].chain_seq, 1);
    assert_eq!(globex[0].prev_hash, hex::encode(GENESIS));
    assert_eq!(globex[0].aggregate_type, "test");
    let acme: Vec<&AuditEntry> = all.iter().filter(|e| e.tenant_id == TENANT).collect();
    assert_eq!(acme[0].event_type, "WorkflowDefinitionPublished");
    assert_eq!(acme[0].prev_hash, hex::encode(GENESIS));
    assert!(
        acme.iter()
            .any(|e| e.actor == format!("user:{}", user(CLERK)))
    );
    assert!(
        acme.windows(2)
            .all(|w| w[0].position < w[1].position && w[1].prev_hash == w[0].hash),
        "entries chain in log order"
    );

    // an edited payload
    sqlx::query(
        "update audit_entries set payload = jsonb_set(payload::jsonb, '{x}', '1')::json \
         where tenant_id = 'acme' and chain_seq = 3",
    )
    .execute(pool)
    .await
    .unwrap();
    let error = verify(&entries(pool).await).unwrap_err();
    assert_eq!((error.tenant_id.as_str(), error.chain_seq), ("acme", 3));
    assert!(matches!(error.problem, Problem::HashMismatch { .. }));

    // a deleted entry (after restoring the first edit by rebuilding)
    sqlx::query("truncate audit_entries, audit_chain_heads")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("delete from checkpoints where name = 'audit'")
        .execute(pool)
        .await
        .unwrap();
    project(pool).await;
    verify(&entries(pool).await).unwrap();
    sqlx::query("delete from audit_entries where tenant_id = 'acme' and chain_seq = 4")
        .execute(pool)
        .await
        .unwrap();
    let error = verify(&entries(pool).await).unwrap_err();
    assert_eq!(error.chain_seq, 5);
    assert!(matches!(error.problem, Problem::Gap { .. }));

    // a forged actor that is re-hashed but not re-linked
    sqlx::query(
        "update audit_entries set actor = 'user:00000000-0000-0000-0000-000000000000' \
         where tenant_id = 'globex' and chain_seq = 2",
    )
    .execute(pool)
    .await
    .unwrap();
    let mut forged = entries(pool).await;
    let i = forged
        .iter()
        .position(|e| e.tenant_id == "globex" && e.chain_seq == 2)
        .unwrap();
    forged[i].hash = projections::audit::entry_hash(&forged[i]).unwrap();
    let acme_ok: Vec<AuditEntry> = forged
        .iter()
        .filter(|e| e.tenant_id == "globex")
        .cloned()
        .collect();
    let error = verify(&acme_ok).unwrap_err();
    assert_eq!(error.chain_seq, 3, "the next entry no longer links on");
    assert!(matches!(error.problem, Problem::BrokenLink { .. }));
}

#[tokio::test]
async fn an_export_written_in_small_chunks_verifies_and_reports_its_final_hash() {
    use projections::audit::{ExportFormat, Exporter, chain_range};

    let (db, rt) = setup().await;
    let pool = &db.pool;
    for n in 0..3 {
        Po::start(&rt, json!(n), &format!("PO-{n}")).await;
    }
    project(pool).await;
    let range = chain_range(pool, TENANT, None, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(range.first, 1);
    let mut exporter = Exporter::new(pool.clone(), TENANT, Some(range), ExportFormat::Jsonl, 4);
    let mut file = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = exporter.next_chunk().await.unwrap() {
        file.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert_eq!(exporter.entries() as i64, range.len());
    assert!(chunks > 2);
    let mut verifier = ChainVerifier::new();
    for line in String::from_utf8(file).unwrap().lines() {
        verifier
            .push(&serde_json::from_str::<AuditEntry>(line).unwrap())
            .unwrap();
    }
    let chain = &verifier.finish()[0];
    assert_eq!(Some(chain.last_hash.as_str()), exporter.last_hash());
    assert_eq!(chain.entries as i64, range.len());
    let empty = chain_range(pool, "nobody", None, None).await.unwrap();
    assert_eq!(empty, None);
}

#[tokio::test]
async fn entries_keep_the_canonical_payload_they_hashed_and_other_spellings_still_verify() {
    let (db, rt) = setup().await;
    let pool = &db.pool;
    let po = Po::start(&rt, json!(5000), "PO-1").await;
    po.work(
        "review",
        &member(CLERK, &["clerks"]),
        json!({"b": 1, "a": "ü"}),
        5,
    )
    .await;
    project(pool).await;

    // the stored text is the canonical JSON the hash covers, byte for byte
    let stored: Vec<(String, Value)> =
        sqlx::query_as("select payload::text, payload::jsonb from audit_entries")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(!stored.is_empty());
    for (text, value) in &stored {
        assert_eq!(text.as_bytes(), projections::audit::canonical_json(value));
    }

    // entries written before migration 0006 hold the text Postgres made of their `jsonb`
    // (spaces, its own key order): the chain still verifies
    sqlx::query("update audit_entries set payload = payload::jsonb::json")
        .execute(pool)
        .await
        .unwrap();
    let respelled: Vec<String> = sqlx::query_scalar("select payload::text from audit_entries")
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(respelled.iter().any(|text| text.contains(": ")));
    verify(&entries(pool).await).unwrap();
}
