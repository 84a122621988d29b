//! Group commit: the appends of commands that arrive together go to Postgres in one statement
//! and one transaction.
//!
//! A single-row insert costs Postgres far more in its statement and its commit than in the
//! row (pgbench's single insert into `events` runs at a third of the rows per second of the
//! same insert four rows at a time). So the command path runs at most a few append statements
//! at once ([`Connections::with_limits`]); appends that arrive while all of those are busy
//! wait in a queue, and the next statement takes everything queued (up to [`MAX_EVENTS`]).
//! A command alone on a quiet system goes straight to Postgres as before: nothing waits for a
//! group to fill.
//!
//! Each command still commits, conflicts and fails as if it ran alone:
//! - its events are contiguous in the statement, in staging order, and it is answered only
//!   once the statement committed, with the position of its own last event;
//! - two commands on one aggregate are never in one statement, nor in two under way at once:
//!   the later one waits for the next (two writers' statements waiting on each other's rows
//!   would deadlock, and Postgres finds a deadlock only after a second); once a statement
//!   committed, a queued command that takes a sequence number it wrote gets its conflict
//!   straight away;
//! - when Postgres refuses a statement of several commands (one of them lost a race for a
//!   sequence number to another process, a deadlock, a constraint), the statement rolled back
//!   whole; it is halved and each half sent again, down to the command at fault alone, so
//!   only that one learns of the refusal and the others still go together;
//! - when the statement does not answer (the connection failed on the way), every command in
//!   it is told the store failed, as a command alone would be: it may have committed.
//!
//! The writers are tasks of their own, so a request that is given up (its client went away)
//! never cancels a statement that carries other commands' appends. One given up while its
//! append still waits in the queue is dropped from it: nobody waits for its answer, and under
//! overload the statements go to the commands still waiting.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock, Mutex};

use event_schemas::LogPosition;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::appends::{AppendError, Appends, Inserted, alone, insert};
use crate::connections::Connections;

/// At most this many events go into one statement (a command's cascade is never split).
pub const MAX_EVENTS: usize = 512;

type Reply = oneshot::Sender<Result<Option<LogPosition>, AppendError>>;

/// The appends waiting for a writer, and how many writers run.
#[derive(Debug)]
pub(crate) struct Group {
    writers: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(Appends, Reply)>,
    writing: usize,
    /// The aggregates of the statements under way (hashes, each with how many of those
    /// statements append to it: two that collide only put one off).
    in_flight: HashMap<u64, usize>,
    /// The last sequence numbers the latest statements committed.
    recent: Recent,
}

/// How many aggregates [`Recent`] remembers.
const RECENT: usize = 4096;

/// The last sequence number of the aggregates the latest statements appended to, the oldest
/// forgotten first: a command decided on a state older than that loses its race for sure.
#[derive(Debug, Default)]
struct Recent {
    /// By aggregate type, then id: each aggregate's last sequence number, and its stamp.
    last: HashMap<&'static str, HashMap<String, (i64, u64)>>,
    /// The aggregates in the order they were noted, each with its stamp then.
    order: VecDeque<((&'static str, String), u64)>,
    stamp: u64,
}

impl Recent {
    fn note(&mut self, committed: Committed) {
        for ((ty, id), sequence) in committed {
            self.stamp += 1;
            let last = self
                .last
                .entry(ty)
                .or_default()
                .entry(id.clone())
                .or_insert((sequence, 0));
            *last = (last.0.max(sequence), self.stamp);
            self.order.push_back(((ty, id), self.stamp));
        }
        while self.order.len() > RECENT {
            if let Some(((ty, id), stamp)) = self.order.pop_front()
                && let Some(ids) = self.last.get_mut(ty)
                && ids.get(&id).is_some_and(|(_, s)| *s == stamp)
            {
                ids.remove(&id);
            }
        }
    }

    /// Whether `appends` takes a sequence number a statement committed: sequence numbers
    /// are dense, so Postgres would refuse it.
    fn lost(&self, appends: &Appends) -> bool {
        !self.last.is_empty()
            && appends.events().any(|(ty, id, sequence)| {
                self.last
                    .get(ty)
                    .and_then(|ids| ids.get(id))
                    .is_some_and(|(last, _)| sequence <= *last)
            })
    }
}

impl State {
    /// `aggregates` are no longer in flight for one statement.
    fn release(&mut self, aggregates: &[u64]) {
        for aggregate in aggregates {
            if let Some(n) = self.in_flight.get_mut(aggregate) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(aggregate);
                }
            }
        }
    }
}

/// The appends of one statement, and the aggregates it holds in flight.
struct Taken {
    appends: Vec<(Appends, Reply)>,
    aggregates: Vec<u64>,
    /// Appends that lost their race to a committed statement, to be told so.
    lost: Vec<Reply>,
}

