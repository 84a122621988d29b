//! A command and the cascade it triggers, appended together.
//!
//! The aggregates are pure, so the whole cascade can be decided in memory: the command, the
//! reactions to its events, the reactions to theirs, each on the state the earlier ones left.
//! Everything is then appended in one statement (one transaction, one round trip), instead of
//! one commit per aggregate touched: a purchase order's nine commands append nine times, not
//! about twenty. Aggregates a reaction creates (tasks and approvals with deterministic ids) are
//! taken to be new without a read; the append checks every guess.
//!
//! Nothing is lost to a lost race: when another command appended to one of the aggregates
//! first, nothing at all was appended, and the command runs again step by step
//! ([`Runtime::run`]), deciding each step on the stored state. A reaction that is refused, or
//! whose state could not be read, is left out, as the step-by-step cascade leaves it: logged,
//! and left to the process manager, which runs it again from the log.

use std::collections::{HashMap, VecDeque};

use domain::orchestrator::Reaction;
use domain::{Approval, Command, Rejection, Task, WorkflowDefinition, WorkflowInstance, react};
use event_schemas::{AnyEvent, EventMetadata};
use event_store::{AppendError, Appends, Executor, Planned};

use crate::error::RuntimeError;
use crate::runtime::{Cause, CauseKey, Outcome, RequestContext, Resolved, Runtime, report_failure};
use crate::timers::Timer;

/// An aggregate type a cascade may touch: where its executor and its plans are.
pub(crate) trait Planning: cqrs_es::Aggregate<Services = ()> + Clone
where
    Self::Command: Clone,
    Self::Event: Into<AnyEvent>,
    Self::Error: Rejection + Send + Sync + 'static,
{
    fn executor(runtime: &Runtime) -> &Executor<Self>;
    fn plans(plans: &mut Plans) -> &mut HashMap<String, Planned<Self>>;
}

macro_rules! planning {
    ($aggregate:ty, $field:ident) => {
        impl Planning for $aggregate {
            fn executor(runtime: &Runtime) -> &Executor<Self> {
                &runtime.$field
            }

            fn plans(plans: &mut Plans) -> &mut HashMap<String, Planned<Self>> {
                &mut plans.$field
            }
        }
    };
}

planning!(WorkflowDefinition, definitions);
planning!(WorkflowInstance, instances);
planning!(Task, tasks);
planning!(Approval, approvals);

/// What a cascade decided so far: each aggregate's plan, the events staged in the order they
/// were decided, and the timers to store once they are appended.
#[derive(Debug, Default)]
pub(crate) struct Plans {
    definitions: HashMap<String, Planned<WorkflowDefinition>>,
    instances: HashMap<String, Planned<WorkflowInstance>>,
    tasks: HashMap<String, Planned<Task>>,
    approvals: HashMap<String, Planned<Approval>>,
    appends: Appends,
    timers: Vec<(CauseKey, Timer)>,
    /// Per cause with reactions: whether every one of them was planned (or scheduled).
    causes: HashMap<CauseKey, bool>,
    /// Reactions planned, by aggregate type and whether they added events (for metrics).
    sent: Vec<(&'static str, bool)>,
    /// Reactions that did not take effect, reported once the rest is appended (when the
    /// append loses a race, the step-by-step cascade reports its own).
    failures: Vec<(Cause, RuntimeError)>,
}

impl Runtime {
    /// Decides `command` on aggregate `id` (`new`: one that cannot exist yet) and its whole
    /// cascade in memory, then appends everything in one statement. `None` when another
    /// command appended to one of the aggregates first: nothing was appended, and the caller
    /// runs the command step by step.
    pub(crate) async fn run_together<A, C>(
        &self,
        id: &str,
        ctx: &RequestContext,
        command: C,
        expected_version: Option<usize>,
        new: bool,
    ) -> Result<Option<Outcome>, RuntimeError>
    where
        A: Planning<Command = Command<C>>,
        A::Command: Clone,
        A::Event: Into<AnyEvent>,
        A::Error: Rejection + Send + Sync + 'static,
    {
        let mut plans = Plans::default();
        let command = Command::new(ctx.caller.clone(), ctx.at, command);
        let planned = self
            .plan_on::<A>(
                &mut plans,
                id,
                command,
                &ctx.metadata(),
                expected_version,
                new,
            )
            .await;
        let events = match planned {
            Ok(events) => events,
            Err(error) => {
                self.release(plans);
                return Err(error);
            }
        };
        let version = A::plans(&mut plans).get(id).map_or(0, Planned::version);
        let mut outcome = Outcome {
            id: id.to_owned(),
            version,
            position: None,
            appended: 0,
        };
        let mut queue = VecDeque::new();
        for (sequence, event) in events {
            let cause = ctx.cause(A::TYPE, id, sequence as i64);
            queue.extend(react(id, &event).into_iter().map(|r| (cause.clone(), r)));
        }
        self.plan_cascade(&mut plans, queue).await;
        if let Err(error) = self.finish_plans(&mut plans) {
            self.release(plans);
            return Err(error);
        }
        outcome.appended = plans.appends.len();
        let appends = std::mem::take(&mut plans.appends);
        let executor = A::executor(self);
        match appends
            .commit(executor.connections(), executor.notifier())
            .await
        {
            Ok(position) => outcome.position = position,
            Err(AppendError::Conflict) => {
                metrics::counter!("workledger_cascade_conflicts_total").increment(1);
                return Ok(None);
            }
            Err(AppendError::Store(error)) => return Err(RuntimeError::Store(error)),
        }
        self.committed(plans).await;
        Ok(Some(outcome))
    }

