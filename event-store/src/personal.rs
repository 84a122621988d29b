//! The per-person keys that seal personal data in the log (`personal_keys`, migration 0018;
//! the format is `event_schemas::personal`).
//!
//! - Appending: every personal field of an event is sealed with its person's key, created on
//!   first use ([`PersonalKeys::sealing_key`]). Keys used for sealing are remembered in memory
//!   for at most [`REMEMBERED_FOR`]: a key only ever goes away by an erasure, and a person is
//!   erased only once deactivated, so nothing is sealed for them afterwards (and were it, it
//!   would be unreadable: forgotten too); the bound keeps an erased key from living on in a
//!   process's memory.
//! - Reading: keys are read afresh for the values at hand ([`Keys::read`], [`open_all`]), never
//!   from memory, so an erasure takes effect at once on every process.
//! - Erasing: [`erase`] drops the key, in the identity projector's transaction that applies
//!   `UserErased`.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use event_schemas::personal::{PersonalKey, Unsealed, unseal};
use lru::LruCache;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::master_key;

/// Keys remembered for sealing, per process.
const REMEMBERED: usize = 10_000;

/// How long a key is remembered for sealing before it is read again.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(600);

/// Why personal data could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("user {0} was erased: nothing of theirs is stored any more")]
    Erased(Uuid),
    #[error("the event has no tenant in its metadata")]
    NoTenant,
    #[error(transparent)]
    Failed(#[from] event_schemas::personal::SealFailed),
    #[error("reading or creating a personal data key failed")]
    Store(#[from] sqlx::Error),
    #[error("a personal data key does not open")]
    Key(#[from] master_key::MasterKeyError),
}

/// The sealing side of the key store, with the keys it used remembered.
#[derive(Debug)]
pub struct PersonalKeys {
    remembered: Mutex<LruCache<(String, Uuid), (PersonalKey, Instant)>>,
}

impl Default for PersonalKeys {
    fn default() -> Self {
        Self {
            remembered: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).expect("not zero"),
            )),
        }
    }
}

