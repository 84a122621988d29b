-- Read models for bench/instance_lists.sh: :instances workflow instances of tenant 'default'
-- started over a year by 200 people, two tasks and one approval each, straight into the read
-- models (what the projectors would write; the lists read nothing else). Members:
--   :busy   in group "clerks", offered one task of every other instance (half the tenant)
--   :some   in group "g7" (one task in 50), assigned one task in 200, voter on one approval in 200
--   :fresh  takes part in nothing yet
insert into workflow_instances (id, tenant_id, definition_key, definition_version, status,
    variables, open_steps, started_at, started_by, version, updated_at)
select md5('i' || i)::uuid, 'default', 'po', 1,
       case when i % 3 = 0 then 'running' else 'completed' end, '{"amount": 100}', '[]',
       timestamptz '2026-01-01' + i * interval '60 second',
       'user:' || md5('u' || (i % 200))::uuid, 5, now()
from generate_series(1, :instances) i;

insert into tasks (id, tenant_id, workflow_instance_id, name, status, assignee, candidate_users,
    candidate_groups, form, overdue, opened_at, opened_by, version, updated_at)
select md5('t' || i || '-' || k)::uuid, 'default', md5('i' || i)::uuid, 'Review', 'completed',
       case when k = 1 and i % 200 = 5 then :'some'::uuid
            when k = 1 then md5('u' || ((i * 7) % 200))::uuid end,
       '{}',
       case when k = 2 and i % 2 = 0 then array['clerks'] else array['g' || (i % 50)] end,
       '[]', false, timestamptz '2026-01-01' + i * interval '60 second', 'system', 3, now()
from generate_series(1, :instances) i, generate_series(1, 2) k;

insert into approvals (id, tenant_id, workflow_instance_id, name, status, policy, approvers,
    votes, decisions, awaiting, participants, approvals_count, rejections_count, overdue,
    opened_at, opened_by, version, updated_at)
select md5('a' || i)::uuid, 'default', md5('i' || i)::uuid, 'Approve', 'approved', '"any"',
       array[md5('u' || ((i * 13) % 200))::uuid], '[]', '[]', '{}',
       case when i % 200 = 17 then array[:'some'::uuid, md5('u' || ((i * 13) % 200))::uuid]
            else array[md5('u' || ((i * 13) % 200))::uuid] end,
       1, 0, false, timestamptz '2026-01-01' + i * interval '60 second', 'system', 3, now()
from generate_series(1, :instances) i;

vacuum analyze workflow_instances;
vacuum analyze tasks;
vacuum analyze approvals;