/// The last sequence number each aggregate reached in the statements just committed.
type Committed = HashMap<(&'static str, String), i64>;

impl Group {
    /// A group commit with at most `writers` statements at once (at least 1).
    pub(crate) fn new(writers: usize) -> Self {
        Self {
            writers: writers.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Queues `appends`; starts a writer when fewer than the limit run.
    fn enqueue(&self, appends: Appends, reply: Reply) -> bool {
        let mut state = lock(&self.state);
        state.queue.push_back((appends, reply));
        if state.writing < self.writers {
            state.writing += 1;
            true
        } else {
            false
        }
    }

    /// The next statement's appends: everything queued, up to [`MAX_EVENTS`] events (at least
    /// one append, however large), in the order they came. An append to an aggregate that
    /// another append taken, or a statement under way, already appends to stays queued for a
    /// later statement: the two would race for the same sequence number, and the loser would
    /// take its whole statement with it. An append whose command was given up while it waited
    /// (its request's client went away, or the request timed out) is dropped: nobody is told of
    /// it, so it never happens. Nothing taken when nothing can be: the writer has stopped then
    /// (a writer with a statement under way takes what waits for it).
    fn take(&self) -> Taken {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let mut taken = Vec::new();
        let mut lost = Vec::new();
        let mut given_up = 0;
        let mut events = 0;
        let mut touched: HashSet<u64> = HashSet::new();
        // the aggregates of appends left queued: a later append to one of them waits too,
        // rather than going first again and again
        let mut reserved: HashSet<u64> = HashSet::new();
        let mut left = VecDeque::with_capacity(state.queue.len());
        while let Some((appends, reply)) = state.queue.pop_front() {
            if reply.is_closed() {
                given_up += 1;
                continue;
            }
            if state.recent.lost(&appends) {
                lost.push(reply);
                continue;
            }
            if !taken.is_empty() && events + appends.len() > MAX_EVENTS {
                left.push_back((appends, reply));
                break;
            }
            let aggregates: Vec<u64> = appends.events().map(|(ty, id, _)| hash((ty, id))).collect();
            if aggregates.iter().any(|a| {
                touched.contains(a) || reserved.contains(a) || state.in_flight.contains_key(a)
            }) {
                reserved.extend(aggregates);
                left.push_back((appends, reply));
                continue;
            }
            touched.extend(aggregates);
            events += appends.len();
            taken.push((appends, reply));
        }
        left.append(&mut state.queue);
        state.queue = left;
        if taken.is_empty() {
            state.writing -= 1;
        }
        for aggregate in &touched {
            *state.in_flight.entry(*aggregate).or_default() += 1;
        }
        count_given_up(given_up);
        Taken {
            appends: taken,
            aggregates: touched.into_iter().collect(),
            lost,
        }
    }

    /// A statement is over: its aggregates are no longer in flight, and an append still queued
    /// that takes a sequence number the statement committed is answered with the conflict it
    /// would meet in Postgres, without going there (or dropped, when its request was given up).
    fn finish(&self, aggregates: &[u64], committed: Committed) {
        let lost: Vec<Reply> = {
            let mut state = lock(&self.state);
            state.release(aggregates);
            state.recent.note(committed);
            let mut lost = Vec::new();
            let mut given_up = 0;
            if !state.queue.is_empty() {
                let capacity = state.queue.len();
                let queued = std::mem::replace(&mut state.queue, VecDeque::with_capacity(capacity));
                for (appends, reply) in queued {
                    if !state.recent.lost(&appends) {
                        state.queue.push_back((appends, reply));
                    } else if reply.is_closed() {
                        given_up += 1;
                    } else {
                        lost.push(reply);
                    }
                }
            }
            count_given_up(given_up);
            lost
        };
        answer_lost(lost);
    }
}

/// Counts appends dropped from the queue because their request was given up.
fn count_given_up(appends: u64) {
    if appends > 0 {
        metrics::counter!("workledger_appends_given_up_total").increment(appends);
    }
}

/// Tells commands that lost their race to a committed statement.
fn answer_lost(lost: Vec<Reply>) {
    if !lost.is_empty() {
        metrics::counter!("workledger_append_conflicts_foreseen_total")
            .increment(lost.len() as u64);
    }
    for reply in lost {
        let _ = reply.send(Err(AppendError::Conflict));
    }
}

/// Appends `appends` (sealed), grouped with whatever other commands' appends are waiting.
pub(crate) async fn append(
    connections: &Connections,
    appends: Appends,
) -> Result<Option<LogPosition>, AppendError> {
    let (reply, answer) = oneshot::channel();
    if connections.group().enqueue(appends, reply) {
        // the place is the writer's from here: given back however the task ends, even if it
        // never runs
        tokio::spawn(write(Place {
            connections: connections.clone(),
            released: false,
            in_flight: Vec::new(),
        }));
    }
    answer.await.unwrap_or_else(|_| {
        Err(AppendError::Store(
            "the append's writer stopped before it answered".into(),
        ))
    })
}

/// A writer's place among the [`Group`]'s writers.
struct Place {
    connections: Connections,
    /// Given back by [`Group::take`] finding nothing queued.
    released: bool,
    /// The aggregates of the writer's statement under way.
    in_flight: Vec<u64>,
}

impl Drop for Place {
    /// A writer that stopped early (it panicked, or its runtime shut down before it ran) gives
    /// its place and its aggregates back; when no other writer is left to take what is
    /// queued, those appends are told the store failed rather than left waiting.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let abandoned = {
            let mut state = lock(&self.connections.group().state);
            state.release(&self.in_flight);
            state.writing -= 1;
            if state.writing == 0 {
                std::mem::take(&mut state.queue)
            } else {
                VecDeque::new()
            }
        };
        if !abandoned.is_empty() {
            tracing::error!(
                commands = abandoned.len(),
                "an append writer stopped early; the appends it left are failed"
            );
        }
    }
}

/// A writer: statements one after another until nothing is queued.
async fn write(mut place: Place) {
    loop {
        let Taken {
            appends,
            aggregates,
            lost,
        } = place.connections.group().take();
        if appends.is_empty() {
            place.released = true;
            answer_lost(lost);
            return;
        }
        answer_lost(lost);
        place.in_flight = aggregates;
        metrics::histogram!("workledger_append_group_size").record(appends.len() as f64);
        let mut committed = Committed::new();
        write_group(&place.connections, appends, &mut committed).await;
        place
            .connections
            .group()
            .finish(&std::mem::take(&mut place.in_flight), committed);
    }
}

/// Appends `group` in one statement and answers each command, noting in `committed` what it
/// appended. A group Postgres refused is halved until the commands at fault stand alone, so
/// that the others still go together.
fn write_group<'a>(
    connections: &'a Connections,
    group: Vec<(Appends, Reply)>,
    committed: &'a mut Committed,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let parts: Vec<&Appends> = group.iter().map(|(appends, _)| appends).collect();
        let inserted = insert(connections, &parts).await;
        match inserted {
            Inserted::Committed(positions) => {
                let mut end = 0;
                for (appends, reply) in group {
                    end += appends.len();
                    appends.note_committed(committed);
                    let _ = reply.send(Ok(Some(positions[end - 1])));
                }
            }
            Inserted::Refused(error) if group.len() > 1 => {
                tracing::debug!(%error, commands = group.len(), "a group's append was refused; halving it");
                metrics::counter!("workledger_append_groups_split_total").increment(1);
                let mut first = group;
                let second = first.split_off(first.len() / 2);
                write_group(connections, first, committed).await;
                write_group(connections, second, committed).await;
            }
            Inserted::Failed(error) if group.len() > 1 => {
                let error = Arc::new(error);
                for (_, reply) in group {
                    let _ = reply.send(Err(AppendError::Store(Box::new(Shared(error.clone())))));
                }
            }
            inserted => {
                if let Some((appends, reply)) = group.into_iter().next() {
                    let answer = alone(inserted);
                    if answer.is_ok() {
                        appends.note_committed(committed);
                    }
                    let _ = reply.send(answer);
                }
            }
        }
    })
}

