-- Personal data keys may be stored wrapped with the master key (`event_store::master_key`,
-- WORKLEDGER_MASTER_KEY): 72 bytes (magic, key id, nonce, the 32-byte key, tag) instead of
-- the bare 32. Two-factor secrets and the generated token signing secret are wrapped the same
-- way (their columns never had a length check). Secrets stored before stay as they are until
-- `workledger admin wrap-secrets`.
alter table personal_keys drop constraint personal_keys_key_check;
alter table personal_keys add constraint personal_keys_key_check
    check (octet_length(key) in (32, 72));
