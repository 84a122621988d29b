//! Who is calling: bearer access tokens (JWT, HS256 pinned) and the [`CurrentUser`] extractor.
//!
//! The command API issues tokens (`/api/v1/auth/login`); every API verifies them here. Only
//! HS256 is accepted: a token naming `none`, an asymmetric algorithm or anything else is
//! refused before its signature is looked at (no algorithm confusion). A token whose session
//! has ended (logout, deactivation, a reused refresh token), or that was issued before its
//! user's roles or groups changed, is refused too, before it expires (see
//! [`crate::revocations`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use chrono::{DateTime, Utc};
use event_schemas::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::problem::ApiError;
use crate::revocations::Revocations;

/// Tokens are issued by and for Workledger only.
pub const ISSUER: &str = "workledger";
pub const AUDIENCE: &str = "workledger-api";

/// What an access token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: Uuid,
    /// The user's tenant: every query and command is scoped to it.
    pub tid: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
    /// The login session (refresh-token family) the token belongs to.
    pub sid: Uuid,
    /// The version of the user at which their roles and groups last changed before the token
    /// was issued: a token older than the latest change is refused. 0 (and absent, in tokens
    /// of earlier versions) before any change.
    #[serde(rename = "av", default)]
    pub access_version: i64,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

impl Claims {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&Role::Admin) || self.roles.contains(&role)
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.exp, 0)
    }
}

/// Why a token was refused (the details are logged, not answered).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the token is not valid")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the token's session has ended")]
    SessionEnded,
    #[error("the user's roles or groups changed after the token was issued")]
    AccessChanged,
}

/// The signing secret, as the keys that issue and verify access tokens, and the tokens
/// revoked since (shared by every clone: the command and query APIs of a process verify
/// alike).
#[derive(Clone)]
pub struct TokenKeys {
    inner: Arc<Keys>,
    revoked: Arc<Revocations>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys from a secret of at least 32 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, &'static str> {
        if secret.len() < 32 {
            return Err("the token signing secret must be at least 32 bytes");
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            inner: Arc::new(Keys {
                encoding: EncodingKey::from_secret(secret),
                decoding: DecodingKey::from_secret(secret),
                validation,
            }),
            revoked: Arc::default(),
        })
    }

    /// Loads the sessions ended and the users' access changed within `token_lifetime`, and
    /// keeps them current from `pool` (on a task of its own, while these keys are in use):
    /// from then on, a token of a session that ends, or of a user whose roles or groups
    /// change, is refused at once.
    pub async fn watch_revocations(
        &self,
        pool: PgPool,
        token_lifetime: Duration,
    ) -> sqlx::Result<()> {
        // the verifier's leeway, and a margin for clocks
        let window = token_lifetime + Duration::from_secs(60);
        self.revoked.watch(pool, window).await
    }

    /// Refuses the tokens of session `sid` from now on, in this process (which ended it: the
    /// others learn of it from the database).
    pub fn session_ended(&self, sid: Uuid) {
        self.revoked.end_session(sid);
    }

    /// Refuses the tokens of `user` issued before `version` (at which their roles or groups
    /// changed) from now on, in this process (which changed them: the others learn of it from
    /// the database).
    pub fn access_changed(&self, user: Uuid, version: i64) {
        self.revoked.change_access(user, version);
    }

    /// Whether a token of `user` issued at `access_version` would be refused as older than a
    /// change of the user's roles or groups that this process knows of.
    pub fn access_outdated(&self, user: Uuid, access_version: i64) -> bool {
        self.revoked.access_outdated(&user, access_version)
    }

    /// Signs `claims` (HS256).
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.inner.encoding,
        )?)
    }

    /// Verifies signature, algorithm, issuer, audience and expiry, that the token's session
    /// has not ended and that its user's roles and groups have not changed since.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &self.inner.validation)?
                .claims;
        if self.revoked.session_ended(&claims.sid) {
            return Err(TokenError::SessionEnded);
        }
        if self
            .revoked
            .access_outdated(&claims.sub, claims.access_version)
        {
            return Err(TokenError::AccessChanged);
        }
        Ok(claims)
    }
}

