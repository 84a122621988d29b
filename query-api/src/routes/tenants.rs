//! `GET /api/v1/tenants`: every tenant with how many users it has, for the admins of the
//! default tenant (who create tenants: `POST /api/v1/tenants`). Also what `workledger admin
//! tenants` prints.

use api_common::{ApiError, CurrentUser, Json};
use axum::extract::State;
use chrono::{DateTime, Utc};
use domain::identity::DEFAULT_TENANT;
use event_schemas::Role;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ReadProblems;
use super::users::IDENTITY;
use crate::consistency::ConsistencyToken;
use crate::state::QueryState;

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new().routes(routes!(list_tenants))
}

/// A tenant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Tenant {
    #[schema(example = "acme")]
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Its users, deactivated ones included.
    pub users: i64,
    /// Whether every sign-in needs a second factor
    /// (`PUT /api/v1/tenants/{id}/two-factor-policy`).
    pub two_factor_required: bool,
}

/// Every tenant, by id. The default tenant, which has no `TenantCreated` of its own, is one
/// from its first user on.
pub async fn all_tenants(pool: &PgPool) -> Result<Vec<Tenant>, sqlx::Error> {
    sqlx::query_as(
        "with tenants as ( \
             select tenant_id, name, created_at, two_factor_required from identity_tenants \
             union all \
             select $1, $1, min(created_at), false from identity_users where tenant_id = $1 \
             having count(*) > 0 \
                and not exists (select from identity_tenants where tenant_id = $1)) \
         select t.tenant_id as id, t.name, t.created_at, t.two_factor_required, \
                (select count(*) from identity_users u where u.tenant_id = t.tenant_id) as users \
         from tenants t order by t.tenant_id",
    )
    .bind(DEFAULT_TENANT)
    .fetch_all(pool)
    .await
}

/// Every tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tenants {
    /// By id.
    pub items: Vec<Tenant>,
}

/// List tenants
///
/// Every tenant with its number of users, for the admins of the default tenant.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", operation_id = "list_tenants",
    params(("X-Consistency-Token" = Option<String>, Header, description = "Wait until the identity read model has passed this token")),
    responses(
        (status = 200, description = "Every tenant, by id", body = Tenants),
        (status = 403, description = "The caller is not an admin of the default tenant", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
async fn list_tenants(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
) -> Result<Json<Tenants>, ApiError> {
    if claims.tid != DEFAULT_TENANT || !claims.has_role(Role::Admin) {
        return Err(ApiError::forbidden(
            "the tenants are for the admins of the default tenant",
        ));
    }
    state.consistent(token, &[IDENTITY]).await?;
    Ok(Json(Tenants {
        items: all_tenants(&state.pool).await?,
    }))
}
