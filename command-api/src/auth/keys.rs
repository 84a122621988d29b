//! The server's secret: configured, or generated once and shared via the database. It signs
//! access tokens and keys the fingerprints of idempotent requests.

use api_common::TokenKeys;
use event_store::master_key;
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use zeroize::Zeroizing;

use crate::idempotency::Fingerprints;

const SIGNING_SECRET: &str = "access_token_signing_key";

/// Why the signing keys could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("WORKLEDGER_JWT_SECRET is not usable: {0}")]
    Configured(&'static str),
    #[error("could not read or store the generated signing secret")]
    Database(#[from] sqlx::Error),
    #[error("the stored signing secret is not usable: {0}")]
    Stored(&'static str),
    #[error("the stored signing secret does not open")]
    Wrapped(#[from] master_key::MasterKeyError),
}

/// The keys made from the secret.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Sign and verify access tokens. The query API must use the same ones.
    pub tokens: TokenKeys,
    /// Fingerprint requests sent with an `Idempotency-Key`.
    pub fingerprints: Fingerprints,
}

impl Keys {
    fn from_secret(secret: &[u8]) -> Result<Self, &'static str> {
        Ok(Self {
            tokens: TokenKeys::from_secret(secret)?,
            fingerprints: Fingerprints::from_secret(secret),
        })
    }
}

/// The keys from `configured` (`WORKLEDGER_JWT_SECRET`, at least 32 bytes) when given;
/// otherwise from the secret stored in the database, generated (64 random bytes) on first
/// start (stored wrapped with the master key when one is configured: `event_store::master_key`).
/// Every instance on the same database agrees on it, and tokens survive restarts. A configured
/// secret, or a master key, keeps the database's readers from minting tokens.
pub async fn load_keys(pool: &PgPool, configured: Option<&SecretString>) -> Result<Keys, KeyError> {
    if let Some(secret) = configured {
        return Keys::from_secret(secret.expose_secret().as_bytes()).map_err(KeyError::Configured);
    }
    // wiped when dropped, as the secret read back is (sqlx's own copy of the statement's
    // arguments is not)
    let mut fresh = Zeroizing::new(vec![0u8; 64]);
    OsRng.fill_bytes(&mut fresh);
    // never one that could be taken for a wrapped secret
    while fresh.starts_with(master_key::MAGIC) {
        OsRng.fill_bytes(&mut fresh);
    }
    let owner = master_key::signing_secret_owner(SIGNING_SECRET);
    // first instance wins; everyone reads the winner's secret
    sqlx::query(
        "insert into auth_secrets (name, secret) values ($1, $2) on conflict (name) do nothing",
    )
    .bind(SIGNING_SECRET)
    .bind(Zeroizing::new(master_key::wrap(&fresh, &owner)).as_slice())
    .execute(pool)
    .await?;
    let stored: Zeroizing<Vec<u8>> =
        sqlx::query_scalar::<_, Vec<u8>>("select secret from auth_secrets where name = $1")
            .bind(SIGNING_SECRET)
            .fetch_one(pool)
            .await
            .map(Zeroizing::new)?;
    Keys::from_secret(&master_key::unwrap(&stored, &owner)?).map_err(KeyError::Stored)
}
