-- Two-factor sign-in (TOTP, RFC 6238) with recovery codes.
--
-- Like password hashes these are security state kept out of the event log: the log records
-- that a user turned two-factor sign-in on or off and when their recovery codes were
-- replaced (UserTwoFactorEnabled, UserTwoFactorDisabled, UserRecoveryCodesReplaced), never
-- the key or the codes.

-- A user's authenticator key. `confirmed_at` is null while the enrolment waits for its first
-- code; only a confirmed key is asked for at sign-in.
create table identity_two_factor (
    user_id        uuid        primary key,
    -- the shared TOTP key (20 random bytes, HMAC-SHA1, 6 digits, 30 s steps)
    secret         bytea       not null,
    created_at     timestamptz not null default now(),
    confirmed_at   timestamptz,
    -- the last time step whose code was accepted: each code works once
    last_used_step bigint
);

-- Recovery codes, by their SHA-256 (the codes are random, 50 bits each: no slow hash
-- needed); each works once.
create table identity_recovery_codes (
    user_id   uuid        not null,
    code_hash bytea       not null,
    issued_at timestamptz not null default now(),
    used_at   timestamptz,
    primary key (user_id, code_hash)
);

-- The identity read model shows whether a user signs in with a second factor.
alter table identity_users add column two_factor_enabled_at timestamptz;
