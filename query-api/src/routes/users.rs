//! `GET /api/v1/users[/{id}]`: the tenant's users, for its admins; and `GET
//! /api/v1/users/me`, for everyone: who the caller is, with their current roles and groups.
//!
//! Read from the identity read model (`identity_users`, kept by the command API's identity
//! projector, checkpoint [`IDENTITY`]). Password hashes and sessions are never read here.

use api_common::{ApiError, CurrentUser, Json};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use event_schemas::Role;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::access;
use crate::consistency::ConsistencyToken;
use crate::page::{self, Page};
use crate::params::{self, Params, UserFilter};
use crate::routes::ReadProblems;
use crate::routes::tagged;
use crate::state::QueryState;

/// The identity projector's checkpoint (`command_api::identity::projector::PROJECTOR`).
pub const IDENTITY: &str = "identity";

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(get_user))
}

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Deactivated,
}

impl UserStatus {
    fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Deactivated => "deactivated",
        }
    }
}

/// A user of the tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub tenant_id: String,
    /// Empty once the user was erased.
    pub email: String,
    /// Empty once the user was erased.
    pub display_name: String,
    /// `admin`, `designer`, `operator`, `member`, `auditor`.
    pub roles: Vec<String>,
    /// The groups tasks and approvals are offered to.
    pub groups: Vec<String>,
    pub status: UserStatus,
    /// The user aggregate's version (also the `ETag`): send it as `If-Match` to change the
    /// user's roles or groups.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub updated_at: DateTime<Utc>,
    /// When the password was last changed (`null` if never since the user was created).
    pub password_changed_at: Option<DateTime<Utc>>,
    /// Whether signing in takes a one-time code besides the password.
    pub two_factor: bool,
    /// When two-factor sign-in was turned on (`null` while it is off).
    pub two_factor_enabled_at: Option<DateTime<Utc>>,
    /// With two-factor sign-in: how many of the user's recovery codes are unused (replace them
    /// before they run out); `null` while it is off.
    pub recovery_codes_left: Option<i64>,
    /// Which notifications go by email: `all`, `direct` (only work for the user personally)
    /// or `none`.
    pub email_notifications: String,
    /// When the user was erased (`POST /api/v1/users/{id}/erase`): their email address, name
    /// and the comments they wrote no longer open anywhere. `null` for everyone else.
    #[serde(default)]
    pub erased_at: Option<DateTime<Utc>>,
}

/// The columns of [`User`], as one JSON object per row.
const USER: &str = "select jsonb_build_object('id', user_id, 'tenant_id', tenant_id, \
     'email', email, 'display_name', display_name, 'roles', roles, 'groups', groups, \
     'status', status, 'version', version, 'created_at', created_at, \
     'updated_at', updated_at, 'password_changed_at', password_changed_at, \
     'two_factor', two_factor_enabled_at is not null, \
     'two_factor_enabled_at', two_factor_enabled_at, \
     'email_notifications', email_notifications, 'erased_at', erased_at, \
     'recovery_codes_left', case when two_factor_enabled_at is not null then \
        (select count(*) from identity_recovery_codes r \
         where r.user_id = identity_users.user_id and r.used_at is null) end) \
     from identity_users where tenant_id = ";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// The user with this email address (ignoring case and surrounding spaces).
    email: Option<String>,
    /// Users in this group.
    group: Option<String>,
    /// Users with this role.
    #[param(value_type = Option<String>, example = "operator")]
    role: Option<Role>,
    status: Option<UserStatus>,
    /// Users with (`true`) or without (`false`) two-factor sign-in: e.g. the admins who still
    /// sign in with a password alone.
    two_factor: Option<bool>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists the tenant's users by email address. Admins only.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", operation_id = "list_users",
    params(ListParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the identity read model has passed this token")),
    responses(
        (status = 200, description = "A page of users, by email address", body = Page<User>),
        (status = 403, description = "The caller is not an admin", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
async fn list_users(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<ListParams>,
) -> Result<Json<Page<User>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    access::require_admin(&claims)?;
    let limit = params::limit(params.limit)?;
    let after: Option<(String, Uuid)> = page::decode(params.cursor.as_deref())?;
    state.consistent(token, &[IDENTITY]).await?;
    let mut sql = QueryBuilder::<Postgres>::new(USER);
    sql.push_bind(&claims.tid);
    if let Some(email) = &params.email {
        sql.push(" and email_key = ")
            .push_bind(domain::identity::email_key(email));
    }
    if let Some(group) = &params.group {
        sql.push(" and groups @> array[")
            .push_bind(group)
            .push("]::text[]");
    }
    if let Some(role) = params.role {
        sql.push(" and roles @> array[")
            .push_bind(role.as_str())
            .push("]::text[]");
    }
    if let Some(status) = params.status {
        sql.push(" and status = ").push_bind(status.as_str());
    }
    if let Some(two_factor) = params.two_factor {
        sql.push(" and (two_factor_enabled_at is not null) = ")
            .push_bind(two_factor);
    }
    if let Some((email_key, id)) = &after {
        sql.push(" and (email_key, user_id) > (")
            .push_bind(email_key)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" order by email_key, user_id limit ")
        .push_bind(limit + 1);
    let rows: Vec<SqlJson<User>> = sql.build_query_scalar().fetch_all(&state.pool).await?;
    let rows = rows.into_iter().map(|SqlJson(row)| row).collect();
    Ok(Json(page::page(rows, limit, |u: &User| {
        (domain::identity::email_key(&u.email), u.id)
    })))
}

/// A user: `me` (the caller, for anyone), or any user of the tenant (admins). `ETag` is the
/// user's version.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", operation_id = "get_user",
    params(("id" = String, Path, description = "`me` or a user id"),
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the identity read model has passed this token")),
    responses(
        (status = 200, description = "The user", body = User,
         headers(("ETag" = String, description = "The user's version, quoted"))),
        (status = 304, description = "The version is the one in If-None-Match"),
        (status = 404, description = "No such user in your tenant, or one you may not see (only admins see others)", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The id is neither `me` nor a UUID", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, user_id = %id))]
async fn get_user(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let id = match id.as_str() {
        "me" => UserFilter::Me,
        _ => UserFilter::User(params::parse_id(&id)?),
    }
    .resolve(claims.sub);
    // another user is no business of a non-admin: answered as one that does not exist
    let not_found = || ApiError::not_found(format!("no user {id}"));
    if id != claims.sub && !claims.has_role(Role::Admin) {
        return Err(not_found());
    }
    state.consistent(token, &[IDENTITY]).await?;
    let mut sql = QueryBuilder::<Postgres>::new(USER);
    sql.push_bind(&claims.tid)
        .push(" and user_id = ")
        .push_bind(id);
    let row: Option<SqlJson<User>> = sql.build_query_scalar().fetch_optional(&state.pool).await?;
    let Some(SqlJson(user)) = row else {
        return Err(not_found());
    };
    Ok(tagged(&headers, user.version, user))
}
