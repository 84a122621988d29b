//! `GET /api/v1/approvals[/{id}[/comments]]`.

use api_common::{ApiError, Claims, CurrentUser, Json};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use projections::names::APPROVALS;
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
        .routes(routes!(list_approvals))
        .routes(routes!(get_approval))
        .routes(routes!(list_approval_comments))
}

/// Lifecycle of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Cancelled,
}

impl ApprovalStatus {
    fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }
}

/// One approver's vote.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Vote {
    pub approver: Uuid,
    /// Who holds the vote now (another user after a delegation).
    pub holder: Uuid,
    /// `approve`, `reject`, or `null` while not cast.
    pub decision: Option<String>,
}

/// A decision, in the order decisions were cast.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub approver: Uuid,
    pub decided_by: Uuid,
    /// `approve` or `reject`.
    pub decision: String,
    pub decided_at: DateTime<Utc>,
}

/// An approval.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub id: Uuid,
    /// `null` for ad-hoc approvals.
    pub workflow_instance_id: Option<Uuid>,
    pub step_id: Option<String>,
    pub name: String,
    pub status: ApprovalStatus,
    /// `"any"`, `"all"`, `"sequential"` or `{"quorum": n}`.
    #[schema(value_type = Object)]
    pub policy: Value,
    /// The approvers (user ids, groups resolved when the approval opened), in policy order.
    pub approvers: Vec<Uuid>,
    pub decisions: Vec<Decision>,
    pub due_at: Option<DateTime<Utc>>,
    pub overdue: bool,
    /// The aggregate's version (also the `ETag`).
    pub version: i64,
    /// Who may decide now (for `sequential`, only the approver whose turn it is).
    pub awaiting: Vec<Uuid>,
    /// Each approver's vote and its holder.
    pub votes: Vec<Vote>,
    /// `approved` or `rejected`, once closed.
    pub outcome: Option<String>,
    /// `decided`, `no_approvers` or `not_enough_approvers`, once closed.
    pub close_reason: Option<String>,
    pub approvals_count: i64,
    pub rejections_count: i64,
    pub description: Option<String>,
    pub definition_key: Option<String>,
    pub activation: Option<i64>,
    pub opened_at: DateTime<Utc>,
    pub opened_by: String,
    pub overdue_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// `me` or a user id: the approvals that user may decide on now.
    #[param(value_type = Option<String>, example = "me")]
    approver: Option<UserFilter>,
    status: Option<ApprovalStatus>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Restricts `sql` to the approvals `claims` may see.
fn visible(sql: &mut QueryBuilder<'_, Postgres>, claims: &Claims) {
    if !access::sees_all_work(claims) {
        access::push_approval_participant(sql, claims, "");
    }
}

/// Lists approvals, newest first. `approver=me` lists those the caller may decide on now.
/// Operators, auditors and admins see every approval of the tenant; everyone else those on
/// which they hold, held or cast a vote.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals",
    params(ListParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the approvals read model has passed this token")),
    responses(
        (status = 200, description = "A page of approvals, newest first", body = Page<Approval>),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
async fn list_approvals(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<ListParams>,
) -> Result<Json<Page<Approval>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let limit = params::limit(params.limit)?;
    let after: Option<(Instant, Uuid)> = page::decode(params.cursor.as_deref())?;
    state.consistent(token, &[APPROVALS]).await?;
    let mut sql =
        QueryBuilder::<Postgres>::new("select to_jsonb(t) from approvals t where tenant_id = ");
    sql.push_bind(&claims.tid);
    if let Some(approver) = params.approver {
        sql.push(" and awaiting @> array[")
            .push_bind(approver.resolve(claims.sub))
            .push("]::uuid[]");
    }
    if let Some(status) = params.status {
        sql.push(format!(" and status = '{}'", status.as_str()));
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
    let rows: Vec<SqlJson<Approval>> = sql.build_query_scalar().fetch_all(&state.pool).await?;
    let rows = rows.into_iter().map(|SqlJson(row)| row).collect();
    Ok(Json(page::page(rows, limit, |a: &Approval| {
        (a.opened_at, a.id)
    })))
}

/// An approval with its policy's progress. `ETag` is its version.
#[utoipa::path(get, path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = Uuid, Path, description = "The approval id"),
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the approvals read model has passed this token")),
    responses(
        (status = 200, description = "The approval", body = Approval,
         headers(("ETag" = String, description = "The approval's version, quoted"))),
        (status = 304, description = "The version is the one in If-None-Match"),
        (status = 404, description = "No such approval in your tenant, or not one you may see", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, approval_id = %id))]
async fn get_approval(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let id = params::parse_id(&id)?;
    state.consistent(token, &[APPROVALS]).await?;
    let mut sql =
        QueryBuilder::<Postgres>::new("select to_jsonb(t) from approvals t where tenant_id = ");
    sql.push_bind(&claims.tid).push(" and id = ").push_bind(id);
    visible(&mut sql, &claims);
    let row: Option<SqlJson<Approval>> =
        sql.build_query_scalar().fetch_optional(&state.pool).await?;
    let Some(SqlJson(approval)) = row else {
        return Err(ApiError::not_found(format!("no approval {id}")));
    };
    Ok(tagged(&headers, approval.version, approval))
}

/// The comments of an approval (those given with decisions among them), oldest first, to
/// whoever may see the approval. An erased author's comments are listed with `text: null,
/// erased: true`.
#[utoipa::path(get, path = "/api/v1/approvals/{id}/comments", tag = "approvals",
    params(("id" = Uuid, Path, description = "The approval id"), CommentParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the approvals read model has passed this token")),
    responses(
        (status = 200, description = "A page of the approval's comments, oldest first", body = Page<CommentEntry>),
        (status = 404, description = "No such approval in your tenant, or not one you may see", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID, or a parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, approval_id = %id))]
async fn list_approval_comments(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path(id): Path<String>,
    Params(params): Params<CommentParams>,
) -> Result<Json<Page<CommentEntry>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let id = params::parse_id(&id)?;
    state.consistent(token, &[APPROVALS]).await?;
    let page = comments::page(&state, Commented::Approval, &claims, id, params, visible).await?;
    Ok(Json(page))
}
