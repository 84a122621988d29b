//! What every command handler shares.

use std::sync::Arc;

use api_common::TokenKeys;
use axum::extract::FromRef;
use orchestrator::Runtime;
use sqlx::PgPool;

use crate::auth::{Keys, Sessions, Throttle};
use crate::idempotency::Fingerprints;
use crate::identity::Identity;
use crate::settings::CommandSettings;
use tokio_util::task::TaskTracker;

/// The command API's state: the database, the workflow runtime, identity, token keys and
/// settings. Cheap to clone.
#[derive(Clone)]
pub struct CommandState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    runtime: Arc<Runtime>,
    identity: Identity,
    sessions: Sessions,
    throttle: Throttle,
    keys: TokenKeys,
    fingerprints: Fingerprints,
    settings: CommandSettings,
    /// Commands that hold an `Idempotency-Key` run as tasks of their own, which outlive a
    /// request given up by its client: shutdown waits for these too.
    detached: TaskTracker,
}

impl std::fmt::Debug for CommandState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandState")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl CommandState {
    pub(crate) fn new(
        pool: PgPool,
        runtime: Arc<Runtime>,
        identity: Identity,
        keys: Keys,
        settings: CommandSettings,
    ) -> Self {
        let sessions = Sessions::new(
            pool.clone(),
            keys.tokens.clone(),
            settings.access_token_ttl,
            settings.refresh_token_ttl,
        );
        let throttle = Throttle::new(pool.clone(), settings.login_throttle.clone());
        Self {
            inner: Arc::new(Inner {
                pool,
                runtime,
                identity,
                sessions,
                throttle,
                keys: keys.tokens,
                fingerprints: keys.fingerprints,
                settings,
                detached: TaskTracker::new(),
            }),
        }
    }

    /// The database.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The commands running as tasks of their own (see [`crate::idempotency`]).
    pub fn detached(&self) -> &TaskTracker {
        &self.inner.detached
    }

    /// The workflow runtime (shared with the process manager and the timer worker).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    /// The identity commands.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// Token issuing and rotation.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// The login throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// The keys access tokens are signed and verified with.
    pub fn token_keys(&self) -> &TokenKeys {
        &self.inner.keys
    }

    /// The key of idempotent requests' fingerprints.
    pub fn fingerprints(&self) -> &Fingerprints {
        &self.inner.fingerprints
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &CommandSettings {
        &self.inner.settings
    }
}

impl FromRef<CommandState> for TokenKeys {
    fn from_ref(state: &CommandState) -> Self {
        state.inner.keys.clone()
    }
}
