//! `GET /api/v1/workflow-instances[/{id}]`.

use api_common::{ApiError, Claims, CurrentUser, Json};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use projections::names::{APPROVALS, INSTANCES, TASKS};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::access;
use crate::consistency::ConsistencyToken;
use crate::page::{self, Page};
use crate::params::{self, Instant, Params};
use crate::routes::ReadProblems;
use crate::routes::tagged;
use crate::state::QueryState;

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances))
        .routes(routes!(get_instance))
}

/// Lifecycle of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl InstanceStatus {
    fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Running => "running",
            InstanceStatus::Completed => "completed",
            InstanceStatus::Cancelled => "cancelled",
            InstanceStatus::Failed => "failed",
        }
    }
}

/// A step an instance waits on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenStep {
    /// `task`, `approval`, `timer`, `join` (waiting for parallel branches), or `incident` (a
    /// decision whose rules could not be evaluated, waiting for an operator to set variables
    /// and retry it: `POST /api/v1/workflow-instances/{id}/incidents/{step_id}/retry`).
    pub kind: String,
    pub step_id: String,
    pub activation: u32,
    /// The task, approval or timer id.
    pub id: Option<Uuid>,
    pub name: Option<String>,
    /// When the instance entered the step.
    pub since: DateTime<Utc>,
    /// A task's or approval's due time; a timer's firing time.
    pub due_at: Option<DateTime<Utc>>,
    /// For a join: the parallel step, and how many of its branches arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_step_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrived: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<u32>,
    /// For an incident: why the decision could not be evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A workflow instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub id: Uuid,
    pub definition_key: String,
    pub definition_version: i64,
    pub business_key: Option<String>,
    pub status: InstanceStatus,
    /// The end step's outcome, once completed.
    pub outcome: Option<String>,
    #[schema(value_type = Object)]
    pub variables: Value,
    pub open_steps: Vec<OpenStep>,
    pub started_at: DateTime<Utc>,
    /// `user:{id}` or `service:{name}`.
    pub started_by: String,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it was cancelled or failed.
    pub end_reason: Option<String>,
    /// The step it failed at.
    pub failed_step: Option<String>,
    /// The aggregate's version (also the `ETag`).
    pub version: i64,
}

/// One event of an instance's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    /// The instance's version after the event.
    pub sequence: i64,
    pub event_type: String,
    pub step_id: Option<String>,
    pub activation: Option<i64>,
    pub actor: String,
    pub at: DateTime<Utc>,
    /// The event's facts.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// An instance with its timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceDetail {
    #[serde(flatten)]
    pub instance: Instance,
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    status: Option<InstanceStatus>,
    definition_key: Option<String>,
    business_key: Option<String>,
    /// `true`: only instances with an incident waiting for an operator; `false`: only those
    /// without.
    incident: Option<bool>,
    /// Started at or after (RFC 3339 or YYYY-MM-DD).
    #[param(value_type = Option<String>)]
    started_after: Option<Instant>,
    /// Started before (RFC 3339 or YYYY-MM-DD).
    #[param(value_type = Option<String>)]
    started_before: Option<Instant>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// How many of the newest instances of a list are checked one by one for a caller who sees
/// only some, before their page is looked for the other way (`list_instances`).
const SCANNED_ROW_BY_ROW: i64 = 2_000;

/// The read models behind an instance read by `claims`: who does not see every instance sees
/// one through its tasks and approvals too, so a consistency token waits for those as well.
fn read_models(claims: &Claims) -> &'static [&'static str] {
    if access::sees_all_work(claims) {
        &[INSTANCES]
    } else {
        &[INSTANCES, TASKS, APPROVALS]
    }
}

