//! The master key that wraps the secrets Workledger keeps in Postgres: the per-person keys that
//! seal personal data (`personal_keys`), the two-factor authenticator keys
//! (`identity_two_factor`) and the generated access-token signing secret (`auth_secrets`, when
//! `WORKLEDGER_JWT_SECRET` is not set). With one configured (`WORKLEDGER_MASTER_KEY`), a copy
//! of the database alone (a dump, a backup, a replica, a stolen disk) opens no personal data,
//! no one's second factor, and mints no token: the key lives only in the processes'
//! configuration.
//!
//! - A wrapped secret is `WLK1 ‖ key id (8 bytes) ‖ nonce (12) ‖ AES-256-GCM ciphertext ‖ tag
//!   (16)`, the secret's owner (table, tenant, user) being the associated data: a wrapped key
//!   copied onto another person's row does not open.
//! - Secrets stored before a master key was configured stay readable as they are (random bytes
//!   that do not start with `WLK1`: the keys are at most 32 bytes, a wrapped secret at least
//!   40, and a generated signing secret is never made with that start), and `workledger admin
//!   wrap-secrets` wraps them.
//! - Rotation: configure the new key, keep the old one in `WORKLEDGER_MASTER_KEY_PREVIOUS` and
//!   run `workledger admin wrap-secrets`: every secret is then wrapped with the new key.
//! - The key is installed once per process, at start ([`install`]), after a check that it opens
//!   what is stored ([`check`]): a wrong or missing key stops the process at start rather than
//!   make personal data look erased later.

use std::sync::OnceLock;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use zeroize::Zeroizing;

/// What every wrapped secret starts with.
pub const MAGIC: &[u8; 4] = b"WLK1";
const ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a wrapped secret has beyond the secret itself.
const OVERHEAD: usize = MAGIC.len() + ID_LEN + NONCE_LEN + TAG_LEN;

/// A master key was configured wrongly, or does not open a stored secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterKeyError {
    #[error("{variable} must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)")]
    Malformed { variable: &'static str },
    #[error(
        "a stored secret is wrapped with a master key that is not configured \
         (WORKLEDGER_MASTER_KEY, or WORKLEDGER_MASTER_KEY_PREVIOUS during a rotation)"
    )]
    Unknown,
    #[error("a stored secret does not open with the master key it names: it was altered")]
    Altered,
}

/// One master key.
#[derive(Clone)]
pub struct MasterKey {
    id: [u8; ID_LEN],
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the id only: never the key
        f.debug_struct("MasterKey")
            .field("id", &hex::encode(self.id))
            .finish()
    }
}

impl MasterKey {
    /// The key in `base64` (32 bytes), as `variable` gives it.
    pub fn from_base64(base64: &str, variable: &'static str) -> Result<Self, MasterKeyError> {
        let bytes = STANDARD
            .decode(base64.trim())
            .map_err(|_| MasterKeyError::Malformed { variable })?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| MasterKeyError::Malformed { variable })?;
        Ok(Self::from_bytes(&bytes))
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"workledger master key id\0")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&digest[..ID_LEN]);
        Self {
            id,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)),
        }
    }

    /// A new random key, in base64 (`workledger admin master-key`).
    pub fn generate_base64() -> String {
        STANDARD.encode(Aes256Gcm::generate_key(OsRng))
    }
}

/// The configured master key (`current`, which wraps) and the others that only open: the
/// replaced key during a rotation, or the next key while not every process has it yet.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    current: Option<MasterKey>,
    previous: Vec<MasterKey>,
}

