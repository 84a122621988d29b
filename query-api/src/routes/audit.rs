//! `GET /api/v1/audit`: audit entries with their chain hashes.

use api_common::{ApiError, CurrentUser, Json};
use axum::extract::State;
use chrono::{DateTime, Utc};
use event_schemas::LogPosition;
use projections::audit::AuditEntry;
use projections::names::AUDIT;
use serde::Deserialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::access;
use crate::consistency::ConsistencyToken;
use crate::page::{self, Page};
use crate::params::{self, Instant, Params};
use crate::routes::ReadProblems;
use crate::state::QueryState;

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// An audit entry: one event, its actor and time, and its place in the tenant's hash chain
/// (`hash = sha256(prev_hash || canonical entry)`, see `projections::audit`).
#[derive(Debug, Clone, ToSchema)]
#[schema(as = AuditEntry)]
#[allow(dead_code)]
pub(crate) struct AuditEntryDoc {
    event_id: Uuid,
    /// The event's log position, `TX.POSITION`.
    position: String,
    tenant_id: String,
    /// The entry's number in its tenant's chain (1, 2, ...).
    chain_seq: i64,
    aggregate_type: String,
    aggregate_id: String,
    /// The aggregate's version after the event.
    sequence: i64,
    event_type: String,
    event_version: String,
    /// `user:{id}` or `service:{name}`.
    actor: String,
    /// RFC 3339, UTC, six fractional digits.
    occurred_at: String,
    #[schema(value_type = Object)]
    payload: Value,
    /// Lowercase hex; 64 zeros for a tenant's first entry.
    prev_hash: String,
    /// Lowercase hex.
    hash: String,
}

/// The columns an audit entry is read with.
pub(crate) const COLUMNS: &str = "event_id, tx_id, global_position, tenant_id, chain_seq, \
     aggregate_type, aggregate_id, sequence, event_type, event_version, actor, occurred_at, \
     encode(prev_hash, 'hex') as prev_hash, encode(hash, 'hex') as hash";

pub(crate) fn entry(row: &PgRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        event_id: row.try_get("event_id")?,
        position: LogPosition {
            tx_id: row.try_get::<i64, _>("tx_id")? as u64,
            global_position: row.try_get("global_position")?,
        },
        tenant_id: row.try_get("tenant_id")?,
        chain_seq: row.try_get("chain_seq")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        actor: row.try_get("actor")?,
        occurred_at: row.try_get::<DateTime<Utc>, _>("occurred_at")?,
        payload: row.try_get("payload")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// `workflow_instance`, `task`, `approval`, `workflow_definition`, identity's types, ...
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    /// `user:{id}`, a bare user id, or `service:{name}`.
    actor: Option<String>,
    /// Occurred at or after (RFC 3339 or YYYY-MM-DD).
    #[param(value_type = Option<String>)]
    from: Option<Instant>,
    /// Occurred before (RFC 3339 or YYYY-MM-DD).
    #[param(value_type = Option<String>)]
    to: Option<Instant>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Audit entries of the caller's tenant in chain (log) order, each with its chain hash.
/// Personal fields (names, email addresses, reasons about a person, comments) are in the
/// payloads as stored: sealed for their person (`sealed:v1:...`), so an erasure reaches the
/// audit trail without changing it; the read models serve them opened.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(ListParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the audit trail has passed this token")),
    responses(
        (status = 200, description = "A page of entries, in chain order", body = Page<AuditEntryDoc>),
        (status = 403, description = "The audit trail is for auditors and admins", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
async fn list_audit(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<ListParams>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    access::require_auditor(&claims)?;
    let limit = params::limit(params.limit)?;
    let after: Option<i64> = page::decode(params.cursor.as_deref())?;
    state.consistent(token, &[AUDIT]).await?;
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "select {COLUMNS}, payload from audit_entries where tenant_id = "
    ));
    sql.push_bind(&claims.tid);
    if let Some(aggregate_type) = &params.aggregate_type {
        sql.push(" and aggregate_type = ").push_bind(aggregate_type);
    }
    if let Some(aggregate_id) = &params.aggregate_id {
        sql.push(" and aggregate_id = ").push_bind(aggregate_id);
    }
    if let Some(actor) = &params.actor {
        let actor = if Uuid::parse_str(actor).is_ok() {
            format!("user:{actor}")
        } else {
            actor.clone()
        };
        sql.push(" and actor = ").push_bind(actor);
    }
    if let Some(Instant(at)) = params.from {
        sql.push(" and occurred_at >= ").push_bind(at);
    }
    if let Some(Instant(at)) = params.to {
        sql.push(" and occurred_at < ").push_bind(at);
    }
    if let Some(seq) = after {
        sql.push(" and chain_seq > ").push_bind(seq);
    }
    sql.push(" order by chain_seq limit ").push_bind(limit + 1);
    let rows = sql.build().fetch_all(&state.pool).await?;
    let entries = rows.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(page::page(entries, limit, |e: &AuditEntry| {
        e.chain_seq
    })))
}