/// Lists workflow instances, newest first. Operators, auditors and admins see every instance
/// of the tenant; everyone else those they started or take part in (a task of the instance
/// offered or assigned to them, an approval of it they hold, held or voted on).
#[utoipa::path(get, path = "/api/v1/workflow-instances", tag = "instances",
    params(ListParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the instances read model has passed this token (for a caller who is not an operator, auditor or admin, the tasks and approvals read models too: they decide which instances the caller sees)")),
    responses(
        (status = 200, description = "A page of instances, newest first", body = Page<Instance>),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
async fn list_instances(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<ListParams>,
) -> Result<Json<Page<Instance>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let limit = params::limit(params.limit)?;
    let after: Option<(Instant, Uuid)> = page::decode(params.cursor.as_deref())?;
    state.consistent(token, read_models(&claims)).await?;
    // the instances of the list, newest first: the tenant's, filtered, after the cursor
    let list = |sql: &mut QueryBuilder<'_, Postgres>| {
        sql.push(" where tenant_id = ")
            .push_bind(claims.tid.clone());
        if let Some(status) = params.status {
            // a literal, so the planner can pick the index for it
            sql.push(format!(" and status = '{}'", status.as_str()));
        }
        if let Some(key) = &params.definition_key {
            sql.push(" and definition_key = ").push_bind(key.clone());
        }
        if let Some(key) = &params.business_key {
            sql.push(" and business_key = ").push_bind(key.clone());
        }
        match params.incident {
            // as the partial index `workflow_instances_with_incidents` says it
            Some(true) => sql.push(" and has_incident"),
            Some(false) => sql.push(" and not has_incident"),
            None => sql,
        };
        if let Some(Instant(at)) = params.started_after {
            sql.push(" and started_at >= ").push_bind(at);
        }
        if let Some(Instant(at)) = params.started_before {
            sql.push(" and started_at < ").push_bind(at);
        }
        if let Some((Instant(at), id)) = after {
            sql.push(" and (started_at, id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
    };
    let newest_first = |sql: &mut QueryBuilder<'_, Postgres>, rows: i64| {
        sql.push(" order by started_at desc, id desc limit ")
            .push_bind(rows);
    };
    let fetch = async |mut sql: QueryBuilder<'_, Postgres>| -> Result<Vec<Instance>, ApiError> {
        let rows: Vec<SqlJson<Instance>> = sql.build_query_scalar().fetch_all(&state.pool).await?;
        Ok(rows.into_iter().map(|SqlJson(row)| row).collect())
    };
    let rows = if access::sees_all_work(&claims) {
        let mut sql = QueryBuilder::<Postgres>::new("select to_jsonb(t) from workflow_instances t");
        list(&mut sql);
        newest_first(&mut sql, limit + 1);
        fetch(sql).await?
    } else {
        // Who sees only some instances: first the newest of the list, row by row, which
        // finds a page at once for whoever takes part in much of the tenant's work ...
        let mut sql = QueryBuilder::<Postgres>::new(
            "select to_jsonb(t) from (select * from workflow_instances",
        );
        list(&mut sql);
        newest_first(&mut sql, SCANNED_ROW_BY_ROW);
        sql.push(") t");
        access::push_instance_visible_rows(&mut sql, &claims);
        sql.push(" order by t.started_at desc, t.id desc limit ")
            .push_bind(limit + 1);
        let rows = fetch(sql).await?;
        let mut past: QueryBuilder<'_, Postgres> = QueryBuilder::new("select count(*) > ");
        past.push_bind(SCANNED_ROW_BY_ROW)
            .push(" from (select from workflow_instances");
        list(&mut past);
        newest_first(&mut past, SCANNED_ROW_BY_ROW + 1);
        past.push(") more");
        if rows.len() as i64 > limit
            || !past
                .build_query_scalar::<bool>()
                .fetch_one(&state.pool)
                .await?
        {
            rows
        } else {
            // ... then, when a page was not found there and the list goes on, the instances
            // the caller takes part in, collected through the indexes: for whoever takes
            // part in little of it
            let mut sql =
                QueryBuilder::<Postgres>::new("select to_jsonb(t) from workflow_instances t");
            list(&mut sql);
            access::push_instances_taken_part_in(&mut sql, &claims);
            newest_first(&mut sql, limit + 1);
            fetch(sql).await?
        }
    };
    Ok(Json(page::page(rows, limit, |i: &Instance| {
        (i.started_at, i.id)
    })))
}

/// A workflow instance: state, variables, open steps and timeline. `ETag` is its version. An
/// instance the caller may not see (see the list) is a 404, as one of another tenant.
#[utoipa::path(get, path = "/api/v1/workflow-instances/{id}", tag = "instances",
    params(("id" = Uuid, Path, description = "The instance id"),
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the instances read model has passed this token (for a caller who is not an operator, auditor or admin, the tasks and approvals read models too: they decide which instances the caller sees)")),
    responses(
        (status = 200, description = "The instance", body = InstanceDetail,
         headers(("ETag" = String, description = "The instance's version, quoted"))),
        (status = 304, description = "The version is the one in If-None-Match"),
        (status = 404, description = "No such instance in your tenant, or none you may see", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, instance_id = %id))]
async fn get_instance(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let id = params::parse_id(&id)?;
    state.consistent(token, read_models(&claims)).await?;
    let mut sql = QueryBuilder::<Postgres>::new(
        "select to_jsonb(t) from workflow_instances t where tenant_id = ",
    );
    sql.push_bind(&claims.tid).push(" and id = ").push_bind(id);
    access::push_instance_visible(&mut sql, &claims);
    let row: Option<SqlJson<Instance>> =
        sql.build_query_scalar().fetch_optional(&state.pool).await?;
    // one the caller may not see is answered as one that does not exist
    let Some(SqlJson(instance)) = row else {
        return Err(ApiError::not_found(format!("no workflow instance {id}")));
    };
    let timeline: Vec<SqlJson<TimelineEntry>> = sqlx::query_scalar(
        "select to_jsonb(t) from workflow_instance_timeline t \
         where tenant_id = $1 and instance_id = $2 order by sequence",
    )
    .bind(&claims.tid)
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    let version = instance.version;
    let body = InstanceDetail {
        instance,
        timeline: timeline.into_iter().map(|SqlJson(t)| t).collect(),
    };
    Ok(tagged(&headers, version, body))
}
