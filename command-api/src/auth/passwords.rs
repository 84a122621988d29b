//! Password hashing: argon2id, on the blocking thread pool (a hash takes tens of milliseconds
//! of CPU, which must not stall the async workers).

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

use crate::settings::PasswordHashing;

/// Why hashing or verifying could not run (never "wrong password": that is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing parameters are not valid: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the password hashing task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Hashes and verifies passwords with one set of argon2id parameters.
#[derive(Clone)]
pub struct Passwords {
    hasher: Arc<Argon2<'static>>,
    /// A hash of a random password, verified against when the account does not exist, so an
    /// unknown email costs the same time as a wrong password.
    dummy: Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords(argon2id)")
    }
}

impl Passwords {
    /// Prepares the hasher (and hashes the dummy password, off the async workers).
    pub async fn new(params: PasswordHashing) -> Result<Self, PasswordError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let hasher = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let for_dummy = hasher.clone();
        let dummy = tokio::task::spawn_blocking(move || {
            let mut random = [0u8; 32];
            rand::RngCore::fill_bytes(&mut OsRng, &mut random);
            hash_with(&for_dummy, &hex::encode(random))
        })
        .await??;
        Ok(Self {
            hasher,
            dummy: dummy.into(),
        })
    }

    /// A PHC-format argon2id hash of `password` with a fresh salt.
    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let hasher = self.hasher.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || hash_with(&hasher, password.expose_secret())).await?
    }

    /// Whether `password` matches `stored` (a PHC string). With `None` (no such account) a
    /// dummy hash is verified instead and the answer is `false`, in about the same time.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let hasher = self.hasher.clone();
        let password = password.clone();
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.to_string());
        let matches = tokio::task::spawn_blocking(move || {
            // a stored hash that does not parse matches nothing (and is worth a warning)
            match PasswordHash::new(&stored) {
                Ok(parsed) => hasher
                    .verify_password(password.expose_secret().as_bytes(), &parsed)
                    .is_ok(),
                Err(error) => {
                    tracing::warn!(error = %error, "a stored password hash does not parse");
                    false
                }
            }
        })
        .await?;
        Ok(known && matches)
    }
}

fn hash_with(hasher: &Argon2<'static>, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: PasswordHashing = PasswordHashing {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[tokio::test]
    async fn a_password_verifies_against_its_hash_and_nothing_else_does() {
        let passwords = Passwords::new(CHEAP).await.unwrap();
        let secret = SecretString::from("correct horse battery staple");
        let hash = passwords.hash(&secret).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(passwords.verify(&secret, Some(hash.clone())).await.unwrap());
        let wrong = SecretString::from("correct horse battery stapler");
        assert!(!passwords.verify(&wrong, Some(hash)).await.unwrap());
        assert!(!passwords.verify(&secret, None).await.unwrap());
        assert!(
            !passwords
                .verify(&secret, Some("not a hash".into()))
                .await
                .unwrap()
        );
    }

    #[test]
    fn the_default_parameters_are_owasps() {
        let params = Params::new(
            PasswordHashing::default().memory_kib,
            PasswordHashing::default().iterations,
            PasswordHashing::default().parallelism,
            None,
        )
        .unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (19_456, 2, 1)
        );
    }
}
