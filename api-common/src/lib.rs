//! HTTP plumbing shared by Workledger's command and query APIs.
//!
//! - [`auth`]: bearer access tokens and the [`auth::CurrentUser`] extractor.
//! - [`revocations`]: the sessions that ended while their access tokens still run.
//! - [`problem`]: the one error type, answered as `application/problem+json` (RFC 9457).
//! - [`json`]: a JSON extractor whose rejections are problems naming the field.
//! - [`params`]: a query-string extractor whose rejections are problems naming the parameter.
//! - [`layers`]: request ids, tracing, metrics, timeouts, body limits, CORS, security headers.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and the interactive docs.

pub mod auth;
pub mod json;
pub mod layers;
pub mod ops;
pub mod params;
pub mod problem;
pub mod revocations;

pub use auth::{Claims, CurrentUser, TokenKeys};
pub use json::Json;
pub use params::Params;
pub use problem::{ApiError, FieldError, Result};
