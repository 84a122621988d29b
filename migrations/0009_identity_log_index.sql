-- The identity projector's way into the log (`event_store::LogFilter::sparse`): tenant and user
-- events are a handful among millions of workflow, task and approval events. Without an index
-- of their own its reader passed over every other event, 500 a read, so after a million
-- comments a new user's first sign-in waited for 2,000 reads and failed. With it, one read
-- finds the next identity events and moves the checkpoint to the head of the log.
--
-- The predicate must stay the one the reader writes out (`aggregate_type in ('tenant', 'user')`);
-- a filter of other types would not be served by this index.
create index events_identity_log on events (tx_id, global_position)
    where aggregate_type in ('tenant', 'user');
