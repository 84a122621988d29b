//! Login throttling: failed sign-ins are counted per account (tenant and email) and per client
//! address; past the limit, sign-in is refused with 429 and `Retry-After` until the lockout
//! ends. Counting happens for unknown accounts too, so the answer never tells whether an
//! account exists.
//!
//! The price of per-account limits is that anyone can lock an account for a few minutes by
//! failing on purpose; the lockout is short for that reason (and configurable).

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::settings::ThrottleSettings;

/// What failures are counted against.
#[derive(Debug, Clone)]
pub enum ThrottleKey {
    /// One email address in one tenant.
    Account {
        tenant_id: String,
        email_key: String,
    },
    /// One client address.
    Address(IpAddr),
}

impl ThrottleKey {
    /// The stored key: a hash, so the table holds no email or IP address in clear.
    fn hash(&self) -> Vec<u8> {
        let text = match self {
            ThrottleKey::Account {
                tenant_id,
                email_key,
            } => format!("account\0{tenant_id}\0{email_key}"),
            ThrottleKey::Address(ip) => format!("address\0{ip}"),
        };
        Sha256::digest(text.as_bytes()).to_vec()
    }

    fn scope(&self) -> &'static str {
        match self {
            ThrottleKey::Account { .. } => "account",
            ThrottleKey::Address(_) => "address",
        }
    }
}

/// The login throttle.
#[derive(Debug, Clone)]
pub struct Throttle {
    pool: PgPool,
    settings: ThrottleSettings,
}

impl Throttle {
    /// A throttle keeping its counts in `pool`.
    pub fn new(pool: PgPool, settings: ThrottleSettings) -> Self {
        Self { pool, settings }
    }

    /// How long the caller must wait, if any of `keys` is locked now.
    pub async fn locked_for(&self, keys: &[ThrottleKey]) -> Result<Option<Duration>, sqlx::Error> {
        let hashes: Vec<Vec<u8>> = keys.iter().map(ThrottleKey::hash).collect();
        let seconds: Option<f64> = sqlx::query_scalar(
            "select extract(epoch from max(locked_until) - now())::float8 \
             from auth_login_throttle where key = any($1) and locked_until > now()",
        )
        .bind(&hashes)
        .fetch_one(&self.pool)
        .await?;
        Ok(seconds.map(|s| Duration::from_secs_f64(s.max(0.0))))
    }

    /// Counts a failed sign-in against `key`; locks it when the count reaches the limit.
    pub async fn failed(&self, key: &ThrottleKey) -> Result<(), sqlx::Error> {
        let max = match key {
            ThrottleKey::Account { .. } => self.settings.max_failures_per_account,
            ThrottleKey::Address(_) => self.settings.max_failures_per_address,
        };
        // a window that has passed starts over at 1
        let locked: Option<bool> = sqlx::query_scalar(
            "insert into auth_login_throttle as t (key, failures, window_started_at, locked_until) \
             values ($1, 1, now(), case when 1 >= $2 then now() + $4 * interval '1 second' end) \
             on conflict (key) do update set \
               failures = case when t.window_started_at < now() - $3 * interval '1 second' \
                               then 1 else t.failures + 1 end, \
               window_started_at = case when t.window_started_at < now() - $3 * interval '1 second' \
                                        then now() else t.window_started_at end, \
               locked_until = case when (case when t.window_started_at < now() - $3 * interval '1 second' \
                                              then 1 else t.failures + 1 end) >= $2 \
                                   then now() + $4 * interval '1 second' else t.locked_until end \
             returning locked_until > now()",
        )
        .bind(key.hash())
        .bind(max as i32)
        .bind(self.settings.window.as_secs_f64())
        .bind(self.settings.lockout.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        if locked == Some(true) {
            metrics::counter!("workledger_login_lockouts_total", "scope" => key.scope())
                .increment(1);
            tracing::warn!(
                scope = key.scope(),
                "sign-in locked after repeated failures"
            );
        }
        Ok(())
    }

    /// Forgets the failures of `key` (after a successful sign-in to the account).
    pub async fn succeeded(&self, key: &ThrottleKey) -> Result<(), sqlx::Error> {
        sqlx::query("delete from auth_login_throttle where key = $1")
            .bind(key.hash())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
