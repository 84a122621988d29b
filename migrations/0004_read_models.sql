-- Read models (DESIGN §5) and the projector runtime's own bookkeeping.
--
-- Every read-model row carries its `tenant_id` and is built from event data only (never
-- `now()`), so rebuilding a projection from the log reproduces it exactly.
--
-- Projectors name these tables without a schema. A rebuild (`workledger replay`) creates empty
-- copies with `create table ... (like <table> including all)` in a schema of its own, projects
-- into them through the `search_path`, and swaps them in with one transaction: this file is the
-- one place a read model's DDL lives.

-- What each projector is doing, beyond its row in `checkpoints`: the worker holding its advisory
-- lock, and the event it is stopped on when it fails (cleared once it gets past it).
create table projector_status (
    name             text        primary key,
    -- `host/pid/uuid` of the worker holding the projector's advisory lock
    worker           text,
    worker_since     timestamptz,
    -- the failure the projector is stopped on, while it lasts
    error            text,
    error_tx_id      bigint,
    error_position   bigint,
    error_event_id   uuid,
    error_event_type text,
    -- `aggregate_type/aggregate_id`
    error_aggregate  text,
    failed_since     timestamptz,
    -- failed attempts on the current error
    attempts         integer     not null default 0,
    updated_at       timestamptz not null default now()
);

-- Published workflow definitions, every version (immutable once published).
create table workflow_definitions (
    tenant_id    text        not null,
    key          text        not null,
    version      integer     not null,
    name         text        not null,
    definition   jsonb       not null,
    published_by text        not null,
    published_at timestamptz not null,
    primary key (tenant_id, key, version)
);

-- Workflow instances: lifecycle, variables and the steps they wait on.
create table workflow_instances (
    id                 uuid        primary key,
    tenant_id          text        not null,
    definition_key     text        not null,
    definition_version integer     not null,
    business_key       text,
    -- running | completed | cancelled | failed
    status             text        not null,
    outcome            text,
    variables          jsonb       not null,
    -- [{kind, id, step_id, activation, name, since, ...}]: tasks, approvals, timers and joins
    -- still waiting
    open_steps         jsonb       not null,
    started_at         timestamptz not null,
    started_by         text        not null,
    ended_at           timestamptz,
    -- why it was cancelled or failed
    end_reason         text,
    failed_step        text,
    -- the aggregate's version (its last event's sequence): the ETag
    version            bigint      not null,
    updated_at         timestamptz not null
);

-- lists are newest first, keyset-paged on (started_at, id) (indexes are scanned backwards)
create index workflow_instances_list on workflow_instances (tenant_id, started_at, id);
create index workflow_instances_by_status
    on workflow_instances (tenant_id, status, started_at, id);
create index workflow_instances_by_definition
    on workflow_instances (tenant_id, definition_key, started_at, id);
create index workflow_instances_by_business_key
    on workflow_instances (tenant_id, business_key) where business_key is not null;

-- Every event of an instance, in order: its timeline.
create table workflow_instance_timeline (
    instance_id uuid        not null,
    sequence    bigint      not null,
    tenant_id   text        not null,
    event_type  text        not null,
    step_id     text,
    activation  integer,
    actor       text        not null,
    at          timestamptz not null,
    -- the event's facts (the merged variables of a completed step are left out: the instance
    -- row has them); `json`, not `jsonb`: only ever read whole, and much cheaper to write
    data        json        not null,
    primary key (instance_id, sequence)
);

-- The task inbox.
create table tasks (
    id                   uuid        primary key,
    tenant_id            text        not null,
    -- null for ad-hoc tasks
    workflow_instance_id uuid,
    definition_key       text,
    definition_version   integer,
    step_id              text,
    activation           integer,
    name                 text        not null,
    description          text,
    -- open | completed | cancelled
    status               text        not null,
    assignee             uuid,
    candidate_users      uuid[]      not null,
    candidate_groups     text[]      not null,
    form                 jsonb       not null,
    due_at               timestamptz,
    overdue              boolean     not null,
    overdue_at           timestamptz,
    output               jsonb,
    opened_at            timestamptz not null,
    opened_by            text        not null,
    -- when it was completed or cancelled
    closed_at            timestamptz,
    completed_by         text,
    cancel_reason        text,
    version              bigint      not null,
    updated_at           timestamptz not null
);

create index tasks_list on tasks (tenant_id, opened_at, id);
-- the inbox: open tasks, newest first, filtered by who they are offered to
create index tasks_open on tasks (tenant_id, opened_at, id) where status = 'open';
-- `assignee=me` in the inbox
create index tasks_open_by_assignee on tasks (tenant_id, assignee, opened_at, id)
    where status = 'open';
