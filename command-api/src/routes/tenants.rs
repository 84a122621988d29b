//! `/api/v1/tenants`: creating tenants, each with its first admin.

use api_common::Json;
use axum::extract::State;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, observe};
use crate::error::Result;
use crate::extract::{Auth, CommandHeaders};
use crate::identity::NewUser;
use crate::response::{self, Accepted};
use crate::state::CommandState;

/// This module's routes.
pub fn router() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new().routes(routes!(create))
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
