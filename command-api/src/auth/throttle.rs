//! Login throttling: failed sign-ins are counted per account (tenant and email) and per client
//! address; past the limit, sign-in is refused with 429 and `Retry-After` until the lockout
//! ends. Counting happens for unknown accounts too, so the answer never tells whether an
//! account exists. The current password given to change one's own password is counted under
//! the account's key alike.
//!
//! An attempt is counted before its password is checked ([`Throttle::admit`]) and given back
//! when it turns out right, so concurrent attempts cannot slip past the limit between the
//! check and the count.
//!
//! The price of per-account limits is that anyone can lock an account for a few minutes by
//! failing on purpose; the lockout is short for that reason (and configurable).

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
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

/// Forgets the failed sign-ins counted against an account (its person was erased: the key
/// is a plain hash of the address, which a dictionary could reverse).
pub(crate) async fn forget_account(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    email_key: &str,
) -> Result<(), sqlx::Error> {
    let key = ThrottleKey::Account {
        tenant_id: tenant_id.to_owned(),
        email_key: email_key.to_owned(),
    };
    sqlx::query("delete from auth_login_throttle where key = $1")
        .bind(key.hash())
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether an attempt may check its password.
#[derive(Debug)]
pub enum Admission {
    /// It may, counted as a failure until reported otherwise.
    Admitted(Attempt),
    /// A key is locked for this long: refuse the attempt (nothing was counted).
    Locked(Duration),
}

/// An attempt counted against its keys before its password is checked.
#[derive(Debug)]
#[must_use = "report the outcome with `Throttle::failed` or `Throttle::succeeded`"]
pub struct Attempt {
    counted: Vec<Counted>,
}

#[derive(Debug)]
struct Counted {
    key: ThrottleKey,
    window_started_at: DateTime<Utc>,
    /// The end of the lockout this attempt started by reaching the key's limit.
    locks_until: Option<DateTime<Utc>>,
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

    /// Counts an attempt against every key of `keys` before its password is checked, so that
    /// however many attempts run at once, at most the limit per key are checked in a window.
    ///
    /// Refused, with nothing counted, while any key is locked. The attempt that reaches a key's
    /// limit is the last one admitted and starts the lockout. Report the outcome with
    /// [`Throttle::failed`] or [`Throttle::succeeded`]; an attempt dropped unreported (an
    /// error on the way) stays counted as a failure.
    pub async fn admit(&self, keys: &[ThrottleKey]) -> Result<Admission, sqlx::Error> {
        // one transaction: an attempt refused for one key is not counted against the others
        let mut tx = self.pool.begin().await?;
        let mut counted = Vec::with_capacity(keys.len());
        for key in keys {
            let max = match key {
                ThrottleKey::Account { .. } => self.settings.max_failures_per_account,
                ThrottleKey::Address(_) => self.settings.max_failures_per_address,
            };
            // the upsert waits for concurrent attempts on the key (the row lock) and decides on
            // the row they left; a window that has passed starts over at 1; a locked key is
            // left as it is and returns no row
            let row: Option<(DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
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
                 where t.locked_until is null or t.locked_until <= now() \
                 returning window_started_at, case when locked_until > now() then locked_until end",
            )
            .bind(key.hash())
            .bind(max as i32)
            .bind(self.settings.window.as_secs_f64())
            .bind(self.settings.lockout.as_secs_f64())
            .fetch_optional(&mut *tx)
            .await?;
            let Some((window_started_at, locks_until)) = row else {
                let seconds: Option<f64> = sqlx::query_scalar(
                    "select extract(epoch from locked_until - now())::float8 \
                     from auth_login_throttle where key = $1",
                )
                .bind(key.hash())
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
                return Ok(Admission::Locked(Duration::from_secs_f64(
                    seconds.unwrap_or(0.0).max(0.0),
                )));
            };
            counted.push(Counted {
                key: key.clone(),
                window_started_at,
                locks_until,
            });
        }
        tx.commit().await?;
        Ok(Admission::Admitted(Attempt { counted }))
    }

    /// The attempt's password was wrong: it stays counted.
    pub fn failed(&self, attempt: Attempt) {
        for counted in attempt.counted.iter().filter(|c| c.locks_until.is_some()) {
            let scope = counted.key.scope();
            metrics::counter!("workledger_login_lockouts_total", "scope" => scope).increment(1);
            tracing::warn!(scope, "sign-in locked after repeated failures");
        }
    }

    /// The attempt's password was right: the account's failures are forgotten, and the
    /// client address gets its count back (successes are not failures), with the lockout the
    /// attempt started, if any.
    pub async fn succeeded(&self, attempt: Attempt) -> Result<(), sqlx::Error> {
        for counted in attempt.counted {
            match counted.key {
                ThrottleKey::Account { .. } => {
                    sqlx::query("delete from auth_login_throttle where key = $1")
                        .bind(counted.key.hash())
                        .execute(&self.pool)
                        .await?;
                }
                ThrottleKey::Address(_) => self.give_back(&counted).await?,
            }
        }
        Ok(())
    }

    /// The attempt decided nothing: its password was right but the account also needs a
    /// one-time code, which it did not send. Every key gets this attempt's count back (with the
    /// lockout it started, if any) and keeps the failures before it, so sending the password
    /// alone between wrong codes does not reset the count of wrong codes.
    pub async fn withdrawn(&self, attempt: Attempt) -> Result<(), sqlx::Error> {
        for counted in &attempt.counted {
            self.give_back(counted).await?;
        }
        Ok(())
    }

    /// Takes one count off the window `counted` was counted in.
    async fn give_back(&self, counted: &Counted) -> Result<(), sqlx::Error> {
        sqlx::query(
            "update auth_login_throttle set failures = greatest(failures - 1, 0), \
               locked_until = case when locked_until = $3 then null else locked_until end \
             where key = $1 and window_started_at = $2",
        )
        .bind(counted.key.hash())
        .bind(counted.window_started_at)
        .bind(counted.locks_until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
