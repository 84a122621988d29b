//! Access tokens that must stop working before they expire: those of a session that ended (a
//! logout, a user deactivated, a refresh token presented twice) and those issued before the
//! user's roles or groups changed.
//!
//! Access tokens are verified without the database, so on their own they would keep working
//! until they expire (`WORKLEDGER_ACCESS_TOKEN_TTL`), with whatever roles they were issued
//! with. Every process that verifies tokens therefore keeps, for one token lifetime (older
//! tokens have all expired), the sessions that ended and the users whose access changed (with
//! the version of the user at which it did), and refuses their tokens. It loads them before it
//! serves and keeps them current with a watcher: the database announces each ended session on
//! [`ENDED_SESSIONS`] and each change of access on [`ACCESS_CHANGES`] (triggers, migrations
//! 0010 and 0011), and the watcher reloads everything after each (re)connection and every
//! [`RELOAD`] besides, so an announcement missed while disconnected is picked up. A reload
//! merges into what is known (it never forgets what was learned meanwhile); entries are
//! forgotten one token lifetime after the change.
//!
//! When the database cannot be reached, what is known stays: tokens of sessions ended (or
//! users changed) meanwhile work until they expire, as they would without this module.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use uuid::Uuid;

/// Where `auth_sessions` announces an ended session (its id as the payload).
pub const ENDED_SESSIONS: &str = "workledger_session_ended";

/// Where `identity_users` announces that a user's roles or groups changed (the user's id and
/// the version at which they did, separated by a space).
pub const ACCESS_CHANGES: &str = "workledger_access_changed";

/// How often the watcher reloads even without announcements.
const RELOAD: Duration = Duration::from_secs(30);

/// How long changes are kept before [`Revocations::watch`] says: the default token lifetime
/// and a margin.
const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60 + 60);

/// The sessions ended and the access changed within the last token lifetime (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct Revocations {
    state: RwLock<State>,
}

#[derive(Debug)]
struct State {
    /// How long after a change its tokens may still be presented.
    window: Duration,
    /// Ended sessions, each with when it may be forgotten.
    sessions: HashMap<Uuid, Instant>,
    /// Users whose roles or groups changed.
    access: HashMap<Uuid, Changed>,
}

/// The version of a user at which their access last changed, and when that may be forgotten.
#[derive(Debug, Clone, Copy)]
struct Changed {
    version: i64,
    until: Instant,
}

impl Default for State {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            sessions: HashMap::new(),
            access: HashMap::new(),
        }
    }
}

/// One reload's rows: the ended sessions and the changed users, each with the seconds left
/// until it may be forgotten.
#[derive(Debug, Default)]
struct Loaded {
    sessions: Vec<(Uuid, f64)>,
    access: Vec<(Uuid, i64, f64)>,
}

impl Revocations {
    /// Whether session `sid` has ended (as far as this process knows).
    pub fn session_ended(&self, sid: &Uuid) -> bool {
        self.read().sessions.contains_key(sid)
    }

    /// Whether a token issued for `user` at `access_version` predates a change of the user's
    /// roles or groups (as far as this process knows).
    pub fn access_outdated(&self, user: &Uuid, access_version: i64) -> bool {
        self.read()
            .access
            .get(user)
            .is_some_and(|changed| access_version < changed.version)
    }

    /// Notes that session `sid` ended (this process ended it; the others learn of it from
    /// the database).
    pub fn end_session(&self, sid: Uuid) {
        let mut state = self.write();
        let until = Instant::now() + state.window;
        note_session(&mut state.sessions, sid, until);
    }

    /// Notes that `user`'s access changed at `version` (this process changed it; the others
    /// learn of it from the database).
    pub fn change_access(&self, user: Uuid, version: i64) {
        let mut state = self.write();
        let until = Instant::now() + state.window;
        note_access(&mut state.access, user, version, until);
    }

    /// Loads the changes of the last `window`, then keeps them current on a task of its own,
    /// for as long as anyone holds `self` and the pool is open.
    pub async fn watch(self: &Arc<Self>, pool: PgPool, window: Duration) -> sqlx::Result<()> {
        self.write().window = window;
        self.reload(&pool).await?;
        tokio::spawn(watch(Arc::downgrade(self), pool));
        Ok(())
    }

    async fn reload(&self, pool: &PgPool) -> sqlx::Result<()> {
        let window = self.read().window.as_secs_f64();
        let sessions = sqlx::query_as(
            "select session_id, extract(epoch from revoked_at - now())::float8 + $1 \
             from auth_sessions where revoked_at > now() - make_interval(secs => $1)",
        )
        .bind(window)
        .fetch_all(pool)
        .await?;
        let access = sqlx::query_as(
            "select user_id, access_version, \
                    extract(epoch from access_changed_at - now())::float8 + $1 \
             from identity_users where access_changed_at > now() - make_interval(secs => $1)",
        )
        .bind(window)
        .fetch_all(pool)
        .await?;
        self.merge(Loaded { sessions, access }, Instant::now());
        Ok(())
    }

