-- `workledger documents prune` finds which stored contents a document still needs from the
-- document events in the log (the source of truth, not a read model that may lag): without an
-- index of their own it read the whole log, 0.5 s at 2.2 million events on the benchmark
-- machine and growing with every comment and task; with this one, 0.6 ms. The build reads
-- `events` once while it holds back appends (0.44 s at 2.2 million events).
--
-- The predicate must stay the one the prune query writes out (cli/src/commands/documents.rs).
create index events_document_log on events (event_type)
    where event_type in ('TaskDocumentAttached', 'InstanceDocumentAttached',
                         'TaskDocumentRemoved', 'InstanceDocumentRemoved');
