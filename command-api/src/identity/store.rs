//! Queries on the identity tables that are not the projector's: sign-in lookups, email
//! claims, credentials, membership checks.

use sqlx::{PgConnection, PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::auth::sessions::{Principal, parse_roles};

/// A claim older than this whose user never came to exist may be taken over.
const STALE_CLAIM_SECS: f64 = 300.0;

/// What sign-in needs to know about an account.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub principal: Principal,
    pub active: bool,
    pub password_hash: Option<String>,
}

/// The account with `email_key` in `tenant_id`, if any, with its roles and groups (one query,
/// so a known account costs the same time as an unknown one apart from the hash).
pub async fn find_login<'c>(
    executor: impl PgExecutor<'c>,
    tenant_id: &str,
    email_key: &str,
) -> Result<Option<LoginRecord>, sqlx::Error> {
    let row = sqlx::query(
        "select u.user_id, u.roles, u.groups, u.access_version, u.status = 'active' as active, c.password_hash \
         from identity_users u left join identity_credentials c using (user_id) \
         where u.tenant_id = $1 and u.email_key = $2 \
         order by u.created_at limit 1",
    )
    .bind(tenant_id)
    .bind(email_key)
    .fetch_optional(executor)
    .await?;
    row.map(|row| {
        Ok(LoginRecord {
            principal: Principal {
                user_id: row.try_get("user_id")?,
                tenant_id: tenant_id.to_owned(),
                roles: parse_roles(row.try_get("roles")?),
                groups: row.try_get("groups")?,
                access_version: row.try_get("access_version")?,
            },
            active: row.try_get("active")?,
            password_hash: row.try_get("password_hash")?,
        })
    })
    .transpose()
}

/// The stored password hash of `user_id`.
pub async fn password_hash<'c>(
    executor: impl PgExecutor<'c>,
    user_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select password_hash from identity_credentials where user_id = $1")
        .bind(user_id)
        .fetch_optional(executor)
        .await
}

/// The email key `user_id` holds in `tenant_id` (from the claims, not the read model).
pub async fn email_key_of<'c>(
    executor: impl PgExecutor<'c>,
    tenant_id: &str,
    user_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select email_key from identity_email_claims where tenant_id = $1 and user_id = $2",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(executor)
    .await
}

/// Stores (or replaces) the password hash of `user_id`.
pub async fn set_password<'c>(
    executor: impl PgExecutor<'c>,
    user_id: Uuid,
    hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into identity_credentials (user_id, password_hash) values ($1, $2) \
         on conflict (user_id) do update set password_hash = excluded.password_hash, \
         updated_at = now()",
    )
    .bind(user_id)
    .bind(hash)
    .execute(executor)
    .await?;
    Ok(())
}

/// Replaces the password hash of an existing user and ends their sessions, unless they were
/// erased meanwhile: `false` then, and nothing is stored. The user's row is locked as the
/// identity projector's erasure locks it, so a hash stored just before an erasure is deleted
/// by it and none is stored just after.
///
/// The sessions are ended here as well as by the projector (which ends those opened before
/// the change's event): a sign-in that checked the old password just before the new one was
/// stored opens its session under a lock on the same row (`Sessions::start`), so it is either
/// open by now, and ended here, or refused.
pub async fn replace_password(
    pool: &PgPool,
    user_id: Uuid,
    hash: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let erased: Option<bool> = sqlx::query_scalar(
        "select erased_at is not null from identity_users where user_id = $1 for share",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    if erased == Some(true) {
        return Ok(false);
    }
    set_password(&mut *tx, user_id, hash).await?;
    let ended = sqlx::query(
        "update auth_sessions set revoked_at = now(), revoked_reason = 'password changed' \
         where user_id = $1 and revoked_at is null",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if ended.rows_affected() > 0 {
        tracing::info!(user_id = %user_id, sessions = ended.rows_affected(),
            "ended the sessions of a changed password");
    }
    Ok(true)
}

/// Claims `email_key` in `tenant_id` for `user_id`; `false` when another user holds it.
///
/// A claim left by a crash (its user never came to exist, and it is older than a few minutes)
/// is taken over.
pub async fn claim_email(
    conn: &mut PgConnection,
    tenant_id: &str,
    email_key: &str,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into identity_email_claims (tenant_id, email_key, user_id) values ($1, $2, $3) \
         on conflict (tenant_id, email_key) do nothing",
    )
    .bind(tenant_id)
    .bind(email_key)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(true);
    }
    let taken_over = sqlx::query(
        "update identity_email_claims c set user_id = $3, claimed_at = now() \
         where c.tenant_id = $1 and c.email_key = $2 \
           and c.claimed_at < now() - $4 * interval '1 second' \
           and not exists (select 1 from events e \
                           where e.aggregate_type = 'user' and e.aggregate_id = c.user_id::text)",
    )
    .bind(tenant_id)
    .bind(email_key)
    .bind(user_id)
    .bind(STALE_CLAIM_SECS)
    .execute(&mut *conn)
    .await?;
    Ok(taken_over.rows_affected() == 1)
}

