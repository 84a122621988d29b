-- Which version of its user a session was opened on (`identity_users.version` when sign-in
-- checked the account, under a lock on it: command-api/src/auth/sessions.rs `start`).
-- Applying a deactivation, the identity projector ends the sessions opened on an earlier
-- version of the user: also one opened between the event's append and its projection, which
-- a cut at the event's `recorded_at` missed. Sessions opened before this migration have no
-- version and keep the time cut.
alter table auth_sessions add column user_version bigint;
