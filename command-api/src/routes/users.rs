//! `/api/v1/users`: creating users and managing their roles, groups, passwords and access.
//! Every change is an event: who granted which role to whom, and when, is in the audit trail.

use api_common::{ApiError, Json};
use axum::extract::{Path, State};
use domain::Role;
use domain::identity::UserCommand;
use event_schemas::identity::EmailNotifications;
use secrecy::SecretString;
use serde::Deserialize;
use tracing::instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Applied, Created, OptionalJson, Problems, RoleSchema, observe};
use crate::error::Result;
use crate::extract::{Auth, CommandHeaders, IfMatch, path_id};
use crate::identity::NewUser;
use crate::response::Accepted;
use crate::state::CommandState;

const AGGREGATE: &str = event_schemas::identity::USER_AGGREGATE_TYPE;

/// This module's routes.
pub fn router() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(replace_groups))
        .routes(routes!(replace_roles))
        .routes(routes!(change_password))
        .routes(routes!(deactivate))
        .routes(routes!(reactivate))
        .routes(routes!(set_notifications))
        .routes(routes!(end_sessions))
        .routes(routes!(erase))
}

/// A new user of the caller's tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique in the tenant, ignoring case.
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann Example")]
    pub display_name: String,
    /// 12 to 256 characters.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    #[serde(default)]
    #[schema(value_type = Vec<RoleSchema>)]
    pub roles: Vec<Role>,
    /// The groups tasks and approvals are offered to.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Create a user
///
/// Creates a user in the caller's tenant (admins).
#[utoipa::path(post, path = "/api/v1/users", operation_id = "create_user", tag = "users",
    request_body = CreateUser, params(CommandHeaders),
    responses(Created, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id))]
async fn create(
    State(state): State<CommandState>,
    auth: Auth,
    Json(body): Json<CreateUser>,
) -> Result<Accepted> {
    let result = async {
        let user = NewUser {
            email: body.email,
            display_name: body.display_name,
            password: body.password,
            roles: body.roles,
            groups: body.groups,
        };
        let outcome = state.identity().create_user(&auth.context(), user).await?;
        tracing::Span::current().record("user_id", outcome.id.as_str());
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, true).await?)
    }
    .await;
    observe("create_user", &result);
    result
}

/// The user's groups, replacing the current ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceGroups {
    #[schema(example = json!(["clerks", "legal"]))]
    pub groups: Vec<String>,
}

/// Replace a user's groups
///
/// Admins. Approvals already open keep the approvers they opened with; new ones see the
/// change. The user's access tokens issued before the change are refused from then on (401):
/// refreshing gives one with the new groups.
#[utoipa::path(put, path = "/api/v1/users/{id}/groups", operation_id = "replace_user_groups", tag = "users",
    request_body = ReplaceGroups,
    params(("id" = Uuid, Path, description = "The user"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn replace_groups(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<ReplaceGroups>,
) -> Result<Accepted> {
    let result = async {
        let id = path_id(&id, "user", "user_not_found")?;
        let outcome = state
            .identity()
            .change_groups(&auth.context(), id, body.groups, expected)
            .await?;
        access_changed(&state, id, &outcome);
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, false).await?)
    }
    .await;
    observe("replace_groups", &result);
    result
}

/// Refuses the user's access tokens issued before a change of their roles or groups, in this
/// process at once (the others learn of it from the database within moments).
fn access_changed(state: &CommandState, user: uuid::Uuid, outcome: &orchestrator::Outcome) {
    if outcome.appended > 0 {
        let version = i64::try_from(outcome.version).unwrap_or(i64::MAX);
        state.token_keys().access_changed(user, version);
    }
}

/// The user's roles, replacing the current ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRoles {
    #[schema(value_type = Vec<RoleSchema>, example = json!(["member", "operator"]))]
    pub roles: Vec<Role>,
}

/// Replace a user's roles
///
/// Admins; an admin cannot revoke their own admin role. The user's access tokens issued
/// before the change are refused from then on (401): refreshing gives one with the new roles.
#[utoipa::path(put, path = "/api/v1/users/{id}/roles", operation_id = "replace_user_roles", tag = "users",
    request_body = ReplaceRoles,
    params(("id" = Uuid, Path, description = "The user"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn replace_roles(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<ReplaceRoles>,
) -> Result<Accepted> {
    let result = async {
        let id = path_id(&id, "user", "user_not_found")?;
        let outcome = state
            .identity()
            .change_roles(&auth.context(), id, body.roles, expected)
            .await?;
        access_changed(&state, id, &outcome);
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, false).await?)
    }
    .await;
    observe("replace_roles", &result);
    result
}

/// A new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// 12 to 256 characters.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// Required when changing one's own password.
    #[schema(value_type = Option<String>, format = Password)]
    pub current_password: Option<SecretString>,
}

/// Change a password
///
/// One's own (with the current one), or another user's (admins: a reset). Ends every
/// session the user had: they sign in again with the new password. Wrong current passwords
/// count against the account like failed sign-ins; past the limit the answer is 429 with
/// `Retry-After`, even for the right one.
#[utoipa::path(put, path = "/api/v1/users/{id}/password", operation_id = "change_user_password", tag = "users",
    request_body = ChangePassword,
    params(("id" = Uuid, Path, description = "The user"), CommandHeaders),
    responses(Applied, Problems,
        (status = 429, description = "Too many wrong passwords for the account (current passwords and sign-ins); see `Retry-After`", body = ApiError, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn change_password(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<ChangePassword>,
) -> Result<Accepted> {
    let result = async {
        let id = path_id(&id, "user", "user_not_found")?;
        let outcome = state
            .identity()
            .change_password(
                &auth.context(),
                state.throttle(),
                id,
                body.password,
                body.current_password,
                expected,
            )
            .await?;
        refuse_ended_sessions(&state, id).await;
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, false).await?)
    }
    .await;
    observe("change_password", &result);
    result
}

