-- Identity and access (DESIGN §4).
--
-- Two kinds of tables live here:
-- * the identity read model (`identity_tenants`, `identity_users`), kept by the `identity`
--   projector from the tenant and user events, in the same transaction as its checkpoint;
-- * security state that is deliberately NOT in the event log, because it must be erasable or
--   must never be replayed: password hashes, sessions and refresh tokens, login throttling,
--   idempotency keys and the token signing secret. The log records the facts (a user was
--   created, a password changed), never the secrets.

-- Tenants, from TenantCreated.
create table identity_tenants (
    tenant_id  text        primary key,
    name       text        not null,
    created_at timestamptz not null
);

-- Users, from the user events. Personal data (email, display name) is copied here from
-- UserCreated only.
create table identity_users (
    user_id             uuid        primary key,
    tenant_id           text        not null,
    email               text        not null,
    -- lower-cased email: sign-in looks users up by it
    email_key           text        not null,
    display_name        text        not null,
    roles               text[]      not null default '{}',
    groups              text[]      not null default '{}',
    status              text        not null default 'active'
                                    check (status in ('active', 'deactivated')),
    -- the user aggregate's version this row reflects
    version             bigint      not null,
    created_at          timestamptz not null,
    updated_at          timestamptz not null,
    password_changed_at timestamptz
);

create index identity_users_email on identity_users (tenant_id, email_key);
-- group -> members, for approvals offered to groups (the orchestrator's directory)
create index identity_users_groups on identity_users using gin (groups);

-- An email address is unique per tenant (ignoring case) across user aggregates: the command
-- path claims it here before it appends UserCreated. A claim whose user never came to exist
-- (a crash between the two) may be taken over after a few minutes.
create table identity_email_claims (
    tenant_id  text        not null,
    email_key  text        not null,
    user_id    uuid        not null,
    claimed_at timestamptz not null default now(),
    primary key (tenant_id, email_key)
);

-- Password hashes (argon2id, PHC strings), kept out of the event log so they can be erased.
create table identity_credentials (
    user_id       uuid        primary key,
    password_hash text        not null,
    updated_at    timestamptz not null default now()
);

-- A login session: one family of refresh tokens (the access token's `sid`). Revoking it ends
-- the session: its refresh tokens stop working.
create table auth_sessions (
    session_id     uuid        primary key,
    user_id        uuid        not null,
    tenant_id      text        not null,
    created_at     timestamptz not null default now(),
    revoked_at     timestamptz,
    revoked_reason text
);

create index auth_sessions_live_by_user on auth_sessions (user_id) where revoked_at is null;

-- Refresh tokens, by the SHA-256 of the opaque token (the token itself is never stored).
-- Each is used once: refreshing marks it used and issues the next one in the same session;
-- presenting a used one again revokes the session (reuse detection).
create table auth_refresh_tokens (
    token_hash bytea       primary key,
    session_id uuid        not null references auth_sessions (session_id) on delete cascade,
    issued_at  timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at    timestamptz
);

create index auth_refresh_tokens_session on auth_refresh_tokens (session_id);
create index auth_refresh_tokens_expiry on auth_refresh_tokens (expires_at);

-- Failed sign-ins per account and per client address. `key` is a SHA-256 of the scope and
-- the email address or IP address, so no personal data is kept here in clear.
create table auth_login_throttle (
    key               bytea       primary key,
    failures          integer     not null,
    window_started_at timestamptz not null,
    locked_until      timestamptz
);

-- Secrets generated on first start and shared by every instance (the access-token signing
-- key when WORKLEDGER_JWT_SECRET is not configured).
create table auth_secrets (
    name       text        primary key,
    secret     bytea       not null,
    created_at timestamptz not null default now()
);

-- Idempotency-Key: the first response to a command, per tenant, user and key. The row is
-- inserted before the command runs ("in progress" while `response_status` is null and the
-- lease `locked_until` holds), so a concurrent duplicate is refused instead of executed.
create table idempotency_keys (
    tenant_id        text        not null,
    user_id          uuid        not null,
    key              text        not null,
    -- SHA-256 of method, path and body: the same key with another request is refused
    request_hash     bytea       not null,
    response_status  smallint,
    response_headers jsonb,
    response_body    bytea,
    locked_until     timestamptz,
    created_at       timestamptz not null default now(),
    expires_at       timestamptz not null,
    primary key (tenant_id, user_id, key)
);

create index idempotency_keys_expiry on idempotency_keys (expires_at);
