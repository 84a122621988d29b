//! `GET /api/v1/audit/export`: the tenant's audit trail as JSON lines or CSV, streamed in
//! constant memory.
//!
//! The export is a contiguous stretch of the tenant's hash chain, so it verifies on its own:
//! from the earliest entry that occurred at or after `from` (the chain's start without `from`)
//! to the latest that occurred before `to` (the chain's current end without `to`), fixed when
//! the request starts. Entries are read in keyset batches of `chain_seq` by a producer task
//! and handed to the response through a small bounded channel: memory stays at a couple of
//! batches however long the trail is.

use std::io;

use api_common::{ApiError, CurrentUser};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use projections::audit::{ExportFormat, Exporter, chain_range};
use projections::names::AUDIT;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access;
use crate::consistency::ConsistencyToken;
use crate::params::{Instant, Params};
use crate::routes::ReadProblems;
use crate::state::QueryState;

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new().routes(routes!(export_audit))
}

/// Export format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (`application/x-ndjson`).
    #[default]
    Jsonl,
    /// A header line, then one entry per line; `payload` as JSON text (`text/csv`).
    Csv,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportParams {
    /// `jsonl` (default) or `csv`.
    format: Option<Format>,
    /// Start at the earliest entry that occurred at or after this (RFC 3339 or YYYY-MM-DD).
    #[param(value_type = Option<String>)]
    from: Option<Instant>,
    /// End at the latest entry that occurred before this.
    #[param(value_type = Option<String>)]
    to: Option<Instant>,
}

/// Streams the caller's tenant's audit trail with each entry's hashes: a contiguous stretch of
/// its hash chain, which `workledger audit verify` checks on its own. The stretch is named in
/// the `X-Audit-First-Seq`, `X-Audit-Last-Seq` and `X-Audit-Count` headers.
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit",
    params(ExportParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the audit trail has passed this token")),
    responses(
        (status = 200, description = "The entries, one per line, in chain order",
         content((String = "application/x-ndjson"), (String = "text/csv")),
         headers(("X-Audit-First-Seq" = i64, description = "chain_seq of the first entry"),
                 ("X-Audit-Last-Seq" = i64, description = "chain_seq of the last entry"),
                 ("X-Audit-Count" = i64, description = "Entries in the export"))),
        (status = 403, description = "The audit trail is for auditors and admins", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, format))]
async fn export_audit(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<ExportParams>,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    access::require_auditor(&claims)?;
    let format = params.format.unwrap_or_default();
    tracing::Span::current().record("format", tracing::field::debug(format));
    state.consistent(token, &[AUDIT]).await?;
    let range = chain_range(
        &state.pool,
        &claims.tid,
        params.from.map(|Instant(t)| t),
        params.to.map(|Instant(t)| t),
    )
    .await?;
    let (first, last) = range.map_or((1, 0), |r| (r.first, r.last));
    let exporter = Exporter::new(
        state.pool.clone(),
        claims.tid.clone(),
        range,
        match format {
            Format::Jsonl => ExportFormat::Jsonl,
            Format::Csv => ExportFormat::Csv,
        },
        state.settings.export_batch,
    );
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(2);
    tokio::spawn(produce(exporter, claims.tid.clone(), tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let (content_type, extension) = match format {
        Format::Jsonl => ("application/x-ndjson", "jsonl"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let number =
        |n: i64| HeaderValue::from_str(&n.to_string()).unwrap_or(HeaderValue::from_static("0"));
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "attachment; filename=\"audit-{}.{extension}\"",
        claims.tid.replace(['"', '\\'], "_")
    )) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(HeaderName::from_static("x-audit-first-seq"), number(first));
    headers.insert(HeaderName::from_static("x-audit-last-seq"), number(last));
    headers.insert(
        HeaderName::from_static("x-audit-count"),
        number((last - first + 1).max(0)),
    );
    Ok(response)
}

/// Reads the export's chunks and hands them to the response.
#[tracing::instrument(name = "audit_export", skip_all, fields(tenant = %tenant))]
async fn produce(
    mut exporter: Exporter,
    tenant: String,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
) {
    loop {
        match exporter.next_chunk().await {
            Ok(Some(chunk)) => {
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                // the client sees a cut-off body; verifying it names the missing entries
                tracing::error!(error = %api_common::problem::chain(&error), "the audit export failed");
                let _ = tx.send(Err(io::Error::other(error))).await;
                break;
            }
        }
    }
    metrics::counter!("workledger_audit_export_rows_total").increment(exporter.entries());
    tracing::info!(entries = exporter.entries(), "audit export done");
}
