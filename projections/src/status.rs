//! Where each log reader stands: its checkpoint, its lag, the worker running it, and the event
//! it is stopped on when it fails (`projector_status`).

use chrono::{DateTime, Utc};
use event_schemas::LogPosition;
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::lock;
use crate::projector::EventRef;

/// The failure a projector is stopped on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectorFailure {
    /// The error with its causes, on one line.
    pub message: String,
    /// The event it fails on (`None` when the failure is not pinned to an event, e.g. the
    /// database is unreachable).
    pub position: Option<LogPosition>,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    /// `aggregate_type/aggregate_id`
    pub aggregate: Option<String>,
    pub since: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: i32,
}

/// One log reader as `workledger status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectorStatus {
    /// The checkpoint name (`tasks`, `audit`, ..., and the orchestrator's and identity's).
    pub name: String,
    /// Whether it is one of this crate's read-model projectors.
    pub read_model: bool,
    pub position: LogPosition,
    /// When the checkpoint last moved.
    pub updated_at: Option<DateTime<Utc>>,
    /// Readable events of any type the checkpoint has not passed yet.
    pub lag_events: i64,
    /// Age of the oldest of those events (0 when caught up).
    pub lag_seconds: f64,
    /// Whether a worker holds the projector's advisory lock right now (projectors of the
    /// runtime: the read models and the Kafka publisher).
    pub active: bool,
    /// The worker that last took the lock (`host/pid/uuid`).
    pub worker: Option<String>,
    pub error: Option<ProjectorFailure>,
}

/// Lag counts stop at this many events; beyond it the count is estimated from positions.
/// Every worker samples its lag each heartbeat: counting further made the samples a sizeable
/// share of the database's work while projectors catch up.
const EXACT_LAG_UP_TO: i64 = 1_000;

/// How far `position` is behind the readable log: (events, seconds).
pub(crate) async fn lag(pool: &PgPool, position: LogPosition) -> Result<(i64, f64), sqlx::Error> {
    let row = sqlx::query(
        "with pending as (
            select recorded_at from events
            where (tx_id, global_position) > ($1::text::xid8, $2)
              and tx_id < pg_snapshot_xmin(pg_current_snapshot())
            order by tx_id, global_position
            limit $3
        ), head as (
            select global_position from events
            where tx_id < pg_snapshot_xmin(pg_current_snapshot())
            order by tx_id desc, global_position desc
            limit 1
        )
        select (select count(*) from pending) as pending,
               (select extract(epoch from now() - min(recorded_at))::float8 from pending) as age,
               (select global_position from head) as head_position",
    )
    .bind(position.tx_id.to_string())
    .bind(position.global_position)
    .bind(EXACT_LAG_UP_TO)
    .fetch_one(pool)
    .await?;
    let pending: i64 = row.try_get("pending")?;
    let age: Option<f64> = row.try_get("age")?;
    let head: Option<i64> = row.try_get("head_position")?;
    let events = if pending >= EXACT_LAG_UP_TO {
        // positions are handed out in (nearly) commit order: a close estimate
        head.map_or(pending, |h| (h - position.global_position).max(pending))
    } else {
        pending
    };
    Ok((events, age.unwrap_or(0.0).max(0.0)))
}

/// Records that `worker` took `name`'s lock.
pub(crate) async fn record_worker(
    pool: &PgPool,
    name: &str,
    worker: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into projector_status (name, worker, worker_since, updated_at) \
         values ($1, $2, now(), now()) \
         on conflict (name) do update \
         set worker = excluded.worker, worker_since = excluded.worker_since, updated_at = now()",
    )
    .bind(name)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that `name` is stopped on `event` (or on a failure pinned to no event).
