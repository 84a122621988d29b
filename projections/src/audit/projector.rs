//! The audit projector: appends every event to its tenant's hash chain (`audit_entries`,
//! `audit_chain_heads`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use event_schemas::RecordedEvent;
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Fields, GENESIS, canonical_fields, chain_hash};
use crate::names::AUDIT;
use crate::projector::{EventFilter, ProjectionError, Projector, meta};

// Computed columns travel as typed arrays (binary, no JSON to parse); the rest, the payload
// above all, is taken from the event's own row.
const INSERT_ENTRIES: &str = "\
insert into audit_entries (tenant_id, chain_seq, event_id, tx_id, global_position, aggregate_type,
    aggregate_id, sequence, event_type, event_version, actor, occurred_at, payload, prev_hash, hash)
select r.tenant_id, r.chain_seq, e.event_id, r.tx_id, e.global_position, e.aggregate_type,
       e.aggregate_id, e.sequence, e.event_type, e.event_version, r.actor, r.occurred_at,
       e.payload, r.prev_hash, r.hash
from unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::timestamptz[],
            $7::bytea[], $8::bytea[])
     as r(event_id, tenant_id, chain_seq, tx_id, actor, occurred_at, prev_hash, hash)
join events e on e.event_id = r.event_id";

const UPSERT_HEADS: &str = "\
insert into audit_chain_heads (tenant_id, chain_seq, hash)
select * from unnest($1::text[], $2::bigint[], $3::bytea[])
on conflict (tenant_id) do update set chain_seq = excluded.chain_seq, hash = excluded.hash";

/// A batch's entries, column by column.
#[derive(Debug, Default)]
struct Columns<'a> {
    event_id: Vec<Uuid>,
    tenant_id: Vec<&'a str>,
    chain_seq: Vec<i64>,
    tx_id: Vec<i64>,
    actor: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
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
    let mut columns = Columns::default();
    for (event, meta) in events.iter().zip(&metas) {
        let (last_seq, prev) = heads.get(meta.tenant_id).copied().unwrap_or((0, GENESIS));
        let chain_seq = last_seq + 1;
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
            payload: &event.payload,
        });
        let hash = chain_hash(&prev, &canonical);
        heads.insert(meta.tenant_id.to_owned(), (chain_seq, hash));
        columns.event_id.push(event.event_id);
        columns.tenant_id.push(meta.tenant_id);
        columns.chain_seq.push(chain_seq);
        columns.tx_id.push(event.position.tx_id as i64);
        columns.actor.push(meta.actor);
        columns.occurred_at.push(meta.occurred_at);
        columns.prev_hash.push(prev.to_vec());
        columns.hash.push(hash.to_vec());
    }
    let inserted = sqlx::query(INSERT_ENTRIES)
        .bind(&columns.event_id)
        .bind(&columns.tenant_id)
        .bind(&columns.chain_seq)
        .bind(&columns.tx_id)
        .bind(&columns.actor)
        .bind(&columns.occurred_at)
        .bind(&columns.prev_hash)
        .bind(&columns.hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if inserted != events.len() as u64 {
        // the join lost an event: never skip one silently
        return Err(ProjectionError::inconsistent(
            events[0],
            format!(
                "{inserted} of the batch's {} events were found in the log",
                events.len()
            ),
        ));
    }
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
