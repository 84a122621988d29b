//! Rebuilding projections with no downtime (DESIGN §5): project from the start of the log into
//! fresh copies of their tables while the old ones keep serving, then swap each projector's
//! copies in with one transaction. A rebuild that fails or is interrupted changes nothing that
//! serves, and the next one resumes it.
//!
//! 1. Copies of a projector's tables are created empty in a schema of their own
//!    (`create table rebuild_<name>.t (like public.t including all)`: the migrations stay the
//!    one place their DDL lives). The schema's comment records what the copy was created under
//!    (the migration and this crate's version); the copy is resumed only under the same.
//!    The copies keep their primary keys and unique indexes (upserts and the projectors'
//!    lookups need them) but not their other indexes: those are built once the copy has caught
//!    up, in one sort each, which costs far less than keeping them up row by row.
//! 2. The projectors run together, each on a connection whose `search_path` puts its schema
//!    first, under the checkpoint `rebuild:<name>`, until they have read everything readable.
//!    They share each read of the log ([`Feed`]); each commits its own batches.
//! 3. Per projector, one transaction locks the live checkpoint row (the live worker waits at
//!    its next batch), catches the copies up to at least the live position, drops the old
//!    tables, moves the copies into `public` with the old index names, moves the live
//!    checkpoint there, and drops the scratch schema and checkpoint.
//!
//! A failed or killed rebuild leaves its schema and checkpoint behind: each batch committed with
//! its checkpoint, so the next rebuild goes on from there (unless told to start over).

use std::sync::Arc;
use std::time::Instant;

use event_schemas::LogPosition;
use event_store::{BatchError, Checkpoints, GlobalLog};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Row};
use tokio::sync::mpsc;

use crate::batch::{run_batch, run_fed_batch};
use crate::feed::Feed;
use crate::lock::lock_key;
use crate::projector::{ProjectionError, Projector};

/// Where a projector's rebuild stands, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    /// Events applied so far (by this run).
    pub events: u64,
    pub position: LogPosition,
    /// The head of the readable log when the rebuild started.
    pub head: LogPosition,
    pub events_per_second: f64,
    /// Where this run started: [`LogPosition::START`], or where an earlier, interrupted
    /// rebuild had got to.
    pub resumed_from: LogPosition,
}

/// How a rebuild treats copies an earlier rebuild left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildOptions {
    /// Start over from the start of the log even when a resumable copy exists.
    pub restart: bool,
}

/// How often the swap is tried while the copy cannot reach the live position.
const SWAP_ATTEMPTS: u32 = 100;
const SWAP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a rebuild failed (the live tables of a projector that failed are untouched).
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Some projectors of the set failed (`failed` is the first failure) while the others
    /// were rebuilt and swapped in.
    #[error("{} were rebuilt and swapped in all the same", swapped.join(", "))]
    Partial {
        swapped: Vec<String>,
        #[source]
        failed: Box<RebuildError>,
    },
    #[error("another rebuild of {0} is running")]
    Busy(String),
    #[error("the rebuild's database work failed")]
    Database(#[from] sqlx::Error),
    #[error("projecting into the new tables of {name} failed")]
    Projection {
        name: String,
        #[source]
        source: BatchError<ProjectionError>,
    },
    #[error(
        "the live tables of {0} stayed in use by other sessions (long queries?) through every \
         attempt to swap the new ones in; nothing was swapped (run the replay again to resume)"
    )]
    TablesInUse(String),
    #[error(
        "the new tables of {name} could not reach the live position {live} (they are at \
         {position}): an older transaction holds the log back; nothing was swapped"
    )]
    Behind {
        name: String,
        position: LogPosition,
        live: LogPosition,
    },
}

