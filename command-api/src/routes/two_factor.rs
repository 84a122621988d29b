//! `/api/v1/users/{id}/two-factor`: signing in with a one-time code besides the password
//! (TOTP authenticator apps, recovery codes for a lost one).
//!
//! Turning it on takes two steps: `POST .../two-factor` (with the current password) returns a
//! new key; `POST .../two-factor/confirm` with the authenticator's first code turns it on and
//! returns the recovery codes. Keys and codes are shown once and are kept out of the event log
//! and out of stored `Idempotency-Key` responses ([`answers_secrets`]).

use api_common::{ApiError, Json};
use axum::extract::{Path, State};
use axum::http::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Applied, OptionalJson, Problems, observe};
use crate::auth::two_factor::{DIGITS, STEP_SECONDS};
use crate::error::Result;
use crate::extract::{Auth, CommandHeaders, IfMatch, path_id};
use crate::response::{Accepted, CommandAccepted};
use crate::state::CommandState;

const AGGREGATE: &str = event_schemas::identity::USER_AGGREGATE_TYPE;

/// This module's routes.
pub fn router() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(begin))
        .routes(routes!(confirm))
        .routes(routes!(disable))
        .routes(routes!(replace_recovery_codes))
}

/// Whether `path` answers with a key or recovery codes: its responses are not stored for
/// `Idempotency-Key` replays (the key is ignored; each of these is safe to send again).
pub fn answers_secrets(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/users/") else {
        return false;
    };
    method == Method::POST
        && (rest.ends_with("/two-factor")
            || rest.ends_with("/two-factor/confirm")
            || rest.ends_with("/two-factor/recovery-codes"))
}

/// One's current password, to confirm it is oneself at the keyboard.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CurrentPassword {
    #[schema(value_type = String, format = Password)]
    pub current_password: Option<SecretString>,
}

impl std::fmt::Debug for CurrentPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentPassword(..)")
    }
}

/// A new authenticator key, for an authenticator app.
#[derive(Debug, Serialize, ToSchema)]
pub struct TwoFactorEnrolment {
    /// The key in base32, for typing into the app.
    #[schema(value_type = String, example = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")]
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
    /// The same as an `otpauth://totp/...` URI, for a QR code.
    #[schema(value_type = String)]
    #[serde(serialize_with = "expose")]
    pub otpauth_uri: SecretString,
    /// `SHA1`
    pub algorithm: &'static str,
    /// Digits of a code.
    pub digits: u32,
    /// Seconds per code.
    pub period: i64,
}

impl From<crate::identity::Enrolment> for TwoFactorEnrolment {
    fn from(enrolment: crate::identity::Enrolment) -> Self {
        TwoFactorEnrolment {
            secret: enrolment.secret,
            otpauth_uri: enrolment.uri,
            algorithm: "SHA1",
            digits: DIGITS,
            period: STEP_SECONDS,
        }
    }
}

/// Recovery codes: each signs in once in place of the authenticator's code. Shown only now.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithRecoveryCodes {
    #[serde(flatten)]
    pub accepted: CommandAccepted,
    /// Ten codes, `xxxxx-xxxxx`.
    #[schema(value_type = Vec<String>, example = json!(["k3q7a-mz2xp"]))]
    #[serde(serialize_with = "expose_all")]
    pub recovery_codes: Vec<SecretString>,
}

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_all<S: serde::Serializer>(secrets: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(ExposeSecret::expose_secret))
}

/// Start turning on two-factor sign-in
///
/// For oneself, with the current password: returns a new authenticator key, which signs in
/// only once confirmed with its first code (`POST .../two-factor/confirm`). Starting again
/// replaces a key not yet confirmed. Wrong current passwords count like failed sign-ins.
#[utoipa::path(post, path = "/api/v1/users/{id}/two-factor", operation_id = "begin_two_factor", tag = "users",
    request_body = CurrentPassword,
    params(("id" = Uuid, Path, description = "The user: oneself"), CommandHeaders),
    responses(
        (status = 200, description = "The new key; confirm it with a code", body = TwoFactorEnrolment),
        Problems,
        (status = 429, description = "Too many wrong passwords for the account; see `Retry-After`", body = ApiError, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn begin(
    State(state): State<CommandState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(body): Json<CurrentPassword>,
) -> Result<Json<TwoFactorEnrolment>> {
    let result = async {
        let id = path_id(&id, "user", "user_not_found")?;
        let enrolment = state
            .identity()
            .begin_two_factor(&auth.context(), state.throttle(), id, body.current_password)
            .await?;
        Ok(Json(TwoFactorEnrolment::from(enrolment)))
    }
    .await;
    observe("begin_two_factor", &result);
    result
}

/// The authenticator's first code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// Six digits.
    #[schema(value_type = String, format = Password, example = "492039")]
    pub one_time_code: SecretString,
}

impl std::fmt::Debug for Confirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Confirm(..)")
    }
}