impl PersonalKeys {
    /// The key that seals `user_id`'s data in `tenant_id`, created on first use.
    pub async fn sealing_key(
        &self,
        pool: &PgPool,
        tenant_id: &str,
        user_id: Uuid,
    ) -> Result<PersonalKey, SealError> {
        let id = (tenant_id.to_owned(), user_id);
        if let Some((key, since)) = self.lock().get(&id)
            && since.elapsed() < REMEMBERED_FOR
        {
            return Ok(key.clone());
        }
        let fresh = PersonalKey::generate();
        let owner = master_key::personal_key_owner(tenant_id, user_id);
        // two appends for one new person at once: one key wins, both seal with it
        sqlx::query(
            "insert into personal_keys (tenant_id, user_id, key) values ($1, $2, $3) \
             on conflict (tenant_id, user_id) do nothing",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(master_key::wrap(&fresh.as_bytes()[..], &owner))
        .execute(pool)
        .await?;
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "select key from personal_keys where tenant_id = $1 and user_id = $2",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_one(pool)
        .await?;
        let Some(stored) = stored else {
            return Err(SealError::Erased(user_id));
        };
        let key =
            PersonalKey::from_bytes(&master_key::unwrap(&stored, &owner)?).ok_or_else(|| {
                SealError::Store(sqlx::Error::Decode(
                    format!("the personal data key of user {user_id} is not 32 bytes").into(),
                ))
            })?;
        self.lock().put(id, (key.clone(), Instant::now()));
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<(String, Uuid), (PersonalKey, Instant)>> {
        self.remembered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What is known, as of now, of some persons' keys: the keys of those not erased, and who
/// was erased.
#[derive(Debug, Default)]
pub struct Keys {
    open: HashMap<Uuid, PersonalKey>,
    erased: HashSet<Uuid>,
}

impl Keys {
    /// Reads the keys of `user_ids` of `tenant_id` (never from memory: an erasure holds at
    /// once).
    pub async fn read(
        conn: &mut PgConnection,
        tenant_id: &str,
        user_ids: &[Uuid],
    ) -> Result<Self, sqlx::Error> {
        if user_ids.is_empty() {
            return Ok(Self::default());
        }
        let rows: Vec<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "select user_id, key from personal_keys where tenant_id = $1 and user_id = any($2)",
        )
        .bind(tenant_id)
        .bind(user_ids)
        .fetch_all(conn)
        .await?;
        let mut keys = Self::default();
        for (id, stored) in rows {
            let Some(stored) = stored else {
                keys.erased.insert(id);
                continue;
            };
            // a key that does not open is an error, never taken for an erasure (the master
            // key was checked at start, so this is a row altered in the database)
            let bytes = master_key::unwrap(&stored, &master_key::personal_key_owner(tenant_id, id))
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let key = PersonalKey::from_bytes(&bytes).ok_or_else(|| {
                sqlx::Error::Decode(
                    format!("the personal data key of user {id} is not 32 bytes").into(),
                )
            })?;
            keys.open.insert(id, key);
        }
        Ok(keys)
    }

    /// Whether `user_id` (among those read) was erased.
    pub fn erased(&self, user_id: Uuid) -> bool {
        self.erased.contains(&user_id)
    }

    /// `value` (sealed or plain), a field holding `owner`'s data, opened: `None` when it
    /// belongs to an erased person (or was sealed for anyone but `owner`).
    pub fn open(&self, value: &str, tenant_id: &str, owner: Option<Uuid>) -> Option<String> {
        match unseal(value, tenant_id, owner, |id| self.open.get(&id)) {
            Unsealed::Clear(text) => Some(text),
            Unsealed::Erased => None,
        }
    }
}

/// Opens each of `values`, fields of `tenant_id` holding `owner`'s data (sealed or plain),
/// reading the key in one query: `None` where it no longer opens (the owner was erased).
pub async fn open_all(
    conn: &mut PgConnection,
    tenant_id: &str,
    owner: Uuid,
    values: &[&str],
) -> Result<Vec<Option<String>>, sqlx::Error> {
    let keys = Keys::read(conn, tenant_id, &[owner]).await?;
    Ok(values
        .iter()
        .map(|value| {
            if keys.erased(owner) {
                None
            } else {
                keys.open(value, tenant_id, Some(owner))
            }
        })
        .collect())
}

/// Forgets `user_id` of `tenant_id`: their key is dropped for good (a key is made for them
/// now if they never had one, already dropped, so nothing can be sealed for them later).
/// `false` when they were erased before.
pub async fn erase(
    conn: &mut PgConnection,
    tenant_id: &str,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "insert into personal_keys (tenant_id, user_id, key, erased_at) \
         values ($1, $2, null, now()) \
         on conflict (tenant_id, user_id) do update set key = null, erased_at = now() \
         where personal_keys.key is not null",
    )
    .bind(tenant_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Seals, in place, the personal fields of one event about to be appended (most events have
/// none: they pass untouched, without a look at the store).
pub(crate) async fn seal_event(
    connections: &crate::connections::Connections,
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    metadata: &serde_json::Value,
    payload: &mut serde_json::Value,
) -> Result<(), SealError> {
    use event_schemas::personal::{has_personal_data, seal_payload, subject_of};
    if !has_personal_data(aggregate_type, event_type) {
        return Ok(());
    }
    let Some(subject) = subject_of(aggregate_type, aggregate_id, event_type, payload) else {
        // written by a service: no person's data
        return Ok(());
    };
    let tenant_id = metadata
        .get(event_schemas::metadata::TENANT_ID)
        .and_then(serde_json::Value::as_str)
        .ok_or(SealError::NoTenant)?;
    let key = connections
        .personal_keys()
        .sealing_key(connections.pool(), tenant_id, subject)
        .await?;
    seal_payload(
        aggregate_type,
        event_type,
        payload,
        tenant_id,
        subject,
        &key,
    )?;
    Ok(())
}
