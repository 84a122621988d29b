//! The answer to a command: `{id, version, consistency_token}`, `ETag: "<version>"` and
//! `X-Consistency-Token`.

use api_common::ApiError;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use event_schemas::LogPosition;
use event_store::GlobalLog;
use orchestrator::Outcome;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

/// The consistency token header: pass it to a query to read your own write.
pub const CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");

/// What a command did to its resource.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CommandAccepted {
    /// The resource's id (a UUID; a definition's key; a tenant's id).
    #[schema(example = "0190e4b4-0000-7000-8000-000000000001")]
    pub id: String,
    /// The resource's version afterwards (also the `ETag`).
    #[schema(example = 3)]
    pub version: u64,
    /// The log position covering the command and the steps it triggered: send it as
    /// `X-Consistency-Token` to a query to see the result.
    #[schema(example = "7000000001.42")]
    pub consistency_token: Option<String>,
}

/// A command's answer, with its status and headers.
#[derive(Debug)]
pub struct Accepted<T = CommandAccepted> {
    status: StatusCode,
    version: u64,
    token: Option<LogPosition>,
    location: Option<String>,
    body: T,
}

impl Accepted<CommandAccepted> {
    /// The answer for `outcome` of a command on `aggregate_type`: 201 when `created`, else
    /// 200. A command that changed nothing still returns a token: the position of the
    /// resource's latest event, which is what the caller saw.
    pub async fn of(
        pool: &PgPool,
        aggregate_type: &str,
        outcome: Outcome,
        created: bool,
    ) -> Result<Self, ApiError> {
        let token = token(
            pool,
            aggregate_type,
            &outcome.id,
            outcome.version,
            outcome.position,
        )
        .await?;
        Ok(Self::with_token(
            outcome.id,
            outcome.version,
            token,
            created,
        ))
    }

    /// The answer for a known resource, version and token.
    pub fn with_token(
        id: String,
        version: usize,
        token: Option<LogPosition>,
        created: bool,
    ) -> Self {
        let body = CommandAccepted {
            id,
            version: version as u64,
            consistency_token: token.map(|t| t.to_string()),
        };
        Accepted::new(body, version, token, created)
    }
}

impl<T> Accepted<T> {
    /// `body` with the headers of `version` and `token`.
    pub fn new(body: T, version: usize, token: Option<LogPosition>, created: bool) -> Self {
        Self {
            status: if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            version: version as u64,
            token,
            location: None,
            body,
        }
    }

    /// The same answer with its body made into another.
    pub fn map<U>(self, body: impl FnOnce(T) -> U) -> Accepted<U> {
        Accepted {
            status: self.status,
            version: self.version,
            token: self.token,
            location: self.location,
            body: body(self.body),
        }
    }

    /// Adds a `Location` header (for 201).
    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }
}

/// The token of a command: its last appended position, or for a no-op the position of the
/// resource's event at `version`.
pub async fn token(
    pool: &PgPool,
    aggregate_type: &str,
    id: &str,
    version: usize,
    appended: Option<LogPosition>,
) -> Result<Option<LogPosition>, ApiError> {
    if appended.is_some() || version == 0 {
        return Ok(appended);
    }
    GlobalLog::position_of(pool, aggregate_type, id, version as i64)
        .await
        .map_err(|e| ApiError::unavailable(&e))
}

impl<T: Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", self.version)) {
            headers.insert(header::ETAG, etag);
        }
        if let Some(token) = self.token
            && let Ok(value) = HeaderValue::from_str(&token.to_string())
        {
            headers.insert(CONSISTENCY_TOKEN, value);
        }
        if let Some(location) = self.location
            && let Ok(value) = HeaderValue::from_str(&location)
        {
            headers.insert(header::LOCATION, value);
        }
        response
    }
}
