//! `GET /api/v1/reports/tasks`.

use api_common::{ApiError, CurrentUser, Json};
use axum::extract::State;
use chrono::{DateTime, Days, Utc};
use projections::names::TASKS;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

use super::midnight;
use crate::access;
use crate::consistency::ConsistencyToken;
use crate::params::{self, Instant, Params};
use crate::routes::ReadProblems;
use crate::state::QueryState;

/// What the task report groups by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    #[default]
    Assignee,
    /// Candidate group (a task offered to several groups counts in each).
    Group,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TaskParams {
    /// `assignee` (default) or `group`.
    group_by: Option<GroupBy>,
    /// Completed from (inclusive; default: 30 days before `to`).
    #[param(value_type = Option<String>)]
    from: Option<Instant>,
    /// Completed before (exclusive; default: tomorrow, UTC).
    #[param(value_type = Option<String>)]
    to: Option<Instant>,
}

/// One assignee or group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskReportItem {
    /// The assignee's user id or the group; `null` for unassigned tasks or tasks offered to no
    /// group.
    pub key: Option<String>,
    /// Open now.
    pub open: i64,
    /// Open now and overdue.
    pub overdue: i64,
    /// Completed in the range.
    pub completed: i64,
    /// Completed in the range after having become overdue.
    pub completed_late: i64,
    /// Opening to completion, for the tasks completed in the range.
    pub handling_time_avg_seconds: Option<f64>,
    pub handling_time_p50_seconds: Option<f64>,
    pub handling_time_p95_seconds: Option<f64>,
}

/// The task report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskReport {
    pub group_by: GroupBy,
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    pub items: Vec<TaskReportItem>,
}

/// Per assignee or candidate group: open and overdue tasks now, and the tasks completed in the
/// range with their handling time (opening to completion).
#[utoipa::path(get, path = "/api/v1/reports/tasks", tag = "reports",
    params(TaskParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the task read model has passed this token")),
    responses(
        (status = 200, description = "The report", body = TaskReport),
        (status = 403, description = "Reports are for operators, designers, auditors and admins", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
pub(super) async fn task_report(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<TaskParams>,
) -> Result<Json<TaskReport>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    access::require_reports(&claims)?;
    let to = params.to.map_or_else(
        || midnight(Utc::now().date_naive() + Days::new(1)),
        |Instant(t)| t,
    );
    let from = params
        .from
        .map_or_else(|| to - chrono::TimeDelta::days(30), |Instant(t)| t);
    if from >= to {
        return Err(params::invalid("from", "`from` must be before `to`"));
    }
    let group_by = params.group_by.unwrap_or_default();
    state.consistent(token, &[TASKS]).await?;
    let key = match group_by {
        GroupBy::Assignee => "t.assignee::text",
        GroupBy::Group => "g.key",
    };
    let groups = match group_by {
        GroupBy::Assignee => "",
        GroupBy::Group => {
            " cross join lateral unnest(case when cardinality(t.candidate_groups) = 0 \
             then array[null::text] else t.candidate_groups end) as g(key)"
        }
    };
    let done = "t.status = 'completed' and t.closed_at >= $2 and t.closed_at < $3";
    let handling = "extract(epoch from t.closed_at - t.opened_at)::float8";
    let sql = format!(
        "select {key} as key, \
             count(*) filter (where t.status = 'open') as open, \
             count(*) filter (where t.status = 'open' and t.overdue) as overdue, \
             count(*) filter (where {done}) as completed, \
             count(*) filter (where {done} and t.overdue) as completed_late, \
             avg({handling}) filter (where {done}) as average, \
             percentile_cont(0.5) within group (order by {handling}) filter (where {done}) as p50, \
             percentile_cont(0.95) within group (order by {handling}) filter (where {done}) as p95 \
         from tasks t{groups} \
         where t.tenant_id = $1 and (t.status = 'open' or ({done})) \
         group by 1 order by 1 nulls first"
    );
    let rows = sqlx::query(&sql)
        .bind(&claims.tid)
        .bind(from)
        .bind(to)
        .fetch_all(&state.pool)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(TaskReportItem {
            key: row.try_get("key")?,
            open: row.try_get("open")?,
            overdue: row.try_get("overdue")?,
            completed: row.try_get("completed")?,
            completed_late: row.try_get("completed_late")?,
            handling_time_avg_seconds: row.try_get("average")?,
            handling_time_p50_seconds: row.try_get("p50")?,
            handling_time_p95_seconds: row.try_get("p95")?,
        });
    }
    Ok(Json(TaskReport {
        group_by,
        from,
        to,
        items,
    }))
}
