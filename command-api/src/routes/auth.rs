//! `/api/v1/auth`: signing in, refreshing tokens, signing out.

use api_common::auth::TokenError;
use api_common::{ApiError, Json};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use domain::Caller;
use domain::identity::{DEFAULT_TENANT, email_key};
use orchestrator::RequestContext;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::sessions::{IssuedTokens, Principal, SessionError};
use crate::auth::throttle::{Admission, Attempt};
use crate::auth::{Client, RefreshError, SessionInfo, ThrottleKey};
use crate::error::{CommandError, Result, too_many_attempts};
use crate::extract::{Auth, ClientAddr, bearer, request_id_of};
use crate::identity::{SecondFactor, second_factor, store};
use crate::response::Accepted;
use crate::routes::observe;
use crate::routes::two_factor::{TwoFactorEnrolment, WithRecoveryCodes, with_codes};
use crate::state::CommandState;

/// This module's routes.
pub fn router() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(list_sessions))
        .routes(routes!(end_session))
        .routes(routes!(end_other_sessions))
        .routes(routes!(enrol_two_factor))
        .routes(routes!(confirm_two_factor))
}

/// Credentials.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[schema(example = "admin@example.com")]
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// The tenant to sign in to; `default` when left out.
    #[schema(example = "default")]
    pub tenant: Option<String>,
    /// For an account with two-factor sign-in: the authenticator's current six-digit code, or
    /// one of the account's unused recovery codes (`xxxxx-xxxxx`). Each code works once.
    #[schema(value_type = Option<String>, format = Password, example = "492039")]
    pub one_time_code: Option<SecretString>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Tokens for the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Single use: exchange it at `/api/v1/auth/refresh` for new tokens before it expires.
    pub refresh_token: String,
    /// `Bearer`
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: u64,
    /// Seconds the refresh token is valid if unused.
    pub refresh_expires_in: u64,
    /// The signed-in user.
    pub user_id: Uuid,
}

impl From<IssuedTokens> for Tokens {
    fn from(issued: IssuedTokens) -> Self {
        use secrecy::ExposeSecret;
        Tokens {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token.expose_secret().to_owned(),
            token_type: "Bearer",
            expires_in: issued.expires_in,
            refresh_expires_in: issued.refresh_expires_in,
            user_id: issued.user_id,
        }
    }
}

fn invalid_credentials() -> CommandError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the email address, password or tenant is not correct",
    )
    .into()
}

fn two_factor_required() -> CommandError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "two_factor_required",
        "this account signs in with a one-time code as well: send the authenticator's current \
         code (or a recovery code) as `one_time_code`",
    )
    .into()
}

fn two_factor_enrolment_required() -> CommandError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "two_factor_enrolment_required",
        "this tenant requires two-factor sign-in: add an authenticator with your email address \
         and password (POST /api/v1/auth/two-factor, then .../two-factor/confirm), then sign in \
         with its code",
    )
    .into()
}

/// An account whose password was just checked.
pub(crate) struct Checked {
    pub principal: Principal,
    /// Counted as a failure until reported otherwise.
    pub attempt: Attempt,
    /// The hash the password was checked against.
    pub hash: String,
}

/// Checks `email` and `password` in `tenant` as a sign-in does: throttled per account and
/// client address (429 past the limit), the same 401 for an unknown account, a deactivated
/// one and a wrong password, in the same time.
pub(crate) async fn check_password(
    state: &CommandState,
    address: Option<std::net::IpAddr>,
    tenant: &str,
    email: &str,
    password: &SecretString,
) -> Result<Checked> {
    let account = ThrottleKey::Account {
        tenant_id: tenant.to_owned(),
        email_key: email_key(email),
    };
    let mut keys = vec![account];
    keys.extend(address.map(ThrottleKey::Address));
    // counted before the password is checked, so concurrent attempts cannot pass the limit
    let attempt = match state.throttle().admit(&keys).await? {
        Admission::Admitted(attempt) => attempt,
        Admission::Locked(wait) => {
            return Err(too_many_attempts(wait, "failed sign-ins").into());
        }
    };
    let record = store::find_login(state.pool(), tenant, &email_key(email)).await?;
    // unknown and deactivated accounts verify against a dummy hash: same time, same answer
    let (principal, hash) = match record {
        Some(record) if record.active => (Some(record.principal), record.password_hash),
        _ => (None, None),
    };
    let verified = state
        .identity()
        .passwords()
        .verify(password, hash.clone())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let (Some(principal), Some(hash)) = (principal.filter(|_| verified), hash) else {
        state.throttle().failed(attempt);
        return Err(invalid_credentials());
    };
    Ok(Checked {
        principal,
        attempt,
        hash,
    })
}

