-- Personal data sealed per person (DESIGN §2, crypto-shredding; `event_schemas::personal`).
--
-- Each person's email address, name, the reasons recorded about them and the comments they
-- write are stored in the log encrypted with a key of their own, kept here and nowhere else.
-- Erasing a person sets their key to null: every copy of what was sealed with it (the log,
-- the audit trail and its exports, Kafka topics, backups of those) no longer opens, while the
-- events and the audit chain stay exactly as they were. Not a read model: a replay never
-- recreates a key. Keep this table's backups short-lived, or an erased key lives on in them.
create table personal_keys (
    tenant_id  text        not null,
    user_id    uuid        not null,
    key        bytea       check (octet_length(key) = 32),
    created_at timestamptz not null default now(),
    erased_at  timestamptz,
    primary key (tenant_id, user_id),
    check ((key is null) = (erased_at is not null))
);

-- The comments of tasks and of approvals, each by its own projector (`tasks`, `approvals`).
-- The text is kept as stored, sealed for its author: the query API opens it as it serves it,
-- so an erased author's comments read as erased at once, without touching these tables.
create table task_comments (
    task_id      uuid        not null,
    -- the TaskCommented event's sequence in the task
    sequence     bigint      not null,
    tenant_id    text        not null,
    author       text        not null,
    text         text        not null,
    commented_at timestamptz not null,
    primary key (task_id, sequence)
);

create table approval_comments (
    approval_id  uuid        not null,
    sequence     bigint      not null,
    tenant_id    text        not null,
    author       text        not null,
    text         text        not null,
    commented_at timestamptz not null,
    primary key (approval_id, sequence)
);

-- The comments made before this migration (the projectors take the ones after it; a comment
-- that both reach is kept once: they insert with `on conflict do nothing`). Reads the log
-- once; on a log of tens of millions of events this takes a while (docs/operations.md), and
-- takes no lock anything else waits on. Processes of an earlier version still running (a
-- rolling upgrade) pass over the comments made meanwhile: `workledger replay --projection
-- tasks` and `--projection approvals` afterwards fill those in.
insert into task_comments (task_id, sequence, tenant_id, author, text, commented_at)
select aggregate_id::uuid, sequence, metadata ->> 'tenant_id',
       payload -> 'TaskCommented' ->> 'author', payload -> 'TaskCommented' ->> 'text',
       (payload -> 'TaskCommented' ->> 'commented_at')::timestamptz
from events
where aggregate_type = 'task' and event_type = 'TaskCommented';

insert into approval_comments (approval_id, sequence, tenant_id, author, text, commented_at)
select aggregate_id::uuid, sequence, metadata ->> 'tenant_id',
       payload -> 'ApprovalCommented' ->> 'author', payload -> 'ApprovalCommented' ->> 'text',
       (payload -> 'ApprovalCommented' ->> 'commented_at')::timestamptz
from events
where aggregate_type = 'approval' and event_type = 'ApprovalCommented';

-- When the person was erased: their email address and name are blanked in the read model.
-- Last, so that the lock it takes on `identity_users` (sign-in waits on it) is held only for
-- the rest of this transaction, not while the log is read above.
alter table identity_users add column erased_at timestamptz;