impl MasterKeys {
    pub fn new(current: Option<MasterKey>, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    /// Whether new secrets are wrapped (a current key is configured).
    pub fn wraps(&self) -> bool {
        self.current.is_some()
    }

    /// Whether these are the same keys as `other` (by key id).
    pub fn same_as(&self, other: &MasterKeys) -> bool {
        let ids = |keys: &MasterKeys| {
            (
                keys.current.as_ref().map(|k| k.id),
                keys.previous.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
        };
        ids(self) == ids(other)
    }

    fn all(&self) -> impl Iterator<Item = &MasterKey> {
        self.current.iter().chain(&self.previous)
    }

    /// `secret` wrapped with the current key, for `owner` (the associated data); as it is
    /// when no current key is configured.
    pub fn wrap(&self, secret: &[u8], owner: &[u8]) -> Vec<u8> {
        let Some(current) = &self.current else {
            return secret.to_vec();
        };
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let sealed = current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret,
                    aad: owner,
                },
            )
            .expect("AES-GCM encrypts any secret of this size");
        let mut out = Vec::with_capacity(OVERHEAD + secret.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// `stored` (for `owner`) wrapped with the current key; `None` when it is already.
    pub fn rewrap(&self, stored: &[u8], owner: &[u8]) -> Result<Option<Vec<u8>>, MasterKeyError> {
        if self.is_current(stored) {
            return Ok(None);
        }
        Ok(Some(self.wrap(&self.unwrap(stored, owner)?, owner)))
    }

    /// Whether `stored` is wrapped with the current key already.
    pub fn is_current(&self, stored: &[u8]) -> bool {
        self.current
            .as_ref()
            .is_some_and(|current| wrapped_id(stored) == Some(&current.id[..]))
    }

    /// `stored` opened: a wrapped secret with whichever configured key it names, a secret
    /// stored before wrapping as it is.
    pub fn unwrap(
        &self,
        stored: &[u8],
        owner: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
        let Some(id) = wrapped_id(stored) else {
            return Ok(Zeroizing::new(stored.to_vec()));
        };
        let key = self
            .all()
            .find(|k| k.id[..] == *id)
            .ok_or(MasterKeyError::Unknown)?;
        let nonce_at = MAGIC.len() + ID_LEN;
        let nonce = Nonce::from_slice(&stored[nonce_at..nonce_at + NONCE_LEN]);
        key.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &stored[nonce_at + NONCE_LEN..],
                    aad: owner,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| MasterKeyError::Altered)
    }
}

/// The key id of a wrapped secret; `None` for a secret stored before wrapping (at most 32
/// bytes, so never mistaken for a wrapped one).
fn wrapped_id(stored: &[u8]) -> Option<&[u8]> {
    (stored.len() >= OVERHEAD && stored.starts_with(MAGIC))
        .then(|| &stored[MAGIC.len()..MAGIC.len() + ID_LEN])
}

static INSTALLED: OnceLock<Option<MasterKeys>> = OnceLock::new();

/// Makes `keys` this process's master keys (`None`: secrets are stored as they are). Once per
/// process: a second call with the same keys changes nothing; `false` when it brought other
/// keys (they are not installed).
pub fn install(keys: Option<MasterKeys>) -> bool {
    let same = |installed: &Option<MasterKeys>| match (installed, &keys) {
        (Some(a), Some(b)) => a.same_as(b),
        (None, None) => true,
        _ => false,
    };
    let installed = INSTALLED.get_or_init(|| keys.clone());
    same(installed)
}

/// This process's master keys, if any were installed.
pub fn installed() -> Option<&'static MasterKeys> {
    INSTALLED.get().and_then(Option::as_ref)
}

/// `secret` as it is to be stored for `owner`: wrapped when a master key is installed.
pub fn wrap(secret: &[u8], owner: &[u8]) -> Vec<u8> {
    match installed() {
        Some(keys) => keys.wrap(secret, owner),
        None => secret.to_vec(),
    }
}

/// `stored` (for `owner`) opened with the installed keys.
pub fn unwrap(stored: &[u8], owner: &[u8]) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
    match installed() {
        Some(keys) => keys.unwrap(stored, owner),
        None if wrapped_id(stored).is_some() => Err(MasterKeyError::Unknown),
        None => Ok(Zeroizing::new(stored.to_vec())),
    }
}

/// The associated data of a personal data key.
pub fn personal_key_owner(tenant_id: &str, user_id: uuid::Uuid) -> Vec<u8> {
    format!("personal_keys\0{tenant_id}\0{user_id}").into_bytes()
}

/// The associated data of a generated server secret (`auth_secrets`).
pub fn signing_secret_owner(name: &str) -> Vec<u8> {
    format!("auth_secrets\0{name}").into_bytes()
}

/// The associated data of a two-factor secret.
pub fn two_factor_owner(user_id: uuid::Uuid) -> Vec<u8> {
    format!("identity_two_factor\0{user_id}").into_bytes()
}

