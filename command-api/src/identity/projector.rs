//! The `identity` projector: tenant and user events into `identity_tenants` and
//! `identity_users`, each batch committed with its checkpoint (exactly once in effect).
//!
//! It runs inline after every identity command ([`catch_up_to`]), so sign-in and group
//! lookups see a change as soon as the command answers, and as a background loop
//! ([`run_projector`]) for changes made elsewhere. Both take the same checkpoint row lock, so
//! they never apply an event twice.
//!
//! Besides the read model it ends the sessions of a user who was deactivated or whose password
//! changed (sessions started before the event only, so a replay does not end newer ones), and
//! records when a user's roles or groups changed (`access_version`, migration 0011), so that
//! the access tokens issued before are refused.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use event_schemas::identity::{TENANT_AGGREGATE_TYPE, USER_AGGREGATE_TYPE};
use event_schemas::{AnyEvent, DecodeError, LogPosition, RecordedEvent, TenantEvent, UserEvent};
use event_store::{
    BatchError, Checkpoints, LogFilter, LogWaiter, personal, process_batch_matching,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The projector's checkpoint name.
pub const PROJECTOR: &str = "identity";

const BATCH: i64 = 500;

/// Why a batch was not applied (nothing of it was).
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("cannot decode identity event {event_type} at {position}")]
    Decode {
        position: LogPosition,
        event_type: String,
        #[source]
        source: DecodeError,
    },
    #[error("identity event {event_type} at {position} has an aggregate id that is not a UUID")]
    BadId {
        position: LogPosition,
        event_type: String,
    },
    #[error("writing the identity read model failed")]
    Database(#[from] sqlx::Error),
}

/// Applies the next batch; the new checkpoint, or `None` when nothing was readable.
pub async fn step(pool: &PgPool) -> Result<Option<LogPosition>, BatchError<ProjectionError>> {
    // identity events are found through their own index (migration 0009), and the checkpoint
    // passes over the rest of the log up to its head in the same read
    let filter = LogFilter::sparse(&[TENANT_AGGREGATE_TYPE, USER_AGGREGATE_TYPE]);
    let result = process_batch_matching(
        pool,
        PROJECTOR,
        BATCH,
        &filter,
        async |tx: &mut PgConnection, events: &[RecordedEvent]| {
            for event in events {
                apply(tx, event).await?;
            }
            Ok(())
        },
    )
    .await;
    if let Ok(Some(position)) = &result {
        metrics::gauge!("workledger_projector_position", "projector" => PROJECTOR)
            .set(position.global_position as f64);
    }
    result
}

