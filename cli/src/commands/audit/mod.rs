//! `workledger audit export` and `workledger audit verify`: the audit trail to a file with a
//! manifest (and optionally an Ed25519 signature of it), and checking such a file.
//!
//! The export streams one chunk at a time (constant memory); the manifest records what a
//! verifier needs to notice a truncated or altered file: the count, each tenant chain's
//! stretch and final hash, and the file's sha256. The signature covers the manifest's
//! canonical bytes (sorted keys, no whitespace: [`projections::audit::canonical_json`]).

mod export;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

pub use export::{check_window, export};
pub use verify::verify;

/// The environment variable holding a base64 Ed25519 seed to sign manifests with.
pub const SIGNING_KEY_ENV: &str = "WORKLEDGER_AUDIT_SIGNING_KEY";

/// The export does not match its chain, manifest or signature: exit code 5.
#[derive(Debug, thiserror::Error)]
#[error("tampered: {0}")]
pub struct Tampered(pub String);

/// What an export covers, written beside it as `FILE.manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `jsonl` or `csv`.
    pub format: String,
    pub created_at: DateTime<Utc>,
    /// Entries in the file.
    pub count: u64,
    /// The log position of the earliest and latest entry (`TX.POSITION`).
    pub first_position: Option<String>,
    pub last_position: Option<String>,
    /// When the earliest and latest entry occurred.
    pub first_occurred_at: Option<DateTime<Utc>>,
    pub last_occurred_at: Option<DateTime<Utc>>,
    /// The `--from` / `--to` asked for.
    pub requested_from: Option<DateTime<Utc>>,
    pub requested_to: Option<DateTime<Utc>>,
    /// One stretch of chain per tenant.
    pub tenants: Vec<TenantChain>,
    /// Lowercase hex sha256 of the exported file.
    pub sha256: String,
    /// Base64 Ed25519 public key when the manifest is signed (`FILE.manifest.sig`).
    pub public_key: Option<String>,
}

/// One tenant's stretch of chain in an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantChain {
    pub tenant_id: String,
    pub entries: u64,
    pub first_seq: i64,
    pub last_seq: i64,
    /// The hash the first entry links on from (64 zeros when the export starts the chain).
    pub first_prev_hash: String,
    pub final_hash: String,
}

pub(crate) fn manifest_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

pub(crate) fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".manifest.sig");
    PathBuf::from(name)
}

/// The key to sign with: `--signing-key FILE`, else the environment, else none.
pub(crate) fn signing_key(file: Option<&Path>) -> anyhow::Result<Option<SigningKey>> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the signing key {}", path.display()))?,
        None => match std::env::var(SIGNING_KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => text,
            _ => return Ok(None),
        },
    };
    let bytes = B64
        .decode(text.trim())
        .context("the signing key is not base64")?;
    let seed: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!(
            "the signing key is {} bytes, expected a 32-byte seed",
            b.len()
        )
    })?;
    Ok(Some(SigningKey::from_bytes(&seed)))
}
