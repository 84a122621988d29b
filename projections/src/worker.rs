//! The worker that runs one projector: takes its advisory lock (or stands by to take over),
//! applies batches while there are events, waits for a wake-up when caught up, and stops on a
//! failing event, retrying it with backoff, never skipping it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_store::{BatchError, GlobalLog, LogWaiter};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::batch::{Batch, run_batch, run_fed_batch};
use crate::feed::Feed;
use crate::lock::ProjectorLock;
use crate::projector::{ProjectionError, Projector};
use crate::status;

/// How projector workers run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Events per batch (and per transaction).
    pub batch_size: i64,
    /// How often a caught-up worker looks for events when no notification arrives.
    pub poll_interval: Duration,
    /// How often a caught-up worker looks again while fresh events are not readable yet (an
    /// older transaction still runs).
    pub unreadable_poll: Duration,
    /// First pause after a failure; doubled per failure up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How often a standby worker tries to take a projector over.
    pub takeover_interval: Duration,
    /// How often a worker checks that its lock connection is alive, and samples lag.
    pub heartbeat: Duration,
    /// Once caught up, the least time between the starts of two batches: events arriving
    /// meanwhile go into one batch rather than one transaction per notification for each
    /// projector (under load those small transactions were most of the database's work).
    pub live_interval: Duration,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            poll_interval: Duration::from_secs(1),
            unreadable_poll: Duration::from_millis(5),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            takeover_interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(1),
            live_interval: Duration::from_millis(20),
        }
    }
}

/// Broadcasts "new events may be readable" to every worker of the process: one `LISTEN`
/// connection for all of them.
pub(crate) fn spawn_wakeups(pool: &PgPool, shutdown: CancellationToken) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    let waiter = LogWaiter::new(pool, Duration::from_secs(3600));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = waiter.wait() => {}
            }
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    });
    rx
}

/// `error: cause: cause` on one line.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[derive(Clone)]
pub(crate) struct Worker {
    pub projector: Arc<dyn Projector>,
    pub pool: PgPool,
    pub settings: RunSettings,
    pub wake: watch::Receiver<u64>,
    pub shutdown: CancellationToken,
    pub worker_id: String,
    /// The read shared with the process's other workers.
    pub feed: Arc<Feed>,
}

impl Worker {
    /// Runs until shutdown: holds the projector's lock and projects, or stands by.
    pub async fn run(mut self) {
        let name = self.projector.name();
        let span = tracing::info_span!("projector", projector = name);
        async move {
            // a standby worker keeps its connection and retries the lock on it
            let mut standby: Option<sqlx::PgConnection> = None;
            while !self.shutdown.is_cancelled() {
                let conn = match standby.take() {
                    Some(conn) => Ok(conn),
                    None => ProjectorLock::connect(&self.pool).await,
                };
                let attempt = match conn {
                    Ok(conn) => ProjectorLock::try_take(conn, name).await,
                    Err(error) => Err(error),
                };
                match attempt {
                    Ok(Ok(lock)) => {
                        tracing::info!(worker = %self.worker_id, "took the projector's lock");
                        metrics::gauge!("workledger_projector_active", "projector" => name).set(1.0);
                        if let Err(error) =
                            status::record_worker(&self.pool, name, &self.worker_id).await
                        {
                            tracing::warn!(error = %chain(&error), "could not record the worker");
                        }
                        let lock = self.drive(lock).await;
                        metrics::gauge!("workledger_projector_active", "projector" => name).set(0.0);
                        if let Some(lock) = lock {
                            lock.release().await;
                        }
                    }
                    Ok(Err(conn)) => {
                        tracing::debug!("another worker holds the projector; standing by");
                        standby = Some(conn);
                        self.pause(self.settings.takeover_interval).await;
                    }
                    Err(error) => {
                        tracing::warn!(error = %chain(&error), "cannot take the projector's lock; retrying");
                        self.pause(self.settings.takeover_interval).await;
                    }
                }
            }
            if let Some(conn) = standby {
                use sqlx::Connection as _;
                conn.close().await.ok();
            }
        }
        .instrument(span)
        .await;
    }

