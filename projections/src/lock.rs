//! One active worker per projector: a session-level Postgres advisory lock held on a connection
//! of its own (outside the pool, so nothing else ever runs on it or hands it back).
//!
//! When the holding process dies its connection closes and Postgres releases the lock; a
//! standby worker that tries again takes over. The lock is an efficiency measure: correctness
//! does not depend on it, since every batch also locks the projector's checkpoint row, so even
//! two workers that both believed they held the lock could not apply an event twice.

use sha2::{Digest, Sha256};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// The advisory lock key of projector `name`: the first 8 bytes of a SHA-256 of its name, so
/// the key is stable across builds and processes.
pub fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("workledger projector {name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// A held projector lock.
#[derive(Debug)]
pub struct ProjectorLock {
    conn: PgConnection,
    key: i64,
}

impl ProjectorLock {
    /// A connection of its own for a projector lock (outside the pool).
    pub async fn connect(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
        pool.connect_options().connect().await
    }

    /// Tries to take `name`'s lock on `conn`: `Ok(Err(conn))` gives the connection back when
    /// another worker holds the lock, so a standby worker retries on the same connection.
    pub async fn try_take(
        mut conn: PgConnection,
        name: &str,
    ) -> Result<Result<Self, PgConnection>, sqlx::Error> {
        let key = lock_key(name);
        let taken: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        Ok(if taken {
            Ok(Self { conn, key })
        } else {
            Err(conn)
        })
    }

    /// Tries to take `name`'s lock on a new connection: `Ok(None)` when another worker holds it.
    pub async fn try_acquire(pool: &PgPool, name: &str) -> Result<Option<Self>, sqlx::Error> {
        match Self::try_take(Self::connect(pool).await?, name).await? {
            Ok(lock) => Ok(Some(lock)),
            Err(conn) => {
                conn.close().await.ok();
                Ok(None)
            }
        }
    }

    /// Whether the lock's connection still answers (and so the lock is still ours).
    pub async fn is_held(&mut self) -> bool {
        sqlx::query("select 1")
            .execute(&mut self.conn)
            .await
            .is_ok()
    }

    /// Releases the lock and closes its connection.
    pub async fn release(mut self) {
        let _ = sqlx::query("select pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn)
            .await;
        self.conn.close().await.ok();
    }
}

/// Whether some session of this database holds `name`'s lock (for status reports).
pub(crate) async fn is_locked(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let key = lock_key(name);
    // a bigint advisory key shows up in pg_locks as (classid = high half, objid = low half)
    let high = (key >> 32) & 0xffff_ffff;
    let low = key & 0xffff_ffff;
    sqlx::query_scalar(
        "select exists(select 1 from pg_locks \
         where locktype = 'advisory' and granted and objsubid = 1 \
           and database = (select oid from pg_database where datname = current_database()) \
           and classid = $1::bigint::oid and objid = $2::bigint::oid)",
    )
    .bind(high)
    .bind(low)
    .fetch_one(pool)
    .await
}
