//! Who is in a group: approvals offered to groups record the members at the moment they open.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
#[error("could not look up the members of group {group:?}")]
pub struct DirectoryError {
    pub group: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Resolves a tenant's group to its members' user ids.
pub trait Directory: Send + Sync + std::fmt::Debug {
    fn members<'a>(
        &'a self,
        tenant_id: &'a str,
        group: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Uuid>, DirectoryError>> + Send + 'a>>;
}

/// Group membership held in memory (tests, and deployments before identity is wired).
#[derive(Debug, Default)]
pub struct StaticDirectory {
    groups: RwLock<HashMap<(String, String), Vec<Uuid>>>,
}

impl StaticDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the members of `group` in `tenant_id`.
    pub fn set(&self, tenant_id: &str, group: &str, members: Vec<Uuid>) {
        self.groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((tenant_id.to_owned(), group.to_owned()), members);
    }
}

impl Directory for StaticDirectory {
    fn members<'a>(
        &'a self,
        tenant_id: &'a str,
        group: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Uuid>, DirectoryError>> + Send + 'a>> {
        let members = self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(tenant_id.to_owned(), group.to_owned()))
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(members) })
    }
}
