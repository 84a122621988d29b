//! Commands on the workflow aggregates, and the cascade of reactions they trigger.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, EventEnvelope};
use domain::definition::{Definition, PublishedDefinition};
use domain::orchestrator::{OpenApprovalRequest, Reaction};
use domain::workflow_definition::DefinitionCommand;
use domain::{
    Approval, ApprovalCommand, Caller, Command, InstanceCommand, Rejection, StartInstance, Task,
    TaskCommand, WorkflowDefinition, WorkflowInstance, ids, react,
};
use event_schemas::{Actor, AnyEvent, EventMetadata, LogPosition, RecordedEvent};
use event_store::connections::Connections;
use event_store::{AppendNotifier, Executor};
use lru::LruCache;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::definitions::DefinitionCache;
use crate::directory::Directory;
use crate::error::RuntimeError;
use crate::timers::{self, Timer};
use crate::together::Planning;

/// Who sends a command, when, and the ids that tie its events (and its cascade's) together.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub caller: Caller,
    pub at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub request_id: String,
}

impl RequestContext {
    pub(crate) fn metadata(&self) -> EventMetadata {
        EventMetadata {
            event_id: Uuid::nil(), // stamped per event by the repository
            tenant_id: self.caller.tenant_id.clone(),
            actor: self.caller.actor.clone(),
            correlation_id: self.correlation_id,
            causation_id: self.request_id.clone(),
            request_id: self.request_id.clone(),
            occurred_at: self.at,
        }
    }

    /// The cause of reactions to event `sequence` of the aggregate this request's command
    /// went to.
    pub(crate) fn cause(&self, aggregate_type: &str, aggregate_id: &str, sequence: i64) -> Cause {
        Cause {
            tenant_id: self.caller.tenant_id.clone(),
            correlation_id: self.correlation_id,
            request_id: self.request_id.clone(),
            at: self.at,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence,
        }
    }
}

/// What a command did, cascade included.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The aggregate the command went to.
    pub id: String,
    /// Its version afterwards (the `ETag`).
    pub version: usize,
    /// The last log position the command or its cascade appended: the consistency token.
    pub position: Option<LogPosition>,
    /// Events appended, cascade included.
    pub appended: usize,
}

/// The event a reaction answers: its tenant, the ids it carries on, and where it is stored.
#[derive(Debug, Clone)]
pub(crate) struct Cause {
    pub tenant_id: String,
    pub correlation_id: Uuid,
    pub request_id: String,
    pub at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
}

impl Cause {
    /// The cause of reactions to an event read from the log.
    pub(crate) fn of_recorded(event: &RecordedEvent) -> Result<Self, event_schemas::MetadataError> {
        let map: std::collections::HashMap<String, String> =
            serde_json::from_value(event.metadata.clone()).unwrap_or_default();
        let meta = EventMetadata::from_map(&map)?;
        Ok(Self {
            tenant_id: meta.tenant_id,
            correlation_id: meta.correlation_id,
            request_id: meta.request_id,
            at: meta.occurred_at,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
        })
    }

    pub(crate) fn key(&self) -> CauseKey {
        (
            self.aggregate_type.clone(),
            self.aggregate_id.clone(),
            self.sequence,
        )
    }

    pub(crate) fn metadata(&self) -> EventMetadata {
        EventMetadata {
            event_id: Uuid::nil(),
            tenant_id: self.tenant_id.clone(),
            actor: Actor::Service(domain::caller::ORCHESTRATOR.into()),
            correlation_id: self.correlation_id,
            causation_id: format!(
                "{}/{}/{}",
                self.aggregate_type, self.aggregate_id, self.sequence
            ),
            request_id: self.request_id.clone(),
            occurred_at: self.at,
        }
    }
}

/// An event by aggregate type, id and sequence.
pub(crate) type CauseKey = (String, String, i64);

/// How many events [`Reacted`] remembers.
const REMEMBERED_REACTIONS: usize = 100_000;

/// The events whose every reaction the inline cascade carried out, so that the process
/// manager in the same process passes over them instead of sending each command again only
/// to find it changes nothing (a store round trip per reaction). Forgetting is always safe:
/// the process manager then sends the commands again, and they are idempotent.
#[derive(Debug)]
struct Reacted(Mutex<LruCache<CauseKey, ()>>);

