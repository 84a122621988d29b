//! A complete in-memory, synchronous runtime of the four aggregates and the orchestrator:
//! every command's events are recorded, then the orchestrator's reactions to them run until
//! nothing is left (the cascade the command path runs before it answers). Durable timers
//! wait until [`LocalRuntime::fire_due`] is called with a later clock.
//!
//! No persistence and no concurrency: it serves the engine's tests, property tests and
//! benchmark, and shows the real runtime what to do with [`Reaction`]s.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use event_schemas::{Actor, AnyEvent};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::approval::{Approval, ApprovalCommand, ApprovalError};
use crate::caller::{Caller, Command};
use crate::decide::Decide;
use crate::definition::{Definition, DefinitionError, PublishedDefinition};
use crate::ids::definition_id;
use crate::instance::{InstanceCommand, InstanceError, StartInstance, WorkflowInstance};
use crate::orchestrator::{Reaction, react};
use crate::task::{Task, TaskCommand, TaskError};
use crate::workflow_definition::{DefinitionCommand, WorkflowDefinition, WorkflowDefinitionError};

/// Why a runtime call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Definition(#[from] WorkflowDefinitionError),
    #[error(transparent)]
    InvalidDefinition(#[from] DefinitionError),
    #[error("workflow definition {key:?} version {version:?} not found")]
    DefinitionNotFound { key: String, version: Option<u32> },
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Approval(#[from] ApprovalError),
}

/// One recorded event with the facts metadata would carry.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub tenant_id: String,
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub actor: Actor,
    pub at: DateTime<Utc>,
    pub event: AnyEvent,
}

/// A reaction the aggregates rejected (a bug or a race worth a look).
#[derive(Debug, Clone, PartialEq)]
pub struct ReactionFailure {
    pub reaction: Reaction,
    pub error: RuntimeError,
}

type Timer = (String, Reaction);

/// See the module documentation.
#[derive(Debug, Default)]
pub struct LocalRuntime {
    definitions: HashMap<String, WorkflowDefinition>,
    parsed: HashMap<(String, String, u32), Arc<PublishedDefinition>>,
    instances: HashMap<Uuid, WorkflowInstance>,
    tasks: HashMap<Uuid, Task>,
    approvals: HashMap<Uuid, Approval>,
    groups: HashMap<(String, String), Vec<Uuid>>,
    timers: BTreeMap<(DateTime<Utc>, Uuid), Timer>,
    timer_ids: HashSet<Uuid>,
    log: Vec<LoggedEvent>,
    discard_log: bool,
    event_count: u64,
    failures: Vec<ReactionFailure>,
}

impl LocalRuntime {
    /// A runtime that keeps every event (see [`LocalRuntime::events`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A runtime that only counts events (for benchmarks).
    pub fn counting_only() -> Self {
        Self {
            discard_log: true,
            ..Self::default()
        }
    }

    /// Sets the members of `group` in `tenant_id` (what approval groups resolve to).
    pub fn set_group_members(&mut self, tenant_id: &str, group: &str, members: Vec<Uuid>) {
        self.groups
            .insert((tenant_id.to_owned(), group.to_owned()), members);
    }

    /// Publishes `definition`; the version it is now published as.
    pub fn publish(
        &mut self,
        caller: &Caller,
        at: DateTime<Utc>,
        definition: Definition,
    ) -> Result<u32, RuntimeError> {
        let id = definition_id(&caller.tenant_id, definition.key());
        let command = Command::new(
            caller.clone(),
            at,
            DefinitionCommand::Publish { definition },
        );
        let events = run(&mut self.definitions, id.clone(), command)?;
        self.after(caller, at, &id, events);
        let latest = self.definitions.get(&id).and_then(|d| d.latest());
        Ok(latest.map_or(0, |v| v.version))
    }

    /// The published definition (latest when `version` is `None`), parsed once and cached.
    pub fn definition(
        &mut self,
        tenant_id: &str,
        key: &str,
        version: Option<u32>,
    ) -> Result<Arc<PublishedDefinition>, RuntimeError> {
        let not_found = || RuntimeError::DefinitionNotFound {
            key: key.to_owned(),
            version,
        };
        let stored = self
            .definitions
            .get(&definition_id(tenant_id, key))
            .and_then(|d| d.version(version))
            .ok_or_else(not_found)?;
        let cache_key = (tenant_id.to_owned(), key.to_owned(), stored.version);
        if let Some(parsed) = self.parsed.get(&cache_key) {
            return Ok(Arc::clone(parsed));
        }
        let parsed = Arc::new(stored.parse()?);
        self.parsed.insert(cache_key, Arc::clone(&parsed));
        Ok(parsed)
    }