/// The scratch schema of `projector`'s rebuild.
pub fn scratch_schema(name: &str) -> String {
    format!(
        "rebuild_{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// The checkpoint of `projector`'s rebuild.
pub fn scratch_checkpoint(name: &str) -> String {
    format!("rebuild:{name}")
}

/// One projector's rebuild: its own connection, holding the rebuild's advisory lock.
struct Job {
    projector: Arc<dyn Projector>,
    conn: PgConnection,
    schema: String,
    checkpoint: String,
    start: LogPosition,
}

/// Rebuilds `projectors` together (one read of the log for all) and swaps each one's tables
/// in as soon as it has caught up; returns the events applied. `progress` is called when a
/// projector starts and after each of its batches.
#[tracing::instrument(skip_all, fields(projectors = projectors.len()))]
pub(crate) async fn rebuild_all(
    pool: &PgPool,
    projectors: &[Arc<dyn Projector>],
    batch_size: i64,
    options: RebuildOptions,
    mut progress: impl FnMut(&str, &RebuildProgress),
) -> Result<u64, RebuildError> {
    // every projector's rebuild lock first: a busy one stops the whole set before anything
    let mut locked: Vec<(Arc<dyn Projector>, PgConnection)> = Vec::new();
    for projector in projectors {
        let attempt = try_lock(pool, &scratch_checkpoint(projector.name())).await;
        if let Ok(Some(conn)) = attempt {
            locked.push((projector.clone(), conn));
            continue;
        }
        for (_, conn) in locked {
            conn.close().await.ok();
        }
        return Err(match attempt {
            Err(error) => error.into(),
            _ => RebuildError::Busy(projector.name().to_owned()),
        });
    }
    let marker = marker(pool).await?;
    let mut jobs = Vec::with_capacity(locked.len());
    let mut failure = None;
    for (projector, mut conn) in locked {
        let schema = scratch_schema(projector.name());
        let checkpoint = scratch_checkpoint(projector.name());
        match prepare(
            &mut conn,
            projector.as_ref(),
            &schema,
            &checkpoint,
            &marker,
            options,
        )
        .await
        {
            Ok(start) => jobs.push(Job {
                projector,
                conn,
                schema,
                checkpoint,
                start,
            }),
            Err(error) => {
                failure.get_or_insert(error);
                conn.close().await.ok();
            }
        }
    }
    if let Some(error) = failure {
        for job in jobs {
            job.conn.close().await.ok();
        }
        return Err(error);
    }

    let head = GlobalLog::head(pool).await.map_err(|e| match e {
        event_store::LogError::Read(e) => RebuildError::Database(e),
    })?;
    let feed = Arc::new(Feed::new(
        jobs.iter().map(|j| j.projector.filter()),
        batch_size,
    ));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        let feed = feed.clone();
        let tx = tx.clone();
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut job = job;
            let name = job.projector.name();
            let result = run(&pool, &mut job, &feed, batch_size, head, |p| {
                let _ = tx.send((name, p));
            })
            .await;
            job.conn.close().await.ok();
            result.map(|events| (name, events))
        });
    }
    drop(tx);
    while let Some((name, p)) = rx.recv().await {
        progress(name, &p);
    }
    let mut applied = 0;
    let mut swapped = Vec::new();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((name, events))) => {
                applied += events;
                swapped.push(name.to_owned());
            }
            Ok(Err(error)) => {
                failure.get_or_insert(error);
            }
            Err(join) => {
                failure.get_or_insert(RebuildError::Database(sqlx::Error::Protocol(format!(
                    "a rebuild task ended abnormally: {join}"
                ))));
            }
        }
    }
    match failure {
        Some(error) if swapped.is_empty() => Err(error),
        Some(error) => {
            swapped.sort();
            Err(RebuildError::Partial {
                swapped,
                failed: Box::new(error),
            })
        }
        None => Ok(applied),
    }
}

/// A new connection holding the advisory lock `name`; `None` when someone else holds it.
async fn try_lock(pool: &PgPool, name: &str) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut conn = pool.connect_options().connect().await?;
    let taken: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(lock_key(name))
        .fetch_one(&mut conn)
        .await?;
    if taken {
        Ok(Some(conn))
    } else {
        conn.close().await.ok();
        Ok(None)
    }
}

/// What a copy is created under: the last migration applied and this crate's version (a
/// projector's code may change without a migration). A copy is resumed only under the same.
async fn marker(pool: &PgPool) -> Result<String, sqlx::Error> {
    let migration: Option<i64> =
        sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
            .fetch_one(pool)
            .await?;
    Ok(format!(
        "workledger rebuild copy; migration {}; projections {}",
        migration.unwrap_or(0),
        env!("CARGO_PKG_VERSION")
    ))
}

