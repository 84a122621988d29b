//! Appending a command together with its cascade: commands are decided on several aggregates
//! in memory ([`Executor::begin`], [`Executor::plan`]), their events staged in one
//! [`Appends`] in the order they were decided, and the new states remembered once it
//! committed ([`Executor::committed`]).

use cqrs_es::{Aggregate, DomainEvent as _};
use event_schemas::EventMetadata;

use super::{Decided, ExecuteError, Executor, Loaded, decide};
use crate::appends::Appends;
use crate::repository::SNAPSHOT_EVERY;

/// Commands decided on one aggregate and not appended yet ([`Executor::begin`],
/// [`Executor::plan`]): the state they were decided on, the state they lead to, and their
/// events.
pub struct Planned<A: Aggregate> {
    id: String,
    base: Loaded<A>,
    current: Loaded<A>,
    events: Vec<A::Event>,
    /// `base` came from memory or a guess, not from the store.
    unchecked: bool,
    /// `base` is a guess (no events), neither read nor remembered.
    guessed: bool,
}

impl<A: Aggregate> Planned<A> {
    /// The aggregate's version once the planned events are appended.
    pub fn version(&self) -> usize {
        self.current.version
    }

    /// Whether the plan adds any events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

impl<A: Aggregate> std::fmt::Debug for Planned<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned")
            .field("aggregate_type", &A::TYPE)
            .field("id", &self.id)
            .field("version", &self.current.version)
            .field("events", &self.events.len())
            .finish()
    }
}

impl<A> Executor<A>
where
    A: Aggregate + Clone,
    A::Error: 'static,
{
    /// The state of aggregate `id` to plan commands on ([`Executor::plan`]), for appending a
    /// command together with its cascade ([`Appends`]): the cached state, or with
    /// `assume_new` (for a command that creates the aggregate) no events yet when nothing is
    /// cached, or else the stored state. A state not read from the store is only a guess,
    /// checked by the append (a wrong guess is a conflict, never a wrong decision).
    pub async fn begin(
        &self,
        id: &str,
        expected_version: Option<usize>,
        assume_new: bool,
    ) -> Result<Planned<A>, ExecuteError<A::Error>> {
        let hit = self.take_cached(id, expected_version);
        let from_cache = hit.is_some();
        let guessed = !from_cache && assume_new && expected_version.is_none();
        let loaded = match hit {
            Some(hit) => hit,
            None if guessed => Loaded {
                aggregate: A::default(),
                version: 0,
                snapshot: None,
            },
            None => self.load_stored(id).await?,
        };
        Ok(Planned {
            id: id.to_owned(),
            unchecked: from_cache || guessed,
            base: loaded.clone(),
            current: loaded,
            events: Vec::new(),
            guessed,
        })
    }

    /// Decides `command` on the state `planned` has reached, adds its events to the plan and
    /// stages them in `appends` (nothing is appended yet: [`Executor::finish`] each plan, then
    /// [`Appends::commit`]). Answers the events this command added, with their sequences. A
    /// refusal or no-op decided on a guessed state is decided again on the stored state when
    /// that moved on.
    pub async fn plan(
        &self,
        planned: &mut Planned<A>,
        appends: &mut Appends,
        command: A::Command,
        metadata: &EventMetadata,
        expected_version: Option<usize>,
        services: &A::Services,
    ) -> Result<Vec<(usize, A::Event)>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut decided = decide(
            command.clone(),
            &planned.current,
            expected_version,
            services,
        )
        .await;
        if planned.unchecked
            && planned.events.is_empty()
            && !matches!(decided, Decided::Changed { .. })
            && self.stored_version(&planned.id).await? != planned.current.version
        {
            let loaded = self.load_stored(&planned.id).await?;
            planned.base = loaded.clone();
            planned.current = loaded;
            planned.unchecked = false;
            planned.guessed = false;
            decided = decide(command, &planned.current, expected_version, services).await;
        }
        match decided {
            Decided::Mismatch { expected, actual } => {
                Err(ExecuteError::VersionMismatch { expected, actual })
            }
            Decided::Refused(error) => Err(ExecuteError::Rejected(error)),
            Decided::Unchanged => Ok(Vec::new()),
            Decided::Changed { events, after, .. } => {
                // every payload first: a command is staged whole or not at all
                let payloads = events
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ExecuteError::Store(Box::new(e)))?;
                let metadata = metadata.to_map(false);
                let mut added = Vec::with_capacity(events.len());
                for (event, payload) in events.iter().zip(payloads) {
                    let sequence = planned.current.version + added.len() + 1;
                    appends.push(
                        A::TYPE,
                        &planned.id,
                        sequence,
                        event.event_type(),
                        event.event_version(),
                        payload,
                        &metadata,
                    );
                    added.push((sequence, event.clone()));
                }
                planned.current.version += events.len();
                planned.current.aggregate = after;
                planned.events.extend(events);
                Ok(added)
            }
        }
    }

    /// Stages `planned`'s snapshot in `appends` when the plan takes the aggregate's version
    /// across a multiple of [`SNAPSHOT_EVERY`] (the state as of that multiple, as cqrs-es
    /// builds it).
    pub fn finish(
        &self,
        planned: &Planned<A>,
        appends: &mut Appends,
    ) -> Result<(), ExecuteError<A::Error>> {
        let base = planned.base.version;
        let last = planned.current.version;
        let boundary = last - last % SNAPSHOT_EVERY;
        if boundary <= base {
            return Ok(());
        }
        let mut state = planned.base.aggregate.clone();
        for event in &planned.events[..boundary - base] {
            state.apply(event.clone());
        }
        let payload = serde_json::to_value(&state).map_err(|e| ExecuteError::Store(Box::new(e)))?;
        let counter = planned.base.snapshot.map_or(1, |n| n + 1);
        appends.push_snapshot(A::TYPE, &planned.id, boundary, counter, payload);
        Ok(())
    }

    /// Remembers `planned`'s state once its [`Appends`] committed.
    pub fn committed(&self, planned: Planned<A>) {
        let Planned {
            id,
            base,
            mut current,
            events,
            guessed,
            ..
        } = planned;
        if events.is_empty() && guessed {
            return;
        }
        if current.version / SNAPSHOT_EVERY > base.version / SNAPSHOT_EVERY {
            current.snapshot = Some(base.snapshot.map_or(1, |n| n + 1));
        }
        self.remember(&id, current);
    }

    /// Gives back the state `planned` started from when its events were not appended (a
    /// refused command, say): remembered unless it was a guess.
    pub fn release(&self, planned: Planned<A>) {
        if !planned.guessed {
            self.remember(&planned.id, planned.base);
        }
    }
}
