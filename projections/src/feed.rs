//! One read of the log for every projector of a set that stands at the same place.
//!
//! Projectors of one process usually move through the log together (they start together and
//! catch up at similar speeds), so each would read, transfer and decode the same rows. A
//! [`Feed`] reads a batch once, with the union of the set's filters, and keeps the last few
//! batches: a projector whose checkpoint is where a kept batch starts (or inside it) takes its
//! own events from it instead of reading. Each projector still locks its own checkpoint, applies
//! in its own transaction and commits its checkpoint with its writes; only the read is shared.
//!
//! The projectors of a set move at different speeds (the audit trail writes a row per event,
//! the definitions projector almost nothing), so the fast ones would run far ahead and the
//! slow ones find their batches gone and read the log again. A projector that would start a
//! read while the oldest kept batch is still ahead of an active member of the set therefore
//! waits for that member first (briefly: a member that stops taking batches is not waited for),
//! before it opens its batch's transaction ([`Feed::wait_turn`]).
//!
//! Sharing a read is safe because a batch never changes once read: it holds only events of
//! transactions older than the oldest one running when it was read (see `event_store::log`),
//! and no event can appear among those later. Only *full* batches are shared (a batch that
//! stopped at the head of the log is fresh only for a moment: a projector woken for new events
//! reads for itself).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_schemas::{LogPosition, RecordedEvent};
use sqlx::PgConnection;
use tokio::sync::{Notify, OnceCell};

use crate::batch::read;
use crate::projector::EventFilter;

/// How many events a feed keeps for projectors that trail the first one (in whole batches,
/// at least two).
const KEPT_EVENTS: i64 = 16_000;

/// A member that took no batch for this long is not waited for.
const ACTIVE: Duration = Duration::from_secs(2);

/// The longest a read waits for trailing members, in all.
const MOST_WAIT: Duration = Duration::from_secs(1);

/// A batch of the log read with the feed's filter.
#[derive(Debug)]
pub(crate) struct Slice {
    pub after: LogPosition,
    /// The events after `after` that pass the feed's filter, in log order.
    events: Vec<RecordedEvent>,
    /// For each of the set's filters, the indexes of the events it takes (in log order): the
    /// projectors share one copy of each event.
    groups: Vec<(EventFilter, Vec<u32>)>,
    /// Where a reader that passed every event of the batch stands.
    pub end: LogPosition,
    /// Whether the read found as many events as it asked for.
    pub full: bool,
}

impl Slice {
    /// The events of the batch after `after` that `filter` takes.
    pub fn events(&self, filter: &EventFilter, after: LogPosition) -> Vec<&RecordedEvent> {
        let Some((_, indexes)) = self.groups.iter().find(|(f, _)| f == filter) else {
            return Vec::new();
        };
        let taken = indexes.iter().map(|&i| &self.events[i as usize]);
        let skip = indexes.partition_point(|&i| self.events[i as usize].position <= after);
        taken.skip(skip).collect()
    }
}

#[derive(Debug)]
struct Entry {
    after: LogPosition,
    slice: OnceCell<Arc<Slice>>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Feed {
    /// The union of the set's filters: what one read fetches.
    filter: EventFilter,
    /// The set's distinct filters: each projector takes its group of a batch.
    filters: Vec<EventFilter>,
    /// Events per read.
    limit: i64,
    /// Batches kept.
    kept: usize,
    state: Mutex<State>,
    /// Signalled whenever a member asks for a batch (so it may have passed the oldest one).
    moved: Notify,
}

#[derive(Debug, Default)]
struct State {
    kept: VecDeque<Arc<Entry>>,
    /// Where each member (by checkpoint name) last asked for a batch, and when.
    members: HashMap<String, (LogPosition, Instant)>,
}

impl State {
    /// Whether a member other than `name` that took a batch lately still needs the oldest
    /// kept batch (it stands inside it).
    fn oldest_needed(&self, name: &str) -> bool {
        let Some(slice) = self.kept.front().and_then(|e| e.slice.get()) else {
            // still being read, by someone who needs it
            return !self.kept.is_empty();
        };
        self.members.iter().any(|(member, (at, seen))| {
            member != name && seen.elapsed() < ACTIVE && slice.after <= *at && *at < slice.end
        })
    }
}

impl Feed {
    /// A feed for projectors with `filters`, reading `limit` events at a time.
    pub fn new(filters: impl IntoIterator<Item = EventFilter>, limit: i64) -> Self {
        let mut distinct: Vec<EventFilter> = Vec::new();
        for filter in filters {
            if !distinct.contains(&filter) {
                distinct.push(filter);
            }
        }
        Self {
            filter: union(&distinct),
            filters: distinct,
            limit: limit.max(1),
            kept: (KEPT_EVENTS / limit.max(1)).max(2) as usize,
            state: Mutex::new(State::default()),
            moved: Notify::new(),
        }
    }

