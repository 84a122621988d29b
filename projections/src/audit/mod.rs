//! The audit trail: every event of every aggregate type with its actor and time, hash-chained
//! per tenant so any edit, deletion or reordering of entries is detectable.
//!
//! # The chain
//!
//! Each tenant has one chain, in log order: an auditor's export of their tenant verifies on its
//! own, without entries of other tenants. For entry `n` of a tenant (its `chain_seq`, from 1):
//!
//! ```text
//! hash_n = sha256(prev_hash_n || canonical_entry_n)      prev_hash_n = hash_(n-1), prev_hash_1 = 32 zero bytes
//! ```
//!
//! where `prev_hash_n` is the 32 raw bytes of the previous hash and `canonical_entry_n` the
//! UTF-8 bytes of [`canonical_entry`]: the entry's fields except `prev_hash` and `hash`, as one
//! JSON object with keys sorted by their bytes at every level and no whitespace. Hashes are
//! written as lowercase hex. `occurred_at` is RFC 3339 in UTC with exactly six fractional
//! digits (`2026-01-05T10:00:00.000000Z`), `position` is the log position as `TX.POSITION`.
//!
//! [`ChainVerifier`] recomputes chains from entries (e.g. the lines of an export) and names
//! the first entry that does not fit.

mod export;
mod projector;
mod verify;

use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use event_schemas::LogPosition;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use export::{
    ChainRange, ExportError, ExportFormat, Exporter, FIELDS, RecordError, chain_range,
};
pub use projector::AuditProjector;
pub use verify::{ChainError, ChainSummary, ChainVerifier, Problem};

/// The `prev_hash` of a tenant's first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// One audit entry, as the API answers it and the export writes it (one per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub event_id: Uuid,
    /// The event's place in the global log.
    pub position: LogPosition,
    pub tenant_id: String,
    /// The entry's number in its tenant's chain (1, 2, ...).
    pub chain_seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The aggregate's version after the event.
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// `user:{id}` or `service:{name}`.
    pub actor: String,
    #[serde(with = "micros")]
    pub occurred_at: DateTime<Utc>,
    pub payload: Value,
    /// Lowercase hex of the previous entry's hash (64 zeros for the first).
    pub prev_hash: String,
    /// Lowercase hex of this entry's hash.
    pub hash: String,
}

/// `occurred_at` always with six fractional digits, so the canonical bytes are stable.
mod micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// `value` as canonical JSON: object keys sorted by their UTF-8 bytes at every level, no
/// whitespace, strings and numbers as `serde_json` writes them.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(&mut out, value);
    out
}

/// [`canonical_json`] written onto the end of `out`.
pub(crate) fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_canonical(out, value);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(out, s),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping: the same for every writer of the chain
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The canonical bytes of `entry` (every field but `prev_hash` and `hash`).
pub fn canonical_entry(entry: &AuditEntry) -> Vec<u8> {
    canonical_fields(&Fields {
        event_id: entry.event_id,
        position: entry.position,
        tenant_id: &entry.tenant_id,
        chain_seq: entry.chain_seq,
        aggregate_type: &entry.aggregate_type,
        aggregate_id: &entry.aggregate_id,
        sequence: entry.sequence,
        event_type: &entry.event_type,
        event_version: &entry.event_version,
        actor: &entry.actor,
        occurred_at: entry.occurred_at,
        payload: &canonical_json(&entry.payload),
    })
}

/// An entry's hashed fields, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub event_id: Uuid,
    pub position: LogPosition,
    pub tenant_id: &'a str,
    pub chain_seq: i64,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub actor: &'a str,
    pub occurred_at: DateTime<Utc>,
    /// The payload's [`canonical_json`].
    pub payload: &'a [u8],
}

pub(crate) fn canonical_fields(entry: &Fields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    // keys in byte order, written by hand: this runs once per event
    out.extend_from_slice(b"{\"actor\":");
    write_string(&mut out, entry.actor);
    out.extend_from_slice(b",\"aggregate_id\":");
    write_string(&mut out, entry.aggregate_id);
    out.extend_from_slice(b",\"aggregate_type\":");
    write_string(&mut out, entry.aggregate_type);
    let _ = write!(out, ",\"chain_seq\":{}", entry.chain_seq);
    let _ = write!(out, ",\"event_id\":\"{}\"", entry.event_id);
    out.extend_from_slice(b",\"event_type\":");
    write_string(&mut out, entry.event_type);
    out.extend_from_slice(b",\"event_version\":");
    write_string(&mut out, entry.event_version);
    let occurred_at = entry
        .occurred_at
        .trunc_subsecs(6)
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    let _ = write!(out, ",\"occurred_at\":\"{occurred_at}\"");
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(entry.payload);
    let _ = write!(out, ",\"position\":\"{}\"", entry.position);
    let _ = write!(out, ",\"sequence\":{}", entry.sequence);
    out.extend_from_slice(b",\"tenant_id\":");
    write_string(&mut out, entry.tenant_id);
    out.push(b'}');
    out
}

/// sha256(prev_hash || canonical).
pub fn chain_hash(prev_hash: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// `entry`'s hash given its fields and `prev_hash` (hex), as lowercase hex.
pub fn entry_hash(entry: &AuditEntry) -> Result<String, ChainError> {
    let prev = decode_hash(&entry.prev_hash).ok_or_else(|| ChainError {
        tenant_id: entry.tenant_id.clone(),
        chain_seq: entry.chain_seq,
        event_id: entry.event_id,
        problem: Problem::MalformedHash,
    })?;
    Ok(hex::encode(chain_hash(&prev, &canonical_entry(entry))))
}

fn decode_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_hash).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests;
