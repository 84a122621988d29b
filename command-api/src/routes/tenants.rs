//! `/api/v1/tenants`: creating tenants, each with its first admin, and their sign-in policy.

use api_common::Json;
use axum::extract::{Path, State};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Applied, Problems, observe};
use crate::error::Result;
use crate::extract::{Auth, CommandHeaders, IfMatch};
use crate::identity::NewUser;
use crate::response::{self, Accepted};
use crate::state::CommandState;

/// This module's routes.
pub fn router() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(set_two_factor_policy))
}

/// A new tenant and its first admin.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 2 to 63 characters of `a-z`, `0-9` and `-`.
    #[schema(example = "acme")]
    pub id: String,
    #[schema(example = "Acme Corp")]
    pub name: String,
    /// The first admin's email address (they sign in with it and `tenant: <id>`).
    pub admin_email: String,
    /// 12 to 256 characters.
    #[schema(value_type = String, format = Password)]
    pub admin_password: SecretString,
    /// The first admin's name; "Administrator" when left out.
    pub admin_display_name: Option<String>,
}

/// The created tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreatedBody {
    /// The tenant id.
    pub id: String,
    /// The tenant's version (1).
    pub version: u64,
    /// Covers the tenant and its admin.
    pub consistency_token: Option<String>,
    /// The first admin's user id.
    pub admin_user_id: String,
}

/// Create a tenant
///
/// Creates a tenant with its first admin (admins of the `default` tenant). Nothing of one
/// tenant is visible from another. Retrying after a failure between the two steps completes
/// the tenant.
#[utoipa::path(post, path = "/api/v1/tenants", operation_id = "create_tenant", tag = "tenants",
    request_body = CreateTenant, params(CommandHeaders),
    responses(
        (status = 201, description = "The tenant and its admin exist", body = TenantCreatedBody,
         headers(("ETag" = String), ("X-Consistency-Token" = String))),
        Problems),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(tenant_id = %body.id))]
async fn create(
    State(state): State<CommandState>,
    auth: Auth,
    Json(body): Json<CreateTenant>,
) -> Result<Accepted<TenantCreatedBody>> {
    let result = async {
        let admin = NewUser {
            email: body.admin_email,
            display_name: body
                .admin_display_name
                .unwrap_or_else(|| "Administrator".to_owned()),
            password: body.admin_password,
            roles: vec![domain::Role::Admin],
            groups: Vec::new(),
        };
        let created = state
            .identity()
            .create_tenant(&auth.context(), body.id, body.name, admin)
            .await?;
        let token = response::token(
            state.pool(),
            event_schemas::identity::USER_AGGREGATE_TYPE,
            &created.admin.id,
            created.admin.version,
            created.admin.position,
        )
        .await?
        .max(created.tenant.position);
        let body = TenantCreatedBody {
            id: created.tenant.id,
            version: created.tenant.version as u64,
            consistency_token: token.map(|t| t.to_string()),
            admin_user_id: created.admin.id,
        };
        let version = body.version as usize;
        Ok(Accepted::new(body, version, token, true))
    }
    .await;
    observe("create_tenant", &result);
    result
}

/// Whether the tenant's users must sign in with a second factor.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TwoFactorPolicy {
    pub required: bool,
}

/// Require two-factor sign-in
///
/// With `required`, every sign-in of the tenant's users needs a one-time code: a user without
/// an authenticator enrols with their password first (`POST /api/v1/auth/two-factor`), a
/// refresh of a session without one is refused, and users cannot turn their own off (an admin
/// still can, for someone who lost theirs: they enrol again at their next sign-in). The
/// tenant's admins; another tenant's id is a 404.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/two-factor-policy",
    operation_id = "set_tenant_two_factor_policy", tag = "tenants",
    request_body = TwoFactorPolicy,
    params(("id" = String, Path, description = "The tenant"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(tenant_id = %id))]
async fn set_two_factor_policy(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<TwoFactorPolicy>,
) -> Result<Accepted> {
    let result = async {
        let outcome = state
            .identity()
            .set_two_factor_policy(&auth.context(), &id, body.required, expected)
            .await?;
        Ok(Accepted::of(
            state.pool(),
            event_schemas::identity::TENANT_AGGREGATE_TYPE,
            outcome,
            false,
        )
        .await?)
    }
    .await;
    observe("set_tenant_two_factor_policy", &result);
    result
}
