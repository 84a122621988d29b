-- Access tokens are verified without the database; every process that verifies them keeps
-- the sessions ended within one token lifetime and refuses their tokens
-- (`api_common::revocations`). It loads them by when they ended, and learns of each newly
-- ended one on `workledger_session_ended` (a logout, a deactivation, a reused refresh token:
-- every path sets `revoked_at`, and the announcement goes out when that commits).
create index auth_sessions_ended on auth_sessions (revoked_at) where revoked_at is not null;

create function auth_sessions_announce_ended() returns trigger
language plpgsql as $$
begin
    perform pg_notify('workledger_session_ended', new.session_id::text);
    return new;
end
$$;

create trigger auth_sessions_ended
    after update of revoked_at on auth_sessions
    for each row
    when (old.revoked_at is null and new.revoked_at is not null)
    execute function auth_sessions_announce_ended();