/// One store error told to every command of a statement.
#[derive(Debug)]
struct Shared(Arc<sqlx::Error>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// An aggregate's hash, for [`Group::take`].
fn hash(aggregate: (&str, &str)) -> u64 {
    static STATE: LazyLock<RandomState> = LazyLock::new(RandomState::new);
    STATE.hash_one(aggregate)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio::sync::oneshot;

    use super::{Appends, Committed, Group, RECENT, Recent};

    /// Events of one aggregate, with these sequence numbers.
    fn events(id: &str, sequences: impl IntoIterator<Item = usize>) -> Appends {
        let mut appends = Appends::new();
        for sequence in sequences {
            appends.push(
                "task",
                id,
                sequence,
                "Commented".into(),
                "1".into(),
                serde_json::json!({}),
                &HashMap::new(),
            );
        }
        appends
    }

    fn append(id: &str, sequence: usize) -> Appends {
        events(id, [sequence])
    }

    /// The aggregate and sequence of every event of `appends`, in order.
    fn staged<'a>(appends: impl IntoIterator<Item = &'a Appends>) -> Vec<(String, i64)> {
        appends
            .into_iter()
            .flat_map(Appends::events)
            .map(|(_, id, sequence)| (id.to_owned(), sequence))
            .collect()
    }

    fn committed(ids: impl IntoIterator<Item = (String, i64)>) -> Committed {
        ids.into_iter()
            .map(|(id, seq)| (("task", id), seq))
            .collect()
    }

    #[test]
    fn a_sequence_number_at_or_below_a_committed_one_is_lost_and_a_later_one_is_not() {
        let mut recent = Recent::default();
        recent.note(committed([("a".to_owned(), 3)]));
        assert!(recent.lost(&append("a", 2)));
        assert!(recent.lost(&append("a", 3)));
        assert!(!recent.lost(&append("a", 4)));
        assert!(!recent.lost(&append("b", 1)), "another aggregate");
    }

    #[test]
    fn the_oldest_aggregates_are_forgotten_and_one_noted_again_is_kept() {
        let mut recent = Recent::default();
        recent.note(committed([
            ("first".to_owned(), 1),
            ("again".to_owned(), 1),
        ]));
        recent.note(committed((0..RECENT - 2).map(|i| (format!("x{i}"), 1))));
        recent.note(committed([("again".to_owned(), 2)]));
        recent.note(committed([("last".to_owned(), 1)]));
        assert!(!recent.lost(&append("first", 1)), "forgotten");
        assert!(recent.lost(&append("again", 2)), "noted again, so kept");
        assert!(recent.lost(&append("last", 1)));
        let remembered: usize = recent.last.values().map(HashMap::len).sum();
        assert!(remembered <= RECENT, "{remembered}");
    }

    #[test]
    fn an_append_given_up_while_queued_is_dropped_and_the_others_are_taken_in_order() {
        let group = Group::new(1);
        let (kept_first, _first) = oneshot::channel();
        let (given_up, gone) = oneshot::channel();
        let (kept_last, _last) = oneshot::channel();
        assert!(
            group.enqueue(append("a", 1), kept_first),
            "the first starts a writer"
        );
        assert!(!group.enqueue(append("b", 1), given_up));
        assert!(!group.enqueue(append("c", 1), kept_last));
        drop(gone);
        let taken = group.take();
        assert_eq!(ids(&taken.appends), ["a", "c"]);
        assert!(taken.lost.is_empty());
        let state = super::lock(&group.state);
        assert!(
            state.queue.is_empty(),
            "the given-up append is not left queued"
        );
        assert_eq!(state.writing, 1);
    }

    #[test]
    fn an_append_to_an_aggregate_already_taken_stays_queued_ahead_of_later_ones() {
        let group = Group::new(1);
        let mut replies = Vec::new();
        for (id, sequence) in [("a", 1), ("a", 2), ("b", 1), ("a", 3)] {
            let (reply, answer) = oneshot::channel();
            replies.push(answer);
            group.enqueue(append(id, sequence), reply);
        }
        let taken = group.take();
        let taken = staged(taken.appends.iter().map(|(appends, _)| appends));
        assert_eq!(taken, [("a".to_owned(), 1), ("b".to_owned(), 1)]);
        let state = super::lock(&group.state);
        let left = staged(state.queue.iter().map(|(appends, _)| appends));
        assert_eq!(
            left,
            [("a".to_owned(), 2), ("a".to_owned(), 3)],
            "left in the order they came"
        );
    }

    /// The aggregates of `appends`, each once, in order.
    fn ids(appends: &[(Appends, super::Reply)]) -> Vec<String> {
        let mut ids = Vec::new();
        for (id, _) in staged(appends.iter().map(|(appends, _)| appends)) {
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
        ids
    }

    #[test]
    fn a_statement_stops_before_the_append_that_would_pass_the_limit_and_the_rest_wait_in_order() {
        let group = Group::new(1);
        let mut answers = Vec::new();
        for (id, count) in [("a", 300), ("b", 300), ("c", 1), ("big", 600)] {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            group.enqueue(events(id, 1..=count), reply);
        }
        let first = group.take();
        assert_eq!(
            ids(&first.appends),
            ["a"],
            "b would pass {}",
            super::MAX_EVENTS
        );
        group.finish(&first.aggregates, Committed::new());
        let second = group.take();
        assert_eq!(ids(&second.appends), ["b", "c"]);
        group.finish(&second.aggregates, Committed::new());
        let third = group.take();
        assert_eq!(
            ids(&third.appends),
            ["big"],
            "one append is taken however large"
        );
        group.finish(&third.aggregates, Committed::new());
        assert!(group.take().appends.is_empty());
        assert_eq!(
            super::lock(&group.state).writing,
            0,
            "the writer has stopped"
        );
    }
}
