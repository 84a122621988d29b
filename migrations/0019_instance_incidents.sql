-- Incidents (a decision that could not be evaluated waits for an operator's retry) are open
-- steps of kind `incident` in `workflow_instances.open_steps`. Operators look for them with
-- `GET /api/v1/workflow-instances?incident=true`: this index holds only the instances that
-- have one, so that list is read newest first without passing over the others.
create index workflow_instances_with_incidents on workflow_instances (tenant_id, started_at, id)
    where open_steps @> '[{"kind": "incident"}]'::jsonb;
