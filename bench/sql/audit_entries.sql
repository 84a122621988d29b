-- Bulk audit entries for the export benchmark and the export memory test: `$4` more entries
-- of tenant `$1`, correctly hash-chained onto the tenant's chain (from genesis when it has
-- none), and the chain's new head. Large chains are made in many calls of a few thousand:
-- a long transaction holds back every log reader of the cluster.
--
-- The audit projector turns log events into entries at tens of thousands per second in a
-- release build, far fewer in a debug test build; millions of entries are generated here
-- instead, by Postgres. Each entry is what the projector writes for one of
-- a task's five events (opened, claimed, two comments, completed) by one of 200 users, with a
-- payload of about 250 bytes. `$2` (0-based, below 65536) of `$3` tenants interleaves the log
-- positions of several chains and keeps their ids apart; `$5` is the time of position 0,
-- positions 1 ms apart. Ids are UUID-shaped counters (md5-made ones cost more than the rest
-- of an entry together).
--
-- Only the chain is sequential: the recursion builds each entry's canonical bytes exactly as
-- `projections::audit::canonical_entry` does (keys in byte order, no whitespace, six
-- fractional digits) and hashes them onto the previous hash; the columns are then read back
-- from those bytes, so the two cannot disagree and `workledger audit verify` accepts the
-- export.
with recursive chain (n, prev_hash, hash, canonical) as (
    select coalesce(h.chain_seq, 0), null::bytea,
           coalesce(h.hash, '\x0000000000000000000000000000000000000000000000000000000000000000'),
           null::text
    from (select) as one
    left join audit_chain_heads h on h.tenant_id = $1
  union all
    select c.n + 1, c.hash, sha256(c.hash || convert_to(e.canonical, 'UTF8')), e.canonical
    from chain c
    cross join lateral (
        select (array['TaskOpened', 'TaskClaimed', 'TaskCommented', 'TaskCommented',
                      'TaskCompleted'])[c.n % 5 + 1] as event_type,
               c.n * $3 + $2 + 1 as position,
               to_char(($5::timestamptz + (c.n * $3 + $2 + 1) * interval '1 millisecond')
                       at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at,
               '01900000-' || lpad(to_hex($2), 4, '0') || '-7000-8000-'
                   || lpad(to_hex(c.n + 1), 12, '0') as event_id,
               '01900000-' || lpad(to_hex($2), 4, '0') || '-7000-9000-'
                   || lpad(to_hex(c.n / 5), 12, '0') as task_id,
               'user:01800000-' || lpad(to_hex($2), 4, '0') || '-7000-a000-'
                   || lpad(to_hex(c.n / 5 % 200), 12, '0') as actor
    ) t
    cross join lateral (
        select '{"actor":"' || t.actor || '","aggregate_id":"' || t.task_id
               || '","aggregate_type":"task","chain_seq":' || c.n + 1
               || ',"event_id":"' || t.event_id || '","event_type":"' || t.event_type
               || '","event_version":"1","occurred_at":"' || t.at
               || '","payload":{"' || t.event_type || '":{"at":"' || t.at || '","by":"' || t.actor
               || '","note":"step ' || c.n % 5 + 1 || ' of the monthly vendor invoice review, '
               || 'checked against the purchase order and the delivery note","task_id":"'
               || t.task_id || '"}},"position":"' || 1000 + t.position / 4 || '.' || t.position
               || '","sequence":' || c.n % 5 + 1 || ',"tenant_id":"' || $1 || '"}' as canonical
    ) e
    where c.n < $4 + (select coalesce(max(chain_seq), 0) from audit_chain_heads
                      where tenant_id = $1)
),
head as (
    insert into audit_chain_heads (tenant_id, chain_seq, hash)
    select $1, n, hash from chain order by n desc limit 1
    on conflict (tenant_id) do update set chain_seq = excluded.chain_seq, hash = excluded.hash
)
insert into audit_entries (tenant_id, chain_seq, event_id, tx_id, global_position, aggregate_type,
    aggregate_id, sequence, event_type, event_version, actor, occurred_at, payload, prev_hash, hash)
select $1, n, (j ->> 'event_id')::uuid, split_part(j ->> 'position', '.', 1)::bigint,
       split_part(j ->> 'position', '.', 2)::bigint, j ->> 'aggregate_type', j ->> 'aggregate_id',
       (j ->> 'sequence')::bigint, j ->> 'event_type', j ->> 'event_version', j ->> 'actor',
       (j ->> 'occurred_at')::timestamptz,
       -- the payload as the projector stores it: its canonical text, cut out of the entry's
       substr(canonical, strpos(canonical, '"payload":') + 10,
              strpos(canonical, ',"position":') - strpos(canonical, '"payload":') - 10)::json,
       prev_hash, hash
from (select n, prev_hash, hash, canonical, canonical::jsonb as j from chain
      where canonical is not null) entries