fn invalid_one_time_code() -> CommandError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_one_time_code",
        "the one-time code is not correct, has expired or was already used",
    )
    .into()
}

/// Sign in
///
/// Failed attempts are counted per account (with the wrong current passwords of password
/// changes) and per client address; past the limit the answer is 429 with `Retry-After`
/// (whether or not the account exists). An account with two-factor sign-in also needs
/// `one_time_code`: without it the answer is 401 `two_factor_required` (not counted as a
/// failure), with a wrong or used one 401 `invalid_one_time_code` (counted). In a tenant that
/// requires two-factor sign-in, an account without an authenticator is refused with 403
/// `two_factor_enrolment_required` (not counted): add one with `POST /api/v1/auth/two-factor`.
#[utoipa::path(post, path = "/api/v1/auth/login", operation_id = "login", tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "Signed in", body = Tokens),
        (status = 401, description = "Wrong email, password or tenant (`invalid_credentials`, the same answer for each); the account needs a one-time code (`two_factor_required`); a wrong, expired or used one (`invalid_one_time_code`)", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "The tenant requires two-factor sign-in and the account has no authenticator yet (`two_factor_enrolment_required`)", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "A malformed body", body = ApiError, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts; see `Retry-After`", body = ApiError, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
#[instrument(skip_all, fields(tenant, user_id))]
async fn login(
    State(state): State<CommandState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Json(body): Json<Login>,
) -> Result<Json<Tokens>> {
    let result = async {
        let tenant = body.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned());
        tracing::Span::current().record("tenant", tenant.as_str());
        let Checked {
            principal,
            attempt,
            hash,
        } = check_password(&state, address, &tenant, &body.email, &body.password).await?;
        let factor = second_factor(
            state.pool(),
            principal.user_id,
            body.one_time_code.as_ref(),
            chrono::Utc::now().timestamp(),
        )
        .await?;
        match factor {
            SecondFactor::NotEnrolled if store::two_factor_required(state.pool(), &tenant).await? => {
                state.throttle().withdrawn(attempt).await?;
                return Err(two_factor_enrolment_required());
            }
            SecondFactor::NotEnrolled | SecondFactor::Totp => {}
            SecondFactor::Recovery { remaining } => {
                tracing::warn!(user_id = %principal.user_id, remaining, "signed in with a recovery code");
            }
            SecondFactor::Required => {
                state.throttle().withdrawn(attempt).await?;
                return Err(two_factor_required());
            }
            SecondFactor::Refused => {
                state.throttle().failed(attempt);
                return Err(invalid_one_time_code());
            }
        }
        metrics::counter!("workledger_login_second_factors_total", "factor" => factor.name())
            .increment(1);
        state.throttle().succeeded(attempt).await?;
        tracing::Span::current().record("user_id", tracing::field::display(principal.user_id));
        let issued = match state
            .sessions()
            .start(&principal, &client(address, &headers), &hash)
            .await
        {
            Ok(issued) => issued,
            // deactivated, or the password changed, while it was being checked
            Err(SessionError::AccountChanged) => return Err(invalid_credentials()),
            Err(error) => return Err(ApiError::internal(&error).into()),
        };
        tracing::info!("signed in");
        Ok(Json(Tokens::from(issued)))
    }
    .await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(e) if e.problem().status == StatusCode::TOO_MANY_REQUESTS => "throttled",
        Err(e) if e.problem().code == "two_factor_required" => "second_factor_required",
        Err(e) if e.problem().code == "two_factor_enrolment_required" => "enrolment_required",
        Err(e) if e.problem().status == StatusCode::UNAUTHORIZED => "failure",
        Err(_) => "error",
    };
    metrics::counter!("workledger_logins_total", "outcome" => outcome).increment(1);
    result
}

