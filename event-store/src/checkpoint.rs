//! Checkpoints: how far each named reader has read, advanced together with its effects.

use std::error::Error as StdError;

use event_schemas::{LogPosition, RecordedEvent};
use sqlx::{PgConnection, PgExecutor, PgPool, Row};

use crate::log::{GlobalLog, LogError, LogFilter};

/// The `checkpoints` table.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoints;

impl Checkpoints {
    /// Where `name` stands (the start of the log for a reader never seen before).
    pub async fn load<'c>(
        executor: impl PgExecutor<'c>,
        name: &str,
    ) -> Result<LogPosition, sqlx::Error> {
        let row = sqlx::query(
            "select tx_id::text::bigint as tx_id, global_position from checkpoints where name = $1",
        )
        .bind(name)
        .fetch_optional(executor)
        .await?;
        Ok(match row {
            Some(row) => LogPosition {
                tx_id: row.try_get::<i64, _>("tx_id")? as u64,
                global_position: row.try_get("global_position")?,
            },
            None => LogPosition::START,
        })
    }

    /// Locks `name`'s row for the rest of the transaction (creating it at the start of the log)
    /// and returns its position. A second worker of the same reader waits here, then sees the
    /// position the first one committed.
    pub async fn lock(conn: &mut PgConnection, name: &str) -> Result<LogPosition, sqlx::Error> {
        // an upsert that always returns the row, and holds its lock until the transaction ends
        let row = sqlx::query(
            "insert into checkpoints as c (name) values ($1) \
             on conflict (name) do update set name = c.name \
             returning c.tx_id::text::bigint as tx_id, c.global_position",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
        Ok(LogPosition {
            tx_id: row.try_get::<i64, _>("tx_id")? as u64,
            global_position: row.try_get("global_position")?,
        })
    }

    /// Whether reader `name` has taken every event stored so far, readable or not yet: no
    /// event lies beyond its checkpoint. One statement, so one snapshot: a transaction that
    /// commits meanwhile cannot make both halves look empty.
    pub async fn is_caught_up<'c>(
        executor: impl PgExecutor<'c>,
        name: &str,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "select not exists ( \
                 select 1 from events e \
                 where (e.tx_id, e.global_position) > coalesce( \
                     (select (c.tx_id, c.global_position) from checkpoints c where c.name = $1), \
                     ('0'::xid8, 0::bigint)))",
        )
        .bind(name)
        .fetch_one(executor)
        .await
    }

    /// Starts `name` at `position` unless it has a checkpoint already (a reader that should
    /// begin where the log is now rather than at its start).
    pub async fn start_at<'c>(
        executor: impl PgExecutor<'c>,
        name: &str,
        position: LogPosition,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "insert into checkpoints (name, tx_id, global_position) \
             values ($1, $2::text::xid8, $3) on conflict (name) do nothing",
        )
        .bind(name)
        .bind(position.tx_id.to_string())
        .bind(position.global_position)
        .execute(executor)
        .await?;
        Ok(())
    }

    /// Moves `name` to `position`.
    pub async fn save<'c>(
        executor: impl PgExecutor<'c>,
        name: &str,
        position: LogPosition,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "insert into checkpoints (name, tx_id, global_position, updated_at) \
             values ($1, $2::text::xid8, $3, now()) \
             on conflict (name) do update \
             set tx_id = excluded.tx_id, global_position = excluded.global_position, \
                 updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(position.tx_id.to_string())
        .bind(position.global_position)
        .execute(executor)
        .await?;
        Ok(())
    }
}

/// Why a batch was not applied. Nothing of it took effect: the checkpoint did not move.
#[derive(Debug, thiserror::Error)]
pub enum BatchError<E: StdError + 'static> {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("checkpoint storage failed")]
    Checkpoint(#[from] sqlx::Error),
    #[error("the reader failed on its batch")]
    Apply(#[source] E),
}

/// Reads the next batch of up to `limit` events after `name`'s checkpoint, hands it to `apply`
/// inside a transaction, and advances the checkpoint in that same transaction.
///
/// Returns the new position, or `None` when there was nothing to read. Either the batch's
/// effects and the new checkpoint both commit, or neither does: each event takes effect exactly
/// once, across crashes and concurrent workers of the same reader.
pub async fn process_batch<E, F>(
    pool: &PgPool,
    name: &str,
    limit: i64,
    apply: F,
) -> Result<Option<LogPosition>, BatchError<E>>
where
    E: StdError + 'static,
    F: AsyncFnOnce(&mut PgConnection, &[RecordedEvent]) -> Result<(), E>,
{
    process_batch_matching(pool, name, limit, &LogFilter::all(), apply).await
}

/// [`process_batch`] for a reader that takes only some events: up to `limit` events are passed
/// over, `apply` gets those `filter` takes (it is not called when there are none), and the
/// checkpoint moves past all of them.
pub async fn process_batch_matching<E, F>(
    pool: &PgPool,
    name: &str,
    limit: i64,
    filter: &LogFilter,
    apply: F,
) -> Result<Option<LogPosition>, BatchError<E>>
where
    E: StdError + 'static,
    F: AsyncFnOnce(&mut PgConnection, &[RecordedEvent]) -> Result<(), E>,
{
    let mut tx = pool.begin().await?;
    let after = Checkpoints::lock(&mut tx, name).await?;
    let (batch, last) = GlobalLog::read_matching(&mut *tx, after, limit, filter).await?;
    let Some(last) = last else {
        tx.rollback().await?;
        return Ok(None);
    };
    if !batch.is_empty() {
        apply(&mut tx, &batch).await.map_err(BatchError::Apply)?;
    }
    Checkpoints::save(&mut *tx, name, last).await?;
    tx.commit().await?;
    Ok(Some(last))
}