pub(crate) async fn record_failure(
    pool: &PgPool,
    name: &str,
    message: &str,
    event: Option<&EventRef>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into projector_status (name, error, error_tx_id, error_position, error_event_id, \
             error_event_type, error_aggregate, failed_since, attempts, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $7, now(), 1, now()) \
         on conflict (name) do update \
         set error = excluded.error, \
             error_tx_id = excluded.error_tx_id, \
             error_position = excluded.error_position, \
             error_event_id = excluded.error_event_id, \
             error_event_type = excluded.error_event_type, \
             error_aggregate = excluded.error_aggregate, \
             -- the same event failing again keeps its first failure time
             failed_since = case when projector_status.error_event_id is not distinct from \
                                      excluded.error_event_id \
                                  and projector_status.error is not null \
                             then projector_status.failed_since else now() end, \
             attempts = case when projector_status.error_event_id is not distinct from \
                                  excluded.error_event_id \
                              and projector_status.error is not null \
                         then projector_status.attempts + 1 else 1 end, \
             updated_at = now()",
    )
    .bind(name)
    .bind(message)
    .bind(event.map(|e| e.position.tx_id as i64))
    .bind(event.map(|e| e.position.global_position))
    .bind(event.map(|e| e.event_id))
    .bind(event.map(|e| e.event_type.as_str()))
    .bind(event.map(|e| format!("{}/{}", e.aggregate_type, e.aggregate_id)))
    .execute(pool)
    .await?;
    Ok(())
}

/// Clears `name`'s failure: it got past the event.
pub(crate) async fn clear_failure(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update projector_status set error = null, error_tx_id = null, error_position = null, \
             error_event_id = null, error_event_type = null, error_aggregate = null, \
             failed_since = null, attempts = 0, updated_at = now() \
         where name = $1",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every log reader with a checkpoint or a worker, plus `read_models` (the names of this crate's projectors,
/// shown at the start of the log before they first ran).
pub(crate) async fn load(
    pool: &PgPool,
    read_models: &[&str],
) -> Result<Vec<ProjectorStatus>, sqlx::Error> {
    let rows = sqlx::query(
        "select n.name, c.tx_id::text::bigint as tx_id, c.global_position, c.updated_at, \
                s.worker, s.error, s.error_tx_id, s.error_position, s.error_event_id, \
                s.error_event_type, s.error_aggregate, s.failed_since, s.attempts \
         from (select name from checkpoints union select name from projector_status \
               union select unnest($1::text[])) n \
         left join checkpoints c on c.name = n.name \
         left join projector_status s on s.name = n.name \
         order by n.name",
    )
    .bind(read_models)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get("name")?;
        let position = match row.try_get::<Option<i64>, _>("tx_id")? {
            Some(tx_id) => LogPosition {
                tx_id: tx_id as u64,
                global_position: row.try_get("global_position")?,
            },
            None => LogPosition::START,
        };
        let error = match row.try_get::<Option<String>, _>("error")? {
            Some(message) => Some(ProjectorFailure {
                message,
                position: match (
                    row.try_get::<Option<i64>, _>("error_tx_id")?,
                    row.try_get::<Option<i64>, _>("error_position")?,
                ) {
                    (Some(tx_id), Some(global_position)) => Some(LogPosition {
                        tx_id: tx_id as u64,
                        global_position,
                    }),
                    _ => None,
                },
                event_id: row.try_get("error_event_id")?,
                event_type: row.try_get("error_event_type")?,
                aggregate: row.try_get("error_aggregate")?,
                since: row
                    .try_get::<Option<DateTime<Utc>>, _>("failed_since")?
                    .unwrap_or_default(),
                attempts: row.try_get::<Option<i32>, _>("attempts")?.unwrap_or(0),
            }),
            None => None,
        };
        let read_model = read_models.contains(&name.as_str());
        let (lag_events, lag_seconds) = lag(pool, position).await?;
        let worker: Option<String> = row.try_get("worker")?;
        // a projector of the runtime (a read model, or the publisher) holds an advisory lock
        let active = (read_model || worker.is_some()) && lock::is_locked(pool, &name).await?;
        out.push(ProjectorStatus {
            read_model,
            position,
            updated_at: row.try_get("updated_at")?,
            lag_events,
            lag_seconds,
            active,
            worker,
            error,
            name,
        });
    }
    Ok(out)
}