/// The sessions a command just ended (the identity projector ends them as it applies the
/// command's event, before the answer) are refused here from now on, not only once the
/// database's announcement arrives.
async fn refuse_ended_sessions(state: &CommandState, user_id: uuid::Uuid) {
    if let Err(error) = state.sessions().refuse_recently_ended(user_id).await {
        tracing::warn!(error = %error, %user_id,
            "could not read the sessions just ended; this process refuses them once announced");
    }
}

/// Why (kept in the log and the audit trail).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Up to 1,000 characters; the body may be left out.
    pub reason: Option<String>,
}

/// Deactivate a user
///
/// Stops a user from signing in and ends their sessions (admins; not oneself): every instance
/// refuses the access tokens already issued to them within milliseconds.
#[utoipa::path(post, path = "/api/v1/users/{id}/deactivate", operation_id = "deactivate_user", tag = "users",
    request_body(content = Option<Reason>),
    params(("id" = Uuid, Path, description = "The user"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn deactivate(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Reason>,
) -> Result<Accepted> {
    let reason = body.unwrap_or_default().reason;
    let command = UserCommand::Deactivate { reason };
    send(&state, &auth, &id, command, expected, "deactivate_user").await
}

/// Reactivate a user
///
/// Lets a deactivated user sign in again (admins).
#[utoipa::path(post, path = "/api/v1/users/{id}/reactivate", operation_id = "reactivate_user", tag = "users",
    params(("id" = Uuid, Path, description = "The user"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn reactivate(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
) -> Result<Accepted> {
    send(
        &state,
        &auth,
        &id,
        UserCommand::Reactivate,
        expected,
        "reactivate_user",
    )
    .await
}

/// Which notifications to get by email.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// `all` (also work offered to one's groups: the default), `direct` (only work for oneself:
    /// assigned or handed on, approvals to decide) or `none`.
    #[schema(value_type = String, example = "direct")]
    pub email: EmailNotifications,
}

/// Choose email notifications
///
/// Which of the notifications of work to do the user gets by email (when the workers send
/// email: `WORKLEDGER_SMTP_URL`): one's own, or any user's of the tenant (admins).
#[utoipa::path(put, path = "/api/v1/users/{id}/notifications", operation_id = "set_user_notifications", tag = "users",
    request_body = Notifications,
    params(("id" = Uuid, Path, description = "The user"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn set_notifications(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<Notifications>,
) -> Result<Accepted> {
    let command = UserCommand::SetNotifications { email: body.email };
    send(
        &state,
        &auth,
        &id,
        command,
        expected,
        "set_user_notifications",
    )
    .await
}

/// End a user's sessions
///
/// Signs the user out everywhere (admins; or oneself), e.g. for a stolen laptop: every access
/// and refresh token they hold stops working on every instance; their password still signs
/// in (change it, or deactivate them, to stop that too). Recorded as `UserSessionsEnded`.
#[utoipa::path(post, path = "/api/v1/users/{id}/sessions/revoke", operation_id = "end_user_sessions", tag = "users",
    request_body(content = Option<Reason>),
    params(("id" = Uuid, Path, description = "The user"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn end_sessions(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Reason>,
) -> Result<Accepted> {
    let reason = body.unwrap_or_default().reason;
    let command = UserCommand::EndSessions { reason };
    send(&state, &auth, &id, command, expected, "end_user_sessions").await
}

/// Erase a user
///
/// Forgets a deactivated user for good (admins), for the right to erasure. Their personal data
/// is sealed in the log with a key of their own (DESIGN §2); erasing destroys the key, so their
/// email address, name, the reasons recorded about them and the comments they wrote no longer
/// open: read models, the log, the audit trail and its exports, Kafka topics (backups taken
/// before the erasure hold the key until they expire; what was stored before sealing existed
/// stays as stored). Their password hash, two-factor keys and email claim are deleted (the
/// address may be used again), their sessions stripped to the fact that they ended. The user id and who did what stay, so the audit chain verifies
/// as before. Recorded as `UserErased`; cannot be undone. An active user is refused with 409
/// `user_active`, an erased one with 409 `user_erased`.
#[utoipa::path(post, path = "/api/v1/users/{id}/erase", operation_id = "erase_user", tag = "users",
    params(("id" = Uuid, Path, description = "The user"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn erase(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
) -> Result<Accepted> {
    send(
        &state,
        &auth,
        &id,
        UserCommand::Erase,
        expected,
        "erase_user",
    )
    .await
}

/// Sends `command` to the user `id` (a path segment) and answers it, counted as `name`.
async fn send(
    state: &CommandState,
    auth: &Auth,
    id: &str,
    command: UserCommand,
    expected: Option<usize>,
    name: &'static str,
) -> Result<Accepted> {
    let ends_sessions = matches!(
        command,
        UserCommand::EndSessions { .. } | UserCommand::Deactivate { .. }
    );
    let result = async {
        let id = path_id(id, "user", "user_not_found")?;
        let outcome = state
            .identity()
            .user_command(&auth.context(), id, command, expected)
            .await?;
        if ends_sessions {
            refuse_ended_sessions(state, id).await;
        }
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, false).await?)
    }
    .await;
    observe(name, &result);
    result
}
