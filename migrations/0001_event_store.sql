-- The event store (DESIGN §2).
--
-- `events` and `snapshots` are postgres-es's tables with jsonb bodies. The columns after
-- `metadata` are never named by postgres-es: they take their defaults (or are generated) on
-- every append, and they are what the global log reader and downstream consumers rely on.

create table events (
    aggregate_type  text    not null,
    aggregate_id    text    not null,
    sequence        bigint  not null check (sequence >= 0),
    event_type      text    not null,
    event_version   text    not null,
    payload         jsonb   not null,
    metadata        jsonb   not null,
    -- handed out at insert, not at commit: order the log by (tx_id, global_position)
    global_position bigint  generated always as identity,
    -- the appending transaction; the reader only takes rows below the oldest running one
    tx_id           xid8        not null default pg_current_xact_id(),
    recorded_at     timestamptz not null default now(),
    -- each event's own id, stamped into its metadata by the repository on append
    event_id        uuid generated always as ((metadata ->> 'event_id')::uuid) stored not null,
    primary key (aggregate_type, aggregate_id, sequence),
    constraint events_event_id_key unique (event_id),
    -- every event says who, for which tenant, in which request, and when
    constraint events_metadata_complete check (
        metadata ?& array['event_id', 'tenant_id', 'actor', 'correlation_id', 'causation_id',
                          'request_id', 'occurred_at']
    )
);

-- the global log, in delivery order
create index events_log_order on events (tx_id, global_position);

-- postgres-es's snapshot store: the latest snapshot of an aggregate with a long history, so
-- loading it never replays more than a few dozen events. One row per aggregate.
create table snapshots (
    aggregate_type   text   not null,
    aggregate_id     text   not null,
    -- the sequence of the last event the snapshot includes
    last_sequence    bigint not null check (last_sequence >= 0),
    current_snapshot bigint not null check (current_snapshot >= 0),
    payload          jsonb  not null,
    primary key (aggregate_type, aggregate_id)
);

-- How far each named reader (projector, reactor, publisher) has read the global log. A reader
-- advances its row in the same transaction as the effects of the events it read.
create table checkpoints (
    name            text        primary key,
    tx_id           xid8        not null default '0',
    global_position bigint      not null default 0,
    updated_at      timestamptz not null default now()
);
