//! The orchestrator driven from the global log: every event's reactions, carried out exactly
//! once in effect, whatever crashed where.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use event_schemas::{DecodeError, LogPosition, MetadataError, RecordedEvent};
use event_store::{BatchError, LogFilter, LogWaiter, process_batch_matching};
use sqlx::PgConnection;

use crate::RuntimeError;
use crate::runtime::{Cause, Dispatched, Runtime, report_failure};
use crate::timers;

/// The process manager's checkpoint name.
pub const PROCESS_MANAGER: &str = "orchestrator";

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot decode event {event_type} at {position}")]
    Decode {
        position: LogPosition,
        event_type: String,
        #[source]
        source: DecodeError,
    },
    #[error("event at {position} has unreadable metadata")]
    Metadata {
        position: LogPosition,
        #[source]
        source: MetadataError,
    },
    #[error("reaction to the event at {position} failed; the batch will be retried")]
    Reaction {
        position: LogPosition,
        #[source]
        source: RuntimeError,
    },
    #[error("storing a timer failed")]
    Timer(#[from] sqlx::Error),
    #[error("stopped on purpose after {0} reactions")]
    Stopped(usize),
}

/// Reads the global log after its checkpoint and carries out each event's reactions.
///
/// Follow-up reactions are not cascaded here: the events a reaction appends are read from the
/// log in turn. Commands are idempotent, so re-running a batch after a crash changes nothing;
/// the reactions of a batch and its checkpoint (and any timers it stores) commit together.
#[derive(Debug)]
pub struct ProcessManager {
    runtime: Arc<Runtime>,
    batch: i64,
    stop_after: Option<usize>,
}

impl ProcessManager {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self {
            runtime,
            batch: 200,
            stop_after: None,
        }
    }

    /// Events per batch.
    pub fn with_batch(mut self, batch: i64) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Simulates a crash: the next batch fails after carrying out `reactions` reactions
    /// (their commands have taken effect, the checkpoint has not moved).
    pub fn crash_after(mut self, reactions: usize) -> Self {
        self.stop_after = Some(reactions);
        self
    }

    /// Processes one batch; `Ok(None)` when there was nothing to read.
    pub async fn step(&self) -> Result<Option<LogPosition>, BatchError<ProcessError>> {
        let done = AtomicUsize::new(0);
        // the incidents the batch reads, told of once it committed (a failed batch is read again)
        let incidents = std::sync::Mutex::new(Vec::new());
        let runtime = &self.runtime;
        let stop_after = self.stop_after;
        // definitions and identity cause no reactions: pass over them without decoding
        let filter = LogFilter::aggregate_types(&[
            event_schemas::workflow_instance::AGGREGATE_TYPE,
            event_schemas::task::AGGREGATE_TYPE,
            event_schemas::approval::AGGREGATE_TYPE,
        ]);
        let result = process_batch_matching(
            runtime.pool(),
            PROCESS_MANAGER,
            self.batch,
            &filter,
            async |tx: &mut PgConnection, events: &[RecordedEvent]| {
                for event in events {
                    if event.event_type == "IncidentRaised" {
                        let step = &event.payload["IncidentRaised"]["step_id"];
                        incidents
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((event.aggregate_id.clone(), step.as_str().map(str::to_owned)));
                    }
                    react_to(runtime, tx, event, &done, stop_after).await?;
                }
                Ok(())
            },
        )
        .await;
        if let Ok(Some(position)) = &result {
            metrics::gauge!("workledger_projector_position", "projector" => PROCESS_MANAGER)
                .set(position.global_position as f64);
            let incidents = incidents.into_inner().unwrap_or_else(|e| e.into_inner());
            metrics::counter!("workledger_incidents_raised_total")
                .increment(incidents.len() as u64);
            for (instance_id, step_id) in incidents {
                tracing::warn!(%instance_id, step_id = step_id.unwrap_or_default(),
                    "a decision could not be evaluated: the path waits for an operator's retry");
            }
        }
        result
    }

    /// Runs until `shutdown` resolves: batches while there are events, then waits for a
    /// notification or `poll`. A failing batch is retried with backoff, never skipped.
    pub async fn run(
        self,
        waiter: LogWaiter,
        retry: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut backoff = retry;
        loop {
            let pause = match self.step().await {
                Ok(Some(_)) => {
                    backoff = retry;
                    continue;
                }
                Ok(None) => None,
                Err(error) => {
                    metrics::counter!("workledger_projector_errors_total", "projector" => PROCESS_MANAGER)
                        .increment(1);
                    tracing::error!(error = %crate::error_chain(&error), "orchestrator batch failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    Some(backoff)
                }
            };
            let wait = async {
                match pause {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => waiter.wait().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = wait => {}
            }
        }
    }
}

async fn react_to(
    runtime: &Runtime,
    tx: &mut PgConnection,
    event: &RecordedEvent,
    done: &AtomicUsize,
    stop_after: Option<usize>,
) -> Result<(), ProcessError> {
    let reactions = domain::react_to_recorded(event).map_err(|source| ProcessError::Decode {
        position: event.position,
        event_type: event.event_type.clone(),
        source,
    })?;
    if reactions.is_empty() || runtime.has_reacted_to(event) {
        return Ok(());
    }
    let cause = Cause::of_recorded(event).map_err(|source| ProcessError::Metadata {
        position: event.position,
        source,
    })?;
    for reaction in reactions {
        if stop_after.is_some_and(|n| done.load(Ordering::SeqCst) >= n) {
            return Err(ProcessError::Stopped(done.load(Ordering::SeqCst)));
        }
        match runtime.dispatch(&cause, reaction).await {
            Ok(Dispatched::Schedule(timer)) => timers::insert(&mut *tx, &timer).await?,
            Ok(Dispatched::Appended { .. }) => {}
            Err(source) if source.is_transient() => {
                return Err(ProcessError::Reaction {
                    position: event.position,
                    source,
                });
            }
            Err(error) => report_failure(&cause, &error),
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}
