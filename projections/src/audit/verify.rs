//! Recomputing hash chains entry by entry, naming the first entry that does not fit.

use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;

use super::{AuditEntry, GENESIS, entry_hash};

/// What is wrong with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Its `hash` is not the hash of its fields: the entry was edited.
    HashMismatch { expected: String, found: String },
    /// Its `prev_hash` is not the previous entry's hash: an entry was removed, inserted or moved.
    BrokenLink { expected: String, found: String },
    /// Its `chain_seq` does not follow the previous entry's.
    Gap { expected: i64, found: i64 },
    /// The first entry of a chain (`chain_seq` 1) does not link to the genesis hash.
    BadGenesis,
    /// A hash is not 64 hex digits.
    MalformedHash,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::HashMismatch { expected, found } => {
                write!(
                    f,
                    "its hash is {found} but its content hashes to {expected} (edited)"
                )
            }
            Problem::BrokenLink { expected, found } => write!(
                f,
                "its prev_hash is {found} but the previous entry's hash is {expected} \
                 (an entry was removed, inserted or moved)"
            ),
            Problem::Gap { expected, found } => {
                write!(
                    f,
                    "chain_seq {found} follows {} (expected {expected})",
                    expected - 1
                )
            }
            Problem::BadGenesis => f.write_str("the first entry does not link to the genesis hash"),
            Problem::MalformedHash => f.write_str("a hash is not 64 hexadecimal digits"),
        }
    }
}

/// The first entry that does not fit its chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {chain_seq} of tenant {tenant_id} (event {event_id}): {problem}")]
pub struct ChainError {
    pub tenant_id: String,
    pub chain_seq: i64,
    pub event_id: Uuid,
    pub problem: Problem,
}

/// What a verified run of entries covered, per tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub tenant_id: String,
    pub entries: u64,
    pub first_seq: i64,
    pub last_seq: i64,
    /// The hash the last entry links on from (64 zeros when the run starts the chain).
    pub first_prev_hash: String,
    pub last_hash: String,
}

/// Recomputes hash chains entry by entry (in chain order per tenant), in constant memory per
/// tenant. A run may start mid-chain (an export with `from`): its first entry's `prev_hash` is
/// then taken on trust, unless it is entry 1, which must link to [`GENESIS`].
#[derive(Debug, Default)]
pub struct ChainVerifier {
    chains: HashMap<String, ChainSummary>,
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next entry of its tenant's chain.
    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), ChainError> {
        let fail = |problem| ChainError {
            tenant_id: entry.tenant_id.clone(),
            chain_seq: entry.chain_seq,
            event_id: entry.event_id,
            problem,
        };
        match self.chains.get(&entry.tenant_id) {
            Some(chain) => {
                if entry.chain_seq != chain.last_seq + 1 {
                    return Err(fail(Problem::Gap {
                        expected: chain.last_seq + 1,
                        found: entry.chain_seq,
                    }));
                }
                if entry.prev_hash != chain.last_hash {
                    return Err(fail(Problem::BrokenLink {
                        expected: chain.last_hash.clone(),
                        found: entry.prev_hash.clone(),
                    }));
                }
            }
            None => {
                if entry.chain_seq == 1 && entry.prev_hash != hex::encode(GENESIS) {
                    return Err(fail(Problem::BadGenesis));
                }
            }
        }
        let expected = entry_hash(entry)?;
        if expected != entry.hash {
            return Err(fail(Problem::HashMismatch {
                expected,
                found: entry.hash.clone(),
            }));
        }
        let chain = self
            .chains
            .entry(entry.tenant_id.clone())
            .or_insert_with(|| ChainSummary {
                tenant_id: entry.tenant_id.clone(),
                entries: 0,
                first_seq: entry.chain_seq,
                last_seq: entry.chain_seq - 1,
                first_prev_hash: entry.prev_hash.clone(),
                last_hash: String::new(),
            });
        chain.entries += 1;
        chain.last_seq = entry.chain_seq;
        chain.last_hash.clone_from(&entry.hash);
        Ok(())
    }

    /// The chains verified so far, by tenant.
    pub fn finish(self) -> Vec<ChainSummary> {
        let mut chains: Vec<ChainSummary> = self.chains.into_values().collect();
        chains.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        chains
    }
}
