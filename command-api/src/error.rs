//! The command API's error: problem+json for rejections of every layer.
//!
//! | cause | status | `code` |
//! |---|---|---|
//! | a domain rejection | its kind: 404 / 403 / 409 / 422 | the rejection's (`task_closed`, ...), with `errors` |
//! | `If-Match` names another version | 412 | `precondition_failed` (and the current `ETag`) |
//! | a race lost with `If-Match`, or lost five times without | 409 | `concurrent_modification` |
//! | unknown definition key or version on start | 422 | `definition_not_found` |
//! | a value Postgres cannot store (a NUL character the body check did not see, say) | 422 | `validation_failed` |
//! | too many failed sign-ins or current passwords for the account (or client address) | 429 | `too_many_attempts` (and `Retry-After`) |
//! | a store or directory failure | 503 | `unavailable` (logged, no internals) |

use std::time::Duration;

use api_common::{ApiError, FieldError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::Issue;
use orchestrator::RuntimeError;

use crate::identity::IdentityError;

/// Handlers answer `Result<T>`.
pub type Result<T, E = CommandError> = std::result::Result<T, E>;

/// An error answer of the command API (a problem, see [`ApiError`]; boxed, as results carry
/// it on every path).
#[derive(Debug)]
pub struct CommandError(pub Box<ApiError>);

impl CommandError {
    /// The problem answered.
    pub fn problem(&self) -> &ApiError {
        &self.0
    }
}

impl IntoResponse for CommandError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl From<ApiError> for CommandError {
    fn from(error: ApiError) -> Self {
        CommandError(Box::new(error))
    }
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from(error).into()
    }
}

impl From<RuntimeError> for CommandError {
    fn from(error: RuntimeError) -> Self {
        runtime_problem(error).into()
    }
}

impl From<IdentityError> for CommandError {
    fn from(error: IdentityError) -> Self {
        CommandError::from(match error {
            IdentityError::Runtime(error) => runtime_problem(error),
            IdentityError::Invalid(issues) => ApiError::validation(field_errors(&issues)),
            IdentityError::EmailTaken { field } => {
                let mut problem = ApiError::conflict("email_taken", error.to_string());
                problem.errors = vec![FieldError::new(
                    field,
                    "email_taken",
                    "another user of this tenant has this email address",
                )];
                problem
            }
            IdentityError::WrongPassword => {
                let mut problem = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "wrong_current_password",
                    error.to_string(),
                );
                problem.errors = vec![FieldError::new(
                    "current_password",
                    "wrong_current_password",
                    "the current password is not correct",
                )];
                problem
            }
            IdentityError::TwoFactorNotStarted => {
                ApiError::conflict("two_factor_not_started", error.to_string())
            }
            IdentityError::TwoFactorRequiredByTenant => ApiError::new(
                StatusCode::FORBIDDEN,
                "two_factor_required_by_tenant",
                error.to_string(),
            ),
            IdentityError::WrongOneTimeCode => {
                let mut problem = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_one_time_code",
                    error.to_string(),
                );
                problem.errors = vec![FieldError::new(
                    "one_time_code",
                    "invalid_one_time_code",
                    "not the authenticator's current code",
                )];
                problem
            }
            IdentityError::Throttled { retry_after } => {
                too_many_attempts(retry_after, "wrong passwords for this account")
            }
            IdentityError::Database(error) => error.into(),
            IdentityError::Password(error) => ApiError::internal(&error),
        })
    }
}

/// 429 `too_many_attempts`: "too many {what}", with `Retry-After` in whole seconds (at least 1).
pub fn too_many_attempts(wait: Duration, what: &str) -> ApiError {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!("too many {what}; try again in {seconds} s"),
    )
    .with_header(
        header::RETRY_AFTER,
        HeaderValue::from_str(&seconds.to_string()).unwrap_or(HeaderValue::from_static("60")),
    )
}

/// The problem for a command that did not take effect.
pub fn runtime_problem(error: RuntimeError) -> ApiError {
    match &error {
        RuntimeError::Rejected(rejection) => {
            let status = StatusCode::from_u16(rejection.kind().http_status())
                .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            let mut problem = ApiError::new(status, rejection.code(), rejection.to_string());
            problem.errors = field_errors(rejection.issues());
            problem
        }
        RuntimeError::DefinitionNotFound { .. } => {
            let mut problem = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "definition_not_found",
                error.to_string(),
            );
            problem.errors = vec![FieldError::new(
                "definition_key",
                "definition_not_found",
                error.to_string(),
            )];
            problem
        }
        RuntimeError::VersionMismatch { actual, .. } => {
            let problem = ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("{error}: read it again and retry with `If-Match: \"{actual}\"`"),
            );
            match HeaderValue::from_str(&format!("\"{actual}\"")) {
                Ok(etag) => problem.with_header(header::ETAG, etag),
                Err(_) => problem,
            }
        }
        RuntimeError::Conflict => ApiError::conflict("concurrent_modification", error.to_string()),
        RuntimeError::Directory(_) | RuntimeError::Store(_) => {
            ApiError::for_data_exception(&error).unwrap_or_else(|| ApiError::unavailable(&error))
        }
    }
}

/// Domain issues as problem `errors`: a definition's step issues are located by their path in
/// the document (`steps.review`, `steps.review.next`), command issues by their field.
pub fn field_errors(issues: &[Issue]) -> Vec<FieldError> {
    issues
        .iter()
        .map(|issue| {
            let field = match (&issue.step, &issue.field) {
                (Some(step), Some(field)) => format!("steps.{step}.{field}"),
                (Some(step), None) => format!("steps.{step}"),
                (None, Some(field)) => field.clone(),
                (None, None) => ".".to_owned(),
            };
            FieldError::new(field, issue.code.as_str(), issue.message.clone())
        })
        .collect()
}
