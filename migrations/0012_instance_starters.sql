-- A member's list of workflow instances (query API, `GET /api/v1/workflow-instances`) looks up
-- the instances they started, among the other ways to take part in one, when few of the
-- tenant's instances are theirs (`query_api::access::push_instances_taken_part_in`).
create index workflow_instances_by_starter on workflow_instances (tenant_id, started_by);
