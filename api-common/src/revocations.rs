//! Sessions that ended while their access tokens still run: a logout, a user deactivated, a
//! refresh token presented twice.
//!
//! Access tokens are verified without the database, so on their own they would keep working
//! until they expire (`WORKLEDGER_ACCESS_TOKEN_TTL`) after their session ended. Every process
//! that verifies tokens therefore keeps the set of sessions ended within one token lifetime
//! (older ones' tokens have all expired) and refuses their tokens. The set is loaded before the
//! process serves, and kept current by a watcher: `auth_sessions` announces each ended session
//! on [`CHANNEL`] (a trigger, migration 0010), and the watcher reloads the whole set after each
//! (re)connection and every [`RELOAD`] besides, so an announcement missed while disconnected
//! is picked up.
//!
//! When the database cannot be reached, the set stays as last loaded: tokens of sessions ended
//! meanwhile work until they expire, as they would without the set.

use std::collections::HashSet;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

/// Where `auth_sessions` announces an ended session (its id as the payload).
pub const CHANNEL: &str = "workledger_session_ended";

/// How often the watcher reloads the set even without announcements.
const RELOAD: Duration = Duration::from_secs(30);

/// The sessions ended within the last token lifetime (see the module documentation).
#[derive(Debug, Default)]
pub struct RevokedSessions {
    ended: RwLock<HashSet<Uuid>>,
}

impl RevokedSessions {
    /// Whether session `sid` has ended (as far as this process knows).
    pub fn contains(&self, sid: &Uuid) -> bool {
        self.ended
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(sid)
    }

    /// Loads the sessions ended within `window`, then keeps the set current on a task of its
    /// own, for as long as anyone holds `self` and the pool is open.
    pub async fn watch(self: &Arc<Self>, pool: PgPool, window: Duration) -> sqlx::Result<()> {
        self.reload(&pool, window).await?;
        tokio::spawn(watch(Arc::downgrade(self), pool, window));
        Ok(())
    }

    async fn reload(&self, pool: &PgPool, window: Duration) -> sqlx::Result<()> {
        let ended: Vec<Uuid> = sqlx::query_scalar(
            "select session_id from auth_sessions \
             where revoked_at > now() - make_interval(secs => $1)",
        )
        .bind(window.as_secs_f64())
        .fetch_all(pool)
        .await?;
        let ended: HashSet<Uuid> = ended.into_iter().collect();
        metrics::gauge!("workledger_ended_sessions_watched").set(ended.len() as f64);
        *self.ended.write().unwrap_or_else(|e| e.into_inner()) = ended;
        Ok(())
    }

    pub(crate) fn insert(&self, sid: Uuid) {
        self.ended
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sid);
    }
}

async fn watch(set: Weak<RevokedSessions>, pool: PgPool, window: Duration) {
    let mut backoff = Duration::from_millis(100);
    while !pool.is_closed() {
        let mut listener = match connect(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "cannot LISTEN for ended sessions; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            let Some(set) = set.upgrade().filter(|_| !pool.is_closed()) else {
                return;
            };
            // after each (re)connection, and every RELOAD: whatever was missed meanwhile
            if let Err(error) = set.reload(&pool, window).await {
                tracing::warn!(error = %error, "cannot reload the ended sessions");
            }
            if let Ok(Err(error)) =
                tokio::time::timeout(RELOAD, announced(&mut listener, &set)).await
            {
                tracing::warn!(error = %error, "LISTEN connection for ended sessions failed; reconnecting");
                break;
            }
        }
    }
}

async fn connect(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Adds announced sessions to `set` until the connection is lost (`Ok`: the listener
/// reconnects on its next use, and announcements may have been missed meanwhile) or fails.
async fn announced(listener: &mut PgListener, set: &RevokedSessions) -> sqlx::Result<()> {
    while let Some(notification) = listener.try_recv().await? {
        match notification.payload().parse() {
            Ok(sid) => set.insert(sid),
            Err(_) => tracing::warn!(
                payload = notification.payload(),
                "an ended session's announcement is not a session id"
            ),
        }
    }
    Ok(())
}