    pub fn limit(&self) -> i64 {
        self.limit
    }

    /// Records that the member (checkpoint) `name` stands at `at`.
    pub fn passed(&self, name: &str, at: LogPosition) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.members.insert(name.to_owned(), (at, Instant::now()));
        if before.is_none_or(|(was, _)| was != at) {
            self.moved.notify_waiters();
        }
    }

    /// Called by the member `name` before it opens the transaction of its next batch (a
    /// member waiting inside one would hold back every log reader of the cluster): when its
    /// next batch is not kept and the kept ones are as many as the feed keeps, waits (at most
    /// [`MOST_WAIT`]) until no active member still needs the oldest one.
    pub async fn wait_turn(&self, name: &str) {
        let deadline = Instant::now() + MOST_WAIT;
        loop {
            let moved;
            {
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let Some(&(at, _)) = state.members.get(name) else {
                    return;
                };
                if Self::covering(&state, at).is_some()
                    || state.kept.len() < self.kept
                    || !state.oldest_needed(name)
                {
                    return;
                }
                // under the lock: no signal between the check and the wait is missed
                moved = self.moved.notified();
            }
            if tokio::time::timeout_at(deadline.into(), moved)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// A full kept batch that `after` falls in (its start, or inside it), or the one being
    /// read from `after`.
    fn covering(state: &State, after: LogPosition) -> Option<&Arc<Entry>> {
        state.kept.iter().find(|e| match e.slice.get() {
            Some(slice) => slice.full && slice.after <= after && after < slice.end,
            None => e.after == after,
        })
    }

    /// The batch after `after` for the member (checkpoint) `name`: a kept one that covers
    /// `after`, the one being read there by another member, or a new read on `conn`.
    pub async fn next(
        &self,
        conn: &mut PgConnection,
        name: &str,
        after: LogPosition,
    ) -> Result<Arc<Slice>, sqlx::Error> {
        self.passed(name, after);
        let entry = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match Self::covering(&state, after) {
                Some(entry) => entry.clone(),
                None => {
                    let entry = Arc::new(Entry {
                        after,
                        slice: OnceCell::new(),
                    });
                    state.kept.push_back(entry.clone());
                    while state.kept.len() > self.kept {
                        state.kept.pop_front();
                    }
                    entry
                }
            }
        };
        let read_here = AtomicBool::new(false);
        let slice = {
            let (flag, conn, start) = (&read_here, &mut *conn, entry.after);
            entry
                .slice
                .get_or_try_init(move || {
                    flag.store(true, Ordering::Relaxed);
                    async move { self.read(conn, start).await.map(Arc::new) }
                })
                .await?
                .clone()
        };
        if !slice.full {
            // a batch that ended at the head is not kept: it is fresh only for its reader
            self.forget(&entry);
            if !read_here.load(Ordering::Relaxed) {
                // read by another projector, perhaps before the events this one was woken for
                return Ok(Arc::new(self.read(conn, after).await?));
            }
        }
        Ok(slice)
    }

    fn forget(&self, entry: &Arc<Entry>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.kept.retain(|e| !Arc::ptr_eq(e, entry));
    }

    async fn read(
        &self,
        conn: &mut PgConnection,
        after: LogPosition,
    ) -> Result<Slice, sqlx::Error> {
        let read = read(conn, after, &self.filter, self.limit).await?;
        let full = read.events.len() as i64 >= self.limit;
        let last = read.events.last().map(|e| e.position);
        let head = read.head.unwrap_or(LogPosition::START);
        let end = match last {
            Some(last) if full => last,
            Some(last) => last.max(head),
            None => head,
        }
        .max(after);
        let groups = group(&self.filters, &read.events);
        Ok(Slice {
            after,
            events: read.events,
            groups,
            end,
            full,
        })
    }
}

/// The indexes of the events each filter takes.
fn group(filters: &[EventFilter], events: &[RecordedEvent]) -> Vec<(EventFilter, Vec<u32>)> {
    filters
        .iter()
        .map(|filter| {
            let taken = (0u32..)
                .zip(events)
                .filter(|(_, e)| filter.matches(e))
                .map(|(i, _)| i)
                .collect();
            (filter.clone(), taken)
        })
        .collect()
}

/// The events any of `filters` takes (a superset: a projector filters its group again).
fn union(filters: &[EventFilter]) -> EventFilter {
    let mut out = EventFilter {
        aggregate_types: Some(Vec::new()),
        event_types: Some(Vec::new()),
    };
    for filter in filters {
        merge(&mut out.aggregate_types, &filter.aggregate_types);
        merge(&mut out.event_types, &filter.event_types);
    }
    out
}

fn merge(into: &mut Option<Vec<String>>, from: &Option<Vec<String>>) {
    match (into.as_mut(), from) {
        (Some(into), Some(from)) => {
            for item in from {
                if !into.contains(item) {
                    into.push(item.clone());
                }
            }
        }
        (Some(_), None) => *into = None,
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(global_position: i64) -> LogPosition {
        LogPosition {
            tx_id: 1,
            global_position,
        }
    }

    /// A state keeping the full batches (0, 10] and (10, 20].
    fn kept_two() -> State {
        let mut state = State::default();
        for (after, end) in [(0, 10), (10, 20)] {
            let slice = Arc::new(Slice {
                after: at(after),
                events: Vec::new(),
                groups: Vec::new(),
                end: at(end),
                full: true,
            });
            state.kept.push_back(Arc::new(Entry {
                after: at(after),
                slice: OnceCell::new_with(Some(slice)),
            }));
        }
        state
    }

    #[test]
    fn the_oldest_batch_is_needed_while_an_active_member_stands_in_it() {
        let mut state = kept_two();
        state
            .members
            .insert("lead".into(), (at(20), Instant::now()));
        assert!(!state.oldest_needed("lead"), "nobody else is there");
        state
            .members
            .insert("trailing".into(), (at(4), Instant::now()));
        assert!(state.oldest_needed("lead"));
        assert!(
            !state.oldest_needed("trailing"),
            "a member does not wait for itself"
        );
        // passed it
        state
            .members
            .insert("trailing".into(), (at(10), Instant::now()));
        assert!(!state.oldest_needed("lead"));
    }

    /// A feed keeping at most two batches, holding (0, 10] and (10, 20], its lead member at
    /// 20 and another one at `trailing` (just now).
    fn full_feed(trailing: i64) -> Arc<Feed> {
        let feed = Arc::new(Feed::new([EventFilter::all()], KEPT_EVENTS / 2));
        assert_eq!(feed.kept, 2);
        let mut state = kept_two();
        state
            .members
            .insert("lead".into(), (at(20), Instant::now()));
        state
            .members
            .insert("trailing".into(), (at(trailing), Instant::now()));
        *feed.state.lock().unwrap() = state;
        feed
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_member_ahead_waits_for_the_trailing_one_to_pass_the_oldest_batch() {
        let feed = full_feed(4);
        let waiting = tokio::spawn({
            let feed = feed.clone();
            async move { feed.wait_turn("lead").await }
        });
        settle().await;
        assert!(!waiting.is_finished(), "the lead waits");
        feed.passed("trailing", at(10));
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn a_member_does_not_wait_when_nobody_needs_the_oldest_batch() {
        let feed = full_feed(10);
        let waiting = tokio::spawn({
            let feed = feed.clone();
            async move { feed.wait_turn("lead").await }
        });
        settle().await;
        assert!(waiting.is_finished());
    }

    #[test]
    fn a_member_that_stopped_taking_batches_is_not_waited_for() {
        let mut state = kept_two();
        let long_ago = Instant::now()
            .checked_sub(ACTIVE + Duration::from_millis(10))
            .unwrap();
        state.members.insert("stopped".into(), (at(4), long_ago));
        assert!(!state.oldest_needed("lead"));
    }

    #[test]
    fn the_union_of_filters_takes_what_any_of_them_takes() {
        let tasks = EventFilter::aggregates(&["task"]);
        let report = EventFilter::events(&["task", "approval"], &["TaskOverdue"]);
        assert_eq!(
            union(&[tasks.clone(), report.clone()]),
            EventFilter {
                aggregate_types: Some(vec!["task".into(), "approval".into()]),
                event_types: None,
            }
        );
        assert_eq!(
            union(std::slice::from_ref(&report)),
            EventFilter {
                aggregate_types: Some(vec!["task".into(), "approval".into()]),
                event_types: Some(vec!["TaskOverdue".into()]),
            }
        );
        assert_eq!(union(&[tasks, EventFilter::all()]), EventFilter::all());
    }
}
