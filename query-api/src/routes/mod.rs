//! One module per route group, each with its own `router()`.

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod comments;
pub(crate) mod definitions;
pub(crate) mod directory;
pub(crate) mod documents;
pub(crate) mod export;
pub(crate) mod instances;
pub(crate) mod reports;
pub(crate) mod tasks;
pub(crate) mod tenants;
pub(crate) mod users;

use api_common::{ApiError, Json};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A single resource with `ETag: "{version}"`; `304 Not Modified` when the client's
/// `If-None-Match` already names that version.
pub(crate) fn tagged<T: Serialize>(request: &HeaderMap, version: i64, body: T) -> Response {
    let etag = format!("\"{version}\"");
    let value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|list| {
            list.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == etag || tag == "*")
        });
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, value)]).into_response();
    }
    ([(header::ETAG, value)], Json(body)).into_response()
}

/// The problems any read may answer.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum ReadProblems {
    /// A malformed `X-Consistency-Token`.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(ApiError),
    /// No valid access token (code `unauthorized`), an ended session's (`session_ended`: sign
    /// in again) or one older than its user's roles or groups (`access_changed`: refresh it).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(ApiError),
    /// The read model did not reach the consistency token in time.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(ApiError),
}