impl Default for Reacted {
    fn default() -> Self {
        Self(Mutex::new(LruCache::new(
            NonZeroUsize::new(REMEMBERED_REACTIONS).expect("not zero"),
        )))
    }
}

impl Reacted {
    fn remember(&self, key: CauseKey) {
        self.lock().put(key, ());
    }

    fn take(&self, key: &CauseKey) -> bool {
        self.lock().pop(key).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<CauseKey, ()>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A reaction resolved to the command it sends (`opens`: the command creates its target).
#[derive(Debug)]
pub(crate) enum Resolved {
    Task {
        id: Uuid,
        command: Command<TaskCommand>,
        opens: bool,
    },
    Approval {
        id: Uuid,
        command: Command<ApprovalCommand>,
        opens: bool,
    },
    Instance {
        id: Uuid,
        command: Command<InstanceCommand>,
    },
    Schedule(Timer),
}

/// What carrying out one reaction did.
#[derive(Debug)]
pub(crate) enum Dispatched {
    /// A command was executed; `events` (possibly none) were appended.
    Appended {
        aggregate_type: &'static str,
        aggregate_id: String,
        events: Vec<(i64, AnyEvent)>,
        position: Option<LogPosition>,
    },
    /// A timer is to be stored.
    Schedule(Timer),
}

/// The workflow runtime: the four aggregates' stores, definitions, and group lookup.
#[derive(Debug)]
pub struct Runtime {
    pub(crate) pool: PgPool,
    pub(crate) definitions: Executor<WorkflowDefinition>,
    pub(crate) instances: Executor<WorkflowInstance>,
    pub(crate) tasks: Executor<Task>,
    pub(crate) approvals: Executor<Approval>,
    /// The connections of the executors above, for the runtime's own statements (timers).
    connections: Connections,
    cache: DefinitionCache,
    directory: Arc<dyn Directory>,
    cascade: bool,
    /// Events whose every reaction this process's cascade carried out (see [`Reacted`]).
    reacted: Reacted,
}

impl Runtime {
    pub fn new(pool: PgPool, notifier: AppendNotifier, directory: Arc<dyn Directory>) -> Self {
        Self::on(Connections::new(pool), notifier, directory)
    }

    /// A runtime whose executors and timers take their connections from `connections` (see
    /// [`Connections`]; a [`Directory`] reading Postgres may share them too).
    pub fn on(
        connections: Connections,
        notifier: AppendNotifier,
        directory: Arc<dyn Directory>,
    ) -> Self {
        let executor = || connections.clone();
        Self {
            definitions: Executor::on(executor(), notifier.clone(), event_schemas::upcasters()),
            instances: Executor::on(executor(), notifier.clone(), event_schemas::upcasters()),
            tasks: Executor::on(executor(), notifier.clone(), event_schemas::upcasters()),
            approvals: Executor::on(executor(), notifier, event_schemas::upcasters()),
            pool: connections.pool().clone(),
            connections,
            cache: DefinitionCache::default(),
            directory,
            cascade: true,
            reacted: Reacted::default(),
        }
    }

    /// Commands answer before their cascade, which the [`crate::ProcessManager`] then runs
    /// from the log alone.
    pub fn without_cascade(mut self) -> Self {
        self.cascade = false;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Stores a timer a command's cascade scheduled, once its event is appended; `false`
    /// (logged) when it could not be stored: the process manager stores it when it reaches
    /// that event.
    pub(crate) async fn store_timer(&self, timer: &timers::Timer) -> bool {
        let stored = match self.connections.acquire().await {
            Ok(mut conn) => {
                let stored = timers::insert(&mut *conn, timer).await;
                conn.keep_after(&stored);
                stored
            }
            Err(error) => Err(error),
        };
        if let Err(error) = &stored {
            tracing::warn!(error = %error, timer = %timer.timer_id,
                "could not store a timer; the process manager will");
        }
        stored.is_ok()
    }

    /// Publishes `definition` as its key's next version in the caller's tenant.
    pub async fn publish(
        &self,
        ctx: &RequestContext,
        definition: Definition,
    ) -> Result<Outcome, RuntimeError> {
        let id = ids::definition_id(&ctx.caller.tenant_id, definition.key());
        let command = DefinitionCommand::Publish { definition };
        self.run::<WorkflowDefinition, _>(&id, ctx, command, None, false)
            .await
    }

    /// A published version (the latest when `version` is `None`) of `key` in `tenant_id`.
    pub async fn definition(
        &self,
        tenant_id: &str,
        key: &str,
        version: Option<u32>,
    ) -> Result<Arc<PublishedDefinition>, RuntimeError> {
        self.cache
            .get(&self.definitions, tenant_id, key, version)
            .await
    }

    /// Starts an instance of `key` (its latest version unless `version` is given).
    pub async fn start(
        &self,
        ctx: &RequestContext,
        key: &str,
        version: Option<u32>,
        business_key: Option<String>,
        variables: Map<String, Value>,
    ) -> Result<Outcome, RuntimeError> {
        let definition = self.definition(&ctx.caller.tenant_id, key, version).await?;
        let instance_id = Uuid::now_v7();
        let command = InstanceCommand::Start(StartInstance {
            instance_id,
            definition,
            business_key,
            variables,
        });
        // a fresh id: the instance is new, no need to ask the store
        self.run::<WorkflowInstance, _>(&instance_id.to_string(), ctx, command, None, true)
            .await
    }

    /// Sends `command` to workflow instance `id`.
    pub async fn instance(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        command: InstanceCommand,
        expected_version: Option<usize>,
    ) -> Result<Outcome, RuntimeError> {
        self.run::<WorkflowInstance, _>(&id.to_string(), ctx, command, expected_version, false)
            .await
    }

    /// Sets `variables` on instance `id` and retries the decision of its incident at
    /// `step_id`, on the definition version the instance runs.
    pub async fn retry_incident(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        step_id: String,
        variables: Map<String, Value>,
        expected_version: Option<usize>,
    ) -> Result<Outcome, RuntimeError> {
        let (instance, _) = self.load_instance(id).await?;
        if instance.id().is_none() || instance.tenant_id() != ctx.caller.tenant_id {
            return Err(RuntimeError::Rejected(Box::new(
                domain::instance::InstanceError::NotFound,
            )));
        }
        let definition = self
            .definition(
                instance.tenant_id(),
                instance.definition_key(),
                Some(instance.definition_version()),
            )
            .await?;
        let command = InstanceCommand::RetryIncident {
            definition,
            step_id,
            variables,
        };
        self.instance(ctx, id, command, expected_version).await
    }

    /// Sends `command` to task `id`.
    pub async fn task(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        command: TaskCommand,
        expected_version: Option<usize>,
    ) -> Result<Outcome, RuntimeError> {
        self.run::<Task, _>(&id.to_string(), ctx, command, expected_version, false)
            .await
    }

    /// Sends `command` to approval `id`.
    pub async fn approval(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        command: ApprovalCommand,
        expected_version: Option<usize>,
    ) -> Result<Outcome, RuntimeError> {
        self.run::<Approval, _>(&id.to_string(), ctx, command, expected_version, false)
            .await
    }

    /// The current state of a workflow instance (tests and diagnostics; queries read
    /// projections).
    pub async fn load_instance(&self, id: Uuid) -> Result<(WorkflowInstance, usize), RuntimeError> {
        Ok(self.instances.load(&id.to_string()).await?)
    }

    /// The current state of a task.
    pub async fn load_task(&self, id: Uuid) -> Result<(Task, usize), RuntimeError> {
        Ok(self.tasks.load(&id.to_string()).await?)
    }

    /// The current state of an approval.
    pub async fn load_approval(&self, id: Uuid) -> Result<(Approval, usize), RuntimeError> {
        Ok(self.approvals.load(&id.to_string()).await?)
    }

    async fn run<A, C>(
        &self,
        id: &str,
        ctx: &RequestContext,
        command: C,
        expected_version: Option<usize>,
        new: bool,
    ) -> Result<Outcome, RuntimeError>
    where
        A: Planning<Command = Command<C>>,
        A::Event: Into<AnyEvent>,
        A::Error: Rejection + Send + Sync + 'static,
        C: Clone,
    {
        if self.cascade {
            // boxed: the cascade's state would otherwise sit in every command's future
            let together = Box::pin(self.run_together::<A, C>(
                id,
                ctx,
                command.clone(),
                expected_version,
                new,
            ));
            if let Some(outcome) = together.await? {
                return Ok(outcome);
            }
            // another command appended to one of the aggregates first and nothing was
            // appended: step by step, each step decided on the stored state
        }
        let command = Command::new(ctx.caller.clone(), ctx.at, command);
        let executed = A::executor(self)
            .execute(id, command, &ctx.metadata(), expected_version, &())
            .await?;
        let mut outcome = Outcome {
            id: id.to_owned(),
            version: executed.version,
            position: executed.position,
            appended: executed.events.len(),
        };
        if self.cascade && !executed.events.is_empty() {
            let queue = reactions(&executed.events, |sequence| {
                ctx.cause(A::TYPE, id, sequence)
            });
            // boxed: the cascade's state would otherwise sit in every command's future
            let (position, appended) = Box::pin(self.cascade(queue)).await;
            outcome.position = outcome.position.max(position);
            outcome.appended += appended;
        }
        Ok(outcome)
    }

    /// Carries out reactions and the reactions to their events until nothing is left. A step
    /// that fails is logged and left to the process manager, which runs it again from the log;
    /// the command that started the cascade has taken effect either way.
    async fn cascade(
        &self,
        mut queue: VecDeque<(Cause, Reaction)>,
    ) -> (Option<LogPosition>, usize) {
        let mut last = None;
        let mut appended = 0;
        // per cause: reactions not yet carried out, and whether all so far succeeded
        let mut pending: HashMap<CauseKey, (usize, bool)> = HashMap::new();
        for (cause, _) in &queue {
            pending.entry(cause.key()).or_insert((0, true)).0 += 1;
        }
        while let Some((cause, reaction)) = queue.pop_front() {
            let succeeded = match self.dispatch(&cause, reaction).await {
                Ok(Dispatched::Appended {
                    aggregate_type,
                    aggregate_id,
                    events,
                    position,
                }) => {
                    last = last.max(position);
                    appended += events.len();
                    for (sequence, event) in events {
                        let next = Cause {
                            aggregate_type: aggregate_type.to_owned(),
                            aggregate_id: aggregate_id.clone(),
                            sequence,
                            ..cause.clone()
                        };
                        let reactions = react(&aggregate_id, &event);
                        if !reactions.is_empty() {
                            pending.insert(next.key(), (reactions.len(), true));
                        }
                        queue.extend(reactions.into_iter().map(|r| (next.clone(), r)));
                    }
                    true
                }
                Ok(Dispatched::Schedule(timer)) => self.store_timer(&timer).await,
                Err(error) => {
                    report_failure(&cause, &error);
                    false
                }
            };
            let key = cause.key();
            if let Some((left, ok)) = pending.get_mut(&key) {
                *left -= 1;
                *ok &= succeeded;
                if *left == 0 {
                    if *ok {
                        self.reacted.remember(key.clone());
                    }
                    pending.remove(&key);
                }
            }
        }
        (last, appended)
    }

    /// Whether this process's cascade carried out every reaction to `event` already (asked
    /// once by the process manager, which then passes over the event).
    pub fn has_reacted_to(&self, event: &RecordedEvent) -> bool {
        self.reacted.take(&(
            event.aggregate_type.clone(),
            event.aggregate_id.clone(),
            event.sequence,
        ))
    }

    /// Carries out one reaction as the orchestrator of the cause's tenant.
    pub(crate) async fn dispatch(
        &self,
        cause: &Cause,
        reaction: Reaction,
    ) -> Result<Dispatched, RuntimeError> {
        let metadata = cause.metadata();
        match self.resolve(cause, reaction).await? {
            Resolved::Schedule(timer) => Ok(Dispatched::Schedule(timer)),
            Resolved::Task { id, command, .. } => {
                self.send(&self.tasks, id, command, &metadata).await
            }
            Resolved::Approval { id, command, .. } => {
                self.send(&self.approvals, id, command, &metadata).await
            }
            Resolved::Instance { id, command } => {
                self.send(&self.instances, id, command, &metadata).await
            }
        }
    }

    /// The command a reaction sends, as the orchestrator of the cause's tenant: groups
    /// resolved to their members, the definition version loaded.
    pub(crate) async fn resolve(
        &self,
        cause: &Cause,
        reaction: Reaction,
    ) -> Result<Resolved, RuntimeError> {
        let caller = Caller::orchestrator(&cause.tenant_id);
        Ok(match reaction {
            Reaction::Schedule {
                timer_id, due_at, ..
            } => Resolved::Schedule(Timer::for_cause(cause, timer_id, due_at)),
            Reaction::Task { task_id, command } => Resolved::Task {
                id: task_id,
                opens: matches!(command, TaskCommand::Open(_)),
                command: Command::new(caller, cause.at, command),
            },
            Reaction::Approval {
                approval_id,
                command,
            } => Resolved::Approval {
                id: approval_id,
                opens: matches!(command, ApprovalCommand::Open(_)),
                command: Command::new(caller, cause.at, command),
            },
            Reaction::OpenApproval {
                approval_id,
                request,
            } => Resolved::Approval {
                id: approval_id,
                opens: true,
                command: Command::new(
                    caller,
                    cause.at,
                    self.open_approval(&cause.tenant_id, approval_id, request)
                        .await?,
                ),
            },
            Reaction::Instance {
                instance_id,
                definition_key,
                definition_version,
                advance,
            } => {
                let definition = self
                    .definition(&cause.tenant_id, &definition_key, Some(definition_version))
                    .await?;
                Resolved::Instance {
                    id: instance_id,
                    command: Command::new(
                        caller,
                        cause.at,
                        Reaction::instance_command(advance, definition),
                    ),
                }
            }
        })
    }

    /// The command opening approval `approval_id`, its groups resolved to their members now.
    pub(crate) async fn open_approval(
        &self,
        tenant_id: &str,
        approval_id: Uuid,
        request: OpenApprovalRequest,
    ) -> Result<ApprovalCommand, RuntimeError> {
        let mut resolved = Vec::new();
        for group in request.groups() {
            let mut members = self.directory.members(tenant_id, group).await?;
            // a stable order for `sequential` approvals offered to groups
            members.sort();
            resolved.push((group.clone(), members));
        }
        Ok(request.into_command(approval_id, |group| {
            resolved
                .iter()
                .find(|(g, _)| g == group)
                .map(|(_, m)| m.clone())
                .unwrap_or_default()
        }))
    }

    /// Marks `key` as an event whose every reaction this process carried out.
    pub(crate) fn remember_reacted(&self, key: CauseKey) {
        self.reacted.remember(key);
    }

    async fn send<A>(
        &self,
        executor: &Executor<A>,
        id: Uuid,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<Dispatched, RuntimeError>
    where
        A: Aggregate<Services = ()> + Clone,
        A::Command: Clone,
        A::Event: Into<AnyEvent>,
        A::Error: Rejection + Send + Sync + 'static,
    {
        let id = id.to_string();
        let executed = executor.execute(&id, command, metadata, None, &()).await?;
        metrics::counter!("workledger_orchestrator_commands_total", "aggregate_type" => A::TYPE,
            "effect" => if executed.events.is_empty() { "none" } else { "appended" })
        .increment(1);
        Ok(Dispatched::Appended {
            aggregate_type: A::TYPE,
            aggregate_id: id,
            position: executed.position,
            events: executed
                .events
                .into_iter()
                .map(|e| (e.sequence as i64, e.payload.into()))
                .collect(),
        })
    }
}

/// The reactions to a command's events, each with its cause.
fn reactions<A>(
    events: &[EventEnvelope<A>],
    cause: impl Fn(i64) -> Cause,
) -> VecDeque<(Cause, Reaction)>
where
    A: Aggregate,
    A::Event: Into<AnyEvent>,
{
    let mut queue = VecDeque::new();
    for envelope in events {
        let event: AnyEvent = envelope.payload.clone().into();
        let cause = cause(envelope.sequence as i64);
        queue.extend(
            react(&envelope.aggregate_id, &event)
                .into_iter()
                .map(|r| (cause.clone(), r)),
        );
    }
    queue
}

/// A reaction that did not take effect: rejections are the domain's final word (logged, and
/// counted); failures are left for the process manager to retry.
pub(crate) fn report_failure(cause: &Cause, error: &RuntimeError) {
    let outcome = if error.is_transient() {
        "failed"
    } else {
        "rejected"
    };
    metrics::counter!("workledger_orchestrator_failures_total", "outcome" => outcome).increment(1);
    tracing::warn!(
        error = %error,
        code = error.code(),
        cause = %format!("{}/{}/{}", cause.aggregate_type, cause.aggregate_id, cause.sequence),
        correlation_id = %cause.correlation_id,
        "a workflow reaction did not take effect"
    );
}
