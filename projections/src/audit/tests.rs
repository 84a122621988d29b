//! The chain's canonical form, hashing and verification.

use super::*;
use serde_json::json;

fn entry(seq: i64, prev: &str) -> AuditEntry {
    let mut entry = AuditEntry {
        event_id: Uuid::from_u128(seq as u128),
        position: LogPosition {
            tx_id: 700 + seq as u64,
            global_position: seq,
        },
        tenant_id: "acme".into(),
        chain_seq: seq,
        aggregate_type: "task".into(),
        aggregate_id: Uuid::from_u128(1).to_string(),
        sequence: seq,
        event_type: "TaskClaimed".into(),
        event_version: "1".into(),
        actor: "user:00000000-0000-0000-0000-0000000000c1".into(),
        occurred_at: DateTime::parse_from_rfc3339("2026-01-05T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc),
        payload: json!({"TaskClaimed": {"user_id": "u", "claimed_at": "t", "n": [1, 2.5, null]}}),
        prev_hash: prev.to_owned(),
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry).unwrap();
    entry
}

fn chain(n: i64) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::new();
    for seq in 1..=n {
        let prev = out
            .last()
            .map_or_else(|| hex::encode(GENESIS), |e| e.hash.clone());
        out.push(entry(seq, &prev));
    }
    out
}

fn verify(entries: &[AuditEntry]) -> Result<Vec<ChainSummary>, ChainError> {
    let mut verifier = ChainVerifier::new();
    for e in entries {
        verifier.push(e)?;
    }
    Ok(verifier.finish())
}

#[test]
fn canonical_json_sorts_keys_at_every_level_without_whitespace() {
    let value = json!({"b": {"z": 1, "a": [true, {"y": null, "x": "é\n"}]}, "a": -2.5});
    assert_eq!(
        String::from_utf8(canonical_json(&value)).unwrap(),
        r#"{"a":-2.5,"b":{"a":[true,{"x":"é\n","y":null}],"z":1}}"#
    );
}

#[test]
fn the_canonical_entry_is_the_sorted_json_of_its_fields() {
    let e = entry(1, &hex::encode(GENESIS));
    let mut value = serde_json::to_value(&e).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("prev_hash");
    object.remove("hash");
    assert_eq!(canonical_entry(&e), canonical_json(&value));
    assert!(
        String::from_utf8(canonical_entry(&e))
            .unwrap()
            .contains(r#""occurred_at":"2026-01-05T10:00:00.500000Z""#)
    );
}

#[test]
fn an_entry_round_trips_through_its_json_line() {
    let e = entry(1, &hex::encode(GENESIS));
    let line = serde_json::to_string(&e).unwrap();
    let back: AuditEntry = serde_json::from_str(&line).unwrap();
    assert_eq!(back, e);
    assert_eq!(entry_hash(&back).unwrap(), e.hash);
}

#[test]
fn a_chain_verifies() {
    let summary = verify(&chain(5)).unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].entries, 5);
    assert_eq!(summary[0].last_seq, 5);
}

#[test]
fn an_edited_payload_is_detected() {
    let mut entries = chain(5);
    entries[2].payload = json!({"TaskClaimed": {"user_id": "someone else"}});
    let error = verify(&entries).unwrap_err();
    assert_eq!(error.chain_seq, 3);
    assert!(matches!(error.problem, Problem::HashMismatch { .. }));
}

#[test]
fn a_deleted_entry_is_detected() {
    let mut entries = chain(5);
    entries.remove(2);
    let error = verify(&entries).unwrap_err();
    assert_eq!(error.chain_seq, 4);
    assert!(matches!(error.problem, Problem::Gap { .. }));
}

#[test]
fn a_deleted_and_renumbered_entry_is_detected() {
    let mut entries = chain(5);
    entries.remove(2);
    for (i, e) in entries.iter_mut().enumerate() {
        e.chain_seq = i as i64 + 1;
    }
    let error = verify(&entries).unwrap_err();
    assert_eq!(error.chain_seq, 3);
    assert!(matches!(error.problem, Problem::BrokenLink { .. }));
}

#[test]
fn swapped_entries_are_detected() {
    let mut entries = chain(5);
    entries.swap(1, 2);
    assert!(verify(&entries).is_err());
}

#[test]
fn a_forged_first_entry_is_detected() {
    let mut entries = chain(2);
    entries[0].prev_hash = "11".repeat(32);
    entries[0].hash = entry_hash(&entries[0]).unwrap();
    let error = verify(&entries).unwrap_err();
    assert_eq!(error.problem, Problem::BadGenesis);
}

#[test]
fn a_run_may_start_mid_chain() {
    let entries = chain(5);
    let summary = verify(&entries[2..]).unwrap();
    assert_eq!(summary[0].first_seq, 3);
    assert_eq!(summary[0].first_prev_hash, entries[1].hash);
}
