//! Group membership for the orchestrator, from the identity read model.

use std::future::Future;
use std::pin::Pin;

use event_store::connections::Connections;
use orchestrator::{Directory, DirectoryError};
use uuid::Uuid;

use super::store;

/// Resolves a tenant's group to its active members (by user id, sorted), reading
/// `identity_users`. Approvals offered to a group record its members when they open.
#[derive(Debug, Clone)]
pub struct PgDirectory {
    connections: Connections,
}

impl PgDirectory {
    /// A directory reading through `connections` (those of the runtime it serves: it is asked
    /// in the middle of a command).
    pub fn new(connections: Connections) -> Self {
        Self { connections }
    }
}

impl Directory for PgDirectory {
    fn members<'a>(
        &'a self,
        tenant_id: &'a str,
        group: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Uuid>, DirectoryError>> + Send + 'a>> {
        Box::pin(async move {
            let members = match self.connections.acquire().await {
                Ok(mut conn) => {
                    let members = store::group_members(&mut *conn, tenant_id, group).await;
                    conn.keep_after(&members);
                    members
                }
                Err(error) => Err(error),
            };
            members.map_err(|source| DirectoryError {
                group: group.to_owned(),
                source: Box::new(source),
            })
        })
    }
}