/// Where a sign-in comes from, as its session keeps it.
fn client(address: Option<std::net::IpAddr>, headers: &HeaderMap) -> Client {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|agent| agent.chars().take(256).collect());
    Client {
        address,
        user_agent,
    }
}

/// A refresh token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    #[schema(value_type = String, format = Password)]
    pub refresh_token: SecretString,
}

impl std::fmt::Debug for Refresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresh(..)")
    }
}

/// Refresh tokens
///
/// Exchanges a refresh token for new tokens (with the user's current roles and groups). Each
/// refresh token works once: presenting a used one again revokes its whole session, so a
/// stolen copy is useless to the thief and the owner must sign in again.
#[utoipa::path(post, path = "/api/v1/auth/refresh", operation_id = "refresh_tokens", tag = "auth",
    request_body = Refresh,
    responses(
        (status = 200, description = "New tokens; the presented refresh token is used up", body = Tokens),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token (`refresh_token_reused` revoked the session)", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "The tenant requires two-factor sign-in and the user has no authenticator (`two_factor_enrolment_required`): the session has ended", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "A malformed body", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "The user's roles or groups just changed and are still being recorded (`identity_behind`): the refresh token was not used; retry after `Retry-After`", body = ApiError, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
#[instrument(skip_all)]
async fn refresh(
    State(state): State<CommandState>,
    Json(body): Json<Refresh>,
) -> Result<Json<Tokens>> {
    let result = state.sessions().refresh(&body.refresh_token).await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(RefreshError::Reused) => "reused",
        Err(RefreshError::Database(_) | RefreshError::Signing(_)) => "error",
        Err(RefreshError::Behind) => "behind",
        Err(_) => "invalid",
    };
    metrics::counter!("workledger_token_refreshes_total", "outcome" => outcome).increment(1);
    match result {
        Ok(issued) => Ok(Json(Tokens::from(issued))),
        Err(RefreshError::Reused) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "refresh_token_reused",
            "this refresh token was already used; its session has been ended, sign in again",
        )
        .into()),
        Err(
            error @ (RefreshError::Invalid | RefreshError::Revoked | RefreshError::UserInactive),
        ) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            error.to_string(),
        )
        .into()),
        Err(RefreshError::TwoFactorRequired) => Err(two_factor_enrolment_required()),
        Err(RefreshError::Behind) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_behind",
            "your roles or groups just changed and are still being recorded; refresh again \
                 in a moment (the refresh token is still valid)",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        .into()),
        Err(RefreshError::Database(error)) => Err(error.into()),
        Err(RefreshError::Signing(error)) => Err(ApiError::internal(&error).into()),
    }
}

/// What to sign out of.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Logout {
    /// The session's refresh token; may be left out when a valid access token is sent.
    #[schema(value_type = Option<String>, format = Password)]
    pub refresh_token: Option<SecretString>,
}

/// Sign out
///
/// Ends the session of the bearer access token and/or of the refresh token. The session's
/// refresh tokens and access tokens stop working at once, on every instance. Signing out of a
/// session that has already ended answers 204 as well.
#[utoipa::path(post, path = "/api/v1/auth/logout", operation_id = "logout", tag = "auth",
    request_body(content = Option<Logout>),
    responses(
        (status = 204, description = "Signed out (also when the refresh token was unknown)"),
        (status = 401, description = "Neither a valid access token nor a refresh token", body = ApiError, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = [])))]
#[instrument(skip_all)]
async fn logout(
    State(state): State<CommandState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode> {
    let logout: Option<Logout> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| {
            ApiError::validation(vec![api_common::FieldError::new(
                "refresh_token",
                "invalid",
                e.to_string(),
            )])
        })?)
    };
    let verified = bearer(&headers).map(|token| state.token_keys().verify(token));
    let already_ended = matches!(verified, Some(Err(TokenError::SessionEnded)));
    let claims = verified.and_then(Result::ok);
    let refresh = logout.and_then(|l| l.refresh_token);
    if claims.is_none() && refresh.is_none() && !already_ended {
        return Err(ApiError::unauthorized(
            "send the access token (`Authorization: Bearer ...`) or the refresh token to sign out",
        )
        .into());
    }
    if let Some(claims) = &claims {
        state.sessions().revoke_own(claims.sid, claims.sub).await?;
    }
    if let Some(token) = &refresh {
        state.sessions().revoke_by_token(token).await?;
    }
    tracing::info!("signed out");
    Ok(StatusCode::NO_CONTENT)
}

