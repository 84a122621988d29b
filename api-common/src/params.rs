//! Query-string parameters: parsed with serde, and a bad one answered as a 422 problem that
//! names it. Unknown parameters are refused too: a misspelt filter must not silently match
//! everything.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::{ApiError, FieldError};

/// Parsed query parameters.
#[derive(Debug, Clone)]
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        // Postgres stores no NUL character in text: no value (or name) can match one
        if let Some((name, _)) = form_urlencoded::parse(query.as_bytes())
            .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        {
            return Err(ApiError::validation(vec![FieldError::new(
                name,
                "nul_character",
                "must not contain the NUL character (%00)",
            )]));
        }
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Params)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.into_inner().to_string();
                let (field, code) = if let Some(rest) = message.strip_prefix("unknown field `") {
                    let name = rest.split('`').next().unwrap_or_default().to_owned();
                    (name, "unknown_parameter")
                } else if let Some(rest) = message.strip_prefix("missing field `") {
                    let name = rest.split('`').next().unwrap_or_default().to_owned();
                    (name, "missing_parameter")
                } else if let Some(rest) = message.strip_prefix("duplicate field `") {
                    let name = rest.split('`').next().unwrap_or_default().to_owned();
                    (name, "duplicate_parameter")
                } else {
                    (path, "invalid")
                };
                ApiError::validation(vec![FieldError::new(field, code, message)])
            })
    }
}
