//! Sessions: access tokens (short-lived JWTs) and refresh tokens (opaque, single use, rotated).
//!
//! A session is a family of refresh tokens. Refreshing uses up the presented token and issues
//! the next one of the same family; presenting a used token again means it was copied, so the
//! whole family is revoked (the thief's and the owner's tokens alike) and both must sign in
//! again. Logout revokes the family. Only SHA-256 hashes of refresh tokens are stored.

use std::time::Duration;

use api_common::auth::{AUDIENCE, ISSUER};
use api_common::{Claims, TokenKeys};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use event_schemas::Role;
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

const REFRESH_PREFIX: &str = "wlr_";

/// Who a session is for: the user's identity as of now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub tenant_id: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
    /// The version of the user at which the roles and groups last changed.
    pub access_version: i64,
}

/// An access token and the refresh token that renews it.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: SecretString,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Seconds until the refresh token expires (if unused).
    pub refresh_expires_in: u64,
    pub session_id: Uuid,
    pub user_id: Uuid,
}

/// Why a refresh token was refused.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("the refresh token is unknown or expired")]
    Invalid,
    #[error("the refresh token was already used; the session has been revoked")]
    Reused,
    #[error("the session has ended")]
    Revoked,
    #[error("the user is deactivated")]
    UserInactive,
    /// The tenant requires two-factor sign-in and the user has no authenticator: the session
    /// has ended; they enrol and sign in again.
    #[error("the tenant requires two-factor sign-in and the user has no authenticator")]
    TwoFactorRequired,
    /// The user's roles or groups changed and the identity read model has not caught up with
    /// the change yet: the refresh token was not used; try again in a moment.
    #[error("the user's latest change of roles or groups is still being recorded")]
    Behind,
    #[error("session storage failed")]
    Database(#[from] sqlx::Error),
    #[error("could not sign the access token")]
    Signing(#[from] api_common::auth::TokenError),
}

/// Why a session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session storage failed")]
    Database(#[from] sqlx::Error),
    #[error("could not sign the access token")]
    Signing(#[from] api_common::auth::TokenError),
    /// Between the password check and the session, the user was deactivated or their password
    /// changed: the sign-in is refused as if the password were wrong.
    #[error("the account changed during sign-in")]
    AccountChanged,
}

/// Issues, rotates and revokes tokens.
#[derive(Debug, Clone)]
pub struct Sessions {
    pool: PgPool,
    keys: TokenKeys,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

/// The stored form of a refresh token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The most sessions [`Sessions::live`] lists.
pub const LISTED_SESSIONS: i64 = 100;

/// Where a sign-in comes from, as the session keeps it to show its user.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub address: Option<std::net::IpAddr>,
    /// The `User-Agent`, cut to 256 characters.
    pub user_agent: Option<String>,
}

/// A live session, as its user sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionInfo {
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// When its tokens were last refreshed (its start, if never).
    pub last_used_at: DateTime<Utc>,
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
}

/// How long a refresh waits for the identity read model to reach a change of access.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

fn after(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

impl Sessions {
    /// Sessions on `pool`, signing with `keys`; tokens live `access_ttl` / `refresh_ttl`.
    pub fn new(pool: PgPool, keys: TokenKeys, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self {
            pool,
            keys,
            access_ttl,
            refresh_ttl,
        }
    }

    /// The keys access tokens are signed with.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// Starts a session for `principal` from `client`, after a sign-in that checked the
    /// password against `password_hash`.
    ///
    /// The account is checked again under a lock on its rows: still active, and still with
    /// that password hash. A password change stores the new hash and ends the user's sessions
    /// under the same lock (`identity::store::replace_password`), and the identity projector
    /// ends the sessions opened on an earlier version of the user when it applies a
    /// deactivation (`user_version`, migration 0022): so a sign-in that checked the old
    /// password, or of an account about to be deactivated, either opens its session before
    /// the change, which then ends it, or is refused with [`SessionError::AccountChanged`].
    pub async fn start(
        &self,
        principal: &Principal,
        client: &Client,
        password_hash: &str,
    ) -> Result<IssuedTokens, SessionError> {
        let session_id = Uuid::now_v7();
        let refresh = new_refresh_token();
        let mut tx = self.pool.begin().await?;
        let user_version: i64 = sqlx::query_scalar(
            "select u.version from identity_users u join identity_credentials c using (user_id) \
             where u.user_id = $1 and u.status = 'active' and c.password_hash = $2 \
             for share",
        )
        .bind(principal.user_id)
        .bind(password_hash)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(SessionError::AccountChanged)?;
        sqlx::query(
            "insert into auth_sessions \
               (session_id, user_id, tenant_id, client_address, user_agent, user_version) \
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session_id)
        .bind(principal.user_id)
        .bind(&principal.tenant_id)
        .bind(client.address.map(|a| a.to_string()))
        .bind(client.user_agent.as_deref())
        .bind(user_version)
        .execute(&mut *tx)
        .await?;
        self.store_refresh(&mut tx, session_id, &refresh).await?;
        tx.commit().await?;
        Ok(self.tokens(principal, session_id, refresh)?)
    }

    /// Uses up `token` and issues the next tokens of its session, with the user's current
    /// roles and groups.
    ///
    /// When this process knows of a change of the user's roles or groups that the identity
    /// read model has not reached (its inline projection timed out), the tokens would be
    /// refused at once: the read model is brought up to the log's head first (for at most
    /// [`CATCH_UP_WAIT`]), and if it still lags the refresh is refused with
    /// [`RefreshError::Behind`], its token unused.
    pub async fn refresh(&self, token: &SecretString) -> Result<IssuedTokens, RefreshError> {
        match self.refresh_once(token).await {
            Err(RefreshError::Behind) => {
                let head = event_store::GlobalLog::head(&self.pool)
                    .await
                    .map_err(|event_store::LogError::Read(error)| RefreshError::Database(error))?;
                if let Err(error) =
                    crate::identity::projector::catch_up_to(&self.pool, head, CATCH_UP_WAIT).await
                {
                    tracing::warn!(error = %api_common::problem::chain(&error),
                        "could not bring the identity read model up for a refresh");
                }
                self.refresh_once(token).await
            }
            other => other,
        }
    }

    async fn refresh_once(&self, token: &SecretString) -> Result<IssuedTokens, RefreshError> {
        let hash = token_hash(token.expose_secret());
        let mut tx = self.pool.begin().await?;
        // both rows locked: concurrent refreshes of one session take turns
        let row = sqlx::query(
            "select t.session_id, t.expires_at, t.used_at, s.user_id, s.tenant_id, s.revoked_at \
             from auth_refresh_tokens t join auth_sessions s using (session_id) \
             where t.token_hash = $1 for update of t, s",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(RefreshError::Invalid);
        };
        let session_id: Uuid = row.try_get("session_id")?;
        if row
            .try_get::<Option<DateTime<Utc>>, _>("revoked_at")?
            .is_some()
        {
            return Err(RefreshError::Revoked);
        }
        if row
            .try_get::<Option<DateTime<Utc>>, _>("used_at")?
            .is_some()
        {
            revoke_in(&mut tx, session_id, "refresh token reused").await?;
            tx.commit().await?;
            self.keys.session_ended(session_id);
            metrics::counter!("workledger_refresh_token_reuse_total").increment(1);
            tracing::warn!(session_id = %session_id, "a used refresh token was presented again; session revoked");
            return Err(RefreshError::Reused);
        }
        if row.try_get::<DateTime<Utc>, _>("expires_at")? <= Utc::now() {
            return Err(RefreshError::Invalid);
        }
        let user_id: Uuid = row.try_get("user_id")?;
        let Some(principal) = current_principal(&mut tx, user_id).await? else {
            revoke_in(&mut tx, session_id, "user deactivated").await?;
            tx.commit().await?;
            self.keys.session_ended(session_id);
            return Err(RefreshError::UserInactive);
        };
        if crate::identity::store::needs_second_factor(&mut *tx, user_id).await? {
            revoke_in(&mut tx, session_id, "two-factor sign-in required").await?;
            tx.commit().await?;
            self.keys.session_ended(session_id);
            return Err(RefreshError::TwoFactorRequired);
        }
        if self.keys.access_outdated(user_id, principal.access_version) {
            // the transaction is rolled back: the token stays unused
            return Err(RefreshError::Behind);
        }
        sqlx::query("update auth_refresh_tokens set used_at = now() where token_hash = $1")
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query("update auth_sessions set last_used_at = now() where session_id = $1")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        let next = new_refresh_token();
        self.store_refresh(&mut tx, session_id, &next).await?;
        tx.commit().await?;
        Ok(self.tokens(&principal, session_id, next)?)
    }

    /// Ends the session `token` belongs to; `false` when the token is unknown.
    pub async fn revoke_by_token(&self, token: &SecretString) -> Result<bool, sqlx::Error> {
        let hash = token_hash(token.expose_secret());
        let session: Option<Uuid> =
            sqlx::query_scalar("select session_id from auth_refresh_tokens where token_hash = $1")
                .bind(&hash)
                .fetch_optional(&self.pool)
                .await?;
        match session {
            Some(session_id) => {
                self.revoke(session_id, "logout").await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Ends session `session_id` of `user_id` (a no-op when it already ended or belongs to
    /// someone else).
    pub async fn revoke_own(&self, session_id: Uuid, user_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query(
            "update auth_sessions set revoked_at = now(), revoked_reason = 'logout' \
             where session_id = $1 and user_id = $2 and revoked_at is null",
        )
        .bind(session_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        self.keys.session_ended(session_id);
        Ok(())
    }

    /// The live sessions of `user_id` (not ended, with a refresh token still usable), newest
    /// first, at most [`LISTED_SESSIONS`].
    pub async fn live(&self, user_id: Uuid) -> Result<Vec<SessionInfo>, sqlx::Error> {
        sqlx::query_as(
            "select s.session_id, s.created_at, \
                    coalesce(s.last_used_at, s.created_at) as last_used_at, \
                    s.client_address, s.user_agent \
             from auth_sessions s \
             where s.user_id = $1 and s.revoked_at is null \
               and exists (select from auth_refresh_tokens t where t.session_id = s.session_id \
                           and t.used_at is null and t.expires_at > now()) \
             order by s.created_at desc limit $2",
        )
        .bind(user_id)
        .bind(LISTED_SESSIONS)
        .fetch_all(&self.pool)
        .await
    }

    /// Ends the sessions of `user_id` that `which` names (`except`: all but that one; `only`:
    /// just that one), for `reason`; the ids of those ended.
    pub async fn revoke_of(
        &self,
        user_id: Uuid,
        only: Option<Uuid>,
        except: Option<Uuid>,
        reason: &str,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        let ended: Vec<Uuid> = sqlx::query_scalar(
            "update auth_sessions set revoked_at = now(), revoked_reason = $4 \
             where user_id = $1 and revoked_at is null \
               and ($2::uuid is null or session_id = $2) \
               and ($3::uuid is null or session_id <> $3) \
             returning session_id",
        )
        .bind(user_id)
        .bind(only)
        .bind(except)
        .bind(reason)
        .fetch_all(&self.pool)
        .await?;
        for session_id in &ended {
            self.keys.session_ended(*session_id);
        }
        Ok(ended)
    }

    /// Refuses at once, in this process, the tokens of `user_id`'s sessions that ended in the
    /// last minutes: those the identity projector has just ended for a command this process
    /// answers (signed out everywhere, deactivated, password changed). Ending them in the
    /// database announces them to every process, this one too, but the announcement may arrive
    /// after the answer.
    pub async fn refuse_recently_ended(&self, user_id: Uuid) -> Result<(), sqlx::Error> {
        let ended: Vec<Uuid> = sqlx::query_scalar(
            "select session_id from auth_sessions \
             where revoked_at > now() - interval '5 minutes' and user_id = $1",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        for session_id in ended {
            self.keys.session_ended(session_id);
        }
        Ok(())
    }

    /// Ends session `session_id`.
    pub async fn revoke(&self, session_id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        revoke_in(&mut conn, session_id, reason).await?;
        self.keys.session_ended(session_id);
        Ok(())
    }

    async fn store_refresh(
        &self,
        conn: &mut PgConnection,
        session_id: Uuid,
        token: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "insert into auth_refresh_tokens (token_hash, session_id, expires_at) values ($1, $2, $3)",
        )
        .bind(token_hash(token))
        .bind(session_id)
        .bind(after(self.refresh_ttl))
        .execute(conn)
        .await?;
        Ok(())
    }

    fn tokens(
        &self,
        principal: &Principal,
        session_id: Uuid,
        refresh: String,
    ) -> Result<IssuedTokens, api_common::auth::TokenError> {
        let now = Utc::now().timestamp();
        let ttl = self.access_ttl.as_secs();
        let claims = Claims {
            sub: principal.user_id,
            tid: principal.tenant_id.clone(),
            roles: principal.roles.clone(),
            groups: principal.groups.clone(),
            sid: session_id,
            access_version: principal.access_version,
            iat: now,
            exp: now + ttl as i64,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        Ok(IssuedTokens {
            access_token: self.keys.issue(&claims)?,
            refresh_token: SecretString::from(refresh),
            expires_in: ttl,
            refresh_expires_in: self.refresh_ttl.as_secs(),
            session_id,
            user_id: principal.user_id,
        })
    }
}

async fn revoke_in(
    conn: &mut PgConnection,
    session_id: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update auth_sessions set revoked_at = now(), revoked_reason = $2 \
         where session_id = $1 and revoked_at is null",
    )
    .bind(session_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// The active user `user_id` as the identity read model has it now.
pub async fn current_principal(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<Principal>, sqlx::Error> {
    let row = sqlx::query(
        "select tenant_id, roles, groups, access_version from identity_users \
         where user_id = $1 and status = 'active'",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(Principal {
            user_id,
            tenant_id: row.try_get("tenant_id")?,
            roles: parse_roles(row.try_get("roles")?),
            groups: row.try_get("groups")?,
            access_version: row.try_get("access_version")?,
        })
    })
    .transpose()
}

/// Roles as stored (names); an unknown name (from a newer version) grants nothing.
pub fn parse_roles(names: Vec<String>) -> Vec<Role> {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}