create index tasks_candidate_groups on tasks using gin (candidate_groups);
create index tasks_candidate_users on tasks using gin (candidate_users);
-- the task report's completed tasks by completion time
create index tasks_completed on tasks (tenant_id, closed_at) where status = 'completed';

-- Approvals and the progress of their policy.
create table approvals (
    id                   uuid        primary key,
    tenant_id            text        not null,
    workflow_instance_id uuid,
    definition_key       text,
    step_id              text,
    activation           integer,
    name                 text        not null,
    description          text,
    -- pending | approved | rejected | cancelled
    status               text        not null,
    -- "any" | "all" | "sequential" | {"quorum": n}
    policy               jsonb       not null,
    -- resolved approvers, in policy order
    approvers            uuid[]      not null,
    -- [{approver, holder, decision}]: who holds each vote (delegation) and how it went
    votes                jsonb       not null,
    -- [{approver, decided_by, decision, decided_at}] in the order they were cast
    decisions            jsonb       not null,
    -- who may decide right now (for `sequential`, only the approver whose turn it is)
    awaiting             uuid[]      not null,
    -- approvers, vote holders and deciders: whom a member's listing shows it to
    participants         uuid[]      not null,
    outcome              text,
    close_reason         text,
    approvals_count      integer     not null,
    rejections_count     integer     not null,
    due_at               timestamptz,
    overdue              boolean     not null,
    overdue_at           timestamptz,
    opened_at            timestamptz not null,
    opened_by            text        not null,
    closed_at            timestamptz,
    cancel_reason        text,
    version              bigint      not null,
    updated_at           timestamptz not null
);

create index approvals_list on approvals (tenant_id, opened_at, id);
create index approvals_awaiting on approvals using gin (awaiting);
create index approvals_participants on approvals using gin (participants);

-- Workflow report: counters per tenant, definition and UTC day of the event.
create table workflow_report_days (
    tenant_id      text   not null,
    definition_key text   not null,
    day            date   not null,
    started        bigint not null default 0,
    completed      bigint not null default 0,
    cancelled      bigint not null default 0,
    failed         bigint not null default 0,
    -- tasks and approvals of the definition's instances that became overdue that day
    sla_breaches   bigint not null default 0,
    primary key (tenant_id, definition_key, day)
);

-- Completed instances per outcome (the end step's `outcome`).
create table workflow_report_outcomes (
    tenant_id      text   not null,
    definition_key text   not null,
    day            date   not null,
    outcome        text   not null,
    completed      bigint not null default 0,
    primary key (tenant_id, definition_key, day, outcome)
);

-- One row per instance with its cycle time once it ended, so percentiles are exact.
create table workflow_report_instances (
    instance_id    uuid             primary key,
    tenant_id      text             not null,
    definition_key text             not null,
    started_at     timestamptz      not null,
    ended_at       timestamptz,
    status         text             not null,
    outcome        text,
    cycle_seconds  double precision
);

create index workflow_report_cycle_times
    on workflow_report_instances (tenant_id, definition_key, ended_at) where status = 'completed';

-- Which definition a workflow task or approval belongs to (overdue events do not repeat it).
create table workflow_report_children (
    id             uuid primary key,
    tenant_id      text not null,
    definition_key text not null
);

-- The audit trail: every event of every aggregate type, hash-chained per tenant.
--
-- hash = sha256(prev_hash || canonical entry JSON), the canonical entry being every column
-- below except the two hashes, as JSON with sorted keys and no whitespace (see
-- `projections::audit`). The first entry of a tenant has 32 zero bytes as prev_hash.
create table audit_entries (
    tenant_id       text        not null,
    -- 1, 2, 3, ... within the tenant's chain, in log order, without gaps
    chain_seq       bigint      not null,
    event_id        uuid        not null,
    tx_id           bigint      not null,
    global_position bigint      not null,
    aggregate_type  text        not null,
    aggregate_id    text        not null,
    sequence        bigint      not null,
    event_type      text        not null,
    event_version   text        not null,
    actor           text        not null,
    occurred_at     timestamptz not null,
    payload         jsonb       not null,
    prev_hash       bytea       not null,
    hash            bytea       not null,
    -- each event is audited exactly once: the projector's checkpoint commits with its entries
    primary key (tenant_id, chain_seq)
);

-- an aggregate's entries (equality only: a hash index is far cheaper to keep up than a btree
-- on random ids, and the few entries found are filtered and sorted afterwards)
create index audit_entries_by_aggregate on audit_entries using hash (aggregate_id);
create index audit_entries_by_actor on audit_entries (tenant_id, actor, chain_seq);
create index audit_entries_by_time on audit_entries (tenant_id, occurred_at, chain_seq);

-- The end of each tenant's chain: where the next entry links on.
create table audit_chain_heads (
    tenant_id text   primary key,
    chain_seq bigint not null,
    hash      bytea  not null
);
