-- Incidents (a decision that could not be evaluated waits for an operator's retry) are open
-- steps of kind `incident` in `workflow_instances.open_steps`; `has_incident` says whether an
-- instance has one. Operators look for them with `GET /api/v1/workflow-instances?incident=true`:
-- the index holds only the instances that have one, so that list is read newest first without
-- passing over the others. A column of its own rather than a predicate on `open_steps`: an
-- index predicate's columns count as indexed, and `open_steps` changes with nearly every event,
-- which would have cost every such update its heap-only (HOT) path.
-- No instance had an incident before this migration: the default is right for every row, and
-- adding the column rewrites nothing.
alter table workflow_instances add column has_incident boolean not null default false;

create index workflow_instances_with_incidents on workflow_instances (tenant_id, started_at, id)
    where has_incident;