/// Projects until the checkpoint has passed `target` (the position of a command's last
/// event), for at most about `wait`. `Ok(false)` when it did not get there in time (an older
/// transaction somewhere is still open, or the projector is far behind); the background loop
/// catches up.
pub async fn catch_up_to(
    pool: &PgPool,
    target: LogPosition,
    wait: Duration,
) -> Result<bool, BatchError<ProjectionError>> {
    let deadline = Instant::now() + wait;
    loop {
        if Checkpoints::load(pool, PROJECTOR).await? >= target {
            return Ok(true);
        }
        match step(pool).await? {
            Some(position) if position >= target => return Ok(true),
            // far behind (the background loop is not running): leave the rest to it
            _ if Instant::now() >= deadline => return Ok(false),
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Runs the projector until `shutdown` resolves: batches while there are events, then waits
/// for a notification or the waiter's poll. A failing batch is retried with backoff.
pub async fn run_projector(pool: PgPool, waiter: LogWaiter, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let retry = Duration::from_millis(200);
    let mut backoff = retry;
    loop {
        let pause = match step(&pool).await {
            Ok(Some(_)) => {
                backoff = retry;
                continue;
            }
            Ok(None) => None,
            Err(error) => {
                metrics::counter!("workledger_projector_errors_total", "projector" => PROJECTOR)
                    .increment(1);
                tracing::error!(error = %api_common::problem::chain(&error), "identity projection batch failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                Some(backoff)
            }
        };
        let wait = async {
            match pause {
                Some(pause) => tokio::time::sleep(pause).await,
                None => waiter.wait().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = wait => {}
        }
    }
}

async fn apply(conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let decoded = match event.aggregate_type.as_str() {
        event_schemas::identity::TENANT_AGGREGATE_TYPE
        | event_schemas::identity::USER_AGGREGATE_TYPE => {
            AnyEvent::from_recorded(event).map_err(|source| ProjectionError::Decode {
                position: event.position,
                event_type: event.event_type.clone(),
                source,
            })?
        }
        _ => return Ok(()),
    };
    match decoded {
        Some(AnyEvent::Tenant(tenant)) => apply_tenant(conn, &event.aggregate_id, tenant).await,
        Some(AnyEvent::User(user)) => {
            let user_id =
                Uuid::parse_str(&event.aggregate_id).map_err(|_| ProjectionError::BadId {
                    position: event.position,
                    event_type: event.event_type.clone(),
                })?;
            apply_user(conn, user_id, event.sequence, event.recorded_at, user).await
        }
        _ => Ok(()),
    }
}

async fn apply_tenant(
    conn: &mut PgConnection,
    tenant_id: &str,
    event: TenantEvent,
) -> Result<(), ProjectionError> {
    match event {
        TenantEvent::TenantCreated {
            tenant_id,
            name,
            created_at,
            ..
        } => {
            sqlx::query(
                "insert into identity_tenants (tenant_id, name, created_at) values ($1, $2, $3) \
                 on conflict (tenant_id) do nothing",
            )
            .bind(tenant_id)
            .bind(name)
            .bind(created_at)
            .execute(conn)
            .await?;
        }
        TenantEvent::TenantTwoFactorPolicyChanged {
            required,
            changed_at,
            ..
        } => {
            // the default tenant may have no row (no `TenantCreated` in logs from before it
            // had one): named after its id and dated by its first user, as the tenant list
            // shows it
            sqlx::query(
                "insert into identity_tenants (tenant_id, name, created_at, two_factor_required) \
                 values ($1, $1, coalesce((select min(created_at) from identity_users \
                                           where tenant_id = $1), $3), $2) \
                 on conflict (tenant_id) do update set two_factor_required = excluded.two_factor_required",
            )
            .bind(tenant_id)
            .bind(required)
            .bind(changed_at)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

fn names<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

async fn apply_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    version: i64,
    recorded_at: DateTime<Utc>,
    event: UserEvent,
) -> Result<(), ProjectionError> {
    let update = |sql: &'static str| sqlx::query(sql).bind(user_id).bind(version);
    match event {
        UserEvent::UserCreated {
            tenant_id,
            email,
            display_name,
            roles,
            groups,
            created_at,
            ..
        } => {
            // sealed for the user (DESIGN §2): an erased user's read as blanks
            let opened =
                personal::open_all(&mut *conn, &tenant_id, user_id, &[&email, &display_name])
                    .await?;
            let (email_key, email, display_name) = match (&opened[0], &opened[1]) {
                (Some(email), Some(name)) => (
                    domain::identity::email_key(email),
                    email.clone(),
                    name.clone(),
                ),
                _ => (erased_email_key(user_id), String::new(), String::new()),
            };
            sqlx::query(
                "insert into identity_users (user_id, tenant_id, email, email_key, display_name, \
                 roles, groups, status, version, created_at, updated_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, $9) \
                 on conflict (user_id) do nothing",
            )
            .bind(user_id)
            .bind(tenant_id)
            .bind(&email)
            .bind(email_key)
            .bind(display_name)
            .bind(names(&roles))
            .bind(groups)
            .bind(version)
            .bind(created_at)
            .execute(conn)
            .await?;
        }
        UserEvent::UserRolesChanged {
            roles, changed_at, ..
        } => {
            update(
                "update identity_users set roles = $3, version = $2, updated_at = $4, \
                 access_version = greatest(access_version, $2), access_changed_at = now() \
                 where user_id = $1",
            )
            .bind(names(&roles))
            .bind(changed_at)
            .execute(conn)
            .await?;
        }
        UserEvent::UserGroupsChanged {
            groups, changed_at, ..
        } => {
            update(
                "update identity_users set groups = $3, version = $2, updated_at = $4, \
                 access_version = greatest(access_version, $2), access_changed_at = now() \
                 where user_id = $1",
            )
            .bind(groups)
            .bind(changed_at)
            .execute(conn)
            .await?;
        }
        UserEvent::UserPasswordChanged { changed_at, .. } => {
            update(
                "update identity_users set password_changed_at = $3, version = $2, \
                 updated_at = $3 where user_id = $1",
            )
            .bind(changed_at)
            .execute(&mut *conn)
            .await?;
            // the sessions of the old password; `replace_password` ended, with the new hash,
            // any opened since with the old one, and one opened since with the new password
            // stays
            end_sessions_before(conn, user_id, None, recorded_at, "password changed").await?;
        }
        UserEvent::UserDeactivated { deactivated_at, .. } => {
            update(
                "update identity_users set status = 'deactivated', version = $2, \
                 updated_at = $3 where user_id = $1",
            )
            .bind(deactivated_at)
            .execute(&mut *conn)
            .await?;
            // also those opened after the event, before this projection showed the user
            // deactivated: sign-in checks the status here
            end_sessions_before(
                conn,
                user_id,
                Some(version),
                recorded_at,
                "user deactivated",
            )
            .await?;
        }
        UserEvent::UserReactivated { reactivated_at, .. } => {
            update(
                "update identity_users set status = 'active', version = $2, updated_at = $3 \
                 where user_id = $1",
            )
            .bind(reactivated_at)
            .execute(conn)
            .await?;
        }
        UserEvent::UserTwoFactorEnabled { enabled_at, .. } => {
            update(
                "update identity_users set two_factor_enabled_at = $3, version = $2, \
                 updated_at = $3 where user_id = $1",
            )
            .bind(enabled_at)
            .execute(conn)
            .await?;
        }
        UserEvent::UserTwoFactorDisabled { disabled_at, .. } => {
            update(
                "update identity_users set two_factor_enabled_at = null, version = $2, \
                 updated_at = $3 where user_id = $1",
            )
            .bind(disabled_at)
            .execute(conn)
            .await?;
        }
        UserEvent::UserSessionsEnded { ended_at, .. } => {
            update("update identity_users set version = $2, updated_at = $3 where user_id = $1")
                .bind(ended_at)
                .execute(&mut *conn)
                .await?;
            // the sessions open when it was asked; signing in again right after is a new one
            end_sessions_before(conn, user_id, None, recorded_at, "sessions ended").await?;
        }
        UserEvent::UserNotificationsChanged {
            email, changed_at, ..
        } => {
            update(
                "update identity_users set email_notifications = $3, version = $2, \
                 updated_at = $4 where user_id = $1",
            )
            .bind(email.as_str())
            .bind(changed_at)
            .execute(conn)
            .await?;
        }
        UserEvent::UserErased { erased_at, .. } => erase(conn, user_id, version, erased_at).await?,
        UserEvent::UserRecoveryCodesReplaced { replaced_at, .. } => {
            update("update identity_users set version = $2, updated_at = $3 where user_id = $1")
                .bind(replaced_at)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// The `email_key` of an erased user: unique, and never the key of an address one signs in
/// with (those have an `@`).
fn erased_email_key(user_id: Uuid) -> String {
    format!("erased:{user_id}")
}

/// Forgets the user: their key is dropped (what was sealed with it no longer opens anywhere),
/// their email address and name are blanked, and what is kept about them outside the log is
/// deleted (credentials, two-factor keys and codes, email claim, idempotency records, sent-email
/// records, the login throttle's count of their address) or stripped (their sessions keep only
/// that they were ended, so every process goes on refusing their tokens until they expire). The
/// user id stays.
async fn erase(
    conn: &mut PgConnection,
    user_id: Uuid,
    version: i64,
    erased_at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let before: Option<(String, String)> = sqlx::query_as(
        "select tenant_id, email_key from identity_users where user_id = $1 for update",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((tenant_id, email_key)) = before else {
        return Ok(());
    };
    sqlx::query(
        "update identity_users set email = '', email_key = $3, display_name = '', \
         erased_at = $4, status = 'deactivated', version = $2, updated_at = $4 \
         where user_id = $1",
    )
    .bind(user_id)
    .bind(version)
    .bind(erased_email_key(user_id))
    .bind(erased_at)
    .execute(&mut *conn)
    .await?;
    personal::erase(&mut *conn, &tenant_id, user_id).await?;
    for sql in [
        "delete from identity_email_claims where user_id = $1",
        "delete from identity_credentials where user_id = $1",
        "delete from identity_two_factor where user_id = $1",
        "delete from identity_recovery_codes where user_id = $1",
        "delete from idempotency_keys where user_id = $1",
        "delete from notification_emails where user_id = $1",
        // ended, not deleted: instances that start later learn of ended sessions from here
        "update auth_sessions set client_address = null, user_agent = null, \
             revoked_at = coalesce(revoked_at, now()), \
             revoked_reason = coalesce(revoked_reason, 'user erased') \
         where user_id = $1",
        "delete from auth_refresh_tokens t using auth_sessions s \
         where t.session_id = s.session_id and s.user_id = $1",
    ] {
        sqlx::query(sql).bind(user_id).execute(&mut *conn).await?;
    }
    if !email_key.starts_with("erased:") {
        crate::auth::throttle::forget_account(&mut *conn, &tenant_id, &email_key).await?;
    }
    tracing::info!(user_id = %user_id, "erased a user's personal data");
    Ok(())
}

/// Ends the sessions of `user_id` opened before the event: with `version` (the event's), those
/// opened on an earlier version of the user, which includes any opened between the event's
/// append and its projection, and none opened after it when the projection is rebuilt past
/// it; without, those opened before the event's `recorded_at`. A session from before
/// migration 0022 knows no version and is always cut at `recorded_at`.
async fn end_sessions_before(
    conn: &mut PgConnection,
    user_id: Uuid,
    version: Option<i64>,
    recorded_at: DateTime<Utc>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let ended = sqlx::query(
        "update auth_sessions set revoked_at = now(), revoked_reason = $4 \
         where user_id = $1 and revoked_at is null \
           and (user_version < $2::bigint \
                or ((user_version is null or $2::bigint is null) and created_at <= $3))",
    )
    .bind(user_id)
    .bind(version)
    .bind(recorded_at)
    .bind(reason)
    .execute(conn)
    .await?;
    if ended.rows_affected() > 0 {
        tracing::info!(user_id = %user_id, sessions = ended.rows_affected(), reason, "ended sessions");
    }
    Ok(())
}
