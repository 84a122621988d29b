//! `GET /api/v1/tasks[/{id}[/comments]]`: the inbox, and a task's comments.

use api_common::{ApiError, Claims, CurrentUser, Json};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use projections::names::TASKS;
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
use crate::params::{self, Instant, Params, UserFilter};
use crate::routes::ReadProblems;
use crate::routes::comments::{self, CommentEntry, CommentParams, Commented};
use crate::routes::tagged;
use crate::state::QueryState;

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks))
        .routes(routes!(get_task))
        .routes(routes!(list_task_comments))
}

/// Lifecycle of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Open,
    Completed,
    Cancelled,
}

impl TaskStatus {
    fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::Completed => "completed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// A task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: Uuid,
    /// `null` for ad-hoc tasks.
    pub workflow_instance_id: Option<Uuid>,
    pub step_id: Option<String>,
    pub name: String,
    pub status: TaskStatus,
    pub assignee: Option<Uuid>,
    pub candidate_users: Vec<Uuid>,
    pub candidate_groups: Vec<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub overdue: bool,
    /// What it was completed with.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The aggregate's version (also the `ETag`).
    pub version: i64,
    pub description: Option<String>,
    pub definition_key: Option<String>,
    pub definition_version: Option<i64>,
    pub activation: Option<i64>,
    /// The form fields its output is checked against.
    #[schema(value_type = Vec<Object>)]
    pub form: Value,
    pub opened_at: DateTime<Utc>,
    pub opened_by: String,
    /// When it was marked overdue.
    pub overdue_at: Option<DateTime<Utc>>,
    /// When it was completed or cancelled.
    pub closed_at: Option<DateTime<Utc>>,
    pub completed_by: Option<String>,
    pub cancel_reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// `me` or a user id: tasks assigned to that user.
    #[param(value_type = Option<String>, example = "me")]
    assignee: Option<UserFilter>,
    /// Tasks offered to this group.
    candidate_group: Option<String>,
    status: Option<TaskStatus>,
    overdue: Option<bool>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Restricts `sql` to the tasks `claims` may see.
fn visible(sql: &mut QueryBuilder<'_, Postgres>, claims: &Claims) {
    if !access::sees_all_work(claims) {
        access::push_task_offered(sql, claims, "");
    }
}

/// Lists tasks, newest first. Operators, auditors and admins see every task of the tenant;
/// everyone else the tasks assigned or offered to them (directly or through a group).
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks",
    params(ListParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the task read model has passed this token")),
    responses(
        (status = 200, description = "A page of tasks, newest first", body = Page<Task>),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
async fn list_tasks(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<ListParams>,
) -> Result<Json<Page<Task>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let limit = params::limit(params.limit)?;
    let after: Option<(Instant, Uuid)> = page::decode(params.cursor.as_deref())?;
    state.consistent(token, &[TASKS]).await?;
    let mut sql =
        QueryBuilder::<Postgres>::new("select to_jsonb(t) from tasks t where tenant_id = ");
    sql.push_bind(&claims.tid);
    if let Some(assignee) = params.assignee {
        sql.push(" and assignee = ")
            .push_bind(assignee.resolve(claims.sub));
    }
    if let Some(group) = &params.candidate_group {
        if params.status == Some(TaskStatus::Open) {
            // The open inbox: walk `tasks_open` newest first and stop after a page. The same
            // test as `@>`, but one the GIN index cannot answer: given the chance, the planner
            // collects every task ever offered to the group from it and sorts them, 30x slower
            // over a million tasks (docs/benchmarks.md, "Inbox queries").
            sql.push(" and ")
                .push_bind(group)
                .push(" = any(candidate_groups)");
        } else {
            // over closed tasks too, a rare group is found fastest through the GIN index
            sql.push(" and candidate_groups @> array[")
                .push_bind(group)
                .push("]::text[]");
        }
    }
    if let Some(status) = params.status {
        // a literal, so the planner can use the partial index of open tasks
        sql.push(format!(" and status = '{}'", status.as_str()));
    }
    if let Some(overdue) = params.overdue {
        sql.push(" and overdue = ").push_bind(overdue);
    }
    visible(&mut sql, &claims);
    if let Some((Instant(at), id)) = after {
        sql.push(" and (opened_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" order by opened_at desc, id desc limit ")
        .push_bind(limit + 1);
    let rows: Vec<SqlJson<Task>> = sql.build_query_scalar().fetch_all(&state.pool).await?;
    let rows = rows.into_iter().map(|SqlJson(row)| row).collect();
    Ok(Json(page::page(rows, limit, |t: &Task| {
        (t.opened_at, t.id)
    })))
}

/// A task. `ETag` is its version.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task id"),
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the task read model has passed this token")),
    responses(
        (status = 200, description = "The task", body = Task,
         headers(("ETag" = String, description = "The task's version, quoted"))),
        (status = 304, description = "The version is the one in If-None-Match"),
        (status = 404, description = "No such task in your tenant, or not one you may see", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, task_id = %id))]
async fn get_task(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let id = params::parse_id(&id)?;
    state.consistent(token, &[TASKS]).await?;
    let mut sql =
        QueryBuilder::<Postgres>::new("select to_jsonb(t) from tasks t where tenant_id = ");
    sql.push_bind(&claims.tid).push(" and id = ").push_bind(id);
    visible(&mut sql, &claims);
    let row: Option<SqlJson<Task>> = sql.build_query_scalar().fetch_optional(&state.pool).await?;
    let Some(SqlJson(task)) = row else {
        return Err(ApiError::not_found(format!("no task {id}")));
    };
    Ok(tagged(&headers, task.version, task))
}

/// The comments of a task, oldest first, to whoever may see the task. An erased author's
/// comments are listed with `text: null, erased: true`.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/comments", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task id"), CommentParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the task read model has passed this token")),
    responses(
        (status = 200, description = "A page of the task's comments, oldest first", body = Page<CommentEntry>),
        (status = 404, description = "No such task in your tenant, or not one you may see", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID, or a parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, task_id = %id))]
async fn list_task_comments(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path(id): Path<String>,
    Params(params): Params<CommentParams>,
) -> Result<Json<Page<CommentEntry>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let id = params::parse_id(&id)?;
    state.consistent(token, &[TASKS]).await?;
    let page = comments::page(&state, Commented::Task, &claims, id, params, visible).await?;
    Ok(Json(page))
}
