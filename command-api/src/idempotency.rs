//! `Idempotency-Key`: a retried command gets the first response instead of running again.
//!
//! Keys are scoped to the caller (tenant and user) and kept for a day (configurable). The key
//! row is inserted *before* the command runs, marked in progress with a lease, so a duplicate
//! that arrives while the first is still running is refused (409
//! `idempotency_key_in_progress`) rather than executed twice; a crashed request's lease runs
//! out and a retry takes over. The request is fingerprinted (HMAC-SHA256 of method, path and
//! body, keyed from the token signing secret: see [`Fingerprints`]): the same key with another
//! request is a 422 `idempotency_key_reused`.
//!
//! Once a request holds its key, the command and the storing of its answer run in a task of
//! their own: a request given up by its client (or by the request timeout) still stores the
//! answer of a command that took effect, so the retry replays it instead of running it again
//! (a retry while it runs is told the key is in progress). That task is bounded to three
//! quarters of the lease, and shutdown waits for it within its grace.
//!
//! Responses that decided something are stored and replayed with `Idempotent-Replayed: true`:
//! successes and client errors. Answers that may change on retry (409 conflicts, 429, and
//! every 5xx) release the key instead, so a retry runs the command.

use std::collections::BTreeMap;

use api_common::ApiError;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tracing::Instrument;
use uuid::Uuid;

use crate::extract::bearer;
use crate::response::CONSISTENCY_TOKEN;
use crate::state::CommandState;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a replayed response.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

const MAX_KEY_CHARS: usize = 255;

/// The response headers kept with a stored response.
static KEPT_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::LOCATION,
    CONSISTENCY_TOKEN,
];

struct Scope {
    tenant_id: String,
    user_id: Uuid,
    key: String,
}

enum Begin {
    /// This request holds the key: run the command.
    Proceed,
    Replay(Response),
    Reused,
    InProgress,
}

/// The middleware (on every command route except sign-in and the two-factor routes that
/// answer secrets).
pub async fn middleware(
    State(state): State<CommandState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(raw_key) = request.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return next.run(request).await;
    }
    // their answers carry keys and recovery codes, which are not to be kept in the database;
    // sending one of these again is safe (it issues a new key or set of codes, or is refused)
    if crate::routes::two_factor::answers_secrets(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let key = match valid_key(&raw_key) {
        Ok(key) => key,
        Err(problem) => return problem.into_response(),
    };
    // an unauthenticated request goes on to be refused by its handler
    let Some(claims) = bearer(request.headers()).and_then(|t| state.token_keys().verify(t).ok())
    else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let upload = crate::routes::documents::is_upload(&parts.method, parts.uri.path());
    let limit = if upload {
        state.settings().document_limit
    } else {
        state.settings().body_limit
    };
    let bytes = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than the server accepts",
            )
            .into_response();
        }
    };
    let scope = Scope {
        tenant_id: claims.tid,
        user_id: claims.sub,
        key,
    };
    // the query too: an upload's file name is in it (a request without one has the
    // fingerprint it had before the query counted); and an upload's media type, which is
    // its `Content-Type` (a JSON command's is always JSON, and is left out)
    let mut target = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |target| target.as_str())
        .to_owned();
    if upload {
        target.push('\n');
        target.push_str(
            parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        );
    }
    let fingerprint = Fingerprint {
        keyed: state.fingerprints().of(&parts.method, &target, &bytes),
        method: &parts.method,
        path: &target,
        body: &bytes,
    };
    let pool = state.pool();
    match begin(&state, &scope, &fingerprint).await {
        Ok(Begin::Proceed) => {}
        Ok(Begin::Replay(response)) => {
            count("replayed");
            return response;
        }
        Ok(Begin::Reused) => {
            count("reused");
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request; use a new key per request",
            )
            .into_response();
        }
        Ok(Begin::InProgress) => {
            count("in_progress");
            return ApiError::conflict(
                "idempotency_key_in_progress",
                "a request with this Idempotency-Key is still running; retry shortly",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            .into_response();
        }
        Err(error) => return ApiError::from(error).into_response(),
    }
    // From here the command and the storing of its answer run to their end even when this
    // request is given up (its client went away, or it timed out): a command that took effect
    // with no answer stored would leave its key in progress, and the retry after the lease
    // would run it a second time. A retry meanwhile is told the key is in progress, and then
    // gets the stored answer.
    //
    // Bounded well within the key's lease: a command still running when a retry may take the
    // key over would run beside the retry and then overwrite or release the retry's key.
    let pool = pool.clone();
    let bound = state.settings().idempotency_lease * 3 / 4;
    let run = state.detached().spawn(
        async move {
            let request = Request::from_parts(parts, Body::from(bytes));
            match tokio::time::timeout(bound, next.run(request)).await {
                Ok(response) => finish(&pool, &scope, response).await,
                // it may have taken effect: the key stays in progress until its lease ends
                Err(_) => {
                    tracing::error!(
                        bound = ?bound,
                        "a command with an Idempotency-Key outlived three quarters of the key's lease and was stopped"
                    );
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "request_timeout",
                        "the command took too long and was stopped; it may have taken effect: \
                         retry with the same Idempotency-Key once the key's lease has ended",
                    )
                    .into_response()
                }
            }
        }
        .in_current_span(),
    );
    match run.await {
        Ok(response) => response,
        // the handler's panic goes on to the layer that answers panics, as without a key
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => ApiError::unavailable(&error).into_response(),
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("workledger_idempotency_keys_total", "outcome" => outcome).increment(1);
}