/// Resumes the copy an earlier rebuild left (when it was made under `marker` and has all its
/// tables), or creates empty copies; returns where projecting goes on from.
async fn prepare(
    conn: &mut PgConnection,
    projector: &dyn Projector,
    schema: &str,
    checkpoint: &str,
    marker: &str,
    options: RebuildOptions,
) -> Result<LogPosition, RebuildError> {
    let tables = projector.tables();
    let found: Option<(Option<String>, i64)> = sqlx::query_as(
        "select obj_description(n.oid, 'pg_namespace'), \
                (select count(*) from pg_tables t \
                 where t.schemaname = n.nspname and t.tablename = any($2)) \
         from pg_namespace n where n.nspname = $1",
    )
    .bind(schema)
    .bind(tables)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((comment, count)) = &found
        && !options.restart
        && comment.as_deref() == Some(marker)
        && *count == tables.len() as i64
    {
        let position = Checkpoints::load(&mut *conn, checkpoint).await?;
        tracing::info!(%position, "resuming the rebuild an earlier run left");
        return Ok(position);
    }
    if found.is_some() {
        tracing::info!(
            restart = options.restart,
            "starting over: the copy an earlier rebuild left is not resumable"
        );
    }
    // one transaction: the copies and their checkpoint start over together
    let mut tx = Connection::begin(&mut *conn).await?;
    sqlx::query(&format!("drop schema if exists {schema} cascade"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("create schema {schema}"))
        .execute(&mut *tx)
        .await?;
    for table in tables {
        sqlx::query(&format!(
            "create table {schema}.{table} (like public.{table} including all)"
        ))
        .execute(&mut *tx)
        .await?;
        // built when the copy has caught up (`build_indexes`)
        for (index, _) in indexes(&mut tx, schema, table, Uniqueness::NonUnique).await? {
            sqlx::query(&format!("drop index {schema}.{index}"))
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query(&format!(
        "comment on schema {schema} is '{}'",
        marker.replace('\'', "''")
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query("delete from checkpoints where name = $1")
        .bind(checkpoint)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(LogPosition::START)
}

async fn run(
    pool: &PgPool,
    job: &mut Job,
    feed: &Feed,
    batch_size: i64,
    head: LogPosition,
    mut progress: impl FnMut(RebuildProgress),
) -> Result<u64, RebuildError> {
    let projector = job.projector.as_ref();
    let name = projector.name();
    let (schema, checkpoint) = (job.schema.as_str(), job.checkpoint.as_str());
    let conn = &mut job.conn;
    let failed = |source| RebuildError::Projection {
        name: name.to_owned(),
        source,
    };
    sqlx::query(&format!("set search_path to {schema}, public"))
        .execute(&mut *conn)
        .await?;
    let started = Instant::now();
    let mut applied = 0u64;
    // where it starts (or resumes) from, before the first batch
    progress(RebuildProgress {
        events: 0,
        position: job.start,
        head,
        events_per_second: 0.0,
        resumed_from: job.start,
    });
    // up to the head of the readable log: under steady writes something new is readable after
    // almost every batch, so "until nothing is left" might never come; the swap catches up
    // with the rest
    while let Some(batch) = run_fed_batch(conn, checkpoint, projector, feed)
        .await
        .map_err(failed)?
    {
        applied += batch.events as u64;
        progress(RebuildProgress {
            events: applied,
            position: batch.position,
            head,
            events_per_second: applied as f64 / started.elapsed().as_secs_f64().max(1e-3),
            resumed_from: job.start,
        });
        if batch.caught_up {
            break;
        }
    }

    build_indexes(pool, conn, schema, projector.tables()).await?;
    // planner statistics for the copies before they serve: a freshly filled table has none
    // until autovacuum gets to it, and queries plan as if it were empty meanwhile (the inbox
    // over a million tasks went from a few ms to 40-225 ms right after a rebuild)
    for table in projector.tables() {
        sqlx::query(&format!("analyze {schema}.{table}"))
            .execute(&mut *conn)
            .await?;
    }

    // the swap: the live worker waits on its checkpoint row meanwhile. The copy must reach the
    // live position first: swapping in a copy that is behind would make rows vanish from the
    // serving tables until the live worker re-projected them. When events are not readable yet
    // (an older transaction somewhere), or the live tables stay in use (a long query), let go
    // of the locks, wait, and try again.
    let mut attempts = 0;
    loop {
        // what arrived meanwhile (the index builds, a retry's wait), before the transaction:
        // from its checkpoint lock on, it holds the live worker, and with its transaction id
        // every reader of the log in the cluster
        applied += catch_up(conn, checkpoint, projector, batch_size)
            .await
            .map_err(failed)?;
        // applied inside the swap transaction: counted only once it commits (an attempt
        // rolled back leaves them to be applied, and counted, again)
        let mut in_swap = 0u64;
        let mut tx = Connection::begin(&mut *conn).await?;
        let live = Checkpoints::lock(&mut tx, name).await?;
        // then it waits this long at most for the live tables (`drop table` needs them to
        // itself): the transaction id it holds meanwhile holds the whole log back
        sqlx::query("set local lock_timeout = '1s'")
            .execute(&mut *tx)
            .await?;
        let mut position = Checkpoints::load(&mut *tx, checkpoint).await?;
        while position < live {
            // a savepoint per batch inside the swap transaction
            match run_batch(&mut tx, checkpoint, projector, batch_size)
                .await
                .map_err(failed)?
            {
                Some(batch) => {
                    in_swap += batch.events as u64;
                    position = batch.position;
                }
                None => break,
            }
        }
        let outcome = if position >= live {
            match swap(
                &mut tx,
                schema,
                checkpoint,
                name,
                projector.tables(),
                position,
            )
            .await
            {
                Ok(()) => {
                    tx.commit().await?;
                    applied += in_swap;
                    break;
                }
                Err(error) if lock_timed_out(&error) => Retry::TablesInUse,
                Err(error) => return Err(error.into()),
            }
        } else {
            Retry::Behind { position, live }
        };
        tx.rollback().await?;
        attempts += 1;
        if attempts >= SWAP_ATTEMPTS {
            return Err(match outcome {
                Retry::Behind { position, live } => RebuildError::Behind {
                    name: name.to_owned(),
                    position,
                    live,
                },
                Retry::TablesInUse => RebuildError::TablesInUse(name.to_owned()),
            });
        }
        tokio::time::sleep(SWAP_RETRY).await;
    }
    // swapped: the session is closed next, and an error here must not report a swap that
    // committed as failed
    sqlx::query("reset search_path")
        .execute(&mut *conn)
        .await
        .ok();
    Ok(applied)
}

/// Why a swap attempt is tried again.
enum Retry {
    Behind {
        position: LogPosition,
        live: LogPosition,
    },
    TablesInUse,
}

/// Runs batches into the copy until nothing more is readable now; the events applied.
async fn catch_up(
    conn: &mut PgConnection,
    checkpoint: &str,
    projector: &dyn Projector,
    batch_size: i64,
) -> Result<u64, BatchError<ProjectionError>> {
    let mut applied = 0;
    while let Some(batch) = run_batch(conn, checkpoint, projector, batch_size).await? {
        applied += batch.events as u64;
        if batch.caught_up {
            break;
        }
    }
    Ok(applied)
}

/// In the swap transaction: the copies replace the live tables, the live checkpoint moves to
/// the copies' `position`, the scratch schema and checkpoint go.
async fn swap(
    tx: &mut PgConnection,
    schema: &str,
    checkpoint: &str,
    name: &str,
    tables: &[&str],
    position: LogPosition,
) -> Result<(), sqlx::Error> {
    for table in tables {
        swap_table(tx, schema, table).await?;
    }
    Checkpoints::save(&mut *tx, name, position).await?;
    sqlx::query(&format!("drop schema {schema} cascade"))
        .execute(&mut *tx)
        .await?;
    sqlx::query("delete from checkpoints where name = $1")
        .bind(checkpoint)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Whether `error` is `lock_timeout` running out (SQLSTATE 55P03, lock not available).
fn lock_timed_out(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("55P03"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uniqueness {
    Any,
    NonUnique,
}

/// The indexes of `{schema}.{table}` as (name, shape), the shape being the definition from
/// `USING` on (`btree (tenant_id, opened_at, id) WHERE ...`), which names no table.
async fn indexes(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    which: Uniqueness,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    Ok(sqlx::query(
        "select c.relname as name, \
                regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', '') as shape \
         from pg_index i join pg_class c on c.oid = i.indexrelid \
         where i.indrelid = format('%I.%I', $1::text, $2::text)::regclass \
           and ($3 or not i.indisunique) \
         order by c.relname",
    )
    .bind(schema)
    .bind(table)
    .bind(which == Uniqueness::Any)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|r| (r.get("name"), r.get("shape")))
    .collect())
}

/// Index builds of one projector's copies at a time.
const INDEX_BUILDS: usize = 3;

/// Gives the copies in `schema` each index of their `public` table they do not have yet (the
/// ones left out while they were filled), building up to [`INDEX_BUILDS`] at once on
/// connections of `pool`.
async fn build_indexes(
    pool: &PgPool,
    conn: &mut PgConnection,
    schema: &str,
    tables: &[&str],
) -> Result<(), sqlx::Error> {
    use futures::{StreamExt as _, TryStreamExt as _};
    let mut missing = Vec::new();
    for table in tables {
        let live = indexes(conn, "public", table, Uniqueness::NonUnique).await?;
        let copy = indexes(conn, schema, table, Uniqueness::NonUnique).await?;
        missing.extend(
            live.into_iter()
                .filter(|(_, shape)| !copy.iter().any(|(_, s)| s == shape))
                .map(|(name, shape)| (table.to_string(), name, shape)),
        );
    }
    // the futures made beforehand: a closure inside the stream trips up the `Send` check of
    // the spawned rebuild task
    let builds: Vec<_> = missing
        .into_iter()
        .map(|(table, name, shape)| build_index(pool.clone(), schema, table, name, shape))
        .collect();
    futures::stream::iter(builds)
        .buffer_unordered(INDEX_BUILDS)
        .try_collect()
        .await
}

/// Builds the index `name` of `public.{table}` on the copy `{schema}.{table}`, under the same
/// name: index names are per schema, and builds running side by side must not pick names
/// themselves (two `create index on` over the same columns both take the first free name,
/// neither seeing the other's, and one fails on a duplicate name).
async fn build_index(
    pool: PgPool,
    schema: &str,
    table: String,
    name: String,
    shape: String,
) -> Result<(), sqlx::Error> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let mut tx = Connection::begin(&mut *conn).await?;
    // a sort in memory rather than on disk for the usual read-model sizes
    sqlx::query("set local maintenance_work_mem = '128MB'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "create index {name} on {schema}.{table} using {shape}"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        table,
        index = name,
        shape,
        seconds = started.elapsed().as_secs_f64(),
        "built an index of the copy"
    );
    Ok(())
}

/// What `create table ... (like ... including all)` does not copy of the serving table, as
/// statements that give it to `{schema}.{table}`: its owner (the role the workers write as,
/// when the rebuild runs as another), its storage options (autovacuum settings, say) and the
/// privileges granted on it (a reporting role's `select`).
const TABLE_SETTINGS: &str = "\
select format('alter table %I.%I owner to %I', $1::text, c.relname, pg_get_userbyid(c.relowner))
from pg_class c where c.oid = format('public.%I', $2::text)::regclass
union all
select format('alter table %I.%I set (%s)', $1::text, c.relname, array_to_string(c.reloptions, ', '))
from pg_class c where c.oid = format('public.%I', $2::text)::regclass and c.reloptions is not null
union all
select format('grant %s on %I.%I to %s%s', a.privilege_type, $1::text, c.relname,
              case when a.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(a.grantee)) end,
              case when a.is_grantable then ' with grant option' else '' end)
from pg_class c, aclexplode(c.relacl) a
where c.oid = format('public.%I', $2::text)::regclass and a.grantee <> c.relowner";

/// Replaces `public.{table}` by `{schema}.{table}`, giving the new table the old one's owner,
/// storage options and privileges, and the new indexes the old names.
async fn swap_table(tx: &mut PgConnection, schema: &str, table: &str) -> Result<(), sqlx::Error> {
    let settings: Vec<String> = sqlx::query_scalar(TABLE_SETTINGS)
        .bind(schema)
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
    for statement in &settings {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    let old = indexes(tx, "public", table, Uniqueness::Any).await?;
    let new = indexes(tx, schema, table, Uniqueness::Any).await?;
    sqlx::query(&format!("drop table public.{table}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("alter table {schema}.{table} set schema public"))
        .execute(&mut *tx)
        .await?;
    for (new_name, shape) in &new {
        if let Some((old_name, _)) = old.iter().find(|(_, s)| s == shape)
            && old_name != new_name
        {
            sqlx::query(&format!(
                "alter index public.{new_name} rename to {old_name}"
            ))
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}
