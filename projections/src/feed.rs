//! One read of the log for every projector of a set that stands at the same place.
//!
//! Projectors of one process usually move through the log together (they start together and
//! catch up at similar speeds), so each would read, transfer and decode the same rows. A
//! [`Feed`] reads a batch once, with the union of the set's filters, and keeps the last few
//! batches: a projector whose checkpoint is where a kept batch starts (or inside it) takes its
//! own events from it instead of reading. Each projector still locks its own checkpoint, applies
//! in its own transaction and commits its checkpoint with its writes; only the read is shared.
//!
//! Sharing a read is safe because a batch never changes once read: it holds only events of
//! transactions older than the oldest one running when it was read (see `event_store::log`),
//! and no event can appear among those later. Only *full* batches are shared (a batch that
//! stopped at the head of the log is fresh only for a moment: a projector woken for new events
//! reads for itself).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use event_schemas::{LogPosition, RecordedEvent};
use sqlx::PgConnection;
use tokio::sync::OnceCell;

use crate::batch::read;
use crate::projector::EventFilter;

/// How many batches a feed keeps for projectors that trail the first one.
const KEPT: usize = 48;

/// A batch of the log read with the feed's filter.
#[derive(Debug)]
pub(crate) struct Slice {
    pub after: LogPosition,
    /// The events after `after` that pass the feed's filter, in log order, grouped by the
    /// filters of the set (each group in log order).
    groups: Vec<(EventFilter, Vec<RecordedEvent>)>,
    /// Where a reader that passed every event of the batch stands.
    pub end: LogPosition,
    /// Whether the read found as many events as it asked for.
    pub full: bool,
}

impl Slice {
    /// The events of the batch after `after` that `filter` takes, and their count.
    pub fn events(&self, filter: &EventFilter, after: LogPosition) -> &[RecordedEvent] {
        let Some((_, events)) = self.groups.iter().find(|(f, _)| f == filter) else {
            return &[];
        };
        let skip = events.partition_point(|e| e.position <= after);
        &events[skip..]
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
    kept: Mutex<VecDeque<Arc<Entry>>>,
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
            kept: Mutex::new(VecDeque::new()),
        }
    }

    pub fn limit(&self) -> i64 {
        self.limit
    }

    /// The batch after `after`: a kept one that covers `after`, the one being read there by
    /// another projector, or a new read on `conn`.
    pub async fn next(
        &self,
        conn: &mut PgConnection,
        after: LogPosition,
    ) -> Result<Arc<Slice>, sqlx::Error> {
        let entry = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            // a full kept batch that `after` falls in (its start, or inside it)
            let covering = kept.iter().find(|e| match e.slice.get() {
                Some(slice) => slice.full && slice.after <= after && after < slice.end,
                None => e.after == after,
            });
            match covering {
                Some(entry) => entry.clone(),
                None => {
                    let entry = Arc::new(Entry {
                        after,
                        slice: OnceCell::new(),
                    });
                    kept.push_back(entry.clone());
                    while kept.len() > KEPT {
                        kept.pop_front();
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
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|e| !Arc::ptr_eq(e, entry));
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
        let groups = group(&self.filters, read.events);
        Ok(Slice {
            after,
            groups,
            end,
            full,
        })
    }
}

/// Splits `events` into one list per filter (the last one that takes every event gets the
/// originals; the others get copies).
fn group(
    filters: &[EventFilter],
    events: Vec<RecordedEvent>,
) -> Vec<(EventFilter, Vec<RecordedEvent>)> {
    let mut groups: Vec<(EventFilter, Vec<RecordedEvent>)> =
        filters.iter().map(|f| (f.clone(), Vec::new())).collect();
    let everything = filters
        .iter()
        .position(|f| f.aggregate_types.is_none() && f.event_types.is_none());
    for (i, (filter, list)) in groups.iter_mut().enumerate() {
        if Some(i) == everything {
            continue;
        }
        list.extend(events.iter().filter(|e| filter.matches(e)).cloned());
    }
    if let Some(i) = everything {
        groups[i].1 = events;
    }
    groups
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