/// A session of the caller's: one sign-in and the tokens refreshed from it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub id: Uuid,
    /// When it signed in.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When its tokens were last refreshed (its sign-in, if never).
    pub last_used_at: chrono::DateTime<chrono::Utc>,
    /// The client address it signed in from (`null` if unknown).
    pub client_address: Option<String>,
    /// The `User-Agent` it signed in with (`null` if none).
    pub user_agent: Option<String>,
    /// Whether it is the session of the access token of this request.
    pub current: bool,
}

impl Session {
    fn of(info: SessionInfo, current: Uuid) -> Self {
        Session {
            current: info.session_id == current,
            id: info.session_id,
            created_at: info.created_at,
            last_used_at: info.last_used_at,
            client_address: info.client_address,
            user_agent: info.user_agent,
        }
    }
}

/// The caller's live sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sessions {
    /// Newest first, at most 100.
    pub items: Vec<Session>,
}

/// How many sessions were ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ended {
    pub ended: usize,
}

const UNAUTHORIZED: &str = "No valid access token (code `unauthorized`), an ended session's (`session_ended`: sign in again) or one older than its user's roles or groups (`access_changed`: refresh it)";

/// List one's sessions
///
/// The caller's sessions that can still refresh: where and with what each signed in, and when
/// it was last used, so one not recognised can be ended.
#[utoipa::path(get, path = "/api/v1/auth/sessions", operation_id = "list_sessions", tag = "auth",
    responses(
        (status = 200, description = "The live sessions, newest first", body = Sessions),
        (status = 401, description = UNAUTHORIZED, body = ApiError, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
#[instrument(skip_all)]
async fn list_sessions(State(state): State<CommandState>, auth: Auth) -> Result<Json<Sessions>> {
    let live = state.sessions().live(auth.claims.sub).await?;
    let current = auth.claims.sid;
    Ok(Json(Sessions {
        items: live.into_iter().map(|s| Session::of(s, current)).collect(),
    }))
}

/// End one of one's sessions
///
/// Signs that session out on every instance (its access and refresh tokens stop working). Ending
/// the current one is a logout.
#[utoipa::path(post, path = "/api/v1/auth/sessions/{id}/revoke", operation_id = "end_session", tag = "auth",
    params(("id" = Uuid, Path, description = "The session (`GET /api/v1/auth/sessions`)")),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = UNAUTHORIZED, body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No live session of yours has this id", body = ApiError, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(session_id = %id))]
async fn end_session(
    State(state): State<CommandState>,
    auth: Auth,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode> {
    let id = crate::extract::path_id(&id, "session", "session_not_found")?;
    let ended = state
        .sessions()
        .revoke_of(auth.claims.sub, Some(id), None, "ended by its user")
        .await?;
    if ended.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no live session {id} of yours"),
        )
        .into());
    }
    tracing::info!("session ended by its user");
    Ok(StatusCode::NO_CONTENT)
}

/// End one's other sessions
///
/// Signs out every session of the caller's but the one of this request's access token, on
/// every instance: after a lost phone or a shared computer.
#[utoipa::path(post, path = "/api/v1/auth/sessions/revoke-others", operation_id = "end_other_sessions", tag = "auth",
    responses(
        (status = 200, description = "The other sessions were ended", body = Ended),
        (status = 401, description = UNAUTHORIZED, body = ApiError, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
#[instrument(skip_all)]
async fn end_other_sessions(State(state): State<CommandState>, auth: Auth) -> Result<Json<Ended>> {
    let ended = state
        .sessions()
        .revoke_of(
            auth.claims.sub,
            None,
            Some(auth.claims.sid),
            "ended by its user",
        )
        .await?;
    tracing::info!(sessions = ended.len(), "other sessions ended by their user");
    Ok(Json(Ended { ended: ended.len() }))
}

/// Credentials, to add an authenticator before signing in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enrol {
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// `default` when left out.
    pub tenant: Option<String>,
}

impl std::fmt::Debug for Enrol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrol")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Credentials and the new authenticator's first code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmEnrolment {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    pub tenant: Option<String>,
    /// Six digits.
    #[schema(value_type = String, format = Password, example = "492039")]
    pub one_time_code: SecretString,
}

