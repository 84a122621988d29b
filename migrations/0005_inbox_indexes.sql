-- Inbox queries over a million tasks (docs/benchmarks.md, "Inbox queries"): each list must be
-- read in its order from an index, stopping after a page, rather than collected and sorted.

-- `assignee=me` without a status (everything I worked on): 0004 only has the open tasks by
-- assignee, so the planner scanned the whole tenant.
create index tasks_by_assignee on tasks (tenant_id, assignee, opened_at, id);

-- `overdue=true` (or false) in the open inbox: overdue tasks are the older ones, so a backward
-- scan of `tasks_open` passed every newer open task before the first overdue one. Also serves
-- the equality with a bound parameter, unlike a partial index on `overdue`.
create index tasks_open_by_overdue on tasks (tenant_id, overdue, opened_at, id)
    where status = 'open';