/// Whether `keys` (what this process is configured with) open every stored secret's key:
/// each key id found among the stored secrets must be configured. Run at start, before
/// [`install`].
pub async fn check(
    conn: &mut PgConnection,
    keys: Option<&MasterKeys>,
) -> Result<Result<(), MasterKeyError>, sqlx::Error> {
    let ids = stored_key_ids(conn).await?;
    let known = |id: &[u8]| keys.is_some_and(|keys| keys.all().any(|k| k.id[..] == *id));
    Ok(
        match ids.iter().flat_map(|(id, _)| id).all(|id| known(id)) {
            true => Ok(()),
            false => Err(MasterKeyError::Unknown),
        },
    )
}

/// The stored secrets (personal data keys, two-factor secrets, server secrets) counted by the
/// key id they are wrapped with (`None`: unwrapped).
async fn stored_key_ids(
    conn: &mut PgConnection,
) -> Result<Vec<(Option<Vec<u8>>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select case when octet_length(s) >= $1 and substr(s, 1, 4) = $2 \
                     then substr(s, 5, 8) end, count(*) \
         from (select key as s from personal_keys where key is not null \
               union all select secret from identity_two_factor \
               union all select secret from auth_secrets) stored \
         group by 1",
    )
    .bind(OVERHEAD as i32)
    .bind(&MAGIC[..])
    .fetch_all(conn)
    .await
}

/// How the stored secrets stand (`workledger status`): wrapped with the current key, wrapped
/// with another one, or unwrapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Census {
    pub wrapped_current: i64,
    pub wrapped_other: i64,
    pub unwrapped: i64,
}

/// Counts the stored secrets (personal data keys, two-factor secrets, server secrets) by how
/// they are wrapped, the current key being that of `keys`.
pub async fn census(
    conn: &mut PgConnection,
    keys: Option<&MasterKeys>,
) -> Result<Census, sqlx::Error> {
    let rows = stored_key_ids(conn).await?;
    let current = keys.and_then(|keys| keys.current.as_ref()).map(|k| k.id);
    let mut census = Census::default();
    for (id, count) in rows {
        match id {
            None => census.unwrapped += count,
            Some(id) if current.is_some_and(|current| current[..] == id[..]) => {
                census.wrapped_current += count
            }
            Some(_) => census.wrapped_other += count,
        }
    }
    Ok(census)
}

/// What [`wrap_stored`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wrapped {
    pub personal_keys: u64,
    pub two_factor_secrets: u64,
    pub server_secrets: u64,
}

