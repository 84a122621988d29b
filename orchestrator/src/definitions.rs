//! Published definition versions, cached: a version never changes once published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::definition::PublishedDefinition;
use domain::{WorkflowDefinition, ids};
use event_store::Executor;

use crate::error::RuntimeError;

/// Loads `(tenant, key, version)` from the definition's aggregate once, then from memory.
#[derive(Debug, Default)]
pub(crate) struct DefinitionCache {
    versions: Mutex<HashMap<(String, String, u32), Arc<PublishedDefinition>>>,
}

impl DefinitionCache {
    /// The requested version, or the latest when `version` is `None` (never cached: a newer
    /// version may be published at any time).
    pub(crate) async fn get(
        &self,
        store: &Executor<WorkflowDefinition>,
        tenant_id: &str,
        key: &str,
        version: Option<u32>,
    ) -> Result<Arc<PublishedDefinition>, RuntimeError> {
        if let Some(v) = version
            && let Some(found) = self.lock().get(&(tenant_id.to_owned(), key.to_owned(), v))
        {
            return Ok(found.clone());
        }
        let not_found = || RuntimeError::DefinitionNotFound {
            key: key.to_owned(),
            version,
        };
        let (aggregate, _) = store.load(&ids::definition_id(tenant_id, key)).await?;
        if aggregate.tenant_id() != Some(tenant_id) {
            return Err(not_found());
        }
        let published = aggregate.version(version).ok_or_else(not_found)?;
        let parsed = Arc::new(
            published
                .parse()
                .map_err(|e| RuntimeError::Store(Box::new(e)))?,
        );
        self.lock().insert(
            (tenant_id.to_owned(), key.to_owned(), parsed.version),
            parsed.clone(),
        );
        Ok(parsed)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String, u32), Arc<PublishedDefinition>>> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }
}
