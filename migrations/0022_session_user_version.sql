-- Which version of its user a session was opened on (`identity_users.version` when sign-in
-- checked the account, under a lock on it: command-api/src/auth/sessions.rs `start`).
-- The identity projector ends, for a deactivation, a password change or "sign out
-- everywhere", the sessions opened on an earlier version of the user: also those opened
-- between the event's append and its projection, which a cut at the event's `recorded_at`
-- missed, and none opened after it when the projection is rebuilt. Sessions opened before
-- this migration have none and keep the time cut.
alter table auth_sessions add column user_version bigint;
