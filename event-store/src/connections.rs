//! Connections kept by the command path between statements.
//!
//! sqlx 0.8's pool tests every connection it takes back with a round trip to Postgres (a
//! `Sync` and its answer, in a task of its own) before another caller may use it. On the
//! command path, whose commands are one statement each, that is a second round trip per
//! command: a third of the server's system calls and a share of Postgres's CPU in profiles.
//! [`Connections`] keeps a few connections out of the pool and hands them from one statement
//! to the next without that test. A connection whose statement was cancelled halfway (its
//! future dropped) or whose connection failed is closed rather than kept; one that answered,
//! even with an error of Postgres's own, is in a known state and is kept. When all are busy,
//! callers use the pool as before.
//!
//! One [`Connections`] serves a whole command path (the orchestrator's runtime shares it
//! between the executors of its aggregate types, its timers and its group directory), so that
//! the connections it keeps follow the load rather than being split by aggregate type.
//!
//! A connection that sat idle for longer than [`IDLE_CHECK`] is pinged before it is handed
//! out (under load they never sit that long, so the command path keeps its one round trip):
//! after Postgres restarted, or a connection was cut while idle, the first commands get a
//! fresh connection instead of failing on the dead one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, PgConnection, PgPool, Postgres};

/// How many connections one [`Connections`] keeps out of the pool at most (as many as
/// commands a process usually runs at once; the pool's own connections stay for the rest).
pub const KEPT_CONNECTIONS: usize = 16;

/// How long a kept connection may sit idle before it is pinged when next taken.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A few connections kept out of `pool` for the command path; cheap to clone.
#[derive(Debug, Clone)]
pub struct Connections {
    pool: PgPool,
    kept: Arc<Kept>,
}

#[derive(Debug)]
struct Kept {
    /// Idle connections, each with when it was given back.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// Connections taken out of the pool and not closed since (idle or in use).
    out: Mutex<usize>,
    limit: usize,
    idle_check: Duration,
}

/// A connection for one statement: give it back with [`Lease::keep`] once the statement has
/// answered; dropped without that, a kept connection is closed.
#[derive(Debug)]
pub struct Lease(Held);

#[derive(Debug)]
enum Held {
    Kept {
        conn: Option<PgConnection>,
        kept: Arc<Kept>,
    },
    Pooled(PoolConnection<Postgres>),
}

impl Connections {
    pub fn new(pool: PgPool) -> Self {
        Self::with_limit(pool, KEPT_CONNECTIONS)
    }

    /// Keeps at most `limit` connections (0: always use the pool).
    pub fn with_limit(pool: PgPool, limit: usize) -> Self {
        Self::with_idle_check(pool, limit, IDLE_CHECK)
    }

    /// Keeps at most `limit` connections, pinging one that sat idle longer than `idle_check`
    /// before handing it out.
    pub fn with_idle_check(pool: PgPool, limit: usize, idle_check: Duration) -> Self {
        Self {
            pool,
            kept: Arc::new(Kept {
                idle: Mutex::new(Vec::new()),
                out: Mutex::new(0),
                limit,
                idle_check,
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// An idle kept connection (one idle for long answered a ping), a new one taken out of
    /// the pool while fewer than the limit are out, or else a pooled one.
    pub async fn acquire(&self) -> Result<Lease, sqlx::Error> {
        loop {
            let Some((conn, since)) = lock(&self.kept.idle).pop() else {
                break;
            };
            // a lease already: dropped halfway through the ping, it frees its place
            let mut lease = self.kept(conn);
            if since.elapsed() < self.kept.idle_check || lease.ping().await.is_ok() {
                return Ok(lease);
            }
            tracing::debug!("a kept connection did not answer a ping after sitting idle; closed");
        }
        let take = {
            let mut out = lock(&self.kept.out);
            let take = *out < self.kept.limit;
            if take {
                *out += 1;
            }
            take
        };
        match self.pool.acquire().await {
            Ok(conn) if take => Ok(self.kept(conn.detach())),
            Ok(conn) => Ok(Lease(Held::Pooled(conn))),
            Err(error) => {
                if take {
                    *lock(&self.kept.out) -= 1;
                }
                Err(error)
            }
        }
    }

    fn kept(&self, conn: PgConnection) -> Lease {
        Lease(Held::Kept {
            conn: Some(conn),
            kept: self.kept.clone(),
        })
    }
}

impl Lease {
    /// Whether this is one of the kept connections (not a pooled one).
    pub fn is_kept(&self) -> bool {
        matches!(self.0, Held::Kept { .. })
    }

    /// Gives the connection back after `answer`: kept when Postgres answered (rows, or an
    /// error of its own such as a unique violation), closed when the connection itself failed
    /// (I/O, protocol), so that a broken connection (Postgres restarted, say) is never reused.
    pub fn keep_after<T>(self, answer: &Result<T, sqlx::Error>) {
        match answer {
            Ok(_) => self.keep(),
            Err(error @ sqlx::Error::Database(_)) if !session_ended(error) => self.keep(),
            Err(_) => drop(self),
        }
    }

    /// Gives the connection back for the next statement (call once its statement answered).
    pub fn keep(mut self) {
        if let Held::Kept { conn, kept } = &mut self.0
            && let Some(conn) = conn.take()
        {
            lock(&kept.idle).push((conn, Instant::now()));
        }
    }
}

impl std::ops::Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match &self.0 {
            Held::Kept { conn, .. } => conn.as_ref().expect("a lease holds its connection"),
            Held::Pooled(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match &mut self.0 {
            Held::Kept { conn, .. } => conn.as_mut().expect("a lease holds its connection"),
            Held::Pooled(conn) => conn,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Held::Kept { conn, kept } = &mut self.0
            && conn.take().is_some()
        {
            // its statement may be half sent or half read: close it, make room for another
            *lock(&kept.out) -= 1;
        }
    }
}

/// Whether Postgres answered `error` by ending the session: classes 08 (connection
/// exception), 57 (operator intervention, such as a shutdown) and 58 (system error) leave no
/// usable session behind.
pub fn session_ended(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|c| ["08", "57", "58"].iter().any(|k| c.starts_with(k))),
        _ => false,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