    /// Starts instance `instance_id` of `key` (latest version unless `version`) and runs the
    /// cascade.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        caller: &Caller,
        at: DateTime<Utc>,
        instance_id: Uuid,
        key: &str,
        version: Option<u32>,
        business_key: Option<String>,
        variables: Map<String, Value>,
    ) -> Result<(), RuntimeError> {
        let definition = self.definition(&caller.tenant_id, key, version)?;
        let start = StartInstance {
            instance_id,
            definition,
            business_key,
            variables,
        };
        self.instance_command(caller, at, instance_id, InstanceCommand::Start(start))
    }

    /// Sends `command` to instance `id` and runs the cascade.
    pub fn instance_command(
        &mut self,
        caller: &Caller,
        at: DateTime<Utc>,
        id: Uuid,
        command: InstanceCommand,
    ) -> Result<(), RuntimeError> {
        let events = run(
            &mut self.instances,
            id,
            Command::new(caller.clone(), at, command),
        )?;
        self.after(caller, at, &id.to_string(), events);
        Ok(())
    }

    /// Sends `command` to task `id` and runs the cascade.
    pub fn task_command(
        &mut self,
        caller: &Caller,
        at: DateTime<Utc>,
        id: Uuid,
        command: TaskCommand,
    ) -> Result<(), RuntimeError> {
        let events = run(
            &mut self.tasks,
            id,
            Command::new(caller.clone(), at, command),
        )?;
        self.after(caller, at, &id.to_string(), events);
        Ok(())
    }

    /// Sends `command` to approval `id` and runs the cascade.
    pub fn approval_command(
        &mut self,
        caller: &Caller,
        at: DateTime<Utc>,
        id: Uuid,
        command: ApprovalCommand,
    ) -> Result<(), RuntimeError> {
        let events = run(
            &mut self.approvals,
            id,
            Command::new(caller.clone(), at, command),
        )?;
        self.after(caller, at, &id.to_string(), events);
        Ok(())
    }

    /// Runs every durable timer due at `now` (in due order) with its cascade; how many ran.
    pub fn fire_due(&mut self, now: DateTime<Utc>) -> usize {
        let mut fired = 0;
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (tenant_id, reaction) = entry.remove();
            let mut queue = VecDeque::from([(tenant_id, reaction)]);
            self.drain(now, &mut queue);
            fired += 1;
        }
        fired
    }

    /// Runs the orchestrator again over every recorded event, as a restarted log-driven
    /// orchestrator would; the number of events that caused (zero when it is idempotent).
    pub fn rerun_orchestrator(&mut self, at: DateTime<Utc>) -> u64 {
        let before = self.event_count;
        let mut queue: VecDeque<(String, Reaction)> = self
            .log
            .iter()
            .flat_map(|logged| {
                react(&logged.aggregate_id, &logged.event)
                    .into_iter()
                    .map(|r| (logged.tenant_id.clone(), r))
            })
            .collect();
        self.drain(at, &mut queue);
        self.event_count - before
    }

    /// The instance `id`, if it exists.
    pub fn instance(&self, id: Uuid) -> Option<&WorkflowInstance> {
        self.instances.get(&id)
    }

    /// The task `id`, if it exists.
    pub fn task(&self, id: Uuid) -> Option<&Task> {
        self.tasks.get(&id)
    }

    /// The approval `id`, if it exists.
    pub fn approval(&self, id: Uuid) -> Option<&Approval> {
        self.approvals.get(&id)
    }

    /// Every recorded event, in order (empty for [`LocalRuntime::counting_only`]).
    pub fn events(&self) -> &[LoggedEvent] {
        &self.log
    }

    /// How many events were recorded.
    pub fn event_count(&self) -> u64 {
        self.event_count
    }

    /// Reactions the aggregates rejected.
    pub fn failures(&self) -> &[ReactionFailure] {
        &self.failures
    }

    /// The durable timers waiting, by due time.
    pub fn pending_timers(&self) -> impl Iterator<Item = (DateTime<Utc>, &Reaction)> {
        self.timers.iter().map(|((due, _), (_, r))| (*due, r))
    }

    fn after(
        &mut self,
        caller: &Caller,
        at: DateTime<Utc>,
        aggregate_id: &str,
        events: Vec<impl Into<AnyEvent>>,
    ) {
        let mut queue = VecDeque::new();
        self.record(caller, at, aggregate_id, events, &mut queue);
        self.drain(at, &mut queue);
    }

    fn record(
        &mut self,
        caller: &Caller,
        at: DateTime<Utc>,
        aggregate_id: &str,
        events: Vec<impl Into<AnyEvent>>,
        queue: &mut VecDeque<(String, Reaction)>,
    ) {
        for event in events {
            let event = event.into();
            queue.extend(
                react(aggregate_id, &event)
                    .into_iter()
                    .map(|r| (caller.tenant_id.clone(), r)),
            );
            self.event_count += 1;
            if !self.discard_log {
                self.log.push(LoggedEvent {
                    tenant_id: caller.tenant_id.clone(),
                    aggregate_type: event.aggregate_type(),
                    aggregate_id: aggregate_id.to_owned(),
                    actor: caller.actor.clone(),
                    at,
                    event,
                });
            }
        }
    }

    fn drain(&mut self, at: DateTime<Utc>, queue: &mut VecDeque<(String, Reaction)>) {
        while let Some((tenant_id, reaction)) = queue.pop_front() {
            if let Err(error) = self.dispatch(&tenant_id, at, reaction.clone(), queue) {
                self.failures.push(ReactionFailure { reaction, error });
            }
        }
    }

    fn dispatch(
        &mut self,
        tenant_id: &str,
        at: DateTime<Utc>,
        reaction: Reaction,
        queue: &mut VecDeque<(String, Reaction)>,
    ) -> Result<(), RuntimeError> {
        let caller = Caller::orchestrator(tenant_id);
        match reaction {
            Reaction::Schedule {
                timer_id,
                due_at,
                reaction,
            } => {
                if self.timer_ids.insert(timer_id) {
                    self.timers
                        .insert((due_at, timer_id), (tenant_id.to_owned(), *reaction));
                }
            }
            Reaction::Task { task_id, command } => {
                let events = run(
                    &mut self.tasks,
                    task_id,
                    Command::new(caller.clone(), at, command),
                )?;
                self.record(&caller, at, &task_id.to_string(), events, queue);
            }
            Reaction::Approval {
                approval_id,
                command,
            } => {
                let command = Command::new(caller.clone(), at, command);
                let events = run(&mut self.approvals, approval_id, command)?;
                self.record(&caller, at, &approval_id.to_string(), events, queue);
            }
            Reaction::OpenApproval {
                approval_id,
                request,
            } => {
                let groups = &self.groups;
                let command = request.into_command(approval_id, |group| {
                    groups
                        .get(&(tenant_id.to_owned(), group.to_owned()))
                        .cloned()
                        .unwrap_or_default()
                });
                let command = Command::new(caller.clone(), at, command);
                let events = run(&mut self.approvals, approval_id, command)?;
                self.record(&caller, at, &approval_id.to_string(), events, queue);
            }
            Reaction::Instance {
                instance_id,
                definition_key,
                definition_version,
                advance,
            } => {
                let definition =
                    self.definition(tenant_id, &definition_key, Some(definition_version))?;
                let command = Command::new(
                    caller.clone(),
                    at,
                    Reaction::instance_command(advance, definition),
                );
                let events = run(&mut self.instances, instance_id, command)?;
                self.record(&caller, at, &instance_id.to_string(), events, queue);
            }
        }
        Ok(())
    }
}

/// Decides `command` on the aggregate `key` of `store` and applies the events.
fn run<K, A>(
    store: &mut HashMap<K, A>,
    key: K,
    command: A::Command,
) -> Result<Vec<A::Event>, RuntimeError>
where
    K: Eq + Hash,
    A: Decide,
    RuntimeError: From<A::Error>,
{
    let existing = store.remove(&key);
    let existed = existing.is_some();
    let mut aggregate = existing.unwrap_or_default();
    let result = aggregate.decide(command);
    if let Ok(events) = &result {
        for event in events {
            aggregate.apply(event.clone());
        }
    }
    let changed = result.as_ref().is_ok_and(|events| !events.is_empty());
    if existed || changed {
        store.insert(key, aggregate);
    }
    Ok(result?)
}
