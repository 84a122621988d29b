-- The people directory (`GET /api/v1/directory`, query-api/src/routes/directory.rs)
-- lists a tenant's active users by name, a page at a time. Without an index in that order
-- every page, and every keystroke of a search, read and sorted the whole tenant: 48 ms for
-- 100,000 users, against 0.2 ms (1 ms with a search) reading this index in order.
create index identity_users_directory
    on identity_users (tenant_id, lower(display_name), user_id)
    where status = 'active';