    /// Adds what a reload found to what is known, and forgets what is older than the window.
    fn merge(&self, loaded: Loaded, now: Instant) {
        let until = |left: f64| now + Duration::try_from_secs_f64(left).unwrap_or_default();
        let mut state = self.write();
        for (sid, left) in loaded.sessions {
            note_session(&mut state.sessions, sid, until(left));
        }
        for (user, version, left) in loaded.access {
            note_access(&mut state.access, user, version, until(left));
        }
        state.sessions.retain(|_, until| *until > now);
        state.access.retain(|_, kept| kept.until > now);
        metrics::gauge!("workledger_ended_sessions_watched").set(state.sessions.len() as f64);
        metrics::gauge!("workledger_access_changes_watched").set(state.access.len() as f64);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps session `sid` ended until at least `until`.
fn note_session(sessions: &mut HashMap<Uuid, Instant>, sid: Uuid, until: Instant) {
    let kept = sessions.entry(sid).or_insert(until);
    *kept = (*kept).max(until);
}

/// Keeps the newest change of `user`'s access, for as long as either change says.
fn note_access(access: &mut HashMap<Uuid, Changed>, user: Uuid, version: i64, until: Instant) {
    let kept = access.entry(user).or_insert(Changed { version, until });
    kept.version = kept.version.max(version);
    kept.until = kept.until.max(until);
}

async fn watch(revocations: Weak<Revocations>, pool: PgPool) {
    let mut backoff = Duration::from_millis(100);
    while !pool.is_closed() {
        let mut listener = match connect(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "cannot LISTEN for revoked access; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            let Some(revocations) = revocations.upgrade().filter(|_| !pool.is_closed()) else {
                return;
            };
            // after each (re)connection, and every RELOAD: whatever was missed meanwhile
            if let Err(error) = revocations.reload(&pool).await {
                tracing::warn!(error = %error, "cannot reload the revoked access");
            }
            if let Ok(Err(error)) =
                tokio::time::timeout(RELOAD, announced(&mut listener, &revocations)).await
            {
                tracing::warn!(error = %error, "LISTEN connection for revoked access failed; reconnecting");
                break;
            }
        }
    }
}

async fn connect(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([ENDED_SESSIONS, ACCESS_CHANGES])
        .await?;
    Ok(listener)
}

/// Notes announced changes until the connection is lost (`Ok`: the listener reconnects on its
/// next use, and announcements may have been missed meanwhile) or fails.
async fn announced(listener: &mut PgListener, revocations: &Revocations) -> sqlx::Result<()> {
    while let Some(notification) = listener.try_recv().await? {
        if !note(revocations, &notification) {
            tracing::warn!(
                channel = notification.channel(),
                payload = notification.payload(),
                "an announcement of revoked access is not understood"
            );
        }
    }
    Ok(())
}

fn note(revocations: &Revocations, notification: &PgNotification) -> bool {
    let payload = notification.payload();
    match notification.channel() {
        ENDED_SESSIONS => payload
            .parse()
            .map(|sid| revocations.end_session(sid))
            .is_ok(),
        ACCESS_CHANGES => payload
            .split_once(' ')
            .and_then(|(user, version)| Some((user.parse().ok()?, version.parse().ok()?)))
            .map(|(user, version)| revocations.change_access(user, version))
            .is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(sessions: &[(Uuid, f64)], access: &[(Uuid, i64, f64)]) -> Loaded {
        Loaded {
            sessions: sessions.to_vec(),
            access: access.to_vec(),
        }
    }

    #[test]
    fn a_reload_that_missed_a_change_noted_meanwhile_keeps_it() {
        let revocations = Revocations::default();
        let (sid, user) = (Uuid::now_v7(), Uuid::now_v7());
        // noted while a reload's queries ran, which did not see them yet
        revocations.end_session(sid);
        revocations.change_access(user, 4);
        revocations.merge(Loaded::default(), Instant::now());
        assert!(revocations.session_ended(&sid));
        assert!(revocations.access_outdated(&user, 3));
        assert!(!revocations.access_outdated(&user, 4));
    }

    #[test]
    fn the_newest_change_of_access_wins_whichever_arrives_first() {
        let revocations = Revocations::default();
        let user = Uuid::now_v7();
        revocations.change_access(user, 7);
        revocations.merge(loaded(&[], &[(user, 5, 60.0)]), Instant::now());
        assert!(revocations.access_outdated(&user, 6));
        revocations.change_access(user, 9);
        assert!(revocations.access_outdated(&user, 8));
        assert!(!revocations.access_outdated(&user, 9));
        // a user nobody changed, and a token issued after the change
        assert!(!revocations.access_outdated(&Uuid::now_v7(), 0));
    }

    #[test]
    fn changes_are_forgotten_once_their_tokens_have_expired() {
        let revocations = Revocations::default();
        let (old, recent, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let now = Instant::now();
        revocations.merge(
            loaded(&[(old, 10.0), (recent, 100.0)], &[(user, 2, 10.0)]),
            now,
        );
        assert!(revocations.session_ended(&old));
        revocations.merge(Loaded::default(), now + Duration::from_secs(50));
        assert!(!revocations.session_ended(&old));
        assert!(revocations.session_ended(&recent));
        assert!(!revocations.access_outdated(&user, 1));
    }
}
