-- Who may read an instance (query API, `GET /api/v1/workflow-instances`): operators, auditors
-- and admins see every instance of their tenant; everyone else the instances they started or
-- take part in, through a task of the instance offered or assigned to them or an approval of it
-- they hold, held or voted on. Those checks look up an instance's tasks and approvals.
create index tasks_by_instance on tasks (workflow_instance_id)
    where workflow_instance_id is not null;
create index approvals_by_instance on approvals (workflow_instance_id)
    where workflow_instance_id is not null;
