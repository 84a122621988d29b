//! The command API's routes, one module per resource, each with its own `router()`.

pub mod approvals;
pub mod auth;
pub mod definitions;
pub mod documents;
pub mod instances;
pub mod tasks;
pub mod tenants;
pub mod two_factor;
pub mod users;

use api_common::{ApiError, FieldError};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use domain::Caller;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::CommandError;
use crate::identity::store::{self, NotAWorker};
use crate::response::CommandAccepted;
use crate::state::CommandState;

/// The roles of DESIGN §4 (documentation of role lists).
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = Role)]
#[allow(dead_code)]
pub(crate) enum RoleSchema {
    #[schema(rename = "admin")]
    Admin,
    #[schema(rename = "designer")]
    Designer,
    #[schema(rename = "operator")]
    Operator,
    #[schema(rename = "member")]
    Member,
    #[schema(rename = "auditor")]
    Auditor,
}

/// Successful answers of commands that change an existing resource.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Applied {
    /// The command took effect (or changed nothing because the resource already was so).
    #[response(status = 200, headers(
        ("ETag" = String, description = "The resource's version afterwards, e.g. `\"4\"`"),
        ("X-Consistency-Token" = String, description = "Send to a query to read this write")
    ))]
    Ok(CommandAccepted),
}

/// Successful answers of commands that create a resource.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Created {
    /// The resource was created.
    #[response(status = 201, headers(
        ("ETag" = String, description = "The resource's version, e.g. `\"1\"`"),
        ("X-Consistency-Token" = String, description = "Send to a query to read this write"),
        ("Location" = String, description = "Where the query API shows the resource (tasks, instances, definitions)")
    ))]
    Created(CommandAccepted),
}

/// The problems any command may answer.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Problems {
    /// A malformed header (`If-Match`, `Idempotency-Key`) or body.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(ApiError),
    /// No valid access token (code `unauthorized`), an ended session's (`session_ended`: sign
    /// in again) or one older than its user's roles or groups (`access_changed`: refresh it).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(ApiError),
    /// The caller's roles or relation to the resource do not allow this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(ApiError),
    /// No such resource in the caller's tenant (another tenant's resource, too).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(ApiError),
    /// The resource's state does not allow this now, or a concurrent change won, or the
    /// `Idempotency-Key` is in use by a running request.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(ApiError),
    /// `If-Match` named another version than the current one (the current `ETag` is sent).
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(ApiError),
    /// Invalid fields (`errors` names each), or an `Idempotency-Key` reused for another request.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(ApiError),
    /// A dependency is unavailable; retry.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(ApiError),
}

/// A JSON body that may be left out entirely (an empty body is `None`).
#[derive(Debug)]
pub(crate) struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| ApiError::new(e.status(), "unreadable_body", e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        let request = Request::from_parts(parts, Body::from(bytes));
        let api_common::Json(value) = api_common::Json::<T>::from_request(request, state).await?;
        Ok(OptionalJson(Some(value)))
    }
}

/// Refuses user ids that are not active users of the caller's tenant, or that may not work
/// tasks and approvals (neither members nor admins): a task or a vote handed to them would
/// be stuck, as they could not act on it. 422 naming `field`.
pub(crate) async fn ensure_users(
    state: &CommandState,
    caller: &Caller,
    users: &[(String, Uuid)],
) -> Result<(), CommandError> {
    let ids: Vec<Uuid> = users.iter().map(|(_, id)| *id).collect();
    let refused = store::users_who_cannot_work(state.pool(), &caller.tenant_id, &ids).await?;
    if refused.is_empty() {
        return Ok(());
    }
    Err(ApiError::validation(
        users
            .iter()
            .filter_map(|(field, id)| {
                let (_, why) = refused.iter().find(|(user, _)| user == id)?;
                Some(match why {
                    NotAWorker::Unknown => FieldError::new(
                        field.clone(),
                        "unknown_user",
                        format!("{id} is not an active user of this tenant"),
                    ),
                    NotAWorker::CannotWork => FieldError::new(
                        field.clone(),
                        "not_a_member",
                        format!("{id} is neither a member nor an admin, so could not work on it"),
                    ),
                })
            })
            .collect(),
    )
    .into())
}

/// Counts a command by name and outcome (`accepted`, `rejected`, `failed`).
pub(crate) fn observe<T>(command: &'static str, result: &Result<T, CommandError>) {
    let outcome = match result {
        Ok(_) => "accepted",
        Err(error) if error.problem().status.is_client_error() => "rejected",
        Err(_) => "failed",
    };
    metrics::counter!("workledger_commands_total", "command" => command, "outcome" => outcome)
        .increment(1);
}
