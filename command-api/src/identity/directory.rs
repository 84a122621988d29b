//! Group membership for the orchestrator, from the identity read model.

use std::future::Future;
use std::pin::Pin;

use orchestrator::{Directory, DirectoryError};
use sqlx::PgPool;
use uuid::Uuid;

use super::store;

/// Resolves a tenant's group to its active members (by user id, sorted), reading
/// `identity_users`. Approvals offered to a group record its members when they open.
#[derive(Debug, Clone)]
pub struct PgDirectory {
    pool: PgPool,
}

impl PgDirectory {
    /// A directory reading `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Directory for PgDirectory {
    fn members<'a>(
        &'a self,
        tenant_id: &'a str,
        group: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Uuid>, DirectoryError>> + Send + 'a>> {
        Box::pin(async move {
            store::group_members(&self.pool, tenant_id, group)
                .await
                .map_err(|source| DirectoryError {
                    group: group.to_owned(),
                    source: Box::new(source),
                })
        })
    }
}