/// Wraps every stored secret that is not wrapped with the current key yet (stored before a
/// master key was configured, or with a previous one), one row at a time, each in its own
/// statement: safe while Workledger runs, and resumable.
pub async fn wrap_stored(
    conn: &mut PgConnection,
    keys: &MasterKeys,
) -> Result<Result<Wrapped, MasterKeyError>, sqlx::Error> {
    let mut done = Wrapped::default();
    let rows: Vec<(String, uuid::Uuid, Vec<u8>)> =
        sqlx::query_as("select tenant_id, user_id, key from personal_keys where key is not null")
            .fetch_all(&mut *conn)
            .await?;
    for (tenant_id, user_id, stored) in rows {
        let wrapped = match keys.rewrap(&stored, &personal_key_owner(&tenant_id, user_id)) {
            Ok(Some(wrapped)) => wrapped,
            Ok(None) => continue,
            Err(error) => return Ok(Err(error)),
        };
        // only if unchanged meanwhile (an erasure wins)
        let result = sqlx::query(
            "update personal_keys set key = $4 where tenant_id = $1 and user_id = $2 and key = $3",
        )
        .bind(&tenant_id)
        .bind(user_id)
        .bind(&stored)
        .bind(wrapped)
        .execute(&mut *conn)
        .await?;
        done.personal_keys += result.rows_affected();
    }
    let rows: Vec<(uuid::Uuid, Vec<u8>)> =
        sqlx::query_as("select user_id, secret from identity_two_factor")
            .fetch_all(&mut *conn)
            .await?;
    for (user_id, stored) in rows {
        let wrapped = match keys.rewrap(&stored, &two_factor_owner(user_id)) {
            Ok(Some(wrapped)) => wrapped,
            Ok(None) => continue,
            Err(error) => return Ok(Err(error)),
        };
        let result = sqlx::query(
            "update identity_two_factor set secret = $3 where user_id = $1 and secret = $2",
        )
        .bind(user_id)
        .bind(&stored)
        .bind(wrapped)
        .execute(&mut *conn)
        .await?;
        done.two_factor_secrets += result.rows_affected();
    }
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("select name, secret from auth_secrets")
        .fetch_all(&mut *conn)
        .await?;
    for (name, stored) in rows {
        let wrapped = match keys.rewrap(&stored, &signing_secret_owner(&name)) {
            Ok(Some(wrapped)) => wrapped,
            Ok(None) => continue,
            Err(error) => return Ok(Err(error)),
        };
        let result =
            sqlx::query("update auth_secrets set secret = $3 where name = $1 and secret = $2")
                .bind(&name)
                .bind(&stored)
                .bind(wrapped)
                .execute(&mut *conn)
                .await?;
        done.server_secrets += result.rows_affected();
    }
    Ok(Ok(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(byte: u8) -> MasterKeys {
        MasterKeys::new(Some(MasterKey::from_bytes(&[byte; 32])), Vec::new())
    }

    #[test]
    fn a_wrapped_secret_opens_only_for_its_owner_with_its_key() {
        let keys = master(1);
        let wrapped = keys.wrap(&[7u8; 32], b"alice");
        assert_eq!(wrapped.len(), 32 + OVERHEAD);
        assert!(!wrapped.windows(32).any(|w| w == [7u8; 32]), "not in clear");
        assert_eq!(*keys.unwrap(&wrapped, b"alice").unwrap(), vec![7u8; 32]);
        assert_eq!(keys.unwrap(&wrapped, b"bob"), Err(MasterKeyError::Altered));
        let mut flipped = wrapped.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            keys.unwrap(&flipped, b"alice"),
            Err(MasterKeyError::Altered)
        );
        assert_eq!(
            master(2).unwrap(&wrapped, b"alice"),
            Err(MasterKeyError::Unknown)
        );
    }

    #[test]
    fn secrets_stored_before_wrapping_read_as_they_are() {
        let keys = master(1);
        for clear in [
            vec![9u8; 32],
            b"12345678901234567890".to_vec(),
            b"WLK1".repeat(8),
        ] {
            assert!(!keys.is_current(&clear));
            assert_eq!(*keys.unwrap(&clear, b"alice").unwrap(), clear);
        }
    }

    #[test]
    fn a_previous_key_still_opens_during_a_rotation() {
        let old = master(1);
        let wrapped = old.wrap(b"secret", b"alice");
        let rotated = MasterKeys::new(
            Some(MasterKey::from_bytes(&[2; 32])),
            vec![MasterKey::from_bytes(&[1; 32])],
        );
        assert!(!rotated.is_current(&wrapped));
        assert_eq!(*rotated.unwrap(&wrapped, b"alice").unwrap(), b"secret");
        assert!(rotated.is_current(&rotated.wrap(b"secret", b"alice")));
        // before a rotation or the first key, every process learns the next key as one that
        // only opens: it writes as before and reads what others wrap with the next key
        let learning = MasterKeys::new(None, vec![MasterKey::from_bytes(&[1; 32])]);
        assert!(!learning.wraps());
        assert_eq!(learning.wrap(b"secret", b"alice"), b"secret");
        assert_eq!(*learning.unwrap(&wrapped, b"alice").unwrap(), b"secret");
    }

    #[test]
    fn a_key_must_be_32_bytes_of_base64() {
        let variable = "WORKLEDGER_MASTER_KEY";
        assert!(MasterKey::from_base64(&MasterKey::generate_base64(), variable).is_ok());
        for bad in ["", "not base64!", &STANDARD.encode([0u8; 16])] {
            assert_eq!(
                MasterKey::from_base64(bad, variable).unwrap_err(),
                MasterKeyError::Malformed { variable }
            );
        }
        // the message names the variable, never the value
        let message = MasterKey::from_base64("c2VjcmV0", variable)
            .unwrap_err()
            .to_string();
        assert!(message.contains(variable) && !message.contains("c2VjcmV0"));
    }
}
