//! Published definition versions, cached: a version never changes once published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::definition::PublishedDefinition;
use domain::{WorkflowDefinition, ids};
use event_store::Executor;

use crate::error::RuntimeError;

type Versions = HashMap<(String, String, u32), Arc<PublishedDefinition>>;
/// Per `(tenant, key)`: the latest version, and the aggregate's version it was read at.
type Latest = HashMap<(String, String), (usize, Arc<PublishedDefinition>)>;

/// Loads `(tenant, key, version)` from the definition's aggregate once, then from memory.
#[derive(Debug, Default)]
pub(crate) struct DefinitionCache {
    versions: Mutex<Versions>,
    latest: Mutex<Latest>,
}

impl DefinitionCache {
    /// The requested version, or the latest when `version` is `None` (a newer version may be
    /// published at any time, by any process: the latest is taken from memory only while the
    /// definition's aggregate is still at the version it was read at, asked with an
    /// index-only read).
    pub(crate) async fn get(
        &self,
        store: &Executor<WorkflowDefinition>,
        tenant_id: &str,
        key: &str,
        version: Option<u32>,
    ) -> Result<Arc<PublishedDefinition>, RuntimeError> {
        if let Some(v) = version
            && let Some(found) =
                lock(&self.versions).get(&(tenant_id.to_owned(), key.to_owned(), v))
        {
            return Ok(found.clone());
        }
        let not_found = || RuntimeError::DefinitionNotFound {
            key: key.to_owned(),
            version,
        };
        let id = ids::definition_id(tenant_id, key);
        let latest_key = (tenant_id.to_owned(), key.to_owned());
        if version.is_none() {
            let stored = store.stored_version(&id).await?;
            if let Some((at, latest)) = lock(&self.latest).get(&latest_key)
                && *at == stored
            {
                return Ok(latest.clone());
            }
        }
        let (aggregate, at) = store.load(&id).await?;
        if aggregate.tenant_id() != Some(tenant_id) {
            return Err(not_found());
        }
        let published = aggregate.version(version).ok_or_else(not_found)?;
        let parsed = Arc::new(
            published
                .parse()
                .map_err(|e| RuntimeError::Store(Box::new(e)))?,
        );
        lock(&self.versions).insert(
            (tenant_id.to_owned(), key.to_owned(), parsed.version),
            parsed.clone(),
        );
        if version.is_none() {
            lock(&self.latest).insert(latest_key, (at, parsed.clone()));
        }
        Ok(parsed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
