//! `GET /api/v1/reports/workflows`.

use std::collections::BTreeMap;

use api_common::{ApiError, CurrentUser, Json};
use axum::extract::State;
use chrono::{Days, NaiveDate, Utc};
use projections::names::WORKFLOW_REPORTS;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

use super::midnight;
use crate::access;
use crate::consistency::ConsistencyToken;
use crate::params::{self, Instant, Params};
use crate::routes::ReadProblems;
use crate::state::QueryState;

/// The longest range a report covers.
const MAX_DAYS: u64 = 3660;

/// How a report groups days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    #[default]
    Day,
    /// ISO weeks, starting on Monday (the first and last of a range may be partial).
    Week,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WorkflowParams {
    /// Only this definition (default: every definition).
    definition_key: Option<String>,
    /// First day, inclusive (YYYY-MM-DD or RFC 3339; default: 30 days before `to`).
    #[param(value_type = Option<String>)]
    from: Option<Instant>,
    /// Last day, exclusive (default: tomorrow, UTC).
    #[param(value_type = Option<String>)]
    to: Option<Instant>,
    /// `day` (default) or `week`.
    bucket: Option<Bucket>,
}

/// One definition in one bucket.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct WorkflowReportItem {
    pub definition_key: String,
    /// The bucket's first day (a Monday for weeks).
    pub bucket_start: NaiveDate,
    /// Instances started in the bucket.
    pub started: i64,
    /// Instances completed in the bucket, any outcome.
    pub completed: i64,
    /// Completed instances by the outcome of their end step.
    pub completed_by_outcome: BTreeMap<String, i64>,
    pub cancelled: i64,
    pub failed: i64,
    /// Tasks and approvals of the definition's instances that became overdue in the bucket.
    pub sla_breaches: i64,
    /// Cycle time (start to completion) of the instances completed in the bucket.
    pub cycle_time_p50_seconds: Option<f64>,
    pub cycle_time_p95_seconds: Option<f64>,
    pub cycle_time_avg_seconds: Option<f64>,
}

/// The workflow report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowReport {
    pub bucket: Bucket,
    pub from: NaiveDate,
    /// Exclusive.
    pub to: NaiveDate,
    /// By definition key, then bucket.
    pub items: Vec<WorkflowReportItem>,
}

/// The report range as days: `from` inclusive, `to` exclusive.
fn days(from: Option<Instant>, to: Option<Instant>) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let to = to.map_or_else(
        || Utc::now().date_naive() + Days::new(1),
        |Instant(t)| t.date_naive(),
    );
    let from = from.map_or_else(|| to - Days::new(30), |Instant(t)| t.date_naive());
    if from >= to {
        return Err(params::invalid("from", "`from` must be before `to`"));
    }
    if (to - from).num_days() as u64 > MAX_DAYS {
        return Err(params::invalid(
            "to",
            format!("a report covers at most {MAX_DAYS} days"),
        ));
    }
    Ok((from, to))
}

fn entry(
    items: &mut BTreeMap<(String, NaiveDate), WorkflowReportItem>,
    key: String,
    start: NaiveDate,
) -> &mut WorkflowReportItem {
    items
        .entry((key.clone(), start))
        .or_insert_with(|| WorkflowReportItem {
            definition_key: key,
            bucket_start: start,
            ..WorkflowReportItem::default()
        })
}

/// Per definition and day or week: instances started, completed (by outcome), cancelled and
/// failed, SLA breaches, and exact cycle-time percentiles. Days are UTC.
#[utoipa::path(get, path = "/api/v1/reports/workflows", tag = "reports",
    params(WorkflowParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the workflow report has passed this token")),
    responses(
        (status = 200, description = "The report", body = WorkflowReport),
        (status = 403, description = "Reports are for operators, designers, auditors and admins", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
pub(super) async fn workflow_report(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<WorkflowParams>,
) -> Result<Json<WorkflowReport>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    access::require_reports(&claims)?;
    let (from, to) = days(params.from, params.to)?;
    let bucket = params.bucket.unwrap_or_default();
    let trunc = match bucket {
        Bucket::Day => "day",
        Bucket::Week => "week",
    };
    state.consistent(token, &[WORKFLOW_REPORTS]).await?;
    let mut items: BTreeMap<(String, NaiveDate), WorkflowReportItem> = BTreeMap::new();
    let counts = sqlx::query(
        "select definition_key, date_trunc($5, day::timestamp)::date as bucket, \
             sum(started)::bigint as started, sum(completed)::bigint as completed, \
             sum(cancelled)::bigint as cancelled, sum(failed)::bigint as failed, \
             sum(sla_breaches)::bigint as sla_breaches \
         from workflow_report_days \
         where tenant_id = $1 and day >= $2 and day < $3 \
           and ($4::text is null or definition_key = $4) \
         group by 1, 2",
    )
    .bind(&claims.tid)
    .bind(from)
    .bind(to)
    .bind(params.definition_key.as_deref())
    .bind(trunc)
    .fetch_all(&state.pool)
    .await?;
    let outcomes = sqlx::query(
        "select definition_key, date_trunc($5, day::timestamp)::date as bucket, outcome, \
             sum(completed)::bigint as completed \
         from workflow_report_outcomes \
         where tenant_id = $1 and day >= $2 and day < $3 \
           and ($4::text is null or definition_key = $4) \
         group by 1, 2, 3",
    )
    .bind(&claims.tid)
    .bind(from)
    .bind(to)
    .bind(params.definition_key.as_deref())
    .bind(trunc)
    .fetch_all(&state.pool)
    .await?;
    let cycles = sqlx::query(
        "select definition_key, \
             date_trunc($5, (ended_at at time zone 'UTC'))::date as bucket, \
             percentile_cont(0.5) within group (order by cycle_seconds) as p50, \
             percentile_cont(0.95) within group (order by cycle_seconds) as p95, \
             avg(cycle_seconds) as average \
         from workflow_report_instances \
         where tenant_id = $1 and status = 'completed' and ended_at >= $2 and ended_at < $3 \
           and ($4::text is null or definition_key = $4) \
         group by 1, 2",
    )
    .bind(&claims.tid)
    .bind(midnight(from))
    .bind(midnight(to))
    .bind(params.definition_key.as_deref())
    .bind(trunc)
    .fetch_all(&state.pool)
    .await?;
    for row in counts {
        let item = entry(
            &mut items,
            row.try_get("definition_key")?,
            row.try_get("bucket")?,
        );
        item.started = row.try_get("started")?;
        item.completed = row.try_get("completed")?;
        item.cancelled = row.try_get("cancelled")?;
        item.failed = row.try_get("failed")?;
        item.sla_breaches = row.try_get("sla_breaches")?;
    }
    for row in outcomes {
        let item = entry(
            &mut items,
            row.try_get("definition_key")?,
            row.try_get("bucket")?,
        );
        item.completed_by_outcome
            .insert(row.try_get("outcome")?, row.try_get("completed")?);
    }
    for row in cycles {
        let item = entry(
            &mut items,
            row.try_get("definition_key")?,
            row.try_get("bucket")?,
        );
        item.cycle_time_p50_seconds = row.try_get("p50")?;
        item.cycle_time_p95_seconds = row.try_get("p95")?;
        item.cycle_time_avg_seconds = row.try_get("average")?;
    }
    Ok(Json(WorkflowReport {
        bucket,
        from,
        to,
        items: items.into_values().collect(),
    }))
}
