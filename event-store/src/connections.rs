//! Connections kept by the command path between statements.
//!
//! sqlx 0.8's pool tests every connection it takes back with a round trip to Postgres (a
//! `Sync` and its answer, in a task of its own) before another caller may use it. On the
//! command path, whose commands are one statement each, that is a second round trip per
//! command: a third of the server's system calls and a share of Postgres's CPU in profiles.
//! [`Connections`] keeps a few connections out of the pool and hands them from one statement
//! to the next without that test. A connection whose statement was cancelled halfway (its
//! future dropped) or whose connection failed is closed rather than kept; one that answered,
//! even with an error of Postgres's own, is in a known state and is kept.
//!
//! The kept connections bound how many statements the command path runs at once: when all
//! are busy, a caller waits for one to be given back (at most the pool's acquire timeout)
//! rather than going to the pool. More statements at once than the kept connections would
//! only add contention on a database that is busy already (pgbench's own single insert ran
//! about a third slower at 64 clients than at 16 on the benchmark machine), and every one of
//! them would pay the pool's round trip. Every lease is for one statement, never held while
//! another is acquired, so waiting cannot deadlock.
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

use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::group::Group;
use crate::personal::PersonalKeys;

/// How many connections one [`Connections`] keeps out of the pool by default
/// (`WORKLEDGER_DB_COMMAND_CONNECTIONS`), and so how many
/// statements its command path runs at once.
pub const KEPT_CONNECTIONS: usize = 16;

/// How many append statements the command path runs at once by default
/// (`WORKLEDGER_DB_APPEND_WRITERS`; [`crate::group`]). Fewer statements carrying more commands
/// each cost Postgres less: on two cores, 2 gave the most commands a second (1, 2, 4 and 8
/// were measured: docs/benchmarks.md).
pub const APPEND_WRITERS: usize = 2;

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
    /// One permit per connection that may be out (idle or in use): a lease holds one.
    places: Arc<Semaphore>,
    idle_check: Duration,
    /// The keys appends seal personal data with.
    keys: PersonalKeys,
    /// Appends waiting to go to Postgres together.
    group: Group,
}

/// A connection for one statement: give it back with [`Lease::keep`] once the statement has
/// answered; dropped without that, the connection is closed and its place freed.
#[derive(Debug)]
pub struct Lease {
    conn: Option<PgConnection>,
    kept: Arc<Kept>,
    place: OwnedSemaphorePermit,
}

impl Connections {
    pub fn new(pool: PgPool) -> Self {
        Self::with_limit(pool, KEPT_CONNECTIONS)
    }

    /// Keeps at most `limit` connections (at least 1).
    pub fn with_limit(pool: PgPool, limit: usize) -> Self {
        Self::with_limits(pool, limit, APPEND_WRITERS)
    }

    /// Keeps at most `limit` connections (at least 1) and runs at most `writers` append
    /// statements at once (at least 1, at most `limit`).
    pub fn with_limits(pool: PgPool, limit: usize, writers: usize) -> Self {
        Self::configured(pool, limit, writers, IDLE_CHECK)
    }

    /// Keeps at most `limit` connections (at least 1), pinging one that sat idle longer than
    /// `idle_check` before handing it out.
    pub fn with_idle_check(pool: PgPool, limit: usize, idle_check: Duration) -> Self {
        Self::configured(pool, limit, APPEND_WRITERS, idle_check)
    }

    fn configured(pool: PgPool, limit: usize, writers: usize, idle_check: Duration) -> Self {
        assert!(limit > 0, "the command path needs at least one connection");
        Self {
            pool,
            kept: Arc::new(Kept {
                idle: Mutex::new(Vec::new()),
                places: Arc::new(Semaphore::new(limit)),
                idle_check,
                keys: PersonalKeys::default(),
                group: Group::new(writers.min(limit)),
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The appends of this command path waiting to go to Postgres together.
    pub(crate) fn group(&self) -> &Group {
        &self.kept.group
    }

    /// The keys this command path seals personal data with (remembered across its appends).
    pub fn personal_keys(&self) -> &PersonalKeys {
        &self.kept.keys
    }

    /// An idle kept connection (one idle for long answered a ping first), or a new one taken
    /// out of the pool while fewer than the limit are out; when all are in use, waits for one
    /// to be given back, at most the pool's acquire timeout (then `PoolTimedOut`).
    pub async fn acquire(&self) -> Result<Lease, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
        let place = tokio::time::timeout_at(deadline, self.kept.places.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .expect("the semaphore is never closed");
        let mut place = Some(place);
        loop {
            let Some((conn, since)) = lock(&self.kept.idle).pop() else {
                break;
            };
            // a lease already: dropped halfway through the ping, it frees its place
            let mut lease = self.lease(conn, place.take().expect("a place is held"));
            if since.elapsed() < self.kept.idle_check || lease.ping().await.is_ok() {
                return Ok(lease);
            }
            tracing::debug!("a kept connection did not answer a ping after sitting idle; closed");
            place = Some(lease.close());
        }
        // the wait for a place and for a new connection share the one acquire timeout
        let conn = tokio::time::timeout_at(deadline, self.pool.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??
            .detach();
        Ok(self.lease(conn, place.expect("a place is held")))
    }

    fn lease(&self, conn: PgConnection, place: OwnedSemaphorePermit) -> Lease {
        Lease {
            conn: Some(conn),
            kept: self.kept.clone(),
            place,
        }
    }
}

impl Lease {
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
        if let Some(conn) = self.conn.take() {
            lock(&self.kept.idle).push((conn, Instant::now()));
        }
    }

    /// Drops the connection and hands back the place it held, for a replacement.
    fn close(self) -> OwnedSemaphorePermit {
        let Lease { conn, place, .. } = self;
        drop(conn);
        place
    }
}

impl std::ops::Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("a lease holds its connection")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a lease holds its connection")
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
