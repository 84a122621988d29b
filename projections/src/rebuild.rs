//! Rebuilding a projection with no downtime (DESIGN §5): project from the start of the log into
//! fresh copies of its tables while the old ones keep serving, then swap them in with one
//! transaction. A rebuild that fails changes nothing.
//!
//! 1. Copies of the projector's tables are created empty in a schema of their own
//!    (`create table rebuild_<name>.t (like public.t including all)`: the migrations stay the
//!    one place their DDL lives).
//! 2. The projector runs on a connection whose `search_path` puts that schema first, under
//!    the checkpoint `rebuild:<name>`, until it has read everything readable.
//! 3. One transaction locks the live checkpoint row (the live worker waits at its next batch),
//!    catches the copies up to at least the live position, drops the old tables, moves the
//!    copies into `public` with the old index names, and moves the live checkpoint there.

use std::time::Instant;

use event_schemas::LogPosition;
use event_store::{BatchError, Checkpoints, GlobalLog};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Row};

use crate::batch::run_batch;
use crate::lock::lock_key;
use crate::projector::{ProjectionError, Projector};

/// Where a rebuild stands, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    /// Events applied so far.
    pub events: u64,
    pub position: LogPosition,
    /// The head of the readable log when the rebuild started.
    pub head: LogPosition,
    pub events_per_second: f64,
}

/// Why a rebuild failed (the live tables are untouched).
/// How often the swap is tried while the copy cannot reach the live position.
const SWAP_ATTEMPTS: u32 = 100;
const SWAP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("another rebuild of {0} is running")]
    Busy(String),
    #[error("the rebuild's database work failed")]
    Database(#[from] sqlx::Error),
    #[error("projecting into the new tables failed")]
    Projection(#[source] BatchError<ProjectionError>),
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

impl From<BatchError<ProjectionError>> for RebuildError {
    fn from(error: BatchError<ProjectionError>) -> Self {
        RebuildError::Projection(error)
    }
}

/// Rebuilds `projector`'s tables from the start of the log and swaps them in; returns the
/// events applied. `progress` is called after every batch.
#[tracing::instrument(skip_all, fields(projector = projector.name()))]
pub async fn rebuild(
    pool: &PgPool,
    projector: &dyn Projector,
    batch_size: i64,
    mut progress: impl FnMut(&RebuildProgress),
) -> Result<u64, RebuildError> {
    let name = projector.name();
    let schema = format!(
        "rebuild_{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let checkpoint = format!("rebuild:{name}");
    let mut conn = pool.connect_options().connect().await?;
    let guard: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(lock_key(&checkpoint))
        .fetch_one(&mut conn)
        .await?;
    if !guard {
        return Err(RebuildError::Busy(name.to_owned()));
    }
    let result = run(
        &mut conn,
        projector,
        &schema,
        &checkpoint,
        batch_size,
        &mut progress,
    )
    .await;
    // whatever happened, leave nothing behind but the swapped tables
    let _ = sqlx::query(&format!("drop schema if exists {schema} cascade"))
        .execute(&mut conn)
        .await;
    let _ = sqlx::query("delete from checkpoints where name = $1")
        .bind(&checkpoint)
        .execute(&mut conn)
        .await;
    conn.close().await.ok();
    result
}

async fn run(
    conn: &mut PgConnection,
    projector: &dyn Projector,
    schema: &str,
    checkpoint: &str,
    batch_size: i64,
    progress: &mut impl FnMut(&RebuildProgress),
) -> Result<u64, RebuildError> {
    let name = projector.name();
    sqlx::query(&format!("drop schema if exists {schema} cascade"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("create schema {schema}"))
        .execute(&mut *conn)
        .await?;
    for table in projector.tables() {
        sqlx::query(&format!(
            "create table {schema}.{table} (like public.{table} including all)"
        ))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("delete from checkpoints where name = $1")
        .bind(checkpoint)
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("set search_path to {schema}, public"))
        .execute(&mut *conn)
        .await?;

    let head = GlobalLog::head(&mut *conn).await.map_err(|e| match e {
        event_store::LogError::Read(e) => RebuildError::Database(e),
    })?;
    let started = Instant::now();
    let mut applied = 0u64;
    while let Some(batch) = run_batch(conn, checkpoint, projector, batch_size).await? {
        applied += batch.events as u64;
        progress(&RebuildProgress {
            events: applied,
            position: batch.position,
            head,
            events_per_second: applied as f64 / started.elapsed().as_secs_f64().max(1e-3),
        });
    }

    // the swap: the live worker waits on its checkpoint row meanwhile. The copy must reach the
    // live position first: swapping in a copy that is behind would make rows vanish from the
    // serving tables until the live worker re-projected them. When events are not readable yet
    // (an older transaction somewhere), let go of the lock, wait, and try again.
    let mut attempts = 0;
    loop {
        let mut tx = Connection::begin(&mut *conn).await?;
        let live = Checkpoints::lock(&mut tx, name).await?;
        let mut position = Checkpoints::load(&mut *tx, checkpoint).await?;
        while position < live {
            // a savepoint per batch inside the swap transaction
            match run_batch(&mut tx, checkpoint, projector, batch_size).await? {
                Some(batch) => {
                    applied += batch.events as u64;
                    position = batch.position;
                }
                None => break,
            }
        }
        if position >= live {
            for table in projector.tables() {
                swap_table(&mut tx, schema, table).await?;
            }
            Checkpoints::save(&mut *tx, name, position).await?;
            tx.commit().await?;
            break;
        }
        tx.rollback().await?;
        attempts += 1;
        if attempts >= SWAP_ATTEMPTS {
            return Err(RebuildError::Behind {
                name: name.to_owned(),
                position,
                live,
            });
        }
        tokio::time::sleep(SWAP_RETRY).await;
        while let Some(batch) = run_batch(conn, checkpoint, projector, batch_size).await? {
            applied += batch.events as u64;
        }
    }
    sqlx::query("reset search_path").execute(&mut *conn).await?;
    Ok(applied)
}

/// Replaces `public.{table}` by `{schema}.{table}`, giving the new indexes the old names.
async fn swap_table(tx: &mut PgConnection, schema: &str, table: &str) -> Result<(), sqlx::Error> {
    let indexes = |schema: &str| {
        format!(
            "select c.relname as name, \
                    regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', '') as shape \
             from pg_index i join pg_class c on c.oid = i.indexrelid \
             where i.indrelid = '{schema}.{table}'::regclass"
        )
    };
    let old: Vec<(String, String)> = sqlx::query(&indexes("public"))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get("name"), r.get("shape")))
        .collect();
    let new: Vec<(String, String)> = sqlx::query(&indexes(schema))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get("name"), r.get("shape")))
        .collect();
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
