//! Request parts every command takes: the authenticated caller, `If-Match`, path ids and the
//! client's address.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use api_common::layers::REQUEST_ID;
use api_common::{ApiError, Claims, CurrentUser, TokenKeys};
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::Utc;
use domain::Caller;
use orchestrator::RequestContext;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::CommandError;
use crate::state::CommandState;

/// The authenticated sender of a command (a valid bearer access token), with the request's id.
#[derive(Debug, Clone)]
pub struct Auth {
    pub claims: Claims,
    pub request_id: String,
}

impl Auth {
    /// The domain's view of the caller: user, tenant, roles and groups from the token.
    pub fn caller(&self) -> Caller {
        Caller::user(
            self.claims.tid.clone(),
            self.claims.sub,
            self.claims.roles.iter().copied(),
            self.claims.groups.iter().cloned(),
        )
    }

    /// Who, when, and the ids that tie the command's events (and its cascade's) together.
    pub fn context(&self) -> RequestContext {
        RequestContext {
            caller: self.caller(),
            at: Utc::now(),
            correlation_id: Uuid::now_v7(),
            request_id: self.request_id.clone(),
        }
    }
}

/// The request id the middleware assigned (or a new one when the router runs without it).
pub fn request_id(parts: &Parts) -> String {
    request_id_of(&parts.headers)
}

/// [`request_id`] from a request's headers.
pub fn request_id_of(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::now_v7().to_string())
}

impl<S> FromRequestParts<S> for Auth
where
    S: Send + Sync,
    TokenKeys: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(claims) = CurrentUser::from_request_parts(parts, state).await?;
        Ok(Auth {
            claims,
            request_id: request_id(parts),
        })
    }
}

/// `If-Match: "3"` (or `3`): the aggregate version the client expects. `*` and no header
/// mean any version.
#[derive(Debug, Clone, Copy, Default)]
pub struct IfMatch(pub Option<usize>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(header::IF_MATCH).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return if parts.headers.contains_key(header::IF_MATCH) {
                Err(invalid_if_match())
            } else {
                Ok(IfMatch(None))
            };
        };
        let text = value.to_str().map_err(|_| invalid_if_match())?.trim();
        if text == "*" {
            return Ok(IfMatch(None));
        }
        let bare = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        bare.parse()
            .map(|v| IfMatch(Some(v)))
            .map_err(|_| invalid_if_match())
    }
}

fn invalid_if_match() -> ApiError {
    ApiError::bad_request(
        "invalid_if_match",
        "If-Match takes one version, as the ETag gave it: `If-Match: \"3\"`",
    )
}

/// The headers every command accepts (documentation only).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CommandHeaders {
    /// The version the resource must be at (its `ETag`, e.g. `"3"`); another version is
    /// answered 412, a concurrent change 409.
    #[param(rename = "If-Match")]
    pub if_match: Option<String>,
    /// Makes a retry safe: a request repeated with the same key (and body) gets the first
    /// response again; with another body it is refused (422). Keys are kept for 24 hours.
    #[param(rename = "Idempotency-Key")]
    pub idempotency_key: Option<String>,
}

/// Parses a path id; anything that is not a UUID names no resource: 404 with `code`.
pub fn path_id(raw: &str, what: &str, code: &str) -> Result<Uuid, CommandError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, code, format!("{what} not found")).into())
}

/// The bearer token of `Authorization`, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address: the peer address, or the configured hop of `X-Forwarded-For` behind
/// trusted proxies. `None` when the server runs without connect info.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

static NO_CONNECT_INFO: AtomicBool = AtomicBool::new(false);

impl FromRequestParts<CommandState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &CommandState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let hops = state.settings().trusted_proxy_hops;
        if hops > 0
            && let Some(forwarded) = forwarded_client(parts, hops)
        {
            return Ok(ClientAddr(Some(forwarded)));
        }
        if peer.is_none() && !NO_CONNECT_INFO.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the server runs without connect info: sign-in is throttled per account only \
                 (give each request its peer as ConnectInfo<SocketAddr>, as `workledger serve` \
                 does)"
            );
        }
        Ok(ClientAddr(peer))
    }
}

/// The client address `hops` entries from the end of `X-Forwarded-For` (each trusted proxy
/// appends the address it saw); the first entry when there are fewer.
fn forwarded_client(parts: &Parts, hops: usize) -> Option<IpAddr> {
    let entries: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let index = entries.len().saturating_sub(hops);
    entries.get(index).and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    async fn if_match(headers: &[(&str, &str)]) -> Result<Option<usize>, String> {
        IfMatch::from_request_parts(&mut parts(headers), &())
            .await
            .map(|m| m.0)
            .map_err(|e| e.code)
    }

    #[tokio::test]
    async fn if_match_takes_quoted_or_bare_versions_and_star() {
        assert_eq!(if_match(&[]).await, Ok(None));
        assert_eq!(if_match(&[("if-match", "\"3\"")]).await, Ok(Some(3)));
        assert_eq!(if_match(&[("if-match", "12")]).await, Ok(Some(12)));
        assert_eq!(if_match(&[("if-match", "*")]).await, Ok(None));
        for bad in ["W/\"3\"", "\"a\"", "\"1\", \"2\"", ""] {
            assert_eq!(
                if_match(&[("if-match", bad)]).await,
                Err("invalid_if_match".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_client_is_the_entry_the_last_trusted_proxy_added() {
        let p = parts(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        assert_eq!(forwarded_client(&p, 1), "10.0.0.2".parse().ok());
        assert_eq!(forwarded_client(&p, 3), "203.0.113.9".parse().ok());
        assert_eq!(forwarded_client(&p, 9), "203.0.113.9".parse().ok());
        assert_eq!(forwarded_client(&parts(&[]), 1), None);
    }
}
