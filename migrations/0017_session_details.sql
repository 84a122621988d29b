-- What a user is shown of their sessions (GET /api/v1/auth/sessions), to recognise one they
-- did not start and end it: the client address and user agent of the sign-in, and when the
-- session last refreshed its tokens. Null for sessions started before this migration.
alter table auth_sessions
    add column client_address text,
    add column user_agent     text,
    add column last_used_at   timestamptz;
