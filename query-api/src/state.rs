//! What every query handler shares.

use std::time::Duration;

use api_common::TokenKeys;
use axum::extract::FromRef;
use sqlx::PgPool;

/// Settings of the query API.
#[derive(Debug, Clone)]
pub struct QuerySettings {
    /// How long a request with `X-Consistency-Token` waits for the projections behind it
    /// before answering 503 `consistency_timeout`.
    pub consistency_wait: Duration,
    /// Audit entries per database round trip of an export.
    pub export_batch: i64,
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self {
            consistency_wait: Duration::from_secs(5),
            export_batch: 2000,
        }
    }
}

/// The query API's state: the database, the token keys and the settings.
#[derive(Debug, Clone)]
pub struct QueryState {
    pub pool: PgPool,
    pub keys: TokenKeys,
    pub settings: QuerySettings,
}

impl QueryState {
    pub fn new(pool: PgPool, keys: TokenKeys, settings: QuerySettings) -> Self {
        Self {
            pool,
            keys,
            settings,
        }
    }
}

impl FromRef<QueryState> for TokenKeys {
    fn from_ref(state: &QueryState) -> Self {
        state.keys.clone()
    }
}
