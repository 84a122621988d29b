//! Workledger's projector runtime and read models (DESIGN §5).
//!
//! - [`Projector`]: a named, batch-at-a-time reader of the global log whose writes commit with
//!   its checkpoint ([`run_batch`]).
//! - [`Projections`]: the set of read-model projectors; [`Projections::run`] runs one worker per
//!   projector (one active worker per projector across processes, by advisory lock, with
//!   take-over), [`Projections::status`] reports checkpoints, lag and failures.
//! - The read models: [`definitions`], [`instances`], [`tasks`], [`approvals`], [`reports`]
//!   (workflow reports), [`documents`] and [`audit`] (the hash-chained audit trail, with the canonical-entry
//!   and chain-hash functions `workledger audit verify` uses).
//! - [`kafka`]: the publisher of integration events to Kafka, a projector that writes no
//!   table and moves its checkpoint once the broker has acknowledged.
//! - [`notifications`]: the reactor that tells a webhook who has work to do (tasks offered,
//!   assigned, overdue; approvals awaiting a decision, overdue).
//!
//! - [`rebuild`]: rebuilds projections into new tables and swaps them in (no downtime; a
//!   failed or interrupted rebuild changes nothing that serves and can be resumed), for
//!   `workledger replay`.
//!
//! Read models are built from event data only (never the clock), so a rebuild reproduces them.

pub mod approvals;
pub mod audit;
mod batch;
mod comments;
pub mod definitions;
pub mod documents;
pub mod email;
mod feed;
pub mod instances;
pub mod kafka;
mod lock;
pub mod notifications;
mod projector;
pub mod rebuild;
pub mod reports;
mod rows;
mod status;
pub mod tasks;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_schemas::LogPosition;
use event_store::{BatchError, Checkpoints};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use batch::run_fed_batch;
pub use batch::{Batch, run_batch};
pub use lock::{ProjectorLock, lock_key};
pub use projector::{EventFilter, EventRef, ProjectionError, Projector};
pub use rebuild::{RebuildError, RebuildOptions, RebuildProgress};
pub use status::{ProjectorFailure, ProjectorStatus};
pub use worker::RunSettings;

/// How long a projector worker that panicked waits before it starts again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// The read-model projectors' names (their checkpoint rows and metric labels).
pub mod names {
    pub const DEFINITIONS: &str = "definitions";
    pub const INSTANCES: &str = "instances";
    pub const TASKS: &str = "tasks";
    pub const APPROVALS: &str = "approvals";
    pub const WORKFLOW_REPORTS: &str = "workflow_reports";
    pub const AUDIT: &str = "audit";
    pub const DOCUMENTS: &str = "documents";
    /// The Kafka publisher's checkpoint (not a read model: it writes no table).
    pub const KAFKA_PUBLISHER: &str = "kafka_publisher";
    /// The webhook notifier's checkpoint (not a read model either).
    pub const NOTIFICATIONS: &str = "notifications";
    /// The email notifier's checkpoint (not a read model either).
    pub const EMAIL_NOTIFICATIONS: &str = "email_notifications";
}

/// A projector name that is not one of the set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no projector is named {0:?}")]
pub struct UnknownProjector(pub String);

/// Why catching up stopped.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error("projector {name} failed")]
    Failed {
        name: &'static str,
        #[source]
        source: BatchError<ProjectionError>,
    },
    #[error("projector {name} did not reach {target} within {waited:?} (it is at {position})")]
    Timeout {
        name: &'static str,
        target: LogPosition,
        position: LogPosition,
        waited: Duration,
    },
}

/// A set of projectors and how to run them.
#[derive(Debug, Clone)]
pub struct Projections {
    projectors: Vec<Arc<dyn Projector>>,
    settings: RunSettings,
}

impl Default for Projections {
    fn default() -> Self {
        Self::all()
    }
}

impl Projections {
    /// Every read model: definitions, instances, tasks, approvals, workflow reports, audit and
    /// documents.
    pub fn all() -> Self {
        Self::from_projectors(vec![
            Arc::new(definitions::DefinitionsProjector),
            Arc::new(instances::InstancesProjector),
            Arc::new(tasks::TasksProjector),
            Arc::new(approvals::ApprovalsProjector),
            Arc::new(reports::WorkflowReportsProjector),
            Arc::new(audit::AuditProjector),
            Arc::new(documents::DocumentsProjector),
        ])
    }

    /// A set of your own projectors.
    pub fn from_projectors(projectors: Vec<Arc<dyn Projector>>) -> Self {
        Self {
            projectors,
            settings: RunSettings::default(),
        }
    }

    /// Runs with `settings` instead of the defaults.
    pub fn with_settings(mut self, settings: RunSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Only the projectors named (for `workledger replay --projection NAME`).
    pub fn only(self, names: &[&str]) -> Result<Self, UnknownProjector> {
        for name in names {
            if !self.projectors.iter().any(|p| p.name() == *name) {
                return Err(UnknownProjector((*name).to_owned()));
            }
        }
        Ok(Self {
            projectors: self
                .projectors
                .into_iter()
                .filter(|p| names.contains(&p.name()))
                .collect(),
            settings: self.settings,
        })
    }

    /// The projectors' names.
    pub fn names(&self) -> Vec<&'static str> {
        self.projectors.iter().map(|p| p.name()).collect()
    }

