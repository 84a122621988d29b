//! Durable timers: stored when the orchestrator sees the event that schedules them, fired by
//! the [`TimerWorker`] when due, across restarts.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::orchestrator::Reaction;
use event_store::GlobalLog;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::runtime::{Cause, Dispatched, Runtime, report_failure};

/// One timer: when it is due, and the event whose reaction scheduled it.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer {
    pub timer_id: Uuid,
    pub tenant_id: String,
    pub due_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
}

impl Timer {
    /// The timer a reaction to `cause` schedules.
    pub(crate) fn for_cause(
        cause: &crate::runtime::Cause,
        timer_id: Uuid,
        due_at: DateTime<Utc>,
    ) -> Self {
        Self {
            timer_id,
            tenant_id: cause.tenant_id.clone(),
            due_at,
            aggregate_type: cause.aggregate_type.clone(),
            aggregate_id: cause.aggregate_id.clone(),
            sequence: cause.sequence,
        }
    }
}

/// Stores `timer` once: a timer id seen again (the orchestrator ran twice) changes nothing.
pub(crate) async fn insert<'c>(
    executor: impl PgExecutor<'c>,
    timer: &Timer,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into timers (timer_id, tenant_id, due_at, aggregate_type, aggregate_id, sequence) \
         values ($1, $2, $3, $4, $5, $6) on conflict (timer_id) do nothing",
    )
    .bind(timer.timer_id)
    .bind(&timer.tenant_id)
    .bind(timer.due_at)
    .bind(&timer.aggregate_type)
    .bind(&timer.aggregate_id)
    .bind(timer.sequence)
    .execute(executor)
    .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("timer storage failed")]
    Database(#[from] sqlx::Error),
    #[error("could not read the event that scheduled timer {0}")]
    Source(Uuid, #[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("firing timer {0} failed; it stays due")]
    Fire(Uuid, #[source] crate::RuntimeError),
}

/// Fires due timers. Several workers may run: each takes due timers with `skip locked`.
#[derive(Debug, Clone)]
pub struct TimerWorker {
    runtime: Arc<Runtime>,
    batch: i64,
}

impl TimerWorker {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self {
            runtime,
            batch: 100,
        }
    }

    /// Fires the timers due at `now` (up to one batch); returns how many fired.
    ///
    /// A timer is marked fired in the same transaction that took it; when its reaction fails
    /// for a transient reason the transaction rolls back and the timer stays due.
    #[tracing::instrument(name = "fire_timers", skip_all)]
    pub async fn fire_due(&self, now: DateTime<Utc>) -> Result<usize, TimerError> {
        let pool = self.runtime.pool();
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(
            "select timer_id, tenant_id, due_at, aggregate_type, aggregate_id, sequence \
             from timers where fired_at is null and due_at <= $1 \
             order by due_at limit $2 for update skip locked",
        )
        .bind(now)
        .bind(self.batch)
        .fetch_all(&mut *tx)
        .await?;
        let mut fired = 0;
        for row in rows {
            let timer = Timer {
                timer_id: row.try_get("timer_id")?,
                tenant_id: row.try_get("tenant_id")?,
                due_at: row.try_get("due_at")?,
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
            };
            self.fire(&timer, now).await?;
            sqlx::query("update timers set fired_at = $2 where timer_id = $1")
                .bind(timer.timer_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            fired += 1;
        }
        tx.commit().await?;
        if fired > 0 {
            metrics::counter!("workledger_timers_fired_total").increment(fired as u64);
        }
        Ok(fired)
    }

    /// Derives the timer's reaction again from its source event and carries it out as of
    /// `now` (never before the due time: the database keeps microseconds, the domain more).
    async fn fire(&self, timer: &Timer, now: DateTime<Utc>) -> Result<(), TimerError> {
        let source_error =
            |e: Box<dyn std::error::Error + Send + Sync>| TimerError::Source(timer.timer_id, e);
        let event = GlobalLog::event_at(
            self.runtime.pool(),
            &timer.aggregate_type,
            &timer.aggregate_id,
            timer.sequence,
        )
        .await
        .map_err(|e| source_error(Box::new(e)))?
        .ok_or_else(|| source_error("the event is missing".into()))?;
        let reactions = domain::react_to_recorded(&event).map_err(|e| source_error(Box::new(e)))?;
        let cause = Cause::of_recorded(&event).map_err(|e| source_error(Box::new(e)))?;
        let cause = Cause { at: now, ..cause };
        for reaction in reactions {
            let Reaction::Schedule {
                timer_id, reaction, ..
            } = reaction
            else {
                continue;
            };
            if timer_id != timer.timer_id {
                continue;
            }
            match self.runtime.dispatch(&cause, *reaction).await {
                Ok(Dispatched::Appended { .. } | Dispatched::Schedule(_)) => {}
                Err(error) if error.is_transient() => {
                    return Err(TimerError::Fire(timer.timer_id, error));
                }
                Err(error) => report_failure(&cause, &error),
            }
        }
        Ok(())
    }

    /// Fires due timers every `poll` until `shutdown` resolves.
    pub async fn run(self, poll: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.fire_due(Utc::now()).await {
                Ok(n) if n as i64 == self.batch => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = %crate::error_chain(&error), "firing timers failed")
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}
