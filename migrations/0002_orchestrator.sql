-- Durable timers of the workflow runtime (timer steps, due dates of tasks and approvals).
--
-- A timer is written by the orchestrator in the same transaction as its checkpoint, so it is
-- recorded exactly once however often the orchestrator reads its event. The reaction it carries
-- out is not stored: it is derived again from the source event when the timer fires.
create table timers (
    timer_id       uuid        primary key,
    tenant_id      text        not null,
    due_at         timestamptz not null,
    -- the event whose reaction scheduled this timer
    aggregate_type text        not null,
    aggregate_id   text        not null,
    sequence       bigint      not null,
    fired_at       timestamptz
);

-- the timer worker's queue: unfired timers by due time
create index timers_due on timers (due_at) where fired_at is null;