    pub fn projectors(&self) -> &[Arc<dyn Projector>] {
        &self.projectors
    }

    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// Runs one worker per projector until `shutdown` is cancelled; returns once every worker
    /// has finished its current batch (which commits or rolls back as a whole).
    ///
    /// Any number of processes may run the same projections: for each projector one worker
    /// holds its advisory lock and projects, the others stand by and take over within
    /// `takeover_interval` when the holder dies.
    pub async fn run(self, pool: PgPool, shutdown: CancellationToken) {
        let worker_id = format!(
            "{}/{}/{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned()),
            std::process::id(),
            Uuid::new_v4().simple()
        );
        // the wake-up task ends with this future, even one aborted or dropped (the workers
        // end with `set`)
        let wakeups = shutdown.child_token();
        let _end_wakeups = wakeups.clone().drop_guard();
        let wake = worker::spawn_wakeups(&pool, wakeups);
        let feed = Arc::new(self.feed());
        let mut set = JoinSet::new();
        // each task's worker, to start it again should it panic
        let mut workers = HashMap::new();
        for projector in self.projectors {
            let worker = worker::Worker {
                projector,
                pool: pool.clone(),
                settings: self.settings.clone(),
                wake: wake.clone(),
                shutdown: shutdown.clone(),
                worker_id: worker_id.clone(),
                feed: feed.clone(),
            };
            workers.insert(set.spawn(worker.clone().run()).id(), worker);
        }
        while let Some(joined) = set.join_next_with_id().await {
            let (id, panicked) = match joined {
                Ok((id, ())) => (id, None),
                Err(error) => (error.id(), Some(error)),
            };
            let Some(worker) = workers.remove(&id) else {
                continue;
            };
            let Some(error) = panicked else { continue };
            let name = worker.projector.name();
            // its batch rolled back and its lock went with its connection: nothing is lost,
            // and the projector is not left without a worker in this process
            metrics::gauge!("workledger_projector_active", "projector" => name).set(0.0);
            if shutdown.is_cancelled() {
                tracing::error!(projector = name, error = %error, "a projector worker panicked");
                continue;
            }
            tracing::error!(projector = name, error = %error,
                "a projector worker panicked; it starts again in {RESTART_AFTER:?}");
            metrics::counter!("workledger_projector_restarts_total", "projector" => name)
                .increment(1);
            let (again, shutdown) = (worker.clone(), shutdown.clone());
            let restarted = set.spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(RESTART_AFTER) => again.run().await,
                }
            });
            workers.insert(restarted.id(), worker);
        }
    }

    /// Runs every projector until nothing more is readable, in this task, without locks (for
    /// tests, tools and a process that owns the database). Returns the events applied.
    pub async fn catch_up(&self, pool: &PgPool) -> Result<u64, CatchUpError> {
        // a batch of each projector in turn, so that they share each read of the log
        let feed = self.feed();
        let mut applied = 0;
        let mut done = vec![false; self.projectors.len()];
        while done.contains(&false) {
            for (projector, done) in self.projectors.iter().zip(done.iter_mut()) {
                if *done {
                    continue;
                }
                let failed = |source| CatchUpError::Failed {
                    name: projector.name(),
                    source,
                };
                let mut conn = pool
                    .acquire()
                    .await
                    .map_err(|e| failed(BatchError::Checkpoint(e)))?;
                let batch = run_fed_batch(&mut conn, projector.name(), projector.as_ref(), &feed)
                    .await
                    .map_err(failed)?;
                match batch {
                    Some(batch) => applied += batch.events as u64,
                    None => *done = true,
                }
            }
        }
        Ok(applied)
    }

    /// One read of the log for all of the set's projectors.
    fn feed(&self) -> feed::Feed {
        feed::Feed::new(
            self.projectors.iter().map(|p| p.filter()),
            self.settings.batch_size,
        )
    }

    /// Catches up until every projector's checkpoint is at or past `target`, waiting while
    /// events are not readable yet (an older transaction anywhere in the cluster still runs).
    pub async fn catch_up_to(
        &self,
        pool: &PgPool,
        target: LogPosition,
        timeout: Duration,
    ) -> Result<u64, CatchUpError> {
        let started = Instant::now();
        let mut applied = 0;
        loop {
            applied += self.catch_up(pool).await?;
            let mut behind = None;
            for projector in &self.projectors {
                let position = Checkpoints::load(pool, projector.name())
                    .await
                    .map_err(|e| CatchUpError::Failed {
                        name: projector.name(),
                        source: BatchError::Checkpoint(e),
                    })?;
                if position < target {
                    behind = Some((projector.name(), position));
                    break;
                }
            }
            let Some((name, position)) = behind else {
                return Ok(applied);
            };
            if started.elapsed() >= timeout {
                return Err(CatchUpError::Timeout {
                    name,
                    target,
                    position,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Rebuilds every projector of the set together (see [`rebuild`]), resuming what an
    /// interrupted rebuild left; `progress` gets the projector's name with each batch. Returns
    /// the events applied.
    pub async fn rebuild(
        &self,
        pool: &PgPool,
        progress: impl FnMut(&str, &RebuildProgress),
    ) -> Result<u64, RebuildError> {
        self.rebuild_with(pool, RebuildOptions::default(), progress)
            .await
    }

    /// [`Projections::rebuild`] with `options` (e.g. to start over).
    pub async fn rebuild_with(
        &self,
        pool: &PgPool,
        options: RebuildOptions,
        progress: impl FnMut(&str, &RebuildProgress),
    ) -> Result<u64, RebuildError> {
        rebuild::rebuild_all(
            pool,
            &self.projectors,
            self.settings.batch_size,
            options,
            progress,
        )
        .await
    }

    /// Every log reader with a checkpoint (the orchestrator and identity included) and every
    /// read-model projector: position, lag, worker and failure.
    pub async fn status(pool: &PgPool) -> Result<Vec<ProjectorStatus>, sqlx::Error> {
        let names = Self::all().names();
        status::load(pool, &names).await
    }
}