fn valid_key(value: &HeaderValue) -> Result<String, Box<ApiError>> {
    let invalid = || {
        Box::new(ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "an Idempotency-Key is 1 to {MAX_KEY_CHARS} visible ASCII characters (a UUID is a good choice)"
            ),
        ))
    };
    let key = value.to_str().map_err(|_| invalid())?.trim();
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(key.to_owned())
}

/// What a request is recognised by: HMAC-SHA256 of its method, path and body under a key
/// derived from the token signing secret.
///
/// A body can hold a password (a new user's, a password change): a plain hash of it, kept in
/// the database for a day, could be checked against guesses at the speed of SHA-256 by anyone
/// who can read the table, around the argon2id that protects the password itself. Without the
/// secret (`WORKLEDGER_JWT_SECRET`, outside the database) a stored fingerprint says nothing.
#[derive(Clone)]
pub struct Fingerprints {
    key: [u8; 32],
}

impl std::fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprints(..)")
    }
}

/// Separates this key from the secret's other use (signing tokens, whose HMAC input is a JWT
/// and never this label).
const FINGERPRINT_KEY_LABEL: &[u8] = b"workledger idempotency fingerprint key v1";

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of every length")
}

impl Fingerprints {
    /// The fingerprint key derived from the token signing `secret`.
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut mac = hmac(secret);
        mac.update(FINGERPRINT_KEY_LABEL);
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// The fingerprint of one request.
    pub fn of(&self, method: &Method, path: &str, body: &[u8]) -> Vec<u8> {
        let mut mac = hmac(&self.key);
        for part in request_parts(method, path, body) {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
}

/// What a fingerprint covers: `METHOD \n PATH?QUERY \n BODY` (the body byte for byte; an
/// upload's `Content-Type` follows its path).
fn request_parts<'a>(method: &'a Method, path: &'a str, body: &'a [u8]) -> [&'a [u8]; 5] {
    [
        method.as_str().as_bytes(),
        b"\n",
        path.as_bytes(),
        b"\n",
        body,
    ]
}

/// The fingerprint kept before keyed ones (plain SHA-256), for keys stored by an earlier
/// version and still unexpired: their retries are still recognised.
fn unkeyed_fingerprint(method: &Method, path: &str, body: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    for part in request_parts(method, path, body) {
        hash.update(part);
    }
    hash.finalize().to_vec()
}

/// A request as the key's stored fingerprint is compared with.
struct Fingerprint<'a> {
    keyed: Vec<u8>,
    method: &'a Method,
    path: &'a str,
    body: &'a [u8],
}

impl Fingerprint<'_> {
    fn matches(&self, stored: &[u8], keyed: bool) -> bool {
        if keyed {
            stored == self.keyed.as_slice()
        } else {
            stored == unkeyed_fingerprint(self.method, self.path, self.body).as_slice()
        }
    }
}