/// Turn on two-factor sign-in
///
/// Confirms the key of `POST .../two-factor` with its current code. From now on signing in
/// takes a one-time code too. Answers the first recovery codes, shown only here.
#[utoipa::path(post, path = "/api/v1/users/{id}/two-factor/confirm", operation_id = "confirm_two_factor", tag = "users",
    request_body = Confirm,
    params(("id" = Uuid, Path, description = "The user: oneself"), CommandHeaders),
    responses(
        (status = 200, description = "Two-factor sign-in is on", body = WithRecoveryCodes, headers(
            ("ETag" = String, description = "The user's version afterwards"),
            ("X-Consistency-Token" = String, description = "Send to a query to read this write"))),
        Problems,
    ), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn confirm(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<Confirm>,
) -> Result<Accepted<WithRecoveryCodes>> {
    let result = async {
        let id = path_id(&id, "user", "user_not_found")?;
        let (outcome, codes) = state
            .identity()
            .confirm_two_factor(&auth.context(), id, &body.one_time_code, expected)
            .await?;
        with_codes(&state, outcome, codes).await
    }
    .await;
    observe("confirm_two_factor", &result);
    result
}

pub(crate) async fn with_codes(
    state: &CommandState,
    outcome: orchestrator::Outcome,
    codes: Vec<SecretString>,
) -> Result<Accepted<WithRecoveryCodes>> {
    let accepted = Accepted::of(state.pool(), AGGREGATE, outcome, false).await?;
    Ok(accepted.map(|accepted| WithRecoveryCodes {
        accepted,
        recovery_codes: codes,
    }))
}

/// Turning two-factor sign-in off.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Disable {
    /// Required to turn off one's own; not for an admin turning off another user's.
    #[schema(value_type = Option<String>, format = Password)]
    pub current_password: Option<SecretString>,
    /// Up to 1,000 characters.
    pub reason: Option<String>,
}

impl std::fmt::Debug for Disable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disable")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Turn off two-factor sign-in
///
/// One's own (with the current password), or another user's (admins: for a user who lost
/// their authenticator and recovery codes). The key and the recovery codes are deleted.
/// Where it is off already, nothing changes (200).
#[utoipa::path(post, path = "/api/v1/users/{id}/two-factor/disable", operation_id = "disable_two_factor", tag = "users",
    request_body(content = Option<Disable>),
    params(("id" = Uuid, Path, description = "The user"), CommandHeaders),
    responses(Applied, Problems,
        (status = 429, description = "Too many wrong passwords for the account; see `Retry-After`", body = ApiError, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn disable(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Disable>,
) -> Result<Accepted> {
    let result = async {
        let id = path_id(&id, "user", "user_not_found")?;
        let body = body.unwrap_or_default();
        let outcome = state
            .identity()
            .disable_two_factor(
                &auth.context(),
                state.throttle(),
                id,
                body.current_password,
                body.reason,
                expected,
            )
            .await?;
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, false).await?)
    }
    .await;
    observe("disable_two_factor", &result);
    result
}

/// Replace recovery codes
///
/// For oneself, with the current password, while two-factor sign-in is on: the old codes
/// stop working and ten new ones are answered, shown only here.
#[utoipa::path(post, path = "/api/v1/users/{id}/two-factor/recovery-codes", operation_id = "replace_recovery_codes", tag = "users",
    request_body = CurrentPassword,
    params(("id" = Uuid, Path, description = "The user: oneself"), CommandHeaders),
    responses(
        (status = 200, description = "The new recovery codes", body = WithRecoveryCodes, headers(
            ("ETag" = String, description = "The user's version afterwards"),
            ("X-Consistency-Token" = String, description = "Send to a query to read this write"))),
        Problems,
        (status = 429, description = "Too many wrong passwords for the account; see `Retry-After`", body = ApiError, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ), security(("bearer" = [])))]
#[instrument(skip_all, fields(user_id = %id))]
async fn replace_recovery_codes(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<CurrentPassword>,
) -> Result<Accepted<WithRecoveryCodes>> {
    let result = async {
        let id = path_id(&id, "user", "user_not_found")?;
        let (outcome, codes) = state
            .identity()
            .replace_recovery_codes(
                &auth.context(),
                state.throttle(),
                id,
                body.current_password,
                expected,
            )
            .await?;
        with_codes(&state, outcome, codes).await
    }
    .await;
    observe("replace_recovery_codes", &result);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routes_answering_secrets_are_known_by_their_paths() {
        let id = "0190e4b4-0000-7000-8000-000000000001";
        for path in [
            "two-factor",
            "two-factor/confirm",
            "two-factor/recovery-codes",
        ] {
            assert!(answers_secrets(
                &Method::POST,
                &format!("/api/v1/users/{id}/{path}")
            ));
        }
        assert!(!answers_secrets(
            &Method::POST,
            &format!("/api/v1/users/{id}/two-factor/disable")
        ));
        assert!(!answers_secrets(
            &Method::POST,
            "/api/v1/tasks/x/two-factor"
        ));
        assert!(!answers_secrets(
            &Method::PUT,
            &format!("/api/v1/users/{id}/two-factor")
        ));
    }
}