    async fn pause(&self, duration: Duration) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = tokio::time::sleep(duration) => {}
        }
    }

    /// Projects while holding `lock`; returns it on shutdown, or `None` when it was lost.
    async fn drive(&mut self, mut lock: ProjectorLock) -> Option<ProjectorLock> {
        let name = self.projector.name();
        let size = self.settings.batch_size.max(1);
        let mut limit = size;
        // after a failed batch, events go one at a time until the failing one is found
        let mut single_left: i64 = 0;
        let mut failing = false;
        let mut backoff = self.settings.retry_min;
        let mut last_beat = Instant::now();
        let mut last_lag: Option<Instant> = None;
        let mut position = None;
        // empty looks in a row
        let mut idle: u32 = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return Some(lock);
            }
            if last_beat.elapsed() >= self.settings.heartbeat {
                if !lock.is_held().await {
                    tracing::warn!("lost the projector's lock connection; trying to take it again");
                    return None;
                }
                last_beat = Instant::now();
            }
            let started = Instant::now();
            let result = self.batch(limit).await;
            match result {
                Ok(Some(batch)) => {
                    // the read stopped at the head: caught up as of this batch's snapshot
                    let caught_up = batch.caught_up;
                    idle = 0;
                    record_batch(name, &batch, started.elapsed());
                    position = Some(batch.position);
                    if failing {
                        failing = false;
                        tracing::info!(position = %batch.position, "the projector got past the event it failed on");
                        metrics::gauge!("workledger_projector_failed", "projector" => name)
                            .set(0.0);
                        if let Err(error) = status::clear_failure(&self.pool, name).await {
                            tracing::warn!(error = %chain(&error), "could not clear the recorded failure");
                        }
                        single_left = 0;
                    }
                    backoff = self.settings.retry_min;
                    single_left = (single_left - 1).max(0);
                    limit = if single_left > 0 { 1 } else { size };
                    if last_lag.is_none_or(|t| t.elapsed() >= self.settings.heartbeat) {
                        self.sample_lag(batch.position).await;
                        last_lag = Some(Instant::now());
                    }
                    if caught_up && single_left == 0 {
                        // a notification that came during the batch wakes this at once
                        self.wait_for_events(0).await;
                        self.pace(started).await;
                    }
                }
                Ok(None) => {
                    if last_lag.is_none_or(|t| t.elapsed() >= self.settings.heartbeat) {
                        if let Some(position) = position {
                            self.sample_lag(position).await;
                        } else if let Ok(position) =
                            event_store::Checkpoints::load(&self.pool, name).await
                        {
                            self.sample_lag(position).await;
                        }
                        last_lag = Some(Instant::now());
                    }
                    self.wait_for_events(idle).await;
                    self.pace(started).await;
                    idle = idle.saturating_add(1);
                }
                Err(BatchError::Apply(error)) if limit > 1 && error.needs_search() => {
                    // find the failing event: apply the events before it one by one
                    tracing::debug!(error = %chain(&error), "batch failed; retrying its events one at a time");
                    single_left = limit;
                    limit = 1;
                }
                Err(error) => {
                    failing = true;
                    self.report_failure(&error, limit == 1).await;
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(self.settings.retry_max);
                }
            }
        }
    }

    #[tracing::instrument(name = "projector_batch", skip_all, fields(projector = self.projector.name(), limit = limit))]
    async fn batch(&self, limit: i64) -> Result<Option<Batch>, BatchError<ProjectionError>> {
        let mut conn = self.pool.acquire().await?;
        if limit == self.feed.limit() {
            return run_fed_batch(
                &mut conn,
                self.projector.name(),
                self.projector.as_ref(),
                &self.feed,
            )
            .await;
        }
        run_batch(
            &mut conn,
            self.projector.name(),
            self.projector.as_ref(),
            limit,
        )
        .await
    }

    /// Logs, counts and records a failed batch; `single` when the batch was the one event
    /// after the checkpoint, which then is the event it failed on.
    async fn report_failure(&self, error: &BatchError<ProjectionError>, single: bool) {
        let name = self.projector.name();
        let event = match error {
            BatchError::Apply(error) => match error.event() {
                Some(event) => Some(event.clone()),
                None if single => self.next_event().await,
                None => None,
            },
            _ => None,
        };
        let message = chain(error);
        metrics::counter!("workledger_projector_errors_total", "projector" => name).increment(1);
        metrics::gauge!("workledger_projector_failed", "projector" => name).set(1.0);
        match &event {
            Some(event) => tracing::error!(
                error = %message,
                position = %event.position,
                event_id = %event.event_id,
                event_type = %event.event_type,
                aggregate = %format!("{}/{}", event.aggregate_type, event.aggregate_id),
                "the projector is stopped on an event; retrying it"
            ),
            None => tracing::error!(error = %message, "the projector failed; retrying"),
        }
        if let Err(error) = status::record_failure(&self.pool, name, &message, event.as_ref()).await
        {
            tracing::warn!(error = %chain(&error), "could not record the failure");
        }
    }

    /// The next event the projector reads (the one a single-event batch failed on).
    async fn next_event(&self) -> Option<crate::projector::EventRef> {
        let mut conn = self.pool.acquire().await.ok()?;
        let after = event_store::Checkpoints::load(&mut *conn, self.projector.name())
            .await
            .ok()?;
        let read = crate::batch::read(&mut conn, after, &self.projector.filter(), 1)
            .await
            .ok()?;
        read.events.first().map(crate::projector::EventRef::of)
    }

    async fn sample_lag(&self, position: event_schemas::LogPosition) {
        let name = self.projector.name();
        match status::lag(&self.pool, position).await {
            Ok((events, seconds)) => {
                metrics::gauge!("workledger_projector_lag_events", "projector" => name)
                    .set(events as f64);
                metrics::gauge!("workledger_projector_lag_seconds", "projector" => name)
                    .set(seconds);
            }
            Err(error) => tracing::debug!(error = %chain(&error), "could not sample lag"),
        }
    }

    /// Caught up: lets at least `live_interval` pass since the last batch started, so that
    /// events arriving close together are projected together.
    async fn pace(&self, last_started: Instant) {
        let next = last_started + self.settings.live_interval;
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = tokio::time::sleep_until(next.into()) => {}
        }
    }

    /// Caught up: waits for a notification or the poll interval, or only briefly when events
    /// exist that an older transaction keeps unreadable for now.
    ///
    /// The short pause doubles while nothing becomes readable (up to 50 ms): a long transaction
    /// elsewhere in the cluster holds the log back, and polling hard will not help.
    async fn wait_for_events(&mut self, streak: u32) {
        let pause = match GlobalLog::has_unreadable(&self.pool).await {
            Ok(true) => (self.settings.unreadable_poll * 2u32.saturating_pow(streak.min(8)))
                .min(Duration::from_millis(50))
                .min(self.settings.poll_interval),
            _ => self.settings.poll_interval,
        };
        let wake = &mut self.wake;
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = tokio::time::sleep(pause) => {}
            _ = wake.changed() => {}
        }
    }
}

fn record_batch(name: &'static str, batch: &Batch, took: Duration) {
    metrics::gauge!("workledger_projector_position", "projector" => name)
        .set(batch.position.global_position as f64);
    metrics::counter!("workledger_projector_events_total", "projector" => name)
        .increment(batch.events as u64);
    metrics::counter!("workledger_projector_batches_total", "projector" => name).increment(1);
    metrics::histogram!("workledger_projector_batch_duration_seconds", "projector" => name)
        .record(took.as_secs_f64());
}