impl std::fmt::Debug for ConfirmEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfirmEnrolment")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Checks `email` and `password` in `tenant` (the default when `None`) as a sign-in does, for
/// a request that acts as that user without a token: the user and the context they act in.
async fn sign_in_for(
    state: &CommandState,
    address: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    tenant: Option<String>,
    email: &str,
    password: &SecretString,
) -> Result<(Uuid, RequestContext)> {
    let tenant = tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned());
    tracing::Span::current().record("tenant", tenant.as_str());
    let Checked {
        principal, attempt, ..
    } = check_password(state, address, &tenant, email, password).await?;
    // not a sign-in: the attempt's own count is given back and earlier failures stay (wrong
    // one-time codes among them), as for a sign-in that still lacks its code
    state.throttle().withdrawn(attempt).await?;
    let user_id = principal.user_id;
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
    let ctx = RequestContext {
        caller: Caller::user(
            principal.tenant_id,
            user_id,
            principal.roles,
            principal.groups,
        ),
        at: chrono::Utc::now(),
        correlation_id: Uuid::now_v7(),
        request_id: request_id_of(headers),
    };
    Ok((user_id, ctx))
}

/// Add an authenticator before signing in
///
/// For an account of a tenant that requires two-factor sign-in and has none yet (sign-in
/// answers 403 `two_factor_enrolment_required`), or anyone who prefers to: with the email
/// address and password, checked and throttled as a sign-in, returns a new authenticator key.
/// `POST /api/v1/auth/two-factor/confirm` with its first code turns it on; then sign in with
/// a code.
#[utoipa::path(post, path = "/api/v1/auth/two-factor", operation_id = "enrol_two_factor", tag = "auth",
    request_body = Enrol,
    responses(
        (status = 200, description = "The new key; confirm it with a code", body = TwoFactorEnrolment),
        (status = 422, description = "A malformed body", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "Wrong email, password or tenant (`invalid_credentials`)", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "The account has two-factor sign-in already", body = ApiError, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts; see `Retry-After`", body = ApiError, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
#[instrument(skip_all, fields(tenant, user_id))]
async fn enrol_two_factor(
    State(state): State<CommandState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Json(body): Json<Enrol>,
) -> Result<Json<TwoFactorEnrolment>> {
    let result = async {
        let (user_id, ctx) = sign_in_for(
            &state,
            address,
            &headers,
            body.tenant,
            &body.email,
            &body.password,
        )
        .await?;
        let enrolment = state
            .identity()
            .begin_two_factor_signed_in(&ctx, user_id)
            .await?;
        Ok(Json(TwoFactorEnrolment::from(enrolment)))
    }
    .await;
    observe("enrol_two_factor", &result);
    result
}

/// Turn on the authenticator added before signing in
///
/// Confirms the key of `POST /api/v1/auth/two-factor` with its current code, with the email
/// address and password again. From now on signing in takes a one-time code too. Answers the
/// first recovery codes, shown only here.
#[utoipa::path(post, path = "/api/v1/auth/two-factor/confirm", operation_id = "confirm_two_factor_enrolment", tag = "auth",
    request_body = ConfirmEnrolment,
    responses(
        (status = 200, description = "Two-factor sign-in is on", body = WithRecoveryCodes),
        (status = 422, description = "A malformed body", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "Wrong email, password or tenant (`invalid_credentials`)", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "No enrolment was started (`two_factor_not_started`), or the account has two-factor sign-in already", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "A wrong or expired code (`invalid_one_time_code`)", body = ApiError, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts; see `Retry-After`", body = ApiError, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
#[instrument(skip_all, fields(tenant, user_id))]
async fn confirm_two_factor(
    State(state): State<CommandState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Json(body): Json<ConfirmEnrolment>,
) -> Result<Accepted<WithRecoveryCodes>> {
    let result = async {
        let (user_id, ctx) = sign_in_for(
            &state,
            address,
            &headers,
            body.tenant,
            &body.email,
            &body.password,
        )
        .await?;
        let (outcome, codes) = state
            .identity()
            .confirm_two_factor(&ctx, user_id, &body.one_time_code, None)
            .await?;
        with_codes(&state, outcome, codes).await
    }
    .await;
    observe("confirm_two_factor_enrolment", &result);
    result
}
