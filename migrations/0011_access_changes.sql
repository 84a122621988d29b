-- Access tokens carry the user's roles and groups as they were when the token was issued.
-- When an admin changes them, the tokens issued before must stop working at once rather than
-- when they expire (a revoked role must not keep working for a token lifetime), and the new
-- roles should not wait for one either. The identity projector records the version of the
-- user at which their access last changed; tokens carry the version they were issued at
-- (`Claims::access_version`), and every process that verifies tokens keeps the users whose
-- access changed within one token lifetime and refuses their older tokens
-- (`api_common::revocations`): the caller refreshes and gets the current roles and groups.
alter table identity_users
    add column access_version    bigint      not null default 0,
    add column access_changed_at timestamptz;

create index identity_users_access_changed on identity_users (access_changed_at)
    where access_changed_at is not null;

create function identity_users_announce_access() returns trigger
language plpgsql as $$
begin
    perform pg_notify('workledger_access_changed', new.user_id::text || ' ' || new.access_version);
    return new;
end
$$;

create trigger identity_users_access_changed
    after update of access_version on identity_users
    for each row
    when (new.access_version > old.access_version)
    execute function identity_users_announce_access();
