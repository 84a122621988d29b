//! Problem details (RFC 9457): every error answer of every Workledger API.
//!
//! Rejections (bad input, forbidden, not found, conflicts) say what is wrong; failures (the
//! database is down, a bug) are logged once with their cause chain and answered without
//! internals.

use std::error::Error as StdError;
use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Handlers answer `Result<T>`.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// One invalid field (or workflow step) of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's path in the body (`variables.amount`), or the step id of a definition.
    pub field: String,
    /// A stable machine code (`required`, `invalid`, `unknown_field`, `unknown_user`, ...).
    pub code: String,
    pub message: String,
}

impl FieldError {
    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ApiError {
    /// A URI reference naming the kind of problem: `/problems/{code}`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    #[schema(value_type = u16, example = 404)]
    #[serde(serialize_with = "serialize_status")]
    pub status: StatusCode,
    pub detail: String,
    /// A stable machine code clients can branch on.
    pub code: String,
    /// Field-level errors of a request that failed validation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extra response headers (`Retry-After`, ...); not part of the body.
    #[serde(skip)]
    #[schema(ignore)]
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.code, self.detail)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status,
            detail: detail.into(),
            code: code.to_owned(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// A request whose fields are wrong; `errors` names each one.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut detail = String::from("the request is not valid:");
        for e in &errors {
            let _ = write!(detail, " {}: {};", e.field, e.message);
        }
        detail.pop();
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                detail,
            )
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// A failure of ours: the cause chain is logged here, once; the client gets none of it.
    pub fn internal(error: &(dyn StdError + 'static)) -> Self {
        tracing::error!(error = %chain(error), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the request failed on our side; it has been logged with its request id",
        )
    }

    /// A dependency is down (the database, the broker); the client may retry.
    pub fn unavailable(error: &(dyn StdError + 'static)) -> Self {
        tracing::error!(error = %chain(error), "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a service Workledger depends on is unavailable; retry shortly",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// `error: cause: cause` on one line.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::unavailable(&error)
            }
            // the session ended under the statement (a restart, say): try again
            ref ended if event_store::connections::session_ended(ended) => {
                Self::unavailable(&error)
            }
            other => match Self::for_data_exception(&other) {
                Some(problem) => problem,
                None => Self::internal(&other),
            },
        }
    }
}

impl ApiError {
    /// A 422 when Postgres refused a value of the request itself (SQLSTATE class 22, data
    /// exception: a character it cannot store, a number or time out of range), anywhere in
    /// `error`'s cause chain. Validation catches these first where it can name the field;
    /// this is the net under it, so that bad input is never answered as our failure.
    pub fn for_data_exception(error: &(dyn StdError + 'static)) -> Option<Self> {
        let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(error) = cause {
            if let Some(sqlx::Error::Database(e)) = error.downcast_ref::<sqlx::Error>()
                && e.code().is_some_and(|c| c.starts_with("22"))
            {
                tracing::info!(error = %e, "a value of the request was refused by Postgres");
                return Some(Self::validation(vec![FieldError::new(
                    ".",
                    "invalid_value",
                    format!("a value of the request cannot be stored: {}", e.message()),
                )]));
            }
            cause = error.source();
        }
        None
    }
}
