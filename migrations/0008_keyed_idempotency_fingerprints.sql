-- Idempotency fingerprints are keyed (HMAC-SHA256 under a key derived from the token signing
-- secret, `command_api::idempotency::Fingerprints`) instead of a plain SHA-256 of the request:
-- a body can hold a password, and a plain hash of it could be checked against guesses by
-- anyone who reads this table.
--
-- Keys stored before this migration keep their plain hash (`request_hash_keyed` false) and are
-- still recognised until they expire; every key stored from now on is keyed.
alter table idempotency_keys add column request_hash_keyed boolean not null default false;
alter table idempotency_keys alter column request_hash_keyed set default true;
comment on column idempotency_keys.request_hash is
    'HMAC-SHA256 of method, path and body (plain SHA-256 where request_hash_keyed is false)';
