-- The audit trail keeps each payload as the JSON text its hash covers (`json`, stored as
-- written) rather than as `jsonb`:
-- - the audit projector writes the canonical payload it has just hashed (keys in byte order,
--   no whitespace), so an entry is one row of values from the client, not a join back to the
--   event for its payload;
-- - exports and `workledger audit verify` read the text as stored, where a `jsonb` column was
--   turned back into text for every entry (the larger part of Postgres' work in an export).
-- Entries written before this migration keep the text Postgres made of their `jsonb`: the
-- verifier canonicalizes every payload before hashing, so their hashes are unchanged.
alter table audit_entries alter column payload type json using payload::json;