    /// Plans the reactions in `queue` and the reactions to their events until none is left.
    async fn plan_cascade(&self, plans: &mut Plans, mut queue: VecDeque<(Cause, Reaction)>) {
        while let Some((cause, reaction)) = queue.pop_front() {
            let key = cause.key();
            let aggregate_type = reaction.aggregate_type();
            let aggregate_id = reaction.aggregate_id().to_string();
            let command = !matches!(reaction, Reaction::Schedule { .. });
            let planned = Box::pin(self.plan_reaction(plans, &cause, reaction)).await;
            let ok = match planned {
                Ok(events) => {
                    if command {
                        plans.sent.push((aggregate_type, !events.is_empty()));
                    }
                    for (sequence, event) in events {
                        let next = Cause {
                            aggregate_type: aggregate_type.to_owned(),
                            aggregate_id: aggregate_id.clone(),
                            sequence: sequence as i64,
                            ..cause.clone()
                        };
                        let reactions = react(&aggregate_id, &event);
                        queue.extend(reactions.into_iter().map(|r| (next.clone(), r)));
                    }
                    true
                }
                Err(error) => {
                    plans.failures.push((cause.clone(), error));
                    false
                }
            };
            *plans.causes.entry(key).or_insert(true) &= ok;
        }
    }

    /// Plans one reaction (as [`Runtime::dispatch`] carries it out); a timer is kept to be
    /// stored after the append.
    async fn plan_reaction(
        &self,
        plans: &mut Plans,
        cause: &Cause,
        reaction: Reaction,
    ) -> Result<Vec<(usize, AnyEvent)>, RuntimeError> {
        let metadata = cause.metadata();
        match self.resolve(cause, reaction).await? {
            Resolved::Schedule(timer) => {
                plans.timers.push((cause.key(), timer));
                Ok(Vec::new())
            }
            Resolved::Task { id, command, opens } => {
                let id = id.to_string();
                self.plan_on::<Task>(plans, &id, command, &metadata, None, opens)
                    .await
            }
            Resolved::Approval { id, command, opens } => {
                let id = id.to_string();
                self.plan_on::<Approval>(plans, &id, command, &metadata, None, opens)
                    .await
            }
            Resolved::Instance { id, command } => {
                let id = id.to_string();
                self.plan_on::<WorkflowInstance>(plans, &id, command, &metadata, None, false)
                    .await
            }
        }
    }

    /// Decides `command` on aggregate `id` as the cascade has left it so far, staging its
    /// events; answers them with their sequences.
    async fn plan_on<A>(
        &self,
        plans: &mut Plans,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        expected_version: Option<usize>,
        assume_new: bool,
    ) -> Result<Vec<(usize, AnyEvent)>, RuntimeError>
    where
        A: Planning,
        A::Command: Clone,
        A::Event: Into<AnyEvent>,
        A::Error: Rejection + Send + Sync + 'static,
    {
        let executor = A::executor(self);
        let mut planned = match A::plans(plans).remove(id) {
            Some(planned) => planned,
            None => executor.begin(id, expected_version, assume_new).await?,
        };
        let decided = executor
            .plan(
                &mut planned,
                &mut plans.appends,
                command,
                metadata,
                expected_version,
                &(),
            )
            .await;
        A::plans(plans).insert(id.to_owned(), planned);
        Ok(decided?
            .into_iter()
            .map(|(sequence, event)| (sequence, event.into()))
            .collect())
    }

    /// Stages the snapshots of the aggregates whose plans crossed a snapshot boundary.
    fn finish_plans(&self, plans: &mut Plans) -> Result<(), RuntimeError> {
        for planned in plans.definitions.values() {
            self.definitions.finish(planned, &mut plans.appends)?;
        }
        for planned in plans.instances.values() {
            self.instances.finish(planned, &mut plans.appends)?;
        }
        for planned in plans.tasks.values() {
            self.tasks.finish(planned, &mut plans.appends)?;
        }
        for planned in plans.approvals.values() {
            self.approvals.finish(planned, &mut plans.appends)?;
        }
        Ok(())
    }

    /// After the append: the new states are remembered, the timers stored, and the causes
    /// whose every reaction took effect marked, so the process manager of this process passes
    /// over them.
    async fn committed(&self, mut plans: Plans) {
        for (cause, error) in std::mem::take(&mut plans.failures) {
            report_failure(&cause, &error);
        }
        for (key, timer) in std::mem::take(&mut plans.timers) {
            if !self.store_timer(&timer).await {
                plans.causes.insert(key, false);
            }
        }
        for (aggregate_type, appended) in std::mem::take(&mut plans.sent) {
            metrics::counter!("workledger_orchestrator_commands_total",
                "aggregate_type" => aggregate_type,
                "effect" => if appended { "appended" } else { "none" })
            .increment(1);
        }
        for (key, ok) in std::mem::take(&mut plans.causes) {
            if ok {
                self.remember_reacted(key);
            }
        }
        for (_, planned) in plans.definitions {
            self.definitions.committed(planned);
        }
        for (_, planned) in plans.instances {
            self.instances.committed(planned);
        }
        for (_, planned) in plans.tasks {
            self.tasks.committed(planned);
        }
        for (_, planned) in plans.approvals {
            self.approvals.committed(planned);
        }
    }

    /// Gives back the states the plans started from when nothing was appended.
    fn release(&self, plans: Plans) {
        for (_, planned) in plans.definitions {
            self.definitions.release(planned);
        }
        for (_, planned) in plans.instances {
            self.instances.release(planned);
        }
        for (_, planned) in plans.tasks {
            self.tasks.release(planned);
        }
        for (_, planned) in plans.approvals {
            self.approvals.release(planned);
        }
    }
}
