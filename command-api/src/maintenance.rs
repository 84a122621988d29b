//! Housekeeping of the command API's security state: expired idempotency keys, expired
//! refresh tokens and sessions, forgotten login failures.

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub idempotency_keys: u64,
    pub refresh_tokens: u64,
    pub sessions: u64,
    pub throttle_entries: u64,
}

/// Deletes what has expired. `throttle_window` is how long login failures are counted.
pub async fn sweep(pool: &PgPool, throttle_window: Duration) -> Result<Swept, sqlx::Error> {
    let idempotency_keys = crate::idempotency::sweep(pool).await?;
    let refresh_tokens = sqlx::query("delete from auth_refresh_tokens where expires_at <= now()")
        .execute(pool)
        .await?
        .rows_affected();
    // a session without any refresh token left can never be used again
    let sessions = sqlx::query(
        "delete from auth_sessions s where not exists \
         (select 1 from auth_refresh_tokens t where t.session_id = s.session_id) \
         and s.created_at < now() - interval '1 hour'",
    )
    .execute(pool)
    .await?
    .rows_affected();
    let throttle_entries = sqlx::query(
        "delete from auth_login_throttle \
         where window_started_at < now() - $1 * interval '1 second' \
           and (locked_until is null or locked_until <= now())",
    )
    .bind(throttle_window.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(Swept {
        idempotency_keys,
        refresh_tokens,
        sessions,
        throttle_entries,
    })
}

/// Sweeps every `every` until `shutdown` resolves (what `serve` spawns). Safe to run on
/// several instances at once.
pub async fn run_sweeper(
    pool: PgPool,
    every: Duration,
    throttle_window: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        match sweep(&pool, throttle_window).await {
            Ok(swept) if swept != Swept::default() => {
                tracing::debug!(
                    ?swept,
                    "swept expired idempotency keys, tokens and throttle entries"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "sweeping expired security state failed"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