/// The authenticated caller of a request. Rejects with a 401 problem (and
/// `WWW-Authenticate: Bearer`) when the bearer token is missing or not valid.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Claims);

impl<S> FromRequestParts<S> for CurrentUser
where
    S: Send + Sync,
    TokenKeys: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = TokenKeys::from_ref(state);
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("send an access token: `Authorization: Bearer <token>`")
        })?;
        match keys.verify(token) {
            Ok(claims) => {
                tracing::Span::current().record("user_id", tracing::field::display(claims.sub));
                Ok(CurrentUser(claims))
            }
            Err(error) => {
                tracing::debug!(error = %error, "refused a bearer token");
                // a distinct code for each refusal a client handles differently: refresh the
                // token, or sign in again
                let (code, detail) = match error {
                    TokenError::SessionEnded => (
                        "session_ended",
                        "the access token's session has ended (signed out or deactivated): sign in again",
                    ),
                    TokenError::AccessChanged => (
                        "access_changed",
                        "the caller's roles or groups changed after the access token was issued: \
                         refresh it (POST /api/v1/auth/refresh) for one with the current ones",
                    ),
                    _ => ("unauthorized", "the access token is invalid or expired"),
                };
                Err(
                    ApiError::new(StatusCode::UNAUTHORIZED, code, detail).with_header(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"invalid_token\""),
                    ),
                )
            }
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::from_secret(&[7u8; 32]).unwrap()
    }

    fn claims(exp_from_now: i64) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            sub: Uuid::now_v7(),
            tid: "acme".into(),
            roles: vec![Role::Member],
            groups: vec!["clerks".into()],
            sid: Uuid::now_v7(),
            access_version: 0,
            iat: now,
            exp: now + exp_from_now,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        }
    }

    #[test]
    fn a_token_round_trips() {
        let c = claims(900);
        assert_eq!(keys().verify(&keys().issue(&c).unwrap()).unwrap(), c);
    }

    #[test]
    fn an_expired_token_is_refused() {
        let token = keys().issue(&claims(-60)).unwrap();
        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = TokenKeys::from_secret(&[8u8; 32]).unwrap();
        assert!(keys().verify(&other.issue(&claims(900)).unwrap()).is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = engine.encode(serde_json::to_vec(&claims(900)).unwrap());
        assert!(keys().verify(&format!("{header}.{body}.")).is_err());
        assert!(keys().verify(&format!("{header}.{body}")).is_err());
    }

    #[test]
    fn another_algorithm_is_refused_even_with_the_right_secret() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(900),
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .unwrap();
        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn a_token_issued_before_its_users_access_changed_is_refused() {
        let keys = keys();
        let ann = Claims {
            access_version: 3,
            ..claims(900)
        };
        let bob = claims(900);
        let (ann_token, bob_token) = (keys.issue(&ann).unwrap(), keys.issue(&bob).unwrap());
        keys.access_changed(ann.sub, 3);
        keys.verify(&ann_token).unwrap();
        keys.access_changed(ann.sub, 5);
        assert!(matches!(
            keys.verify(&ann_token),
            Err(TokenError::AccessChanged)
        ));
        keys.verify(&bob_token).unwrap();
        keys.session_ended(bob.sid);
        assert!(matches!(
            keys.verify(&bob_token),
            Err(TokenError::SessionEnded)
        ));
    }

    #[test]
    fn a_token_without_an_access_version_reads_as_before_any_change() {
        let mut body = serde_json::to_value(claims(900)).unwrap();
        body.as_object_mut().unwrap().remove("av").unwrap();
        let decoded: Claims = serde_json::from_value(body).unwrap();
        assert_eq!(decoded.access_version, 0);
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(TokenKeys::from_secret(b"too short").is_err());
    }
}
