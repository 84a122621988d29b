//! `Json<T>`: axum's extractor, with rejections answered as problems that name the field.
//!
//! Text with the NUL character (`\u0000`) is refused here, naming the field: Postgres stores
//! neither it in `text` nor the escape in `jsonb`, and would otherwise fail the command.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::{ApiError, FieldError};

/// A JSON body in, or a JSON answer out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| rejection_to_problem(e.into()))?;
        let value = axum::Json::<T>::from_bytes(&bytes).map_err(rejection_to_problem)?;
        if has_nul_escape(&bytes) {
            let field = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| nul_path(&v, String::new()))
                .unwrap_or_else(|| ".".to_owned());
            return Err(ApiError::validation(vec![FieldError::new(
                field,
                "nul_character",
                "text must not contain the NUL character (\\u0000)",
            )]));
        }
        Ok(Json(value.0))
    }
}

/// `application/json`, or another `application/*+json` type.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether the JSON text has a `\u0000` escape. Backslashes appear only in strings, where each
/// starts an escape of its own, so the scan needs no notion of where strings begin.
pub fn has_nul_escape(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// The path (`comment`, `variables.items[2].note`) of the first string with a NUL character,
/// as a key or a value.
fn nul_path(value: &Value, path: String) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
            ".".to_owned()
        } else {
            path
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(key))
            } else {
                nul_path(item, join(key))
            }
        }),
        _ => None,
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn rejection_to_problem(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {}", source_text(&e)),
        ),
        JsonRejection::JsonDataError(e) => {
            // serde_path_to_error's message is `path: what is wrong`
            let text = source_text(&e);
            let (field, message) = match text.split_once(": ") {
                Some((path, message)) if !path.contains(' ') => {
                    (path.to_owned(), message.to_owned())
                }
                _ => (".".to_owned(), text.clone()),
            };
            let code = if message.starts_with("missing field") {
                "required"
            } else if message.starts_with("unknown field") {
                "unknown_field"
            } else if message.starts_with("duplicate field") {
                "duplicate_field"
            } else {
                "invalid"
            };
            // a missing or repeated field is reported at the object that lacks or repeats it:
            // the field is named in the message
            let field = match (code, named_field(&message)) {
                ("required" | "duplicate_field", Some(name)) if field == "." => name.to_owned(),
                ("required" | "duplicate_field", Some(name)) => format!("{field}.{name}"),
                _ => field,
            };
            ApiError::validation(vec![FieldError::new(field, code, message)])
        }
        JsonRejection::BytesRejection(e) => ApiError::new(
            e.status(),
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "unreadable_body"
            },
            e.body_text(),
        ),
        other => ApiError::new(other.status(), "bad_body", other.body_text()),
    }
}

/// The field a serde message names between backquotes (`` missing field `email` ``).
fn named_field(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('`')?;
    let (name, _) = rest.split_once('`')?;
    Some(name).filter(|n| !n.is_empty())
}

fn source_text(error: &dyn std::error::Error) -> String {
    let mut deepest = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        deepest = cause.to_string();
        source = cause.source();
    }
    deepest
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_nul_escape_is_found_and_an_escaped_backslash_before_u0000_is_not_one() {
        assert!(has_nul_escape(br#"{"a": "x\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a": "x\\u0000"}"#));
        assert!(has_nul_escape(br#"{"a": "x\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a": "\u0001"}"#));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only deserialized
    struct Body {
        email: String,
        inner: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    fn refused(body: &str) -> (String, String) {
        let rejection = axum::Json::<Body>::from_bytes(body.as_bytes()).unwrap_err();
        let problem = rejection_to_problem(rejection);
        let error = &problem.errors[0];
        (error.field.clone(), error.code.clone())
    }

    #[test]
    fn a_missing_or_repeated_field_is_named_where_it_belongs() {
        let named = |field: &str, code: &str| (field.to_owned(), code.to_owned());
        assert_eq!(
            refused(r#"{"inner": {"name": "a"}}"#),
            named("email", "required")
        );
        assert_eq!(
            refused(r#"{"email": "a", "inner": {}}"#),
            named("inner.name", "required")
        );
        assert_eq!(
            refused(r#"{"email": "a", "email": "b", "inner": {"name": "a"}}"#),
            named("email", "duplicate_field")
        );
        assert_eq!(
            refused(r#"{"email": 1, "inner": {"name": "a"}}"#),
            named("email", "invalid")
        );
        assert_eq!(
            refused(r#"{"email": "a", "inner": {"name": "a"}, "extra": 1}"#),
            named("extra", "unknown_field")
        );
    }

    #[test]
    fn the_path_of_the_first_nul_names_keys_and_indexes() {
        let value =
            json!({"ok": "fine", "variables": {"items": [{"note": "a"}, {"note": "b\u{0}"}]}});
        assert_eq!(
            nul_path(&value, String::new()).as_deref(),
            Some("variables.items[1].note")
        );
        assert_eq!(
            nul_path(&json!("\u{0}"), String::new()).as_deref(),
            Some(".")
        );
        assert_eq!(
            nul_path(&json!({"k\u{0}": 1}), String::new()).as_deref(),
            Some("k\u{0}")
        );
        assert_eq!(nul_path(&json!({"a": [1, "x"]}), String::new()), None);
    }
}
