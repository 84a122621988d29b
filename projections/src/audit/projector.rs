//! The audit projector: appends every event to its tenant's hash chain (`audit_entries`,
//! `audit_chain_heads`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use event_schemas::RecordedEvent;
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Fields, GENESIS, canonical_fields, chain_hash, write_canonical};
use crate::names::AUDIT;
use crate::projector::{EventFilter, ProjectionError, Projector, meta};

// Every column travels as a typed array (binary): the entry is written from the event as the
// batch has it, its payload as the canonical JSON text that was hashed.
const INSERT_ENTRIES: &str = "\
insert into audit_entries (tenant_id, chain_seq, event_id, tx_id, global_position, aggregate_type,
    aggregate_id, sequence, event_type, event_version, actor, occurred_at, payload, prev_hash, hash)
select tenant_id, chain_seq, event_id, tx_id, global_position, aggregate_type, aggregate_id,
       sequence, event_type, event_version, actor, occurred_at, payload::json, prev_hash, hash
from unnest($1::text[], $2::bigint[], $3::uuid[], $4::bigint[], $5::bigint[], $6::text[],
            $7::text[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::timestamptz[],
            $13::text[], $14::bytea[], $15::bytea[])
     as r(tenant_id, chain_seq, event_id, tx_id, global_position, aggregate_type, aggregate_id,
          sequence, event_type, event_version, actor, occurred_at, payload, prev_hash, hash)";

const UPSERT_HEADS: &str = "\
insert into audit_chain_heads (tenant_id, chain_seq, hash)
select * from unnest($1::text[], $2::bigint[], $3::bytea[])
on conflict (tenant_id) do update set chain_seq = excluded.chain_seq, hash = excluded.hash";

/// A batch's entries, column by column.
#[derive(Debug)]
struct Columns<'a> {
    tenant_id: Vec<&'a str>,
    chain_seq: Vec<i64>,
    event_id: Vec<Uuid>,
    tx_id: Vec<i64>,
    global_position: Vec<i64>,
    aggregate_type: Vec<&'a str>,
    aggregate_id: Vec<&'a str>,
    sequence: Vec<i64>,
    event_type: Vec<&'a str>,
    event_version: Vec<&'a str>,
    actor: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    payload: Vec<String>,
    prev_hash: Vec<[u8; 32]>,
    hash: Vec<[u8; 32]>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            tenant_id: Vec::with_capacity(n),
            chain_seq: Vec::with_capacity(n),
            event_id: Vec::with_capacity(n),
            tx_id: Vec::with_capacity(n),
            global_position: Vec::with_capacity(n),
            aggregate_type: Vec::with_capacity(n),
            aggregate_id: Vec::with_capacity(n),
            sequence: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            event_version: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            occurred_at: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
        }
    }
}

/// Appends every event, of every aggregate type (identity included), to the audit trail.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditProjector;

impl Projector for AuditProjector {
    fn name(&self) -> &'static str {
        AUDIT
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_entries", "audit_chain_heads"]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(tx, events))
    }
}

#[tracing::instrument(name = "project_audit", skip_all, fields(events = events.len()))]
async fn apply(tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
    let mut metas = Vec::with_capacity(events.len());
    for event in events {
        metas.push(meta(event)?);
    }
    let mut tenants: Vec<&str> = metas.iter().map(|m| m.tenant_id).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let mut heads: HashMap<String, (i64, [u8; 32])> = sqlx::query_as::<_, (String, i64, Vec<u8>)>(
        "select tenant_id, chain_seq, hash from audit_chain_heads where tenant_id = any($1)",
    )
    .bind(&tenants)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(tenant, seq, hash)| {
        let mut bytes = [0u8; 32];
        if hash.len() == 32 {
            bytes.copy_from_slice(&hash);
        }
        (tenant, (seq, bytes))
    })
    .collect();
    let mut columns = Columns::with_capacity(events.len());
    for (event, meta) in events.iter().zip(&metas) {
        let (last_seq, prev) = heads.get(meta.tenant_id).copied().unwrap_or((0, GENESIS));
        let chain_seq = last_seq + 1;
        let mut payload = Vec::with_capacity(256);
        write_canonical(&mut payload, &event.payload);
        let canonical = canonical_fields(&Fields {
            event_id: event.event_id,
            position: event.position,
            tenant_id: meta.tenant_id,
            chain_seq,
            aggregate_type: &event.aggregate_type,
            aggregate_id: &event.aggregate_id,
            sequence: event.sequence,
            event_type: &event.event_type,
            event_version: &event.event_version,
            actor: meta.actor,
            occurred_at: meta.occurred_at,
            payload: &payload,
        });
        let hash = chain_hash(&prev, &canonical);
        heads.insert(meta.tenant_id.to_owned(), (chain_seq, hash));
        columns.tenant_id.push(meta.tenant_id);
        columns.chain_seq.push(chain_seq);
        columns.event_id.push(event.event_id);
        columns.tx_id.push(event.position.tx_id as i64);
        columns.global_position.push(event.position.global_position);
        columns.aggregate_type.push(&event.aggregate_type);
        columns.aggregate_id.push(&event.aggregate_id);
        columns.sequence.push(event.sequence);
        columns.event_type.push(&event.event_type);
        columns.event_version.push(&event.event_version);
        columns.actor.push(meta.actor);
        columns.occurred_at.push(meta.occurred_at);
        // canonical JSON is UTF-8: serde_json writes strings as they are or escaped
        columns
            .payload
            .push(String::from_utf8(payload).map_err(|_| {
                ProjectionError::inconsistent(event, "the payload's canonical JSON is not UTF-8")
            })?);
        columns.prev_hash.push(prev);
        columns.hash.push(hash);
    }
    sqlx::query(INSERT_ENTRIES)
        .bind(&columns.tenant_id)
        .bind(&columns.chain_seq)
        .bind(&columns.event_id)
        .bind(&columns.tx_id)
        .bind(&columns.global_position)
        .bind(&columns.aggregate_type)
        .bind(&columns.aggregate_id)
        .bind(&columns.sequence)
        .bind(&columns.event_type)
        .bind(&columns.event_version)
        .bind(&columns.actor)
        .bind(&columns.occurred_at)
        .bind(&columns.payload)
        .bind(&columns.prev_hash)
        .bind(&columns.hash)
        .execute(&mut *tx)
        .await?;
    let mut head_tenants = Vec::with_capacity(tenants.len());
    let mut head_seqs = Vec::with_capacity(tenants.len());
    let mut head_hashes = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        if let Some((seq, hash)) = heads.get(*tenant) {
            head_tenants.push(*tenant);
            head_seqs.push(*seq);
            head_hashes.push(hash.to_vec());
        }
    }
    sqlx::query(UPSERT_HEADS)
        .bind(&head_tenants)
        .bind(&head_seqs)
        .bind(&head_hashes)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