/// Gives up the claim of `user_id` (its creation failed) and its credentials.
pub async fn release_user(
    conn: &mut PgConnection,
    tenant_id: &str,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from identity_email_claims where tenant_id = $1 and user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from identity_credentials where user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Of `user_ids`, those that are not active users of `tenant_id` (`Unknown`) and those that
/// are but may not work tasks and approvals, being neither members nor admins
/// (`CannotWork`).
pub async fn users_who_cannot_work<'c>(
    executor: impl PgExecutor<'c>,
    tenant_id: &str,
    user_ids: &[Uuid],
) -> Result<Vec<(Uuid, NotAWorker)>, sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<(Uuid, bool)> = sqlx::query_as(
        "select user_id, roles && array['member', 'admin'] from identity_users \
         where tenant_id = $1 and user_id = any($2) and status = 'active'",
    )
    .bind(tenant_id)
    .bind(user_ids)
    .fetch_all(executor)
    .await?;
    Ok(user_ids
        .iter()
        .filter_map(|id| match found.iter().find(|(user, _)| user == id) {
            None => Some((*id, NotAWorker::Unknown)),
            Some((_, false)) => Some((*id, NotAWorker::CannotWork)),
            Some((_, true)) => None,
        })
        .collect())
}

/// Why a user cannot be handed work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAWorker {
    /// Not an active user of the tenant.
    Unknown,
    /// Neither a member nor an admin.
    CannotWork,
}

/// The active members of `group` in `tenant_id`, by user id.
pub async fn group_members<'c>(
    executor: impl PgExecutor<'c>,
    tenant_id: &str,
    group: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "select user_id from identity_users \
         where tenant_id = $1 and groups @> array[$2]::text[] and status = 'active' \
         order by user_id",
    )
    .bind(tenant_id)
    .bind(group)
    .fetch_all(executor)
    .await
}

/// Whether `tenant_id` has any user: a claimed email whose user exists in the log (so the
/// answer does not depend on the read model being up to date).
pub async fn tenant_has_users<'c>(
    executor: impl PgExecutor<'c>,
    tenant_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists(select 1 from identity_email_claims c where c.tenant_id = $1 \
         and exists(select 1 from events e \
                    where e.aggregate_type = 'user' and e.aggregate_id = c.user_id::text))",
    )
    .bind(tenant_id)
    .fetch_one(executor)
    .await
}

/// Whether `tenant_id` requires a second factor at every sign-in.
pub async fn two_factor_required<'c>(
    executor: impl PgExecutor<'c>,
    tenant_id: &str,
) -> Result<bool, sqlx::Error> {
    let required: Option<bool> =
        sqlx::query_scalar("select two_factor_required from identity_tenants where tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(executor)
            .await?;
    Ok(required.unwrap_or(false))
}

/// Whether `user_id`'s tenant requires a second factor and they have no authenticator.
pub async fn needs_second_factor<'c>(
    executor: impl PgExecutor<'c>,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let needs: Option<bool> = sqlx::query_scalar(
        "select t.two_factor_required and not exists ( \
             select 1 from identity_two_factor f \
             where f.user_id = u.user_id and f.confirmed_at is not null) \
         from identity_users u join identity_tenants t using (tenant_id) \
         where u.user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(executor)
    .await?;
    Ok(needs.unwrap_or(false))
}