async fn begin(
    state: &CommandState,
    scope: &Scope,
    fingerprint: &Fingerprint<'_>,
) -> Result<Begin, sqlx::Error> {
    let pool = state.pool();
    let settings = state.settings();
    let lease = settings.idempotency_lease.as_secs_f64();
    let ttl = settings.idempotency_ttl.as_secs_f64();
    for _ in 0..3 {
        let inserted = sqlx::query(
            "insert into idempotency_keys \
               (tenant_id, user_id, key, request_hash, locked_until, expires_at) \
             values ($1, $2, $3, $4, now() + $5 * interval '1 second', now() + $6 * interval '1 second') \
             on conflict (tenant_id, user_id, key) do nothing",
        )
        .bind(&scope.tenant_id)
        .bind(scope.user_id)
        .bind(&scope.key)
        .bind(&fingerprint.keyed)
        .bind(lease)
        .bind(ttl)
        .execute(pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Begin::Proceed);
        }
        let row = sqlx::query(
            "select request_hash, request_hash_keyed, response_status, response_headers, response_body, \
                    coalesce(locked_until > now(), false) as leased, expires_at <= now() as expired \
             from idempotency_keys where tenant_id = $1 and user_id = $2 and key = $3",
        )
        .bind(&scope.tenant_id)
        .bind(scope.user_id)
        .bind(&scope.key)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            continue; // released meanwhile: try to take it
        };
        if row.try_get::<bool, _>("expired")? {
            sqlx::query(
                "delete from idempotency_keys \
                 where tenant_id = $1 and user_id = $2 and key = $3 and expires_at <= now()",
            )
            .bind(&scope.tenant_id)
            .bind(scope.user_id)
            .bind(&scope.key)
            .execute(pool)
            .await?;
            continue;
        }
        let stored: Vec<u8> = row.try_get("request_hash")?;
        if !fingerprint.matches(&stored, row.try_get("request_hash_keyed")?) {
            return Ok(Begin::Reused);
        }
        if let Some(status) = row.try_get::<Option<i16>, _>("response_status")? {
            let headers: Option<serde_json::Value> = row.try_get("response_headers")?;
            let body: Option<Vec<u8>> = row.try_get("response_body")?;
            return Ok(Begin::Replay(replay(status, headers, body)));
        }
        if row.try_get::<bool, _>("leased")? {
            return Ok(Begin::InProgress);
        }
        // the first request's lease ran out (it crashed): take over
        let taken = sqlx::query(
            "update idempotency_keys set locked_until = now() + $4 * interval '1 second' \
             where tenant_id = $1 and user_id = $2 and key = $3 \
               and response_status is null and locked_until <= now()",
        )
        .bind(&scope.tenant_id)
        .bind(scope.user_id)
        .bind(&scope.key)
        .bind(lease)
        .execute(pool)
        .await?;
        return Ok(if taken.rows_affected() == 1 {
            Begin::Proceed
        } else {
            Begin::InProgress
        });
    }
    Ok(Begin::InProgress)
}

/// Whether a response is final for its request (stored), or may change on retry (released).
fn keep(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error()
            && status != StatusCode::CONFLICT
            && status != StatusCode::TOO_MANY_REQUESTS
            && status != StatusCode::UNAUTHORIZED)
}

async fn finish(pool: &PgPool, scope: &Scope, response: Response) -> Response {
    let status = response.status();
    if !keep(status) {
        if let Err(error) = release(pool, scope).await {
            tracing::warn!(error = %error, "could not release an idempotency key; it frees itself when its lease ends");
        }
        count("released");
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(error = %error, "could not read a command's response to store it");
            let _ = release(pool, scope).await;
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the request failed on our side; it has been logged with its request id",
            )
            .into_response();
        }
    };
    let headers: BTreeMap<&str, &str> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(name)?.to_str().ok()?;
            Some((name.as_str(), value))
        })
        .collect();
    let stored = sqlx::query(
        "update idempotency_keys set response_status = $4, response_headers = $5, \
         response_body = $6, locked_until = null \
         where tenant_id = $1 and user_id = $2 and key = $3",
    )
    .bind(&scope.tenant_id)
    .bind(scope.user_id)
    .bind(&scope.key)
    .bind(status.as_u16() as i16)
    .bind(serde_json::to_value(&headers).unwrap_or_default())
    .bind(bytes.as_ref())
    .execute(pool)
    .await;
    match stored {
        Ok(_) => count("stored"),
        // the command took effect; a retry will find the key in progress until its lease ends
        Err(error) => {
            tracing::error!(error = %error, "could not store a response for its idempotency key")
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

async fn release(pool: &PgPool, scope: &Scope) -> Result<(), sqlx::Error> {
    sqlx::query(
        "delete from idempotency_keys where tenant_id = $1 and user_id = $2 and key = $3 \
         and response_status is null",
    )
    .bind(&scope.tenant_id)
    .bind(scope.user_id)
    .bind(&scope.key)
    .execute(pool)
    .await?;
    Ok(())
}

fn replay(status: i16, headers: Option<serde_json::Value>, body: Option<Vec<u8>>) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, body.unwrap_or_default()).into_response();
    let map = response.headers_mut();
    if let Some(serde_json::Value::Object(stored)) = headers {
        for (name, value) in stored {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                map.insert(name, value);
            }
        }
    }
    map.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Deletes expired keys; the number deleted.
pub async fn sweep(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("delete from idempotency_keys where expires_at <= now()")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
